"""The snapshot_backup role over the wire: lockable mock mongods (tests/fsync_bed.py), a mock mongos for the
balancer (tests/cluster_bed.py) and moto's EC2 server for the volumes. What a user notices: the snapshots with
their tags, the catalog entry, and every member unlocked and the balancer as it was, whatever failed."""

import json
import types

import pytest

from aws_bed import REGION
from cluster_bed import MockMongos
from fsync_bed import FsyncServer, replica_set_with
import support
from support import run_project_playbook_with

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog import pitr
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog.store import Catalog

pytestmark = pytest.mark.protocol


@pytest.fixture
def members():
    """Lockable members, each listing itself as the hidden member of its replica set."""
    started = []

    def make(**kwargs):
        member = FsyncServer(**kwargs)
        member.address = "%s:%d" % member.server.address
        member.replica_set = replica_set_with(member.address)
        started.append(member)
        return member

    yield make
    for member in started:
        member.stop()


def direct(server):
    """What run_project_playbook_with needs: the URI (a direct connection to the mock)."""
    return types.SimpleNamespace(uri=server.uri + "/?directConnection=true")


def run_role(tmp_path, connection, moto, **extra):
    root = tmp_path / "backups"
    root.mkdir(exist_ok=True)
    variables = {"backup_root": str(root), "backup_label": "snap-1", "snapshot_backup_provider": "ebs",
                 "snapshot_backup_aws_endpoint_url": moto.endpoint_url, "snapshot_backup_aws_region": REGION,
                 "snapshot_backup_poll_interval": 0.1}
    variables.update(extra)
    code, out = run_project_playbook_with("snapshot_backup.yml", connection, variables, tmp_path)
    return code, out, root


def test_replica_set_snapshot_is_tagged_recorded_as_a_pitr_base_and_unlocked(members, moto, tmp_path):
    member = members()
    instance_id, volumes = moto.instance()
    code, out, root = run_role(tmp_path, direct(member), moto,
                               snapshot_backup_volumes={member.address: {"instance_id": instance_id}})
    assert code == 0, out
    assert member.sent("fsync", "fsyncUnlock") == ["fsync", "fsyncUnlock"] and member.lock_count == 0
    taken = moto.labelled("snap-1")
    assert sorted(s["volume"] for s in taken) == sorted(volumes.values())
    assert all(s["tags"]["dbops:oplog-ts"] == "1714521600:3" and s["tags"]["dbops:replica-set"] == "rs0"
               for s in taken)
    catalog = Catalog.load(str(root))
    entry = catalog.backups[0]
    assert (entry["kind"], entry["provider"], entry["oplog_end"], entry["member"], entry["snapshots"]) == \
        ("snapshot", "ebs", "1714521600:3", member.address, 3)
    assert pitr.windows(catalog)[0]["backup_label"] == "snap-1"
    manifest = json.loads((root / "snap-1" / "manifest.json").read_text())
    assert sorted(s["device"] for s in manifest["snapshot"]["snapshots"]) == sorted(volumes)


def test_a_snapshot_that_fails_after_the_lock_leaves_the_member_unlocked(members, moto, tmp_path):
    member = members()
    code, out, root = run_role(tmp_path, direct(member), moto, backup_label="snap-fail",
                               snapshot_backup_volumes={member.address: {"instance_id": "i-0000000000000dead"}})
    assert code != 0 and "i-0000000000000dead" in out, out
    assert member.sent("fsync", "fsyncUnlock") == ["fsync", "fsyncUnlock"] and member.lock_count == 0
    assert Catalog.load(str(root)).backups == [] and moto.labelled("snap-fail") == []


def test_a_lock_held_longer_than_max_lock_seconds_fails_the_run_and_is_released(members, moto, tmp_path):
    member = members()
    member.age_after_lock = 900  # the server reports the lock 15 minutes old once taken
    instance_id, _volumes = moto.instance()
    code, out, root = run_role(tmp_path, direct(member), moto, snapshot_backup_max_lock_seconds=300,
                               snapshot_backup_volumes={member.address: {"instance_id": instance_id}},
                               backup_label="snap-old")
    assert code != 0 and "longer than max_lock_seconds=300" in out, out
    assert member.sent("fsync", "fsyncUnlock") == ["fsync", "fsyncUnlock"] and member.lock_count == 0
    assert Catalog.load(str(root)).backups == []


def test_a_member_without_volumes_fails_before_anything_is_locked(members, moto, tmp_path):
    member = members()
    code, out, _root = run_role(tmp_path, direct(member), moto, snapshot_backup_volumes={"db9:27017": {}})
    assert code != 0 and "has no entry in snapshot_backup_volumes" in out and member.address in out, out
    assert member.sent("fsync", "fsyncUnlock") == []


