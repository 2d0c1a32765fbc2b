"""Oplog replay over the wire, for what the test server (FerretDB) lacks: applyOps (the
applyops and auto modes), its refusals and error replies, collMod, convertToCapped, emptycapped,
renameCollection with dropTarget, and MongoDB's write errors with keyPattern. mockupdb answers
as MongoDB 7/8 documents these commands; the tests check what the replay sends and how it reads
the replies. The data path is tested against the real server in
tests/integration/test_oplog_replay_rules.py."""

import os
import threading

import bson
import pytest
from bson import Int64, Timestamp

from support import COMPAT, compat_ext_json, interleave
from ansible_collections.dbops.mongodb_backup.plugins.module_utils import errors
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import replay
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import readers

pytestmark = pytest.mark.protocol

RESTORE_DATA = os.path.join(COMPAT, "mongorestore", "testdata")
UUID = bson.Binary(bytes(range(16)), 4)
DRIVER_NAMES = ("hello", "ismaster", "isMaster", "endSessions")


def entry(op, ns, o, ts=None, **extra):
    doc = {"ts": ts or Timestamp(1700000000, 1), "t": Int64(1), "v": 2, "op": op, "ns": ns, "o": o}
    doc.update(extra)
    return doc


def plain(command):
    """A received command without what the driver adds ($db, lsid, $readPreference...)."""
    return dict((k, v) for k, v in command.items()
                if not k.startswith("$") and k not in ("lsid", "txnNumber") and not (k == "comment" and v is None))


# --------------------------------------------------------------------------- the mock server

def _count_reply(field):
    return lambda request: request.reply({"ok": 1, "n": len(request.doc.get(field) or [])})


def _empty_find(request):
    namespace = "%s.%s" % (request.doc.get("$db"), request.doc["find"])
    request.reply({"ok": 1, "cursor": {"id": Int64(0), "ns": namespace, "firstBatch": []}})


DEFAULT_HANDLERS = {"insert": _count_reply("documents"), "update": _count_reply("updates"),
                    "delete": _count_reply("deletes"), "find": _empty_find}


class MockMongod:
    """One mockupdb server for the module, answering with the handlers of the current run."""

    def __init__(self):
        from mockupdb import MockupDB
        self.server = MockupDB()
        hello = {"isWritablePrimary": True, "setName": "rs0", "hosts": [], "maxWireVersion": 21, "minWireVersion": 0}
        self.server.autoresponds("hello", hello)
        self.server.autoresponds("ismaster", hello)
        self.server.autoresponds("ping")
        self.server.run()
        self.handlers, self.received = {}, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        """Answer commands until stopped; record each (command name, document)."""
        while not self._stop.is_set():
            try:
                request = self.server.receives(timeout=0.2)
            except AssertionError:
                continue
            name = next(iter(request.doc))
            self.received.append((name, request.doc))
            self.handlers.get(name, DEFAULT_HANDLERS.get(name, lambda r: r.ok()))(request)

    def run(self, handlers, entries, **kwargs):
        """Replay ``entries``; (result, [(name, command)] received, without the handshakes)."""
        import pymongo
        self.handlers, self.received = handlers, []
        client = pymongo.MongoClient(self.server.uri, directConnection=True, serverSelectionTimeoutMS=3000)
        try:
            result = replay.OplogReplayer(client, **kwargs).replay(entries)
        finally:
            client.close()
        return result, [(name, doc) for name, doc in self.received if name not in DRIVER_NAMES]

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        self.server.stop()


@pytest.fixture(scope="module")
def mock():
    server = MockMongod()
    yield server
    server.stop()


def _applyops_entries(received):
    """The entries sent through applyOps; each command carries exactly one."""
    commands = [doc for name, doc in received if name == "applyOps"]
    assert all(len(doc["applyOps"]) == 1 for doc in commands)
    return [dict(doc["applyOps"][0]) for doc in commands]


def _refuse_applyops(request):
    request.command_err(code=59, errmsg="no such command: 'applyOps'", codeName="CommandNotFound")


# --------------------------------------------------------------------------- applyops mode

