"""Oplog replay against the real test server (FerretDB here: no applyOps, so auto mode must
fall back to ordinary writes), with the mongo-tools oplog fixtures and a generated oplog."""

import os
import random

import bson
import pytest
from bson import Timestamp
from bson.codec_options import CodecOptions
from pymongo import errors as pymongo_errors

from ansible_collections.dbops.mongodb_backup.plugins.module_utils import errors
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import dump_metadata
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.archive import (
    ArchiveReader, OPLOG_COLLECTION, OPLOG_DB, open_archive_for_read)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.bsonio import MAX_OPLOG_ENTRY_SIZE
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import replay
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import index_catalog
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import readers
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.timestamps import parse_oplog_limit

from support import COMPAT, remap_entry, remap_namespace
RESTORE_DATA = os.path.join(COMPAT, "mongorestore", "testdata")
QA_DATA = os.path.join(COMPAT, "test", "qa-tests", "jstests", "restore", "testdata")
AS_DICT = CodecOptions(document_class=dict)
PREFIX = "oprp_"

pytestmark = pytest.mark.integration


# --------------------------------------------------------------------------- helpers

@pytest.fixture
def fresh(client):
    """Drop every oprp_* database before and after the test."""
    def drop_all():
        for name in client.list_database_names():
            if name.startswith(PREFIX):
                client.drop_database(name)
    drop_all()
    yield client
    drop_all()


def is_ferretdb(server):
    return server.kind == "ferretdb"


def expected_mode(server):
    return "crud" if is_ferretdb(server) else "applyops"


def remapped(entries, mapping):
    return [remap_entry(e, mapping) for e in entries]


def read_bson(path):
    with open(path, "rb") as handle:
        return bson.decode_all(handle.read(), AS_DICT)


def coll(client, namespace):
    database, _dot, name = namespace.partition(".")
    return client[database].get_collection(name, codec_options=AS_DICT)


def docs(client, namespace):
    return list(coll(client, namespace).find().sort("_id", 1))


def restore_dump(client, dump_dir, mapping):
    """Insert a directory dump's documents as mongorestore would before the replay; return the
    index catalog of its metadata (built after the replay, like mongorestore does)."""
    catalog = {}
    for database in sorted(os.listdir(dump_dir)):
        path = os.path.join(dump_dir, database)
        if database == "admin" or not os.path.isdir(path):
            continue
        for name in sorted(os.listdir(path)):
            if not name.endswith(".bson") or name.startswith("system."):
                continue
            namespace = remap_namespace("%s.%s" % (database, name[:-5]), mapping)
            documents = read_bson(os.path.join(path, name))
            if documents:
                coll(client, namespace).insert_many(documents)
            metadata = dump_metadata.read_metadata_file(os.path.join(path, name[:-5] + ".metadata.json"))
            catalog[namespace] = dict((spec["name"], spec) for spec in metadata["indexes"])
    return catalog


def index_names(client, namespace):
    return sorted(spec["name"] for spec in coll(client, namespace).list_indexes())


def build_or_skip(server, client, catalog, lacking):
    """build_indexes; on FerretDB an index option it does not implement skips the test."""
    try:
        return index_catalog.build_indexes(client, catalog)
    except errors.ReplayError as exc:
        if is_ferretdb(server) and ("NotImplemented" in exc.message or "is unknown" in exc.message):
            pytest.skip("FerretDB lacks %s (%s)" % (lacking, exc.message))
        raise


def fixture_oplog(*parts):
    return list(readers.iter_oplog_file(os.path.join(*parts)))