def test_sharded_run_snapshots_every_set_and_leaves_the_balancer_as_found(members, moto, tmp_path):
    shards = {"shardA": members(set_name="shardA"), "shardB": members(set_name="shardB"),
              "config": members(set_name="configRS")}
    volumes = {}
    for name, member in shards.items():
        volumes[member.address] = {"instance_id": moto.instance(data_devices=("/dev/sdf",))[0]}
    mongos = MockMongos({"shardA": "shardA/x:1", "shardB": "shardB/x:2"}, "configRS/x:3", mode="full")
    try:
        code, out, root = run_role(
            tmp_path, mongos, moto, backup_label="cluster-1", snapshot_backup_topology="sharded",
            snapshot_backup_volumes=volumes,
            snapshot_backup_shards=[{"name": name, "uri": member.uri + "/?directConnection=true"}
                                    for name, member in shards.items()])
        assert code == 0, out
        names = mongos.names()
        assert "balancerStop" in names and names.index("balancerStop") < names.index("balancerStart")
        assert mongos.mode == "full"
        for name, member in shards.items():
            assert member.sent("fsync", "fsyncUnlock") == ["fsync", "fsyncUnlock"] and member.lock_count == 0
            assert len(moto.labelled("cluster-1.%s" % name)) == 1
        entry = Catalog.load(str(root)).backups[0]
        assert entry["kind"] == "snapshot" and sorted(entry["members"]) == ["configRS", "shardA", "shardB"]
        assert entry["oplog_end"] is None
    finally:
        mongos.stop()

    # restored one replica set at a time, never to a single time
    target, _volumes = moto.instance(data_devices=())
    code, out = support.run_playbook(restore_play(root, "cluster-1", target, moto), tmp_path)
    assert code != 0 and "cluster-1 is the ebs snapshot set of a sharded cluster (replica sets " in out, out
    assert "set snapshot_restore_replica_set to one of them" in out and attached_snapshots(moto, target) == {}
    code, out = support.run_playbook(restore_play(root, "cluster-1", target, moto, snapshot_restore_replica_set="shardB",
                                                  snapshot_restore_target_time="1714521700:1"), tmp_path)
    assert code != 0 and "no single time restores the cluster" in out and attached_snapshots(moto, target) == {}, out
    code, out = support.run_playbook(restore_play(root, "cluster-1", target, moto, snapshot_restore_replica_set="shardB"),
                                     tmp_path)
    assert code == 0, out
    assert attached_snapshots(moto, target) == {"/dev/sdf": moto.labelled("cluster-1.shardB")[0]["id"]}, out


def test_sharded_run_that_fails_puts_a_stopped_balancer_nowhere_and_unlocks_every_member(members, moto, tmp_path):
    """One shard's snapshot fails: every member is unlocked, and a balancer that was off stays off."""
    shards = {"shardA": members(set_name="shardA"), "config": members(set_name="configRS")}
    volumes = {shards["shardA"].address: {"instance_id": moto.instance(data_devices=("/dev/sdf",))[0]},
               shards["config"].address: {"instance_id": "i-0000000000000dead"}}
    mongos = MockMongos({"shardA": "shardA/x:1"}, "configRS/x:3", mode="off")
    try:
        code, out, _root = run_role(
            tmp_path, mongos, moto, backup_label="cluster-2", snapshot_backup_topology="sharded",
            snapshot_backup_volumes=volumes,
            snapshot_backup_shards=[{"name": name, "uri": member.uri + "/?directConnection=true"}
                                    for name, member in shards.items()])
        assert code != 0 and "i-0000000000000dead" in out, out
        for member in shards.values():
            assert member.sent("fsync", "fsyncUnlock") == ["fsync", "fsyncUnlock"] and member.lock_count == 0
        assert "balancerStart" not in mongos.names() and mongos.mode == "off"
    finally:
        mongos.stop()


RESTORE_PLAY = """
- name: Restore a snapshot set onto another instance
  hosts: localhost
  gather_facts: false
  roles:
    - role: dbops.mongodb_backup.snapshot_restore
      vars:
        snapshot_restore_root: "{root}"
        snapshot_restore_label: "{label}"
        snapshot_restore_instance_id: "{instance}"
        snapshot_restore_aws_region: "{region}"
        snapshot_restore_aws_endpoint_url: "{endpoint}"
"""


def restore_play(root, label, instance, moto, **extra):
    """The restore play, with more role variables."""
    return RESTORE_PLAY.format(root=root, label=label, instance=instance, region=REGION,
                               endpoint=moto.endpoint_url) + "".join(
        "        %s: %s\n" % (name, json.dumps(value)) for name, value in extra.items())


def attached_snapshots(moto, instance):
    """{device: snapshot id} of the volumes attached to ``instance`` that were built from a snapshot."""
    volumes = moto.client().describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance]}])["Volumes"]
    return dict((v["Attachments"][0]["Device"], v.get("SnapshotId")) for v in volumes if v.get("SnapshotId"))


