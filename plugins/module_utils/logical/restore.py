# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The logical restore engine: mongodump directories and archives back into a server.

Flow (as mongorestore): verify the source (manifest checksums, or a structural check) before
touching the target -> plan namespaces (filters, renames) -> per collection: drop if asked,
create with its options, insert raw BSON batches without decoding -> users and roles ->
oplog replay -> indexes (from the metadata and the replayed oplog) -> views last.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

try:
    from bson.raw_bson import RawBSONDocument
    from pymongo import errors as pymongo_errors
    from pymongo.write_concern import WriteConcern
except ImportError:  # pragma: no cover - reported by the module wrapper
    RawBSONDocument = WriteConcern = pymongo_errors = None

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import archive as archive_format
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import bsonio
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog import store as catalog_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection.client import driver_error_cause
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import dump_metadata
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import dump_names
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import dump_scan
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import manifest as manifest_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import namespaces as ns_rules
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import server_codes
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.namespaces import (
    NamespacePattern,
    NamespaceRenamer,
    matches_any,
    split_namespace,
)

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.manifest import TOOL_NAME
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import replay as oplog_replay
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import index_catalog
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import readers
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.timestamps import parse_oplog_limit
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.workers import FailFastPool
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.versions import BUCKETS_PREFIX, data_collection_name
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import (
    BackupError, FormatError, InvalidOption, RestoreFailed, VerificationFailed)

# Users, roles and the auth schema version: restored through _mergeAuthzCollections, never inserted.
AUTH_COLLECTIONS = {"system.users": "users", "system.roles": "roles", "system.version": "version"}
TEMP_USERS, TEMP_ROLES = "tempusers", "temproles"


# --------------------------------------------------------------------------- options

class RestoreOptions:
    def __init__(self, source, db=None, collection=None, ns_include=None, ns_exclude=None,
                 ns_from=None, ns_to=None, drop=False, no_index_restore=False,
                 no_options_restore=False, num_parallel_collections=4,
                 num_insertion_workers_per_collection=1, batch_size=1000, write_concern=None,
                 bypass_document_validation=False, restore_users_and_roles=False,
                 stop_on_error=False, skip_verify=False, oplog_replay=False, oplog_limit=None,
                 oplog_file=None, oplog_apply_mode="auto", oplog_slices=None, drop_extra_collections=False,
                 require_manifest=True, ignore_unlisted_files=False, max_failed_documents=0,
                 resolve_prepared=False):
        self.source = source
        self.db = db
        self.collection = collection
        self.ns_include = [NamespacePattern(p, "ns_include") for p in (ns_include or [])]
        self.ns_exclude = [NamespacePattern(p, "ns_exclude") for p in (ns_exclude or [])]
        self.renamer = NamespaceRenamer(ns_from or [], ns_to or [])
        self.drop = bool(drop)
        self.no_index_restore = bool(no_index_restore)
        self.no_options_restore = bool(no_options_restore)
        self.num_parallel_collections = int(num_parallel_collections)
        self.num_insertion_workers_per_collection = int(num_insertion_workers_per_collection)
        self.batch_size = int(batch_size)
        self.write_concern = build_write_concern(write_concern)
        self.bypass_document_validation = bool(bypass_document_validation)
        self.restore_users_and_roles = bool(restore_users_and_roles)
        self.stop_on_error = bool(stop_on_error)
        self.skip_verify = bool(skip_verify)
        self.oplog_replay = bool(oplog_replay)
        self.oplog_limit = parse_oplog_limit(oplog_limit) if oplog_limit else None
        self.oplog_file = oplog_file
        self.oplog_slices = list(oplog_slices or [])
        self.oplog_apply_mode = oplog_apply_mode
        self.drop_extra_collections = bool(drop_extra_collections)
        self.require_manifest = bool(require_manifest)
        self.ignore_unlisted_files = bool(ignore_unlisted_files)
        self.max_failed_documents = int(max_failed_documents)
        # A sharded-cluster cut: transactions prepared before the limit and committed before it count
        # (OplogReplayer's resolve_prepared); plain oplog_limit keeps mongorestore's meaning.
        self.resolve_prepared = bool(resolve_prepared)
        self._validate()

    def _validate(self):
        if not self.source:
            raise InvalidOption("source is required: the dump directory or archive file to restore")
        ns_rules.check_database_option("db", self.db)
        ns_rules.check_collection_option("collection", self.collection)
        if self.collection and not self.db:
            raise InvalidOption("collection %r needs db: say which database it goes to" % self.collection)
        for name in ("num_parallel_collections", "num_insertion_workers_per_collection", "batch_size"):
            if getattr(self, name) < 1:
                raise InvalidOption("%s must be at least 1" % name)
        if (self.oplog_limit or self.oplog_file or self.oplog_slices) and not self.oplog_replay:
            raise InvalidOption("oplog_limit, oplog_file and oplog_slices need oplog_replay: true")
        if self.oplog_replay and (self.db or self.ns_include or self.ns_exclude or self.renamer.rules):
            raise InvalidOption("oplog_replay restores a whole deployment to a point in time and cannot be "
                                "combined with db, collection, ns_include, ns_exclude or ns_from/ns_to "
                                "(as mongorestore --oplogReplay)")
        if self.drop_extra_collections and (not self.drop or self.db or self.ns_include or self.ns_exclude
                                            or self.renamer.rules):
            raise InvalidOption("drop_extra_collections returns the whole deployment to the backup: it needs "
                                "drop: true and cannot be combined with db, collection, ns_include, ns_exclude "
                                "or ns_from/ns_to")
        if self.oplog_apply_mode not in ("auto", "applyops", "crud"):
            raise InvalidOption("oplog_apply_mode must be auto, applyops or crud")
        if self.max_failed_documents < 0:
            raise InvalidOption("max_failed_documents must be 0 or more, got %d" % self.max_failed_documents)


