# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Continuous oplog archiving: copy new oplog entries into slice files listed in the catalog.

Each run copies from the last archived timestamp (inclusive, so consecutive slices overlap by
one entry and a chain is easy to check) up to the majority-committed last write, into slices
of at most ``span_seconds`` each. A slice is written to ``*.partial``, renamed when complete and
only then recorded in the catalog, so a killed run leaves no half slice behind. If the oldest
entry still in the oplog is newer than the last archived one, entries were lost: the gap is
recorded in the catalog and the run fails, advising a new full backup.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import time

try:
    from pymongo import errors as pymongo_errors
except ImportError:  # pragma: no cover - reported by the module wrapper
    pymongo_errors = None

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import bsonio
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog import store as catalog_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import locking
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection.client import driver_error_cause
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import manifest as manifest_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import (
    ArchiveFailed, InvalidOption, OplogGap)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.timestamps import ts_text, parse_oplog_limit

SLICE_DIR = "oplog"
LOCK_TIMEOUT = 60


class ArchiveOptions:
    def __init__(self, backup_root, replica_set=None, span_seconds=600, compression="gzip",
                 compression_level=None, start_from_backup=None, lock_timeout=LOCK_TIMEOUT):
        catalog_utils.check_backup_root(backup_root)  # before connecting to anything
        if int(span_seconds) < 1:
            raise InvalidOption("slice span must be at least one second")
        compression = bsonio.check_compression(compression)
        bsonio.check_compression_level(compression, compression_level, "compression_level")
        if lock_timeout is None or int(lock_timeout) < 0:
            raise InvalidOption("lock_timeout must be 0 or more, got %r" % (lock_timeout,))
        self.lock_timeout = int(lock_timeout)
        self.backup_root = backup_root
        self.replica_set = replica_set
        self.span_seconds = int(span_seconds)
        self.compression = compression
        self.compression_level = compression_level
        self.start_from_backup = start_from_backup


def majority_commit_point(client, oplog):
    """The newest timestamp a majority has: hello.lastWrite, else replSetGetStatus, else the newest
    entry (servers without replica-set status, such as FerretDB, have nothing better)."""
    hello = client.admin.command("hello")
    majority = ((hello.get("lastWrite") or {}).get("majorityOpTime") or {}).get("ts")
    if majority is not None:
        return majority, "hello.lastWrite.majorityOpTime"
    try:
        status = client.admin.command("replSetGetStatus")
        committed = ((status.get("optimes") or {}).get("lastCommittedOpTime") or {}).get("ts")
        if committed is not None:
            return committed, "replSetGetStatus.optimes.lastCommittedOpTime"
    except pymongo_errors.OperationFailure:
        pass
    newest = oplog.find_one({}, {"ts": 1}, sort=[("$natural", -1)])
    return (newest["ts"] if newest else None), "newest oplog entry (no majority commit point reported)"


def _oldest(oplog):
    entry = oplog.find_one({}, {"ts": 1}, sort=[("$natural", 1)])
    return entry["ts"] if entry else None


class SliceWriter:
    """Writes one slice file at a time into <root>/oplog/<replica set>/."""

    def __init__(self, root, replica_set, options):
        self.root = root
        self.directory = os.path.join(root, SLICE_DIR, replica_set)
        self.options = options
        self.stream = None
        self.first = self.last = None
        self.entries = 0
        for name in os.listdir(self.directory) if os.path.isdir(self.directory) else []:
            if name.endswith(".partial"):  # left by a killed run, never recorded
                os.remove(os.path.join(self.directory, name))

    def write(self, raw_batch, first_ts, last_ts, count):
        if self.stream is None:
            manifest_utils.make_private_dir(self.directory, parents=True)
            self.partial = os.path.join(self.directory, "slice-%d-%d.partial" % (first_ts.time, first_ts.inc))
            self.stream = bsonio.create_compressed_file(self.partial, self.options.compression,
                                                        self.options.compression_level)
            self.first = first_ts
        self.stream.write(raw_batch)
        self.last = last_ts
        self.entries += count

    def close(self):
        """Finish the open slice on disk (still ``*.partial``); returns (partial path, its catalog record)
        or None. The caller renames it into place once the catalog accepts the record."""
        if self.stream is None:
            return None
        disk = self.stream.disk
        stream, self.stream = self.stream, None
        try:
            stream.close()
        except Exception:
            _remove_quietly(self.partial)
            raise
        name = "%d-%d_%d-%d%s" % (self.first.time, self.first.inc, self.last.time, self.last.inc,
                                  ".bson" + bsonio.COMPRESSION_SUFFIXES[self.options.compression])
        final = os.path.join(self.directory, name)
        record = {"first_ts": ts_text(self.first), "last_ts": ts_text(self.last), "entries": self.entries,
                  "file": os.path.relpath(final, self.root), "bytes": disk.size, "sha256": disk.sha256,
                  "compression": self.options.compression}
        self.first, self.last, self.entries = None, None, 0
        return self.partial, record

    def abort(self):
        """Drop the open slice after a failure: no file of an unrecorded slice stays behind."""
        if self.stream is not None:
            stream, self.stream = self.stream, None
            try:
                stream.close()
            except Exception:  # the failure being handled is the one to report
                pass
            _remove_quietly(self.partial)


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


