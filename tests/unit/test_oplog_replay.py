"""Oplog replay engine: limit parsing, skip rules, transactions, index catalog, both apply
modes against an in-memory target, and the applyOps wire protocol against mockupdb."""

import gzip
import os
import random
import threading
from collections import OrderedDict

import bson
import pytest
from bson import Int64, Timestamp, json_util
from bson.codec_options import CodecOptions
from bson.json_util import JSONOptions
from pymongo import errors as pymongo_errors

from ansible_collections.dbops.mongodb_backup.plugins.module_utils import errors
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import InvalidOption, FormatError
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import diff as diff_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import replay
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.timestamps import (
    before_limit, ts_text, parse_oplog_limit)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPAT = os.path.join(REPO, "..", "shared", "compat", "mongo-tools")
RESTORE_DATA = os.path.join(COMPAT, "mongorestore", "testdata")
AS_DICT = CodecOptions(document_class=dict)
EXT_JSON = JSONOptions(document_class=dict)
UUID = bson.Binary(bytes(range(16)), 4)


def key_of(value):
    return bson.encode({"_id": value})


class MemoryTarget:
    """An in-memory server for the replayer: collections of documents, indexes, and an
    applyOps that applies one entry the way a server's oplog application would."""

    def __init__(self, applyops_error=None):
        self.collections = {}
        self.indexes = {}
        self.sent = []
        self.commands = []
        self.fetches = []
        self.writes = []
        self.applyops_error = applyops_error
        self.fail_unordered = False

    def docs(self, namespace):
        return sorted(self.collections.get(namespace, {}).values(), key=lambda doc: repr(doc["_id"]))

    def _coll(self, namespace):
        return self.collections.setdefault(namespace, OrderedDict())

    # replayer interface
    def apply_ops(self, entry):
        if self.applyops_error is not None:
            raise self.applyops_error
        self.sent.append(entry)
        op, namespace = entry["op"], entry["ns"]
        if op == "i":
            self._coll(namespace)[key_of(entry["o"]["_id"])] = entry["o"]
        elif op == "d":
            self._coll(namespace).pop(key_of(entry["o"]["_id"]), None)
        elif op == "u":
            coll = self._coll(namespace)
            key = key_of(entry["o2"]["_id"])
            if key in coll:
                coll[key] = diff_utils.apply_update(coll[key], entry["o"])
        else:
            command = entry["o"]
            database = namespace.split(".")[0]
            if "create" in command and "%s.%s" % (database, command["create"]) in self.collections:
                raise pymongo_errors.OperationFailure("Collection already exists", 48)
            if "renameCollection" in command and command["renameCollection"] not in self.collections:
                raise pymongo_errors.OperationFailure("source namespace does not exist", 26)
            self.commands.append((namespace, command))

    def fetch(self, namespace, ids):
        self.fetches.append((namespace, list(ids)))
        coll = self.collections.get(namespace, {})
        return [coll[key_of(i)] for i in ids if key_of(i) in coll]

    def seed(self, namespace, *documents):
        for document in documents:
            self._coll(namespace)[key_of(document["_id"])] = document

    def write(self, namespace, writes, ordered=False):
        if self.fail_unordered and not ordered and len(writes) > 1:
            raise pymongo_errors.BulkWriteError({"writeErrors": [{"index": 1, "code": 11000,
                                                                  "errmsg": "E11000 duplicate key"}]})
        self.writes.append((namespace, ordered, len(writes)))
        coll = self._coll(namespace)
        for id_value, state, _inserted in writes:
            if state is replay.DELETED:
                coll.pop(key_of(id_value), None)
            else:
                coll[key_of(id_value)] = state

    def create_collection(self, database, command):
        self.commands.append((database, command))
        namespace = "%s.%s" % (database, command["create"])
        if namespace in self.collections:
            return False
        self._coll(namespace)
        return True

    def drop_collection(self, database, collection):
        self.commands.append((database, {"drop": collection}))
        self.collections.pop("%s.%s" % (database, collection), None)
        self.indexes.pop("%s.%s" % (database, collection), None)

    def drop_database(self, database):
        self.commands.append((database, {"dropDatabase": 1}))
        for namespace in [n for n in self.collections if n.startswith(database + ".")]:
            del self.collections[namespace]

    def rename_collection(self, source, target, drop_target):
        self.commands.append(("admin", {"renameCollection": source, "to": target, "dropTarget": drop_target}))
        if source not in self.collections:
            return False
        self.collections[target] = self.collections.pop(source)
        return True

    def run_command(self, database, command):
        self.commands.append((database, command))

    def list_indexes(self, namespace):
        return list(self.indexes.get(namespace, []))

    def drop_index(self, namespace, name):
        self.indexes[namespace] = [s for s in self.indexes.get(namespace, []) if s["name"] != name]

    def create_index(self, namespace, spec):
        self.indexes.setdefault(namespace, [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]).append(spec)


def replayer(target, **kwargs):
    return replay.OplogReplayer(None, target=target, **kwargs)


def entry(op, ns, o, ts=None, **extra):
    doc = {"ts": ts or Timestamp(1700000000, 1), "t": Int64(1), "v": 2, "op": op, "ns": ns, "o": o}
    doc.update(extra)
    return doc


def load_ext_json(*parts):
    with open(os.path.join(COMPAT, *parts)) as handle:
        return json_util.loads(handle.read(), json_options=EXT_JSON)


# --------------------------------------------------------------------------- oplog limit

@pytest.mark.parametrize("text, expected", [
    ("123", (123, 0)), ("123:", (123, 0)), ("123:456", (123, 456)), ("0", (0, 0)), ("0:1", (0, 1)),
    ("4294967295:4294967295", (4294967295, 4294967295)), (" 1416342266:0 ", (1416342266, 0)),
    ("2024-05-01T12:00:00Z", (1714564800, 0)), ("2024-05-01T12:00:00z", (1714564800, 0)),
    ("2024-05-01T14:00:00+02:00", (1714564800, 0)), ("2024-05-01T07:00:00-05:00", (1714564800, 0)),
    ("2024-05-01T14:00:00+0200", (1714564800, 0)), ("2024-05-01T12:00:00", (1714564800, 0)),
    ("2024-05-01 12:00:00.999Z", (1714564800, 0)), ("2024-05-01T12:00Z", (1714564800, 0)),
    ("1970-01-01T00:00:00Z", (0, 0)),
])
def test_parse_oplog_limit_accepts(text, expected):
    limit = parse_oplog_limit(text)
    assert isinstance(limit, Timestamp) and (limit.time, limit.inc) == expected