WRITE_CONCERN_KEYS = ("w", "wtimeout", "j", "fsync")


def _coerce_write_concern_value(key, value):
    """Values that arrive as text from templates or -e: numbers and booleans written out."""
    if not isinstance(value, str):
        return value
    if key in ("w", "wtimeout") and value.isdigit():
        return int(value)
    if key in ("j", "fsync") and value.lower() in ("true", "yes", "false", "no"):
        return value.lower() in ("true", "yes")
    return value


def build_write_concern(settings):
    """The pymongo WriteConcern for ``write_concern``, built once before anything is written;
    None when not given. A typo or a bad value is an error naming the key."""
    if not settings:
        return None
    if not isinstance(settings, dict):
        raise InvalidOption("write_concern must be a dictionary such as {w: majority, wtimeout: 60000}, got %r"
                            % (settings,))
    unknown = sorted(key for key in settings if key not in WRITE_CONCERN_KEYS)
    if unknown:
        raise InvalidOption("write_concern has unknown key(s) %s; the keys are %s (for example {w: majority, "
                            "wtimeout: 60000}); nothing was restored"
                            % (", ".join(repr(k) for k in unknown), ", ".join(WRITE_CONCERN_KEYS)))
    values = dict((key, _coerce_write_concern_value(key, value)) for key, value in settings.items())
    try:
        return WriteConcern(**values)
    except (TypeError, ValueError, pymongo_errors.ConfigurationError) as exc:
        raise InvalidOption("write_concern %r is not valid: %s; for example {w: majority, wtimeout: 60000}; "
                            "nothing was restored" % (settings, exc))


# --------------------------------------------------------------------------- sources

class SourceNamespace:
    """One namespace of the source with its metadata; data is read through the source."""

    def __init__(self, db, collection, coll_type, metadata, data_key, documents=None):
        self.db = db
        self.collection = collection
        self.type = coll_type or "collection"
        self.metadata = metadata or {}
        self.data_key = data_key  # the .bson path, or the archive's stored namespace; None for views
        self.documents = documents

    @property
    def namespace(self):
        return "%s.%s" % (self.db, self.collection)

    @property
    def auth_kind(self):
        """users, roles or version for auth data (admin's, or a single-db dump's $admin.*), else None."""
        if self.collection.startswith("$admin."):
            return AUTH_COLLECTIONS.get(self.collection[len("$admin."):])
        if self.db == "admin":
            return AUTH_COLLECTIONS.get(self.collection)
        return None

    @property
    def special(self):
        return self.auth_kind is not None


def open_source(path):
    """The source, not read yet: nothing is parsed before the manifest has been checked."""
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "archive")):
        return DirectorySource(path)
    if os.path.isfile(path):
        return ArchiveSource(path)
    if os.path.exists(path):
        raise InvalidOption("source %s is neither a directory nor a file; give the dump directory or archive "
                            "file" % path)
    raise InvalidOption("source %s does not exist; give the dump directory or archive file" % path)


