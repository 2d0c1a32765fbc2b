"""The cut on one shard, over the wire: mockupdb answers as a shard member whose oplog holds
prepared transactions around the cut, and the no-op note that moves an idle oplog forward."""

import io
import threading

import bson
import pytest
from mockupdb import MockupDB

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.cluster.cut import (
    OplogCut, PreparedTransactions)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import ClusterError
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.bsonio import AS_DICT
from cluster_bed import CUT, abort, commit, insert, prepare

pytestmark = pytest.mark.protocol

HELLO = {"maxWireVersion": 21, "minWireVersion": 0, "isWritablePrimary": False, "secondary": True,
         "setName": "shardA", "hosts": ["a1:27018"]}


class ShardOplog:
    """A shard member's oplog as find answers it; appendOplogNote adds a no-op entry ``note_inc``
    increments after the newest."""

    def __init__(self, entries, note_inc=1):
        self.entries = list(entries)
        self.note_inc = note_inc
        self.notes = []
        self.lock = threading.Lock()
        self.server = MockupDB(auto_ismaster=HELLO)
        self.server.autoresponds("ping")
        self.server.autoresponds(self._handle)
        self.server.run()

    def _handle(self, request):
        name = request.command_name
        if name == "find" and request.doc.get("find") == "oplog.rs":
            with self.lock:
                entries = list(self.entries)
            after = ((request.doc.get("filter") or {}).get("ts") or {}).get("$gt")
            if after is not None:
                entries = [e for e in entries if (e["ts"].time, e["ts"].inc) > (after.time, after.inc)]
            if (request.doc.get("sort") or {}).get("$natural") == -1:
                entries = entries[::-1]
            if request.doc.get("limit"):
                entries = entries[:abs(request.doc["limit"])]
            return request.ok(cursor={"id": bson.Int64(0), "ns": "local.oplog.rs", "firstBatch": entries})
        if name == "appendOplogNote":
            with self.lock:
                self.notes.append(request.doc["data"])
                newest = self.entries[-1]["ts"]
                if self.note_inc:  # 0: a member whose clock lags, so no note gets past the newest entry
                    self.entries.append({"ts": bson.Timestamp(newest.time, newest.inc + self.note_inc),
                                         "op": "n", "ns": "", "o": {"msg": request.doc["data"]}})
            return request.ok()
        return False


@pytest.fixture
def shard():
    started = []

    def start(entries, note_inc=1):
        oplog = ShardOplog(entries, note_inc)
        started.append(oplog)
        options = client_utils.ConnectionOptions(uri=oplog.server.uri, connect_timeout=3, direct_connection=True)
        client = client_utils.connect(options)
        started.append(client)
        return oplog, OplogCut("shardA", client, "a1:27018", poll_interval=0.01)
    yield start
    for thing in started:
        (thing.server.stop if isinstance(thing, ShardOplog) else thing.close)()


def _split(data):
    out, offset = [], 0
    while offset < len(data):
        size = int.from_bytes(data[offset:offset + 4], "little")
        out.append(data[offset:offset + size])
        offset += size
    return out


def test_the_capture_stops_at_the_first_entry_at_the_cut_then_takes_only_the_commits_still_open(shard):
    dump_oplog = [insert(1, "shop", "in-dump"), prepare(3, "shop", 1, ["t1"])]
    after_dump = [insert(5, "shop", "before-cut"), prepare(10, "shop", 2, ["t2"]), insert(20, "shop", "at-cut"),
                  insert(21, "shop", "after-cut"), commit(22, 1, 4, 3), commit(23, 2, 21, 10),
                  insert(24, "shop", "later")]
    _oplog, cut = shard(dump_oplog + after_dump)
    prepared = PreparedTransactions()
    for entry in dump_oplog:
        prepared.feed(entry)
    sink = io.BytesIO()
    captured = cut.capture(dump_oplog[-1]["ts"], CUT, prepared, sink, timeout=2)
    entries = [bson.decode(raw, codec_options=AS_DICT) for raw in _split(sink.getvalue())]
    assert [e["ts"].inc for e in entries] == [5, 10, 20, 22, 23]
    assert captured["entries"] == 5 and captured["last"].inc == 23
    assert prepared.pending == {}


def test_a_transaction_prepared_before_the_cut_and_never_resolved_fails_the_capture_naming_it(shard):
    entries = [insert(1, "shop", "x"), prepare(7, "shop", 1, ["t1"]), insert(20, "shop", "at-cut")]
    _oplog, cut = shard(entries)
    with pytest.raises(ClusterError) as failure:
        cut.capture(entries[0]["ts"], CUT, PreparedTransactions(), io.BytesIO(), timeout=0.2)
    assert "prepared at %d:7" % CUT.time in failure.value.message
    assert "neither committed nor aborted" in failure.value.message


def test_an_aborted_transaction_is_resolved_by_its_abort_after_the_cut(shard):
    entries = [insert(1, "shop", "x"), prepare(7, "shop", 1, ["t1"]), insert(20, "shop", "at-cut"),
               abort(30, 1, 7)]
    _oplog, cut = shard(entries)
    sink = io.BytesIO()
    cut.capture(entries[0]["ts"], CUT, PreparedTransactions(), sink, timeout=2)
    assert [bson.decode(raw)["ts"].inc for raw in _split(sink.getvalue())] == [7, 20, 30]


def test_an_idle_oplog_is_moved_to_the_cut_with_append_oplog_note(shard):
    oplog, cut = shard([insert(1, "shop", "x")], note_inc=25)
    sink = io.BytesIO()
    captured = cut.capture(_ts1(), CUT, PreparedTransactions(), sink, timeout=2)
    assert oplog.notes and oplog.notes[0]["cut"] == CUT
    assert captured["entries"] == 1 and (captured["last"].time, captured["last"].inc) >= (CUT.time, CUT.inc)


def test_an_oplog_that_never_reaches_the_cut_fails_naming_the_shard_and_the_newest_entry(shard):
    oplog, cut = shard([insert(1, "shop", "x"), insert(2, "shop", "y")], note_inc=0)
    with pytest.raises(ClusterError) as failure:
        cut.capture(_ts1(), CUT, PreparedTransactions(), io.BytesIO(), timeout=0.2)
    assert "shardA" in failure.value.message and "newest entry %d:2" % CUT.time in failure.value.message
    assert oplog.notes


def _ts1():
    return bson.Timestamp(CUT.time, 1)