@pytest.mark.parametrize("text", [
    "1:1:1", "123.123", ":", "", "   ", "-1", "+5", "abc", "12a", "1:x", "4294967296", "1:4294967296",
    "2024-13-01T00:00:00Z", "2024-05-01", "12:00:00", "2024-05-01T25:00:00Z", "1960-01-01T00:00:00Z",
    "2024-05-01T12:00:00+2", None, 123,
])
def test_parse_oplog_limit_rejects_with_both_forms_in_the_message(text):
    with pytest.raises(InvalidOption) as info:
        parse_oplog_limit(text)
    assert "<seconds>[:<increment>]" in info.value.message and "ISO-8601" in info.value.message


@pytest.mark.parametrize("ts, passes", [
    ((4, 9), True), ((4, 0), True), ((0, 1), True), ((5, 0), False), ((5, 1), False), ((1000, 0), False),
])
def test_limit_is_exclusive(ts, passes):
    """TestValidOplogLimitChecking: limit 5:0."""
    assert before_limit(Timestamp(*ts), Timestamp(5, 0)) is passes
    assert before_limit(Timestamp(*ts), None) is True


def test_nested_entries_without_ts_count_as_zero():
    assert before_limit(None, Timestamp(0, 1)) and not before_limit(None, Timestamp(0, 0))
    assert ts_text(Timestamp(1700000123, 4)) == "1700000123:4" and ts_text(None) is None


def test_replay_stops_at_the_first_entry_at_or_past_the_limit():
    target = MemoryTarget()
    entries = [entry("i", "db.c", {"_id": n}, Timestamp(*ts)) for n, ts in enumerate([(4, 0), (4, 9), (5, 0), (4, 1)])]
    result = replayer(target, mode="crud", limit=Timestamp(5, 0)).replay(entries)
    assert [d["_id"] for d in target.docs("db.c")] == [0, 1]
    assert result["stopped_at_limit"] and result["last_applied"] == "4:9" and result["applied"] == 2
    assert result["first_ts"] == "4:0" and result["last_ts"] == "5:0" and result["limit"] == "5:0"


def test_skipped_entries_never_stop_the_replay():
    """Filtering happens before the limit check."""
    target = MemoryTarget()
    entries = [
        entry("n", "", {"msg": "periodic noop"}, Timestamp(9, 0)),
        entry("i", "config.system.sessions", {"_id": 1}, Timestamp(9, 1)),
        entry("c", "db.$cmd", {"startIndexBuild": "c", "indexes": []}, Timestamp(9, 2)),
        entry("i", "db.c", {"_id": 1}, Timestamp(4, 0)),
        entry("i", "db.c", {"_id": 2}, Timestamp(9, 3)),
        entry("i", "db.c", {"_id": 3}, Timestamp(4, 1)),
    ]
    result = replayer(target, mode="crud", limit=Timestamp(5, 0)).replay(entries)
    assert [d["_id"] for d in target.docs("db.c")] == [1]
    assert result["stopped_at_limit"] and result["entries"] == 5
    assert result["skipped"] == {"noop": 1, "config_namespace": 1, "ignored_command": 1}


# --------------------------------------------------------------------------- skip rules

@pytest.mark.parametrize("doc, reason", [
    (entry("n", "", {"msg": "x"}), "noop"),
    (entry("cd", "db.c", {}), "replicated_record_id"),
    (entry("ci", "db.c", {}), "replicated_record_id"),
    (entry("cu", "db.c", {}), "replicated_record_id"),
    (entry("km", "db.c", {}), "replicated_record_id"),
    (entry("i", "__mdb_internal_search.x", {"_id": 1}), "internal_namespace"),
    (entry("i", "config.system.sessions", {"_id": 1}), "config_namespace"),
    (entry("i", "config.cache.test", {"_id": 1}), "config_namespace"),
    (entry("c", "config.$cmd", {"create": "chunks"}), "config_namespace"),
    (entry("c", "db.$cmd", {"startIndexBuild": "c"}), "ignored_command"),
    (entry("c", "db.$cmd", {"abortIndexBuild": "c"}), "ignored_command"),
    (entry("c", "db.$cmd", {"setMultikeyMetadata": "c"}), "ignored_command"),
    (entry("c", "db.$cmd", {"dropIdent": "c"}), "ignored_command"),
    (entry("i", "config.chunks", {"_id": 1}), None),
    (entry("i", "config.settings", {"_id": 1}), None),
    (entry("i", "config.version", {"_id": 1}), None),
    (entry("i", "configx.c", {"_id": 1}), None),
    (entry("c", "db.$cmd", {"createIndexes": "c"}), None),
    (entry("c", "admin.$cmd", {"applyOps": []}), None),
])
def test_skip_rules(doc, reason):
    assert replay.skip_reason(doc) == reason


def test_real_skip_fixtures():
    """oplog_partial_skips: only the five db3.c1 inserts and the create of db3.c1 are applied."""
    target = MemoryTarget()
    entries = list(replay.iter_oplog_file(os.path.join(RESTORE_DATA, "oplog_partial_skips", "oplog.bson")))
    result = replayer(target, mode="crud").replay(entries)
    assert len(entries) == 21 and len(target.docs("db3.c1")) == 5
    assert result["skipped"] == {"config_namespace": 15} and result["applied"] == 6
    assert not [n for n in target.collections if n.startswith("config.")]
    result = replayer(MemoryTarget(), mode="crud").replay(
        replay.iter_oplog_file(os.path.join(RESTORE_DATA, "oplog_ignore_index", "oplog.bson")))
    assert result["applied"] == 0 and result["skipped"] == {"ignored_command": 2}


