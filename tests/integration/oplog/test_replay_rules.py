"""The replay rules against the real test server: the limit, skips, transactions, the crud
window, commands and the index catalog. Each test writes into a database of its own and drops
it afterwards; what was sent is observed with pymongo's command monitoring, never faked.

What the test server lacks (applyOps, some commands and error replies) is tested over the wire
in tests/protocol/test_protocol_oplog_replay.py; here such a test is skipped with the reason."""

import hashlib
import os
import random
import re

import bson
import pytest
from bson import Int64, Timestamp
from bson.codec_options import CodecOptions
from pymongo import errors as pymongo_errors
from pymongo import monitoring

from support import COMPAT, compat_ext_json, interleave, remap_entry, remap_namespace
from ansible_collections.dbops.mongodb_backup.plugins.module_utils import errors
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import replay
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import index_catalog
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import readers
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import rules

pytestmark = pytest.mark.integration

RESTORE_DATA = os.path.join(COMPAT, "mongorestore", "testdata")
AS_DICT = CodecOptions(document_class=dict)
UUID = bson.Binary(bytes(range(16)), 4)
PREFIX = "oprr_"
DRIVER_FIELDS = ("lsid", "$db", "$clusterTime", "$readPreference", "txnNumber")  # added by pymongo
SYSTEM_IDS = ("admin.oprr_ops", "admin.oprr_role")  # _ids the system-collection test must never write


# --------------------------------------------------------------------------- helpers

class CommandLog(monitoring.CommandListener):
    """Every command the replay sends to the test's databases, in order."""

    def __init__(self):
        self.commands = []

    def started(self, event):
        self.commands.append((event.command_name, event.database_name, dict(event.command)))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


class Bed:
    """One test's databases on the shared server (``name`` and ``other``), and what was sent."""

    def __init__(self, server, client, log, name):
        self.server = server
        self.client = client
        self.log = log
        self.name = name
        self.other = name + "_b"

    def ns(self, collection, database=None):
        return "%s.%s" % (database or self.name, collection)

    def coll(self, namespace):
        database, _dot, collection = namespace.partition(".")
        return self.client[database].get_collection(collection, codec_options=AS_DICT)

    def docs(self, namespace):
        return sorted(self.coll(namespace).find(), key=lambda doc: repr(doc["_id"]))

    def ids(self, namespace):
        return [doc["_id"] for doc in self.docs(namespace)]

    def collections(self, database=None):
        return sorted(self.client[database or self.name].list_collection_names())

    def index_names(self, namespace):
        return sorted(spec["name"] for spec in self.coll(namespace).list_indexes())

    def sent(self, *names):
        """(name, command) sent to this test's databases (renames through admin included)."""
        mine = (self.name, self.other)
        result = []
        for name, database, command in self.log.commands:
            if database in mine or (database == "admin" and name == "renameCollection"
                                    and str(command.get(name, "")).partition(".")[0] in mine):
                if not names or name in names:
                    result.append((name, command))
        return result

    def drop(self):
        for database in (self.name, self.other):
            self.client.drop_database(database)

    def replay(self, entries, **kwargs):
        return replay.OplogReplayer(self.client, **kwargs).replay(entries)

    @property
    def is_ferretdb(self):
        return self.server.kind == "ferretdb"

    def skip_if_lacking(self, exc, what):
        """Skip when the server answered that it does not implement ``what``; else re-raise."""
        text = getattr(exc, "message", None) or str(exc)
        if any(word in text for word in ("NotImplemented", "CommandNotFound", "not implemented", "no such command")):
            pytest.skip("the test server (%s) lacks %s: %s" % (self.server.kind, what, text))
        raise exc


@pytest.fixture(scope="module")
def watched(server):
    """One monitored client for the module (the shared session server)."""
    log = CommandLog()
    client = server.client(event_listeners=[log])
    yield client, log
    client.close()


@pytest.fixture
def bed(request, server, watched):
    """A fresh database pair for the test, dropped before and after."""
    client, log = watched
    digest = hashlib.sha1(request.node.nodeid.encode("utf-8")).hexdigest()[:6]
    name = PREFIX + re.sub(r"[^A-Za-z0-9]", "_", request.node.originalname)[5:30] + "_" + digest
    test_bed = Bed(server, client, log, name)
    test_bed.drop()
    del log.commands[:]
    yield test_bed
    test_bed.drop()


def applyops_or_skip(bed):
    """Skip unless the server runs applyOps (FerretDB has none: see the protocol tests)."""
    try:
        bed.client.admin.command({"applyOps": []})
    except pymongo_errors.OperationFailure as exc:
        if rules.applyops_unavailable(exc):
            pytest.skip("the test server (%s) has no applyOps (%s); applyops mode is covered by "
                        "tests/protocol/test_protocol_oplog_replay.py" % (bed.server.kind, exc.details.get("errmsg")))
        raise