def lock_path(root, replica_set):
    """The lock that keeps archive runs of one replica set from running at the same time."""
    return os.path.join(root, "oplog-archive.%s.lock" % re.sub(r"[^A-Za-z0-9._-]", "_", replica_set))


def archive_oplog(client, options, server, check_mode=False):
    """One archiving run. Returns (changed, result)."""
    replica_set = options.replica_set or server.get("replica_set")
    if not replica_set:
        raise InvalidOption("oplog archiving needs a replica set: %s is a %s; set replica_set if the "
                            "server does not report one" % (server.get("address"), server.get("topology")))
    if check_mode:  # plans only: takes no lock (that would create a file) and writes nothing
        return _archive_locked(client, options, replica_set, check_mode)
    # One run per replica set: a second one would start from the same catalog end and record
    # slices that overlap the first one's.
    with locking.exclusive(lock_path(options.backup_root, replica_set), options.lock_timeout,
                           "the oplog archive of replica set %s" % replica_set,
                           "oplog archiving of replica set %s" % replica_set) as held:
        changed, result = _archive_locked(client, options, replica_set, check_mode)
        result.update(lock=held.path, lock_waited_seconds=held.waited_seconds)
        return changed, result


def _archive_locked(client, options, replica_set, check_mode):
    oplog = client.local["oplog.rs"]
    started = time.time()
    # The catalog is locked only to read where to start and to record each slice, so a long run
    # never blocks a backup registering itself.
    start = _start_ts(catalog_utils.Catalog.load(options.backup_root), options, replica_set)
    end, end_source = majority_commit_point(client, oplog)
    oldest = _oldest(oplog)
    if oldest is None or oldest > start:
        _record_gap(options.backup_root, replica_set, start, oldest)
        raise OplogGap("oplog gap on replica set %s: the oldest entry still in the oplog is %s, newer than "
                       "the last archived %s, so the entries in between are lost; take a new full backup "
                       "(with oplog: true) and archive from it" % (replica_set, ts_text(oldest), ts_text(start)))
    result = {"replica_set": replica_set, "start": ts_text(start), "end": ts_text(end),
              "end_source": end_source, "slices": [], "entries": 0, "bytes": 0}
    if end is None or end <= start:
        result["msg"] = "nothing new to archive after %s" % ts_text(start)
        return False, result
    if check_mode:
        # What the real run would copy: every entry after the start up to the same end (each slice also
        # repeats its predecessor's last entry, which is not counted here).
        pending = oplog.count_documents({"ts": {"$gt": start, "$lte": end}})
        result.update(entries=pending, estimated_entries=pending,
                      msg="check mode: %d oplog entries after %s up to %s would be archived; nothing was written"
                      % (pending, ts_text(start), ts_text(end)))
        return pending > 0, result
    _copy(oplog, options, replica_set, start, end, result)
    if _oldest(oplog) > start:  # the oplog rolled past our start while we copied
        _record_gap(options.backup_root, replica_set, start, _oldest(oplog))
        raise OplogGap("oplog gap on replica set %s: the oplog rolled over while archiving from %s; the "
                       "slices written are kept but the chain is broken; take a new full backup"
                       % (replica_set, ts_text(start)))
    seconds = max(time.time() - started, 1e-6)
    result.update(duration_seconds=round(seconds, 3), entries_per_second=round(result["entries"] / seconds, 1),
                  mb_per_second=round(result["bytes"] / seconds / 1e6, 2))
    return True, result


