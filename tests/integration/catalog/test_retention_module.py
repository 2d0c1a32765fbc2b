"""mongodb_backup_retention through ansible-playbook, on a backup root of real backups (the dump engine against the
test server) and real oplog slices (the mongodb_oplog_archive module)."""

import json
import os

import pytest

from support import run_module_task

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog.store import Catalog
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.timestamps import ts_key
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump as dump_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_options

MODULE = "dbops.mongodb_backup.mongodb_backup_retention"


@pytest.fixture
def sample(client):
    client.drop_database("rt_shop")
    client.rt_shop.orders.insert_many([{"_id": i, "total": i} for i in range(40)])
    yield client
    client.drop_database("rt_shop")


def take_backup(client, root, label):
    target = str(root / label)
    dump_engine.dump(client, dump_options.DumpOptions(path=target, oplog=True, label=label, ns_include=["rt_shop.*"]),
                     client_utils.server_facts(client))
    with Catalog.locked(str(root)) as catalog:
        catalog.add_backup_from_manifest(target)
        catalog.save()
    return target


def listing(root):
    return sorted(os.listdir(str(root)))


def archive(server, tmp_path, root):
    archived = run_module_task(tmp_path, "dbops.mongodb_backup.mongodb_oplog_archive", server=server,
                               backup_root=str(root))
    assert archived.get("failed") is not True and archived["slices"], archived


@pytest.fixture
def root(sample, server, tmp_path):
    """Four real backups, with writes archived into real slices after the second and after the fourth."""
    root = tmp_path / "root"
    root.mkdir()
    for number in range(1, 5):
        sample.rt_shop.orders.insert_one({"_id": 100 + number})
        take_backup(sample, root, "rt-%d" % number)
        if number in (2, 4):
            sample.rt_shop.orders.insert_many([{"_id": 200 + 10 * number + i} for i in range(5)])
            archive(server, tmp_path, root)
    return root


@pytest.fixture
def plain_root(sample, tmp_path):
    """Four real backups, no slices."""
    root = tmp_path / "plain"
    root.mkdir()
    for number in range(1, 5):
        sample.rt_shop.orders.insert_one({"_id": 100 + number})
        take_backup(sample, root, "rt-%d" % number)
    return root


def test_check_mode_lists_then_the_run_deletes_the_files_and_keeps_the_window(root, tmp_path):
    before = listing(root)
    planned = run_module_task(tmp_path, MODULE, check=True, backup_root=str(root), keep_last=2)
    assert planned["changed"] is True
    assert [b["label"] for b in planned["deleted_backups"]] == ["rt-1", "rt-2"]
    assert [(b["label"], b["reasons"]) for b in planned["kept_backups"]] == [
        ("rt-3", ["keep_last 2"]), ("rt-4", ["keep_last 2"])]
    # the slices archived before rt-3's oplog end serve only the deleted backups; the rest is rt-3's window
    catalog = Catalog.load(str(root))
    rt3_end = ts_key(next(b for b in catalog.backups if b["label"] == "rt-3")["oplog_end"])
    assert [s["file"] for s in planned["deleted_slices"]] == [
        s["file"] for s in catalog.slices if ts_key(s["last_ts"]) <= rt3_end] != []
    assert [r["reasons"] for r in planned["kept_slices"]] == [["point-in-time window of backup rt-3"]]
    assert planned["kept_slices"][0]["count"] == len(catalog.slices) - len(planned["deleted_slices"])
    assert listing(root) == before and (root / "rt-1" / "manifest.json").exists()
    assert len(Catalog.load(str(root)).backups) == 4

    done = run_module_task(tmp_path, MODULE, backup_root=str(root), keep_last=2)
    assert done["changed"] is True
    assert done["deleted_backups"] == planned["deleted_backups"] and done["kept_backups"] == planned["kept_backups"]
    assert done["deleted_slices"] == planned["deleted_slices"]
    assert done["bytes_freed"] == sum(r["bytes"] for r in planned["deleted_backups"] + planned["deleted_slices"]) > 0
    assert not (root / "rt-1").exists() and not (root / "rt-2").exists()
    assert (root / "rt-3" / "manifest.json").exists() and (root / "rt-4" / "manifest.json").exists()
    catalog = json.loads((root / "catalog.json").read_text())
    assert [b["label"] for b in catalog["backups"]] == ["rt-3", "rt-4"] and "pending_deletions" not in catalog
    assert all((root / s["file"]).exists() for s in catalog["slices"])
    assert not any((root / s["file"]).exists() for s in planned["deleted_slices"])

    # the kept window still plans a restore to the last archived write
    info = run_module_task(tmp_path, "dbops.mongodb_backup.mongodb_backup_info", backup_root=str(root),
                           target_time=catalog["slices"][-1]["last_ts"])
    assert info["restore_plan"]["backup"]["label"] == "rt-4" and info["restore_plan"]["slices_verified"] >= 1

    again = run_module_task(tmp_path, MODULE, backup_root=str(root), keep_last=2)
    assert again["changed"] is False and again["deleted_backups"] == []