def entry(op, ns, o, ts=None, **extra):
    doc = {"ts": ts or Timestamp(1700000000, 1), "t": Int64(1), "v": 2, "op": op, "ns": ns, "o": o}
    doc.update(extra)
    return doc


def fixture_oplog(mapping, *parts):
    return [remap_entry(doc, mapping) for doc in readers.iter_oplog_file(os.path.join(RESTORE_DATA, *parts))]


# --------------------------------------------------------------------------- the limit

def test_replay_stops_at_the_first_entry_at_or_past_the_limit(bed):
    ops = [entry("i", bed.ns("c"), {"_id": n}, Timestamp(*ts)) for n, ts in enumerate([(4, 0), (4, 9), (5, 0), (4, 1)])]
    result = bed.replay(ops, mode="crud", limit=Timestamp(5, 0))
    assert bed.ids(bed.ns("c")) == [0, 1]
    assert result["stopped_at_limit"] and result["last_applied"] == "4:9" and result["applied"] == 2
    assert result["first_ts"] == "4:0" and result["last_ts"] == "5:0" and result["limit"] == "5:0"


def test_skipped_entries_never_stop_the_replay(bed):
    """Filtering happens before the limit check: skipped entries past the limit are read on."""
    ops = [entry("n", "", {"msg": "periodic noop"}, Timestamp(9, 0)),
           entry("i", "config.system.sessions", {"_id": bed.name}, Timestamp(9, 1)),
           entry("c", bed.ns("$cmd"), {"startIndexBuild": "c", "indexes": []}, Timestamp(9, 2)),
           entry("i", bed.ns("c"), {"_id": 1}, Timestamp(4, 0)),
           entry("i", bed.ns("c"), {"_id": 2}, Timestamp(9, 3)),
           entry("i", bed.ns("c"), {"_id": 3}, Timestamp(4, 1))]
    result = bed.replay(ops, mode="crud", limit=Timestamp(5, 0))
    assert bed.ids(bed.ns("c")) == [1]
    assert result["stopped_at_limit"] and result["entries"] == 5
    assert result["skipped"] == {"noop": 1, "config_namespace": 1, "ignored_command": 1}
    assert bed.client.config.system.sessions.count_documents({"_id": bed.name}) == 0


# --------------------------------------------------------------------------- skip fixtures

def test_real_skip_fixtures(bed):
    """oplog_partial_skips: only the create of db3.c1 and its five inserts are applied, nothing
    reaches config; oplog_ignore_index: a started and aborted index build apply nothing."""
    result = bed.replay(fixture_oplog({"db3": bed.name}, "oplog_partial_skips", "oplog.bson"), mode="crud")
    assert len(bed.docs(bed.ns("c1"))) == 5
    assert result["entries"] == 21 and result["applied"] == 6 and result["skipped"] == {"config_namespace": 15}
    assert not [name for name, database, _command in bed.log.commands
                if name in ("insert", "update", "delete", "create") and database == "config"]
    result = bed.replay(fixture_oplog({"test": bed.other}, "oplog_ignore_index", "oplog.bson"), mode="crud")
    assert result["applied"] == 0 and result["skipped"] == {"ignored_command": 2}
    assert bed.other not in bed.client.list_database_names()


# --------------------------------------------------------------------------- transactions


@pytest.mark.parametrize("mode", ["crud", "applyops"])
@pytest.mark.parametrize("fixture", [("mongorestore", "testdata", "transactions.json"),
                                     ("mongorestore", "testdata", "transactions-6.1.json"),
                                     ("common", "txn", "testdata", "oplog_entries.json")])
def test_transaction_fixtures_give_their_postimages(bed, fixture, mode):
    """TestMongorestoreTxns: shuffled streams; incomplete and aborted transactions apply nothing;
    a vectored insert (multiOpType 1) is applied although it carries lsid and txnNumber."""
    if mode == "applyops":
        applyops_or_skip(bed)
    cases = compat_ext_json(*fixture)
    mapping = {"txntest": bed.name, "test": bed.other}
    for seed in range(3):
        bed.drop()
        result = bed.replay([remap_entry(op, mapping) for op in interleave(cases.values(), seed)], mode=mode, batch_size=4)
        for name, case in cases.items():
            if "postimage" in case:
                expected = sorted(case["postimage"], key=lambda d: repr(d["_id"]))
                assert bed.docs(remap_namespace(case["ns"], mapping)) == expected, name
        assert result["transactions"] == {"committed": 4, "aborted": 2, "discarded": 2 if len(cases) == 10 else 0}
        assert result["mode_used"] == mode
    if "not transaction with multiOpType" in cases:
        assert bed.ids(bed.ns("foo", bed.other)) == [4, 5]


