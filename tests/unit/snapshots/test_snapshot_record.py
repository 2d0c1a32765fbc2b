"""A snapshot set recorded as a backup of the root: its manifest, its catalog entry, and PITR planning from it."""

import json
import os
import stat
import threading

import pytest

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog import pitr
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog.store import Catalog
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import CatalogError, InvalidOption
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import manifest as manifest_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.bsonio import sha256_file
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import restore as restore_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.snapshots import facts
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.snapshots.record import (
    SnapshotSet, record_snapshot_set)

BASE = 1700000000
EBS_SNAPSHOTS = [{"snapshot_id": "snap-0a", "volume_id": "vol-0a", "device": "/dev/sdf", "volume_size": 100},
                 {"snapshot_id": "snap-0b", "volume_id": "vol-0b", "device": "/dev/sdg", "volume_size": 100}]


def ts(offset, inc=1):
    return "%d:%d" % (BASE + offset, inc)


def ebs_set(label="snap-1", oplog_ts=None, **extra):
    return SnapshotSet("ebs", label, snapshot_set=extra.pop("snapshot_set", "set-" + label), replica_set="rs0",
                       member="db3:27017", oplog_ts=oplog_ts or ts(100), snapshots=EBS_SNAPSHOTS, **extra)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_cloud_set_gets_a_private_manifest_directory_and_a_catalog_entry_that_is_a_pitr_base(tmp_path):
    changed, record = record_snapshot_set(str(tmp_path), ebs_set())
    assert changed
    target = tmp_path / "snap-1"
    document = json.loads((target / "manifest.json").read_text())
    assert document["kind"] == "snapshot" and document["backup_id"] == "set-snap-1"
    assert document["snapshot"]["snapshots"] == EBS_SNAPSHOTS and document["snapshot"]["provider"] == "ebs"
    assert document["oplog"]["end"]["ts"] == ts(100)
    assert mode(target) == 0o700 and mode(target / "manifest.json") == 0o600
    assert not os.path.exists(str(target) + ".partial")
    entry = Catalog.load(str(tmp_path)).backups[0]
    assert (entry["kind"], entry["provider"], entry["oplog_end"], entry["snapshots"], entry["replica_set"]) == \
        ("snapshot", "ebs", ts(100), 2, "rs0")
    assert record == entry


def test_recording_the_same_set_again_changes_nothing_and_another_set_cannot_take_its_label(tmp_path):
    record_snapshot_set(str(tmp_path), ebs_set())
    before = (tmp_path / "catalog.json").read_text()
    changed, _record = record_snapshot_set(str(tmp_path), ebs_set())
    assert not changed and (tmp_path / "catalog.json").read_text() == before
    with pytest.raises(CatalogError, match="already holds the backup set-snap-1.*give the snapshot set another label"):
        record_snapshot_set(str(tmp_path), ebs_set(snapshot_set="another"))


def test_two_runs_recording_sets_under_one_label_at_once_write_one_backup(tmp_path):
    """Two runs at once: the same set is recorded once; a different set under the same label is refused."""
    outcomes = []

    def record(snapshot_set):
        try:
            outcomes.append(record_snapshot_set(str(tmp_path), snapshot_set)[0])
        except CatalogError as exc:
            outcomes.append(exc.message)

    runs = [threading.Thread(target=record, args=(ebs_set(),)) for _run in range(4)]
    runs.append(threading.Thread(target=record, args=(ebs_set(snapshot_set="another"),)))
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    document = json.loads((tmp_path / "snap-1" / "manifest.json").read_text())
    winner = document["backup_id"]
    assert outcomes.count(True) == 1 and len(Catalog.load(str(tmp_path)).backups) == 1
    refused = [o for o in outcomes if isinstance(o, str)]
    assert len(refused) == (4 if winner == "another" else 1) and all("already holds" in o for o in refused)
    assert [n for n in os.listdir(str(tmp_path)) if n.endswith(".partial")] == []


def test_check_mode_writes_nothing(tmp_path):
    changed, planned = record_snapshot_set(str(tmp_path), ebs_set(), check_mode=True)
    assert changed and planned["label"] == "snap-1" and os.listdir(str(tmp_path)) == []


def test_a_cloud_set_without_snapshots_or_a_bad_label_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(InvalidOption, match="lists no snapshots"):
        SnapshotSet("gce", "snap-1", oplog_ts=ts(1))
    with pytest.raises(InvalidOption, match="may only hold letters"):
        SnapshotSet("ebs", "snap 1/..", snapshots=EBS_SNAPSHOTS)
    with pytest.raises(InvalidOption, match="unknown keys shrad"):
        SnapshotSet("ebs", "snap-1", members=[{"shrad": "s0", "snapshots": EBS_SNAPSHOTS}])
    assert os.listdir(str(tmp_path)) == []