class DirectorySource:
    kind = "directory"

    def __init__(self, root):
        self.root = root
        self.manifest_path = manifest_utils.manifest_path(root, False)
        self.excluded = set()  # files left out under ignore_unlisted_files
        self._scan = None

    @property
    def scan(self):
        if self._scan is None:
            self._scan = dump_scan.scan_dump_directory(self.root)
        return self._scan

    @property
    def server_version(self):
        return (self.scan.prelude or {}).get("ServerVersion")

    def namespaces(self):
        return [SourceNamespace(e.db, e.collection, e.type, e.metadata, e.bson_path) for e in self.scan.entries
                if not self.excluded.intersection((e.bson_path, e.metadata_path))]

    def oplog_path(self):
        path = self.scan.oplog_path
        return None if path in self.excluded else path

    def has_oplog(self):
        return self.oplog_path() is not None

    def tool_versions(self):
        """ToolVersion of every prelude.json at the top and in the database directories (read raw:
        this runs before the scan, which parses every metadata file)."""
        versions = []
        for directory in [self.root] + [os.path.join(self.root, name) for name in _listdir(self.root)]:
            for name in dump_names.PRELUDE_NAMES:
                path = os.path.join(directory, name)
                if os.path.isfile(path):
                    try:
                        versions.append(dump_metadata.read_prelude(path).get("ToolVersion"))
                    except FormatError:
                        pass
        return versions

    def files(self):
        """Every file below the root, relative to it (symlinks not followed)."""
        found = []
        for directory, _dirs, names in os.walk(self.root):
            for name in names:
                found.append(os.path.relpath(os.path.join(directory, name), self.root))
        return sorted(found)

    def stray_entries(self):
        """Files and directories the dump layout has no place for (mongorestore skips them)."""
        return [warning for warning in self.scan.warnings if warning.startswith("skipping file")
                or warning.startswith("skipping subdirectory")]

    def structural_check(self):
        """Without a manifest: every document of every data file whole and well-formed (as bsondump
        --objcheck, plus array keys in order), timeseries data shaped as buckets. Returns what was checked."""
        files = documents = 0
        for entry in self.scan.entries:
            if entry.bson_path and entry.bson_path not in self.excluded:
                files += 1
                buckets = os.path.basename(entry.bson_path).startswith(BUCKETS_PREFIX)
                with bsonio.open_decompressed(entry.bson_path) as handle:
                    for number, raw in enumerate(bsonio.iter_raw_documents(handle, entry.bson_path), 1):
                        bsonio.check_document(raw, entry.bson_path, strict_arrays=True)
                        if buckets:
                            dump_scan.check_timeseries_bucket(raw, entry.bson_path, number)
                        documents += 1
        return {"data_files": files, "documents": documents,
                "metadata_files": len([e for e in self.scan.entries if e.metadata_path]),
                "checks": "every document of every data file well-formed (bsondump --objcheck, array keys in "
                          "order; timeseries data shaped as buckets), every metadata.json parsed"}

    def iter_batches(self, item, batch_bytes):
        with bsonio.open_decompressed(item.data_key) as handle:
            yield from bsonio.read_batches(handle, item.data_key, batch_bytes=batch_bytes)


def _listdir(path):
    return sorted(name for name in os.listdir(path) if os.path.isdir(os.path.join(path, name)))


class ArchiveSource:
    kind = "archive"

    def __init__(self, path):
        self.root = path
        self.manifest_path = manifest_utils.manifest_path(path, True)
        self._read = False

    def _read_prelude(self):
        if self._read:
            return
        with archive_format.open_archive_for_read(self.root) as handle:
            reader = archive_format.ArchiveReader(handle, self.root)
            self.header = reader.header
            self.prelude = reader.prelude
            self._metadata = [(entry, reader.parse_metadata(entry)) for entry in reader.prelude]
        self._read = True

    @property
    def server_version(self):
        self._read_prelude()
        return self.header.get("server_version")

    def namespaces(self):
        self._read_prelude()
        items = []
        for entry, metadata in self._metadata:
            if entry["db"] == "" and entry["collection"] == "oplog":
                continue
            stored = data_collection_name(entry["collection"], entry.get("type"), self.server_version)
            items.append(SourceNamespace(entry["db"], entry["collection"], entry.get("type"), metadata,
                                         "%s.%s" % (entry["db"], stored)))
        return sorted(items, key=lambda item: item.namespace)

    def has_oplog(self):
        self._read_prelude()
        return any(e["db"] == "" and e["collection"] == "oplog" for e, _m in self._metadata)

    def tool_versions(self):
        try:
            with archive_format.open_archive_for_read(self.root) as handle:
                return [archive_format.ArchiveReader(handle, self.root).header.get("tool_version")]
        except (FormatError, OSError):
            return []

    def stray_entries(self):
        return []  # everything in an archive is announced in its prelude

    def structural_check(self):
        """Without a manifest: read the whole archive once, checking every CRC."""
        with archive_format.open_archive_for_read(self.root) as handle:
            summary = archive_format.ArchiveReader(handle, self.root).namespaces_summary()
        return {"namespaces": len(summary), "documents": sum(item["documents"] for item in summary.values()),
                "checks": "archive framing and the CRC of every namespace"}

    def iter_stream(self):
        """(data namespace, raw document) in stream order."""
        with archive_format.open_archive_for_read(self.root) as handle:
            for db, coll, raw in archive_format.ArchiveReader(handle, self.root).iter_documents():
                yield "%s.%s" % (db, coll), raw


# --------------------------------------------------------------------------- verification

