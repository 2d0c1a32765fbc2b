# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The retention plan of a catalog: which backups and oplog slices go, and why each survivor stays.

Each replica set of the catalog (backups and slices carry its name) is planned on its own. A backup's
time is its ``finished_at`` (UTC). A backup is kept when at least one of these says so; every reason is
listed:

- ``keep_last N``: the N newest;
- ``keep_daily``/``weekly``/``monthly``/``yearly N``: the newest of each of the N most recent periods that
  have a backup (see policy.py);
- ``pitr_window_days N``, the window ``[now - N days, now]``: every backup finished inside it, and the
  newest point-in-time base (a backup or snapshot set with an oplog end) whose oplog ends at or before
  its start, so that every time of the window restorable today stays restorable;
- always: the newest verified backup, the newest backup, a backup without a readable time, and a backup
  outside the backup root (retention deletes only below the root).

Oplog slices follow the kept point-in-time bases. With ``pitr_window_days`` the window decides how far
back they go: slices are kept from the window's base on, and older bases kept by the other rules stay
restorable to their own point only. Without it every base kept by a rule keeps its whole window, so slices
go only before the oldest such base (a backup kept only by a protection keeps itself, not its window: the
newest verified backup of last year does not pin a year of slices). A slice after that point is never deleted, even when no kept window reaches
it (it lies after a gap or a break in the chain): gaps and broken chains are reported, not "repaired" by
deleting what surrounds them. The chains are the catalog's own (``catalog.pitr.chain``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog import pitr
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog.store import verification_of
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.timestamps import (
    parse_iso_time, ts_key, ts_text, ts_time)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import FormatError, InvalidOption
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import manifest as manifest_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.retention.policy import PERIODS, period_key
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.snapshots.record import (
    CLOUD_PROVIDERS, SNAPSHOT_KIND)

DAY = 86400


def backup_time(record):
    """Epoch seconds a backup finished (else started), or None when neither is readable."""
    return parse_iso_time(record.get("finished_at")) or parse_iso_time(record.get("started_at"))


def is_verified(record):
    """A verification that passed (``"verified": {"ok": true, ...}``); a failed or missing one is not."""
    return (verification_of(record) or {}).get("ok") is True


def inside_root(catalog, path):
    """True when ``path`` (relative to the root or absolute) lies strictly below the backup root."""
    relative = os.path.relpath(catalog.absolute(path), catalog.root)
    return relative != os.curdir and relative != os.pardir and not relative.startswith(os.pardir + os.sep)


class Plan:
    """What to delete and what to keep (with reasons), per replica set, plus what the catalog reports."""

    def __init__(self, now, policy, replica_sets):
        self.now = now
        self.policy = policy
        self.replica_sets = replica_sets
        self.keep_backups = []   # (record, [reasons])
        self.delete_backups = []
        self.keep_slices = []    # (record, [reasons])
        self.delete_slices = []
        self.gaps = []
        self.broken_chains = []
        self.pitr_windows = []


def make_plan(catalog, policy, now, replica_set=None):
    """The plan for ``catalog`` under ``policy`` at epoch time ``now`` (one replica set, or each of them)."""
    names = _replica_sets(catalog)
    if replica_set is not None:
        if replica_set not in names:
            raise InvalidOption("the catalog %s holds no backup or oplog slice of replica set %s (it holds %s); "
                                "check replica_set" % (catalog.path, replica_set,
                                                       ", ".join(str(n) for n in names) or "nothing"))
        names = [replica_set]
    plan = Plan(now, policy, names)
    for name in names:
        holders, anchor = _plan_backups(catalog, plan, name)
        _plan_slices(catalog, plan, name, holders, anchor)
        plan.gaps.extend(catalog.gaps_of(name))
    return plan


def _replica_sets(catalog):
    names = set(b.get("replica_set") for b in catalog.backups) | set(s["replica_set"] for s in catalog.slices)
    return sorted(names, key=lambda n: n or "")


