# -*- coding: utf-8 -*-
"""The retention plan on a 400-day catalog: daily backups, hourly slices, an oplog gap, an EBS snapshot set and
a verified backup. Every expectation is written out from the calendar, not from the engine."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import hashlib

import pytest

import retention_bed
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog.store import Catalog
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.timestamps import ts_key
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import InvalidOption
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.retention import plan as plan_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.retention.policy import Policy

NOW = "2024-05-01T12:00:00Z"      # a Wednesday, ISO week 2024-W18
GAP_DAY = "2024-04-27"            # entries lost from 05:00 until the 2024-04-28 backup
SNAPSHOT_DAY = "2023-11-15"       # an EBS snapshot set at 13:00, after that day's logical backup
VERIFIED_DAY = "2023-09-15"       # the newest verified backup
TODAY = datetime.date(2024, 5, 1)


def last_days(count):
    return ["daily-%s" % (TODAY - datetime.timedelta(days=n)) for n in range(count)]


def labels(*days):
    return ["daily-" + day for day in days]


WEEKLY_12 = labels("2024-05-01", "2024-04-28", "2024-04-21", "2024-04-14", "2024-04-07", "2024-03-31", "2024-03-24",
                   "2024-03-17", "2024-03-10", "2024-03-03", "2024-02-25", "2024-02-18")
MONTHLY_12 = labels("2024-05-01", "2024-04-30", "2024-03-31", "2024-02-29", "2024-01-31", "2023-12-31", "2023-11-30",
                    "2023-10-31", "2023-09-30", "2023-08-31", "2023-07-31", "2023-06-30")
GFS = {"keep_daily": 30, "keep_weekly": 12, "keep_monthly": 12, "keep_yearly": 3, "pitr_window_days": 7}

# policy, the backups kept besides the newest verified one, the backup whose oplog end is the oldest a kept
# slice reaches back to, the backup whose window the gap breaks (None: no kept window crosses it)
CASES = [
    ("keep_last", {"keep_last": 3}, last_days(3), "daily-2024-04-29", None),
    ("keep_daily", {"keep_daily": 7}, last_days(7), "daily-2024-04-25", "daily-2024-04-25"),
    # the snapshot set is the newest backup of its day, so it is that day's keeper
    ("keep_daily_with_snapshot", {"keep_daily": 200},
     [d for d in last_days(200) if d != "daily-" + SNAPSHOT_DAY] + ["snapshot-" + SNAPSHOT_DAY],
     last_days(200)[-1], last_days(200)[-1]),
    ("keep_weekly", {"keep_weekly": 4}, WEEKLY_12[:4], "daily-2024-04-14", "daily-2024-04-14"),
    ("keep_monthly", {"keep_monthly": 3}, MONTHLY_12[:3], "daily-2024-03-31", "daily-2024-03-31"),
    # only two years have a backup: the others are not made up
    ("keep_yearly", {"keep_yearly": 5}, labels("2024-05-01", "2023-12-31"), "daily-2023-12-31", "daily-2023-12-31"),
    ("pitr_window", {"pitr_window_days": 7}, last_days(8), "daily-2024-04-24", "daily-2024-04-24"),
    ("pitr_window_after_the_gap", {"pitr_window_days": 3, "keep_last": 1}, last_days(4), "daily-2024-04-28", None),
    # the policy: the GFS set plus what the 7-day window needs; old GFS backups pin no slices
    ("gfs_and_pitr", GFS, sorted(set(last_days(30) + WEEKLY_12 + MONTHLY_12)), "daily-2024-04-24",
     "daily-2024-04-24"),
]


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    root = tmp_path_factory.mktemp("retention-400")
    return retention_bed.build(root, now=NOW, days=400, gap_day=GAP_DAY, snapshot_day=SNAPSHOT_DAY,
                               verified_days=[VERIFIED_DAY], with_files=False)


@pytest.fixture(scope="module")
def catalog(bed):
    return Catalog.load(bed.root)


def oplog_end(catalog, label):
    return ts_key(next(b for b in catalog.backups if b["label"] == label)["oplog_end"])


@pytest.mark.parametrize("name, policy, kept, slices_from, broken_from", CASES, ids=[c[0] for c in CASES])
def test_the_plan_keeps_exactly_what_the_policy_says(catalog, bed, name, policy, kept, slices_from, broken_from):
    plan = plan_utils.make_plan(catalog, Policy(**policy), bed.now)
    everything = sorted(b["label"] for b in catalog.backups)
    assert len(everything) == 401  # 400 days and the snapshot set
    expected = sorted(set(kept) | {"daily-" + VERIFIED_DAY})
    assert sorted(r["label"] for r, _reasons in plan.keep_backups) == expected
    assert sorted(r["label"] for r in plan.delete_backups) == sorted(set(everything) - set(expected))
    assert all(reasons for _r, reasons in plan.keep_backups)

    horizon = oplog_end(catalog, slices_from)
    slices = catalog.slices_of("rs0")
    assert [s["file"] for s, _reasons in plan.keep_slices] == [
        s["file"] for s in slices if ts_key(s["last_ts"]) > horizon]
    assert [s["file"] for s in plan.delete_slices] == [s["file"] for s in slices if ts_key(s["last_ts"]) <= horizon]

    assert plan.gaps == catalog.gaps  # reported whatever the policy
    assert [b["backup_label"] for b in plan.broken_chains] == ([broken_from] if broken_from else [])
    for broken in plan.broken_chains:
        assert broken["ends_ts"] == bed.gap["last_archived_ts"] and broken["gap"]["last_archived_ts"] == broken["ends_ts"]


def test_every_reason_of_the_gfs_and_window_policy_is_given(catalog, bed):
    plan = plan_utils.make_plan(catalog, Policy(**GFS), bed.now)
    reasons = dict((r["label"], reasons) for r, reasons in plan.keep_backups)
    window = "the point-in-time window of 7 days (from 2024-04-24T12:00:00Z)"
    assert reasons["daily-2024-05-01"] == ["daily 2024-05-01", "weekly 2024-W18", "monthly 2024-05", "yearly 2024",
                                           "inside " + window]
    assert reasons["daily-2024-04-24"] == [
        "daily 2024-04-24", "base of %s: the newest point-in-time base at or before its start" % window]
    assert reasons["daily-2023-12-31"] == ["monthly 2023-12", "yearly 2023"]
    assert reasons["daily-2024-02-18"] == ["weekly 2024-W07"]
    assert reasons["daily-" + VERIFIED_DAY] == ["newest verified backup"]
    assert plan.pitr_windows == [{"replica_set": "rs0", "days": 7, "start_time": "2024-04-24T12:00:00Z",
                                  "base": "daily-2024-04-24", "base_oplog_end": "%d:1" % oplog_end(catalog, "daily-2024-04-24")[0]}]
    # the window's slices: the base's chain up to the gap, then the chain of the first backup after it
    slice_reasons = set(tuple(reasons) for _s, reasons in plan.keep_slices)
    assert slice_reasons == {("point-in-time window of backup daily-2024-04-24",),
                             ("point-in-time window of backup daily-2024-04-28",)}
    assert "snapshot-" + SNAPSHOT_DAY in [r["label"] for r in plan.delete_backups]


def test_the_deleted_ebs_snapshot_set_is_returned_for_its_module(catalog, bed):
    plan = plan_utils.make_plan(catalog, Policy(**GFS), bed.now)
    snapshot = next(r for r in plan.delete_backups if r["label"] == "snapshot-" + SNAPSHOT_DAY)
    assert plan_utils.cloud_snapshot_sets(catalog, snapshot) == [{
        "provider": "ebs", "label": "snapshot-" + SNAPSHOT_DAY, "backup_label": "snapshot-" + SNAPSHOT_DAY,
        "snapshot_set": "set-" + SNAPSHOT_DAY, "region": "eu-west-1", "snapshot_ids": ["snap-0a1b2c3d4e5f67890"]}]
    logical = next(r for r in plan.delete_backups if r["label"] == "daily-2023-06-01")
    assert plan_utils.cloud_snapshot_sets(catalog, logical) == []


def test_slices_of_kept_windows_are_kept_without_a_window_policy(catalog, bed):
    """Without pitr_window_days a kept base keeps its whole window: keep_monthly 3 keeps a month of slices,
    the gap included, and the newest verified backup (a protection) pins none."""
    plan = plan_utils.make_plan(catalog, Policy(keep_monthly=3), bed.now)
    first_kept = plan.keep_slices[0][0]
    assert ts_key(first_kept["first_ts"]) <= oplog_end(catalog, "daily-2024-03-31") < ts_key(first_kept["last_ts"])
    assert plan.keep_slices[-1][0]["last_ts"] == catalog.slices_of("rs0")[-1]["last_ts"]


def test_a_gap_with_no_kept_base_after_it_keeps_its_slices(tmp_path):
    """Slices after a gap that no kept window reaches are kept and reported, never deleted around the gap."""
    bed = retention_bed.build(tmp_path, now=NOW, days=10, gap_day="2024-04-30", with_files=False)
    catalog = Catalog.load(bed.root)
    with Catalog.locked(bed.root) as writable:  # the backup after the gap is gone already
        writable.document["backups"] = [b for b in writable.backups if b["label"] != "daily-2024-05-01"]
        writable.save()
    catalog = Catalog.load(bed.root)
    plan = plan_utils.make_plan(catalog, Policy(keep_last=1), bed.now)
    assert [r["label"] for r, _reasons in plan.keep_backups] == ["daily-2024-04-30"]
    after = [(s["file"], reasons) for s, reasons in plan.keep_slices if ts_key(s["first_ts"]) >= ts_key(bed.gap["resume_ts"])]
    assert after and all(reasons == ["after the oldest kept base daily-2024-04-30 but on no kept window (a gap or a "
                                     "break in the chain is before it): gaps are reported, not repaired by deletion"]
                         for _f, reasons in after)
    assert plan.broken_chains[0]["backup_label"] == "daily-2024-04-30"
    assert "the oplog gap after %s" % bed.gap["last_archived_ts"] in plan.broken_chains[0]["msg"]


def test_the_newest_verified_backup_is_kept_and_only_a_passed_verification_counts(tmp_path):
    bed = retention_bed.build(tmp_path, now=NOW, days=10, verified_days=["2024-04-23", "2024-04-25"],
                              with_files=False)
    with Catalog.locked(bed.root) as catalog:
        for record in catalog.backups:
            if record["label"] == "daily-2024-04-27":
                record["verified"] = {"ok": False, "at": "2024-04-27T03:00:00Z"}  # failed: not verified
            if record["label"] == "daily-2024-04-28":
                record["verified"] = {"at": "2024-04-28T03:00:00Z"}  # no ok: not verified
        catalog.save()
    plan = plan_utils.make_plan(Catalog.load(bed.root), Policy(keep_last=2), bed.now)
    kept = dict((r["label"], reasons) for r, reasons in plan.keep_backups)
    assert kept == {"daily-2024-05-01": ["keep_last 2"], "daily-2024-04-30": ["keep_last 2"],
                    "daily-2024-04-25": ["newest verified backup"]}
    # its window is not kept for it: slices go up to the oldest backup kept by the policy
    assert all(ts_key(s["last_ts"]) <= oplog_end(Catalog.load(bed.root), "daily-2024-04-30")
               for s in plan.delete_slices)


def test_the_newest_backup_is_always_kept_and_a_backup_outside_the_root_is_never_deleted(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    bed = retention_bed.build(root, now=NOW, days=3, with_files=False)
    old = retention_bed.epoch("2024-01-01T01:00:00Z")
    with Catalog.locked(bed.root) as catalog:
        catalog.add_backup_from_manifest(retention_bed.write_backup(outside, "daily-2024-01-01", old, old - 60))
        catalog.save()
    plan = plan_utils.make_plan(Catalog.load(bed.root), Policy(pitr_window_days=1), retention_bed.epoch(
        "2024-06-01T00:00:00Z"))  # a month after the last backup: the window holds none
    kept = dict((r["label"], reasons) for r, reasons in plan.keep_backups)
    assert kept == {"daily-2024-05-01": ["base of the point-in-time window of 1 days (from 2024-05-31T00:00:00Z): "
                                         "the newest point-in-time base at or before its start"],
                    "daily-2024-01-01": ["outside the backup root: retention deletes only below it"]}
    plan = plan_utils.make_plan(Catalog.load(bed.root), Policy(keep_daily=1), retention_bed.epoch(
        "2024-06-01T00:00:00Z"))
    assert [r["label"] for r in plan.delete_backups] == ["daily-2024-04-29", "daily-2024-04-30"]


@pytest.mark.parametrize("counts, message", [
    ({}, "the retention policy keeps nothing: none of keep_last, keep_daily, keep_weekly, keep_monthly, keep_yearly, "
         "pitr_window_days is set above 0, so every backup would be deleted; nothing was deleted"),
    ({"keep_last": 0, "keep_daily": None}, "the retention policy keeps nothing"),
    ({"keep_dialy": 7}, "unknown retention setting keep_dialy; the settings are keep_last, keep_daily"),
    ({"keep_daily": -1}, "retention setting keep_daily=-1 is not a whole number of 0 or more"),
    ({"keep_daily": True}, "retention setting keep_daily=True is not a whole number"),
    ({"keep_daily": "7"}, "retention setting keep_daily='7' is not a whole number"),
])
def test_a_policy_that_keeps_nothing_or_is_mistyped_is_refused(counts, message):
    with pytest.raises(InvalidOption) as raised:
        Policy(**counts)
    assert message in raised.value.message


def test_an_unknown_replica_set_is_refused(catalog, bed):
    with pytest.raises(InvalidOption) as raised:
        plan_utils.make_plan(catalog, Policy(keep_last=1), bed.now, replica_set="rs9")
    assert raised.value.message == ("the catalog %s holds no backup or oplog slice of replica set rs9 (it holds rs0); "
                                    "check replica_set" % catalog.path)


def test_each_replica_set_is_planned_on_its_own(tmp_path):
    bed = retention_bed.build(tmp_path, now=NOW, days=5, with_files=False)
    with Catalog.locked(bed.root) as catalog:
        for day in ("2024-04-20", "2024-04-21"):
            moment = retention_bed.epoch(day + "T02:00:00Z")
            catalog.add_backup_from_manifest(retention_bed.write_backup(tmp_path, "other-" + day, moment, moment - 60,
                                                                        replica_set="rs1"))
        catalog.save()
    catalog = Catalog.load(bed.root)
    plan = plan_utils.make_plan(catalog, Policy(keep_last=1), bed.now)
    assert sorted(r["label"] for r, _reasons in plan.keep_backups) == ["daily-2024-05-01", "other-2024-04-21"]
    plan = plan_utils.make_plan(catalog, Policy(keep_last=1), bed.now, replica_set="rs1")
    assert [r["label"] for r in plan.delete_backups] == ["other-2024-04-20"] and plan.delete_slices == []


def test_the_bed_records_slices_as_the_catalog_does(tmp_path):
    """The synthetic slices have the shape of Catalog.add_slice's records, so the plan reads real records."""
    (tmp_path / "oplog" / "rs0").mkdir(parents=True)
    made = retention_bed.slice_record(tmp_path, 1700000000, 1700003600)
    with Catalog.locked(str(tmp_path)) as catalog:
        record, added = catalog.add_slice("rs0", made["first_ts"], made["last_ts"], made["file"], entries=60,
                                          compression="gzip")
    assert added and sorted(record) == sorted(made)
    assert record == dict(made, created_at=record["created_at"])
    assert made["sha256"] == hashlib.sha256((tmp_path / made["file"]).read_bytes()).hexdigest()


@pytest.mark.parametrize("now, base", [
    ("2024-05-01T00:59:00Z", "daily-2024-04-24"),  # the window starts at that backup's oplog end: it serves
    ("2024-05-01T00:58:59Z", "daily-2024-04-23"),  # one second earlier: the day before is the base
])
def test_the_window_base_is_the_newest_whose_oplog_ends_at_or_before_the_start(tmp_path, now, base):
    bed = retention_bed.build(tmp_path, now=NOW, days=12, with_files=False)
    plan = plan_utils.make_plan(Catalog.load(bed.root), Policy(pitr_window_days=7), retention_bed.epoch(now))
    assert plan.pitr_windows[0]["base"] == base
    assert min(r["label"] for r, _reasons in plan.keep_backups) == base