def test_a_killed_run_is_finished_by_the_next_one(plain_root, tmp_path):
    root = plain_root
    """The catalog written by a run killed before it removed any file: its entries gone, its files pending."""
    with Catalog.locked(str(root)) as catalog:
        gone = [b for b in catalog.backups if b["label"] == "rt-1"]
        catalog.document["backups"] = [b for b in catalog.backups if b["label"] != "rt-1"]
        catalog.document["pending_deletions"] = [{"what": "backup", "name": "rt-1", "paths": ["rt-1"],
                                                  "since": gone[0]["finished_at"], "bytes": gone[0]["bytes"]}]
        catalog.save()
    planned = run_module_task(tmp_path, MODULE, check=True, backup_root=str(root), keep_last=10)
    assert planned["changed"] is True and [p["name"] for p in planned["pending_deletions"]] == ["rt-1"]
    assert (root / "rt-1").is_dir()
    done = run_module_task(tmp_path, MODULE, backup_root=str(root), keep_last=10)
    assert done["changed"] is True and done["deleted_backups"] == [] and not (root / "rt-1").exists()
    assert "pending_deletions" not in json.loads((root / "catalog.json").read_text())


@pytest.mark.parametrize("options, message", [
    ({}, "the retention policy keeps nothing"),
    ({"keep_last": 0}, "the retention policy keeps nothing"),
    ({"keep_dialy": 7}, "Unsupported parameters for (dbops.mongodb_backup.mongodb_backup_retention) module: keep_dialy"),
    ({"keep_last": -1}, "retention setting keep_last=-1 is not a whole number of 0 or more"),
    ({"keep_last": 1, "now": "yesterday"}, "now 'yesterday' is not a UTC time as the catalog records them"),
    ({"keep_last": 1, "replica_set": "rs9"}, "holds no backup or oplog slice of replica set rs9 (it holds {sets})"),
])
def test_bad_policies_fail_and_delete_nothing(plain_root, tmp_path, options, message):
    root = plain_root
    before = listing(root)
    result = run_module_task(tmp_path, MODULE, backup_root=str(root), **options)
    assert result["failed"] is True and result["changed"] is False
    sets = ", ".join(str(n) for n in sorted(set(b["replica_set"] for b in Catalog.load(str(root)).backups)))
    assert message.format(sets=sets) in result["msg"]
    assert listing(root) == before and len(Catalog.load(str(root)).backups) == 4


def test_a_dump_being_written_is_left_alone(plain_root, tmp_path):
    root = plain_root
    staging = root / "rt-5.partial"  # a live dump's staging directory
    staging.mkdir()
    (staging / ".dbops-mongodb-backup-staging").write_text("{}")
    result = run_module_task(tmp_path, MODULE, backup_root=str(root), keep_last=1)
    assert [b["label"] for b in result["deleted_backups"]] == ["rt-1", "rt-2", "rt-3"]
    assert [p["path"] for p in result["in_progress"]] == ["rt-5.partial"] and staging.is_dir()