# --------------------------------------------------------------------------- backups

def _plan_backups(catalog, plan, name):
    """Decide the backups of one replica set; returns (the point-in-time bases whose windows are kept, the
    window's base or None). The protections (newest verified, unreadable time, outside the root) keep a
    backup itself, not its window."""
    backups = [b for b in catalog.backups if b.get("replica_set") == name]
    reasons = dict((id(b), []) for b in backups)
    times = dict((id(b), backup_time(b)) for b in backups)
    dated = sorted((b for b in backups if times[id(b)] is not None),
                   key=lambda b: (times[id(b)], b["backup_id"]), reverse=True)
    _keep_by_count(plan.policy, dated, times, reasons)
    anchor = _keep_pitr_window(plan, name, backups, dated, times, reasons)
    if dated and not reasons[id(dated[0])]:
        reasons[id(dated[0])].append("newest backup: one is always kept")
    holders = [b for b in backups if reasons[id(b)] and b.get("oplog_end")]
    verified = [b for b in dated if is_verified(b)]
    if verified:
        reasons[id(verified[0])].append("newest verified backup")
    for record in backups:
        if times[id(record)] is None:
            reasons[id(record)].append("no readable finish time: never deleted")
        if not reasons[id(record)] and not inside_root(catalog, record["path"]):
            reasons[id(record)].append("outside the backup root: retention deletes only below it")
    for record in backups:
        if reasons[id(record)]:
            plan.keep_backups.append((record, reasons[id(record)]))
        else:
            plan.delete_backups.append(record)
    return holders, anchor


def _keep_by_count(policy, dated, times, reasons):
    """keep_last and the calendar periods, newest first (restic's forget rules)."""
    for record in dated[:policy.get("keep_last")]:
        reasons[id(record)].append("keep_last %d" % policy.get("keep_last"))
    for option, period in PERIODS:
        left, last_key = policy.get(option), None
        for record in dated:
            if not left:
                break
            key = period_key(period, times[id(record)])
            if key != last_key:
                reasons[id(record)].append("%s %s" % (period, key))
                last_key = key
                left -= 1


def _keep_pitr_window(plan, name, backups, dated, times, reasons):
    days = plan.policy.get("pitr_window_days")
    if not days:
        return None
    start = int(plan.now) - days * DAY
    window = "the point-in-time window of %d days (from %s)" % (days, ts_time((start, 0)))
    before = [b for b in backups if b.get("oplog_end") and ts_key(b["oplog_end"])[0] <= start]
    anchor = max(before, key=lambda b: (ts_key(b["oplog_end"]), b["backup_id"])) if before else None
    if anchor is not None:
        reasons[id(anchor)].append("base of %s: the newest point-in-time base at or before its start" % window)
    for record in dated:
        if times[id(record)] <= start:
            break
        if record is not anchor:
            reasons[id(record)].append("inside %s" % window)
    plan.pitr_windows.append({"replica_set": name, "days": days, "start_time": ts_time((start, 0)),
                              "base": anchor["label"] if anchor else None,
                              "base_oplog_end": anchor["oplog_end"] if anchor else None})
    return anchor


# --------------------------------------------------------------------------- slices

def _plan_slices(catalog, plan, name, holders, anchor):
    slices = catalog.slices_of(name)
    if anchor is not None:  # the window decides: older bases kept by other rules keep no slices
        holders = [b for b in holders if ts_key(b["oplog_end"]) >= ts_key(anchor["oplog_end"])]
    if not holders:
        for record in slices:
            plan.keep_slices.append((record, ["no kept point-in-time base of replica set %s to measure it "
                                              "against: never deleted" % name]))
        return
    holders.sort(key=lambda b: ts_key(b["oplog_end"]))
    horizon = ts_key(holders[0]["oplog_end"])
    needed = _follow_chains(catalog, plan, name, holders, slices)
    for record in slices:
        if record["file"] in needed:
            plan.keep_slices.append((record, [needed[record["file"]]]))
        elif ts_key(record["last_ts"]) > horizon:
            plan.keep_slices.append((record, [
                "after the oldest kept base %s but on no kept window (a gap or a break in the chain is before "
                "it): gaps are reported, not repaired by deletion" % holders[0]["label"]]))
        elif not inside_root(catalog, record["file"]):
            plan.keep_slices.append((record, ["outside the backup root: retention deletes only below it"]))
        else:
            plan.delete_slices.append(record)