@pytest.mark.parametrize("doc, is_txn", [
    (entry("c", "admin.$cmd", {"applyOps": []}, lsid={"id": UUID}, txnNumber=Int64(1)), True),
    (entry("c", "admin.$cmd", {"commitTransaction": 1}, lsid={"id": UUID}, txnNumber=Int64(1)), True),
    (entry("c", "admin.$cmd", {"abortTransaction": 1}, lsid={"id": UUID}, txnNumber=Int64(1)), True),
    (entry("c", "admin.$cmd", {"applyOps": []}, lsid={"id": UUID}, txnNumber=Int64(1), multiOpType=1), False),
    (entry("c", "admin.$cmd", {"applyOps": []}, lsid={"id": UUID}), False),
    (entry("c", "admin.$cmd", {"applyOps": []}), False),
    (entry("c", "db.$cmd", {"createIndexes": "k"}, lsid={"id": UUID}, txnNumber=Int64(1)), False),
    (entry("i", "db.c", {"_id": 1}, lsid={"id": UUID}, txnNumber=Int64(1)), False),
])
def test_transaction_detection(doc, is_txn):
    assert replay.is_transaction_entry(doc) is is_txn


# --------------------------------------------------------------------------- transactions

def interleave(cases, seed):
    """One oplog from several op streams, shuffled but keeping each stream's order."""
    streams = [list(case["ops"]) for case in cases]
    rng = random.Random(seed)
    result = []
    while any(streams):
        stream = rng.choice([s for s in streams if s])
        result.append(stream.pop(0))
    return result


@pytest.mark.parametrize("mode", ["crud", "applyops"])
@pytest.mark.parametrize("fixture", [("mongorestore", "testdata", "transactions.json"),
                                     ("mongorestore", "testdata", "transactions-6.1.json"),
                                     ("common", "txn", "testdata", "oplog_entries.json")])
def test_transaction_fixtures_give_their_postimages(fixture, mode):
    """TestMongorestoreTxns: shuffled streams; incomplete and aborted transactions apply nothing."""
    cases = load_ext_json(*fixture)
    for seed in range(3):
        target = MemoryTarget()
        result = replayer(target, mode=mode, batch_size=4).replay(interleave(cases.values(), seed))
        for name, case in cases.items():
            if "postimage" in case:
                assert target.docs(case["ns"]) == sorted(case["postimage"], key=lambda d: repr(d["_id"])), name
        assert result["transactions"] == {"committed": 4, "aborted": 2, "discarded": 2 if len(cases) == 10 else 0}
        assert result["mode_used"] == mode
    if "not transaction with multiOpType" in cases:
        assert [d["_id"] for d in target.docs("test.foo")] == [4, 5]  # vectored insert, not a transaction
    if mode == "applyops":
        assert target.sent and all("ui" not in e for e in target.sent)


def test_transaction_entries_are_buffered_until_commit():
    lsid = {"id": UUID}
    ops = [
        entry("c", "admin.$cmd", {"applyOps": [{"op": "i", "ns": "db.c", "o": {"_id": 1}}], "partialTxn": True},
              Timestamp(1, 1), lsid=lsid, txnNumber=Int64(7)),
        entry("i", "db.c", {"_id": 2}, Timestamp(1, 2)),
        entry("c", "admin.$cmd", {"applyOps": [{"op": "u", "ns": "db.c", "o2": {"_id": 1},
                                                "o": {"$v": 2, "diff": {"u": {"x": 1}}}}], "prepare": True},
              Timestamp(1, 3), lsid=lsid, txnNumber=Int64(7)),
    ]
    target = MemoryTarget()
    engine = replayer(target, mode="crud")
    engine.replay(ops)
    assert target.docs("db.c") == [{"_id": 2}]
    result = engine.replay([entry("c", "admin.$cmd", {"commitTransaction": 1}, Timestamp(1, 4),
                                  lsid=lsid, txnNumber=Int64(7))])
    assert target.docs("db.c") == [{"_id": 1, "x": 1}, {"_id": 2}]
    assert result["transactions"] == {"committed": 1, "aborted": 0, "discarded": 0}
    assert result["last_applied"] == "1:4"


def test_a_commit_past_the_limit_discards_the_transaction():
    lsid = {"id": UUID}
    ops = [
        entry("c", "admin.$cmd", {"applyOps": [{"op": "i", "ns": "db.c", "o": {"_id": 1}}], "prepare": True},
              Timestamp(4, 0), lsid=lsid, txnNumber=Int64(1)),
        entry("c", "admin.$cmd", {"commitTransaction": 1}, Timestamp(5, 0), lsid=lsid, txnNumber=Int64(1)),
    ]
    target = MemoryTarget()
    result = replayer(target, mode="crud", limit=Timestamp(5, 0)).replay(ops)
    assert target.docs("db.c") == [] and result["transactions"]["discarded"] == 1


def test_retryable_writes_are_applied_directly():
    """ts_dump_with_oplog: 872 $v:2 updates with lsid/txnNumber, replayed in windows of 50:
    2164 measurements in 10 buckets, and a second replay changes nothing."""
    base = os.path.join(RESTORE_DATA, "timeseries_tests", "ts_dump_with_oplog")
    target = MemoryTarget()
    with open(os.path.join(base, "timeseries_test", "system.buckets.foo_ts.bson"), "rb") as handle:
        buckets = bson.decode_all(handle.read(), AS_DICT)
    namespace = "timeseries_test.system.buckets.foo_ts"
    target.seed(namespace, *buckets)
    entries = list(replay.iter_oplog_file(os.path.join(base, "oplog.bson")))
    assert all("lsid" in e and "txnNumber" in e for e in entries)

    def measurements():
        return sum(len(b["data"]["measurement"]) for b in target.docs(namespace))

    for _round in range(2):
        target.fetches = []
        result = replayer(target, mode="crud", batch_size=50).replay(entries)
        assert measurements() == 2164 and len(target.docs(namespace)) == 10
        assert result["applied_by_op"] == {"u": 872} and result["last_applied"] == "1623711558:5"
        assert len(target.fetches) == 18  # one find per window of 50 entries