def test_snapshot_restore_builds_one_volume_per_snapshot_at_its_device_once(members, moto, tmp_path):
    member = members()
    source, _volumes = moto.instance()
    code, out, root = run_role(tmp_path, direct(member), moto, backup_label="snap-restore",
                               snapshot_backup_volumes={member.address: {"instance_id": source}})
    assert code == 0, out
    taken = dict((s["tags"]["dbops:device"], s["id"]) for s in moto.labelled("snap-restore"))
    target, _target_volumes = moto.instance(data_devices=())
    play = restore_play(root, "snap-restore", target, moto)
    code, out = support.run_playbook(play, tmp_path)
    assert code == 0, out
    assert attached_snapshots(moto, target) == taken
    code, out = support.run_playbook(play, tmp_path)  # again: every device is there already
    assert code == 0 and "changed=0" in out, out
    assert attached_snapshots(moto, target) == taken


def test_snapshot_restore_refuses_a_logical_backup(moto, tmp_path):
    root = tmp_path / "backups"
    (root / "nightly").mkdir(parents=True)
    (root / "nightly" / "manifest.json").write_text(json.dumps({"kind": "logical", "snapshot": None}))
    code, out = support.run_playbook(restore_play(root, "nightly", "i-1", moto), tmp_path)
    assert code != 0 and "nightly in %s is a logical backup" % root in out, out


def test_gce_replica_set_snapshot_is_recorded_and_the_member_unlocked(members, moto, tmp_path):
    from gce_bed import ComputeEndpoint
    member = members()
    compute = ComputeEndpoint()
    compute.pending_polls = 2
    try:
        code, out, root = run_role(
            tmp_path, direct(member), moto, backup_label="gce-1", snapshot_backup_provider="gce",
            snapshot_backup_gce_project=compute.project, snapshot_backup_gce_api_endpoint=compute.api_endpoint,
            snapshot_backup_gce_auth_kind="anonymous", snapshot_backup_gce_snapshot_type="ARCHIVE",
            snapshot_backup_volumes={member.address: {"disks": [{"name": "db3-data", "zone": "europe-west1-b"}]}})
        assert code == 0, out
        assert member.sent("fsync", "fsyncUnlock") == ["fsync", "fsyncUnlock"] and member.lock_count == 0
        snapshot = compute.snapshots["gce-1-db3-data"]
        assert snapshot["snapshotType"] == "ARCHIVE" and snapshot["labels"]["dbops-oplog-ts"] == "1714521600-3"
        entry = Catalog.load(str(root)).backups[0]
        assert (entry["provider"], entry["oplog_end"], entry["snapshots"]) == ("gce", "1714521600:3", 1)

        compute.add_instance("restore-1", "europe-west1-b", attached=[("boot", "restore-1-boot")])
        gce_target = dict(snapshot_restore_gce_project=compute.project, snapshot_restore_zone="europe-west1-b",
                          snapshot_restore_gce_api_endpoint=compute.api_endpoint,
                          snapshot_restore_gce_auth_kind="anonymous", snapshot_restore_poll_interval=0.05)
        play = restore_play(root, "gce-1", "restore-1", moto, **gce_target)
        for rerun in (False, True):
            code, out = support.run_playbook(play, tmp_path)
            assert code == 0 and ("changed=0" in out) == rerun, out
            disks = compute.instances[("europe-west1-b", "restore-1")]["disks"]
            assert [(d["deviceName"], d["source"].rsplit("/", 1)[-1]) for d in disks] == [
                ("boot", "restore-1-boot"), ("db3-data", "restore-1-db3-data")]
        assert compute.disks[("europe-west1-b", "restore-1-db3-data")]["sourceSnapshot"].endswith("/gce-1-db3-data")
        assert compute.disks[("europe-west1-b", "restore-1-db3-data")]["labels"] == {"dbops-restored-from": "gce-1"}
    finally:
        compute.stop()


def test_retention_after_a_snapshot_deletes_the_aged_out_set_in_the_cloud(members, moto, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", moto.endpoint_url)  # how the retention's ebs_snapshot finds moto
    member = members()
    source, _volumes = moto.instance()
    volumes = {member.address: {"instance_id": source}}
    code, out, root = run_role(tmp_path, direct(member), moto, backup_label="snap-a", snapshot_backup_volumes=volumes)
    assert code == 0, out
    assert moto.labelled("snap-a")

    locks = len(member.sent("fsync"))
    code, out, _root = run_role(tmp_path, direct(member), moto, backup_label="snap-x", snapshot_backup_volumes=volumes,
                                snapshot_backup_retention={"keep_lats": 1})
    assert code != 0 and "keep_lats" in out, out
    assert len(member.sent("fsync")) == locks and moto.labelled("snap-x") == []  # refused before any lock

    code, out, _root = run_role(tmp_path, direct(member), moto, backup_label="snap-b", snapshot_backup_volumes=volumes,
                                snapshot_backup_retention={"keep_last": 1})
    assert code == 0, out
    assert moto.labelled("snap-a") == [] and moto.labelled("snap-b")
    assert [b["label"] for b in Catalog.load(str(root)).backups] == ["snap-b"]
    assert not (root / "snap-a").exists()
