# -*- coding: utf-8 -*-
"""Applying a retention plan to real files: check mode, the catalog-first order, a crash between the catalog and
the files repaired by the next run, orphans, .partial work of live runs, two runs at once."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import multiprocessing
import os
import shutil

import pytest

import retention_bed
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog import entries, pitr
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog.store import Catalog
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import CatalogError, InvalidOption
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import manifest as manifest_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.retention import apply
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.retention.policy import Policy
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.snapshots import record as snapshot_record

NOW = "2024-05-01T12:00:00Z"
POLICY = {"keep_daily": 7, "keep_weekly": 4, "pitr_window_days": 3}


def tree(root):
    """Every file below ``root`` with its sha256, the catalog's lock aside."""
    found = {}
    for directory, _dirs, files in os.walk(str(root)):
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, str(root))] = hashlib.sha256(handle.read()).hexdigest()
    return found


def run(root, check_mode=False, now=NOW, **policy):
    return apply.run(str(root), Policy(**(policy or POLICY)), now=retention_bed.epoch(now), check_mode=check_mode)


def catalog_paths_exist(root):
    """Every backup and slice the catalog lists is on disk: the catalog never points at nothing."""
    catalog = Catalog.load(str(root))
    missing = [b["path"] for b in catalog.backups if not os.path.exists(catalog.absolute(b["path"]))]
    missing += [s["file"] for s in catalog.slices if not os.path.exists(catalog.absolute(s["file"]))]
    return missing == [] and catalog.damaged_slices() == {}