def test_transaction_entries_are_buffered_until_commit(bed):
    lsid = {"id": UUID}
    ops = [entry("c", "admin.$cmd", {"applyOps": [{"op": "i", "ns": bed.ns("c"), "o": {"_id": 1}}], "partialTxn": True},
                 Timestamp(1, 1), lsid=lsid, txnNumber=Int64(7)),
           entry("i", bed.ns("c"), {"_id": 2}, Timestamp(1, 2)),
           entry("c", "admin.$cmd", {"applyOps": [{"op": "u", "ns": bed.ns("c"), "o2": {"_id": 1},
                                                   "o": {"$v": 2, "diff": {"u": {"x": 1}}}}], "prepare": True},
                 Timestamp(1, 3), lsid=lsid, txnNumber=Int64(7))]
    engine = replay.OplogReplayer(bed.client, mode="crud")
    engine.replay(ops)
    assert bed.docs(bed.ns("c")) == [{"_id": 2}]
    result = engine.replay([entry("c", "admin.$cmd", {"commitTransaction": 1}, Timestamp(1, 4),
                                  lsid=lsid, txnNumber=Int64(7))])
    assert bed.docs(bed.ns("c")) == [{"_id": 1, "x": 1}, {"_id": 2}]
    assert result["transactions"] == {"committed": 1, "aborted": 0, "discarded": 0}
    assert result["last_applied"] == "1:4"


def test_a_commit_past_the_limit_discards_the_transaction(bed):
    lsid = {"id": UUID}
    ops = [entry("c", "admin.$cmd", {"applyOps": [{"op": "i", "ns": bed.ns("c"), "o": {"_id": 1}}], "prepare": True},
                 Timestamp(4, 0), lsid=lsid, txnNumber=Int64(1)),
           entry("c", "admin.$cmd", {"commitTransaction": 1}, Timestamp(5, 0), lsid=lsid, txnNumber=Int64(1))]
    result = bed.replay(ops, mode="crud", limit=Timestamp(5, 0))
    assert bed.docs(bed.ns("c")) == [] and result["transactions"]["discarded"] == 1
    assert not bed.sent("insert", "update", "delete")


def test_retryable_writes_are_applied_directly(bed):
    """ts_dump_with_oplog: 872 $v:2 updates with lsid/txnNumber onto the dumped buckets (as a plain
    collection), in windows of 50: 2164 measurements in 10 buckets, one find per window. (Replaying
    it twice is test_real_timeseries_oplog_on_a_plain_collection in test_oplog_replay_server.py.)"""
    base = os.path.join(RESTORE_DATA, "timeseries_tests", "ts_dump_with_oplog")
    namespace = bed.ns("buckets_foo_ts")
    with open(os.path.join(base, "timeseries_test", "system.buckets.foo_ts.bson"), "rb") as handle:
        bed.coll(namespace).insert_many(bson.decode_all(handle.read(), AS_DICT))
    entries = [dict(e, ns=namespace) for e in readers.iter_oplog_file(os.path.join(base, "oplog.bson"))]
    assert len(entries) == 872 and all("lsid" in e and "txnNumber" in e for e in entries)
    del bed.log.commands[:]
    result = bed.replay(entries, mode="crud", batch_size=50)
    assert len(bed.sent("find")) == 18  # one find per window of 50 entries
    buckets = bed.docs(namespace)
    assert len(buckets) == 10 and sum(len(b["data"]["measurement"]) for b in buckets) == 2164
    assert result["applied_by_op"] == {"u": 872} and result["last_applied"] == "1623711558:5"


# --------------------------------------------------------------------------- the crud window

IDS = [1, 2, 3, "four", {"k": 5}]


def random_ops(rng, database, count):
    """A random CRUD stream over a few _ids, as (oplog entry, the same write as a server command):
    inserts, replacements, $v:2 diffs and $v:1 modifier updates, deletes."""
    ops = []
    for number in range(count):
        id_value = rng.choice(IDS)
        namespace = "%s.%s" % (database, rng.choice("ab"))
        kind = rng.choice("iiuuuurd")
        ts = Timestamp(100, number + 1)
        if kind == "i":
            document = {"_id": id_value, "n": number}
            ops.append((entry("i", namespace, document, ts), ("replace", namespace, id_value, document)))
        elif kind == "d":
            ops.append((entry("d", namespace, {"_id": id_value}, ts), ("delete", namespace, id_value, None)))
        elif kind == "r":
            document = {"_id": id_value, "r": number}
            ops.append((entry("u", namespace, document, ts, o2={"_id": id_value}),
                        ("replace", namespace, id_value, document)))
        else:
            field = "f%d" % (number % 3)
            update, native = rng.choice([
                ({"$v": 2, "diff": {"u": {"n": number}, "i": {field: number}}}, {"$set": {"n": number, field: number}}),
                ({"$v": 2, "diff": {"d": {"f0": False}}}, {"$unset": {"f0": ""}}),
                ({"$set": {"deep.x": number}}, {"$set": {"deep.x": number}}),
                ({"$v": 1, "$unset": {"n": True}}, {"$unset": {"n": ""}})])
            ops.append((entry("u", namespace, update, ts, o2={"_id": id_value}), ("update", namespace, id_value, native)))
    return ops


