"""The content hash of a collection: independent of document order and batch boundaries, sensitive to any
single change, and exactly the documented formula."""

import hashlib
import random

import bson
from bson.int64 import Int64

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import content_hash


def documents(count=200):
    return [bson.encode({"_id": i, "name": "item %d" % i, "tags": ["a", "b"][: i % 3], "n": Int64(i * 7)})
            for i in range(count)]


def digest(batches):
    hasher = content_hash.ContentHash()
    for batch in batches:
        hasher.update(batch)
    return hasher.hexdigest(), hasher.documents


def test_any_order_and_any_batching_give_the_same_hash():
    docs = documents()
    expected = digest([b"".join(docs)])
    shuffled = list(docs)
    random.Random(7).shuffle(shuffled)
    cuts = sorted(random.Random(8).sample(range(1, len(docs)), 15))
    batches = [b"".join(shuffled[a:b]) for a, b in zip([0] + cuts, cuts + [len(docs)])]
    assert digest(batches) == expected
    assert expected[1] == 200


def test_one_changed_document_changes_the_hash():
    docs = documents()
    changed = list(docs)
    changed[57] = bson.encode({"_id": 57, "name": "item 58", "tags": [], "n": Int64(57 * 7)})
    assert digest([b"".join(changed)])[0] != digest([b"".join(docs)])[0]
    # the same values in another field order are another document: the restore must keep the bytes
    reordered = list(docs)
    reordered[3] = bson.encode({"_id": 3, "tags": [], "name": "item 3", "n": Int64(21)})
    assert digest([b"".join(reordered)])[0] != digest([b"".join(docs)])[0]


def test_a_removed_or_duplicated_document_changes_the_hash_and_the_count():
    docs = documents()
    full = digest([b"".join(docs)])
    assert digest([b"".join(docs[:-1])]) != full
    doubled = digest([b"".join(docs + docs[:1])])
    assert doubled[0] != full[0] and doubled[1] == 201
    # a sum, not an XOR: two equal documents do not cancel out
    assert digest([docs[0] + docs[0]])[0] != digest([b""])[0]


def test_the_hash_is_the_documented_formula():
    docs = documents(5)
    total = sum(int.from_bytes(hashlib.blake2b(doc, digest_size=16).digest(), "little") for doc in docs)
    assert digest([b"".join(docs)])[0] == "%032x" % (total % (1 << 128))
    assert digest([])[0] == "0" * 32
    assert content_hash.ContentHash().record() == {"algorithm": "blake2b-128-sum", "value": "0" * 32}
