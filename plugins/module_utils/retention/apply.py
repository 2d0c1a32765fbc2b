# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ageing out what a retention plan deletes, so that a crash never leaves a catalog pointing at nothing.

Under the catalog lock, one atomic write takes the deleted backups and slices out of the catalog and
lists their files in ``pending_deletions``; then the files go; then a second write clears them from
that list. A run killed in between leaves files that the catalog no longer lists but still names:
the next run removes them first. The lock is held throughout (removing is unlinking, quick), so an
oplog archive run or a backup registering itself waits instead of racing the plan.

What else the next run finds and removes: slice files in ``oplog/<replica set>/`` that no catalog entry
lists (an archive run killed between renaming a slice into place and recording it; they would block
the next archive run under the same name). What it only reports: complete backups that no catalog
entry lists (a dump is renamed into place before the role registers it, and taking an entry out of
the catalog keeps the files by design), and every ``*.partial``, which a live run may be writing.
Cloud snapshot sets (EBS, GCE) are returned for the caller to delete with their modules.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import re
import shutil
import time

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog.entries import find_backups
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog.store import Catalog, check_backup_root
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.timestamps import (
    iso_time, parse_iso_time, ts_time)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import CatalogError, InvalidOption
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import manifest as manifest_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.bsonio import COMPRESSION_SUFFIXES
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical.backup_target import PARTIAL_SUFFIX
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog.archiver import SLICE_DIR
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.retention.plan import (
    cloud_snapshot_sets, inside_root, make_plan)

PENDING = "pending_deletions"
# The names SliceWriter gives complete slices: <first secs>-<inc>_<last secs>-<inc>.bson[.gz|.zst]
SLICE_SUFFIXES = "|".join(re.escape(suffix) for suffix in COMPRESSION_SUFFIXES.values() if suffix)
SLICE_NAME = re.compile(r"^\d+-\d+_\d+-\d+\.bson(%s)?$" % SLICE_SUFFIXES)
BACKUP_FIELDS = ("label", "backup_id", "path", "kind", "provider", "finished_at", "replica_set", "oplog_end", "bytes")


def parse_now(text):
    """Epoch seconds of the ``now`` option (an ISO-8601 UTC time), or of the clock when it is None."""
    if text is None:
        return time.time()
    epoch = parse_iso_time(text)
    if epoch is None:
        raise InvalidOption("now %r is not a UTC time as the catalog records them; use 2024-05-01T00:00:00Z "
                            "(or with microseconds, 2024-05-01T00:00:00.000000Z)" % (text,))
    return epoch


def run(root, policy, now=None, replica_set=None, check_mode=False):
    """Plan and (unless ``check_mode``) apply ``policy`` to the backup root. Returns (changed, result).

    Raises CatalogError, with the result as details, when some files could not be removed: they stay
    listed in ``pending_deletions`` and the next run tries again.
    """
    check_backup_root(root)
    now = time.time() if now is None else now
    if check_mode:
        catalog = Catalog.load(root)
        plan = make_plan(catalog, policy, now, replica_set)
        work = _new_work(catalog, plan, now) + _orphan_slices(catalog, plan.replica_sets)
        resumed = list(catalog.document.get(PENDING) or [])
        result = _result(catalog, plan, resumed, work, {}, _listed_again(catalog, resumed))
        return bool(resumed or work), result
    with Catalog.locked(root) as catalog:
        plan = make_plan(catalog, policy, now, replica_set)
        resumed = list(catalog.document.get(PENDING) or [])
        work = _new_work(catalog, plan, now) + _orphan_slices(catalog, plan.replica_sets)
        if work:  # entries out and their files listed, in one atomic write, before any file goes
            _drop_entries(catalog, plan)
            catalog.document[PENDING] = resumed + work
            catalog.save()
        relisted = _listed_again(catalog, resumed)
        resumed_here = [item for item in resumed if item["name"] not in relisted]
        failed = _remove_all(catalog, resumed_here + work)
        if resumed or work:
            left = [item for item in resumed_here + work if item["name"] in failed]
            if left:
                catalog.document[PENDING] = left
            else:
                catalog.document.pop(PENDING, None)
            catalog.save()
    result = _result(catalog, plan, resumed, work, failed, relisted)
    if failed:
        named = ["%s (%s)" % (name, cause) for name, cause in sorted(failed.items())]
        more = " and %d more (see failed)" % (len(named) - 5) if len(named) > 5 else ""
        raise CatalogError("retention could not remove %s%s; the catalog no longer lists them and keeps them in "
                           "pending_deletions, so the next run removes them: fix the cause (permissions, a busy "
                           "mount) and run it again" % ("; ".join(named[:5]), more), changed=True, **result)
    return bool(resumed or work), result


