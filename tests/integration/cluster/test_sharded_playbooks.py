"""backup_sharded.yml and restore_sharded.yml as an operator runs them, against the cluster bed: the
balancer goes back to the state it was found in, whatever fails."""

import os

from support import load_result, run_module_task, run_project_playbook_with, start_test_server
from cluster_bed import shard_uris


def _seed_notes(servers):
    """crm.notes: 20 documents on each shard, under ids of its own."""
    for name in ("shardA", "shardB"):
        client = servers[name].client()
        client.crm.notes.delete_many({})
        client.crm.notes.insert_many([{"_id": "%s-%d" % (name, n), "text": "note %d" % n} for n in range(20)])
        client.close()


def test_backup_sharded_then_restore_sharded_into_one_replica_set(cluster, tmp_path, tmp_path_factory):
    servers, mongos = cluster
    _seed_notes(servers)
    mongos.mode = "full"
    root = tmp_path / "backups"
    (root / "prod").mkdir(parents=True)
    settings = {"backup_root": str(root), "backup_cluster_name": "prod", "backup_label": "weekly",
                "backup_shard_uris": shard_uris(servers)}
    try:
        code, out = run_project_playbook_with("backup_sharded.yml", mongos, settings, tmp_path, check=True)
        assert code == 0, out
        assert "would back up 2 shards" in out
        assert not os.path.exists(str(root / "prod" / "weekly"))
        assert "balancerStop" not in mongos.names()

        code, out = run_project_playbook_with("backup_sharded.yml", mongos, settings, tmp_path)
        assert code == 0, out
        names = mongos.names()
        assert names.index("balancerStop") < names.index("balancerStart")
        assert mongos.mode == "full"  # running before, running after
        for secret in (servers["shardA"].password, servers["config"].password):
            assert secret not in out
    finally:
        mongos.mode = "off"
    catalog = load_result(str(root / "prod" / "catalog.json"))
    assert [(b["label"], b["kind"], b["shards"]) for b in catalog["backups"]] == [
        ("weekly", "sharded", ["shardA", "shardB"])]
    info = run_module_task(tmp_path, "dbops.mongodb_backup.mongodb_backup_info", backup_root=str(root / "prod"))
    assert info["failed"] is False
    assert [(b["label"], b["cut"]) for b in info["backups"]] == [("weekly", catalog["backups"][0]["cut"])]

    target = start_test_server(tmp_path_factory, "playbook-target")
    try:
        code, out = run_project_playbook_with("restore_sharded.yml", target, {  # a replica set, no mongos
            "restore_source": str(root / "prod" / "weekly"), "restore_mode": "through_mongos",
            "restore_manage_balancer": False}, tmp_path)
        assert code == 0, out
        client = target.client()
        restored = sorted(doc["_id"] for doc in client.crm.notes.find())
        client.close()
        assert restored == sorted("%s-%d" % (name, n) for name in ("shardA", "shardB") for n in range(20))
    finally:
        target.stop()


def test_a_balancer_found_stopped_stays_stopped_after_the_backup(cluster, tmp_path):
    servers, mongos = cluster
    root = tmp_path / "backups"
    (root / "prod").mkdir(parents=True)
    code, out = run_project_playbook_with("backup_sharded.yml", mongos, {
        "backup_root": str(root), "backup_cluster_name": "prod", "backup_label": "quiet",
        "backup_shard_uris": shard_uris(servers)}, tmp_path)
    assert code == 0, out
    assert mongos.mode == "off"
    assert "balancerStart" not in mongos.names()[-10:]