def verify_source(source, options, warnings=None):
    """Check the source before anything is written; returns what was checked.

    With a manifest: nothing unlisted, every listed file present and (unless skip_verify) with its
    sha256. Without one: only when require_manifest is false, and never for a backup of ours.
    """
    warnings = warnings if warnings is not None else []
    document = manifest_utils.read_manifest(source.manifest_path)
    if document is None:
        return _verify_without_manifest(source, options, warnings)
    if document.get("kind") == manifest_utils.SNAPSHOT_KIND:
        raise InvalidOption("%s is a %s snapshot set (%s), not a dump: its data is in volume snapshots. Restore "
                            "them with the snapshot_restore role, then replay the archived oplog with oplog_only: "
                            "true; nothing was restored" % (source.root, (document.get("snapshot") or {}).get(
                                "provider"), document.get("label")))
    _check_unlisted_files(source, document, options, warnings)
    if options.skip_verify:
        return {"verified": False, "manifest": True, "reason": "skip_verify: true",
                "backup_id": document.get("backup_id"), "label": document.get("label")}
    damaged = manifest_utils.damaged_files(source.root, source.kind == "archive", document)
    if damaged:
        raise VerificationFailed("the backup %s does not match its manifest %s (%s): it is incomplete or damaged; "
                                 "restore another backup (skip_verify: true overrides this, dangerously)"
                                 % (source.root, source.manifest_path, "; ".join(damaged[:5])))
    return {"verified": True, "manifest": True, "files": len(document.get("files", [])),
            "backup_id": document.get("backup_id"), "label": document.get("label")}


def _check_unlisted_files(source, document, options, warnings):
    """A file the manifest does not list is not part of the backup: refused, or ignored with a warning."""
    if source.kind != "directory":
        return  # the manifest's sha256 covers the whole archive
    listed = set(os.path.normpath(record["path"]) for record in document.get("files", []))
    unlisted = [path for path in source.files() if path not in listed and path != manifest_utils.MANIFEST_NAME]
    if not unlisted:
        return
    shown = ", ".join(unlisted[:5]) + (" and %d more" % (len(unlisted) - 5) if len(unlisted) > 5 else "")
    if not options.ignore_unlisted_files:
        raise VerificationFailed("backup %s holds %d file(s) that its manifest %s does not list: %s; they are not "
                                 "part of the backup. Remove them, or restore with ignore_unlisted_files: true "
                                 "to leave them out; nothing was restored"
                                 % (source.root, len(unlisted), source.manifest_path, shown))
    source.excluded = set(os.path.join(source.root, path) for path in unlisted)
    warnings.append("ignored %d file(s) of %s that its manifest does not list (ignore_unlisted_files: true): %s"
                    % (len(unlisted), source.root, shown))


def written_by_us(source):
    """Why the source is a backup of this collection, or None: a catalog lists it, or a manifest was
    being written there, or its prelude.json (archive header) names our tool (mongodump writes its own
    version there)."""
    if _catalogued(source.root):
        return "the catalog %s lists it" % catalog_utils.Catalog.catalog_path(os.path.dirname(os.path.abspath(
            source.root)))
    if os.path.exists(source.manifest_path + ".partial"):
        return "%s.partial is there" % source.manifest_path
    for version in source.tool_versions():
        if version and version.startswith(TOOL_NAME):
            return "%s wrote it" % version
    return None


def _catalogued(path):
    absolute = os.path.abspath(path)
    root = os.path.dirname(absolute)
    if not os.path.isfile(catalog_utils.Catalog.catalog_path(root)):
        return False
    try:
        catalog = catalog_utils.Catalog.load(root)
    except BackupError:
        return True  # a catalog we cannot read beside it: ours, not proven otherwise
    return any(catalog.absolute(backup["path"]) == absolute for backup in catalog.backups)


def _verify_without_manifest(source, options, warnings):
    ours = written_by_us(source)
    if ours:
        raise VerificationFailed("%s is a backup written by dbops.mongodb_backup (%s) but its manifest %s is "
                                 "missing: it cannot be checked and may be incomplete or altered. Restore another "
                                 "backup; require_manifest: false does not apply to our own backups; nothing was "
                                 "restored" % (source.root, ours, source.manifest_path))
    if options.require_manifest:
        raise VerificationFailed("source %s has no manifest (%s), so nothing proves it complete and undamaged. If "
                                 "it is mongodump output, restore it with require_manifest: false (structural "
                                 "check only); otherwise check the path; nothing was restored"
                                 % (source.root, source.manifest_path))
    stray = source.stray_entries()
    if stray and not options.ignore_unlisted_files:
        shown = "; ".join(stray[:3]) + (" and %d more" % (len(stray) - 3) if len(stray) > 3 else "")
        raise VerificationFailed("source %s is not a plain dump directory: %d entr%s not part of a mongodump "
                                 "layout (%s). Give the directory mongodump wrote, or restore with "
                                 "ignore_unlisted_files: true to leave them out; nothing was restored"
                                 % (source.root, len(stray), "y is" if len(stray) == 1 else "ies are", shown))
    warnings.extend(stray)
    if options.skip_verify:
        return {"verified": False, "manifest": False, "reason": "skip_verify: true"}
    try:
        checked = source.structural_check()
    except FormatError as exc:
        raise VerificationFailed("the source failed its structural check: %s; nothing was restored"
                                 % exc.message)
    return {"verified": False, "manifest": False, "structural_check": checked}


