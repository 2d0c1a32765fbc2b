"""mongodb_backup_info through ansible-playbook, over backups made by the real dump engine."""

import json
import os
import time

import bson
import pytest

from support import run_module_task

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump as dump_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_options
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog.store import Catalog


@pytest.fixture
def sample(client):
    client.drop_database("bi_shop")
    client.bi_shop.orders.insert_many([{"_id": i, "total": i} for i in range(50)])
    yield client
    client.drop_database("bi_shop")


def take_backup(client, root, label):
    path = str(root / label)
    dump_engine.dump(client, dump_options.DumpOptions(path=path, oplog=True, label=label, ns_include=["bi_shop.*"]),
                     client_utils.server_facts(client))
    return path


def run_info(tmp_path, check=False, **options):
    return run_module_task(tmp_path, "dbops.mongodb_backup.mongodb_backup_info", check=check, **options)


def register(root, path):
    """Add a backup to the catalog through the engine (the _info module never writes)."""
    with Catalog.locked(str(root)) as cat:
        cat.add_backup_from_manifest(path)
        cat.save()


def test_report_and_max_age(sample, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    first = take_backup(sample, root, "full-1")
    register(root, first)
    mtime = os.stat(str(root / "catalog.json")).st_mtime_ns

    result = run_info(tmp_path, backup_root=str(root), max_age="1h")
    assert not result.get("failed"), result
    assert result["changed"] is False and "registered" not in result
    (backup,) = result["backups"]
    manifest = json.loads((root / "full-1" / "manifest.json").read_text())
    assert backup["backup_id"] == manifest["backup_id"] and backup["path"] == "full-1"
    assert backup["oplog_end"] == manifest["oplog"]["end"]["ts"] and backup["bytes"] > 0
    assert result["last_backup"]["label"] == "full-1" and 0 <= result["last_backup"]["age_seconds"] < 3600
    (window,) = result["windows"]
    assert window["start_ts"] == window["end_ts"] == manifest["oplog"]["end"]["ts"]
    assert window["end_time"].endswith("Z") and result["total_bytes"] == backup["bytes"]
    assert os.stat(str(root / "catalog.json")).st_mode & 0o777 == 0o600

    assert os.stat(str(root / "catalog.json")).st_mtime_ns == mtime  # read, never written

    time.sleep(2.1)
    stale = run_info(tmp_path, backup_root=str(root), max_age="2s")
    assert stale["failed"] is True
    assert stale["msg"].startswith("newest complete backup full-1 finished at %s, " % manifest["finished_at"])
    assert stale["msg"].endswith(" ago, older than max_age 2s; check the backup schedule")
    assert stale["last_backup"]["label"] == "full-1" and len(stale["backups"]) == 1  # the data comes with the failure


def test_empty_root_fails_max_age_and_missing_root_fails(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    result = run_info(tmp_path, backup_root=str(root), max_age="26h")
    assert result["failed"] is True and "no complete backup is registered" in result["msg"]
    result = run_info(tmp_path, backup_root=str(tmp_path / "absent"))
    assert result["failed"] is True and "does not exist or is not a directory" in result["msg"]
    result = run_info(tmp_path, backup_root=str(root), max_age="soon")
    assert result["failed"] is True and "duration 'soon' is not valid" in result["msg"]


def test_restore_plan_through_a_real_oplog_slice(sample, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    path = take_backup(sample, root, "full-2")
    end = json.loads((root / "full-2" / "manifest.json").read_text())["oplog"]["end"]
    sample.bi_shop.orders.insert_many([{"_id": 100 + i} for i in range(5)])
    # a slice as capture writes it: the oplog from the backup's last entry (inclusive) onwards
    start = bson.Timestamp(end["t"], end["i"])
    entries = list(sample.local.oplog.rs.find({"ts": {"$gte": start}}).sort("$natural", 1))
    assert len(entries) >= 2
    slice_path = root / "oplog" / "slice-1.bson"
    slice_path.parent.mkdir()
    slice_path.write_bytes(b"".join(bson.encode(entry) for entry in entries))
    last = entries[-1]["ts"]
    replica_set = client_utils.server_facts(sample)["replica_set"]
    with Catalog.locked(str(root)) as cat:
        cat.add_backup_from_manifest(path)
        cat.add_slice(replica_set, start, last, str(slice_path), entries=len(entries))
        cat.save()

    target = "%d:%d" % (last.time, last.inc + 1)  # everything through the last archived entry
    result = run_info(tmp_path, backup_root=str(root), target_time=target)
    assert not result.get("failed"), result
    plan = result["restore_plan"]
    assert plan["backup"]["label"] == "full-2" and plan["oplog_limit"] == target
    assert [s["file"] for s in plan["slices"]] == [os.path.join("oplog", "slice-1.bson")]
    assert result["windows"][0]["end_ts"] == "%d:%d" % (last.time, last.inc)

    beyond = run_info(tmp_path, backup_root=str(root), target_time="%d" % (last.time + 3600))
    assert beyond["failed"] is True and "does not reach the target" in beyond["msg"]
    assert beyond["windows"] and "restore_plan" not in beyond
