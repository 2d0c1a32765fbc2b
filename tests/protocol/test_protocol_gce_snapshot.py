"""gce_disk_snapshot against a local endpoint shaped as the Compute API documents it (tests/gce_bed.py):
anonymous credentials, api_endpoint on loopback, no real cloud."""

import pytest

import support
from gce_bed import ComputeEndpoint

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import InvalidOption, SnapshotError
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.snapshots import gce

pytestmark = pytest.mark.protocol

MODULE = "dbops.mongodb_backup.gce_disk_snapshot"
DISKS = [{"name": "db3-data", "zone": "europe-west1-b"}, {"name": "db3-journal", "zone": "europe-west1-b"}]


@pytest.fixture
def compute():
    endpoint = ComputeEndpoint()
    yield endpoint
    endpoint.stop()


def task(tmp_path, compute, check=False, **options):
    options.setdefault("project", compute.project)
    return support.run_module_task(tmp_path, MODULE, check=check, api_endpoint=compute.api_endpoint,
                                   auth_kind="anonymous", poll_interval=0.05, **options)


def posted(compute):
    return [(path, query, body) for method, path, query, body in compute.requests if method == "POST"]


def test_archive_set_with_guest_flush_waits_on_pending_operations_and_is_idempotent(compute, tmp_path):
    compute.pending_polls = 3
    planned = task(tmp_path, compute, check=True, label="nightly-1", disks=DISKS)
    assert planned["changed"] and posted(compute) == []
    result = task(tmp_path, compute, label="nightly-1", disks=DISKS, guest_flush=True, snapshot_type="ARCHIVE",
                  storage_locations=["eu"], chain_name="mongo-rs0", replica_set="rs0", oplog_ts="1714521600:3",
                  labels={"team": "db"})
    assert not result.get("failed"), result
    assert result["changed"] and [s["status"] for s in result["snapshots"]] == ["READY", "READY"]
    creates = posted(compute)
    assert [path.rsplit("/", 2)[-2] for path, _q, _b in creates] == ["db3-data", "db3-journal"]
    for path, query, body in creates:
        assert "/zones/europe-west1-b/disks/" in path and query.get("guestFlush") in ("true", "True")
        assert body["snapshotType"] == "ARCHIVE" and body["storageLocations"] == ["eu"]
        assert body["chainName"] == "mongo-rs0"
        assert body["labels"] == {"team": "db", "dbops-backup-label": "nightly-1", "dbops-replica-set": "rs0",
                                  "dbops-oplog-ts": "1714521600-3",
                                  "dbops-snapshot-set": result["snapshot_set"]}
    polled = [path for method, path, _q, _b in compute.requests if method == "GET" and "/operations/" in path]
    assert all("/zones/europe-west1-b/operations/" in path for path in polled) and len(polled) >= 8

    again = task(tmp_path, compute, label="nightly-1", disks=DISKS)
    assert not again["changed"] and len(posted(compute)) == 2
    assert again["snapshot_set"] == result["snapshot_set"] and again["oplog_ts"] == "1714521600:3"


def test_an_operation_error_is_surfaced_with_its_message_naming_the_disk(compute, tmp_path):
    compute.failing_disks = {"db3-journal": "Operation rate exceeded for resource 'db3-journal'."}
    result = task(tmp_path, compute, label="nightly-2", disks=DISKS)
    assert result.get("failed"), result
    assert "disk db3-journal failed" in result["msg"]
    assert "RESOURCE_OPERATION_RATE_EXCEEDED: Operation rate exceeded for resource 'db3-journal'." in result["msg"]


def test_regional_disks_and_state_absent(compute, tmp_path):
    disks = [{"name": "db4-data", "region": "europe-west1"}]
    created = task(tmp_path, compute, label="nightly-3", disks=disks)
    assert created["changed"] and "/regions/europe-west1/disks/db4-data/createSnapshot" in posted(compute)[0][0]
    planned = task(tmp_path, compute, check=True, label="nightly-3", state="absent")
    assert planned["changed"] and planned["deleted"] == ["nightly-3-db4-data"] and compute.snapshots
    deleted = task(tmp_path, compute, label="nightly-3", state="absent")
    assert deleted["changed"] and compute.snapshots == {}
    assert not task(tmp_path, compute, label="nightly-3", state="absent")["changed"]


def test_a_missing_disk_fails_naming_it(compute, tmp_path):
    compute.missing_disks = {"db9-data"}
    result = task(tmp_path, compute, label="nightly-4", disks=[{"name": "db9-data", "zone": "europe-west1-b"}])
    assert result.get("failed") and "createSnapshot of disk db9-data in europe-west1-b" in result["msg"], result
    assert "disks/db9-data' was not found" in result["msg"] and compute.snapshots == {}


def test_engine_timeout_names_the_pending_operation():
    class Clock:
        now = 0.0

        def time(self):
            return self.now

        def sleep(self, seconds):
            self.now += seconds

    endpoint = ComputeEndpoint()
    endpoint.pending_polls = 100
    try:
        clients = gce.Clients(gce.credentials("anonymous"), endpoint.api_endpoint)
        options = gce.GceOptions(endpoint.project, "nightly-5", disks=DISKS[:1], wait_timeout=10, poll_interval=5)
        clock = Clock()
        with pytest.raises(SnapshotError) as caught:
            gce.run(clients, options, sleep=clock.sleep, clock=clock.time)
        assert "is still RUNNING after 10 s" in caught.value.message and "run again with the same label" in \
            caught.value.message
    finally:
        endpoint.stop()


def test_names_and_labels_are_valid_for_gce():
    assert gce.resource_name("nightly-2024-05-01", "db3-data") == "nightly-2024-05-01-db3-data"
    assert gce.resource_name("2024", "Data_Disk").startswith("s-2024-data-disk")
    long_one = gce.resource_name("x" * 60, "db3-data")
    assert len(long_one) <= 63 and long_one != gce.resource_name("x" * 60, "db4-data")
    with pytest.raises(InvalidOption, match="cannot be a GCE label value"):
        gce.GceOptions("p", "Nightly.1", disks=DISKS)
    with pytest.raises(InvalidOption, match="regional disks db4 cannot have it"):
        gce.GceOptions("p", "n", disks=[{"name": "db4", "region": "europe-west1"}], guest_flush=True)