def _start_ts(catalog, options, replica_set):
    if options.start_from_backup:
        found = manifest_utils.read_manifest(manifest_utils.manifest_path(
            options.start_from_backup, os.path.isfile(options.start_from_backup)))
        if not found or not found.get("oplog"):
            raise InvalidOption("start_from_backup %s is not a complete backup taken with oplog: true"
                                % options.start_from_backup)
        return parse_oplog_limit(found["oplog"]["end"]["ts"])
    last = catalog.last_archived_ts(replica_set)
    if last is None:
        raise InvalidOption("nothing to continue from for replica set %s: the catalog in %s has no full backup "
                            "with an oplog and no slice; run a full backup with oplog: true first (or give "
                            "start_from_backup)" % (replica_set, options.backup_root))
    return parse_oplog_limit(last)


def _record_gap(root, replica_set, start, oldest):
    with catalog_utils.Catalog.locked(root) as catalog:
        catalog.record_gap(replica_set, ts_text(start), ts_text(oldest) if oldest else None)
        catalog.save()


def _copy(oplog, options, replica_set, start, end, result):
    """Stream [start, end] into slices; each complete slice is recorded before the next begins."""
    writer = SliceWriter(options.backup_root, replica_set, options)
    slice_start = None
    previous = None  # (raw, ts) of the last entry written: each slice repeats it, so the chain overlaps
    cursor = oplog.find_raw_batches({"ts": {"$gte": start, "$lte": end}}, sort=[("$natural", 1)])
    try:
        for batch in cursor:
            for raw, ts in _split_by_slice(batch):
                if slice_start is not None and ts.time >= slice_start + options.span_seconds:
                    _finish_slice(options.backup_root, writer, replica_set, result)
                    writer.write(previous[0], previous[1], previous[1], 1)
                    slice_start = ts.time
                if slice_start is None:
                    slice_start = ts.time
                writer.write(raw, ts, ts, 1)
                previous = (raw, ts)
        _finish_slice(options.backup_root, writer, replica_set, result)
    except pymongo_errors.PyMongoError as exc:
        writer.abort()
        raise ArchiveFailed("reading the oplog of %s failed after %d entries: %s; complete slices are kept, "
                            "run the archiving again" % (replica_set, result["entries"], driver_error_cause(exc)))
    except OSError as exc:
        writer.abort()
        raise ArchiveFailed("writing an oplog slice of %s into %s failed after %d entries: %s; the unfinished "
                            "slice was removed and complete slices are kept; fix the cause (free space, "
                            "permissions) and run the archiving again"
                            % (replica_set, writer.directory, result["entries"], exc.strerror or exc))
    except BaseException:
        writer.abort()
        raise
    finally:
        cursor.close()


def _split_by_slice(batch):
    """(raw entry, ts) for each entry of a raw batch; only ``ts`` is decoded."""
    from bson import decode
    position = 0
    while position < len(batch):
        length = int.from_bytes(batch[position:position + 4], "little")
        raw = batch[position:position + length]
        position += length
        yield raw, decode(raw)["ts"]


def _finish_slice(root, writer, replica_set, result):
    """Record the open slice and rename it into place; a slice the catalog refuses (it overlaps recorded
    ones) is removed, and a file already under the final name is never overwritten."""
    closed = writer.close()
    if closed is None:
        return
    partial, record = closed
    final = os.path.join(root, record["file"])
    renamed = False
    try:
        with catalog_utils.Catalog.locked(root) as catalog:
            _record, added = catalog.add_slice(replica_set=replica_set, **record)
            if not added or os.path.exists(final):
                raise ArchiveFailed("oplog slice %s already exists%s; the new copy was not kept: move the file "
                                    "aside if it is not a recorded slice, and run the archiving again"
                                    % (final, " in the catalog" if not added else ""))
            os.rename(partial, final)
            renamed = True
            catalog.save()
    except BaseException:
        _remove_quietly(final if renamed else partial)
        raise
    result["slices"].append(record)
    result["entries"] += record["entries"]
    result["bytes"] += record["bytes"]