def check_plan(source, planned, options):
    """Everything the restore needs, checked before the first write: namespaces to restore, and
    the oplog that oplog_replay will read."""
    available = source.namespaces()
    if not available:
        raise InvalidOption("source %s holds no namespaces: nothing to restore (an empty or gutted backup); "
                            "check the path and restore a complete backup; nothing was dropped"
                            % source.root)
    if not planned:
        names = [item.namespace for item in available]
        raise InvalidOption("none of the %d namespace(s) of %s is selected by db, collection, ns_include and "
                            "ns_exclude (it holds %s%s); nothing was restored"
                            % (len(names), source.root, ", ".join(names[:10]),
                               " ..." if len(names) > 10 else ""))
    # Target names were checked by plan_restore (core.namespaces.check_targets).
    if not options.oplog_replay:
        return
    if options.oplog_file:
        if not os.path.isfile(options.oplog_file):
            raise InvalidOption("oplog_file %s does not exist; nothing was restored" % options.oplog_file)
    elif not source.has_oplog():
        raise InvalidOption("oplog_replay: true, but %s holds no oplog; take the dump with oplog: true, or "
                            "give oplog_file; nothing was restored" % source.root)
    for path in options.oplog_slices:
        if not os.path.isfile(path):
            raise InvalidOption("oplog slice %s does not exist; the point-in-time chain is broken, nothing "
                                "was restored" % path)


def check_write_concern(server, write_concern):
    """A numeric w that the deployment cannot satisfy would fail the first insert, after the drops:
    refuse it now. (A mongos, and tag names, are left to the server.)"""
    if write_concern is None or not isinstance(write_concern.document.get("w"), int) \
            or server["topology"] == "sharded":
        return
    members, wanted = server["data_bearing_members"], write_concern.document["w"]
    if wanted > members:
        raise InvalidOption("write_concern w: %d asks for more members than the target has (%d data-bearing "
                            "member(s)%s); use w: majority or a number up to %d; nothing was restored"
                            % (wanted, members, " in replica set %s" % server["replica_set"] if server["replica_set"]
                               else ", a standalone", members))


def manifest_counts(source):
    """Document counts per source namespace, when the backup has a manifest."""
    try:
        document = manifest_utils.read_manifest(source.manifest_path) or {}
    except FormatError:
        return {}
    return dict((ns["namespace"], ns.get("documents")) for ns in document.get("namespaces", []))


# --------------------------------------------------------------------------- plan

class PlannedNamespace:
    def __init__(self, item, target):
        self.item = item
        self.target = target

    @property
    def target_db(self):
        return split_namespace(self.target)[0]

    @property
    def target_collection(self):
        return split_namespace(self.target)[1]


def plan_restore(source, options):
    """What goes where; refuses renames that do nothing and bad or colliding targets, so that
    nothing is written or dropped for a plan the user did not mean."""
    items = source.namespaces()
    selected = [item for item in items if (options.restore_users_and_roles or not item.special)
                and _selected(item, options)]
    options.renamer.check([item.namespace for item in selected], [item.namespace for item in items])
    planned = []
    for item in selected:
        target = options.renamer.rename(item.namespace)
        if options.db and not options.renamer.rules:
            target = "%s.%s" % (options.db, item.collection)
        planned.append(PlannedNamespace(item, target))
    ns_rules.check_targets([(p.item.namespace, p.target) for p in planned if not p.item.special])
    return planned


def _selected(item, options):
    if options.db and item.db != options.db:
        return False
    if options.collection and item.collection != options.collection:
        return False
    if item.collection == "system.profile":  # never restored, as mongorestore
        return False
    namespace = item.namespace
    if options.ns_include and not matches_any(options.ns_include, namespace):
        return False
    return not matches_any(options.ns_exclude, namespace)


# --------------------------------------------------------------------------- restore

class NamespaceProgress:
    def __init__(self, planned):
        self.planned = planned
        self.inserted = 0
        self.failed = 0
        self.bytes = 0
        self.indexes = 0
        self.complete = False  # every batch was sent
        self.first_error = None  # of the documents that were not written
        self.lock = threading.Lock()

    @property
    def restored_completely(self):
        """A namespace with a document that was not written is never complete."""
        return self.complete and not self.failed

    def describe(self):
        described = {"namespace": self.planned.target, "source_namespace": self.planned.item.namespace,
                     "type": self.planned.item.type, "inserted": self.inserted, "failed": self.failed,
                     "bytes": self.bytes, "indexes_built": self.indexes, "complete": self.restored_completely}
        if self.first_error:
            described["first_error"] = self.first_error
        return described


def data_collection(planned):
    """The target collection the documents go to: a timeseries' buckets when the dump holds buckets."""
    item = planned.item
    if item.type == "timeseries" and item.data_key and ".system.buckets." in item.data_key:
        return "system.buckets." + planned.target_collection
    return planned.target_collection