# --------------------------------------------------------------------------- the work list

def _new_work(catalog, plan, now):
    """One pending item per deleted backup or slice: the files to remove (an archive's manifest first), and the
    cloud snapshot sets of a snapshot backup."""
    since = iso_time(now)
    work = []
    for record in plan.delete_backups:
        paths = [record["path"]]
        if record.get("format") == "archive":  # without its manifest first, it never looks complete
            paths.insert(0, catalog.relative(manifest_utils.manifest_path(catalog.absolute(record["path"]), True)))
        item = {"what": "backup", "name": record["label"], "paths": paths, "since": since,
                "bytes": record.get("bytes") or 0}
        cloud = cloud_snapshot_sets(catalog, record)  # read from its manifest before that goes
        if cloud:  # kept with the item: a run killed after the catalog write still hands them over
            item["cloud_snapshot_sets"] = cloud
        work.append(item)
    for record in plan.delete_slices:
        work.append({"what": "slice", "name": record["file"], "paths": [record["file"]], "since": since,
                     "bytes": record.get("bytes") or 0})
    return work


def _orphan_slices(catalog, replica_sets):
    """Slice files of the planned replica sets that no catalog entry (nor a pending deletion) lists."""
    listed = set(s["file"] for s in catalog.slices)
    listed.update(p for item in catalog.document.get(PENDING) or [] for p in item["paths"])
    found = []
    for name in replica_sets:
        directory = os.path.join(catalog.root, SLICE_DIR, name or "")
        if not name or not os.path.isdir(directory):
            continue
        for entry in sorted(os.listdir(directory)):
            relative = os.path.join(SLICE_DIR, name, entry)
            path = os.path.join(directory, entry)
            if SLICE_NAME.match(entry) and relative not in listed and os.path.isfile(path) \
                    and not os.path.islink(path):
                found.append({"what": "orphan slice", "name": relative, "paths": [relative],
                              "since": iso_time(time.time()), "bytes": os.path.getsize(path)})
    return found


def _listed_again(catalog, pending):
    """{name: cause} for the pending deletions of an earlier run whose files the catalog lists again (registered
    again since, say by mongodb_backup_catalog over the whole root): left in place, and off the pending list."""
    listed = set(b["path"] for b in catalog.backups) | set(s["file"] for s in catalog.slices)
    return dict((item["name"], "the catalog lists %s again: left in place" % ", ".join(item["paths"]))
                for item in pending if listed & set(item["paths"]))


def _drop_entries(catalog, plan):
    gone = set(id(r) for r in plan.delete_backups) | set(id(r) for r in plan.delete_slices)
    catalog.document["backups"] = [b for b in catalog.backups if id(b) not in gone]
    catalog.document["slices"] = [s for s in catalog.slices if id(s) not in gone]


# --------------------------------------------------------------------------- removing files

def _remove_all(catalog, items):
    """Remove every item's files; {name: cause} for the items that could not be removed (still pending)."""
    failed = {}
    for item in items:
        try:
            for relative in item["paths"]:
                remove(catalog, relative)
        except (OSError, CatalogError) as exc:
            failed[item["name"]] = getattr(exc, "message", None) or exc.strerror or str(exc)
    return failed


