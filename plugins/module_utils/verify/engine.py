# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verification by test restore: a backup (or a point-in-time target) restored into a scratch server and
compared with what its manifest says it holds; the result recorded in the catalog entry of the backup.

Flow: resolve the backup (label, path, newest, or the restore plan of a target time) -> check the
oplog slices and the backup's files against their sha256 -> check the scratch server (not the
source, empty, not in use) -> restore the data with the restore engine (logical.restore), no
indexes yet -> compare per collection: document count, content hash, options -> replay the oplog
(the backup's own, plus the slices up to the target) with the replay engine -> build the indexes ->
compare the index definitions -> drop what was restored -> record. Restore and replay are timed
together: ``restore_seconds`` is what a real restore of this backup takes (its RTO at this size).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time

try:
    from pymongo import errors as pymongo_errors
except ImportError:  # pragma: no cover - reported by the module wrapper
    pymongo_errors = None

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog import pitr
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog.store import Catalog
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection.client import (
    driver_error_cause, server_facts)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.namespaces import split_namespace
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.timestamps import now_iso, parse_oplog_limit
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.workers import FailFastPool
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import (
    BackupError, CatalogError, InvalidOption, VerificationFailed)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import content_hash
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import manifest as manifest_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import restore as restore_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical.mongotools import sigterm_raises
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import index_catalog
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import replay as oplog_replay
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.verify import compare
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.verify import scratch as scratch_utils

APPLY_MODES = ("auto", "applyops", "crud")


class VerifyOptions:
    """Which backup to verify: ``label`` or ``path`` or ``target_time`` (a point in time), or, with only
    ``backup_root``, the newest logical backup of its catalog."""

    def __init__(self, backup_root=None, label=None, path=None, target_time=None, replica_set=None,
                 drop_scratch=False, apply_mode="auto", num_parallel_collections=4):
        self.backup_root = os.path.abspath(backup_root) if backup_root else None
        self.label = label
        self.path = os.path.abspath(path) if path else None
        self.target = parse_oplog_limit(target_time) if target_time else None
        self.target_time = target_time
        self.replica_set = replica_set
        self.drop_scratch = bool(drop_scratch)
        self.apply_mode = apply_mode
        self.num_parallel_collections = int(num_parallel_collections)
        self._validate()

    def _validate(self):
        chosen = [name for name in ("label", "path", "target_time") if getattr(self, name)]
        if len(chosen) > 1:
            raise InvalidOption("give one of label, path and target_time, not %s" % " and ".join(chosen))
        if not self.backup_root and not self.path:
            raise InvalidOption("backup_root is required (with label, target_time, or alone for the newest backup), "
                                "unless path names the backup")
        if self.replica_set and not self.target_time:
            raise InvalidOption("backup_replica_set chooses the oplog chain of a target_time; give target_time too")
        if self.apply_mode not in APPLY_MODES:
            raise InvalidOption("oplog_apply_mode must be one of %s" % ", ".join(APPLY_MODES))
        if self.num_parallel_collections < 1:
            raise InvalidOption("num_parallel_collections must be at least 1")


# --------------------------------------------------------------------------- which backup

class Subject:
    """The backup being verified: its path, manifest, catalog (root and entry, when catalogued) and,
    for a target time, the restore plan."""

    def __init__(self, path, root=None, record=None, plan=None):
        self.path = path
        self.root = root
        self.record = record
        self.plan = plan
        is_archive = os.path.isfile(path)
        manifest_path = manifest_utils.manifest_path(path, is_archive)
        if not os.path.exists(path):
            raise CatalogError("the backup %s does not exist; check the path (a catalogued backup whose files are "
                               "gone cannot be verified: take a new one)" % path)
        self.manifest = manifest_utils.read_manifest(manifest_path)
        if self.manifest is None:
            raise VerificationFailed("%s has no manifest (%s), so nothing says what it should hold: only complete "
                                     "backups of this collection can be verified; nothing was restored"
                                     % (path, manifest_path))
        if self.manifest.get("kind") == manifest_utils.SNAPSHOT_KIND:
            raise InvalidOption("%s is a snapshot set: its data is in volume snapshots, which a test restore into a "
                                "scratch server cannot read; nothing was restored" % path)
        if self.manifest.get("cluster"):
            raise InvalidOption("%s is a sharded-cluster backup: verify each replica set's dump on its own (path: "
                                "%s/<replica set name>); nothing was restored" % (path, path))

    @property
    def label(self):
        return self.manifest.get("label") or os.path.basename(self.path)

    @property
    def backup_id(self):
        return self.manifest.get("backup_id")


def _logical(record):
    return record.get("kind") in (None, "logical")


def resolve(options):
    """The Subject for ``options``; a CatalogError naming what is missing."""
    if options.target is not None:
        catalog = Catalog.load(options.backup_root)
        plan = pitr.restore_plan(catalog, options.target, options.replica_set)
        if not _logical(plan["backup"]):
            raise InvalidOption("the base of the restore plan for %s is %s, a %s backup: a test restore needs a logical "
                                "base; nothing was restored"
                                % (plan["target_time"], plan["backup"]["label"], plan["backup"].get("kind")))
        return Subject(plan["backup"]["absolute_path"], catalog.root, plan["backup"], plan)
    if options.label is not None:
        catalog = Catalog.load(options.backup_root)
        found = [b for b in catalog.backups if b.get("label") == options.label]
        if not found:
            labels = [b.get("label") for b in catalog.backups]
            raise CatalogError("no backup with label %r in the catalog %s (it holds %s); check the label"
                               % (options.label, catalog.path, ", ".join(str(lb) for lb in labels[-10:]) or "none"))
        if len(found) > 1:
            raise CatalogError("%d backups have the label %r in the catalog %s (%s); give path instead"
                               % (len(found), options.label, catalog.path, ", ".join(b["path"] for b in found)))
        return Subject(catalog.absolute(found[0]["path"]), catalog.root, found[0])
    if options.path is not None:
        root = options.backup_root or os.path.dirname(options.path)
        record = _catalogued(root, options.path)
        if record is None and options.backup_root:
            raise CatalogError("%s is not in the catalog %s; register it (mongodb_backup_catalog), or leave "
                               "backup_root out to verify it without recording the result"
                               % (options.path, Catalog.catalog_path(root)))
        return Subject(options.path, root if record else None, record)
    catalog = Catalog.load(options.backup_root)
    logical = [b for b in catalog.backups if _logical(b)]
    if not logical:
        raise CatalogError("the catalog %s holds no logical backup to verify; take one (and register it) first"
                           % catalog.path)
    newest = max(logical, key=lambda b: (b.get("finished_at") or "", b["backup_id"]))
    return Subject(catalog.absolute(newest["path"]), catalog.root, newest)


def _catalogued(root, path):
    if not os.path.isfile(Catalog.catalog_path(root)):
        return None
    catalog = Catalog.load(root)
    return next((b for b in catalog.backups if catalog.absolute(b["path"]) == os.path.normpath(path)), None)


# --------------------------------------------------------------------------- the run

class Verification:
    """One verification of ``subject`` into the scratch server ``client``."""

    def __init__(self, client, subject, options, progress=None):
        self.client = client
        self.subject = subject
        self.options = options
        self.progress = progress
        self.restore_options = restore_engine.RestoreOptions(
            source=subject.path, skip_verify=True, no_index_restore=True,  # the files are checked first, below
            num_parallel_collections=options.num_parallel_collections)
        self.checks = []
        self.failures = []
        self.collections = {}
        self.started = None

    # ------------------------------------------------------------------ before anything is written

    def check_files(self):
        """The plan's oplog slices and the backup's files against their sha256 (VerificationFailed: the backup
        itself is damaged)."""
        self.started = time.time()
        plan = self.subject.plan
        if plan is not None:
            self.checks.append("oplog slices: %d match their recorded sha256" % pitr.verify_slices(self.subject.root, plan))
        self.source = restore_engine.open_source(self.subject.path)
        checked = restore_engine.verify_source(self.source, restore_engine.RestoreOptions(source=self.subject.path))
        self.checks.append("backup files: %d match the sha256 of the manifest" % checked["files"])

    def prepare(self):
        """Every other check that can be made before the scratch server is written to."""
        self.planned = restore_engine.plan_restore(self.source, self.restore_options)
        restore_engine.check_plan(self.source, self.planned, self.restore_options)
        self.targets = [p.target for p in self.planned]
        self.databases, self.namespaces = scratch_utils.restored_places(self.targets)
        self.scratch, self.busy, self.existed = [], {}, set()

    def check_scratch(self):
        """The scratch server is not the source (read only)."""
        self.scratch = scratch_utils.check_not_source(self.client, self.subject.manifest, self.subject.record,
                                                      self.planned, self.subject.label)

    def refuse_busy(self):
        """Refuse a scratch server holding data (unless drop_scratch). A run looks under the lock: taking over a dead
        run's lock dropped what that run had restored."""
        self.busy = scratch_utils.user_databases(self.client)
        self.existed = set(self.client.list_database_names())  # a replay may create databases the backup lacks
        if self.busy and not self.options.drop_scratch:
            raise InvalidOption(
                "refused: the scratch server (%s) is not empty, it holds the database(s) %s; a verification restores "
                "into an empty server and drops what it restored afterwards. Give an empty server, or set "
                "drop_scratch: true to drop them first (their data is lost); nothing was written"
                % (", ".join(self.scratch), _busy_text(self.busy)))
        present = [n for n in scratch_utils.existing_targets(self.client, self.targets)
                   if split_namespace(n)[0] not in self.busy]
        if present:
            raise InvalidOption("refused: the scratch server already holds %s, which the restore would write; drop "
                                "it there first; nothing was written" % ", ".join(present))

    def plan_result(self):
        """What a run would do, for check mode."""
        counts = restore_engine.manifest_counts(self.source)
        refused = None
        if self.client is not None:
            try:
                self.refuse_busy()
            except InvalidOption as exc:
                refused = exc.message
        return {
            "restore": [{"namespace": p.target, "type": p.item.type, "documents": counts.get(p.item.namespace)}
                        for p in self.planned if not p.item.special],
            "compare": self._what_is_compared(),
            "replay": self._replay_description(),
            "would_drop_first": sorted(self.busy) if self.options.drop_scratch else [],
            "refused": refused,
        }

    # ------------------------------------------------------------------ the run

    def run(self):
        """Restore, compare, replay, compare; returns the outcome. Cleaning up is the caller's (``cleanup``)."""
        if self.busy:
            scratch_utils.drop_restored(self.client, sorted(self.busy), [])
            self.existed = set(self.client.list_database_names())
        restored = self._restore_data()
        self._compare_data(restored)
        catalog = restore_engine.metadata_index_catalog(self.planned, False)
        replay = self._replay(catalog)
        index_catalog.build_indexes(self.client, catalog)
        restore_seconds = time.time() - self.started - self.compare_seconds
        self._compare_indexes(catalog)
        return restored, replay, restore_seconds

    def _restore_data(self):
        _changed, result = restore_engine.restore(self.client, self.restore_options, progress=self.progress)
        return result

    def _compare_data(self, restored):
        started = time.time()
        manifest_namespaces = dict((ns["namespace"], ns) for ns in self.subject.manifest.get("namespaces") or [])
        inserted = dict((ns["source_namespace"], ns["inserted"] + ns["failed"]) for ns in restored["namespaces"])
        compared = [p for p in self.planned if not p.item.special]
        existing = {}
        for database in set(p.target_db for p in compared):
            existing[database] = dict((info["name"], info) for info in self.client[database].list_collections())

        def one(planned):  # collections are read back in parallel, as the dump read them
            recorded = manifest_namespaces.get(planned.item.namespace) or {}
            return self._compare_one(planned, recorded, inserted, existing[planned.target_db])
        outcomes = FailFastPool(self.options.num_parallel_collections, "verify").run(one, compared)
        hashed = 0
        for planned, (problems, entry) in zip(compared, outcomes):
            hashed += entry.get("content_hash") in ("match", "differs")
            self.collections[planned.target] = entry
            if problems:
                self.failures.append(compare.describe_failure(planned.target, problems))
        self.compare_seconds = time.time() - started
        data = [p for p in self.planned if not p.item.special and p.item.type != "view"]
        if hashed == len(data):
            self.checks.append("per collection after restoring the backup's data: document count, content hash (%s) "
                               "and collection options (%d collections)" % (content_hash.DESCRIPTION, len(data)))
        else:
            self.checks.append("per collection after restoring the backup's data: document count and collection "
                               "options; the content hash was not available for %d of %d collections (backup taken "
                               "by mongodump or before content hashes existed)" % (len(data) - hashed, len(data)))

    def _compare_one(self, planned, recorded, inserted, existing):
        entry = {"documents": None, "content_hash": "not available", "options": "match"}
        info = existing.get(planned.target_collection)
        if info is None:
            return ["missing after the restore"], dict(entry, options=None)
        problems = compare.option_differences(
            planned.item.metadata.get("options"), info.get("options"))
        if problems:
            entry["options"] = problems
        if planned.item.type == "view":
            entry["content_hash"] = None
            return problems, entry
        held = recorded.get("documents", inserted.get(planned.item.namespace))
        documents, digest = compare.read_content(self.client, planned.target_db,
                                                 restore_engine.data_collection(planned))
        entry["documents"] = {"backup": held, "restored": documents}
        count_problem = [] if documents == held else [
            "%d documents restored, the backup holds %s" % (documents, held)]
        expected = recorded.get("content_hash") or {}
        if expected.get("algorithm") == content_hash.ALGORITHM:
            entry["content_hash"] = "match" if expected.get("value") == digest else "differs"
            if entry["content_hash"] == "differs":
                count_problem.append("content hash differs")
        return count_problem + problems, entry

    def _replay_description(self):
        plan = self.subject.plan
        if plan is None and not self.source.has_oplog():
            return None
        return {"backup_oplog": self.source.has_oplog(),
                "slices": [s["file"] for s in (plan or {}).get("slices", [])],
                "oplog_limit": plan["oplog_limit"] if plan else None,
                "target_time": plan["target_time"] if plan else None}

    def _replay(self, catalog):
        """The backup's own oplog (as a restore with oplog_replay), plus the plan's slices up to its target."""
        described = self._replay_description()
        if described is None:
            return None
        plan = self.subject.plan or {}
        replay_options = restore_engine.RestoreOptions(
            source=self.subject.path, oplog_replay=True, oplog_limit=plan.get("oplog_limit"),
            oplog_slices=[s["path"] for s in plan.get("slices", [])])
        replayer = oplog_replay.OplogReplayer(self.client, mode=self.options.apply_mode, limit=replay_options.oplog_limit,
                                              index_catalog=catalog, progress=self.progress, skip_repeated=True)
        result = replayer.replay(restore_engine.source_oplog(self.source, replay_options))
        result.pop("index_catalog")
        not_applied = sum(result["not_applied"].values())
        if not_applied:
            self.failures.append("oplog replay: %d entries not applied (%s)" % (not_applied, ", ".join(
                "%s: %d" % item for item in sorted(result["not_applied"].items()))))
        self.checks.append("oplog replay: %d entries applied%s, every entry read was applied or skipped by the replay "
                           "rules" % (result["applied"], " up to %s (%s), exclusive" % (
                               plan["oplog_limit"], plan["target_time"]) if plan else " (the backup's own oplog)"))
        if plan:
            self.checks.append("the state at the target time has no reference to compare with: it is checked through "
                               "the base's content hashes before the replay and a replay without errors")
        return dict(described, applied=result["applied"], last_applied=result["last_applied"],
                    stopped_at_limit=result["stopped_at_limit"], not_applied=result["not_applied"],
                    mode_used=result["mode_used"])

    def _compare_indexes(self, catalog):
        compared = 0
        for planned in self.planned:
            if planned.item.special or planned.item.type == "view":
                continue
            collection = self.client[planned.target_db][planned.target_collection]
            if planned.target_collection not in self.client[planned.target_db].list_collection_names(
                    filter={"name": planned.target_collection}):
                continue  # dropped by the replay
            expected = list((catalog.get(planned.target) or {}).values())
            problems = compare.index_differences(expected, list(collection.list_indexes()))
            compared += 1
            entry = self.collections.setdefault(planned.target, {})
            entry["indexes"] = problems or "match"
            if problems:
                self.failures.append(compare.describe_failure(planned.target, problems))
        self.checks.append("per collection after the index build: index definitions (key in order, options; v and ns "
                           "ignored) of %d collections" % compared)

    def cleanup(self):
        """Drop what the verification restored, and the databases its replay created; returns the names dropped."""
        created = set(self.client.list_database_names()) - self.existed - set(restore_engine.INTERNAL_DATABASES)
        return scratch_utils.drop_restored(self.client, sorted(set(self.databases) | created), self.namespaces)

    def _what_is_compared(self):
        recorded = dict((ns["namespace"], ns) for ns in self.subject.manifest.get("namespaces") or [])
        data = [p for p in self.planned if not p.item.special and p.item.type != "view"]
        hashes = sum(1 for p in data if (recorded.get(p.item.namespace) or {}).get("content_hash"))
        return ["document count per collection",
                "content hash of %d of %d collections (the others have none recorded)" % (hashes, len(data))
                if hashes < len(data) else "content hash per collection",
                "collection options", "index definitions"]


def _busy_text(busy):
    return ", ".join("%s (%d collection%s)" % (name, count, "" if count == 1 else "s")
                     for name, count in sorted(busy.items()))


# --------------------------------------------------------------------------- entry point

def verify(client, options, scratch_description=None, check_mode=False, progress=None):
    """Verify (or plan, in check mode) a backup into the scratch server ``client``. Returns (changed, result);
    raises VerificationFailed, after recording it, when the restore or a comparison failed.

    In check mode ``client`` may be None (a temporary mongod that would be started): the scratch is not checked.
    """
    subject = resolve(options)
    verification = Verification(client, subject, options, progress=progress)
    try:
        verification.check_files()
    except VerificationFailed as exc:  # the backup is damaged: that is a verification's outcome too
        if not check_mode:
            verification.failures.append(exc.message)
            record(subject, _outcome(verification, None)["verified"])
        raise
    verification.prepare()
    scratch = dict(scratch_description or {})
    if client is not None:
        verification.check_scratch()
        scratch.update(_scratch_facts(client, verification.scratch))
    result = {"backup": _describe(subject), "scratch": scratch,
              "target_time": subject.plan["target_time"] if subject.plan else None}
    if check_mode:
        result.update(verification.plan_result(), checks=verification.checks,
                      recorded=False, msg=_plan_message(subject, verification, options))
        return False, result
    lock = scratch_utils.ScratchLock(client, subject.label, verification.databases, verification.namespaces)
    outcome, written = None, False
    with sigterm_raises("a verification ran; what it had restored was dropped and nothing was recorded") as stop:
        lock.acquire()
        try:
            verification.refuse_busy()
            lock.claim()
            written = True  # from here on, what the targets hold is ours to drop
            try:
                outcome = verification.run()
            except (BackupError, pymongo_errors.PyMongoError) as exc:
                if stop.fired:
                    raise  # stopped from outside (perhaps wrapped by the restore): says nothing about the backup
                cause = exc.message if isinstance(exc, BackupError) else driver_error_cause(exc)
                verification.failures.append("the test restore failed: %s" % cause)
        finally:
            dropped, left = _cleanup(verification, lock, written)
    result.update(_outcome(verification, outcome), dropped_after=dropped, checks=verification.checks,
                  taken_over=lock.taken_over)
    result["recorded"] = record(subject, result["verified"])
    result["msg"] = _message(subject, verification, result)
    if left:
        result["msg"] += ("; but cleaning the scratch server failed (%s): drop %s there before the next verification"
                          % (left, ", ".join(verification.databases + verification.namespaces)))
    if verification.failures or left:
        raise VerificationFailed(result["msg"], changed=True, **result)
    return True, result


def _cleanup(verification, lock, written):
    """Drop what was restored (only once something was), then release the scratch server.
    Returns (what was dropped, why cleaning failed or None): the result is recorded either way."""
    try:
        return (verification.cleanup() if written else []), None
    except pymongo_errors.PyMongoError as exc:
        return [], driver_error_cause(exc)
    finally:
        try:
            lock.release()
        except pymongo_errors.PyMongoError:
            pass  # the server is unreachable: the lock names this run, which the next run sees is gone


def _outcome(verification, outcome):
    restored, replay, seconds = outcome if outcome else (None, None, time.time() - verification.started)
    data_bytes = (restored or {}).get("total_bytes", 0)
    verified = {
        "ok": not verification.failures,
        "at": now_iso(),
        "restore_seconds": round(seconds, 3),
        "mb_per_s": round(data_bytes / max(seconds, 1e-6) / 1e6, 2),
        "collections": len(verification.collections),
        "documents": (restored or {}).get("total_inserted", 0),
        "target_time": verification.subject.plan["target_time"] if verification.subject.plan else None,
        "failures": list(verification.failures),
    }
    return {"verified": verified, "collections": verification.collections, "replay": replay,
            "restore_seconds": verified["restore_seconds"], "mb_per_s": verified["mb_per_s"],
            "compare_seconds": round(getattr(verification, "compare_seconds", 0.0), 3),
            "failures": verified["failures"]}


def record(subject, verified):
    """Store ``verified`` in the catalog entry of the backup, under the catalog lock. Returns whether it was."""
    if subject.root is None or subject.record is None:
        return False
    with Catalog.locked(subject.root) as catalog:
        entry = next((b for b in catalog.backups if b["backup_id"] == subject.backup_id), None)
        if entry is None:
            return False  # taken out of the catalog meanwhile (retention): nothing to record on
        entry["verified"] = verified
        catalog.changed = True
        catalog.save()
    return True


def _describe(subject):
    return {"label": subject.label, "backup_id": subject.backup_id, "path": subject.path,
            "catalog": Catalog.catalog_path(subject.root) if subject.root else None,
            "engine": (subject.manifest.get("options") or {}).get("engine", "native"),
            "finished_at": subject.manifest.get("finished_at")}


def _scratch_facts(client, addresses):
    facts = server_facts(client)
    return {"addresses": addresses, "version": facts.get("version"), "flavor": facts.get("flavor")}


def _plan_message(subject, verification, options):
    target = " and replay its oplog to %s" % subject.plan["target_time"] if subject.plan else ""
    where = ", ".join(verification.scratch) or "(a temporary mongod)"
    return ("check mode, nothing written: would restore %s (%d namespaces) into the scratch server %s%s, compare %s, "
            "drop what it restored and record the result%s"
            % (subject.label, len(verification.planned), where, target,
               ", ".join(verification._what_is_compared()),
               " in %s" % Catalog.catalog_path(subject.root) if subject.record else " (not catalogued: not recorded)"))


def _message(subject, verification, result):
    verified = result["verified"]
    where = " at %s" % subject.plan["target_time"] if subject.plan else ""
    if verification.failures:
        return "verification of %s%s FAILED: %s" % (subject.label, where, "; ".join(verification.failures))
    return ("verified %s%s: %d collections, %d documents restored in %.1f s (%.1f MB/s) and matching the backup"
            % (subject.label, where, verified["collections"], verified["documents"], verified["restore_seconds"],
               verified["mb_per_s"]))