def apply_natively(bed, ops):
    """The reference: the server applies each write on its own, in oplog order (an insert of an
    _id that exists replaces it, as oplog application does; an update of a missing document does
    nothing)."""
    for kind, namespace, id_value, payload in ops:
        collection = bed.coll(namespace)
        if kind == "replace":
            collection.replace_one({"_id": id_value}, payload, upsert=True)
        elif kind == "delete":
            collection.delete_one({"_id": id_value})
        else:
            collection.update_one({"_id": id_value}, payload)


def remap_native(native, database):
    kind, namespace, id_value, payload = native
    return kind, "%s.%s" % (database, namespace.partition(".")[2]), id_value, payload


def seed_start(bed, database):
    bed.coll("%s.a" % database).insert_many([{"_id": 1, "f0": 0}, {"_id": "four", "f0": 0}])


def test_batched_crud_equals_the_server_applying_one_by_one(bed):
    """Windows of any size give the documents the server gives for the writes one at a time."""
    for seed in range(8):
        bed.drop()
        rng = random.Random(seed)
        pairs = random_ops(rng, bed.name, 60)
        seed_start(bed, bed.other)
        apply_natively(bed, [remap_native(native, bed.other) for _entry, native in pairs])
        expected = dict((c, bed.docs(bed.ns(c, bed.other))) for c in "ab")
        for batch_size in (1, 3, 7, 1000):
            bed.client.drop_database(bed.name)
            seed_start(bed, bed.name)
            result = bed.replay([e for e, _native in pairs], mode="crud", batch_size=batch_size)
            for collection in "ab":
                assert bed.docs(bed.ns(collection)) == expected[collection], (seed, batch_size, collection)
            assert result["applied"] + result["skipped"].get("update_missing_document", 0) == 60


def test_window_fetches_only_documents_whose_first_op_is_a_diff(bed):
    namespace = bed.ns("c")
    bed.coll(namespace).insert_many([{"_id": 1, "a": 1}, {"_id": 3}])
    ops = [entry("u", namespace, {"$v": 2, "diff": {"u": {"a": 2}}}, o2={"_id": 1}),
           entry("i", namespace, {"_id": 2, "a": 0}),
           entry("u", namespace, {"$v": 2, "diff": {"u": {"a": 5}}}, o2={"_id": 2}),
           entry("u", namespace, {"_id": 3, "b": 1}, o2={"_id": 3}),
           entry("u", namespace, {"$v": 2, "diff": {"i": {"c": 1}}}, o2={"_id": 3}),
           entry("u", namespace, {"$v": 2, "diff": {"u": {"a": 9}}}, o2={"_id": 4})]
    del bed.log.commands[:]
    result = bed.replay(ops, mode="crud")
    finds = bed.sent("find")
    assert len(finds) == 1 and finds[0][1]["filter"] == {"_id": {"$in": [1, 4]}}
    assert bed.docs(namespace) == [{"_id": 1, "a": 2}, {"_id": 2, "a": 5}, {"_id": 3, "b": 1, "c": 1}]
    assert result["skipped"] == {"update_missing_document": 1}
    writes = bed.sent("insert", "update", "delete")
    # one unordered bulk of three final states: document 2 inserted, 1 and 3 replaced
    assert all(command["ordered"] is False for _name, command in writes)
    assert sorted((name, len(command.get("documents") or command.get("updates") or command.get("deletes")))
                  for name, command in writes) == [("insert", 1), ("update", 2)]


def test_a_unique_index_conflict_of_the_unordered_bulk_ends_in_the_oplog_state(bed):
    """The bulk inserts before it deletes: the insert trips over the unique value the deleted
    document still holds. The replay still ends in the state the oplog describes."""
    namespace = bed.ns("c")
    bed.coll(namespace).create_index("u", unique=True)
    bed.coll(namespace).insert_one({"_id": "old", "u": 1})
    ops = [entry("d", namespace, {"_id": "old"}), entry("i", namespace, {"_id": 1, "u": 1}),
           entry("i", namespace, {"_id": 2, "u": 2})]
    result = bed.replay(ops, mode="crud")
    assert bed.docs(namespace) == [{"_id": 1, "u": 1}, {"_id": 2, "u": 2}] and result["applied"] == 3