# --------------------------------------------------------------------------- the crud window

def random_ops(rng, count):
    """A random CRUD stream over a few _ids: inserts, replacements, $v:2 and $v:1 updates, deletes."""
    ops = []
    for number in range(count):
        id_value = rng.choice([1, 2, 3, "four", {"k": 5}])
        kind = rng.choice("iiuuuurd")
        ts = Timestamp(100, number + 1)
        if kind == "i":
            ops.append(entry("i", "db.%s" % rng.choice("ab"), {"_id": id_value, "n": number}, ts))
        elif kind == "d":
            ops.append(entry("d", "db.%s" % rng.choice("ab"), {"_id": id_value}, ts))
        elif kind == "r":
            ops.append(entry("u", "db.a", {"_id": id_value, "r": number}, ts, o2={"_id": id_value}))
        else:
            update = rng.choice([{"$v": 2, "diff": {"u": {"n": number}, "i": {"f%d" % (number % 3): number}}},
                                 {"$v": 2, "diff": {"d": {"f0": False}}},
                                 {"$set": {"deep.x": number}}, {"$v": 1, "$unset": {"n": True}}])
            ops.append(entry("u", "db.%s" % rng.choice("ab"), update, ts, o2={"_id": id_value}))
    return ops


def apply_one_by_one(start, ops):
    """The reference: each op on its own, in order."""
    state = {ns: OrderedDict(docs) for ns, docs in start.items()}
    for op in ops:
        coll = state.setdefault(op["ns"], OrderedDict())
        if op["op"] == "i":
            coll[key_of(op["o"]["_id"])] = op["o"]
        elif op["op"] == "d":
            coll.pop(key_of(op["o"]["_id"]), None)
        elif "_id" in op["o"]:
            coll[key_of(op["o"]["_id"])] = op["o"]
        elif key_of(op["o2"]["_id"]) in coll:
            coll[key_of(op["o2"]["_id"])] = diff_utils.apply_update(coll[key_of(op["o2"]["_id"])], op["o"])
    return state


@pytest.mark.parametrize("batch_size", [1, 3, 7, 1000])
def test_batched_crud_equals_one_by_one(batch_size):
    for seed in range(25):
        rng = random.Random(seed)
        start = {"db.a": OrderedDict((key_of(i), {"_id": i, "f0": 0}) for i in (1, "four")), "db.b": OrderedDict()}
        ops = random_ops(rng, 60)
        target = MemoryTarget()
        target.collections = {ns: OrderedDict(docs) for ns, docs in start.items()}
        result = replayer(target, mode="crud", batch_size=batch_size).replay(ops)
        expected = apply_one_by_one(start, ops)
        for namespace in ("db.a", "db.b"):
            got = list(target.collections.get(namespace, {}).items())
            assert sorted(got) == sorted(expected[namespace].items()), (seed, namespace)
        assert result["applied"] + result["skipped"].get("update_missing_document", 0) == 60


def test_window_fetches_only_documents_whose_first_op_is_a_diff():
    target = MemoryTarget()
    target.seed("db.c", {"_id": 1, "a": 1}, {"_id": 3})
    ops = [entry("u", "db.c", {"$v": 2, "diff": {"u": {"a": 2}}}, o2={"_id": 1}),
           entry("i", "db.c", {"_id": 2, "a": 0}),
           entry("u", "db.c", {"$v": 2, "diff": {"u": {"a": 5}}}, o2={"_id": 2}),
           entry("u", "db.c", {"_id": 3, "b": 1}, o2={"_id": 3}),
           entry("u", "db.c", {"$v": 2, "diff": {"i": {"c": 1}}}, o2={"_id": 3}),
           entry("u", "db.c", {"$v": 2, "diff": {"u": {"a": 9}}}, o2={"_id": 4})]
    target.writes = []
    result = replayer(target, mode="crud").replay(ops)
    assert target.fetches == [("db.c", [1, 4])]
    assert target.docs("db.c") == [{"_id": 1, "a": 2}, {"_id": 2, "a": 5}, {"_id": 3, "b": 1, "c": 1}]
    assert result["skipped"] == {"update_missing_document": 1}
    assert target.writes == [("db.c", False, 3)]


def test_a_rejected_bulk_is_written_again_op_by_op_in_oplog_order():
    target = MemoryTarget()
    target.fail_unordered = True
    ops = [entry("i", "db.c", {"_id": n}) for n in range(3)] + [entry("d", "db.c", {"_id": 1})]
    replayer(target, mode="crud").replay(ops)
    assert target.docs("db.c") == [{"_id": 0}, {"_id": 2}]
    assert target.writes == [("db.c", True, 4)]


def test_a_bad_update_stops_after_writing_what_came_before():
    target = MemoryTarget()
    ops = [entry("i", "shop.orders", {"_id": 1}, Timestamp(1700000123, 2)),
           entry("i", "shop.orders", {"_id": 2}, Timestamp(1700000123, 3)),
           entry("u", "shop.orders", {"$v": 2, "diff": {"p": 1}}, Timestamp(1700000123, 4), o2={"_id": 1}),
           entry("i", "shop.orders", {"_id": 3}, Timestamp(1700000123, 5))]
    with pytest.raises(errors.ReplayError) as info:
        replayer(target, mode="crud").replay(ops)
    assert info.value.message.startswith(
        "replay stopped at oplog entry op=u ns=shop.orders ts=1700000123:4: the update cannot be applied (")
    assert info.value.message.endswith(
        "; entries up to 1700000123:3 were applied; fix the cause and replay again from the same oplog "
        "(replay is idempotent)")
    assert info.value.details["last_applied"] == "1700000123:3"
    assert target.docs("shop.orders") == [{"_id": 1}, {"_id": 2}]