# Raw data read ahead per collection being restored. Inserts go out batch_size documents at a time,
# so a larger read-ahead buys no speed; it only multiplies memory by num_parallel_collections.
READ_BATCH_BYTES = 4 * 1024 * 1024


class Restorer:
    def __init__(self, client, options, progress=None):
        self.client = client
        self.options = options
        self.progress = progress or (lambda event, **details: None)
        self.batch_bytes = READ_BATCH_BYTES
        self.auth_documents = {"users": [], "roles": [], "version": []}
        self.pool = FailFastPool(options.num_parallel_collections, "restore")

    def _collection(self, planned):
        collection = self.client[planned.target_db][data_collection(planned)]
        if self.options.write_concern:
            collection = collection.with_options(write_concern=self.options.write_concern)
        return collection

    # ------------------------------------------------------------------ steps

    def prepare(self, planned):
        """Drop (when asked) and create the target with its options; views wait until the end."""
        database = self.client[planned.target_db]
        if self.options.drop:
            database.drop_collection(planned.target_collection)
        if planned.item.type == "view" or planned.item.special:
            return
        options = {} if self.options.no_options_restore else dict(planned.item.metadata.get("options") or {})
        if planned.target_collection in database.list_collection_names(filter={"name": planned.target_collection}):
            return
        try:  # created explicitly so empty collections and their options come back too
            database.create_collection(planned.target_collection, **options)
        except pymongo_errors.CollectionInvalid:
            pass
        except pymongo_errors.OperationFailure as exc:
            if exc.code != server_codes.NAMESPACE_EXISTS:
                raise  # else: created meanwhile by a concurrent restore (several shards through one mongos)

    def insert_batches(self, state, batches):
        """Insert raw batches with up to N workers; memory stays bounded by in-flight batches."""
        collection = self._collection(state.planned)
        workers = self.options.num_insertion_workers_per_collection
        if workers == 1:
            for batch in batches:
                self._insert(collection, state, batch)
            return
        in_flight = threading.BoundedSemaphore(workers * 2)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = []
            for batch in batches:
                in_flight.acquire()
                future = pool.submit(self._insert, collection, state, batch)
                future.add_done_callback(lambda _f: in_flight.release())
                futures.append(future)
            for future in futures:
                future.result()

    def _insert(self, collection, state, raw_docs):
        self.pool.check()
        for start in range(0, len(raw_docs), self.options.batch_size):
            chunk = raw_docs[start:start + self.options.batch_size]
            documents = [RawBSONDocument(raw) for raw in chunk]
            try:
                collection.insert_many(documents, ordered=False,
                                       bypass_document_validation=self.options.bypass_document_validation)
            except pymongo_errors.BulkWriteError as exc:
                # Documents the server refused (duplicate key, validation...): counted, and the
                # restore goes on unless stop_on_error; restore() fails the task at the end.
                errors = exc.details.get("writeErrors") or [{}]
                self._count(state, exc.details.get("nInserted", 0), len(errors), chunk, errors[0])
                if self.options.stop_on_error:
                    raise RestoreFailed("inserting into %s failed: %s (stop_on_error: true); %d documents "
                                        "inserted there so far, %d failed"
                                        % (state.planned.target, state.first_error, state.inserted, state.failed))
                continue
            except pymongo_errors.PyMongoError as exc:  # no answer, or the connection broke
                raise RestoreFailed("inserting into %s failed after %d documents: %s"
                                    % (state.planned.target, state.inserted, driver_error_cause(exc)))
            self._count(state, len(chunk), 0, chunk)

    def _count(self, state, inserted, failed, chunk, error=None):
        with state.lock:
            state.inserted += inserted
            state.failed += failed
            state.bytes += sum(len(raw) for raw in chunk)
            if error is not None and state.first_error is None:
                state.first_error = "%s (code %s)" % (error.get("errmsg"), error.get("code"))
        self.progress("batch", namespace=state.planned.target, inserted=state.inserted)

    def create_view(self, planned):
        options = dict(planned.item.metadata.get("options") or {})
        database = self.client[planned.target_db]
        if planned.target_collection in database.list_collection_names(filter={"name": planned.target_collection}):
            return
        database.create_collection(planned.target_collection, **options)


def merge_users_and_roles(client, auth_documents, db, drop):
    """Load users and roles as mongorestore does: into temporary admin collections, then let the
    server merge them with _mergeAuthzCollections (credentials stay hashed, nothing is decoded)."""
    admin = client.admin
    for name in (TEMP_USERS, TEMP_ROLES):
        admin.drop_collection(name)
    try:
        for name, kind in ((TEMP_USERS, "users"), (TEMP_ROLES, "roles")):
            if auth_documents[kind]:
                admin[name].insert_many([RawBSONDocument(raw) for raw in auth_documents[kind]])
        admin.command({"_mergeAuthzCollections": 1, "tempUsersCollection": "admin." + TEMP_USERS,
                       "tempRolesCollection": "admin." + TEMP_ROLES, "db": db, "drop": bool(drop)})
    finally:
        for name in (TEMP_USERS, TEMP_ROLES):
            admin.drop_collection(name)