def test_protocol_applyops_sends_one_reduced_entry_per_command(mock):
    wire = entry("i", "shop.orders", {"_id": 1, "total": 5}, Timestamp(1700000123, 4), ui=UUID, h=Int64(9),
                 wall=None, stmtId=0)
    result, received = mock.run({}, [wire, entry("n", "", {"msg": "noop"})], mode="applyops",
                                bypass_document_validation=True)
    commands = [doc for name, doc in received if name == "applyOps"]
    assert len(commands) == 1 and result["applied"] == 1 and result["mode_used"] == "applyops"
    sent = commands[0]
    assert list(sent)[:2] == ["applyOps", "bypassDocumentValidation"] and sent["bypassDocumentValidation"] is True
    assert sent["$db"] == "admin"
    assert [dict(e) for e in sent["applyOps"]] == [{"ts": Timestamp(1700000123, 4), "t": 1, "v": 2, "op": "i",
                                                    "ns": "shop.orders", "o": {"_id": 1, "total": 5}}]


def test_protocol_applyops_mode_sends_reduced_entries_without_uuids(mock):
    """Fields mongorestore drops (h, wall, stmtId) are not sent, nor the collection UUID unless
    preserve_uuid asks for it; the retryable-write fields are kept, in their order."""
    wire = entry("u", "db.c", {"$v": 2, "diff": {"u": {"a": 1}}}, o2={"_id": 1}, ui=UUID, h=Int64(5),
                 wall=None, stmtId=0, lsid={"id": UUID}, txnNumber=Int64(3), prevOpTime={"ts": Timestamp(0, 0)})
    _result, received = mock.run({}, [wire], mode="applyops")
    assert [list(e) for e in _applyops_entries(received)] == [
        ["ts", "t", "v", "op", "ns", "o", "o2", "lsid", "txnNumber", "prevOpTime"]]
    _result, received = mock.run({}, [wire], mode="applyops", preserve_uuid=True)
    assert _applyops_entries(received)[0]["ui"] == UUID


def _crud_ops_of(case):
    """The CRUD ops a case's oplog entries carry, in order (inside applyOps or on their own)."""
    ops = []
    for doc in case["ops"]:
        inner = doc["o"].get("applyOps") if doc["op"] == "c" else None
        for op in inner if inner is not None else [doc]:
            if op["op"] in ("i", "u", "d"):
                ops.append((op["op"], op["ns"], op["o"], op.get("o2")))
    return ops


@pytest.mark.parametrize("fixture", [("mongorestore", "testdata", "transactions.json"),
                                     ("mongorestore", "testdata", "transactions-6.1.json"),
                                     ("common", "txn", "testdata", "oplog_entries.json")])
def test_protocol_transaction_fixtures_in_applyops_mode(mock, fixture):
    """TestMongorestoreTxns in applyops mode: each committed transaction's ops (and every
    non-transaction op) are sent one per applyOps, in their order and without UUIDs; aborted and
    incomplete transactions send nothing."""
    cases = compat_ext_json(*fixture)
    for seed in range(2):
        result, received = mock.run({}, interleave(cases.values(), seed), mode="applyops", batch_size=4)
        sent = _applyops_entries(received)
        assert sent and all("ui" not in e for e in sent)
        for name, case in cases.items():
            expected = [] if ("aborted" in name or "incomplete" in name) else _crud_ops_of(case)
            namespaces = set(op[1] for op in _crud_ops_of(case))
            got = [(e["op"], e["ns"], e["o"], e.get("o2")) for e in sent if e["ns"] in namespaces]
            assert got == expected, name
        assert result["transactions"] == {"committed": 4, "aborted": 2, "discarded": 2 if len(cases) == 10 else 0}
        assert result["mode_used"] == "applyops"
        if "not transaction with lsid and txnNumber and command" in cases:
            assert list(result["index_catalog"]["txntest.k"]) == ["x_1"]


def test_protocol_create_loses_record_ids_replicated_in_applyops_mode(mock):
    create = entry("c", "db.$cmd", {"create": "c", "recordIdsReplicated": True, "idIndex": {"key": {"_id": 1}}})
    _result, received = mock.run({}, [create], mode="applyops")
    assert [list(e["o"]) for e in _applyops_entries(received)] == [["create", "idIndex"]]