def remove(catalog, relative):
    """Remove a file or directory below the root; a link is removed, never followed. Never a ``*.partial``:
    a live run may be writing it."""
    path = catalog.absolute(relative)
    if not inside_root(catalog, path) or path.endswith(PARTIAL_SUFFIX):
        raise CatalogError("%s is not a path retention may remove (outside the backup root %s, or a *.partial "
                           "a run may be writing)" % (path, catalog.root))
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            # The manifest first: a directory left half removed by a crash is then no backup, so registering
            # every backup under the root never picks it up.
            _remove_file(os.path.join(path, manifest_utils.MANIFEST_NAME))
            shutil.rmtree(path)
        else:
            _remove_file(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:  # already gone is what was asked
            raise


def _remove_file(path):
    try:
        os.remove(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise


# --------------------------------------------------------------------------- what the root holds besides

def _in_progress(catalog, replica_sets):
    """Every ``*.partial`` in the root and the slice directories, with its age: reported, never removed."""
    directories = [catalog.root] + [os.path.join(catalog.root, SLICE_DIR, n) for n in replica_sets if n]
    found = []
    for directory in directories:
        for entry in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
            if entry.endswith(PARTIAL_SUFFIX):
                path = os.path.join(directory, entry)
                found.append({"path": catalog.relative(path),
                              "age_seconds": int(time.time() - os.lstat(path).st_mtime)})
    return found


def _unregistered(catalog, pending):
    """Complete backups below the root that no catalog entry lists: reported, never removed."""
    listed = set(catalog.absolute(b["path"]) for b in catalog.backups)
    listed.update(catalog.absolute(p) for item in pending for p in item["paths"])
    return [catalog.relative(path) for path in find_backups(catalog.root) if path not in listed]


# --------------------------------------------------------------------------- the result

def _backup(record, reasons=None):
    entry = dict((key, record.get(key)) for key in BACKUP_FIELDS)
    entry["kind"] = entry["kind"] or "logical"
    if reasons is not None:
        entry["reasons"] = reasons
    return entry


def _slice(record):
    return dict((key, record.get(key)) for key in ("replica_set", "file", "first_ts", "last_ts", "bytes"))


def kept_slice_runs(kept):
    """Consecutive kept slices of one replica set with the same reasons, as one entry each."""
    runs = []
    for record, reasons in kept:
        last = runs[-1] if runs else None
        if last and last["replica_set"] == record["replica_set"] and last["reasons"] == reasons:
            last.update(count=last["count"] + 1, last_file=record["file"], last_ts=record["last_ts"],
                        last_time=ts_time(record["last_ts"]), bytes=last["bytes"] + (record.get("bytes") or 0))
        else:
            runs.append({"replica_set": record["replica_set"], "reasons": reasons, "count": 1,
                         "first_file": record["file"], "last_file": record["file"],
                         "first_ts": record["first_ts"], "last_ts": record["last_ts"],
                         "first_time": ts_time(record["first_ts"]), "last_time": ts_time(record["last_ts"]),
                         "bytes": record.get("bytes") or 0})
    return runs


def _result(catalog, plan, resumed, work, failed, relisted):
    done = [item for item in resumed if item["name"] not in relisted] + work
    cloud = [entry for item in done for entry in item.get("cloud_snapshot_sets") or []]
    removed = [item for item in done if item["name"] not in failed]
    return {
        "catalog": catalog.path,
        "now": iso_time(plan.now),
        "policy": plan.policy.describe(),
        "replica_sets": plan.replica_sets,
        "deleted_backups": [_backup(r) for r in plan.delete_backups],
        "deleted_slices": [_slice(r) for r in plan.delete_slices],
        "kept_backups": [_backup(r, reasons) for r, reasons in plan.keep_backups],
        "kept_slices": kept_slice_runs(plan.keep_slices),
        "pitr_windows": plan.pitr_windows,
        "gaps": plan.gaps,
        "broken_chains": plan.broken_chains,
        "pending_deletions": resumed,
        "orphans_removed": [item["name"] for item in work if item["what"] == "orphan slice"],
        "cloud_snapshot_sets": cloud,
        "unregistered_backups": _unregistered(catalog, resumed + work),
        "in_progress": _in_progress(catalog, plan.replica_sets),
        "failed": [{"name": name, "cause": cause} for name, cause in sorted(failed.items())],
        "left_in_place": [{"name": name, "cause": cause} for name, cause in sorted(relisted.items())],
        "bytes_freed": sum(item.get("bytes") or 0 for item in removed),
    }