@pytest.fixture
def bed(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    return retention_bed.build(root, now=NOW, days=60, gap_day="2024-04-29", snapshot_day="2024-03-20")


def test_check_mode_lists_exactly_what_the_run_deletes_and_deletes_nothing(bed):
    before = tree(bed.root)
    changed, planned = run(bed.root, check_mode=True)
    assert changed is True and tree(bed.root) == before  # catalog.json included: nothing written, no lock left
    assert len(planned["deleted_backups"]) == 61 - 9  # 60 days and the snapshot; 7 days, 4 weeks (2 in the 7 days)
    assert planned["cloud_snapshot_sets"][0]["label"] == "snapshot-2024-03-20"

    changed, done = run(bed.root)
    assert changed is True
    for key in ("deleted_backups", "deleted_slices", "kept_backups", "kept_slices", "cloud_snapshot_sets",
                "broken_chains", "gaps", "bytes_freed"):
        assert done[key] == planned[key], key
    after = tree(bed.root)
    for record in done["deleted_backups"]:
        assert not any(path.startswith(record["path"] + os.sep) for path in after), record["path"]
    for record in done["deleted_slices"]:
        assert record["file"] not in after
    for record in done["kept_backups"]:
        assert os.path.join(record["path"], "manifest.json") in after
    assert "pending_deletions" not in json.loads(open(os.path.join(bed.root, "catalog.json")).read())
    assert catalog_paths_exist(bed.root)

    # idempotent: the same policy at the same time finds nothing more to do
    mtime = os.stat(os.path.join(bed.root, "catalog.json")).st_mtime_ns
    changed, again = run(bed.root)
    assert changed is False and again["deleted_backups"] == [] and again["deleted_slices"] == []
    assert os.stat(os.path.join(bed.root, "catalog.json")).st_mtime_ns == mtime


def test_a_crash_between_the_catalog_and_the_files_is_repaired_by_the_next_run(bed, monkeypatch):
    _changed, planned = run(bed.root, check_mode=True)
    doomed = [b["path"] for b in planned["deleted_backups"]]

    removed = []

    def killed(path, *args, **kwargs):  # the run dies while removing its second backup
        if removed:
            raise KeyboardInterrupt("killed")
        removed.append(path)
        real_rmtree(path, *args, **kwargs)
    real_rmtree = shutil.rmtree
    monkeypatch.setattr(apply.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        run(bed.root)
    monkeypatch.undo()

    catalog = Catalog.load(bed.root)
    assert not set(doomed) & set(b["path"] for b in catalog.backups)  # the entries went first
    pending = catalog.document["pending_deletions"]
    assert [p["name"] for p in pending if p["what"] == "backup"] == [b["label"] for b in planned["deleted_backups"]]
    assert sum(os.path.exists(os.path.join(bed.root, path)) for path in doomed) == len(doomed) - 1
    assert catalog_paths_exist(bed.root)  # a crash leaves orphan files, never a catalog pointing at nothing
    assert pitr.windows(catalog)  # the catalog still plans restores

    # check mode reports the leftovers and removes nothing
    _changed, looked = run(bed.root, check_mode=True)
    assert looked["pending_deletions"] == pending and looked["deleted_backups"] == []
    assert sum(os.path.exists(os.path.join(bed.root, path)) for path in doomed) == len(doomed) - 1

    changed, repaired = run(bed.root)
    assert changed is True and repaired["pending_deletions"] == pending and repaired["deleted_backups"] == []
    # the killed run never handed its EBS set over: the next one does
    assert [c["label"] for c in repaired["cloud_snapshot_sets"]] == ["snapshot-2024-03-20"]
    assert not any(os.path.exists(os.path.join(bed.root, path)) for path in doomed)
    assert not any(os.path.exists(os.path.join(bed.root, s["file"])) for s in planned["deleted_slices"])
    assert "pending_deletions" not in Catalog.load(bed.root).document
    assert run(bed.root)[0] is False


def test_a_removal_that_fails_fails_the_run_and_stays_pending(bed, monkeypatch):
    def refused(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", path)
    monkeypatch.setattr(apply.shutil, "rmtree", refused)
    with pytest.raises(CatalogError) as raised:
        run(bed.root)
    assert "retention could not remove daily-2024-03-03 (Permission denied)" in raised.value.message
    assert "the next run removes them" in raised.value.message
    assert " and %d more (see failed)" % (len(raised.value.details["failed"]) - 5) in raised.value.message
    assert raised.value.details["changed"] is True  # the catalog changed: the task says so, failed or not
    details = raised.value.details
    assert details["failed"][0] == {"name": "daily-2024-03-03", "cause": "Permission denied"}
    assert details["deleted_slices"] and not os.path.exists(os.path.join(bed.root, details["deleted_slices"][0]["file"]))
    left = Catalog.load(bed.root).document["pending_deletions"]
    assert sorted(p["name"] for p in left) == sorted(b["label"] for b in details["deleted_backups"])
    monkeypatch.undo()
    changed, repaired = run(bed.root)
    assert changed and [p["name"] for p in repaired["pending_deletions"]] == [p["name"] for p in left]
    assert not any(os.path.exists(os.path.join(bed.root, b["path"])) for b in details["deleted_backups"])


def test_partial_work_of_live_runs_is_never_removed_and_is_reported(bed):
    live = os.path.join(bed.root, "daily-2024-05-02.partial")  # a dump being written
    os.mkdir(live)
    with open(os.path.join(live, ".dbops-mongodb-backup-staging"), "w") as handle:
        handle.write("{}")
    beside = os.path.join(bed.root, "daily-2024-03-03.partial")  # beside a backup that is deleted
    os.mkdir(beside)
    slice_partial = os.path.join(bed.root, "oplog", "rs0", "slice-1714564800-1.partial")
    with open(slice_partial, "wb") as handle:
        handle.write(b"entries")
    changed, result = run(bed.root)
    assert changed and "daily-2024-03-03" in [b["label"] for b in result["deleted_backups"]]
    assert os.path.isdir(live) and os.path.isdir(beside) and os.path.isfile(slice_partial)
    assert sorted(p["path"] for p in result["in_progress"]) == [
        "daily-2024-03-03.partial", "daily-2024-05-02.partial", os.path.join("oplog", "rs0", "slice-1714564800-1.partial")]
    with pytest.raises(CatalogError) as raised:  # even named outright, a .partial is not removed
        apply.remove(Catalog.load(bed.root), "daily-2024-05-02.partial")
    assert "a *.partial a run may be writing" in raised.value.message and os.path.isdir(live)


def test_orphan_slices_are_removed_and_unregistered_backups_only_reported(bed):
    orphan = os.path.join("oplog", "rs0", "1714564800-1_1714568400-1.bson.gz")  # archived, never recorded
    with open(os.path.join(bed.root, orphan), "wb") as handle:
        handle.write(b"entries")
    stranger = os.path.join(bed.root, "oplog", "rs0", "README")
    with open(stranger, "w") as handle:
        handle.write("not ours")
    unregistered = retention_bed.write_backup(bed.root, "copied-in", retention_bed.epoch("2023-01-01T00:00:00Z"),
                                              retention_bed.epoch("2023-01-01T00:00:00Z") - 60)
    _changed, planned = run(bed.root, check_mode=True)
    assert planned["orphans_removed"] == [orphan] and os.path.exists(os.path.join(bed.root, orphan))
    changed, result = run(bed.root)
    assert result["orphans_removed"] == [orphan] and not os.path.exists(os.path.join(bed.root, orphan))
    assert result["unregistered_backups"] == ["copied-in"] and os.path.isdir(unregistered)
    assert os.path.isfile(stranger)


def test_archive_backups_lose_their_manifest_and_snapshot_copies_their_files(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    bed = retention_bed.build(root, now=NOW, days=3, with_files=False)
    archive = os.path.join(bed.root, "old.archive")
    with open(archive, "wb") as handle:
        handle.write(b"archive")
    finished = retention_bed.epoch("2024-01-01T01:00:00Z")
    document = manifest_utils.new_manifest("id-old", "old", "logical", "2024-01-01T00:50:00Z", "2024-01-01T01:00:00Z",
                                           {"replica_set": "rs0"}, "db1:27017", {})
    document["oplog"] = {"start": None, "end": {"ts": "%d:1" % (finished - 60)}}
    manifest_utils.write_json_atomic(manifest_utils.manifest_path(archive, True), document)
    copy = os.path.join(bed.root, "lvm-old.partial")
    os.makedirs(os.path.join(copy, "data"))
    with open(os.path.join(copy, "data", "WiredTiger"), "wb") as handle:
        handle.write(b"wt")
    snapshot_record.record_snapshot_set(bed.root, snapshot_record.SnapshotSet(
        "lvm", "lvm-old", replica_set="rs0", oplog_ts="%d:1" % (finished - 120), files="lvm-old.partial",
        finished_at="2024-01-01T00:58:00.000000Z"))
    with Catalog.locked(bed.root) as catalog:
        catalog.add_backup_from_manifest(archive)
        catalog.save()
    changed, result = run(bed.root, keep_last=3)
    assert sorted(b["label"] for b in result["deleted_backups"]) == ["lvm-old", "old"]
    assert result["cloud_snapshot_sets"] == []  # an LVM copy is only files
    assert sorted(os.listdir(bed.root)) == ["catalog.json"] + bed.labels + ["oplog"]


def test_a_gce_cluster_set_is_returned_once_per_member_with_its_project(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    bed = retention_bed.build(root, now=NOW, days=2, with_files=False)
    link = "https://www.googleapis.com/compute/v1/projects/shop-prod/global/snapshots/"
    members = [{"replica_set": "shard1rs", "shard": "shard1", "member": "s1:27018", "oplog_ts": "1704070000:1",
                "snapshots": [{"name": "c-old-shard1-data", "self_link": link + "c-old-shard1-data"}]},
               {"replica_set": "cfg", "member": "c1:27019", "oplog_ts": "1704070001:1",
                "snapshots": [{"name": "c-old-config-data", "self_link": link + "c-old-config-data"}]}]
    snapshot_record.record_snapshot_set(bed.root, snapshot_record.SnapshotSet(
        "gce", "c-old", replica_set="rs0", members=members, finished_at="2024-01-01T00:00:00.000000Z"))
    _changed, result = run(bed.root, check_mode=True, keep_last=2)
    assert result["cloud_snapshot_sets"] == [
        {"provider": "gce", "label": "c-old.shard1", "backup_label": "c-old", "snapshot_set": result[
            "cloud_snapshot_sets"][0]["snapshot_set"], "project": "shop-prod", "snapshot_names": ["c-old-shard1-data"]},
        {"provider": "gce", "label": "c-old.config", "backup_label": "c-old", "snapshot_set": result[
            "cloud_snapshot_sets"][0]["snapshot_set"], "project": "shop-prod", "snapshot_names": ["c-old-config-data"]}]


def test_bad_input_is_refused_before_anything_is_touched(bed):
    before = tree(bed.root)
    with pytest.raises(InvalidOption) as raised:
        apply.parse_now("yesterday")
    assert "now 'yesterday' is not a UTC time as the catalog records them; use 2024-05-01T00:00:00Z" in raised.value.message
    with pytest.raises(InvalidOption):
        apply.run(bed.root, Policy(keep_last=1), now=retention_bed.epoch(NOW), replica_set="rs1")
    with pytest.raises(CatalogError) as raised:
        apply.run(os.path.join(bed.root, "not-mounted"), Policy(keep_last=1))
    assert "does not exist or is not a directory" in raised.value.message
    assert tree(bed.root) == before


def _run_in_child(root, queue):
    try:
        queue.put(run(root)[1]["deleted_backups"])
    except Exception as exc:  # reported to the parent, which fails the test
        queue.put(repr(exc))


def test_two_runs_at_once_delete_each_backup_once(bed):
    _changed, planned = run(bed.root, check_mode=True)
    queue = multiprocessing.Queue()
    children = [multiprocessing.Process(target=_run_in_child, args=(bed.root, queue)) for _number in range(2)]
    for child in children:
        child.start()
    results = [queue.get(timeout=60) for _child in children]
    for child in children:
        child.join(60)
    assert all(isinstance(r, list) for r in results), results
    assert sorted(len(r) for r in results) == [0, len(planned["deleted_backups"])]  # the second found it done
    assert catalog_paths_exist(bed.root) and "pending_deletions" not in Catalog.load(bed.root).document


def test_a_backup_that_is_a_link_loses_the_link_only(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    bed = retention_bed.build(root, now=NOW, days=2, with_files=False)
    elsewhere = retention_bed.write_backup(tmp_path, "daily-2024-01-01", retention_bed.epoch("2024-01-01T01:00:00Z"),
                                           retention_bed.epoch("2024-01-01T00:59:00Z"))
    os.symlink(elsewhere, os.path.join(bed.root, "linked"))
    with Catalog.locked(bed.root) as catalog:
        catalog.add_backup_from_manifest(os.path.join(bed.root, "linked"))
        catalog.save()
    assert [b["path"] for b in Catalog.load(bed.root).backups][0] == "linked"
    changed, result = run(bed.root, keep_last=2)
    assert [b["path"] for b in result["deleted_backups"]] == ["linked"]
    assert not os.path.lexists(os.path.join(bed.root, "linked"))
    assert os.path.isfile(os.path.join(elsewhere, "manifest.json"))  # what the link pointed at is untouched


def test_a_pending_backup_registered_again_is_left_in_place(bed, monkeypatch):
    """After a killed run, registering every backup under the root lists a pending one again: its files stay."""
    def killed(path, *args, **kwargs):
        raise KeyboardInterrupt("killed")
    monkeypatch.setattr(apply.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        run(bed.root)
    monkeypatch.undo()
    assert not os.path.exists(os.path.join(bed.root, "daily-2024-03-03", "manifest.json"))  # its manifest went first
    assert os.path.exists(os.path.join(bed.root, "daily-2024-03-04", "manifest.json"))  # never reached
    with Catalog.locked(bed.root) as catalog:  # what mongodb_backup_catalog does for every backup under the root
        for path in entries.find_backups(bed.root):
            catalog.add_backup_from_manifest(path)
        catalog.save()
    listed = [b["label"] for b in Catalog.load(bed.root).backups]
    assert "daily-2024-03-04" in listed and "daily-2024-03-03" not in listed  # half removed: no backup any more

    _changed, result = run(bed.root, keep_last=100)
    assert {"name": "daily-2024-03-04", "cause": "the catalog lists daily-2024-03-04 again: left in place"} in \
        result["left_in_place"]
    assert catalog_paths_exist(bed.root)
    assert not os.path.exists(os.path.join(bed.root, "daily-2024-03-03"))
    assert "pending_deletions" not in Catalog.load(bed.root).document


def test_an_empty_root_changes_nothing_and_slices_without_a_base_stay(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    changed, result = run(root, keep_last=1)
    assert changed is False and result["deleted_backups"] == [] and os.listdir(str(root)) == []
    # slices of a replica set that has no backup in the catalog: nothing to measure them against
    (root / "oplog" / "rs0").mkdir(parents=True)
    with Catalog.locked(str(root)) as catalog:
        catalog.slices.append(retention_bed.slice_record(root, 1700000000, 1700003600))
        catalog.save()
    changed, result = run(root, keep_last=1)
    assert changed is False and result["deleted_slices"] == []
    assert result["kept_slices"][0]["reasons"] == [
        "no kept point-in-time base of replica set rs0 to measure it against: never deleted"]
