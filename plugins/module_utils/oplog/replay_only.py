# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Oplog-only restore: replay archived oplog onto a target that already holds the base state.

The base is a snapshot restored onto the target (volumes built from a snapshot set, mongod started on
them): it holds every write through ``oplog_start``, the newest oplog time when the member was locked.
Replaying the archived slices from just after ``oplog_start`` up to ``oplog_limit`` (exclusive, as
mongorestore's ``--oplogLimit``) gives the state just before the limit; PBM's ``oplog-replay`` is the
same operation. No data files are read and nothing is dropped.

Checked before the first write: the files exist and the first one starts at or before ``oplog_start``
(otherwise entries between the base and the first slice were never archived and the replay would
silently miss them), and the limit is after the start.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.timestamps import (
    parse_oplog_limit, ts_key, ts_text, ts_time, ts_tuple)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import (
    BackupError, InvalidOption, OplogGap, RestoreFailed)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import index_catalog
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import readers
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import replay as oplog_replay

try:
    from pymongo import errors as pymongo_errors
except ImportError:  # pragma: no cover - reported by the module wrapper
    pymongo_errors = None


class ReplayOnlyOptions:
    """What an oplog-only restore replays: ``oplog_files`` in order, after ``oplog_start``, before ``oplog_limit``."""

    def __init__(self, oplog_files, oplog_start, oplog_limit=None, apply_mode="auto",
                 bypass_document_validation=False, max_failed_documents=0, no_index_restore=False):
        self.oplog_files = list(oplog_files or [])
        if not self.oplog_files:
            raise InvalidOption("oplog_only needs the oplog to replay: give oplog_slices (the plan of "
                                "mongodb_backup_info lists them) or oplog_file")
        if oplog_start is None:
            raise InvalidOption("oplog_only needs oplog_start: the oplog time the restored snapshot holds every "
                                "write through (its oplog_end in the catalog)")
        self.start = ts_key(oplog_start)
        self.limit = parse_oplog_limit(oplog_limit) if oplog_limit else None
        if self.limit is not None and ts_tuple(self.limit) <= self.start:
            raise InvalidOption("oplog_limit %s is not after oplog_start %s: the target already holds that state"
                                % (ts_text(self.limit), ts_text(self.start)))
        self.apply_mode = apply_mode
        self.bypass_document_validation = bool(bypass_document_validation)
        self.max_failed_documents = int(max_failed_documents)
        self.no_index_restore = bool(no_index_restore)

    def describe(self):
        return {"oplog_start": ts_text(self.start), "oplog_limit": ts_text(self.limit),
                "oplog_files": self.oplog_files}


def _first_ts(path):
    """The ts of the first entry of an oplog file, None when it holds none."""
    try:
        for entry in readers.iter_oplog_file(path):
            return ts_key(entry["ts"])
    except OSError as exc:
        raise InvalidOption("oplog file %s cannot be read: %s; nothing was replayed" % (path, exc.strerror or exc))
    return None


def check_files(options):
    """Every file is there, and the first entry is at or before the start: no hole after the base."""
    for path in options.oplog_files:
        if not os.path.isfile(path):
            raise InvalidOption("oplog file %s does not exist; nothing was replayed" % path)
    first = next((ts for ts in (_first_ts(p) for p in options.oplog_files) if ts is not None), None)
    if first is None:
        raise InvalidOption("the oplog files %s hold no entry; nothing was replayed" % ", ".join(options.oplog_files))
    if first > options.start:
        raise OplogGap("the oplog given starts at %s (%s), after oplog_start %s (%s): the entries in between were "
                       "never archived, so the replay would miss them; nothing was replayed. Use the slices the "
                       "restore plan lists, or a base that ends later"
                       % (ts_text(first), ts_time(first), ts_text(options.start), ts_time(options.start)))
    return first


def _after_start(entries, start, counts):
    for entry in entries:
        if ts_key(entry["ts"]) <= start:
            counts["at_or_before_start"] += 1
            continue
        yield entry


def _entries(options, counts):
    for path in options.oplog_files:
        yield from _after_start(readers.iter_oplog_file(path), options.start, counts)


def replay_only(client, options, check_mode=False, progress=None):
    """Replay ``options.oplog_files`` onto the target. Returns (changed, result)."""
    first = check_files(options)
    if check_mode:
        return True, dict(options.describe(), first_ts=ts_text(first), oplog=None,
                          msg="check mode: would replay the oplog after %s%s" % (
                              ts_text(options.start),
                              " up to %s" % ts_text(options.limit) if options.limit else ""))
    started = time.time()
    counts = {"at_or_before_start": 0}
    replayer = oplog_replay.OplogReplayer(
        client, mode=options.apply_mode, limit=options.limit,
        bypass_document_validation=options.bypass_document_validation, progress=progress, skip_repeated=True)
    try:
        oplog_result = replayer.replay(_entries(options, counts))
        catalog = oplog_result.pop("index_catalog")
        if not options.no_index_restore:
            index_catalog.build_indexes(client, catalog)
    except BackupError as exc:
        raise RestoreFailed("the oplog-only replay failed after %s: %s; the target holds the base plus the entries "
                            "applied so far, restore the snapshot again before retrying"
                            % (replayer.result()["last_applied"] or ts_text(options.start), exc.message),
                            **exc.details)
    except pymongo_errors.PyMongoError as exc:
        raise RestoreFailed("the oplog-only replay failed after %s: %s; restore the snapshot again before retrying"
                            % (replayer.result()["last_applied"] or ts_text(options.start), exc))
    oplog_result["skipped"]["at_or_before_start"] = counts["at_or_before_start"]
    result = dict(options.describe(), first_ts=ts_text(first), oplog=oplog_result,
                  duration_seconds=round(time.time() - started, 3), warnings=oplog_result["warnings"])
    not_applied = sum(oplog_result["not_applied"].values())
    if not_applied > options.max_failed_documents:
        raise RestoreFailed("%d oplog entries were not applied (%s); the rest was replayed. Restore the snapshot "
                            "again and replay with max_failed_documents: %d to accept them"
                            % (not_applied, ", ".join("%s: %d" % item for item in sorted(
                                oplog_result["not_applied"].items())), not_applied), changed=True, **result)
    return True, result