def test_lvm_copy_is_checksummed_made_private_and_renamed_into_place(tmp_path):
    partial = tmp_path / "lvm-1.partial"
    (partial / "journal").mkdir(parents=True)
    (partial / "collection-0.wt").write_bytes(b"w" * 5000)
    (partial / "journal" / "WiredTigerLog.1").write_bytes(b"j" * 100)
    os.chmod(str(partial / "collection-0.wt"), 0o644)
    changed, record = record_snapshot_set(str(tmp_path), SnapshotSet(
        "lvm", "lvm-1", replica_set="rs0", oplog_ts=ts(5), files=str(partial)))
    target = tmp_path / "lvm-1"
    assert changed and not partial.exists() and target.is_dir()
    document = manifest_utils.read_manifest(str(target / "manifest.json"))
    files = dict((f["path"], f) for f in document["files"])
    assert sorted(files) == ["collection-0.wt", "journal/WiredTigerLog.1"]
    assert files["collection-0.wt"]["sha256"] == sha256_file(str(target / "collection-0.wt"))
    assert mode(target / "collection-0.wt") == 0o600 and mode(target / "journal") == 0o700
    assert manifest_utils.damaged_files(str(target), False, document) == []
    assert record["bytes"] == 5100


def test_an_empty_lvm_copy_is_not_registered(tmp_path):
    (tmp_path / "lvm-1.partial").mkdir()
    with pytest.raises(CatalogError, match="holds no files: the copy failed"):
        record_snapshot_set(str(tmp_path), SnapshotSet("lvm", "lvm-1", files=str(tmp_path / "lvm-1.partial")))
    assert not (tmp_path / "lvm-1").exists() and Catalog.load(str(tmp_path)).backups == []


def test_a_snapshot_backup_is_refused_by_a_logical_restore_naming_the_way_to_restore_it(tmp_path):
    record_snapshot_set(str(tmp_path), ebs_set())
    source = restore_engine.open_source(str(tmp_path / "snap-1"))
    with pytest.raises(InvalidOption, match="is a ebs snapshot set .*snapshot_restore role.*oplog_only: true"):
        restore_engine.verify_source(source, restore_engine.RestoreOptions(str(tmp_path / "snap-1")))


def _slice(root, first, last):
    directory = os.path.join(str(root), "oplog", "rs0")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "%d-%d.bson" % (first, last))
    with open(path, "wb") as handle:
        handle.write(b"slice %d %d" % (first, last))
    return path


def test_a_snapshot_base_has_a_window_and_a_plan_uses_only_the_slices_after_its_oplog_time(tmp_path):
    """Slices archived before the snapshot, then after it: a target after the snapshot plans from the snapshot
    (the newest base before the target) with the slices that carry it forward."""
    with Catalog.locked(str(tmp_path)) as catalog:
        for first, last in ((0, 50), (50, 100), (100, 150), (150, 200)):
            catalog.add_slice("rs0", ts(first), ts(last), _slice(tmp_path, first, last), entries=5)
        catalog.save()
    record_snapshot_set(str(tmp_path), ebs_set(oplog_ts=ts(120)))
    catalog = Catalog.load(str(tmp_path))
    window = pitr.windows(catalog)[0]
    assert (window["backup_label"], window["start_ts"], window["end_ts"], window["slices"]) == \
        ("snap-1", ts(120), ts(200), 2)
    plan = pitr.restore_plan(catalog, ts(180))
    assert plan["backup"]["kind"] == "snapshot" and plan["backup"]["oplog_end"] == ts(120)
    assert [s["first_ts"] for s in plan["slices"]] == [ts(100), ts(150)]
    with pytest.raises(CatalogError, match="ends before the target"):
        pitr.restore_plan(catalog, ts(110))


def test_a_cluster_snapshot_set_is_recorded_but_is_no_point_in_time_base(tmp_path):
    members = [{"shard": "shard0", "replica_set": "shard0", "member": "s0b:27018", "oplog_ts": ts(10),
                "snapshots": EBS_SNAPSHOTS[:1]},
               {"replica_set": "config", "member": "cfg2:27019", "oplog_ts": ts(11), "snapshots": EBS_SNAPSHOTS[1:]}]
    record_snapshot_set(str(tmp_path), SnapshotSet("ebs", "cluster-1", members=members))
    entry = Catalog.load(str(tmp_path)).backups[0]
    assert entry["members"] == ["shard0", "config"] and entry["oplog_end"] is None
    assert pitr.windows(Catalog.load(str(tmp_path))) == []


def test_gce_label_values_never_silently_merge_two_labels():
    assert facts.gce_value("Nightly.2026:5+1") == "nightly-2026-5-1"
    facts.check_gce_label("nightly-2026-12-01")
    with pytest.raises(InvalidOption, match="use 'nightly-2026-5-1'"):
        facts.check_gce_label("Nightly.2026:5+1")
    labels = facts.gce_labels(facts.snapshot_facts("snap-1", "abc", "rs0", oplog_ts=ts(1)), {"team": "db"})
    assert labels["dbops-oplog-ts"] == "%d-1" % (BASE + 1) and labels["team"] == "db"
    tags = facts.aws_tags(facts.snapshot_facts("snap-1", "abc", "rs0", oplog_ts=ts(1)),
                          {"dbops:backup-label": "user value loses"})
    assert tags["dbops:backup-label"] == "snap-1" and facts.facts_from_aws_tags(
        [{"Key": k, "Value": v} for k, v in tags.items()])["oplog_ts"] == ts(1)
