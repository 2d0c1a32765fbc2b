"""The sharded_backup role over the wire: a mockupdb mongos whose shards cannot be reached, so the
backup fails after the balancer was stopped; the balancer must be running again afterwards."""

import os

import pytest

from cluster_bed import MockMongos
from support import run_project_playbook_with

pytestmark = pytest.mark.protocol


def test_a_shard_that_fails_after_the_balancer_was_stopped_leaves_it_started_again(tmp_path):
    mongos = MockMongos({"shardA": "shardA/127.0.0.1:1", "shardB": "shardB/127.0.0.1:2"},
                        "configRS/127.0.0.1:3", mode="full")
    root = tmp_path / "backups"
    (root / "prod").mkdir(parents=True)
    try:
        code, out = run_project_playbook_with("backup_sharded.yml", mongos, {
            "backup_root": str(root), "backup_cluster_name": "prod", "backup_label": "broken"}, tmp_path)
        assert code != 0
        assert "cannot reach" in out
        names = mongos.names()
        assert "balancerStop" in names and names.index("balancerStop") < names.index("balancerStart")
        assert mongos.mode == "full"
        assert os.listdir(str(root / "prod")) in ([], ["broken.lock"])
    finally:
        mongos.stop()
