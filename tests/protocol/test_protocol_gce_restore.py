"""gce_disk_restore against the local Compute endpoint (tests/gce_bed.py): a set taken by gce_disk_snapshot
becomes disks attached to a restore instance, with every check made before anything is created."""

import pytest

import support
from gce_bed import ComputeEndpoint

pytestmark = pytest.mark.protocol

ZONE = "europe-west1-b"
DISKS = [{"name": "db3-data", "zone": ZONE}, {"name": "db3-journal", "zone": ZONE}]


@pytest.fixture
def compute():
    endpoint = ComputeEndpoint()
    endpoint.add_instance("restore-1", ZONE, attached=[("boot", "restore-1-boot")])
    yield endpoint
    endpoint.stop()


def run(tmp_path, compute, module, check=False, **options):
    return support.run_module_task(tmp_path, "dbops.mongodb_backup." + module, check=check, project=compute.project,
                                   api_endpoint=compute.api_endpoint, auth_kind="anonymous", poll_interval=0.05,
                                   **options)


def restore(tmp_path, compute, check=False, **options):
    options.setdefault("zone", ZONE)
    options.setdefault("instance", "restore-1")
    return run(tmp_path, compute, "gce_disk_restore", check=check, **options)


def take_set(tmp_path, compute, label="nightly-1"):
    result = run(tmp_path, compute, "gce_disk_snapshot", label=label, disks=DISKS)
    assert result["changed"], result


def posted(compute):
    return [path for method, path, _query, _body in compute.requests if method == "POST"]


def attached(compute):
    return dict((d["deviceName"], d["source"].rsplit("/", 1)[-1])
                for d in compute.instances[(ZONE, "restore-1")]["disks"])


def test_a_set_becomes_disks_attached_at_their_source_names_and_a_rerun_changes_nothing(compute, tmp_path):
    take_set(tmp_path, compute)
    before = len(posted(compute))
    planned = restore(tmp_path, compute, check=True, label="nightly-1")
    assert planned["changed"] and len(posted(compute)) == before, planned
    assert [(d["name"], d["created"], d["attached"]) for d in planned["disks"]] == [
        ("restore-1-db3-data", True, True), ("restore-1-db3-journal", True, True)]

    result = restore(tmp_path, compute, label="nightly-1", disk_type="pd-ssd", labels={"team": "db"})
    assert result["changed"] and not result.get("failed"), result
    assert attached(compute) == {"boot": "restore-1-boot", "db3-data": "restore-1-db3-data",
                                 "db3-journal": "restore-1-db3-journal"}
    assert [d["device_path"] for d in result["disks"]] == ["/dev/disk/by-id/google-db3-data",
                                                           "/dev/disk/by-id/google-db3-journal"]
    made = compute.disks[(ZONE, "restore-1-db3-data")]
    assert made["sourceSnapshot"].endswith("/global/snapshots/nightly-1-db3-data")
    assert made["labels"] == {"team": "db", "dbops-restored-from": "nightly-1"}
    assert made["type"] == "zones/%s/diskTypes/pd-ssd" % ZONE

    again = restore(tmp_path, compute, label="nightly-1")
    assert not again["changed"] and [(d["created"], d["attached"]) for d in again["disks"]] == [(False, False)] * 2


def test_an_attach_that_failed_is_finished_by_the_rerun(compute, tmp_path):
    take_set(tmp_path, compute)
    compute.failing_disks = {"restore-1": "The resource 'restore-1' is not ready"}
    failed = restore(tmp_path, compute, label="nightly-1")
    assert failed.get("failed") and "attaching disk restore-1-db3-data to restore-1" in failed["msg"], failed
    assert "is not ready" in failed["msg"]
    assert attached(compute) == {"boot": "restore-1-boot"}
    compute.failing_disks = {}
    finished = restore(tmp_path, compute, label="nightly-1")
    assert finished["changed"], finished
    assert [(d["created"], d["attached"]) for d in finished["disks"]] == [(False, True), (True, True)]
    assert set(attached(compute)) == {"boot", "db3-data", "db3-journal"}


def test_a_device_name_in_use_is_refused_before_anything_is_created(compute, tmp_path):
    take_set(tmp_path, compute)
    compute.add_instance("restore-1", ZONE, attached=[("boot", "restore-1-boot"), ("db3-journal", "old-journal")])
    before = len(posted(compute))
    result = restore(tmp_path, compute, label="nightly-1")
    assert result.get("failed"), result
    assert "instance restore-1 already has disk old-journal at device db3-journal" in result["msg"]
    assert "map db3-journal to another device with device_names" in result["msg"]
    assert len(posted(compute)) == before and (ZONE, "restore-1-db3-data") not in compute.disks

    mapped = restore(tmp_path, compute, label="nightly-1", device_names={"db3-journal": "journal-restored"})
    assert mapped["changed"] and attached(compute)["journal-restored"] == "restore-1-db3-journal", mapped


def test_a_disk_of_the_same_name_from_another_snapshot_is_never_reused(compute, tmp_path):
    take_set(tmp_path, compute)
    take_set(tmp_path, compute, label="nightly-2")
    assert restore(tmp_path, compute, snapshots=["nightly-2-db3-data"])["changed"]
    result = restore(tmp_path, compute, label="nightly-1")
    assert result.get("failed"), result
    assert ("disk restore-1-db3-data in %s exists and was not made from snapshot nightly-1-db3-data (its source: "
            "nightly-2-db3-data)" % ZONE) in result["msg"]
    assert (ZONE, "restore-1-db3-journal") not in compute.disks


def test_an_unknown_label_a_snapshot_not_ready_and_a_bad_mapping_are_refused(compute, tmp_path):
    missing = restore(tmp_path, compute, label="nightly-9")
    assert missing.get("failed") and "no snapshot in project shop-prod has the label dbops-backup-label=nightly-9" \
        in missing["msg"], missing
    take_set(tmp_path, compute)
    compute.snapshots["nightly-1-db3-journal"]["status"] = "CREATING"
    pending = restore(tmp_path, compute, label="nightly-1")
    assert pending.get("failed") and "nightly-1-db3-journal (CREATING) are not READY" in pending["msg"], pending
    compute.snapshots["nightly-1-db3-journal"]["status"] = "READY"
    typo = restore(tmp_path, compute, label="nightly-1", device_names={"db3-dta": "data"})
    assert typo.get("failed") and "device_names names db3-dta, which no snapshot of the set was taken from" \
        in typo["msg"], typo
    both = restore(tmp_path, compute, label="nightly-1", snapshots=["nightly-1-db3-data"])
    assert both.get("failed") and "mutually exclusive" in both["msg"]
    assert not any((ZONE, name) in compute.disks for name in ("restore-1-db3-data", "restore-1-db3-journal"))
