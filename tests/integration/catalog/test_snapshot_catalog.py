"""mongodb_backup_catalog's snapshot option through ansible-playbook, as a role calls it (issue 11)."""

import json
import os

from support import run_module_task

CATALOG = "dbops.mongodb_backup.mongodb_backup_catalog"
SNAPSHOTS = [{"snapshot_id": "snap-0a", "volume_id": "vol-0a", "device": "/dev/sdf", "volume_size": 8}]


def test_a_snapshot_set_is_recorded_once_with_diff_and_check_mode(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    snapshot = {"provider": "ebs", "label": "snap-1", "snapshot_set": "0f0e", "replica_set": "rs0",
                "member": "db3:27017", "oplog_ts": "1700000100:3", "snapshots": SNAPSHOTS}
    planned = run_module_task(tmp_path, CATALOG, check=True, backup_root=str(root), snapshot=snapshot)
    assert planned["changed"] and os.listdir(str(root)) == []
    first = run_module_task(tmp_path, CATALOG, backup_root=str(root), snapshot=snapshot)
    assert first["changed"] and [a["label"] for a in first["added"]] == ["snap-1"]
    assert first["backups"][0]["kind"] == "snapshot" and first["backups"][0]["oplog_end"] == "1700000100:3"
    again = run_module_task(tmp_path, CATALOG, backup_root=str(root), snapshot=snapshot)
    assert not again["changed"] and again["added"] == []
    assert json.loads((root / "snap-1" / "manifest.json").read_text())["snapshot"]["snapshots"] == SNAPSHOTS


def test_a_typo_in_the_snapshot_dict_is_refused_by_name(tmp_path):
    result = run_module_task(tmp_path, CATALOG, backup_root=str(tmp_path), snapshot={
        "provider": "ebs", "label": "snap-1", "oplog_time": "1700000100:3", "snapshots": SNAPSHOTS})
    assert result.get("failed") and "oplog_time" in result["msg"], result
    assert not (tmp_path / "snap-1").exists()