def metadata_index_catalog(planned, no_index_restore):
    """{target namespace: {index name: spec}} from the backup's metadata (the _id index aside), for the
    PlannedNamespace list ``planned``."""
    catalog = {}
    if no_index_restore:
        return catalog
    for target in planned:
        item = target.item
        if item.type == "view" or item.special:
            continue
        specs = dict((spec["name"], dict(spec)) for spec in item.metadata.get("indexes") or []
                     if spec.get("name") != "_id_")
        if specs:
            catalog[target.target] = specs
    return catalog


def source_oplog(source, options):
    """The decoded entries to replay: oplog_file or the backup's own oplog, then oplog_slices in order
    (archived slices overlap by one entry; the replay skips an entry it has already read)."""
    if options.oplog_file:
        first = readers.iter_oplog_file(options.oplog_file)
    elif source.kind == "directory" and source.oplog_path():
        first = readers.iter_oplog_file(source.oplog_path())
    elif source.kind == "archive" and source.has_oplog():
        first = readers.iter_archive_oplog(source.root)
    else:
        raise InvalidOption("oplog_replay: true, but %s holds no oplog; take the dump with oplog: true, or "
                            "give oplog_file" % source.root)
    yield from first
    for path in options.oplog_slices:
        yield from readers.iter_oplog_file(path)


def restore(client, options, check_mode=False, progress=None):
    """Restore (or plan, in check mode) a dump. Returns (changed, result).

    Everything that can be checked is checked before the first write (drop included): the options
    (RestoreOptions), the source and its manifest, and the plan.
    """
    started = time.time()
    warnings = []
    source = open_source(options.source)
    verification = verify_source(source, options, warnings)
    planned = plan_restore(source, options)
    check_plan(source, planned, options)
    check_write_concern(client_utils.server_facts(client), options.write_concern)
    extra = extra_collections(client, planned) if options.drop_extra_collections else []
    if check_mode:
        return True, dict(_plan_result(client, source, planned, verification, options), extra_collections=extra,
                          warnings=warnings)
    restorer = Restorer(client, options, progress=progress)
    states = [NamespaceProgress(p) for p in planned]
    try:
        drop_extra(client, extra, planned)
        for state in states:
            restorer.prepare(state.planned)
        _restore_data(restorer, source, states, options)
        if options.restore_users_and_roles:
            merged_db = options.db or ""
            merge_users_and_roles(client, restorer.auth_documents, merged_db, options.drop)
            for state in states:
                if state.planned.item.special:
                    state.inserted = len(restorer.auth_documents[state.planned.item.auth_kind])
        catalog = metadata_index_catalog([s.planned for s in states], options.no_index_restore)
        oplog_result = None
        if options.oplog_replay:
            # Indexes are built after the replay, so an oplog that fixes duplicates restores cleanly;
            # the replay keeps the catalog current (dropIndexes, collMod, drop).
            replayer = oplog_replay.OplogReplayer(
                client, mode=options.oplog_apply_mode, limit=options.oplog_limit,
                bypass_document_validation=options.bypass_document_validation,
                index_catalog=catalog, progress=progress, skip_repeated=True,
                resolve_prepared=options.resolve_prepared)
            entries = source_oplog(source, options)
            oplog_result = replayer.replay(entries)
            catalog = oplog_result.pop("index_catalog")
        if not options.no_index_restore:
            index_catalog.build_indexes(client, catalog)
            for state in states:
                state.indexes = len(catalog.get(state.planned.target, {}))
        for state in states:
            if state.planned.item.type == "view":
                restorer.create_view(state.planned)
                state.complete = True
    except BackupError as exc:
        details = dict(exc.details, namespaces=[s.describe() for s in states])
        raise RestoreFailed(_failure_message(exc.message, states), **details)
    except pymongo_errors.PyMongoError as exc:
        raise RestoreFailed(_failure_message("the restore failed: %s" % driver_error_cause(exc), states),
                            namespaces=[s.describe() for s in states])
    seconds = max(time.time() - started, 1e-6)
    total_bytes = sum(s.bytes for s in states)
    result = {
        "source": options.source, "format": source.kind, "verification": verification,
        "namespaces": [s.describe() for s in states],
        "total_inserted": sum(s.inserted for s in states),
        "total_failed": sum(s.failed for s in states),
        "total_bytes": total_bytes, "duration_seconds": round(seconds, 3),
        "mb_per_second": round(total_bytes / seconds / 1e6, 2), "oplog": oplog_result,
        "dropped_extra_collections": extra, "warnings": warnings,
    }
    _fail_on_unwritten(states, oplog_result, options, result)
    return True, result