def test_a_rejected_bulk_is_written_again_op_by_op_in_oplog_order(bed):
    """Two documents swap a unique value through a third: the final states conflict in any
    order but the oplog's, so the unordered bulk fails and the ops are written again in order."""
    namespace = bed.ns("c")
    bed.coll(namespace).create_index("u", unique=True)
    bed.coll(namespace).insert_many([{"_id": "A", "u": 1}, {"_id": "B", "u": 2}])
    ops = [entry("u", namespace, {"_id": "A", "u": 3}, o2={"_id": "A"}),
           entry("u", namespace, {"_id": "B", "u": 1}, o2={"_id": "B"}),
           entry("u", namespace, {"_id": "A", "u": 2}, o2={"_id": "A"})]
    del bed.log.commands[:]
    try:
        result = bed.replay(ops, mode="crud")
    except errors.ReplayError as exc:
        if bed.is_ferretdb and "InternalError" in exc.message:
            pytest.skip("FerretDB reports a unique-index conflict inside an update command as a command "
                        "error (InternalError) instead of a write error: %s" % exc.message)
        raise
    assert bed.docs(namespace) == [{"_id": "A", "u": 2}, {"_id": "B", "u": 1}] and result["applied"] == 3
    updates = bed.sent("update")
    assert updates[0][1]["ordered"] is False and updates[-1][1]["ordered"] is True
    assert len(updates[-1][1]["updates"]) == 3


def test_a_bad_update_stops_after_writing_what_came_before(bed):
    namespace = bed.ns("orders")
    ops = [entry("i", namespace, {"_id": 1}, Timestamp(1700000123, 2)),
           entry("i", namespace, {"_id": 2}, Timestamp(1700000123, 3)),
           entry("u", namespace, {"$v": 2, "diff": {"p": 1}}, Timestamp(1700000123, 4), o2={"_id": 1}),
           entry("i", namespace, {"_id": 3}, Timestamp(1700000123, 5))]
    with pytest.raises(errors.ReplayError) as info:
        bed.replay(ops, mode="crud")
    assert info.value.message.startswith(
        "replay stopped at oplog entry op=u ns=%s ts=1700000123:4: the update cannot be applied (" % namespace)
    assert info.value.message.endswith(
        "; entries up to 1700000123:3 were applied; fix the cause and replay again from the same oplog "
        "(replay is idempotent)")
    assert info.value.details["last_applied"] == "1700000123:3"
    assert bed.docs(namespace) == [{"_id": 1}, {"_id": 2}]


def test_ferretdb_full_image_updates_are_replacements(bed):
    """FerretDB logs {$v:1, $set: <post-image>} with an _id of its own; as a $set it would keep
    removed fields. MongoDB's $v:1 $set (no entry _id) stays a $set."""
    namespace = bed.ns("c")
    bed.coll(namespace).insert_one({"_id": 1, "gone": True, "a": 1})
    ferret = entry("u", namespace, {"$v": 1, "$set": {"_id": 1, "a": 2}}, o2={"_id": 1}, _id=bson.ObjectId())
    mongo = entry("u", namespace, {"$v": 1, "$set": {"_id": 1, "a": 3}}, o2={"_id": 1})
    bed.replay([ferret], mode="crud")
    assert bed.docs(namespace) == [{"_id": 1, "a": 2}]
    bed.coll(namespace).replace_one({"_id": 1}, {"_id": 1, "gone": True, "a": 1})
    bed.replay([mongo], mode="crud")
    assert bed.docs(namespace) == [{"_id": 1, "gone": True, "a": 3}]


def test_progress_is_reported_after_each_flush(bed):
    seen = []
    ops = [entry("i", bed.ns("c"), {"_id": n}, Timestamp(1, n + 1)) for n in range(10)]
    bed.replay(ops, mode="crud", batch_size=4, progress=seen.append)
    assert [p["applied"] for p in seen] == [4, 8, 10] and seen[-1]["last_applied"] == "1:10"
    assert len(bed.docs(bed.ns("c"))) == 10


# --------------------------------------------------------------------------- commands

def test_unknown_command_is_fatal_and_named(bed):
    ops = [entry("i", bed.ns("c"), {"_id": 1}, Timestamp(10, 1)),
           entry("c", bed.ns("$cmd"), {"frobnicate": "c"}, Timestamp(10, 2))]
    with pytest.raises(errors.ReplayError) as info:
        bed.replay(ops, mode="crud")
    assert info.value.message == (
        "replay stopped at oplog entry op=c ns=%s ts=10:2: unknown oplog command name 'frobnicate' "
        "(this tool does not know how to replay it); entries up to 10:1 were applied; fix the cause and "
        "replay again from the same oplog (replay is idempotent)" % bed.ns("$cmd"))
    assert bed.docs(bed.ns("c")) == [{"_id": 1}]
    assert info.value.details["applied"] == 1 and info.value.details["op"] == "c"
    assert not bed.sent("frobnicate")


