# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The native logical dump engine: mongodump-compatible output from raw BSON batches.

Flow: options (dump_options) -> plan (dump_plan: which namespaces, their metadata and sizes) ->
stream each collection's raw batches into the directory or archive output (dump_outputs), several
collections at once -> optional oplog window (oplog.window, mongodump --oplog semantics) ->
manifest.json last -> atomic rename into place (backup_target).
Documents are never decoded; memory is bounded by the driver's batch size.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time
import uuid

try:
    from bson import json_util
    from pymongo import errors as pymongo_errors
except ImportError:  # pragma: no cover - reported by the module wrapper
    pass

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import server_codes
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection.client import (
    driver_error_cause)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import manifest as manifest_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.workers import FailFastPool
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.timestamps import (
    iso_time, timestamp_result)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import (
    BackupError, DumpFailed, NamespaceNotFound)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical.dump_options import (
    check_target_kind)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical.dump_outputs import (
    ArchiveOutput, DirectoryOutput)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical.dump_plan import Planner
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical.backup_target import (
    Staging, check_backup_location, existing_backup, kept_backup, prepare_parent, target_lock)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog.window import OplogWindow


class Dumper:
    """Runs one dump. ``progress(event, **details)`` is called from worker threads."""

    def __init__(self, client, options, server, member=None, progress=None):
        self.client = client
        self.options = options
        self.server = server
        self.member = member or server.get("address")
        self.progress = progress or (lambda event, **details: None)

    # ------------------------------------------------------------------ public

    def plan(self):
        return Planner(self.client, self.options, self.server).plan()

    def existing_backup(self):
        """The manifest of a complete backup already at the target, or None."""
        return existing_backup(self.options)

    def check(self, plans):
        """What a run would do, for check mode: nothing is written."""
        target = os.path.abspath(self.options.target)
        planned = {
            "namespaces": [plan.describe() for plan in plans],
            "estimated_bytes": sum(plan.estimated_bytes for plan in plans),
            "estimated_documents": sum(plan.estimated_count for plan in plans),
        }
        parent = os.path.dirname(target)
        if self.options.create_parent and not os.path.isdir(parent):
            check_backup_location(os.path.dirname(parent))
            planned["create_parent"] = parent
            return planned
        check_backup_location(parent)
        Staging(target, self.options.is_archive).check_free()
        return planned

    def run(self, plans):
        target = os.path.abspath(self.options.target)
        check_backup_location(os.path.dirname(target))
        staging = Staging(target, self.options.is_archive)
        started = time.time()
        backup_id = str(uuid.uuid4())
        try:
            staging.create()  # discard() removes only what create() made: never what was in the way
            output = self._open_output(staging.data_path, plans)
            results, oplog_result = self._dump(output, plans)
            output.finish(self.server.get("version"))
            self._check_not_empty(results)
            finished = time.time()
            document = self._manifest(backup_id, started, finished, results, output.file_records(),
                                      oplog_result)
            staging.commit(document)
        except BaseException as exc:
            staging.discard()
            if isinstance(exc, BackupError):
                raise
            raise self._translate(exc)
        return document

    def _check_not_empty(self, results):
        """The query matched documents at planning time; they may be gone since (allow_empty accepts it)."""
        if self.options.query is None or self.options.allow_empty:
            return
        if not any(r["documents"] for r in results if r["collection"] == self.options.collection):
            raise NamespaceNotFound(
                "the query %s matched no document in %s.%s during the dump, so the backup would hold "
                "nothing (the incomplete backup was removed); check the query, or set allow_empty: "
                "true to accept an empty backup"
                % (json_util.dumps(self.options.query), self.options.db, self.options.collection))

    # ------------------------------------------------------------------ steps

    def _open_output(self, partial, plans):
        if self.options.is_archive:
            return ArchiveOutput(partial, self.options, self.server.get("version"), plans,
                                 self.options.oplog)
        return DirectoryOutput(partial, self.options, self.server.get("version"))

    def _dump(self, output, plans):
        oplog = OplogWindow(self.client, self.server) if self.options.oplog else None
        if oplog:
            oplog.open()
        for plan in plans:
            output.write_metadata(plan)
        pool = FailFastPool(self.options.num_parallel_collections, "dump")
        results = pool.run(lambda plan: self._dump_namespace(output, plan, pool), plans)
        oplog_result = None
        if oplog:
            oplog.close()
            sink = output.open_oplog()
            oplog.copy(sink)
            oplog_result = {"start": timestamp_result(oplog.start), "end": timestamp_result(oplog.end),
                            "entries": sink.documents, "bytes": sink.bytes,
                            "collection": "local." + oplog.collection.name}
        return results, oplog_result

    def _dump_namespace(self, output, plan, pool):
        started = time.time()
        sink = None
        if plan.source_name is not None:
            sink = output.open_namespace(plan)
            source = self.client[plan.source_db][plan.source_name]
            filter_ = plan.query or {}
            hint = None if plan.query else [("$natural", 1)]
            cursor = source.find_raw_batches(filter_, hint=hint, batch_size=plan.batch_size or 0)
            try:
                for batch in cursor:
                    pool.check()
                    sink.write(batch)
                    self.progress("batch", namespace=plan.namespace, documents=sink.documents,
                                  bytes=sink.bytes)
            except pymongo_errors.PyMongoError as exc:
                raise DumpFailed(
                    "reading %s from %s failed after %d documents: %s; the incomplete backup was "
                    "removed; check the server and run the dump again"
                    % (plan.namespace, self.member, sink.documents, driver_error_cause(exc)))
            finally:
                cursor.close()
            sink.close()
        elif self.options.is_archive:
            # An empty block announces a view to mongorestore (FORMATS.md).
            sink = output.open_namespace(plan)
            sink.close()
        self.progress("namespace_done", namespace=plan.namespace)
        result = plan.describe()
        del result["estimated_bytes"], result["estimated_documents"]
        result.update(documents=sink.documents if sink else 0, bytes=sink.bytes if sink else 0,
                      seconds=round(time.time() - started, 3))
        if sink is not None and sink.hash is not None and plan.source_name is not None:
            result["content_hash"] = sink.hash.record()  # what mongodb_backup_verify compares a restore with
        return result

    def _manifest(self, backup_id, started, finished, results, files, oplog_result):
        document = manifest_utils.new_manifest(
            backup_id, self.options.label, "logical", iso_time(started), iso_time(finished),
            self.server, self.member, self.options.describe())
        total_bytes = sum(r["bytes"] for r in results)
        seconds = max(finished - started, 1e-6)
        document.update(
            namespaces=results,
            files=files,
            oplog=oplog_result,
            totals={
                "namespaces": len(results),
                "documents": sum(r["documents"] for r in results),
                "bytes": total_bytes,
                "bytes_on_disk": sum(f["bytes"] for f in files),
                "seconds": round(finished - started, 3),
                "mb_per_second": round(total_bytes / seconds / 1e6, 2),
            })
        return document

    # ------------------------------------------------------------------ helpers

    def _translate(self, exc):
        if isinstance(exc, OSError):
            return DumpFailed("writing the backup to %s failed: %s; free space or fix the filesystem, "
                              "then run the dump again (the incomplete backup was removed)"
                              % (exc.filename or self.options.target, exc.strerror or exc))
        if isinstance(exc, pymongo_errors.OperationFailure) and exc.code == server_codes.UNAUTHORIZED:
            return DumpFailed("the user is not authorized to read everything the dump needs on %s: "
                              "%s; grant it the backup role" % (self.member, exc))
        if isinstance(exc, pymongo_errors.PyMongoError):
            return DumpFailed("the dump from %s failed: %s; the incomplete backup was removed; "
                              "check the server and run the dump again" % (self.member, driver_error_cause(exc)))
        return exc