def test_ferretdb_full_image_updates_are_replacements():
    """FerretDB logs {$v:1, $set: <post-image>}; as a $set it would keep removed fields."""
    target = MemoryTarget()
    target.seed("db.c", {"_id": 1, "gone": True, "a": 1})
    ferret = entry("u", "db.c", {"$v": 1, "$set": {"_id": 1, "a": 2}}, o2={"_id": 1}, _id=bson.ObjectId())
    mongo = entry("u", "db.c", {"$v": 1, "$set": {"_id": 1, "a": 3}}, o2={"_id": 1})
    replayer(target, mode="crud").replay([ferret])
    assert target.docs("db.c") == [{"_id": 1, "a": 2}]
    target.seed("db.c", {"_id": 1, "gone": True, "a": 1})
    replayer(target, mode="crud").replay([mongo])
    assert target.docs("db.c") == [{"_id": 1, "gone": True, "a": 3}]


# --------------------------------------------------------------------------- commands

def test_unknown_command_is_fatal_and_named():
    target = MemoryTarget()
    ops = [entry("i", "db.c", {"_id": 1}, Timestamp(10, 1)),
           entry("c", "db.$cmd", {"frobnicate": "c"}, Timestamp(10, 2))]
    with pytest.raises(errors.ReplayError) as info:
        replayer(target, mode="crud").replay(ops)
    assert info.value.message == (
        "replay stopped at oplog entry op=c ns=db.$cmd ts=10:2: unknown oplog command name 'frobnicate' "
        "(this tool does not know how to replay it); entries up to 10:1 were applied; fix the cause and "
        "replay again from the same oplog (replay is idempotent)")
    assert target.docs("db.c") == [{"_id": 1}]
    assert info.value.details["applied"] == 1 and info.value.details["op"] == "c"


def test_fcv_timeseries_conversion_is_fatal():
    with pytest.raises(errors.ReplayError, match="upgradeDowngradeViewlessTimeseries.*no entry was applied"):
        replayer(MemoryTarget(), mode="crud").replay(
            [entry("c", "db.$cmd", {"upgradeDowngradeViewlessTimeseries": "ts"})])


def test_nested_applyops_inner_ops_get_the_full_logic():
    """oplogdump: an insert, an applyOps of three inserts, an insert."""
    target = MemoryTarget()
    entries = list(replay.iter_oplog_file(os.path.join(RESTORE_DATA, "oplogdump", "oplog.bson")))
    result = replayer(target, mode="crud").replay(entries)
    assert sorted(d["x"] for d in target.docs("db1.c1")) == [1456, 1457, 1458, 1459, 1460]
    assert result["applied_by_op"] == {"i": 5} and result["last_applied"] == "1511064038:32"
    nested = entry("c", "admin.$cmd", {"applyOps": [
        {"op": "i", "ns": "config.system.sessions", "o": {"_id": 1}},
        {"op": "c", "ns": "db.$cmd", "o": {"createIndexes": "c", "v": 2, "key": {"a": 1}, "name": "a_1"}},
        {"op": "i", "ns": "db.c", "o": {"_id": 1}, "ui": UUID}]})
    target = MemoryTarget()
    result = replayer(target, mode="applyops").replay([nested])
    assert target.sent == [{"op": "i", "ns": "db.c", "o": {"_id": 1}}]
    assert result["skipped"] == {"config_namespace": 1} and list(result["index_catalog"]["db.c"]) == ["a_1"]


def test_applyops_mode_sends_reduced_entries_without_uuids():
    target = MemoryTarget()
    wire = entry("u", "db.c", {"$v": 2, "diff": {"u": {"a": 1}}}, o2={"_id": 1}, ui=UUID, h=Int64(5),
                 wall=None, stmtId=0, lsid={"id": UUID}, txnNumber=Int64(3), prevOpTime={"ts": Timestamp(0, 0)})
    replayer(target, mode="applyops").replay([wire])
    assert list(target.sent[0]) == ["ts", "t", "v", "op", "ns", "o", "o2", "lsid", "txnNumber", "prevOpTime"]
    target = MemoryTarget()
    replayer(target, mode="applyops", preserve_uuid=True).replay([wire])
    assert target.sent[0]["ui"] == UUID


def test_create_loses_record_ids_replicated():
    for mode in ("crud", "applyops"):
        target = MemoryTarget()
        replayer(target, mode=mode).replay([entry("c", "db.$cmd", {"create": "c", "recordIdsReplicated": True,
                                                                   "idIndex": {"key": {"_id": 1}}})])
        sent = target.commands[0][1]
        assert list(sent) == ["create", "idIndex"]


def test_applyops_rerun_tolerates_what_an_earlier_replay_did():
    target = MemoryTarget()
    target.seed("db.a", {"_id": 1})
    result = replayer(target, mode="applyops").replay([
        entry("c", "db.$cmd", {"create": "a"}),
        entry("c", "admin.$cmd", {"renameCollection": "db.gone", "to": "db.x"}),
        entry("c", "db.$cmd", {"create": "b"})])
    assert result["applied_by_op"] == {"c": 2} and result["skipped"] == {"rename_source_missing": 1}
    assert target.commands == [("db.$cmd", {"create": "b"})]


@pytest.mark.parametrize("error", [
    pymongo_errors.OperationFailure("no such command: 'applyOps'", 59, {"codeName": "CommandNotFound"}),
    pymongo_errors.OperationFailure("not authorized on admin", 13, {"codeName": "Unauthorized"}),
    pymongo_errors.OperationFailure("applyOps is not implemented", 238, {"codeName": "NotImplemented"}),
    pymongo_errors.OperationFailure("applyOps is not allowed in this atlas tier", 8000, {"codeName": "AtlasError"}),
])
def test_auto_mode_falls_back_to_crud(error):
    target = MemoryTarget(applyops_error=error)
    result = replayer(target, mode="auto").replay([entry("i", "db.c", {"_id": 1}), entry("i", "db.c", {"_id": 2})])
    assert result["mode_used"] == "crud" and len(target.docs("db.c")) == 2
    assert "refused applyOps" in result["warnings"][0]