def ordered(value):
    """Field order and BSON types matter: documents as nested lists of (key, type, value)."""
    if isinstance(value, dict):
        return [(k, ordered(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [ordered(v) for v in value]
    return (type(value).__name__, value)


# --------------------------------------------------------------------------- mongo-tools fixtures

def test_oplogdump_nested_applyops_gives_ten_documents(server, fresh):
    """TestOplogRestore: 5 dumped docs + an insert, an applyOps of three inserts and an insert."""
    mapping = {"db1": PREFIX + "db1"}
    restore_dump(fresh, os.path.join(RESTORE_DATA, "oplogdump"), mapping)
    assert len(docs(fresh, PREFIX + "db1.c1")) == 5
    entries = remapped(fixture_oplog(RESTORE_DATA, "oplogdump", "oplog.bson"), mapping)
    result = replay.OplogReplayer(fresh).replay(entries)
    assert sorted(d["x"] for d in docs(fresh, PREFIX + "db1.c1")) == list(range(1451, 1461))
    assert result["mode_used"] == expected_mode(server) and result["applied"] == 5
    assert result["last_applied"] == "1511064038:32"
    if is_ferretdb(server):
        assert "refused applyOps" in result["warnings"][0] and "CommandNotFound" in result["warnings"][0]
    again = replay.OplogReplayer(fresh).replay(entries)  # idempotent
    assert len(docs(fresh, PREFIX + "db1.c1")) == 10 and again["applied"] == 5


@pytest.mark.parametrize("limit, count, applied", [("1416342266:0", 14, 4), (None, 15, 5)])
def test_qa_dump_with_oplog_and_limit(server, fresh, limit, count, applied):
    """oplog_replay_and_limit.js: limit 1416342266:0 applies the 4 inserts before it."""
    mapping = {"test": PREFIX + "qa"}
    restore_dump(fresh, os.path.join(QA_DATA, "dump_with_oplog"), mapping)
    entries = remapped(fixture_oplog(QA_DATA, "dump_with_oplog", "oplog.bson"), mapping)
    result = replay.OplogReplayer(fresh, limit=parse_oplog_limit(limit) if limit else None).replay(entries)
    assert len(docs(fresh, PREFIX + "qa.data")) == count and result["applied"] == applied
    assert result["stopped_at_limit"] is bool(limit)
    assert result["last_applied"] == ("1416342265:5" if limit else "1500000000:1")


def test_archive_with_oplog_keeps_25_documents(server, fresh):
    """TestMongorestoreArchiveWithOplog: the 16 inserts re-apply existing _ids; the two
    config.system.sessions entries are skipped."""
    path = os.path.join(RESTORE_DATA, "dump-w-oplog.archive")
    data, oplog = [], []
    with open_archive_for_read(path) as handle:
        reader = ArchiveReader(handle, path, max_size=MAX_OPLOG_ENTRY_SIZE)
        for database, collection, raw in reader.iter_documents():
            if (database, collection) == (OPLOG_DB, OPLOG_COLLECTION):
                oplog.append(raw)
            elif (database, collection) == ("test", "foo"):
                data.append(bson.decode(raw, AS_DICT))
    coll(fresh, PREFIX + "archive.foo").insert_many(data)
    entries = remapped(readers.decode_entries(oplog, path), {"test": PREFIX + "archive"})
    result = replay.OplogReplayer(fresh).replay(entries)
    assert len(docs(fresh, PREFIX + "archive.foo")) == 25
    assert sorted(d["a"] for d in docs(fresh, PREFIX + "archive.foo")) == list(range(1, 26))
    assert result["applied"] == 16 and result["skipped"] == {"config_namespace": 2}


def test_duplicate_index_key_fixed_by_the_oplog(server, fresh):
    """TestOplogRestoreWithDuplicateIndexKeys: the unique index is built after the replay."""
    mapping = {"test": PREFIX + "dup"}
    catalog = restore_dump(fresh, os.path.join(RESTORE_DATA, "duplicate_index_key_with_oplog"), mapping)
    assert len(docs(fresh, PREFIX + "dup.foo")) == 2
    entries = remapped(fixture_oplog(RESTORE_DATA, "duplicate_index_key_with_oplog", "oplog.bson"), mapping)
    result = replay.OplogReplayer(fresh, index_catalog=catalog).replay(entries)
    assert len(docs(fresh, PREFIX + "dup.foo")) == 1
    assert index_catalog.build_indexes(fresh, result["index_catalog"]) == {"created": 1, "existing": 1}
    specs = dict((s["name"], s) for s in coll(fresh, PREFIX + "dup.foo").list_indexes())
    assert sorted(specs) == ["_id_", "a_1"] and specs["a_1"].get("unique") is True
    assert index_catalog.build_indexes(fresh, result["index_catalog"]) == {"created": 0, "existing": 2}


def _coll_fixture(client, dump, oplog_file, **kwargs):
    mapping = {"test": PREFIX + "fx", "mongodump_test_db": PREFIX + "fxm"}
    catalog = restore_dump(client, os.path.join(RESTORE_DATA, dump), mapping)
    entries = remapped(fixture_oplog(RESTORE_DATA, "oplogs", "bson", oplog_file), mapping)
    return replay.OplogReplayer(client, index_catalog=catalog, **kwargs).replay(entries)


def test_drop_index_fixture(server, fresh):
    """coll_with_index + drop_index.bson: 1 doc, 1 index."""
    result = _coll_fixture(fresh, "coll_with_index", "drop_index.bson")
    assert list(result["index_catalog"][PREFIX + "fx.foo"]) == ["_id_"]
    index_catalog.build_indexes(fresh, result["index_catalog"])
    assert len(docs(fresh, PREFIX + "fx.foo")) == 1 and index_names(fresh, PREFIX + "fx.foo") == ["_id_"]


def test_drop_index_also_drops_an_index_already_built_on_the_target(server, fresh):
    coll(fresh, PREFIX + "fx.foo").insert_one({"_id": 1, "f": 1})
    coll(fresh, PREFIX + "fx.foo").create_index("f", name="f_1")
    entries = remapped(fixture_oplog(RESTORE_DATA, "oplogs", "bson", "drop_index.bson"), {"test": PREFIX + "fx"})
    replay.OplogReplayer(fresh).replay(entries)
    assert index_names(fresh, PREFIX + "fx.foo") == ["_id_"]


@pytest.mark.parametrize("oplog_file", ["drop_collection.bson", "drop_db.bson"])
def test_drop_fixtures(server, fresh, oplog_file):
    """coll_with_index + drop_collection / drop_db: 0 docs, 0 indexes."""
    result = _coll_fixture(fresh, "coll_with_index", oplog_file)
    assert result["index_catalog"] == {} and result["applied_by_op"] == {"c": 1}
    index_catalog.build_indexes(fresh, result["index_catalog"])
    assert docs(fresh, PREFIX + "fx.foo") == []
    assert "foo" not in fresh[PREFIX + "fx"].list_collection_names()


def test_create_index_fixture(server, fresh):
    """coll_with_ttl_index + create_index.bson: 1 doc, 2 indexes."""
    result = _coll_fixture(fresh, "coll_with_ttl_index", "create_index.bson")
    assert result["index_catalog"][PREFIX + "fx.foo"]["f_1"] == {"v": 2, "key": {"f": 1.0}, "name": "f_1"}
    assert index_catalog.build_indexes(fresh, result["index_catalog"]) == {"created": 1, "existing": 1}
    assert len(docs(fresh, PREFIX + "fx.foo")) == 1 and index_names(fresh, PREFIX + "fx.foo") == ["_id_", "f_1"]


@pytest.mark.parametrize("oplog_file, changes", [
    ("collMod.bson", {"expireAfterSeconds": 3600}),
    ("collMod_with_hidden.bson", {"expireAfterSeconds": 3600, "hidden": True}),
])
def test_collmod_fixtures(server, fresh, oplog_file, changes):
    """coll_with_ttl_index + collMod: f_1.expireAfterSeconds 3600 (and hidden)."""
    result = _coll_fixture(fresh, "coll_with_ttl_index", oplog_file)
    spec = result["index_catalog"][PREFIX + "fx.foo"]["f_1"]
    assert dict((k, spec.get(k)) for k in changes) == changes
    assert result["applied_by_op"] == {"index": len(changes)}  # nothing else was sent
    build_or_skip(server, fresh, result["index_catalog"], "TTL and hidden indexes")
    built = dict((s["name"], s) for s in coll(fresh, PREFIX + "fx.foo").list_indexes())["f_1"]
    assert built["expireAfterSeconds"] == 3600


@pytest.mark.parametrize("oplog_file, expected", [
    ("vectored_insert.bson", [{"_id": 100, "a": 1}, {"_id": 200, "a": 2}]),
    ("linked_vectored_inserts.bson", [{"_id": n * 100, "a": n} for n in range(3, 8)]),
])
def test_vectored_insert_fixtures(server, fresh, oplog_file, expected):
    """coll_without_index + vectored inserts (applyOps with multiOpType 1, not transactions)."""
    fresh[PREFIX + "fxm"].create_collection("coll1")
    result = _coll_fixture(fresh, "coll_without_index", oplog_file)
    assert [bson.encode(d) for d in docs(fresh, PREFIX + "fxm.coll1")] == [bson.encode(d) for d in expected]
    assert result["transactions"] == {"committed": 0, "aborted": 0, "discarded": 0}


def test_collmod_index_uniqueness_fixture(server, fresh):
    """collMod_indexUniqueness: 5 indexes, every non-_id one prepareUnique."""
    result = _coll_fixture(fresh, "coll_without_index", "collMod_indexUniqueness.bson")
    catalog = result["index_catalog"][PREFIX + "fxm.coll1"]
    assert sorted(catalog) == ["a_1", "b_1", "c_1", "d_1"]
    assert all(spec["prepareUnique"] is True for spec in catalog.values())
    assert PREFIX + "fxm" in fresh.list_database_names()  # the create was applied
    build_or_skip(server, fresh, result["index_catalog"], "hidden, TTL and prepareUnique indexes")
    assert len(index_names(fresh, PREFIX + "fxm.coll1")) == 5


def test_bypass_document_validation_fixture(server, fresh):
    """bypassDocumentValidation.bson: fails without the flag, 3 docs with it."""
    if is_ferretdb(server):
        try:
            fresh[PREFIX + "probe"].command({"create": "v", "validator": {"$jsonSchema": {"bsonType": "object"}}})
        except pymongo_errors.OperationFailure as exc:
            pytest.skip("FerretDB lacks document validators (%s)" % exc.details.get("errmsg"))
    with pytest.raises(errors.ReplayError, match="op=i"):
        _coll_fixture(fresh, "coll_without_index", "bypassDocumentValidation.bson")
    fresh.drop_database(PREFIX + "fxm")
    result = _coll_fixture(fresh, "coll_without_index", "bypassDocumentValidation.bson",
                           bypass_document_validation=True)
    assert len(docs(fresh, PREFIX + "fxm.coll1")) == 3 and result["applied_by_op"]["i"] == 3


def test_noop_and_create_fixture(server, fresh):
    """dump_with_noop_in_oplog: two noops, create test.data, insert {a:1}."""
    entries = remapped(fixture_oplog(RESTORE_DATA, "dump_with_noop_in_oplog", "oplog.bson"), {"test": PREFIX + "noop"})
    result = replay.OplogReplayer(fresh).replay(entries)
    assert [{k: v for k, v in d.items() if k != "_id"} for d in docs(fresh, PREFIX + "noop.data")] == [{"a": 1.0}]
    assert result["skipped"] == {"noop": 2} and result["applied_by_op"] == {"c": 1, "i": 1}


def test_partial_skips_fixture(server, fresh):
    """oplog_partial_skips: the five db3.c1 inserts are applied, every config entry skipped."""
    before = set(fresh.config.list_collection_names()) if "config" in fresh.list_database_names() else set()
    entries = remapped(fixture_oplog(RESTORE_DATA, "oplog_partial_skips", "oplog.bson"), {"db3": PREFIX + "db3"})
    result = replay.OplogReplayer(fresh).replay(entries)
    assert len(docs(fresh, PREFIX + "db3.c1")) == 5 and result["skipped"] == {"config_namespace": 15}
    after = set(fresh.config.list_collection_names()) if "config" in fresh.list_database_names() else set()
    assert not (after - before) & {"cache.test", "transactions.test"}


def test_tools_2002_fixture(server, fresh):
    """create foo.bar and createIndexes a_1_b_1: no error; the index is built afterwards."""
    entries = remapped(fixture_oplog(RESTORE_DATA, "tools-2002", "oplog.bson"), {"foo": PREFIX + "foo"})
    result = replay.OplogReplayer(fresh).replay(entries)
    assert "bar" in fresh[PREFIX + "foo"].list_collection_names()
    assert index_catalog.build_indexes(fresh, result["index_catalog"]) == {"created": 1, "existing": 0}
    assert index_names(fresh, PREFIX + "foo.bar") == ["_id_", "a_1_b_1"]


@pytest.mark.parametrize("fixture, namespace", [("commit_indexes_build", "commit_index.test"),
                                                ("create_indexes", "create_indexes.test")])
def test_index_build_fixtures(server, fresh, fixture, namespace):
    """TestCommitIndexBuild / TestCreateIndexes: 3 indexes (b_1 is partial)."""
    database = namespace.split(".")[0]
    entries = remapped(fixture_oplog(RESTORE_DATA, fixture, "oplog.bson"), {database: PREFIX + database})
    result = replay.OplogReplayer(fresh).replay(entries)
    target = PREFIX + namespace
    assert sorted(result["index_catalog"][target]) == ["a_1", "b_1"]
    build_or_skip(server, fresh, result["index_catalog"], "partial indexes (partialFilterExpression)")
    assert index_names(fresh, target) == ["_id_", "a_1", "b_1"]


def test_collmod_ttl_index_fixture(server, fresh):
    """TestOplogRestoreCollModTTLIndex: a_1.expireAfterSeconds is int32 1000, 2 indexes."""
    mapping = {"mongodump_test_db": PREFIX + "ttl"}
    catalog = restore_dump(fresh, os.path.join(RESTORE_DATA, "collMod_ttl_index"), mapping)
    entries = remapped(fixture_oplog(RESTORE_DATA, "collMod_ttl_index", "oplog.bson"), mapping)
    result = replay.OplogReplayer(fresh, index_catalog=catalog).replay(entries)
    spec = result["index_catalog"][PREFIX + "ttl.coll1"]["a_1"]
    assert spec["expireAfterSeconds"] == 1000 and not isinstance(spec["expireAfterSeconds"], bson.Int64)  # int32
    assert len(docs(fresh, PREFIX + "ttl.coll1")) == 10
    build_or_skip(server, fresh, result["index_catalog"], "TTL indexes (expireAfterSeconds)")
    assert len(index_names(fresh, PREFIX + "ttl.coll1")) == 2


@pytest.mark.parametrize("fixture", ["transactions.json", "transactions-6.1.json"])
def test_transaction_fixtures(server, fresh, fixture):
    """TestMongorestoreTxns: interleaved streams; aborted and incomplete ones apply nothing."""
    from bson import json_util
    from bson.json_util import JSONOptions
    with open(os.path.join(RESTORE_DATA, fixture)) as handle:
        cases = json_util.loads(handle.read(), json_options=JSONOptions(document_class=dict))
    streams = [list(case["ops"]) for case in cases.values()]
    rng, oplog = random.Random(7), []
    while any(streams):
        oplog.append(rng.choice([s for s in streams if s]).pop(0))
    mapping = {"txntest": PREFIX + "txn"}
    result = replay.OplogReplayer(fresh, batch_size=3).replay(remapped(oplog, mapping))
    for name, case in cases.items():
        assert docs(fresh, remap_namespace(case["ns"], mapping)) == case["postimage"], name
    assert result["transactions"] == {"committed": 4, "aborted": 2, "discarded": 2}


def test_real_timeseries_oplog_on_a_plain_collection(server, fresh):
    """872 real $v:2 updates with retryable-write fields onto the dumped buckets (as a plain
    collection): 2164 measurements in 10 buckets, twice."""
    base = os.path.join(RESTORE_DATA, "timeseries_tests", "ts_dump_with_oplog")
    namespace = PREFIX + "ts.buckets_foo_ts"
    coll(fresh, namespace).insert_many(read_bson(os.path.join(base, "timeseries_test", "system.buckets.foo_ts.bson")))
    entries = remapped(fixture_oplog(base, "oplog.bson"), {"timeseries_test.system.buckets.foo_ts": namespace})
    for _round in range(2):
        result = replay.OplogReplayer(fresh, mode="crud", batch_size=450).replay(entries)  # 2 windows
        buckets = docs(fresh, namespace)
        assert len(buckets) == 10 and sum(len(b["data"]["measurement"]) for b in buckets) == 2164
        assert result["applied_by_op"] == {"u": 872}


def test_applyops_mode_reports_a_target_without_applyops(server, fresh):
    entries = remapped(fixture_oplog(RESTORE_DATA, "oplogdump", "oplog.bson"), {"db1": PREFIX + "db1"})
    if not is_ferretdb(server):
        assert replay.OplogReplayer(fresh, mode="applyops").replay(entries)["applied"] == 5
        return
    with pytest.raises(errors.ReplayError) as info:
        replay.OplogReplayer(fresh, mode="applyops").replay(entries)
    assert "ts=1511064038:28" in info.value.message and "replay with mode crud or auto" in info.value.message
    assert "no entry was applied" in info.value.message


def test_a_command_the_target_lacks_stops_with_the_entry_named(server, fresh):
    coll(fresh, PREFIX + "cap.c").insert_one({"_id": 1})
    entries = [{"ts": Timestamp(50, 1), "op": "i", "ns": PREFIX + "cap.c", "o": {"_id": 2}},
               {"ts": Timestamp(50, 2), "op": "c", "ns": PREFIX + "cap.$cmd", "o": {"convertToCapped": "c", "size": 1 << 20}}]
    if not is_ferretdb(server):
        replay.OplogReplayer(fresh, mode="crud").replay(entries)
        assert coll(fresh, PREFIX + "cap.c").options().get("capped") is True
        return
    with pytest.raises(errors.ReplayError) as info:
        replay.OplogReplayer(fresh, mode="crud").replay(entries)
    assert info.value.message.startswith("replay stopped at oplog entry op=c ns=%scap.$cmd ts=50:2: server error 59" % PREFIX)
    assert "entries up to 50:1 were applied" in info.value.message
    assert len(docs(fresh, PREFIX + "cap.c")) == 2


# --------------------------------------------------------------------------- generated oplog

def _last_oplog_ts(client):
    last = list(client.local["oplog.rs"].find({}, {"ts": 1}).sort("ts", -1).limit(1))
    return last[0]["ts"] if last else Timestamp(0, 0)


def _oplog_since(client, start, database):
    cursor = client.local.get_collection("oplog.rs", codec_options=AS_DICT).find({"ts": {"$gt": start}})
    entries = [e for e in cursor if e.get("ns", "").startswith(database + ".")
               or (e.get("op") == "c" and database + "." in repr(e.get("o")))]
    return sorted(entries, key=lambda e: (e["ts"].time, e["ts"].inc))


def _workload(database, rng):
    """Inserts, $set/$unset/$inc/$push updates, replacements, deletes, an upsert, an update_many."""
    items = database["items"]
    next_id = 1000
    for step in range(120):
        target = rng.randrange(40)
        kind = rng.randrange(10)
        if kind == 0:
            items.insert_one({"_id": next_id, "n": step, "sub": {"a": step}})
            next_id += 1
        elif kind == 1:
            items.update_one({"_id": target}, {"$set": {"sub.c": step, "n": step}})
        elif kind == 2:
            items.update_one({"_id": target}, {"$unset": {"sub.b": "", "tags": ""}})
        elif kind == 3:
            items.update_one({"_id": target}, {"$inc": {"n": 1}, "$push": {"tags": step}})
        elif kind == 4:
            items.replace_one({"_id": target}, {"replaced": step, "nested": {"x": [1, {"y": step}]}})
        elif kind == 5:
            items.delete_one({"_id": target})
        elif kind == 6:
            items.update_one({"_id": 5000 + target}, {"$set": {"upserted": step}}, upsert=True)
        elif kind == 7:
            items.update_many({"n": {"$lt": 5}}, {"$set": {"flag": step}})
        elif kind == 8:
            database["other"].insert_one({"_id": step, "k": "v%d" % step})
        else:
            database["other"].delete_many({"_id": {"$lt": step - 20}})


def _seed(database):
    database["items"].insert_many([{"_id": i, "n": i, "tags": ["t%d" % i], "sub": {"a": i, "b": "x"}}
                                   for i in range(40)])
    database["other"].insert_many([{"_id": -i, "k": "seed"} for i in range(1, 6)])


def _snapshot(client, database):
    return dict((name, [ordered(d) for d in docs(client, "%s.%s" % (database, name))])
                for name in sorted(client[database].list_collection_names()))


def test_generated_oplog_replays_to_the_same_documents(server, fresh):
    """The source's own oplog for a mixed workload, replayed onto a copy of the starting state
    under another database name, gives the same documents field by field; twice."""
    source, copy = PREFIX + "gen_src", PREFIX + "gen_dst"
    _seed(fresh[source])
    _seed(fresh[copy])
    start = _last_oplog_ts(fresh)
    _workload(fresh[source], random.Random(11))
    entries = _oplog_since(fresh, start, source)
    assert len(entries) >= 120 and set(e["op"] for e in entries) >= {"i", "u", "d"}
    entries = remapped(entries, {source: copy})
    for _round in range(2):
        result = replay.OplogReplayer(fresh, batch_size=25).replay(entries)
        assert _snapshot(fresh, copy) == _snapshot(fresh, source)
        assert result["mode_used"] == expected_mode(server)
        assert result["last_applied"] == "%d:%d" % (entries[-1]["ts"].time, entries[-1]["ts"].inc)


def test_generated_oplog_with_create_and_drop(server, fresh):
    """Collections created and dropped by the workload: needs command entries in the oplog."""
    source, copy = PREFIX + "ddl_src", PREFIX + "ddl_dst"
    _seed(fresh[source])
    _seed(fresh[copy])
    start = _last_oplog_ts(fresh)
    fresh[source].create_collection("made")
    fresh[source]["made"].insert_many([{"_id": i} for i in range(5)])
    fresh[source].drop_collection("other")
    fresh[source]["other"].insert_one({"_id": "again"})
    fresh[source]["items"].delete_many({"_id": {"$lt": 10}})
    entries = _oplog_since(fresh, start, source)
    if not [e for e in entries if e["op"] == "c"]:
        pytest.skip("FerretDB lacks command entries (create, drop) in its oplog")
    entries = remapped(entries, {source: copy})
    for _round in range(2):
        replay.OplogReplayer(fresh, batch_size=4).replay(entries)
        assert _snapshot(fresh, copy) == _snapshot(fresh, source)
