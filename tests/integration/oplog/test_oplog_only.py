"""Oplog-only restore (issue 11), against real servers: a target holding the source's state at t0 (what a
restored snapshot is), then the archived slices from t0 replayed up to T give the source just before T.

The "snapshot" here is the source's data copied to a second server while no write runs, with t0 the newest
oplog time at that moment: what fsync lock + volume snapshot + restore produce, minus the volumes.
"""

import pytest

import os

from support import run_module_task, run_project_playbook_with, start_test_server

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog import pitr
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog.store import Catalog
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.timestamps import ts_text
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import archiver
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.snapshots.record import (
    SnapshotSet, record_snapshot_set)

RESTORE = "dbops.mongodb_backup.mongodb_restore"


@pytest.fixture
def target_server(tmp_path_factory):
    server = start_test_server(tmp_path_factory, "snapshot-target")
    yield server
    server.stop()


def newest_ts(client):
    entry = client.local["oplog.rs"].find_one(sort=[("$natural", -1)])
    return entry["ts"]


def documents(client):
    return sorted(client.shop.orders.find(), key=lambda d: str(d["_id"]))


def workload(client, start, count):
    for n in range(start, start + count):
        if n % 3 == 0:
            client.shop.orders.insert_one({"_id": 1000 + n, "v": n})
        elif n % 3 == 1:
            client.shop.orders.update_one({"_id": n % 50}, {"$set": {"v": -n}, "$inc": {"seen": 1}})
        else:
            client.shop.orders.delete_one({"_id": (n * 7) % 50})


@pytest.fixture
def snapshot_bed(private_server, target_server, tmp_path):
    """Source with data; the target holding its state at t0; a snapshot set recorded with t0; writes after t0
    archived in slices. Returns (source client, target, root, t0, T, the source's documents just before T)."""
    source = private_server.client()
    source.shop.orders.insert_many([{"_id": i, "v": i} for i in range(50)])
    t0 = newest_ts(source)
    target = target_server.client()
    target.shop.orders.insert_many(documents(source))  # the snapshot's data, restored on the target
    root = tmp_path / "backups" / "localhost"  # as playbooks/backup.yml lays it out for the host localhost
    (root / "snap-t0.partial").mkdir(parents=True)
    (root / "snap-t0.partial" / "WiredTiger").write_text("the data files copied off the LVM snapshot")
    facts = client_utils.server_facts(source)
    record_snapshot_set(str(root), SnapshotSet(
        "lvm", "snap-t0", replica_set=facts["replica_set"], oplog_ts=ts_text(t0), files="snap-t0.partial"))
    workload(source, 0, 150)
    expected = documents(source)
    source.shop.orders.insert_one({"_id": "at-T"})
    limit = newest_ts(source)  # T: the first write the restore must not hold
    workload(source, 150, 60)
    archiver.archive_oplog(source, archiver.ArchiveOptions(str(root), span_seconds=1), facts)
    yield source, target, str(root), t0, limit, expected, facts
    source.close()
    target.close()


def test_slices_replayed_from_the_snapshot_time_give_the_source_just_before_t(
        snapshot_bed, target_server, tmp_path):
    source, target, root, t0, limit, expected, facts = snapshot_bed
    catalog = Catalog.load(root)
    assert catalog.last_archived_ts(facts["replica_set"]) is not None
    plan = pitr.restore_plan(catalog, ts_text(limit), facts["replica_set"])
    assert plan["backup"]["kind"] == "snapshot" and plan["backup"]["oplog_end"] == ts_text(t0)
    info = run_module_task(tmp_path, "dbops.mongodb_backup.mongodb_backup_info", backup_root=root,
                           target_time=ts_text(limit))
    assert [(w["backup_label"], w["start_ts"]) for w in info["windows"]] == [("snap-t0", ts_text(t0))]
    assert info["restore_plan"]["backup"]["label"] == "snap-t0"

    planned = run_module_task(tmp_path, RESTORE, check=True, server=target_server, oplog_only=True,
                              oplog_start=plan["backup"]["oplog_end"],
                              oplog_slices=[s["path"] for s in plan["slices"]], oplog_limit=plan["oplog_limit"])
    assert not planned.get("failed"), planned
    assert documents(target) == sorted(({"_id": i, "v": i} for i in range(50)), key=lambda d: str(d["_id"]))

    result = run_module_task(tmp_path, RESTORE, server=target_server, oplog_only=True,
                             oplog_start=plan["backup"]["oplog_end"],
                             oplog_slices=[s["path"] for s in plan["slices"]], oplog_limit=plan["oplog_limit"])
    assert not result.get("failed"), result
    assert result["changed"] and result["oplog"]["stopped_at_limit"]
    assert result["oplog"]["skipped"]["at_or_before_start"] >= 1  # the slice starts at t0, which the base holds
    assert documents(target) == expected


def test_the_pitr_playbook_restores_the_snapshot_base_then_replays_to_just_before_t(
        snapshot_bed, target_server, tmp_path):
    source, target, root, t0, limit, expected, facts = snapshot_bed
    dbpath = tmp_path / "dbpath"
    dbpath.mkdir()
    code, out = run_project_playbook_with("pitr_restore.yml", target_server, {
        "backup_root": os.path.dirname(root), "target_time": ts_text(limit), "snapshot_restore_dbpath": str(dbpath)},
        tmp_path)
    assert code == 0, out
    assert (dbpath / "WiredTiger").read_text() == "the data files copied off the LVM snapshot"
    assert documents(target) == expected


def test_a_base_older_than_the_first_slice_is_refused_before_anything_is_written(
        snapshot_bed, target_server, tmp_path):
    source, target, root, t0, limit, expected, facts = snapshot_bed
    slices = [Catalog.load(root).absolute(s["file"]) for s in Catalog.load(root).slices_of(facts["replica_set"])]
    before = documents(target)
    result = run_module_task(tmp_path, RESTORE, server=target_server, oplog_only=True,
                             oplog_start="%d:1" % (t0.time - 3600), oplog_slices=slices)
    assert result.get("failed") and "the entries in between were never archived" in result["msg"], result
    assert "nothing was replayed" in result["msg"] and documents(target) == before


def test_data_options_with_oplog_only_are_refused_naming_them(target_server, tmp_path):
    result = run_module_task(tmp_path, RESTORE, server=target_server, oplog_only=True, oplog_start="1700000000:1",
                             oplog_slices=["/nonexistent"], drop=True, db="shop")
    assert result.get("failed") and "restores no data; remove db, drop" in result["msg"], result
    result = run_module_task(tmp_path, RESTORE, server=target_server, oplog_start="1700000000:1",
                             source=str(tmp_path))
    assert result.get("failed") and "set oplog_only: true" in result["msg"], result