def test_protocol_applyops_rerun_tolerates_what_an_earlier_replay_did(mock):
    """A create of a collection that exists and a rename whose source is gone are what an earlier
    replay of the same oplog left: not errors."""
    def apply_ops(request):
        command = request.doc["applyOps"][0]["o"]
        if command.get("create") == "a":
            request.command_err(code=48, errmsg="Collection db.a already exists.", codeName="NamespaceExists",
                                applied=1, results=[False])
        elif command.get("renameCollection") == "db.gone":
            request.command_err(code=26, errmsg="Source collection db.gone does not exist",
                                codeName="NamespaceNotFound", applied=1, results=[False])
        else:
            request.ok(applied=1, results=[True])

    result, received = mock.run({"applyOps": apply_ops}, [
        entry("c", "db.$cmd", {"create": "a"}),
        entry("c", "admin.$cmd", {"renameCollection": "db.gone", "to": "db.x"}),
        entry("c", "db.$cmd", {"create": "b"})], mode="applyops")
    assert len(_applyops_entries(received)) == 3
    assert result["applied_by_op"] == {"c": 2} and result["skipped"] == {"rename_source_missing": 1}


def test_protocol_nested_applyops_inner_ops_get_the_full_logic(mock):
    """Inside a non-transaction applyOps: the config write is skipped, the createIndexes feeds the
    catalog, only the insert is sent (without its UUID)."""
    nested = entry("c", "admin.$cmd", {"applyOps": [
        {"op": "i", "ns": "config.system.sessions", "o": {"_id": 1}},
        {"op": "c", "ns": "db.$cmd", "o": {"createIndexes": "c", "v": 2, "key": {"a": 1}, "name": "a_1"}},
        {"op": "i", "ns": "db.c", "o": {"_id": 1}, "ui": UUID}]})
    result, received = mock.run({}, [nested], mode="applyops")
    assert _applyops_entries(received) == [{"op": "i", "ns": "db.c", "o": {"_id": 1}}]
    assert result["skipped"] == {"config_namespace": 1} and list(result["index_catalog"]["db.c"]) == ["a_1"]


def test_protocol_applyops_mode_writes_system_collections(mock):
    """applyOps writes users, roles and views (crud mode cannot: see the integration test)."""
    ops = [entry("i", "admin.system.users", {"_id": "admin.ops", "user": "ops"}),
           entry("u", "admin.system.roles", {"_id": "admin.r", "x": 1}, o2={"_id": "admin.r"}),
           entry("i", "shop.system.views", {"_id": "shop.v", "viewOn": "orders"}),
           entry("i", "shop.orders", {"_id": 1})]
    result, received = mock.run({}, ops, mode="applyops")
    assert [e["ns"] for e in _applyops_entries(received)] == [
        "admin.system.users", "admin.system.roles", "shop.system.views", "shop.orders"]
    assert result["applied"] == 4 and result["warnings"] == [] and result["not_applied"] == {}


# --------------------------------------------------------------------------- auto mode

@pytest.mark.parametrize("code, name, errmsg", [
    (59, "CommandNotFound", "no such command: 'applyOps'"),
    (13, "Unauthorized", "not authorized on admin to execute command { applyOps: [ ... ] }"),
    (238, "NotImplemented", "applyOps is not implemented"),
    (8000, "AtlasError", "applyOps is not allowed in this atlas tier"),
])
def test_protocol_auto_mode_falls_back_to_crud_when_applyops_is_refused(mock, code, name, errmsg):
    def refuse(request):
        request.command_err(code=code, errmsg=errmsg, codeName=name)

    result, received = mock.run({"applyOps": refuse},
                                [entry("i", "db.c", {"_id": 1}), entry("i", "db.c", {"_id": 2})], mode="auto")
    assert [n for n, _doc in received] == ["applyOps", "insert"]
    assert [dict(d) for d in received[1][1]["documents"]] == [{"_id": 1}, {"_id": 2}]
    assert result["mode_used"] == "crud" and result["applied"] == 2
    assert "refused applyOps" in result["warnings"][0] and "%d (%s)" % (code, name) in result["warnings"][0]


