"""Restore with oplog replay: real mongodump fixtures and a live workload, on the real test server."""

import os
import threading
import time

import pytest
from bson import Timestamp

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump as dump_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_options
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import window
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import restore as restore_engine

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TESTDATA = os.path.join(REPO, "..", "shared", "compat", "mongo-tools", "mongorestore", "testdata")
QA = os.path.join(REPO, "..", "shared", "compat", "mongo-tools", "test", "qa-tests", "jstests", "restore", "testdata")


def restore(client, source, **options):
    return restore_engine.restore(client, restore_engine.RestoreOptions(source=str(source), **options))


# --------------------------------------------------------------------------- real fixtures

def test_oplogdump_fixture_replays_nested_apply_ops(private_server):
    client = private_server.client()
    _c, result = restore(client, os.path.join(TESTDATA, "oplogdump"), require_manifest=False, oplog_replay=True, drop=True)
    assert sorted(d["x"] for d in client.db1.c1.find()) == list(range(1451, 1461))
    assert result["oplog"]["mode_used"] == ("crud" if private_server.kind == "ferretdb" else "applyops")


def test_oplog_limit_stops_before_the_limit(private_server):
    client = private_server.client()
    _c, result = restore(client, os.path.join(QA, "dump_with_oplog"), require_manifest=False, oplog_replay=True, drop=True,
                         oplog_limit="1416342266:0")
    assert result["oplog"]["stopped_at_limit"] is True
    assert client.test.data.count_documents({}) == 10 + 4  # 4 of the 5 oplog inserts come before the limit


def test_archive_with_oplog_is_idempotent_over_its_data(private_server):
    client = private_server.client()
    _c, result = restore(client, os.path.join(TESTDATA, "dump-w-oplog.archive"), require_manifest=False, oplog_replay=True, drop=True)
    assert client.test.foo.count_documents({}) == 25
    assert result["oplog"]["skipped"]  # the config.system.sessions entries


def test_duplicates_fixed_by_the_oplog_restore_with_their_unique_index(private_server):
    client = private_server.client()
    _c, result = restore(client, os.path.join(TESTDATA, "duplicate_index_key_with_oplog"), require_manifest=False, oplog_replay=True,
                         drop=True)
    assert client.test.foo.count_documents({}) == 1 and result["total_failed"] == 0
    unique = [ix for ix in client.test.foo.list_indexes() if ix["name"] == "a_1"]
    assert unique and unique[0]["unique"] is True


def test_timeseries_oplog_replay_gives_2164_measurements(private_server):
    client = private_server.client()
    if private_server.kind == "ferretdb":
        pytest.skip("FerretDB has no timeseries collections (the $v:2 replay itself is covered by "
                    "tests/unit/test_oplog_diff.py::test_real_timeseries_oplog_gives_2164_measurements)")
    restore(client, os.path.join(TESTDATA, "timeseries_tests", "ts_dump_with_oplog"), require_manifest=False, oplog_replay=True, drop=True)
    assert client.timeseries_test.foo_ts.count_documents({}) == 2164


def test_invalid_oplog_limit_is_rejected_before_anything(tmp_path):
    with pytest.raises(restore_engine.InvalidOption) as failure:
        restore_engine.RestoreOptions(source=str(tmp_path), oplog_replay=True, oplog_limit="123.456")
    assert "123.456" in failure.value.message and "ISO-8601" in failure.value.message


def test_oplog_replay_without_an_oplog_fails_clearly(private_server):
    client = private_server.client()
    with pytest.raises(restore_engine.InvalidOption, match="holds no oplog; take the dump with oplog: true"):
        restore(client, os.path.join(TESTDATA, "specialcharacter"), require_manifest=False, oplog_replay=True)


# --------------------------------------------------------------------------- live workload

class Workload:
    """Inserts, updates and deletes on pit.items until stopped; can be paused between writes."""

    def __init__(self, client):
        self.client = client
        self.running = threading.Event()
        self.running.set()
        self.idle = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        items = self.client.pit.items
        n = 0
        while not self.stop.is_set():
            if not self.running.is_set():
                self.idle.set()
                self.running.wait(0.05)
                continue
            self.idle.clear()
            items.insert_one({"_id": n, "v": n, "tags": ["t%d" % (n % 5)], "doc": {"k": n}})
            if n % 3 == 0 and n > 5:
                items.update_one({"_id": n - 5}, {"$set": {"v": -n, "doc.k": "changed"}, "$unset": {"tags": ""}})
            if n % 7 == 0 and n > 10:
                items.delete_one({"_id": n - 10})
            n += 1
        self.idle.set()

    def pause(self):
        self.running.clear()
        self.idle.wait(10)

    def resume(self):
        self.running.set()

    def snapshot(self):
        return list(self.client.pit.items.find().sort("_id", 1))


def newest_ts(client):
    return client.local["oplog.rs"].find_one({}, sort=[("$natural", -1)])["ts"]


def test_restore_with_replay_equals_the_state_at_the_dump_end_and_before_a_later_limit(
        private_server, tmp_path, monkeypatch):
    client = private_server.client()
    client.pit.items.insert_many([{"_id": -i, "v": i, "seed": True} for i in range(1, 2001)])
    workload = Workload(private_server.client())
    workload.thread.start()
    snapshots = {}
    original_close = window.OplogWindow.close

    def close_with_snapshot(window):
        # Pause writes so the state now is exactly the state at the window's end.
        workload.pause()
        try:
            snapshots["end"] = workload.snapshot()
            return original_close(window)
        finally:
            workload.resume()

    monkeypatch.setattr(window.OplogWindow, "close", close_with_snapshot)
    try:
        time.sleep(0.3)
        options = dump_options.DumpOptions(path=str(tmp_path / "pit"), oplog=True)
        _c, dumped = dump_engine.dump(client, options, client_utils.server_facts(client))
        time.sleep(0.3)
        workload.pause()
        snapshots["before_limit"] = workload.snapshot()
        last = newest_ts(client)
        limit = Timestamp(last.time, last.inc + 1)
        workload.resume()
        time.sleep(0.3)
    finally:
        workload.stop.set()
        workload.resume()
        workload.thread.join(10)
    assert dumped["oplog"]["entries"] > 1, "the workload wrote nothing during the dump"
    start = Timestamp(dumped["oplog"]["start"]["t"], dumped["oplog"]["start"]["i"])
    # The oplog from the dump's start onward, as later archiving would keep it (issue: PITR).
    oplog_file = tmp_path / "later-oplog.bson"
    with open(oplog_file, "wb") as handle:
        for batch in client.local["oplog.rs"].find_raw_batches({"ts": {"$gte": start}}):
            handle.write(batch)

    _c, result = restore(client, tmp_path / "pit", oplog_replay=True, drop=True)
    assert list(client.pit.items.find().sort("_id", 1)) == snapshots["end"]
    assert result["oplog"]["last_applied"] == dumped["oplog"]["end"]["ts"]

    _c, result = restore(client, tmp_path / "pit", oplog_replay=True, drop=True, oplog_file=str(oplog_file),
                         oplog_limit="%d:%d" % (limit.time, limit.inc))
    assert result["oplog"]["stopped_at_limit"] is True
    assert list(client.pit.items.find().sort("_id", 1)) == snapshots["before_limit"]
    assert len(snapshots["before_limit"]) != len(snapshots["end"]) or snapshots["before_limit"] != snapshots["end"]