def test_nested_applyops_inner_ops_get_the_full_logic(bed):
    """oplogdump: an insert, an applyOps of three inserts, an insert; then an applyOps holding a
    config write (skipped), a createIndexes (catalog) and an insert with a UUID (applied)."""
    result = bed.replay(fixture_oplog({"db1": bed.name}, "oplogdump", "oplog.bson"), mode="crud")
    assert sorted(d["x"] for d in bed.docs(bed.ns("c1"))) == [1456, 1457, 1458, 1459, 1460]
    assert result["applied_by_op"] == {"i": 5} and result["last_applied"] == "1511064038:32"
    nested = entry("c", "admin.$cmd", {"applyOps": [
        {"op": "i", "ns": "config.system.sessions", "o": {"_id": bed.name}},
        {"op": "c", "ns": bed.ns("$cmd"), "o": {"createIndexes": "c", "v": 2, "key": {"a": 1}, "name": "a_1"}},
        {"op": "i", "ns": bed.ns("c"), "o": {"_id": 1}, "ui": UUID}]})
    result = bed.replay([nested], mode="crud")
    assert bed.docs(bed.ns("c")) == [{"_id": 1}] and bed.index_names(bed.ns("c")) == ["_id_"]
    assert result["skipped"] == {"config_namespace": 1} and list(result["index_catalog"][bed.ns("c")]) == ["a_1"]
    assert bed.client.config.system.sessions.count_documents({"_id": bed.name}) == 0


def test_create_loses_record_ids_replicated(bed):
    """A create logged by a server that replicates record ids is sent without that option."""
    bed.replay([entry("c", bed.ns("$cmd"), {"create": "c", "recordIdsReplicated": True,
                                            "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"}})], mode="crud")
    creates = bed.sent("create")
    assert len(creates) == 1 and [k for k in creates[0][1] if k not in DRIVER_FIELDS] == ["create", "idIndex"]
    assert bed.collections() == ["c"]


def test_crud_commands(bed):
    """create (capped), renameCollection, drop, a rename whose source is gone, dropDatabase, dbCheck."""
    bed.coll(bed.ns("a")).insert_one({"_id": 1})
    bed.coll(bed.ns("x", bed.other)).insert_one({"_id": 1})
    ops = [entry("c", bed.ns("$cmd"), {"create": "b", "capped": True, "size": 4096}),
           entry("c", "admin.$cmd", {"renameCollection": bed.ns("a"), "to": bed.ns("r")}),
           entry("c", bed.ns("$cmd"), {"dbCheck": "r"}),
           entry("c", "admin.$cmd", {"renameCollection": bed.ns("gone"), "to": bed.ns("x")}),
           entry("c", bed.ns("$cmd"), {"create": "b2"})]
    result = bed.replay(ops, mode="crud")
    assert bed.collections() == ["b", "b2", "r"] and bed.docs(bed.ns("r")) == [{"_id": 1}]
    assert bed.coll(bed.ns("b")).options().get("capped") is True
    assert result["skipped"] == {"ignored_command": 1, "rename_source_missing": 1}
    assert result["applied_by_op"] == {"c": 3}
    assert not bed.sent("dbCheck")
    result = bed.replay([entry("c", bed.ns("$cmd"), {"drop": "b"}),
                         entry("c", bed.ns("$cmd", bed.other), {"dropDatabase": 1})], mode="crud")
    assert bed.collections() == ["b2", "r"] and bed.other not in bed.client.list_database_names()
    assert result["applied_by_op"] == {"c": 2}


def test_crud_rename_with_drop_target(bed):
    """dropTarget (a UUID in the oplog) replaces the target and forgets its catalog indexes."""
    bed.coll(bed.ns("a")).insert_one({"_id": "from a"})
    bed.coll(bed.ns("r")).insert_one({"_id": "from r"})
    catalog = {bed.ns("r"): {"x_1": {"v": 2, "key": {"x": 1}, "name": "x_1"}},
               bed.ns("a"): {"y_1": {"v": 2, "key": {"y": 1}, "name": "y_1"}}}
    ops = [entry("c", "admin.$cmd", {"renameCollection": bed.ns("a"), "to": bed.ns("r"), "dropTarget": UUID})]
    try:
        result = bed.replay(ops, mode="crud", index_catalog=catalog)
    except errors.ReplayError as exc:
        bed.skip_if_lacking(exc, "renameCollection with dropTarget")
    assert bed.collections() == ["r"] and bed.docs(bed.ns("r")) == [{"_id": "from a"}]
    assert result["index_catalog"] == {bed.ns("r"): catalog[bed.ns("a")]}


