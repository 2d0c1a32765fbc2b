# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a backup root holds, as mongodb_backup_info reports it: counts, newest backup, newest verified
backup, windows, damage, and the max_age and verify_max_age alerts."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.timestamps import (
    format_duration, parse_duration, parse_iso_time, ts_key)

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog.pitr import windows
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog.store import verification_of


def summary(catalog, now=None, verify=False):
    """What mongodb_backup_info returns, without the max_age check.

    Windows count only slices whose files exist with their recorded size (and sha256 with ``verify``);
    ``damaged_slices`` lists the others with what is wrong.
    """
    now = time.time() if now is None else now
    damage = catalog.damaged_slices(verify)
    backups = []
    for record in catalog.backups:
        finished = parse_iso_time(record.get("finished_at"))
        backups.append(dict(record, absolute_path=catalog.absolute(record["path"]),
                            age_seconds=None if finished is None else int(now - finished)))
    last = max(backups, key=lambda b: parse_iso_time(b.get("finished_at")) or 0) if backups else None
    per_set = {}
    ends = set((s["replica_set"], s["last_ts"]) for s in catalog.slices)
    for record in catalog.slices:
        entry = per_set.setdefault(record["replica_set"] or "", {"count": 0, "bytes": 0, "entries": 0,
                                                                 "first_ts": None, "last_ts": None})
        entry["count"] += 1
        entry["bytes"] += record["bytes"]
        entry["entries"] += record.get("entries") or 0
        if (record["replica_set"], record["first_ts"]) in ends and record["first_ts"] != record["last_ts"]:
            entry["entries"] -= 1  # its first entry is its predecessor's last one: count it once
        if entry["first_ts"] is None or ts_key(record["first_ts"]) < ts_key(entry["first_ts"]):
            entry["first_ts"] = record["first_ts"]
        if entry["last_ts"] is None or ts_key(record["last_ts"]) > ts_key(entry["last_ts"]):
            entry["last_ts"] = record["last_ts"]
    slice_bytes = sum(s["bytes"] for s in catalog.slices)
    backup_bytes = sum(b["bytes"] or 0 for b in catalog.backups)
    return {
        "catalog": catalog.path,
        "backups": backups,
        "slices": {"count": len(catalog.slices), "bytes": slice_bytes, "replica_sets": per_set},
        "gaps": list(catalog.gaps),
        "windows": windows(catalog, damage=damage),
        "damaged_slices": [dict(replica_set=s["replica_set"], file=s["file"], first_ts=s["first_ts"],
                                last_ts=s["last_ts"], problem=damage[s["file"]])
                           for s in catalog.slices if s["file"] in damage],
        "slices_verified": bool(verify),
        "last_backup": None if last is None else {
            "label": last["label"], "backup_id": last["backup_id"], "finished_at": last["finished_at"],
            "age_seconds": last["age_seconds"], "verified": bool((verification_of(last) or {}).get("ok")),
            "path": last["absolute_path"]},
        "last_verified": last_verified(backups, now),
        "backup_bytes": backup_bytes,
        "total_bytes": backup_bytes + slice_bytes,
    }


def last_verified(backups, now):
    """The newest backup (by finish time) whose last test restore passed, with its age and that verification;
    None when no backup has passed one."""
    passed = [b for b in backups if (verification_of(b) or {}).get("ok")]
    if not passed:
        return None
    newest = max(passed, key=lambda b: parse_iso_time(b.get("finished_at")) or 0)
    verified = verification_of(newest)
    at = parse_iso_time(verified.get("at"))
    return {"label": newest["label"], "backup_id": newest["backup_id"], "path": newest["absolute_path"],
            "finished_at": newest["finished_at"], "age_seconds": newest["age_seconds"],
            "verified_at": verified.get("at"), "verified_age_seconds": None if at is None else int(now - at),
            "restore_seconds": verified.get("restore_seconds"), "mb_per_s": verified.get("mb_per_s"),
            "target_time": verified.get("target_time")}


def check_verify_max_age(report_summary, verify_max_age):
    """None when the newest backup proven by a test restore is recent enough, else the failure message."""
    limit = parse_duration(verify_max_age)
    last = report_summary["last_verified"]
    if last is None:
        return ("no backup in the catalog %s has passed a test restore, so none younger than verify_max_age %s is "
                "proven restorable; run mongodb_backup_verify (the backup_verify role)"
                % (report_summary["catalog"], verify_max_age))
    age = last["age_seconds"]
    if age is None:
        return "the newest verified backup %s has no readable finish time; check its manifest" % last["label"]
    if age > limit:
        return ("newest verified backup %s finished at %s, %s ago, older than verify_max_age %s (verified at %s); "
                "verify a newer backup, and check that verification runs after the backups"
                % (last["label"], last["finished_at"], format_duration(age), verify_max_age, last["verified_at"]))
    return None


def check_max_age(report_summary, max_age, now=None):
    """None when the newest backup is recent enough, else the failure message."""
    limit = parse_duration(max_age)
    last = report_summary["last_backup"]
    if last is None:
        return "no complete backup is registered in the catalog %s, so none is younger than max_age %s; check " \
               "the backup schedule" % (report_summary["catalog"], max_age)
    age = last["age_seconds"]
    if age is None:
        return "the newest backup %s has no readable finish time; check its manifest" % last["label"]
    if age > limit:
        return ("newest complete backup %s finished at %s, %s ago, older than max_age %s; check the backup schedule"
                % (last["label"], last["finished_at"], format_duration(age), max_age))
    return None
