"""ebs_snapshot against moto's EC2 server on loopback, and the states moto cannot produce (pending, error, a
slow copy) through botocore's Stubber on the engine."""

import datetime

import boto3
import pytest
from botocore.stub import ANY, Stubber

import support
from aws_bed import COPY_REGION, REGION

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import SnapshotError
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.snapshots import ebs

pytestmark = pytest.mark.protocol

MODULE = "dbops.mongodb_backup.ebs_snapshot"


def task(tmp_path, moto, check=False, **options):
    return support.run_module_task(tmp_path, MODULE, check=check, region=REGION, endpoint_url=moto.endpoint_url,
                                   poll_interval=0.05, **options)


def test_instance_set_tagged_waited_copied_idempotent_and_deleted(moto, tmp_path):
    instance_id, volumes = moto.instance()
    planned = task(tmp_path, moto, check=True, label="set-1", instance_id=instance_id)
    assert planned["changed"] and moto.labelled("set-1") == []
    assert sorted(s["volume_id"] for s in planned["snapshots"]) == sorted(volumes.values())

    first = task(tmp_path, moto, label="set-1", instance_id=instance_id, replica_set="rs0",
                 oplog_ts="1714521600:3", tags={"team": "db"}, copy_to_region=COPY_REGION)
    assert not first.get("failed"), first
    assert first["changed"] and len(first["snapshots"]) == 3
    assert all(s["state"] == "completed" for s in first["snapshots"])
    taken = moto.labelled("set-1")
    assert sorted(s["volume"] for s in taken) == sorted(volumes.values())  # the boot volume left out
    for snapshot in taken:
        tags = snapshot["tags"]
        assert tags["dbops:snapshot-set"] == first["snapshot_set"] and tags["dbops:replica-set"] == "rs0"
        assert tags["dbops:oplog-ts"] == "1714521600:3" and tags["team"] == "db"
        assert volumes[tags["dbops:device"]] == tags["dbops:volume"] == snapshot["volume"]
    copies = moto.labelled("set-1", COPY_REGION)
    assert sorted(c["tags"]["dbops:source-snapshot"] for c in copies) == sorted(s["id"] for s in taken)
    assert all(c["tags"]["dbops:snapshot-set"] == first["snapshot_set"] for c in copies)

    again = task(tmp_path, moto, label="set-1", instance_id=instance_id, copy_to_region=COPY_REGION)
    assert not again["changed"] and again["snapshot_set"] == first["snapshot_set"]
    assert len(moto.labelled("set-1")) == 3 and len(moto.labelled("set-1", COPY_REGION)) == 3
    assert again["oplog_ts"] == "1714521600:3"  # read back from the set's tags

    kept = task(tmp_path, moto, check=True, label="set-1", state="absent", include_copies=True,
                copy_to_region=COPY_REGION)
    assert kept["changed"] and len(kept["deleted"]) == 6 and len(moto.labelled("set-1")) == 3
    gone = task(tmp_path, moto, label="set-1", state="absent", include_copies=True, copy_to_region=COPY_REGION)
    assert gone["changed"] and len(gone["deleted"]) == 6
    assert moto.labelled("set-1") == [] and moto.labelled("set-1", COPY_REGION) == []
    assert not task(tmp_path, moto, label="set-1", state="absent")["changed"]


def test_listed_volumes_and_a_label_reused_for_other_volumes(moto, tmp_path):
    _instance_id, volumes = moto.instance()
    chosen = [volumes["/dev/sdf"], volumes["/dev/sdg"]]
    first = task(tmp_path, moto, label="set-2", volume_ids=chosen)
    assert first["changed"] and sorted(s["volume_id"] for s in first["snapshots"]) == sorted(chosen)
    other = task(tmp_path, moto, label="set-2", volume_ids=[volumes["/dev/sdh"]])
    assert other.get("failed") and "exists with the volumes" in other["msg"] and "give another label" in other["msg"]
    assert len(moto.labelled("set-2")) == 2


def test_unknown_instance_fails_naming_it_and_creates_nothing(moto, tmp_path):
    result = task(tmp_path, moto, label="set-3", instance_id="i-0000000000000dead")
    assert result.get("failed") and "i-0000000000000dead" in result["msg"], result
    assert moto.labelled("set-3") == []
    assert "testing" not in str(result)  # no credential in what the task returns


# ----------------------------------------------------------------------------- states through Stubber