@pytest.mark.parametrize("command, check", [
    ({"collMod": "r", "validator": {"a": {"$exists": True}}, "noPadding": True},
     lambda options: options.get("validator") == {"a": {"$exists": True}}),
    ({"convertToCapped": "r", "size": 100000}, lambda options: options.get("capped") is True),
    ({"emptycapped": "r"}, None),
])
def test_crud_commands_sent_as_logged(bed, command, check):
    """collMod (without the options servers >= 4.2 reject), convertToCapped and emptycapped go
    to the server as the oplog holds them."""
    bed.coll(bed.ns("r")).insert_one({"_id": 1})
    if "emptycapped" in command:
        bed.client[bed.name].command({"create": "r2", "capped": True, "size": 4096})
        bed.coll(bed.ns("r2")).insert_one({"_id": 1})
        command = {"emptycapped": "r2"}
    try:
        result = bed.replay([entry("c", bed.ns("$cmd"), command)], mode="crud")
    except errors.ReplayError as exc:
        bed.skip_if_lacking(exc, next(iter(command)))
    assert result["applied_by_op"] == {"c": 1}
    if check is not None:
        assert check(bed.coll(bed.ns("r")).options())
    else:
        assert bed.docs(bed.ns("r2")) == []


def test_crud_mode_skips_system_collections_it_cannot_write_and_says_so(bed):
    ops = [entry("i", "admin.system.users", {"_id": SYSTEM_IDS[0], "user": "oprr_ops", "db": "admin"}),
           entry("u", "admin.system.roles", {"_id": SYSTEM_IDS[1], "x": 1}, o2={"_id": SYSTEM_IDS[1]}),
           entry("i", bed.ns("system.views"), {"_id": bed.ns("v"), "viewOn": "orders", "pipeline": []}),
           entry("i", bed.ns("orders"), {"_id": 1})]
    try:
        result = bed.replay(ops, mode="crud")
    finally:  # never leave a user or role behind on the shared server, whatever happened
        for collection in ("system.users", "system.roles"):
            bed.client.admin[collection].delete_many({"_id": {"$in": list(SYSTEM_IDS)}})
    assert bed.collections() == ["orders"] and result["skipped"] == {"system_collection": 3}
    assert result["not_applied"] == {"system_collection": 3}
    assert "3 oplog writes to users, roles, views" in result["warnings"][0]
    assert [name for name, _command in bed.sent("insert", "update", "delete")] == ["insert"]


# --------------------------------------------------------------------------- index catalog

def test_legacy_system_indexes_inserts_feed_the_catalog(bed):
    """Servers before 3.2 logged an index build as an insert into system.indexes: it is not
    written, the catalog gets it and build_indexes creates it."""
    spec = {"v": 1, "key": {"a": 1}, "name": "a_1", "ns": bed.ns("c"), "unique": True}
    result = bed.replay([entry("i", bed.ns("system.indexes"), spec)], mode="crud")
    assert result["index_catalog"] == {bed.ns("c"): {"a_1": {"v": 1, "key": {"a": 1}, "name": "a_1", "unique": True}}}
    assert not bed.sent("insert") and bed.name not in bed.client.list_database_names()
    assert index_catalog.build_indexes(bed.client, result["index_catalog"]) == {"created": 1, "existing": 0}
    built = dict((s["name"], s) for s in bed.coll(bed.ns("c")).list_indexes())
    assert built["a_1"].get("unique") is True


def test_index_catalog_from_create_and_commit_index_builds(bed):
    result = bed.replay(fixture_oplog({"commit_index": bed.name}, "commit_indexes_build", "oplog.bson"), mode="crud")
    catalog = result["index_catalog"][bed.ns("test")]
    assert sorted(catalog) == ["a_1", "b_1"] and catalog["b_1"]["partialFilterExpression"] == {"a": 1.0}
    assert not bed.sent("createIndexes")  # built afterwards, by build_indexes
    result = bed.replay(fixture_oplog({"create_indexes": bed.other}, "create_indexes", "oplog.bson"), mode="crud")
    catalog = result["index_catalog"][bed.ns("test", bed.other)]
    assert sorted(catalog) == ["a_1", "b_1"] and "ns" not in catalog["a_1"]
    bed.drop()
    result = bed.replay(fixture_oplog({"foo": bed.name}, "tools-2002", "oplog.bson"), mode="crud")
    spec = {"v": 2, "key": {"a": 1.0, "b": 1.0}, "name": "a_1_b_1"}
    assert result["index_catalog"] == {bed.ns("bar"): {"a_1_b_1": spec}}
    assert bed.collections() == ["bar"] and bed.index_names(bed.ns("bar")) == ["_id_"]


