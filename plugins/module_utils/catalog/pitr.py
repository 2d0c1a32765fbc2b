# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Point-in-time restore planning over a catalog: the chain of slices from a backup, the restorable
windows, the plan for a target time, and the check of the slices a plan uses.

Point-in-time semantics, as ``mongorestore --oplogLimit``: a target ``T`` means "every entry
strictly before ``T`` applied". A full backup whose oplog ends at ``E`` restores the state with
every entry up to ``E`` included, so it can serve targets after ``E``; slices ``[first, last]``
(both inclusive, each starting at the previous slice's last entry) carry the chain forward.
A window ``[E, L]`` says: any state from "through ``E``" to "through ``L``" can be restored.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.timestamps import (
    ts_key, ts_text, ts_time)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.bsonio import sha256_file
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import (
    CatalogError, InvalidOption, OplogGap)


def _chain(catalog, replica_set, start, until=None, damage=None):
    """Follow the slices from ``start``: (end reached, slices used, the gap that stopped it or None).

    With ``until`` the walk stops as soon as the chain reaches it (the slices after are not needed).
    With ``damage`` (a dict: file -> problem) a damaged slice ends the chain where it would start.
    """
    end, used = start, []
    for record in catalog.slices_of(replica_set):
        if until is not None and end >= until:
            break
        first, last = ts_key(record["first_ts"]), ts_key(record["last_ts"])
        if last <= end:
            continue
        if first > end:
            break
        if damage and record["file"] in damage:
            break
        used.append(record)
        end = last
    for gap in catalog.gaps_of(replica_set):
        lost_after = ts_key(gap["last_archived_ts"])
        if start <= lost_after <= end:  # a gap right at the end is what stopped the chain
            kept = [s for s in used if ts_key(s["first_ts"]) <= lost_after]
            return lost_after, kept, gap
    return end, used, None


def chain(catalog, replica_set, start_ts):
    """The chain of slices from a base whose oplog ends at ``start_ts``: (end reached as ``(secs, inc)``,
    the slices it uses, the recorded gap that stopped it or None). What retention keeps for a window."""
    return _chain(catalog, replica_set, ts_key(start_ts))


def windows(catalog, replica_set=None, damage=None):
    """Restorable point-in-time windows: one per full backup with an oplog end, oldest first.

    With ``damage`` (from ``damaged_slices``) a window ends before its first damaged slice, and says so
    in ``stopped_by_damage``.
    """
    result = []
    for backup in catalog.backups:
        if not backup.get("oplog_end") or (replica_set is not None and backup["replica_set"] != replica_set):
            continue
        start = ts_key(backup["oplog_end"])
        end, used, gap = _chain(catalog, backup["replica_set"], start, damage=damage)
        result.append({
            "replica_set": backup["replica_set"], "backup_label": backup["label"],
            "backup_id": backup["backup_id"],
            "start_ts": ts_text(start), "start_time": ts_time(start),
            "end_ts": ts_text(end), "end_time": ts_time(end),
            "seconds": end[0] - start[0], "slices": len(used),
            "stopped_by_gap": gap,
            "stopped_by_damage": _damage_after(catalog, backup, end, gap, damage),
        })
    result.sort(key=lambda w: (w["replica_set"] or "", ts_key(w["start_ts"])))
    return result


def _damage_after(catalog, backup, end, gap, damage):
    """The damaged slice that ended the window at ``end``, with what is wrong, or None."""
    if not damage or gap is not None:
        return None
    for record in catalog.slices_of(backup["replica_set"]):
        first, last = ts_key(record["first_ts"]), ts_key(record["last_ts"])
        if record["file"] in damage and first <= end < last:
            return {"file": record["file"], "first_ts": record["first_ts"], "last_ts": record["last_ts"],
                    "problem": damage[record["file"]],
                    "msg": "the window of %s ends at %s (%s), before the oplog slice %s (%s to %s): %s; "
                           "restore the slice from the off-site copy, or take a new full backup"
                           % (backup["label"], ts_text(end), ts_time(end), record["file"], record["first_ts"],
                              record["last_ts"], damage[record["file"]])}
    return None


def _plan_replica_set(catalog, replica_set):
    if replica_set is not None:
        return replica_set
    names = catalog.replica_sets()
    if len(names) > 1:
        raise InvalidOption("the catalog %s holds backups of several replica sets (%s); set replica_set to "
                            "the one to restore" % (catalog.path, ", ".join(str(n) for n in names)))
    return names[0] if names else None


def restore_plan(catalog, target_ts, replica_set=None):
    """The newest full backup and the slices that restore ``replica_set`` to ``target_ts`` (exclusive).

    The backup's oplog must end strictly before the target (it restores everything through its
    end); the slices must cover every entry from there up to the target without a gap.
    """
    target = ts_key(target_ts)
    replica_set = _plan_replica_set(catalog, replica_set)
    candidates = [b for b in catalog.backups if b["replica_set"] == replica_set and b.get("oplog_end")]
    before = [b for b in candidates if ts_key(b["oplog_end"]) < target]
    where = "replica set %s" % replica_set if replica_set else "this deployment"
    if not before:
        if candidates:
            oldest = min(candidates, key=lambda b: ts_key(b["oplog_end"]))
            raise CatalogError(
                "no full backup of %s in %s ends before the target %s (%s); the oldest, %s, ends at %s (%s), and a "
                "full backup restores only to the end of its own oplog: choose a later target"
                % (where, catalog.root, ts_text(target), ts_time(target), oldest["label"], oldest["oplog_end"],
                   ts_time(oldest["oplog_end"])))
        raise CatalogError("no full backup with an oplog (oplog: true) of %s is registered in %s; take one and "
                           "register it" % (where, catalog.path))
    backup = max(before, key=lambda b: (ts_key(b["oplog_end"]), b.get("finished_at") or ""))
    start = ts_key(backup["oplog_end"])
    needed = (target[0], target[1] - 1) if target[1] > 0 else (target[0] - 1, 0xFFFFFFFF)
    end, used, gap = _chain(catalog, replica_set, start, until=needed)
    if gap is not None and end < needed:
        raise OplogGap(
            "oplog gap on %s: the entries after %s (the last archived, %s) up to %s were lost, so the target "
            "%s (%s) cannot be reached from the full backup %s (oplog end %s); choose a target at or before "
            "%s, or take a new full backup to start a new chain"
            % (where, gap["last_archived_ts"], ts_time(gap["last_archived_ts"]),
               gap["oldest_available_ts"] or "the oldest entry then available",
               ts_text(target), ts_time(target), backup["label"], backup["oplog_end"], gap["last_archived_ts"]),
            gap=gap, last_archived_ts=gap["last_archived_ts"])
    if end < needed:
        raise OplogGap(
            "the archived oplog of %s does not reach the target %s (%s): from the full backup %s (oplog end %s) "
            "the slices run without a break only up to %s (%s); choose a target at or before %s, check the "
            "oplog capture, or take a new full backup"
            % (where, ts_text(target), ts_time(target), backup["label"], backup["oplog_end"], ts_text(end),
               ts_time(end), ts_text(end)),
            last_archived_ts=ts_text(end))
    return {
        "replica_set": replica_set,
        "target_ts": ts_text(target), "target_time": ts_time(target), "oplog_limit": ts_text(target),
        "backup": dict(backup, absolute_path=catalog.absolute(backup["path"])),
        "slices": [dict(s, path=catalog.absolute(s["file"])) for s in used],
        "reaches_ts": ts_text(end),
    }


def verify_slices(root, plan):
    """Check the sha256 of every slice file of a restore plan; raise naming the first bad one.

    pitr_restore calls this before it writes anything to the target. Returns the number of slices checked.
    """
    for record in plan["slices"]:
        path = os.path.normpath(os.path.join(os.path.abspath(root), record["file"]))
        if not os.path.isfile(path):
            raise CatalogError("oplog slice %s (%s to %s) is missing; restore it from the off-site copy or choose "
                               "a target before %s" % (path, record["first_ts"], record["last_ts"], record["first_ts"]))
        try:
            digest = sha256_file(path)
        except OSError as exc:
            raise CatalogError("oplog slice %s cannot be read: %s" % (path, exc.strerror or exc))
        if digest != record["sha256"]:
            raise CatalogError("oplog slice %s is corrupt: its sha256 is %s, the catalog recorded %s; restore it "
                               "from the off-site copy or choose a target before %s"
                               % (path, digest, record["sha256"], record["first_ts"]))
    return len(plan["slices"])
