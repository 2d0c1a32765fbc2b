"""Retention of an EBS snapshot set against moto's EC2 server: the catalog entry and its record go, and the role's
role backup_retention deletes the snapshots through ebs_snapshot (state: absent)."""

import json

import pytest

import retention_bed
import support
from aws_bed import REGION

pytestmark = pytest.mark.protocol

RETENTION_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  module_defaults:
    dbops.mongodb_backup.ebs_snapshot:
      endpoint_url: {endpoint_url}
  tasks:
    - ansible.builtin.include_role:
        name: dbops.mongodb_backup.backup_retention
      vars:
        backup_retention_root: {root}
        backup_retention_policy: {{keep_last: 2}}
"""


def test_an_aged_out_ebs_set_is_deleted_in_the_cloud_by_the_role(moto, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    retention_bed.build(root, now="2024-05-01T12:00:00Z", days=2, with_files=False)
    instance_id, _volumes = moto.instance()
    taken = support.run_module_task(tmp_path, "dbops.mongodb_backup.ebs_snapshot", region=REGION,
                                    endpoint_url=moto.endpoint_url, poll_interval=0.05, label="snap-old",
                                    instance_id=instance_id, replica_set="rs0", oplog_ts="1704067140:1")
    assert taken["changed"] and len(moto.labelled("snap-old")) == 3, taken
    recorded = support.run_module_task(tmp_path, "dbops.mongodb_backup.mongodb_backup_catalog", backup_root=str(root),
                                       snapshot={"provider": "ebs", "label": "snap-old",
                                                 "snapshot_set": taken["snapshot_set"], "replica_set": "rs0",
                                                 "oplog_ts": "1704067140:1", "snapshots": taken["snapshots"],
                                                 "finished_at": "2024-01-01T00:00:00.000000Z"})
    assert recorded["changed"], recorded

    planned = support.run_module_task(tmp_path, "dbops.mongodb_backup.mongodb_backup_retention", check=True,
                                      backup_root=str(root), keep_last=2)
    assert planned["cloud_snapshot_sets"] == [{
        "provider": "ebs", "label": "snap-old", "backup_label": "snap-old", "snapshot_set": taken["snapshot_set"],
        "region": REGION, "snapshot_ids": [s["snapshot_id"] for s in taken["snapshots"]]}]

    code, out = support.run_playbook(RETENTION_PLAYBOOK.format(endpoint_url=moto.endpoint_url, root=root), tmp_path)
    assert code == 0, out
    assert "Retention: 1 backup(s)" in out and "1 cloud snapshot set(s) deleted" in out
    assert moto.labelled("snap-old") == []
    assert not (root / "snap-old").exists()
    assert [b["label"] for b in json.loads((root / "catalog.json").read_text())["backups"]] == [
        "daily-2024-04-30", "daily-2024-05-01"]
    assert "testing" not in out  # moto's dummy credentials never show