def test_collmod_index_changes_stay_in_the_catalog(bed):
    """An index the catalog holds is changed there (the build applies it); nothing is sent."""
    result = bed.replay(fixture_oplog({"mongodump_test_db": bed.other}, "oplogs", "bson",
                                      "collMod_indexUniqueness.bson"), mode="crud")
    catalog = result["index_catalog"][bed.ns("coll1", bed.other)]
    assert sorted(catalog) == ["a_1", "b_1", "c_1", "d_1"]
    assert all(spec["prepareUnique"] is True and "unique" not in spec for spec in catalog.values())
    seeded = {bed.ns("foo"): {"f_1": {"v": 2, "key": {"f": 1.0}, "name": "f_1", "expireAfterSeconds": 1000}}}
    del bed.log.commands[:]
    result = bed.replay(fixture_oplog({"test": bed.name}, "oplogs", "bson", "collMod_with_hidden.bson"),
                        mode="crud", index_catalog=seeded)
    assert result["index_catalog"][bed.ns("foo")]["f_1"] == {"v": 2, "key": {"f": 1.0}, "name": "f_1",
                                                             "expireAfterSeconds": 3600, "hidden": True}
    assert bed.sent() == [] and seeded[bed.ns("foo")]["f_1"]["expireAfterSeconds"] == 1000


def test_collmod_of_an_index_only_the_target_has_goes_to_the_server(bed):
    try:
        bed.coll(bed.ns("foo")).create_index("f", expireAfterSeconds=1000)
    except pymongo_errors.OperationFailure as exc:
        bed.skip_if_lacking(exc, "TTL indexes (expireAfterSeconds)")
    try:
        result = bed.replay(fixture_oplog({"test": bed.name}, "oplogs", "bson", "collMod.bson"), mode="crud")
    except errors.ReplayError as exc:
        bed.skip_if_lacking(exc, "collMod")
    assert result["index_catalog"] == {} and result["applied_by_op"] == {"c": 1}
    built = dict((s["name"], s) for s in bed.coll(bed.ns("foo")).list_indexes())
    assert built["f_1"]["expireAfterSeconds"] == 3600


def test_drop_index_leaves_the_catalog_and_the_target(bed):
    seeded = {bed.ns("foo"): {"f_1": {"v": 2, "key": {"f": 1.0}, "name": "f_1"},
                              "g_1": {"v": 2, "key": {"g": 1}, "name": "g_1"}}}
    bed.coll(bed.ns("foo")).create_index("f")
    result = bed.replay(fixture_oplog({"test": bed.name}, "oplogs", "bson", "drop_index.bson"),
                        mode="crud", index_catalog=seeded)
    assert list(result["index_catalog"][bed.ns("foo")]) == ["g_1"]
    assert bed.index_names(bed.ns("foo")) == ["_id_"]
    bed.coll(bed.ns("bar")).insert_one({"_id": 1})
    ops = [entry("c", bed.ns("$cmd"), {"dropIndexes": "foo", "index": {"g": 1.0}}),
           entry("c", bed.ns("$cmd"), {"createIndexes": "bar", "v": 2, "key": {"b": 1}, "name": "b_1"}),
           entry("c", "admin.$cmd", {"renameCollection": bed.ns("bar"), "to": bed.ns("baz")}),
           entry("c", bed.ns("$cmd"), {"createIndexes": "other", "v": 2, "key": {"o": 1}, "name": "o_1"}),
           entry("c", bed.ns("$cmd"), {"create": "other"}),
           entry("c", bed.ns("$cmd"), {"drop": "other"})]
    result = bed.replay(ops, mode="crud", index_catalog=seeded)
    assert result["index_catalog"] == {bed.ns("foo"): {"f_1": seeded[bed.ns("foo")]["f_1"]},
                                       bed.ns("baz"): {"b_1": {"v": 2, "key": {"b": 1}, "name": "b_1"}}}
    assert bed.collections() == ["baz", "foo"]
    result = bed.replay(fixture_oplog({"test": bed.name}, "oplogs", "bson", "drop_db.bson"),
                        mode="crud", index_catalog=seeded)
    assert result["index_catalog"] == {} and bed.name not in bed.client.list_database_names()


def test_build_indexes_skips_existing_keys(bed):
    bed.coll(bed.ns("c")).create_index("a")
    catalog = {bed.ns("c"): {"_id_": {"v": 2, "key": {"_id": 1}, "name": "_id_"},
                             "a_1": {"v": 2, "key": {"a": 1.0}, "name": "a_1"},
                             "b_1": {"v": 2, "key": {"b": 1.0}, "name": "b_1", "unique": True}},
               bed.ns("d"): {"x_1": {"v": 2, "key": {"x": 1}, "name": "x_1"}}}
    assert index_catalog.build_indexes(bed.client, catalog) == {"created": 2, "existing": 2}
    assert bed.index_names(bed.ns("c")) == ["_id_", "a_1", "b_1"] and bed.index_names(bed.ns("d")) == ["_id_", "x_1"]
    assert index_catalog.build_indexes(bed.client, catalog) == {"created": 0, "existing": 4}