def _fail_on_unwritten(states, oplog_result, options, result):
    """Documents not written and oplog entries not applied fail the task, beyond max_failed_documents."""
    failed = [s for s in states if s.failed]
    not_applied = (oplog_result or {}).get("not_applied") or {}
    total = sum(s.failed for s in failed) + sum(not_applied.values())
    if not total:
        return
    parts = ["%s: %d (first error: %s)" % (s.planned.target, s.failed, s.first_error) for s in failed]
    parts += ["%d oplog entries not applied (%s)" % (number, reason) for reason, number in sorted(not_applied.items())]
    summary = "%d document(s) or oplog entries were not written: %s" % (total, "; ".join(parts))
    if total <= options.max_failed_documents:
        result["warnings"].append("%s; accepted by max_failed_documents: %d" % (summary, options.max_failed_documents))
        return
    raise RestoreFailed("%s; everything else was restored. Restore again with drop: true to replace what is there, "
                        "or set max_failed_documents: %d to accept these failures" % (summary, total),
                        changed=True, **result)


def _restore_data(restorer, source, states, options):
    if source.kind == "archive":
        _restore_archive_stream(restorer, source, states)
        return
    data_states = [s for s in states if s.planned.item.data_key and s.planned.item.type != "view"
                   and not s.planned.item.special]
    for state in states:
        if state.planned.item.special and state.planned.item.data_key:
            for batch in source.iter_batches(state.planned.item, restorer.batch_bytes):
                restorer.auth_documents[state.planned.item.auth_kind].extend(batch)

    def one(state):
        restorer.insert_batches(state, source.iter_batches(state.planned.item, restorer.batch_bytes))
        state.complete = True

    restorer.pool.run(one, data_states)
    for state in states:
        if not state.planned.item.data_key and state.planned.item.type != "view":
            state.complete = True


def _restore_archive_stream(restorer, source, states):
    """An archive interleaves namespaces: route each document to its namespace's batch."""
    by_key = dict((s.planned.item.data_key, s) for s in states if s.planned.item.type != "view")
    pending = {}
    sizes = {}
    for key, raw in source.iter_stream():
        state = by_key.get(key)
        if state is None:
            continue
        if state.planned.item.special:
            restorer.auth_documents[state.planned.item.auth_kind].append(raw)
            continue
        batch = pending.setdefault(key, [])
        batch.append(raw)
        sizes[key] = sizes.get(key, 0) + len(raw)
        if len(batch) >= restorer.options.batch_size or sizes[key] >= restorer.batch_bytes:
            restorer.insert_batches(state, [batch])
            pending[key], sizes[key] = [], 0
    for key, batch in pending.items():
        if batch:
            restorer.insert_batches(by_key[key], [batch])
    for state in by_key.values():
        state.complete = True


# Never dropped as "extra": the server's own databases and collections.
INTERNAL_DATABASES = ("admin", "local", "config")


def extra_collections(client, planned):
    """User collections and views on the target that the restore does not write: those the
    deployment did not have when the backup was taken (sorted "db.collection" names)."""
    restored = set(item.target for item in planned)
    extra = []
    for database in client.list_database_names():
        if database in INTERNAL_DATABASES:
            continue
        for collection in client[database].list_collection_names():
            namespace = "%s.%s" % (database, collection)
            if not collection.startswith("system.") and namespace not in restored:
                extra.append(namespace)
    return sorted(extra)


def drop_extra(client, extra, planned):
    """Drop the extra collections; a database the backup does not have at all is dropped whole."""
    restored_databases = set(item.target_db for item in planned)
    for namespace in extra:
        database, collection = split_namespace(namespace)
        client[database].drop_collection(collection)
    for database in set(split_namespace(n)[0] for n in extra) - restored_databases:
        client.drop_database(database)  # FerretDB keeps a database whose collections are all gone


def _failure_message(cause, states):
    complete = [s.planned.target for s in states if s.restored_completely]
    incomplete = [s.planned.target for s in states if not s.restored_completely]
    return ("%s; namespaces restored completely: %s; not complete: %s; fix the cause and restore again "
            "with drop: true" % (cause, ", ".join(complete) or "none", ", ".join(incomplete) or "none"))


def _plan_result(client, source, planned, verification, options):
    counts = manifest_counts(source)
    existing = {}
    namespaces = []
    for item in planned:
        if item.target_db not in existing:
            existing[item.target_db] = set(client[item.target_db].list_collection_names())
        exists = item.target_collection in existing[item.target_db]
        action = "drop and restore" if exists and options.drop else ("conflict: exists" if exists else "create")
        entry = {"namespace": item.target, "source_namespace": item.item.namespace,
                 "type": item.item.type, "target_exists": exists, "action": action}
        if counts.get(item.item.namespace) is not None:
            entry["documents"] = counts[item.item.namespace]
        namespaces.append(entry)
    return {"source": options.source, "format": source.kind, "verification": verification,
            "namespaces": namespaces}
