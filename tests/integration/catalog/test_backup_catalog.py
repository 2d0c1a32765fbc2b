"""mongodb_backup_catalog through ansible-playbook, over backups made by the real dump engine."""

import json
import os

import pytest

from support import run_module_task

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump as dump_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_options


@pytest.fixture
def sample(client):
    client.drop_database("bc_shop")
    client.bc_shop.orders.insert_many([{"_id": i, "total": i} for i in range(30)])
    yield client
    client.drop_database("bc_shop")


def take_backup(client, root, label, archive=False):
    target = str(root / (label + ".archive" if archive else label))
    options = dict(archive=target) if archive else dict(path=target)
    dump_engine.dump(client, dump_options.DumpOptions(oplog=True, label=label, ns_include=["bc_shop.*"], **options),
                     client_utils.server_facts(client))
    return target


def run_module(tmp_path, module="dbops.mongodb_backup.mongodb_backup_catalog", check=False, diff=False, **options):
    return run_module_task(tmp_path, module, check=check, diff=diff, **options)


def catalog_labels(root):
    return sorted(b["label"] for b in json.loads((root / "catalog.json").read_text())["backups"])


def test_present_adds_once_and_check_mode_writes_nothing(sample, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    first = take_backup(sample, root, "full-1")

    planned = run_module(tmp_path, check=True, backup_root=str(root), path="full-1")
    assert planned["changed"] is True and [a["label"] for a in planned["added"]] == ["full-1"]
    assert [b["label"] for b in planned["backups"]] == ["full-1"]  # the catalog as it would be
    assert not (root / "catalog.json").exists() and not (root / "catalog.lock").exists()

    added = run_module(tmp_path, diff=True, backup_root=str(root), path=first)
    assert added["changed"] is True and added["added"][0]["path"] == "full-1" and added["removed"] == []
    assert added["catalog"] == str(root / "catalog.json") and catalog_labels(root) == ["full-1"]
    assert added["diff"]["before"] == "" and added["diff"]["after"] == "full-1\n"
    assert os.stat(str(root / "catalog.json")).st_mode & 0o777 == 0o600

    mtime = os.stat(str(root / "catalog.json")).st_mtime_ns
    again = run_module(tmp_path, backup_root=str(root), path="full-1")
    assert again["changed"] is False and again["added"] == []
    assert os.stat(str(root / "catalog.json")).st_mtime_ns == mtime  # not rewritten when nothing changes


def test_present_without_path_adds_every_complete_backup_under_the_root(sample, tmp_path):
    root = tmp_path / "root"
    (root / "db1").mkdir(parents=True)
    take_backup(sample, root / "db1", "dir-1")
    take_backup(sample, root / "db1", "arch-1", archive=True)
    (root / "db1" / "unfinished.partial").mkdir()  # an interrupted dump is not a backup
    (root / "db1" / "no-manifest").mkdir()

    result = run_module(tmp_path, backup_root=str(root))
    assert result["changed"] is True
    assert sorted((a["label"], a["path"], a["format"]) for a in result["added"]) == [
        ("arch-1", os.path.join("db1", "arch-1.archive"), "archive"),
        ("dir-1", os.path.join("db1", "dir-1"), "directory")]
    assert catalog_labels(root) == ["arch-1", "dir-1"]
    assert run_module(tmp_path, backup_root=str(root))["changed"] is False


def test_absent_removes_by_label_or_path_and_keeps_the_files(sample, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    take_backup(sample, root, "old")
    take_backup(sample, root, "new")
    run_module(tmp_path, backup_root=str(root))
    assert catalog_labels(root) == ["new", "old"]

    planned = run_module(tmp_path, check=True, backup_root=str(root), label="old", state="absent")
    assert planned["changed"] is True and [r["label"] for r in planned["removed"]] == ["old"]
    assert catalog_labels(root) == ["new", "old"]  # check mode wrote nothing

    removed = run_module(tmp_path, diff=True, backup_root=str(root), label="old", state="absent")
    assert removed["changed"] is True and [b["label"] for b in removed["backups"]] == ["new"]
    assert removed["diff"] == dict(removed["diff"], before="new\nold\n", after="new\n")
    assert catalog_labels(root) == ["new"] and (root / "old" / "manifest.json").exists()
    assert run_module(tmp_path, backup_root=str(root), label="old", state="absent")["changed"] is False

    by_path = run_module(tmp_path, backup_root=str(root), path=str(root / "new"), state="absent")
    assert by_path["changed"] is True and catalog_labels(root) == []


def test_bad_input_fails_with_the_cause_and_writes_nothing(sample, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "half").mkdir()
    result = run_module(tmp_path, backup_root=str(root), path="half")
    assert result["failed"] is True and "is not a complete backup: it has no manifest" in result["msg"]
    result = run_module(tmp_path, backup_root=str(tmp_path / "not-mounted"))
    assert result["failed"] is True
    assert "does not exist or is not a directory; create it or mount the backup volume" in result["msg"]
    result = run_module(tmp_path, backup_root=str(root), state="absent")
    assert result["failed"] is True and "path, label" in result["msg"]
    result = run_module(tmp_path, backup_root=str(root), label="x", path="y", state="absent")
    assert result["failed"] is True and "mutually exclusive" in result["msg"]
    result = run_module(tmp_path, backup_root=str(root), label="x")
    assert result["failed"] is True and "label only selects entries to remove (state=absent)" in result["msg"]
    assert not (root / "catalog.json").exists()


def test_backup_info_never_writes_and_points_at_the_catalog_module(sample, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    take_backup(sample, root, "full-1")
    result = run_module(tmp_path, module="dbops.mongodb_backup.mongodb_backup_info",
                        backup_root=str(root), register_backups=["full-1"])
    assert result["failed"] is True and result["changed"] is False
    assert "register_backups was removed from mongodb_backup_info" in result["msg"]
    assert "dbops.mongodb_backup.mongodb_backup_catalog" in result["msg"]
    assert not (root / "catalog.json").exists() and not (root / "catalog.lock").exists()
    result = run_module(tmp_path, module="dbops.mongodb_backup.mongodb_backup_info", backup_root=str(root))
    assert result["changed"] is False and result["backups"] == []
    assert not (root / "catalog.json").exists() and not (root / "catalog.lock").exists()