# --------------------------------------------------------------------------- target, staging, commit


# --------------------------------------------------------------------------- entry point

def dump(client, options, server, member=None, check_mode=False, progress=None):
    """Run (or, in check mode, plan) a dump. Returns (changed, result dict)."""
    dumper = Dumper(client, options, server, member=member, progress=progress)
    check_target_kind(options)
    staging = Staging(os.path.abspath(options.target), options.is_archive)
    if check_mode:
        existing = kept_backup(options, staging)
        if existing is not None:
            return False, _existing_result(existing, options)
        planned = dumper.check(dumper.plan())
        planned.update(path=options.target, label=options.label, server=server)
        return True, planned
    prepare_parent(options)
    with target_lock(options):
        staging.resume_commit()
        existing = kept_backup(options, staging)
        if existing is not None:
            return False, _existing_result(existing, options)
        document = dumper.run(dumper.plan())
    return True, _run_result(document, options)


def _run_result(document, options):
    totals = document["totals"]
    return {
        "backup_id": document["backup_id"],
        "label": document["label"],
        "path": os.path.abspath(options.target),
        "manifest": manifest_utils.manifest_path(os.path.abspath(options.target), options.is_archive),
        "namespaces": document["namespaces"],
        "total_documents": totals["documents"],
        "total_bytes": totals["bytes"],
        "bytes_on_disk": totals["bytes_on_disk"],
        "duration_seconds": totals["seconds"],
        "mb_per_second": totals["mb_per_second"],
        "oplog": document["oplog"],
        "server": document["server"],
        "member": document["member"],
    }


def _existing_result(document, options):
    result = _run_result(document, options)
    result["msg"] = "backup %s with label %r is already complete at %s" % (
        document["backup_id"], document["label"], result["path"])
    return result