def test_protocol_auto_mode_keeps_applyops_when_it_works_and_reports_real_errors(mock):
    ops = [entry("i", "db.c", {"_id": 1}), entry("i", "db.c", {"_id": 2})]
    result, received = mock.run({}, ops, mode="auto")
    assert [n for n, _doc in received] == ["applyOps", "applyOps"]
    assert result["mode_used"] == "applyops" and result["applied"] == 2

    def bad_value(request):
        request.command_err(code=2, errmsg="bad value", codeName="BadValue")

    with pytest.raises(errors.ReplayError, match=r"server error 2 \(BadValue\): bad value; no entry was applied"):
        mock.run({"applyOps": bad_value}, ops[:1], mode="auto")
    with pytest.raises(errors.ReplayError, match="replay with mode crud or auto"):
        mock.run({"applyOps": _refuse_applyops}, ops[:1], mode="applyops")


def test_protocol_auto_falls_back_to_crud_when_applyops_is_not_found(mock):
    def upsert(request):
        request.reply({"ok": 1, "n": 2, "nModified": 0})

    def find(request):
        request.reply({"ok": 1, "cursor": {"id": Int64(0), "ns": "shop.orders",
                                           "firstBatch": [{"_id": 2, "total": 1, "note": "x"}]}})

    ops = [entry("i", "shop.orders", {"_id": 1, "total": 5}, Timestamp(10, 1)),
           entry("u", "shop.orders", {"$v": 2, "diff": {"d": {"note": False}, "u": {"total": 7}}},
                 Timestamp(10, 2), o2={"_id": 2})]
    result, received = mock.run({"applyOps": _refuse_applyops, "update": upsert, "find": find}, ops, mode="auto")
    names = [name for name, _doc in received]
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


# --------------------------------------------------------------------------- crud mode: write errors

def test_protocol_insert_of_an_existing_id_becomes_a_replacement(mock):
    """The dump (or an earlier replay) already holds document 2: its insert fails on _id and is
    sent again as a replacement; document 1 is not sent twice."""
    def insert(request):
        request.reply({"ok": 1, "n": 1, "writeErrors": [
            {"index": 1, "code": 11000, "keyPattern": {"_id": 1}, "keyValue": {"_id": 2},
             "errmsg": "E11000 duplicate key error collection: shop.orders index: _id_ dup key: { _id: 2 }"}]})

    def update(request):
        request.reply({"ok": 1, "n": 1, "nModified": 1})

    ops = [entry("i", "shop.orders", {"_id": n, "total": n}, Timestamp(10, n)) for n in (1, 2)]
    result, received = mock.run({"applyOps": _refuse_applyops, "insert": insert, "update": update},
                                ops, mode="auto")
    names = [name for name, _doc in received]
    assert names == ["applyOps", "insert", "update"] and result["applied"] == 2
    update_doc = [doc for name, doc in received if name == "update"][0]
    assert [(dict(u["q"]), dict(u["u"]), u["upsert"]) for u in update_doc["updates"]] == [
        ({"_id": 2}, {"_id": 2, "total": 2}, True)]


def test_protocol_duplicate_on_a_unique_index_stops_the_replay(mock):
    """A duplicate on another unique index is a real conflict: not retried, reported with the entry."""
    def insert(request):
        request.reply({"ok": 1, "n": 0, "writeErrors": [
            {"index": 0, "code": 11000, "keyPattern": {"email": 1}, "keyValue": {"email": "a@b"},
             "errmsg": "E11000 duplicate key error collection: shop.users index: email_1 dup key"}]})

    ops = [entry("i", "shop.users", {"_id": 1, "email": "a@b"}, Timestamp(10, 1))]
    with pytest.raises(errors.ReplayError) as failure:
        mock.run({"applyOps": _refuse_applyops, "insert": insert}, ops, mode="auto")
    message = failure.value.message
    assert "op=i ns=shop.users ts=10:1" in message and "email_1 dup key" in message
    assert "no entry was applied" in message


