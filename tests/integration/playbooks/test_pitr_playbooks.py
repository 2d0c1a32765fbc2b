"""End to end through ansible-playbook: full backup, oplog archiving, point-in-time restores."""

import json
import threading
import time

import bson
import pytest

import testserver
from support import run_playbook, run_project_playbook


def playbook(name, server, extra_vars, tmp_path, check=False):
    vars_file = tmp_path / ("%s.vars.json" % name)
    vars_file.write_text(json.dumps(extra_vars))
    return run_project_playbook(name, server, vars_file, check=check)


def write(client, start, count):
    for n in range(start, start + count):
        client.shop.orders.insert_one({"_id": n, "total": n})
        if n % 3 == 0:
            client.shop.orders.update_one({"_id": n // 2}, {"$set": {"total": -n}})
        if n % 5 == 0:
            client.shop.orders.delete_one({"_id": n // 3})


def state_and_target(client):
    """The data now, and the target just after the newest oplog entry (restores exactly this state)."""
    newest = client.local["oplog.rs"].find_one({}, sort=[("$natural", -1)])["ts"]
    return list(client.shop.orders.find().sort("_id", 1)), "%d:%d" % (newest.time, newest.inc + 1)


class Workload(threading.Thread):
    """Writes continuously (inserts, $set/$inc/$unset/$push updates, replacements, upserts, deletes)
    to collections keyed by int, ObjectId and string _ids, in two databases. Once ``notes`` is set,
    it also writes to crm.notes, a collection that did not exist at the full backup.

    ``checkpoint()`` holds the writer between two writes and returns every collection as it is
    then, with the target that restores exactly that state (just after the newest oplog entry).
    """

    COLLECTIONS = (("shop", "orders"), ("shop", "events"), ("crm", "users"))
    COMPARED = COLLECTIONS + (("crm", "notes"),)

    def __init__(self, client):
        super().__init__(daemon=True)
        self.client = client
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.notes = threading.Event()
        self.error = None
        self.operations = 0
        self.event_ids = []
        for database, collection in self.COLLECTIONS:  # all exist before the full backup
            client[database][collection].insert_one({"_id": "seed", "n": 0})

    def run(self):
        n = 0
        try:
            while not self.stopping.is_set():
                with self.lock:
                    self.write(n)
                    self.operations += 1
                n += 1
                time.sleep(0.01)
        except Exception as exc:  # reported by stop()
            self.error = exc

    def write(self, n):
        orders, events, users = (self.client[d][c] for d, c in self.COLLECTIONS)
        kind = n % 6
        if kind == 0:
            orders.insert_one({"_id": n, "total": n, "lines": [{"sku": "a%d" % n, "qty": 1}]})
        elif kind == 1:
            orders.update_one({"_id": n - 7}, {"$set": {"total": -n}, "$inc": {"edits": 1}})
        elif kind == 2:
            event_id = bson.ObjectId()
            self.event_ids.append(event_id)
            events.insert_one({"_id": event_id, "n": n, "tags": ["new"]})
            if self.notes.is_set():
                self.client.crm.notes.insert_one({"_id": n, "text": "note %d" % n})
        elif kind == 3:
            if self.event_ids:
                events.update_one({"_id": self.event_ids[n % len(self.event_ids)]},
                                  {"$push": {"tags": "seen-%d" % n}, "$unset": {"n": ""}})
            users.update_one({"_id": "user-%d" % (n % 13)}, {"$set": {"last": n}, "$inc": {"visits": 1}},
                             upsert=True)
        elif kind == 4:
            orders.replace_one({"_id": n - 16}, {"total": 0, "replaced_at": n})
        else:
            orders.delete_one({"_id": n - 23})
            if n % 4 == 1 and self.event_ids:
                events.delete_one({"_id": self.event_ids.pop(0)})

    def checkpoint(self):
        with self.lock:
            newest = self.client.local["oplog.rs"].find_one({}, sort=[("$natural", -1)])["ts"]
            return snapshot(self.client), "%d:%d" % (newest.time, newest.inc + 1)

    def stop(self):
        self.stopping.set()
        self.join()
        if self.error is not None:
            raise self.error


def snapshot(client):
    return dict(("%s.%s" % (d, c), list(client[d][c].find().sort("_id", 1))) for d, c in Workload.COMPARED)


def wait_for_writes(workload, count):
    wanted = workload.operations + count
    while workload.operations < wanted:
        assert workload.is_alive(), workload.error
        time.sleep(0.05)


def test_backup_archive_and_restore_to_points_in_time(private_server, tmp_path):
    client = private_server.client()
    root = tmp_path / "backups"
    root.mkdir()
    common = {"backup_root": str(root)}
    workload = Workload(private_server.client())
    workload.start()
    targets = {}
    try:
        wait_for_writes(workload, 30)
        code, out = playbook("backup.yml", private_server, dict(common, backup_label="full-1"), tmp_path)
        assert code == 0, out
        wait_for_writes(workload, 20)
        targets["just after the full backup, before any slice"] = workload.checkpoint()
        workload.notes.set()  # a collection the full backup does not have
        for run in range(3):
            wait_for_writes(workload, 30)
            if run == 1:
                targets["inside a later slice"] = workload.checkpoint()
            code, out = playbook("oplog_archive.yml", private_server, common, tmp_path)
            assert code == 0, out
    finally:
        workload.stop()
    targets["at the very end of the archived oplog"] = workload.checkpoint()
    code, out = playbook("oplog_archive.yml", private_server, common, tmp_path)
    assert code == 0, out

    catalog = json.loads((root / "localhost" / "catalog.json").read_text())
    backup, slices = catalog["backups"][0], catalog["slices"]
    assert len(slices) >= 4
    assert backup["oplog_start"] != backup["oplog_end"], "the workload did not write during the full backup"
    end_state, end_target = targets["at the very end of the archived oplog"]
    last_ts = tuple(int(p) for p in slices[-1]["last_ts"].split(":"))
    assert end_target == "%d:%d" % (last_ts[0], last_ts[1] + 1)  # the archived window ends at the newest entry

    code, out = playbook("backup.yml", private_server, dict(common, backup_label="full-1"), tmp_path)
    assert code == 0 and "already complete at" in out, out  # same label: nothing changes

    # A full backup is consistent only at the end of its own oplog: a target inside the dump is refused.
    client.shop.orders.insert_one({"_id": "marker"})
    code, out = playbook("pitr_restore.yml", private_server, dict(common, target_time=backup["oplog_end"]), tmp_path)
    assert code != 0 and "restores only to the end of its own oplog" in out and "full-1" in out, out
    assert client.shop.orders.find_one({"_id": "marker"}) is not None

    # check mode plans and says what it would drop, and writes nothing
    client.shop.created_after_the_target.insert_one({"_id": "check"})
    code, out = playbook("pitr_restore.yml", private_server, dict(common, target_time=end_target), tmp_path,
                         check=True)
    assert code == 0 and "(check mode, nothing was written)" in out, out
    assert "dropped first: crm.notes, shop.created_after_the_target" in out, out
    assert client.shop.orders.find_one({"_id": "marker"}) is not None

    for name, (state, target) in targets.items():
        client.shop.orders.insert_one({"_id": "drift-%s" % target})  # drift that the restore must undo
        client.crm.users.delete_many({})
        client.shop.created_after_the_target.insert_one({"_id": 1})
        code, out = playbook("pitr_restore.yml", private_server, dict(common, target_time=target), tmp_path)
        assert code == 0, out
        assert "replayed the oplog to just before %s" % target in out, out
        restored = snapshot(client)
        assert "shop.created_after_the_target" not in client.shop.list_collection_names()
        for namespace in state:
            assert restored[namespace] == state[namespace], "%s differs after the restore %s (%s)" % (
                namespace, name, target)

    # a corrupt slice: refused before anything is written
    slice_path = root / "localhost" / slices[-1]["file"]
    slice_path.write_bytes(slice_path.read_bytes()[:-5] + b"XXXXX")
    client.shop.orders.insert_one({"_id": "marker-2"})
    code, out = playbook("pitr_restore.yml", private_server, dict(common, target_time=end_target), tmp_path)
    assert code != 0 and "is corrupt" in out, out
    assert client.shop.orders.find_one({"_id": "marker-2"}) is not None


@pytest.fixture
def small_oplog_server(tmp_path_factory):
    """A server whose oplog keeps only its newest 60 entries, trimmed every second."""
    server = testserver.start_server(str(tmp_path_factory.mktemp("small-oplog")), capped_cleanup_seconds=1)
    try:
        if server.kind == "mongod":
            pytest.skip("mongod's oplog cannot be capped below 990 MB: a rollover cannot be forced quickly")
        server.ensure_oplog(max_entries=60)
        yield server
    finally:
        server.stop()


def ts_tuple(text):
    return tuple(int(part) for part in text.split(":"))


def wait_for_rollover(client, past_ts, timeout=30):
    """Until the oldest entry left in the oplog is newer than ``past_ts``."""
    deadline = time.time() + timeout
    while client.local["oplog.rs"].find_one({}, sort=[("$natural", 1)])["ts"] <= past_ts:
        assert time.time() < deadline, "the capped oplog was not trimmed"
        time.sleep(0.5)


def test_gap_is_detected_reported_and_refused(small_oplog_server, tmp_path):
    server = small_oplog_server
    client = server.client()
    root = tmp_path / "backups"
    root.mkdir()
    common = {"backup_root": str(root)}
    write(client, 0, 20)
    code, out = playbook("backup.yml", server, dict(common, backup_label="full-1"), tmp_path)
    assert code == 0, out
    write(client, 20, 10)
    code, out = playbook("oplog_archive.yml", server, common, tmp_path)
    assert code == 0, out
    archived = client.local["oplog.rs"].find_one({}, sort=[("$natural", -1)])["ts"]
    write(client, 30, 60)  # far more than the oplog keeps: entries after the archived one roll off
    wait_for_rollover(client, archived)
    _state, target = state_and_target(client)
    code, out = playbook("oplog_archive.yml", server, common, tmp_path)
    assert code != 0 and "oplog gap" in out and "take a new full backup" in out, out

    info_file = tmp_path / "info.json"
    code, out = run_playbook(INFO_PLAYBOOK % {"root": root / "localhost", "out": info_file}, tmp_path)
    assert code == 0, out
    info = json.loads(info_file.read_text())
    assert info["gaps"] and info["gaps"][0]["last_archived_ts"] == "%d:%d" % (archived.time, archived.inc)
    assert info["windows"] and all(ts_tuple(w["end_ts"]) <= (archived.time, archived.inc) for w in info["windows"])

    client.shop.orders.insert_one({"_id": "marker"})
    code, out = playbook("pitr_restore.yml", server, dict(common, target_time=target), tmp_path)
    assert code != 0 and "oplog gap" in out, out
    assert client.shop.orders.find_one({"_id": "marker"}) is not None  # the target was not touched


INFO_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - dbops.mongodb_backup.mongodb_backup_info:
        backup_root: "%(root)s"
      register: info
    - ansible.builtin.copy:
        content: "{{ info | to_json }}"
        dest: "%(out)s"
"""