def test_auto_mode_keeps_applyops_when_it_works_and_reports_real_errors():
    target = MemoryTarget()
    result = replayer(target, mode="auto").replay([entry("i", "db.c", {"_id": 1}), entry("i", "db.c", {"_id": 2})])
    assert result["mode_used"] == "applyops" and len(target.sent) == 2 and result["applied"] == 2
    bad = pymongo_errors.OperationFailure("bad value", 2, {"codeName": "BadValue", "errmsg": "bad value"})
    with pytest.raises(errors.ReplayError, match=r"server error 2 \(BadValue\): bad value; no entry was applied"):
        replayer(MemoryTarget(applyops_error=bad), mode="auto").replay([entry("i", "db.c", {"_id": 1})])
    refused = pymongo_errors.OperationFailure("no such command", 59, {"codeName": "CommandNotFound"})
    with pytest.raises(errors.ReplayError, match="replay with mode crud or auto"):
        replayer(MemoryTarget(applyops_error=refused), mode="applyops").replay([entry("i", "db.c", {"_id": 1})])


def test_crud_commands():
    target = MemoryTarget()
    target.seed("db.a", {"_id": 1})
    ops = [entry("c", "db.$cmd", {"create": "b", "capped": True, "size": 4096}),
           entry("c", "admin.$cmd", {"renameCollection": "db.a", "to": "db.r", "dropTarget": UUID}),
           entry("c", "db.$cmd", {"collMod": "r", "validator": {}}),
           entry("c", "db.$cmd", {"collMod": "r", "noPadding": True}),
           entry("c", "db.$cmd", {"convertToCapped": "r", "size": 100000}),
           entry("c", "db.$cmd", {"emptycapped": "r"}),
           entry("c", "db.$cmd", {"dbCheck": "r"}),
           entry("c", "db.$cmd", {"drop": "b"}),
           entry("c", "admin.$cmd", {"renameCollection": "db.gone", "to": "db.x"}),
           entry("c", "other.$cmd", {"dropDatabase": 1})]
    result = replayer(target, mode="crud").replay(ops)
    assert target.commands == [
        ("db", {"create": "b", "capped": True, "size": 4096}),
        ("admin", {"renameCollection": "db.a", "to": "db.r", "dropTarget": True}),
        ("db", {"collMod": "r", "validator": {}}),
        ("db", {"convertToCapped": "r", "size": 100000}),
        ("db", {"emptycapped": "r"}),
        ("db", {"drop": "b"}),
        ("admin", {"renameCollection": "db.gone", "to": "db.x", "dropTarget": False}),
        ("other", {"dropDatabase": 1})]
    assert target.docs("db.r") == [{"_id": 1}] and "db.b" not in target.collections
    assert result["skipped"] == {"ignored_command": 1, "rename_source_missing": 1}
    assert result["applied_by_op"] == {"c": 7}


def test_crud_mode_skips_system_collections_it_cannot_write_and_says_so():
    target = MemoryTarget()
    ops = [entry("i", "admin.system.users", {"_id": "admin.ops", "user": "ops"}),
           entry("u", "admin.system.roles", {"_id": "admin.r", "x": 1}, o2={"_id": "admin.r"}),
           entry("i", "shop.system.views", {"_id": "shop.v", "viewOn": "orders"}),
           entry("i", "shop.orders", {"_id": 1})]
    result = replayer(target, mode="crud").replay(ops)
    assert list(target.collections) == ["shop.orders"] and result["skipped"] == {"system_collection": 3}
    assert "3 oplog writes to users, roles, views" in result["warnings"][0]
    result = replayer(MemoryTarget(), mode="applyops").replay(ops)
    assert result["applied"] == 4 and result["warnings"] == []


def test_legacy_system_indexes_inserts_feed_the_catalog():
    spec = {"v": 1, "key": {"a": 1}, "name": "a_1", "ns": "old.c", "unique": True}
    result = replayer(MemoryTarget(), mode="crud").replay([entry("i", "old.system.indexes", spec)])
    assert result["index_catalog"] == {"old.c": {"a_1": {"v": 1, "key": {"a": 1}, "name": "a_1", "unique": True}}}


# --------------------------------------------------------------------------- index catalog

def fixture_oplog(*parts):
    return list(replay.iter_oplog_file(os.path.join(RESTORE_DATA, *parts)))


def test_index_catalog_from_create_and_commit_index_builds():
    result = replayer(MemoryTarget(), mode="crud").replay(fixture_oplog("commit_indexes_build", "oplog.bson"))
    assert sorted(result["index_catalog"]["commit_index.test"]) == ["a_1", "b_1"]  # + _id_: 3 indexes
    assert result["index_catalog"]["commit_index.test"]["b_1"]["partialFilterExpression"] == {"a": 1.0}
    result = replayer(MemoryTarget(), mode="crud").replay(fixture_oplog("create_indexes", "oplog.bson"))
    assert sorted(result["index_catalog"]["create_indexes.test"]) == ["a_1", "b_1"]
    assert "ns" not in result["index_catalog"]["create_indexes.test"]["a_1"]
    result = replayer(MemoryTarget(), mode="crud").replay(fixture_oplog("tools-2002", "oplog.bson"))
    assert result["index_catalog"] == {"foo.bar": {"a_1_b_1": {"v": 2, "key": {"a": 1.0, "b": 1.0}, "name": "a_1_b_1"}}}


def test_collmod_index_changes_stay_in_the_catalog():
    result = replayer(MemoryTarget(), mode="crud").replay(
        fixture_oplog("oplogs", "bson", "collMod_indexUniqueness.bson"))
    catalog = result["index_catalog"]["mongodump_test_db.coll1"]
    assert sorted(catalog) == ["a_1", "b_1", "c_1", "d_1"]  # + _id_: 5 indexes
    assert all(spec["prepareUnique"] is True and "unique" not in spec for spec in catalog.values())
    seeded = {"test.foo": {"f_1": {"v": 2, "key": {"f": 1.0}, "name": "f_1", "expireAfterSeconds": 1000}}}
    target = MemoryTarget()
    result = replayer(target, mode="crud", index_catalog=seeded).replay(
        fixture_oplog("oplogs", "bson", "collMod_with_hidden.bson"))
    assert result["index_catalog"]["test.foo"]["f_1"] == {"v": 2, "key": {"f": 1.0}, "name": "f_1",
                                                          "expireAfterSeconds": 3600, "hidden": True}
    assert target.commands == [] and seeded["test.foo"]["f_1"]["expireAfterSeconds"] == 1000
    # an index the catalog does not know is changed by the server
    result = replayer(target, mode="crud").replay(fixture_oplog("oplogs", "bson", "collMod.bson"))
    assert target.commands == [("test", {"collMod": "foo", "index": {"name": "f_1", "expireAfterSeconds": 3600}})]