def _snapshot(snapshot_id, state, progress, message=None):
    described = {"SnapshotId": snapshot_id, "VolumeId": "vol-1", "State": state, "Progress": progress,
                 "VolumeSize": 8, "Encrypted": False, "StartTime": datetime.datetime(2024, 5, 1),
                 "Tags": [{"Key": "dbops:volume", "Value": "vol-1"}, {"Key": "dbops:device", "Value": "/dev/sdf"}]}
    if message:
        described["StateMessage"] = message
    return described


def _stubbed(region=REGION):
    client = boto3.client("ec2", region_name=region, aws_access_key_id="x", aws_secret_access_key="y")
    return client, Stubber(client)


class Clock:
    def __init__(self):
        self.now = 0.0

    def time(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def _options(**extra):
    return ebs.EbsOptions("set-9", volume_ids=["vol-1"], poll_interval=10, wait_timeout=30, region=REGION, **extra)


def test_stub_pending_snapshots_are_polled_until_completed():
    client, stub = _stubbed()
    for state, progress in (("pending", "0%"), ("pending", "45%"), ("completed", "100%")):
        stub.add_response("describe_snapshots", {"Snapshots": [_snapshot("snap-1", state, progress)]},
                          {"SnapshotIds": ["snap-1"]})
    clock = Clock()
    with stub:
        done = ebs.wait_for(client, ["snap-1"], REGION, _options(), "the snapshots", clock.sleep, clock.time)
    assert done[0]["state"] == "completed" and clock.now == 20


def test_stub_a_snapshot_in_error_fails_naming_it_and_the_cause():
    client, stub = _stubbed()
    stub.add_response("describe_snapshots", {"Snapshots": [_snapshot("snap-1", "error", "12%", "KMS key disabled")]},
                      {"SnapshotIds": ["snap-1"]})
    with stub, pytest.raises(SnapshotError) as failed:
        ebs.wait_for(client, ["snap-1"], REGION, _options(), "the snapshots", Clock().sleep, Clock().time)
    assert "snap-1 (volume vol-1 at /dev/sdf, 12%) is in state error (KMS key disabled)" in failed.value.message
    assert "delete the set with state: absent" in failed.value.message


def test_stub_timeout_fails_naming_the_incomplete_snapshot_and_keeps_it():
    client, stub = _stubbed()
    for _poll in range(4):
        stub.add_response("describe_snapshots", {"Snapshots": [_snapshot("snap-1", "pending", "63%")]},
                          {"SnapshotIds": ["snap-1"]})
    clock = Clock()
    with stub, pytest.raises(SnapshotError) as failed:
        ebs.wait_for(client, ["snap-1"], REGION, _options(), "the snapshots", clock.sleep, clock.time)
    assert "not complete after 30 s: snap-1 (volume vol-1 at /dev/sdf, 63%)" in failed.value.message
    assert "run again with the same label to wait for them" in failed.value.message


def test_stub_a_slow_copy_is_waited_for_in_the_destination_region():
    source, source_stub = _stubbed()
    destination, destination_stub = _stubbed(COPY_REGION)
    completed = _snapshot("snap-1", "completed", "100%")
    completed["Tags"] += [{"Key": "dbops:backup-label", "Value": "set-9"}]
    source_stub.add_response("describe_volumes", {"Volumes": [{"VolumeId": "vol-1", "Attachments": []}]},
                             {"VolumeIds": ["vol-1"]})
    source_stub.add_response("describe_snapshots", {"Snapshots": [completed]}, {"OwnerIds": ["self"], "Filters": ANY})
    source_stub.add_response("describe_snapshots", {"Snapshots": [completed]}, {"SnapshotIds": ["snap-1"]})
    destination_stub.add_response("describe_snapshots", {"Snapshots": []}, {"OwnerIds": ["self"], "Filters": ANY})
    destination_stub.add_response("copy_snapshot", {"SnapshotId": "snap-copy"}, {
        "SourceRegion": REGION, "SourceSnapshotId": "snap-1", "Description": ANY, "TagSpecifications": ANY})
    for state, progress in (("pending", "5%"), ("pending", "70%"), ("completed", "100%")):
        destination_stub.add_response("describe_snapshots", {"Snapshots": [_snapshot("snap-copy", state, progress)]},
                                      {"SnapshotIds": ["snap-copy"]})
    clock = Clock()
    with source_stub, destination_stub:
        changed, result = ebs.run(_options(copy_to_region=COPY_REGION), source, lambda region: destination,
                                  sleep=clock.sleep, clock=clock.time)
    assert changed and result["copies"][0]["snapshot_id"] == "snap-copy"
    assert result["copies"][0]["state"] == "completed" and clock.now == 20
