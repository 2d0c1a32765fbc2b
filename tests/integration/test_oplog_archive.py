"""Continuous oplog archiving against the real test server, and restores through its slices."""

import os

import pytest

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog import pitr
from ansible_collections.dbops.mongodb_backup.plugins.module_utils import errors
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import bsonio
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import timestamps
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog import store as catalog_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump as dump_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_options
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import restore as restore_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import archiver


@pytest.fixture
def replica(private_server, tmp_path):
    """A server with data, a full oplog backup registered in the catalog of a backup root."""
    client = private_server.client()
    client.arch.items.insert_many([{"_id": i, "v": i} for i in range(200)])
    root = tmp_path / "root"
    root.mkdir()
    facts = client_utils.server_facts(client)
    dump_engine.dump(client, dump_options.DumpOptions(path=str(root / "full-1"), oplog=True, label="full-1"), facts)
    with catalog_utils.Catalog.locked(str(root)) as catalog:
        catalog.add_backup_from_manifest(str(root / "full-1"))
        catalog.save()
    return client, facts, str(root)


def archive(client, facts, root, **options):
    return archiver.archive_oplog(client, archiver.ArchiveOptions(root, **options), facts)


def workload(client, start, count):
    for n in range(start, start + count):
        client.arch.items.insert_one({"_id": 1000 + n, "v": n})
        if n % 4 == 0:
            client.arch.items.update_one({"_id": n % 200}, {"$set": {"v": -n}})
        if n % 9 == 0:
            client.arch.items.delete_one({"_id": (n * 7) % 200})


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_slices_capture_new_writes_and_restore_to_the_end(replica, compression):
    client, facts, root = replica
    workload(client, 0, 120)
    changed, first = archive(client, facts, root, compression=compression, span_seconds=600)
    assert changed and first["entries"] >= 120 and first["slices"]
    for record in first["slices"]:
        path = os.path.join(root, record["file"])
        assert bsonio.sha256_file(path) == record["sha256"]
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    # nothing new: a second run soon after changes nothing
    changed, again = archive(client, facts, root, compression=compression)
    assert not changed and again["slices"] == []
    workload(client, 120, 60)
    changed, second = archive(client, facts, root, compression=compression)
    assert changed and second["start"] == first["slices"][-1]["last_ts"]
    expected = list(client.arch.items.find().sort("_id", 1))

    catalog = catalog_utils.Catalog.load(root)
    assert len(catalog.slices) == len(first["slices"]) + len(second["slices"])
    window = pitr.windows(catalog, facts["replica_set"])[0]
    assert window["end_ts"] == second["slices"][-1]["last_ts"] and not window["stopped_by_gap"]
    slices = [os.path.join(root, s["file"]) for s in sorted(catalog.slices, key=lambda s: timestamps.ts_key(s["first_ts"]))]
    client.drop_database("arch")
    restore_engine.restore(client, restore_engine.RestoreOptions(
        source=os.path.join(root, "full-1"), drop=True, oplog_replay=True, oplog_slices=slices))
    assert list(client.arch.items.find().sort("_id", 1)) == expected


def test_small_span_splits_into_overlapping_slices(replica, monkeypatch):
    client, facts, root = replica
    workload(client, 0, 30)
    # every entry in its own second would take long; compare on the inc instead by a zero-second span
    changed, result = archive(client, facts, root, span_seconds=1)
    assert changed and result["slices"]
    for before, after in zip(result["slices"], result["slices"][1:]):
        assert after["first_ts"] == before["last_ts"]  # consecutive slices share one entry


def test_gap_is_detected_recorded_and_reported(replica):
    client, facts, root = replica
    workload(client, 0, 10)
    archive(client, facts, root)
    last = catalog_utils.Catalog.load(root).last_archived_ts(facts["replica_set"])
    workload(client, 10, 10)
    # a capped oplog that rolled over: everything up to and past the last archived entry is gone
    newest = client.local["oplog.rs"].find_one({}, sort=[("$natural", -1)])["ts"]
    client.local["oplog.rs"].delete_many({"ts": {"$lt": newest}})
    with pytest.raises(errors.OplogGap) as failure:
        archive(client, facts, root)
    message = failure.value.message
    assert "oplog gap" in message and last in message and "take a new full backup" in message
    gaps = catalog_utils.Catalog.load(root).gaps
    assert gaps and gaps[-1]["last_archived_ts"] == last


def test_killed_run_leaves_no_half_slice(replica):
    client, facts, root = replica
    slice_dir = os.path.join(root, "oplog", facts["replica_set"])
    os.makedirs(slice_dir)
    leftover = os.path.join(slice_dir, "slice-1-1.partial")
    with open(leftover, "wb") as handle:
        handle.write(b"half a slice")
    workload(client, 0, 5)
    changed, result = archive(client, facts, root)
    assert changed and not os.path.exists(leftover)
    files = set(os.listdir(slice_dir))
    assert files == {os.path.basename(s["file"]) for s in result["slices"]}
    assert all(not name.endswith(".partial") for name in files)


def test_archive_needs_a_starting_point(private_server, tmp_path):
    client = private_server.client()
    facts = client_utils.server_facts(client)
    with pytest.raises(restore_engine.InvalidOption, match="run a full backup with oplog: true first"):
        archive(client, facts, str(tmp_path))
