# -*- coding: utf-8 -*-
"""Our readers against the real mongo-tools fixtures in ../shared/compat/mongo-tools.

The inventory table of MANIFEST.md is parsed at collection time: every fixture row with a
checkable summary ("N documents", "N oplog entries", archive, metadata, prelude, gzip) is
reproduced by our readers, every X-tagged fixture must be rejected, and the prose facts
of the manifest are checked one by one below.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ast
import hashlib
import json
import os
import shutil
import tempfile
import re
from collections import Counter

import bson
import pytest
from bson.decimal128 import Decimal128
from bson.objectid import ObjectId

from support import COMPAT as FIXTURES, is_gzip, compat_file as fx
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import versions
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import archive as A
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import bsonio
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import dump_metadata
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import dump_names
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import dump_scan
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import FormatError

MANIFEST = os.path.join(FIXTURES, "MANIFEST.md")
ROW = re.compile(r"^\| `([^`]+)` \| (\d+) \| `([0-9a-f]{16})` \| ([^|]+?) \| (.*) \|$")
NOT_FORMAT_FILES = re.compile(r"^(JSON/Extended-JSON text, \d+ lines|text|other \(0 bytes\))$")


def load_inventory():
    # Loud on purpose: CI always has ../shared beside the checkout, so never skip.
    assert os.path.isfile(MANIFEST), (
        "compat corpus missing: %s (CI checks out ../shared beside the repository)"
        % os.path.abspath(MANIFEST))
    with open(MANIFEST, encoding="utf-8") as handle:
        text = handle.read()
    section = text[text.index("## Inventory"):]
    rows = []
    for line in section.splitlines():
        match = ROW.match(line)
        if match:
            path, size, sha, prov, content = match.groups()
            rows.append({"path": path, "size": int(size), "sha": sha,
                         "tags": set(prov.strip().split(",")), "content": content.strip()})
    assert len(rows) == 185, "MANIFEST inventory changed: %d rows" % len(rows)
    return rows


INVENTORY = load_inventory()
FACT_ROWS = [row for row in INVENTORY
             if row["tags"] != {"L"} and not NOT_FORMAT_FILES.match(row["content"])
             and not row["content"].startswith("NOT a valid BSON stream")]
X_ROWS = [row for row in INVENTORY if "X" in row["tags"]]


def td(*parts):
    return fx("mongorestore", "testdata", *parts)


def raw_docs(path, max_size=bsonio.MAX_BSON_SIZE):
    with bsonio.open_decompressed(path) as handle:
        return list(bsonio.iter_raw_documents(handle, path, max_size))


def decoded(path, max_size=bsonio.MAX_BSON_SIZE):
    return [bson.decode(item) for item in raw_docs(path, max_size)]


def read_archive(path):
    with A.open_archive_for_read(path) as handle:
        reader = A.ArchiveReader(handle, path)
        events = list(reader.iter_events())
    return reader, events


def archive_docs(events, collection):
    return [bson.decode(event[3]) for event in events
            if event[0] == "document" and event[2] == collection]


# ------------------------------------------------------------------ inventory integrity


def test_every_inventory_file_is_unchanged():
    for row in INVENTORY:
        path = fx(row["path"])
        with open(path, "rb") as handle:
            data = handle.read()
        assert len(data) == row["size"], row["path"]
        assert hashlib.sha256(data).hexdigest()[:16] == row["sha"], row["path"]


def test_every_trusted_fixture_has_a_checked_fact():
    # T, T*, S, S* rows must all be covered; only non-dump text files are left out
    checked = set(row["path"] for row in FACT_ROWS)
    for row in INVENTORY:
        if row["tags"] & {"T", "T*", "S", "S*"} and row["path"] not in checked:
            assert NOT_FORMAT_FILES.match(row["content"]), row


# ----------------------------------------------------------------- per-row fact checks


def check_documents(path, content):
    match = re.match(r"^(?:empty \()?(\d+) documents\)?$", content)
    assert match, content
    assert len(raw_docs(path)) == int(match.group(1))


def op_label(entry):
    if entry["op"] == "c":
        return "c:%s" % next(iter(entry["o"]))
    return entry["op"]


def check_oplog(path, content):
    match = re.match(r"^(\d+) oplog entries \((.*)\); ts (\d+):(\d+) \.\. (\d+):(\d+)$", content)
    assert match, content
    entries = decoded(path, bsonio.MAX_OPLOG_ENTRY_SIZE)
    assert len(entries) == int(match.group(1))
    counts = Counter(op_label(entry) for entry in entries)
    assert ", ".join("%s x%d" % item for item in sorted(counts.items())) == match.group(2)
    first, last = entries[0]["ts"], entries[-1]["ts"]
    expected = tuple(int(part) for part in match.group(3, 4, 5, 6))
    assert (first.time, first.inc, last.time, last.inc) == expected


def check_archive(path, content):
    match = re.match(r"^archive v(\S+) server (\S+) tool (\S+); prelude=(\[.*\]); data=(.*)$",
                     content)
    assert match, content
    version, server, tool, prelude, data = match.groups()
    with A.open_archive_for_read(path) as handle:
        reader = A.ArchiveReader(handle, path)
        summary = reader.namespaces_summary()  # validates structure and every CRC
    assert (reader.header["version"], reader.header["server_version"],
            reader.header["tool_version"]) == (version, server, tool)
    names = []
    for entry in reader.prelude:
        name = A.namespace(entry["db"], entry["collection"])
        names.append(name + ("[%s]" % entry["type"] if entry["type"] is not None else ""))
    assert names == ast.literal_eval(prelude)
    expected = {}
    for item in data.split(", "):
        ns, count = item.rsplit(":", 1)
        expected[ns] = int(count.split()[0])
    assert dict((ns, item["documents"]) for ns, item in summary.items()) == expected
    assert list(summary) == list(expected)  # same stream order


def check_metadata(path, content, text=None):
    if text is None:
        with bsonio.open_decompressed(path) as handle:
            text = handle.read().decode("utf-8")
    meta = dump_metadata.metadata_from_json(text, path)
    parts = dict(part.split("=", 1) for part in content.split("; ") if "=" in part)
    style = content.rsplit("; ", 1)[-1]
    assert style == ("canonical-extjson" if '"$numberInt"' in text else "legacy/relaxed-json")
    keys = parts.get("options keys")
    if keys is not None:
        assert list(meta["options"]) == ([] if keys == "{}" else ast.literal_eval(keys))
    else:
        assert meta["options"] == {}
    assert [index["name"] for index in meta["indexes"]] == ast.literal_eval(parts["indexes"])
    assert meta["uuid"] == parts.get("uuid")
    # the manifest shortens long names to 40 characters
    assert meta["collectionName"][:40] == parts.get("collectionName", "")
    assert meta["type"] == parts.get("type", "")


def check_prelude(path, content):
    assert dump_metadata.read_prelude(path) == json.loads(content[len("prelude.json: "):])


def check_row(path, content):
    if content.startswith("gzip -> "):
        assert is_gzip(path)
        return check_row(path, content[len("gzip -> "):])
    if content == "empty file":
        with bsonio.open_decompressed(path) as handle:
            assert dump_metadata.metadata_from_json(handle.read(), path) is None
        return None
    if content.startswith("archive "):
        return check_archive(path, content)
    if " oplog entries " in content:
        return check_oplog(path, content)
    if content.startswith("prelude.json: "):
        return check_prelude(path, content)
    if "indexes=" in content:
        return check_metadata(path, content)
    return check_documents(path, content)


@pytest.mark.parametrize("row", FACT_ROWS, ids=[row["path"] for row in FACT_ROWS])
def test_fixture_fact(row):
    check_row(fx(row["path"]), row["content"])


# ------------------------------------------------------------------- X: must be rejected


def first_doc(path):
    return raw_docs(path)[0]


def reject_stream(path):
    raw_docs(path)


def reject_objcheck(path):
    for index, item in enumerate(raw_docs(path)):
        bsonio.check_document(item, path, index)


def reject_strict_arrays(path):
    for index, item in enumerate(raw_docs(path)):
        bsonio.check_document(item, path, index, strict_arrays=True)


def reject_archive_metadata(path):
    reader, events = read_archive(path)
    for entry in reader.prelude:
        reader.parse_metadata(entry)


def reject_database_directory(path):
    """A copy of the file alone in a database directory, as a dump holding only it."""
    directory = tempfile.mkdtemp()
    try:
        shutil.copy(path, directory)
        dump_scan.scan_database_directory(directory, "db1")
    except FormatError as exc:
        raise FormatError(exc.message.replace(os.path.join(directory, os.path.basename(path)), path))
    finally:
        shutil.rmtree(directory)


def reject_buckets(path):
    for index, item in enumerate(raw_docs(path), 1):
        dump_scan.check_timeseries_bucket(item, path, index)


LONG_X = ("mongorestore/testdata/longcollectionname/" + "a" + "Very" * 44 +
          "LongCollectionNameConsistingOfE%24someMadeUpInvalidHashString.bson")
X_EXPECTATIONS = {
    "bsondump/testdata/bad_cstring.bson": (reject_objcheck, ["malformed"]),
    "bsondump/testdata/bad_type.bson": (reject_objcheck, ["malformed", "unknown BSON type"]),
    "bsondump/testdata/broken_array.bson": (reject_strict_arrays, ["array", "'9'"]),
    "bsondump/testdata/invalid_field_name.bson": (reject_stream, ["truncated", "at byte 283"]),
    "bsondump/testdata/partial_file.bson": (reject_stream, ["truncated", "at byte 164"]),
    "bsondump/testdata/random_bytes.bson": (reject_stream, ["invalid document length 1625369376",
                                                            "at byte 0"]),
    "mongorestore/testdata/bad-format.archive": (reject_archive_metadata,
                                                 ["test.ixtest", "invalid JSON"]),
    LONG_X: (reject_database_directory, ["shortened long collection name", "no metadata"]),
    "mongorestore/testdata/timeseries_tests/ts_dump_invalid_buckets/timeseries_test/"
    "system.buckets.foo_ts.bson": (reject_buckets, ["not a timeseries bucket", "control"]),
}


def test_x_expectations_cover_the_manifest():
    assert set(row["path"] for row in X_ROWS) == set(X_EXPECTATIONS)


@pytest.mark.parametrize("path", sorted(X_EXPECTATIONS))
def test_x_fixture_is_rejected(path):
    reject, fragments = X_EXPECTATIONS[path]
    full = fx(path)
    with pytest.raises(FormatError) as err:
        reject(full)
    message = err.value.message
    assert full in message, message  # names the file
    for fragment in fragments:
        assert fragment in message, message
    assert "; " in message  # cause, then what to do next


# ------------------------------------------------------------- prose facts, archives


def test_test_bar_archive_facts():
    reader, events = read_archive(td("test.bar.archive"))
    assert [entry.get("type") for entry in reader.prelude] == [None, None]
    bar_docs = [event[3] for event in events if event[0] == "document" and event[2] == "bar"]
    assert len(bar_docs) == 1 and len(bar_docs[0]) == 35 and list(bson.decode(bar_docs[0]))[0] == "_id"
    assert len(archive_docs(events, "system.version")) == 1
    meta = reader.parse_metadata(reader.prelude[1])
    index = meta["indexes"][1]
    assert index["name"] == "incompatible_with_version_32" and index["v"] == Decimal128("2")


def test_dump_with_oplog_archive_facts():
    reader, events = read_archive(td("dump-w-oplog.archive"))
    assert reader.header["concurrent_collections"] == 4
    assert [A.namespace(entry["db"], entry["collection"]) for entry in reader.prelude] == [
        "test.foo", ".oplog", "admin.system.version"]
    assert reader.prelude[1]["metadata"] == ""
    foo_docs = archive_docs(events, "foo")
    assert sorted(item["a"] for item in foo_docs) == list(range(1, 26))
    oplog = archive_docs(events, "oplog")
    assert len(oplog) == 18
    inserts = [entry for entry in oplog if entry["ns"] == "test.foo"]
    assert len(inserts) == 16 and all(entry["op"] == "i" for entry in inserts)
    assert sorted(entry["o"]["a"] for entry in inserts) == list(range(10, 26))
    foo_ids = set(item["_id"] for item in foo_docs)
    assert all(entry["o"]["_id"] in foo_ids for entry in inserts)
    others = [entry["ns"] for entry in oplog if entry["ns"] != "test.foo"]
    assert others == ["config.system.sessions"] * 2


def test_timeseries_archive_facts():
    for parts, crc in ((("timeseries_tests", "dump.archive"), 4620499534075225423),
                       (None, 363712516458175641)):
        path = td(*parts) if parts else fx(
            "_history", "97ebb7952fce28b26a6744c33f7df0b0001628a7", "mongorestore", "testdata",
            "timeseries_tests", "dump.archive")
        reader, events = read_archive(path)
        assert [(entry["collection"], entry["type"]) for entry in reader.prelude] == [
            ("system.views", "collection"), ("foo_ts", "timeseries"), ("system.version", "collection")]
        ends = dict((event[2], event[3]) for event in events if event[0] == "end")
        assert ends["system.buckets.foo_ts"] == crc and ends["system.views"] == 0
        buckets = archive_docs(events, "system.buckets.foo_ts")
        assert len(buckets) == 10 and sum(len(bucket["data"]["ts"]) for bucket in buckets) == 1000
        # the empty admin.system.views block: header(EOF false) TERM header(EOF true) TERM
        data = open(path, "rb").read()
        views = (A.encode_header("admin", "system.views") + A.TERMINATOR
                 + A.encode_header("admin", "system.views", True, 0) + A.TERMINATOR)
        assert views in data
        meta = reader.parse_metadata(reader.prelude[1])
        assert meta["type"] == "timeseries" and meta["uuid"] is None


# ------------------------------------------------------- prose facts, directory dumps


def test_testdirs_facts():
    scan = dump_scan.scan_dump_directory(td("testdirs"))
    assert scan.namespaces == ["db1.c1", "db1.c2", "db1.c3", "db1.c4", "db2.c1"]
    counts = dict((entry.namespace, len(raw_docs(entry.bson_path))) for entry in scan.entries)
    assert counts == {"db1.c1": 100, "db1.c2": 0, "db1.c3": 0, "db1.c4": 10, "db2.c1": 0}
    assert sum(counts.values()) == 110
    assert raw_docs(scan.oplog_path) == []


def test_special_character_facts():
    entry = dump_scan.scan_dump_directory(td("specialcharacter")).entries[0]
    assert entry.collection == u"cafés" and len(raw_docs(entry.bson_path)) == 1
    assert entry.metadata["indexes"][0]["ns"] == u"test.cafés"  # moved from db test; ignored


def test_long_collection_name_facts():
    entry = dump_scan.scan_dump_directory(td("longcollectionname")).entries[0]
    assert entry.db == "db1" and len(entry.collection) == 247
    assert entry.collection == entry.metadata["collectionName"]
    assert os.path.basename(entry.bson_path) == dump_names.collection_file_stem(entry.collection) + ".bson"
    (only,) = decoded(entry.bson_path)
    assert list(only) == ["_id", "a"] and only["a"] == 1


def test_oplogdump_facts():
    scan = dump_scan.scan_dump_directory(td("oplogdump"))
    assert scan.namespaces == ["admin.system.version", "db1.c1"]
    c1 = scan.entry("db1", "c1")
    assert [item["x"] for item in decoded(c1.bson_path)] == [1451, 1452, 1453, 1454, 1455]
    assert c1.metadata["uuid"] == "699f503df64b4aa8a484a8052046fa3a"
    oplog = decoded(scan.oplog_path)
    assert [entry["op"] for entry in oplog] == ["i", "c", "i"]
    assert oplog[0]["o"]["x"] == 1456 and oplog[2]["o"]["x"] == 1460
    assert oplog[1]["ns"] == "admin.$cmd"
    assert [inner["o"]["x"] for inner in oplog[1]["o"]["applyOps"]] == [1457, 1458, 1459]
    assert dump_scan.scan_dump_directory(td("oplogdumpmaxsize")).oplog_path is None


def test_coll_mod_ttl_index_facts():
    scan = dump_scan.scan_dump_directory(td("collMod_ttl_index"))
    coll1 = scan.entry("mongodump_test_db", "coll1")
    assert [item["a"] for item in decoded(coll1.bson_path)] == list(range(10))
    indexes = coll1.metadata["indexes"]
    assert [index["name"] for index in indexes] == ["_id_", "a_1"]
    ttl = indexes[1]["expireAfterSeconds"]
    assert ttl == 1000 and isinstance(ttl, int) and not isinstance(ttl, bson.int64.Int64)
    ops = decoded(scan.oplog_path)
    assert ops[0]["op"] == "i" and "lsid" in ops[0] and "txnNumber" in ops[0]
    assert ops[1]["o"]["collMod"] == "coll1"
    assert ops[1]["o"]["index"] == {"name": "a_1", "expireAfterSeconds": 1000}


def test_coll_with_index_family_facts():
    expected_doc = {"_id": ObjectId("605c74db479d533a6e39d860"), "f": 1.0}
    for name, db, indexes in (("coll_with_index", "test", ["_id_", "f_1"]),
                              ("coll_with_ttl_index", "test", ["_id_", "f_1"]),
                              ("coll_without_index", "test", ["_id_"]),
                              ("coll_with_geohaystack_index", "geohaystack_test", ["_id_", "f_1"])):
        entry = dump_scan.scan_dump_directory(td(name)).entry(db, "foo")
        assert decoded(entry.bson_path) == [expected_doc]
        assert [index["name"] for index in entry.metadata["indexes"]] == indexes
        assert entry.metadata["uuid"].startswith("0679db72")
    ttl = dump_scan.scan_dump_directory(td("coll_with_ttl_index")).entries[0]
    assert ttl.metadata["indexes"][1]["expireAfterSeconds"] == 1000
    geo = dump_scan.scan_dump_directory(td("coll_with_geohaystack_index")).entries[0]
    assert geo.metadata["indexes"][1]["key"] == {"a": "geoHaystack", "f": 1.0}


def test_duplicate_index_key_facts():
    entry = dump_scan.scan_dump_directory(td("duplicate_index_key_with_oplog")).entry("test", "foo")
    docs = decoded(entry.bson_path)
    assert len(docs) == 2 and all(item["a"] == 1.0 for item in docs)
    assert entry.metadata["indexes"][1]["name"] == "a_1" and entry.metadata["indexes"][1]["unique"]
    ops = decoded(td("duplicate_index_key_with_oplog", "oplog.bson"))
    assert [entry["op"] for entry in ops] == ["d", "i"]
    legacy = dump_scan.scan_dump_directory(td("duplicate_index_key")).entries[0]
    assert [index["key"] for index in legacy.metadata["indexes"][1:]] == [
        {"foo": ""}, {"foo": 1.0}, {"foo": 1}, {"foo": 2}]


def test_index_fixtures_facts():
    entry = dump_scan.scan_dump_directory(td("indextestdump")).entries[0]
    assert [item["a"] for item in decoded(entry.bson_path)] == list(range(100))
    index = entry.metadata["indexes"][1]
    assert index["name"] == "a_1_b_true" and index["safe"] is True
    assert index["key"]["c"] == Decimal128("0") and index["key"]["d"] == ""
    long_index = dump_scan.scan_dump_directory(td("longindextestdump")).entries[0]
    assert [index["name"][:4] for index in long_index.metadata["indexes"]] == ["a_AA"]


def test_hashed_and_auto_index_facts():
    entries = dict((e.collection, e) for e in dump_scan.scan_database_directory(td(), "testdata", []))
    entry = entries["hashedIndexes"]
    assert len(decoded(entry.bson_path)) == 2
    keys = dict((index["name"], index["key"]) for index in entry.metadata["indexes"])
    assert keys["a.b_hashed"] == {"a.b": "hashed"} and keys["b_hashed"] == {"b": "hashed"}
    local = dump_scan.scan_database_directory(td("local"), "local", [])
    for entry in (entries["test_auto_idx"], [e for e in local if e.collection == "test_auto_idx"][0]):
        assert entry.metadata["options"] == {"autoIndexId": False} and entry.metadata["indexes"] == []
        assert len(decoded(entry.bson_path)) == 2


def test_users_dump_facts():
    scan = dump_scan.scan_dump_directory(td("usersdump"))
    assert scan.namespaces == ["admin.system.roles", "admin.system.users", "admin.system.version"]
    assert [item["user"] for item in decoded(scan.entry("admin", "system.users").bson_path)] == [
        "reportsUser"]
    assert [item["role"] for item in decoded(scan.entry("admin", "system.roles").bson_path)] == [
        "manageOpRole"]
    version = decoded(scan.entry("admin", "system.version").bson_path)
    assert sorted(item["_id"] for item in version) == ["authSchema", "featureCompatibilityVersion"]
    assert [item for item in version if item["_id"] == "authSchema"][0]["currentVersion"] == 5


def test_auth_version_facts():
    assert decoded(td("auth_version_3.bson"))[0]["currentVersion"] == 3
    assert decoded(td("auth_version_5.bson"))[0]["currentVersion"] == 5
    assert "currentVersion" not in decoded(td("system.version.no_auth_schema.bson"))[0]


def test_timeseries_directory_facts():
    scan = dump_scan.scan_dump_directory(td("timeseries_tests", "ts_dump"))
    ts = scan.entry("timeseries_test", "foo_ts")
    assert ts.metadata["options"]["timeseries"] == {
        "timeField": "ts", "metaField": "meta", "granularity": "seconds", "bucketMaxSpanSeconds": 3600}
    assert [index["name"] for index in ts.metadata["indexes"]] == ["meta.device_1", "ts_1_meta.device_1"]
    buckets = decoded(ts.bson_path)
    assert len(buckets) == 10 and all(bucket["control"]["version"] == 1 for bucket in buckets)
    assert sum(len(bucket["data"]["ts"]) for bucket in buckets) == 1000
    assert raw_docs(scan.entry("admin", "system.views").bson_path) == []

    scan = dump_scan.scan_dump_directory(td("timeseries_tests", "ts_dump_with_oplog"))
    buckets = decoded(scan.entry("timeseries_test", "foo_ts").bson_path)
    assert len(buckets) == 10 and sum(len(bucket["data"]["ts"]) for bucket in buckets) == 1294
    ops = decoded(scan.oplog_path, bsonio.MAX_OPLOG_ENTRY_SIZE)
    assert len(ops) == 872 and all(entry["op"] == "u" and entry["o"]["$v"] == 2 for entry in ops)
    assert all(list(entry["o2"]) == ["_id"] and "lsid" in entry and "txnNumber" in entry
               for entry in ops)
    config = [entry for entry in scan.entries if entry.db == "config"]
    assert all(entry.metadata["indexes"][1]["name"].endswith("TTLIndex") for entry in config)

    original = fx("_history", "97ebb7952fce28b26a6744c33f7df0b0001628a7", "mongorestore",
                  "testdata", "timeseries_tests", "ts_dump", "timeseries_test",
                  "system.buckets.foo_ts.bson")
    single = td("timeseries_tests", "ts_single_buckets_file", "system.buckets.foo_ts.bson")
    assert open(single, "rb").read() == open(original, "rb").read()


def test_prelude_facts():
    base = td("prelude_test")
    for name in ("prelude_top_level", "prelude_db_target", "prelude_gzip", "server_version_unknown"):
        prelude = dump_scan.scan_dump_directory(os.path.join(base, name)).prelude
        expected = "unknown" if name == "server_version_unknown" else "7.0.16"
        assert prelude == {"ServerVersion": expected, "ToolVersion": ""}
    assert versions.parse_server_version("unknown") is None


def test_oplog_only_fixture_facts():
    noop = decoded(td("dump_with_noop_in_oplog", "oplog.bson"))
    assert [entry["op"] for entry in noop].count("n") == 2
    assert [entry["o"] for entry in noop if entry["op"] == "i"][0]["a"] == 1
    skips = decoded(td("oplog_partial_skips", "oplog.bson"))
    db3 = [entry for entry in skips if entry["ns"] == "db3.c1" and entry["op"] == "i"]
    assert len(db3) == 5 and sum(1 for entry in db3 if "lsid" in entry and "txnNumber" in entry) == 3
    ignore = decoded(td("oplog_ignore_index", "oplog.bson"))
    assert sorted(next(iter(entry["o"])) for entry in ignore) == ["abortIndexBuild", "startIndexBuild"]
    local = dump_scan.scan_dump_directory(td("dump_local_oplog")).entries[0]
    assert local.namespace == "local.oplog.rs"
    assert local.metadata["options"] == {"capped": True, "size": 100096}
    assert all(entry["ns"] == "test.op" for entry in decoded(local.bson_path)[:99])
    imported = decoded(fx("mongodump", "testdata", "importCollection.bson"))
    assert next(iter(imported[0]["o"])) == "importCollection"
    same = [td("dump_oplog_conflict", "oplog.bson"), td("extra_oplog.bson"),
            fx("test", "qa-tests", "jstests", "restore", "testdata", "dump_with_oplog", "oplog.bson"),
            fx("test", "qa-tests", "jstests", "restore", "testdata", "dump_with_soft_links", "not_a_dir")]
    assert len(set(open(path, "rb").read() for path in same)) == 1


def test_legacy_layout_facts():
    qa = fx("test", "qa-tests", "jstests", "restore", "testdata")
    scan = dump_scan.scan_dump_directory(os.path.join(qa, "dump_with_oplog"))
    data = decoded(scan.entry("test", "data").bson_path)
    assert [item["_id"] for item in data] == [float(i) for i in range(10)]
    ops = decoded(scan.oplog_path)
    assert [entry["o"]["_id"] for entry in ops] == [10, 11, 12, 13, 14]
    assert [(entry["ts"].time, entry["ts"].inc) for entry in ops][-1] == (1500000000, 1)
    assert sum(1 for entry in ops if (entry["ts"].time, entry["ts"].inc) < (1416342266, 0)) == 4

    links = dump_scan.scan_dump_directory(os.path.join(qa, "dump_with_soft_links"))
    one = decoded(links.entry("dbOne", "data").bson_path)
    assert len(one) == 10 and one[0]["_id"] == "0_dbOne"
    assert len(decoded(links.entry("dbTwo", "data").bson_path)) == 10

    changelog = dump_scan.scan_dump_directory(os.path.join(qa, "dump_extended_json_options")).entries[0]
    assert changelog.metadata["options"]["capped"] is True
    assert changelog.metadata["options"]["size"] == 10000000
    assert len(decoded(changelog.bson_path)) == 13
    position = changelog.metadata["indexes"][1]
    assert position["name"] == "position_2d" and {"min", "max", "bits"} <= set(position)

    dumprestore6 = dump_scan.scan_dump_directory(fx("test", "legacy42", "jstests", "tool", "data"))
    assert len(decoded(dumprestore6.entry("dumprestore6", "foo").bson_path)) == 1
    index_docs = decoded(dumprestore6.entry("dumprestore6", "system.indexes").bson_path)
    assert [item["name"] for item in index_docs] == ["_id_", "a_1"] and all("ns" in item for item in index_docs)


def test_bsondump_facts():
    sample = raw_docs(fx("bsondump", "testdata", "sample.bson"))
    lines = open(fx("bsondump", "testdata", "sample.json"), encoding="utf-8").read().splitlines()
    assert len(sample) == 4 and len(lines) == 4
    assert [bson.decode(item) for item in sample] == [
        bson.json_util.loads(line) for line in lines]
    assert len(raw_docs(fx("bsondump", "testdata", "all_types.bson"))) == 20
    assert len(raw_docs(fx("bsondump", "testdata", "deep_nested.bson"))) == 1


def test_archive_and_directory_agree():
    # ts_dump and dump.archive come from the same 2021 dump: same documents, same metadata
    reader, events = read_archive(fx("_history", "97ebb7952fce28b26a6744c33f7df0b0001628a7",
                                     "mongorestore", "testdata", "timeseries_tests", "dump.archive"))
    scan = dump_scan.scan_dump_directory(td("timeseries_tests", "ts_dump"))
    for entry in scan.entries:
        data_coll = os.path.basename(entry.bson_path)[:-len(".bson")]
        in_archive = [event[3] for event in events
                      if event[0] == "document" and (event[1], event[2]) == (entry.db, data_coll)]
        if entry.collection != "foo_ts":  # the directory's buckets were not re-edited alike
            assert in_archive == raw_docs(entry.bson_path)
        prelude = [item for item in reader.prelude
                   if (item["db"], item["collection"]) == (entry.db, entry.collection)][0]
        assert prelude["metadata"] == open(entry.metadata_path, encoding="utf-8").read()
    original = fx("_history", "97ebb7952fce28b26a6744c33f7df0b0001628a7", "mongorestore",
                  "testdata", "timeseries_tests", "ts_dump", "timeseries_test",
                  "system.buckets.foo_ts.bson")
    assert [event[3] for event in events if event[0] == "document"
            and event[2] == "system.buckets.foo_ts"] == raw_docs(original)