def test_protocol_a_rejected_bulk_is_written_again_op_by_op_in_oplog_order(mock):
    """MongoDB answers the unordered bulk with a write error on the unique index u_1 (FerretDB
    answers a command error instead, see the integration test): each op's own result is then
    sent again as one ordered bulk, in oplog order."""
    def update(request):
        if request.doc["ordered"] is False:
            request.reply({"ok": 1, "n": 0, "nModified": 0, "writeErrors": [
                {"index": 0, "code": 11000, "keyPattern": {"u": 1}, "keyValue": {"u": 2},
                 "errmsg": "E11000 duplicate key error collection: db.c index: u_1 dup key: { u: 2 }"}]})
        else:
            request.reply({"ok": 1, "n": len(request.doc["updates"]), "nModified": len(request.doc["updates"])})

    ops = [entry("u", "db.c", {"_id": "A", "u": 3}, o2={"_id": "A"}),
           entry("u", "db.c", {"_id": "B", "u": 1}, o2={"_id": "B"}),
           entry("u", "db.c", {"_id": "A", "u": 2}, o2={"_id": "A"})]
    result, received = mock.run({"update": update}, ops, mode="crud")
    updates = [doc for name, doc in received if name == "update"]
    assert [(u["ordered"], [dict(s["u"]) for s in u["updates"]]) for u in updates] == [
        (False, [{"_id": "A", "u": 2}, {"_id": "B", "u": 1}]),
        (True, [{"_id": "A", "u": 3}, {"_id": "B", "u": 1}, {"_id": "A", "u": 2}])]
    assert result["applied"] == 3


# --------------------------------------------------------------------------- crud mode: commands

def test_protocol_crud_commands_as_sent(mock):
    """Each command as the oplog holds it, in order, minus what the target must not get:
    dropTarget as a boolean (the oplog holds a UUID), collMod without noPadding (a collMod left
    with nothing is not sent), no dbCheck; a rename whose source is gone is skipped."""
    def rename(request):
        if request.doc["renameCollection"] == "db.gone":
            request.command_err(code=26, errmsg="Source collection db.gone does not exist", codeName="NamespaceNotFound")
        else:
            request.ok()

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
    result, received = mock.run({"renameCollection": rename}, ops, mode="crud")
    assert [(doc["$db"], plain(doc)) for _name, doc in received] == [
        ("db", {"create": "b", "capped": True, "size": 4096}),
        ("admin", {"renameCollection": "db.a", "to": "db.r", "dropTarget": True}),
        ("db", {"collMod": "r", "validator": {}}),
        ("db", {"convertToCapped": "r", "size": 100000}),
        ("db", {"emptycapped": "r"}),
        ("db", {"drop": "b"}),
        ("admin", {"renameCollection": "db.gone", "to": "db.x", "dropTarget": False}),
        ("other", {"dropDatabase": 1})]
    assert result["skipped"] == {"ignored_command": 1, "rename_source_missing": 1}
    assert result["applied_by_op"] == {"c": 7}


def test_protocol_collmod_of_an_index_the_catalog_does_not_know_goes_to_the_server(mock):
    entries = list(readers.iter_oplog_file(os.path.join(RESTORE_DATA, "oplogs", "bson", "collMod.bson")))
    result, received = mock.run({}, entries, mode="crud")
    assert [(doc["$db"], plain(doc)) for _name, doc in received] == [
        ("test", {"collMod": "foo", "index": {"name": "f_1", "expireAfterSeconds": 3600}})]
    assert result["index_catalog"] == {} and result["applied_by_op"] == {"c": 1}


def test_protocol_rename_with_drop_target_moves_the_catalog(mock):
    """dropTarget forgets the target's catalog indexes; the source's follow it to the new name."""
    catalog = {"db.r": {"x_1": {"v": 2, "key": {"x": 1}, "name": "x_1"}},
               "db.a": {"y_1": {"v": 2, "key": {"y": 1}, "name": "y_1"}}}
    result, _received = mock.run({}, [
        entry("c", "admin.$cmd", {"renameCollection": "db.a", "to": "db.r", "dropTarget": UUID})],
        mode="crud", index_catalog=catalog)
    assert result["index_catalog"] == {"db.r": catalog["db.a"]}
