# -*- coding: utf-8 -*-
"""The backup catalog: registration, PITR windows, gaps, restore plans, locking and atomic writes."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import multiprocessing
import os
import stat
import threading

import pytest
from bson import Timestamp

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog import report
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog import pitr
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import timestamps
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import manifest as manifest_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog.store import Catalog
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import (
    CatalogError, LockError, OplogGap)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import InvalidOption

BASE = 1700000000


def make_backup(root, name, start, end, replica_set="rs0", finished=None, archive=False, backup_id=None):
    """A backup as the dump engine leaves it: only the manifest matters to the catalog."""
    finished = BASE + end if finished is None else finished
    document = manifest_utils.new_manifest(
        backup_id or "id-" + name, name, "logical", timestamps.iso_time(finished - 10),
        timestamps.iso_time(finished), {"replica_set": replica_set, "topology": "replicaset"}, "db1:27017", {})
    document["oplog"] = {"start": {"ts": "%d:1" % (BASE + start)}, "end": {"ts": "%d:1" % (BASE + end)}, "entries": 3}
    document["totals"] = {"bytes": 1000, "bytes_on_disk": 400, "documents": 10}
    target = os.path.join(str(root), name)
    if archive:
        with open(target, "wb") as handle:
            handle.write(b"archive")
    else:
        os.mkdir(target)
    manifest_utils.write_json_atomic(manifest_utils.manifest_path(target, archive), document)
    return target


def make_slice(root, replica_set, first, last, content=None):
    directory = os.path.join(str(root), "oplog", replica_set)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "%d-%d.bson" % (first, last))
    with open(path, "wb") as handle:
        handle.write(content or ("slice %d %d" % (first, last)).encode())
    return path


def ts(offset, inc=1):
    return "%d:%d" % (BASE + offset, inc)


def register(root, backups=(), slices=(), gaps=(), replica_set="rs0"):
    with Catalog.locked(str(root)) as cat:
        for name, start, end in backups:
            cat.add_backup_from_manifest(make_backup(root, name, start, end, replica_set))
        for first, last in slices:
            cat.add_slice(replica_set, ts(first), ts(last), make_slice(root, replica_set, first, last), entries=5)
        for last_archived, oldest in gaps:
            cat.record_gap(replica_set, ts(last_archived), ts(oldest))
        cat.save()
    return Catalog.load(str(root))


# --------------------------------------------------------------------------- registration and files

def test_empty_root_reads_as_empty_catalog(tmp_path):
    cat = Catalog.load(str(tmp_path))
    assert cat.backups == [] and pitr.windows(cat) == [] and cat.last_archived_ts("rs0") is None
    assert not os.path.exists(cat.path)


def test_missing_root_is_refused(tmp_path):
    with pytest.raises(CatalogError, match="does not exist or is not a directory; create it or mount"):
        Catalog.load(str(tmp_path / "nope"))


def test_register_backup_is_idempotent_and_private(tmp_path):
    path = make_backup(tmp_path, "nightly-1", 0, 100)
    with Catalog.locked(str(tmp_path)) as cat:
        record, added = cat.add_backup_from_manifest(path)
        assert added and record["path"] == "nightly-1" and record["oplog_end"] == ts(100)
        assert record["bytes"] == 400 and record["data_bytes"] == 1000 and record["replica_set"] == "rs0"
        cat.save()
    with Catalog.locked(str(tmp_path)) as cat:
        assert cat.add_backup_from_manifest(path)[1] is False
        assert not cat.changed
    assert stat.S_IMODE(os.stat(cat.path).st_mode) == 0o600
    assert not os.path.exists(os.path.join(str(tmp_path), "catalog.lock"))  # released: core.locking removes it
    assert not os.path.exists(cat.path + ".partial")
    assert len(json.loads(open(cat.path).read())["backups"]) == 1


def test_archive_backup_and_backup_replaced_in_place(tmp_path):
    path = make_backup(tmp_path, "a.archive", 0, 100, archive=True)
    with Catalog.locked(str(tmp_path)) as cat:
        assert cat.add_backup_from_manifest(path)[0]["format"] == "archive"
        os.remove(manifest_utils.manifest_path(path, True))
        os.remove(path)
        make_backup(tmp_path, "a.archive", 0, 200, archive=True, backup_id="second")
        record, added = cat.add_backup_from_manifest(path)
        assert added and [b["backup_id"] for b in cat.backups] == ["second"]


def test_directory_without_manifest_is_not_a_backup(tmp_path):
    (tmp_path / "half").mkdir()
    with Catalog.locked(str(tmp_path)) as cat:
        with pytest.raises(CatalogError, match="half is not a complete backup: it has no manifest"):
            cat.add_backup_from_manifest(str(tmp_path / "half"))


def test_read_only_catalog_cannot_be_saved(tmp_path):
    with pytest.raises(CatalogError, match="read-only"):
        Catalog.load(str(tmp_path)).save()


def test_corrupt_catalog_is_reported(tmp_path):
    (tmp_path / "catalog.json").write_text("{not json")
    with pytest.raises(CatalogError, match="cannot be read.*move it aside"):
        Catalog.load(str(tmp_path))


def test_slice_idempotent_by_file_and_hashed(tmp_path):
    path = make_slice(tmp_path, "rs0", 100, 200, b"abc")
    with Catalog.locked(str(tmp_path)) as cat:
        record, added = cat.add_slice("rs0", ts(100), ts(200), path, entries=3)
        assert added and record["file"] == os.path.join("oplog", "rs0", "100-200.bson")
        assert record["sha256"] == hashlib.sha256(b"abc").hexdigest() and record["bytes"] == 3
        assert cat.add_slice("rs0", ts(100), ts(200), path)[1] is False
        with pytest.raises(InvalidOption, match="first timestamp .* is after the last"):
            cat.add_slice("rs0", ts(300), ts(200), path + "x", size=1, sha256="0")


def test_slice_record_as_the_archiver_gives_it(tmp_path):
    with Catalog.locked(str(tmp_path)) as cat:
        record, added = cat.add_slice(replica_set="rs0", first_ts=ts(1), last_ts=ts(2), entries=2,
                                      file="oplog/rs0/x.bson.gz", bytes=7, sha256="ab", compression="gzip")
        assert added and record["bytes"] == 7 and record["compression"] == "gzip"
        assert record["file"] == "oplog/rs0/x.bson.gz"


def test_last_archived_ts(tmp_path):
    cat = register(tmp_path, backups=[("b1", 0, 100)])
    assert cat.last_archived_ts("rs0") == ts(100)
    assert cat.last_archived_ts("other") is None
    cat = register(tmp_path, slices=[(100, 200), (200, 300)])
    assert cat.last_archived_ts("rs0") == ts(300)


def test_capture_resumes_from_a_new_full_backup_after_a_gap(tmp_path):
    cat = register(tmp_path, backups=[("b1", 0, 100)], slices=[(100, 200)])
    assert cat.last_archived_ts("rs0") == ts(200)
    cat = register(tmp_path, backups=[("b2", 250, 300)])
    assert cat.last_archived_ts("rs0") == ts(200)  # no gap known: keep the chain going from the slices
    cat = register(tmp_path, gaps=[(200, 260)])
    assert cat.last_archived_ts("rs0") == ts(300)  # the chain is broken: start again from the new backup


def test_gap_with_an_empty_oplog(tmp_path):
    with Catalog.locked(str(tmp_path)) as cat:
        cat.add_backup_from_manifest(make_backup(tmp_path, "b1", 0, 100))
        cat.add_slice("rs0", ts(100), ts(200), make_slice(tmp_path, "rs0", 100, 200))
        cat.record_gap("rs0", ts(150), None)
        assert cat.record_gap("rs0", ts(150), None)[1] is False
        with pytest.raises(InvalidOption):
            cat.record_gap("rs0", None, ts(1))
        assert pitr.windows(cat)[0]["end_ts"] == ts(150)
        with pytest.raises(OplogGap, match="up to the oldest entry then available were lost"):
            pitr.restore_plan(cat, ts(180))


def test_timestamps_compare_as_numbers_not_text():
    assert timestamps.ts_key("1700000009:10") > timestamps.ts_key("1700000009:9")
    assert timestamps.ts_key(Timestamp(5, 6)) == (5, 6)
    with pytest.raises(InvalidOption):
        timestamps.ts_key("yesterday")


# --------------------------------------------------------------------------- windows

def test_backup_without_slices_is_a_point_window(tmp_path):
    cat = register(tmp_path, backups=[("b1", 0, 100)])
    (window,) = pitr.windows(cat)
    assert (window["start_ts"], window["end_ts"], window["slices"]) == (ts(100), ts(100), 0)
    assert window["start_time"] == "2023-11-14T22:15:00Z"


def test_window_follows_contiguous_slices_and_stops_at_a_hole(tmp_path):
    # slices start at the previous last_ts inclusive; 400-500 starts after 300: a hole
    cat = register(tmp_path, backups=[("b1", 0, 100), ("b2", 150, 250)],
                   slices=[(100, 200), (200, 300), (400, 500)])
    first, second = pitr.windows(cat, "rs0")
    assert (first["backup_label"], first["start_ts"], first["end_ts"], first["slices"]) == ("b1", ts(100), ts(300), 2)
    assert (second["start_ts"], second["end_ts"], second["slices"]) == (ts(250), ts(300), 1)
    assert first["stopped_by_gap"] is None


def test_slices_sharing_their_boundary_entry_extend_the_chain(tmp_path):
    # a slice may start before the backup's end; consecutive slices share one entry (overlapping
    # slices are refused, see tests/unit/test_oplog_truth_catalog.py)
    cat = register(tmp_path, backups=[("b1", 0, 100)], slices=[(50, 150), (150, 180), (180, 260)])
    assert pitr.windows(cat)[0]["end_ts"] == ts(260)


def test_recorded_gap_ends_the_window(tmp_path):
    # capture archived up to 200, found the oplog starting at 260: a slice that claims to
    # continue from 200 must not carry the window past the gap
    cat = register(tmp_path, backups=[("b1", 0, 100), ("b3", 270, 300)],
                   slices=[(100, 200), (200, 400)], gaps=[(200, 260)])
    first, second = pitr.windows(cat)
    assert first["end_ts"] == ts(200) and first["stopped_by_gap"]["oldest_available_ts"] == ts(260)
    assert second["start_ts"] == ts(300) and second["end_ts"] == ts(400) and second["stopped_by_gap"] is None


def test_windows_per_replica_set(tmp_path):
    register(tmp_path, backups=[("a", 0, 100)], replica_set="rsA")
    cat = register(tmp_path, backups=[("b", 0, 100)], slices=[(100, 300)], replica_set="rsB")
    assert [w["replica_set"] for w in pitr.windows(cat)] == ["rsA", "rsB"]
    assert [w["end_ts"] for w in pitr.windows(cat, "rsB")] == [ts(300)]


# --------------------------------------------------------------------------- restore plans

def test_plan_picks_newest_backup_before_target_and_only_needed_slices(tmp_path):
    cat = register(tmp_path, backups=[("b1", 0, 100), ("b2", 150, 250), ("b3", 350, 450)],
                   slices=[(100, 200), (200, 300), (300, 400), (400, 500)])
    plan = pitr.restore_plan(cat, ts(320))
    assert plan["backup"]["label"] == "b2" and plan["oplog_limit"] == ts(320)
    assert [(s["first_ts"], s["last_ts"]) for s in plan["slices"]] == [(ts(200), ts(300)), (ts(300), ts(400))]
    assert os.path.isabs(plan["slices"][0]["path"]) and plan["backup"]["absolute_path"] == str(tmp_path / "b2")
    assert pitr.verify_slices(str(tmp_path), plan) == 2


def test_plan_with_iso_target_and_target_right_after_backup(tmp_path):
    cat = register(tmp_path, backups=[("b1", 0, 100)], slices=[(100, 200)])
    plan = pitr.restore_plan(cat, Timestamp(BASE + 150, 0))
    assert plan["backup"]["label"] == "b1" and len(plan["slices"]) == 1
    # the entry right after the backup's end: the backup alone is enough
    assert pitr.restore_plan(cat, "%d:2" % (BASE + 100))["slices"] == []


def test_plan_target_at_chain_end_inclusive(tmp_path):
    cat = register(tmp_path, backups=[("b1", 0, 100)], slices=[(100, 200)])
    assert len(pitr.restore_plan(cat, "%d:2" % (BASE + 200))["slices"]) == 1  # everything through 200:1
    with pytest.raises(OplogGap, match="does not reach the target"):
        pitr.restore_plan(cat, "%d:3" % (BASE + 200))  # would need 200:2, which nobody archived


def test_plan_refuses_target_before_every_backup(tmp_path):
    cat = register(tmp_path, backups=[("b1", 0, 100)])
    with pytest.raises(CatalogError, match="no full backup of replica set rs0 .* ends before the target .* the oldest, "
                                           "b1, ends at %s .* choose a later target" % ts(100)):
        pitr.restore_plan(cat, ts(100))  # a target is exclusive: the backup holds the entry at 100:1


def test_plan_refuses_empty_catalog(tmp_path):
    with pytest.raises(CatalogError, match="no full backup with an oplog"):
        pitr.restore_plan(Catalog.load(str(tmp_path)), ts(100), "rs0")


def test_plan_names_the_gap(tmp_path):
    cat = register(tmp_path, backups=[("b1", 0, 100)], slices=[(100, 200), (200, 400)], gaps=[(200, 260)])
    with pytest.raises(OplogGap) as raised:
        pitr.restore_plan(cat, ts(300))
    message = raised.value.message
    assert "oplog gap on replica set rs0: the entries after %s" % ts(200) in message
    assert "up to %s were lost" % ts(260) in message
    assert "choose a target at or before %s, or take a new full backup" % ts(200) in message
    assert raised.value.details["last_archived_ts"] == ts(200)
    # before the gap the chain is fine
    assert len(pitr.restore_plan(cat, ts(180))["slices"]) == 1


def test_plan_names_missing_coverage(tmp_path):
    cat = register(tmp_path, backups=[("b1", 0, 100)], slices=[(100, 200), (300, 400)])
    with pytest.raises(OplogGap, match="run without a break only up to %s" % ts(200)):
        pitr.restore_plan(cat, ts(350))


def test_plan_needs_replica_set_when_several(tmp_path):
    register(tmp_path, backups=[("a", 0, 100)], replica_set="rsA")
    cat = register(tmp_path, backups=[("b", 0, 100)], replica_set="rsB")
    with pytest.raises(InvalidOption, match="several replica sets \\(rsA, rsB\\); set replica_set"):
        pitr.restore_plan(cat, ts(200))
    assert pitr.restore_plan(cat, ts(100, 2), "rsB")["backup"]["label"] == "b"


def test_verify_slices_names_corrupt_and_missing_files(tmp_path):
    cat = register(tmp_path, backups=[("b1", 0, 100)], slices=[(100, 200), (200, 300)])
    plan = pitr.restore_plan(cat, ts(250))
    with open(plan["slices"][1]["path"], "ab") as handle:
        handle.write(b"x")
    with pytest.raises(CatalogError, match="200-300.bson is corrupt: its sha256 is"):
        pitr.verify_slices(str(tmp_path), plan)
    os.remove(plan["slices"][0]["path"])
    with pytest.raises(CatalogError, match="100-200.bson .* is missing"):
        pitr.verify_slices(str(tmp_path), plan)


# --------------------------------------------------------------------------- summary and max_age

def test_summary_and_max_age(tmp_path):
    cat = register(tmp_path, backups=[("b1", 0, 100), ("b2", 0, 1000)], slices=[(1000, 1100)])
    now = BASE + 1000 + 3 * 3600
    summary = report.summary(cat, now=now)
    assert summary["last_backup"]["label"] == "b2" and summary["last_backup"]["age_seconds"] == 3 * 3600
    assert summary["total_bytes"] == 800 + summary["slices"]["bytes"] and summary["slices"]["count"] == 1
    assert report.check_max_age(summary, "4h") is None
    message = report.check_max_age(summary, "2h")
    assert message == ("newest complete backup b2 finished at %s, 3h ago, older than max_age 2h; check the "
                       "backup schedule" % timestamps.iso_time(BASE + 1000))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no complete backup is registered" in report.check_max_age(report.summary(Catalog.load(str(empty))), "1d")


def set_verified(root, label, ok, at):
    with Catalog.locked(str(root)) as cat:
        entry = next(b for b in cat.backups if b["label"] == label)
        entry["verified"] = {"ok": ok, "at": timestamps.iso_time(at), "restore_seconds": 12.5, "mb_per_s": 3.2,
                             "collections": 2, "documents": 10, "target_time": None,
                             "failures": [] if ok else ["shop.orders: content hash differs"]}
        cat.changed = True
        cat.save()
    return Catalog.load(str(root))


def test_newest_verified_backup_and_verify_max_age(tmp_path):
    cat = register(tmp_path, backups=[("b1", 0, 100), ("b2", 0, 1000), ("b3", 0, 2000)])
    assert all(b["verified"] is None for b in cat.backups)  # never verified
    now = BASE + 2000 + 3600
    summary = report.summary(cat, now=now)
    assert summary["last_verified"] is None and summary["last_backup"]["verified"] is False
    assert report.check_verify_max_age(summary, "1d").startswith("no backup in the catalog %s has passed a test "
                                                                 "restore" % cat.path)
    set_verified(tmp_path, "b1", True, BASE + 150)
    set_verified(tmp_path, "b2", True, BASE + 1100)
    cat = set_verified(tmp_path, "b3", False, BASE + 2100)  # the newest failed: b2 is the newest proven one
    summary = report.summary(cat, now=now)
    last = summary["last_verified"]
    assert (last["label"], last["age_seconds"], last["verified_age_seconds"]) == ("b2", 1000 + 3600, 2000 + 3600 - 1100)
    assert last["restore_seconds"] == 12.5 and last["verified_at"] == timestamps.iso_time(BASE + 1100)
    assert summary["last_backup"]["label"] == "b3" and summary["last_backup"]["verified"] is False
    assert report.check_verify_max_age(summary, "2h") is None
    assert report.check_verify_max_age(summary, "1h") == (
        "newest verified backup b2 finished at %s, 1h 16m 40s ago, older than verify_max_age 1h (verified at %s); "
        "verify a newer backup, and check that verification runs after the backups"
        % (timestamps.iso_time(BASE + 1000), timestamps.iso_time(BASE + 1100)))


def test_catalogs_before_verification_read_as_never_verified(tmp_path):
    cat = register(tmp_path, backups=[("b1", 0, 100)])
    with Catalog.locked(str(tmp_path)) as locked:
        locked.backups[0].update(verified=False, verified_at=None)  # what 1.2.0 wrote
        locked.changed = True
        locked.save()
    cat = Catalog.load(str(tmp_path))
    assert report.summary(cat)["last_verified"] is None and report.summary(cat)["last_backup"]["verified"] is False


@pytest.mark.parametrize("text, seconds", [("26h", 93600), ("90m", 5400), ("2d", 172800), ("3600", 3600),
                                           (3600, 3600), ("45s", 45), ("1w", 604800)])
def test_parse_duration(text, seconds):
    assert timestamps.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1y", "-5m", "0", "h"])
def test_parse_duration_rejects(text):
    with pytest.raises(InvalidOption):
        timestamps.parse_duration(text)


# --------------------------------------------------------------------------- concurrency

def _add_slices(root, writer, count):
    for number in range(count):
        with Catalog.locked(root) as cat:
            cat.add_slice("rs%d" % writer, "%d:1" % number, "%d:2" % number, "w%d-%d.bson" % (writer, number),
                          entries=1, size=1, sha256="0" * 64)
            cat.save()


def test_racing_processes_lose_no_entry(tmp_path):
    root = str(tmp_path)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_add_slices, args=(root, writer, 15)) for writer in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    cat = Catalog.load(root)
    assert len(cat.slices) == 60
    assert sorted(os.listdir(root)) == ["catalog.json"]  # no .partial nor lock file left behind


def test_racing_threads_lose_no_entry(tmp_path):
    root = str(tmp_path)
    threads = [threading.Thread(target=_add_slices, args=(root, writer, 10)) for writer in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(Catalog.load(root).slices) == 40


def test_lock_timeout_names_the_lock(tmp_path):
    root = str(tmp_path)
    with Catalog.locked(root):
        with pytest.raises(LockError, match="catalog.json is in use by another run .*stayed locked for 0.2 seconds"):
            with Catalog.locked(root, timeout=0.2):
                pass


def test_failed_write_keeps_the_old_catalog(tmp_path, monkeypatch):
    cat = register(tmp_path, backups=[("b1", 0, 100)])
    before = open(cat.path).read()

    def broken_dump(document, handle, **kwargs):
        handle.write('{"format": "half')
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(manifest_utils.json, "dump", broken_dump)
    with pytest.raises(OSError):
        with Catalog.locked(str(tmp_path)) as locked:
            locked.add_backup_from_manifest(make_backup(tmp_path, "b2", 0, 200))
            locked.save()
    assert open(cat.path).read() == before
    assert len(Catalog.load(str(tmp_path)).backups) == 1