def test_drop_index_leaves_the_catalog_and_the_target():
    seeded = {"test.foo": {"f_1": {"v": 2, "key": {"f": 1.0}, "name": "f_1"},
                           "g_1": {"v": 2, "key": {"g": 1}, "name": "g_1"}}}
    target = MemoryTarget()
    target.create_index("test.foo", {"v": 2, "key": {"f": 1}, "name": "f_1"})
    result = replayer(target, mode="crud", index_catalog=seeded).replay(fixture_oplog("oplogs", "bson", "drop_index.bson"))
    assert list(result["index_catalog"]["test.foo"]) == ["g_1"]
    assert [s["name"] for s in target.list_indexes("test.foo")] == ["_id_"]
    ops = [entry("c", "test.$cmd", {"dropIndexes": "foo", "index": {"g": 1.0}}),
           entry("c", "test.$cmd", {"createIndexes": "bar", "v": 2, "key": {"b": 1}, "name": "b_1"}),
           entry("c", "test.$cmd", {"createIndexes": "baz", "v": 2, "key": {"b": 1}, "name": "b_1"}),
           entry("c", "admin.$cmd", {"renameCollection": "test.bar", "to": "test.baz", "dropTarget": True}),
           entry("c", "test.$cmd", {"createIndexes": "other", "v": 2, "key": {"o": 1}, "name": "o_1"}),
           entry("c", "test.$cmd", {"drop": "other"})]
    result = replayer(MemoryTarget(), mode="crud", index_catalog=seeded).replay(ops)
    assert result["index_catalog"] == {"test.foo": {"f_1": seeded["test.foo"]["f_1"]},
                                       "test.baz": {"b_1": {"v": 2, "key": {"b": 1}, "name": "b_1"}}}
    result = replayer(MemoryTarget(), mode="crud", index_catalog=seeded).replay(
        fixture_oplog("oplogs", "bson", "drop_db.bson"))
    assert result["index_catalog"] == {}


def test_build_indexes_skips_existing_keys():
    target = MemoryTarget()
    target.create_index("db.c", {"v": 2, "key": {"a": 1}, "name": "a_1"})
    catalog = {"db.c": {"_id_": {"v": 2, "key": {"_id": 1}, "name": "_id_"},
                        "a_1": {"v": 2, "key": {"a": 1.0}, "name": "a_1"},
                        "b_1": {"v": 2, "key": {"b": 1.0}, "name": "b_1", "unique": True}},
               "db.d": {"x_1": {"v": 2, "key": {"x": 1}, "name": "x_1"}}}
    assert replay.build_indexes(None, catalog, target=target) == {"created": 2, "existing": 2}
    assert replay.build_indexes(None, catalog, target=target) == {"created": 0, "existing": 4}


# --------------------------------------------------------------------------- reading oplogs

def test_iter_oplog_file_sniffs_gzip_and_accepts_entries_over_16_mib(tmp_path):
    plain = os.path.join(RESTORE_DATA, "oplogdump", "oplog.bson")
    packed = tmp_path / "oplog.bson"  # mongodump --gzip keeps the name
    with open(plain, "rb") as source, gzip.open(str(packed), "wb") as sink:
        sink.write(source.read())
    assert list(replay.iter_oplog_file(str(packed))) == list(replay.iter_oplog_file(plain))
    big = entry("i", "db.c", {"_id": 1, "blob": "x" * (16 * 1024 * 1024 + 1024)})
    path = tmp_path / "big.bson"
    path.write_bytes(bson.encode(big))
    assert len(list(replay.iter_oplog_file(str(path)))[0]["o"]["blob"]) == 16 * 1024 * 1024 + 1024
    path.write_bytes(bson.encode(big)[:-10])
    with pytest.raises(FormatError):
        list(replay.iter_oplog_file(str(path)))


def test_iter_archive_oplog_reads_only_the_oplog_namespace():
    entries = list(replay.iter_archive_oplog(os.path.join(RESTORE_DATA, "dump-w-oplog.archive")))
    assert len(entries) == 18
    assert sorted(set(e["ns"] for e in entries)) == ["config.system.sessions", "test.foo"]
    assert list(entries[0])[:5] == ["ts", "t", "h", "v", "op"]  # field order as stored


def test_options_are_validated():
    with pytest.raises(InvalidOption, match="mode 'fast' is unknown"):
        replay.OplogReplayer(None, mode="fast")
    with pytest.raises(InvalidOption, match="batch size"):
        replay.OplogReplayer(None, batch_size=0)
    assert replay.OplogReplayer(None, mode="crud", preserve_uuid=True).warnings


def test_progress_is_reported_after_each_flush():
    seen = []
    ops = [entry("i", "db.c", {"_id": n}, Timestamp(1, n + 1)) for n in range(10)]
    replayer(MemoryTarget(), mode="crud", batch_size=4, progress=seen.append).replay(ops)
    assert [p["applied"] for p in seen] == [4, 8, 10] and seen[-1]["last_applied"] == "1:10"


# --------------------------------------------------------------------------- wire protocol

def _mock_server():
    from mockupdb import MockupDB
    server = MockupDB()
    hello = {"isWritablePrimary": True, "setName": "rs0", "hosts": [], "maxWireVersion": 21, "minWireVersion": 0}
    server.autoresponds("hello", hello)
    server.autoresponds("ismaster", hello)
    server.autoresponds("ping")
    server.run()
    return server