def _follow_chains(catalog, plan, name, holders, slices):
    """{file: reason} for the slices of the kept bases' windows; reports every chain that breaks.

    A base whose oplog ends inside the previous chain has that chain's tail as its own, so one walk per
    stretch between two breaks is enough.
    """
    needed, reach = {}, None
    for base in holders:
        start = ts_key(base["oplog_end"])
        if reach is not None and start <= reach:
            continue
        end, used, gap = pitr.chain(catalog, name, start)
        for record in used:
            needed[record["file"]] = "point-in-time window of backup %s" % base["label"]
        following = next((s for s in slices if ts_key(s["first_ts"]) > end), None)
        if gap is not None or following is not None:
            plan.broken_chains.append(_broken_chain(name, base, end, gap, following))
        reach = end
    return needed


def _broken_chain(name, base, end, gap, following):
    if gap is not None:
        cause = "the oplog gap after %s (entries lost up to %s)" % (
            gap["last_archived_ts"], gap["oldest_available_ts"] or "unknown")
    else:
        cause = "no archived slice covers the entries after it (the next slice, %s, starts at %s)" % (
            following["file"], following["first_ts"])
    return {"replica_set": name, "backup_label": base["label"], "ends_ts": ts_text(end), "ends_time": ts_time(end),
            "gap": gap, "next_slice": following["file"] if following else None,
            "msg": "the point-in-time window of %s ends at %s (%s): %s; a later full backup starts a new "
                   "window" % (base["label"], ts_text(end), ts_time(end), cause)}


# --------------------------------------------------------------------------- snapshot sets in the cloud

def cloud_snapshot_sets(catalog, record):
    """The EBS or GCE snapshot sets behind a snapshot backup, as ebs_snapshot / gce_disk_snapshot delete them
    (``state: absent`` by label): one per member of a cluster set, labelled ``<label>.<shard or config>``
    as the snapshot_backup role names them. Empty for logical backups and LVM copies."""
    if record.get("kind") != SNAPSHOT_KIND or record.get("provider") not in CLOUD_PROVIDERS:
        return []
    try:
        document = manifest_utils.read_manifest(os.path.join(catalog.absolute(record["path"]),
                                                             manifest_utils.MANIFEST_NAME)) or {}
    except FormatError:
        document = {}
    snapshot = document.get("snapshot") or {}
    members = snapshot.get("members") or []
    parts = [("%s.%s" % (record["label"], m.get("shard") or "config"), m.get("snapshots") or []) for m in members] \
        or [(record["label"], snapshot.get("snapshots") or [])]
    found = []
    for label, snapshots in parts:
        entry = {"provider": record["provider"], "label": label, "backup_label": record["label"],
                 "snapshot_set": record.get("snapshot_set")}
        if record["provider"] == "ebs":
            entry.update(region=next((s.get("region") for s in snapshots if s.get("region")), None),
                         snapshot_ids=[s.get("snapshot_id") for s in snapshots])
        else:
            entry.update(project=next((_gce_project(s.get("self_link")) for s in snapshots
                                       if _gce_project(s.get("self_link"))), None),
                         snapshot_names=[s.get("name") for s in snapshots])
        found.append(entry)
    return found


def _gce_project(self_link):
    parts = (self_link or "").split("/")
    return parts[parts.index("projects") + 1] if "projects" in parts[:-1] else None