def _serve(server, handlers, received, stop):
    """Answer commands until ``stop`` is set; record each (command name, document)."""
    while not stop.is_set():
        try:
            request = server.receives(timeout=0.2)
        except AssertionError:
            continue
        name = next(iter(request.doc))
        received.append((name, request.doc))
        handlers.get(name, lambda r: r.ok())(request)


def _run_against_mock(handlers, entries, **kwargs):
    import pymongo
    server = _mock_server()
    received, stop = [], threading.Event()
    thread = threading.Thread(target=_serve, args=(server, handlers, received, stop), daemon=True)
    thread.start()
    client = pymongo.MongoClient(server.uri, directConnection=True, serverSelectionTimeoutMS=3000)
    try:
        result = replay.OplogReplayer(client, **kwargs).replay(entries)
    finally:
        stop.set()
        thread.join(5)
        client.close()
        server.stop()
    return result, received


@pytest.mark.protocol
def test_protocol_applyops_sends_one_reduced_entry_per_command():
    wire = entry("i", "shop.orders", {"_id": 1, "total": 5}, Timestamp(1700000123, 4), ui=UUID, h=Int64(9),
                 wall=None, stmtId=0)
    result, received = _run_against_mock({}, [wire, entry("n", "", {"msg": "noop"})], mode="applyops",
                                         bypass_document_validation=True)
    commands = [doc for name, doc in received if name == "applyOps"]
    assert len(commands) == 1 and result["applied"] == 1 and result["mode_used"] == "applyops"
    sent = commands[0]
    assert list(sent)[:2] == ["applyOps", "bypassDocumentValidation"] and sent["bypassDocumentValidation"] is True
    assert sent["$db"] == "admin"
    assert [dict(e) for e in sent["applyOps"]] == [{"ts": Timestamp(1700000123, 4), "t": 1, "v": 2, "op": "i",
                                                    "ns": "shop.orders", "o": {"_id": 1, "total": 5}}]


def _refuse_applyops(request):
    request.command_err(code=59, errmsg="no such command: 'applyOps'", codeName="CommandNotFound")


@pytest.mark.protocol
def test_protocol_auto_falls_back_to_crud_when_applyops_is_not_found():
    def upsert(request):
        request.reply({"ok": 1, "n": 2, "nModified": 0})

    def find(request):
        request.reply({"ok": 1, "cursor": {"id": Int64(0), "ns": "shop.orders",
                                           "firstBatch": [{"_id": 2, "total": 1, "note": "x"}]}})

    ops = [entry("i", "shop.orders", {"_id": 1, "total": 5}, Timestamp(10, 1)),
           entry("u", "shop.orders", {"$v": 2, "diff": {"d": {"note": False}, "u": {"total": 7}}},
                 Timestamp(10, 2), o2={"_id": 2})]
    result, received = _run_against_mock({"applyOps": _refuse_applyops, "update": upsert, "find": find}, ops, mode="auto")
    names = [name for name, _doc in received if name not in ("hello", "ismaster", "endSessions")]
    # the pre-image of the diff update, then no other query: the inserted document is inserted,
    # the updated one replaced
    assert names == ["applyOps", "find", "insert", "update"]
    assert result["mode_used"] == "crud" and result["applied"] == 2 and "CommandNotFound" in result["warnings"][0]
    assert "59" in result["warnings"][0]
    insert = [doc for name, doc in received if name == "insert"][0]
    assert [dict(d) for d in insert["documents"]] == [{"_id": 1, "total": 5}]
    update = [doc for name, doc in received if name == "update"][0]
    assert update["ordered"] is False
    assert [dict(u["u"]) for u in update["updates"]] == [{"_id": 2, "total": 7}]
    assert [dict(u["q"]) for u in update["updates"]] == [{"_id": 2}]
    assert all(u["upsert"] is True for u in update["updates"])


@pytest.mark.protocol
def test_protocol_insert_of_an_existing_id_becomes_a_replacement():
    """The dump (or an earlier replay) already holds document 2: its insert fails on _id and is
    sent again as a replacement; document 1 is not sent twice."""
    def insert(request):
        request.reply({"ok": 1, "n": 1, "writeErrors": [
            {"index": 1, "code": 11000, "keyPattern": {"_id": 1}, "keyValue": {"_id": 2},
             "errmsg": "E11000 duplicate key error collection: shop.orders index: _id_ dup key: { _id: 2 }"}]})

    def update(request):
        request.reply({"ok": 1, "n": 1, "nModified": 1})

    ops = [entry("i", "shop.orders", {"_id": n, "total": n}, Timestamp(10, n)) for n in (1, 2)]
    result, received = _run_against_mock({"applyOps": _refuse_applyops, "insert": insert, "update": update},
                                         ops, mode="auto")
    names = [name for name, _doc in received if name not in ("hello", "ismaster", "endSessions")]
    assert names == ["applyOps", "insert", "update"] and result["applied"] == 2
    update_doc = [doc for name, doc in received if name == "update"][0]
    assert [(dict(u["q"]), dict(u["u"]), u["upsert"]) for u in update_doc["updates"]] == [
        ({"_id": 2}, {"_id": 2, "total": 2}, True)]


@pytest.mark.protocol
def test_protocol_duplicate_on_a_unique_index_stops_the_replay():
    """A duplicate on another unique index is a real conflict: not retried, reported with the entry."""
    def insert(request):
        request.reply({"ok": 1, "n": 0, "writeErrors": [
            {"index": 0, "code": 11000, "keyPattern": {"email": 1}, "keyValue": {"email": "a@b"},
             "errmsg": "E11000 duplicate key error collection: shop.users index: email_1 dup key"}]})

    ops = [entry("i", "shop.users", {"_id": 1, "email": "a@b"}, Timestamp(10, 1))]
    with pytest.raises(errors.ReplayError) as failure:
        _run_against_mock({"applyOps": _refuse_applyops, "insert": insert}, ops, mode="auto")
    message = failure.value.message
    assert "op=i ns=shop.users ts=10:1" in message and "email_1 dup key" in message
    assert "no entry was applied" in message
