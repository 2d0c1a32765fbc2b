# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The native logical dump engine: mongodump-compatible output from raw BSON batches.

Flow: plan (which namespaces, their metadata and sizes) -> stream each collection's raw
batches into the layout or archive writer, several collections at once -> optional oplog
window (mongodump --oplog semantics) -> manifest.json last -> atomic rename into place.
Documents are never decoded; memory is bounded by the driver's batch size.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import os
import re
import shutil
import struct
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

try:
    from bson import json_util
    from bson.binary import Binary
    from pymongo import errors as pymongo_errors
except ImportError:  # pragma: no cover - reported by the module wrapper
    pass

from ansible_collections.dbops.mongodb_backup.plugins.module_utils import archive as archive_format
from ansible_collections.dbops.mongodb_backup.plugins.module_utils import bsonio
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.client import driver_error_cause
from ansible_collections.dbops.mongodb_backup.plugins.module_utils import layout
from ansible_collections.dbops.mongodb_backup.plugins.module_utils import locking
from ansible_collections.dbops.mongodb_backup.plugins.module_utils import manifest as manifest_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.namespaces import (
    NamespacePattern,
    check_collection_option,
    check_database_option,
    join_namespace,
    matches_any,
)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import (
    BackupError,
    DumpFailed,
    FormatError,
    InvalidOption,
    NamespaceNotFound,
    OplogOverflow,
)

# The prelude and archive header record it: how a restore recognises a backup of ours.
TOOL_NAME = "dbops.mongodb_backup"
TOOL_VERSION = TOOL_NAME + "-1.0.0"
CONFIG_COLLECTIONS_KEPT = ("chunks", "collections", "databases", "settings", "shards", "tags", "version")
USERS_AND_ROLES = (("$admin.system.users", "system.users", True),
                   ("$admin.system.roles", "system.roles", True),
                   ("$admin.system.version", "system.version", False))
_INT32 = struct.Struct("<i")
# A server batch may reach 16 MB and the driver holds a few copies of it while we write it;
# asking for batches of about this many bytes keeps memory bounded with 4 collections at once.
TARGET_BATCH_BYTES = 4 * 1024 * 1024
# Beside the target: its lock, the staging directory a run builds in, an old backup being replaced.
LOCK_SUFFIX = ".lock"
PARTIAL_SUFFIX = ".partial"
REPLACED_SUFFIX = ".replaced"
# Written first into a staging directory: proof that a leftover ``.partial`` is ours to remove.
STAGING_MARKER = ".dbops-mongodb-backup-staging"
DEFAULT_LOCK_TIMEOUT = 60


# --------------------------------------------------------------------------- options

class DumpOptions:
    """The dump's options, validated; mirrors mongodump where the meaning is the same."""

    def __init__(self, db=None, collection=None, query=None, query_file=None, ns_include=None,
                 ns_exclude=None, path=None, archive=None, gzip=False, gzip_level=6, oplog=False,
                 dump_users_and_roles=False, label=None, num_parallel_collections=4,
                 allow_empty=False, force=False, prefer_secondary=False, lock_timeout=DEFAULT_LOCK_TIMEOUT,
                 create_parent=False):
        self.db = db
        self.collection = collection
        self.query = parse_query(query, query_file)
        self.ns_include = [NamespacePattern(p, "ns_include") for p in (ns_include or [])]
        self.ns_exclude = [NamespacePattern(p, "ns_exclude") for p in (ns_exclude or [])]
        self.path = path
        self.archive = archive
        self.gzip = bool(gzip)
        self.gzip_level = int(gzip_level)
        self.oplog = bool(oplog)
        self.dump_users_and_roles = bool(dump_users_and_roles)
        self.label = label
        self.num_parallel_collections = int(num_parallel_collections)
        self.allow_empty = bool(allow_empty)
        self.force = bool(force)
        self.prefer_secondary = prefer_secondary
        self.lock_timeout = lock_timeout
        self.create_parent = bool(create_parent)
        self._validate()

    @property
    def target(self):
        return self.archive or self.path

    @property
    def is_archive(self):
        return bool(self.archive)

    def _validate(self):
        check_database_option("db", self.db)
        check_collection_option("collection", self.collection)
        if bool(self.path) == bool(self.archive):
            raise InvalidOption("give exactly one of path (a directory) or archive (a file)")
        if self.collection and not self.db:
            raise InvalidOption("collection %r needs db: say which database it is in" % self.collection)
        if self.query is not None and not self.collection:
            raise InvalidOption("query applies to one collection: set db and collection with it")
        if self.oplog and self.db:
            raise InvalidOption("oplog: true makes a point-in-time dump of the whole deployment; "
                                "it cannot be combined with db or collection (as mongodump --oplog)")
        if self.dump_users_and_roles and not self.db:
            raise InvalidOption("dump_users_and_roles applies to a single-database dump (db); a full "
                                "dump always includes admin.system.users and admin.system.roles")
        bsonio.check_compression_level("gzip", self.gzip_level, "gzip_level")
        if self.num_parallel_collections < 1:
            raise InvalidOption("num_parallel_collections must be at least 1")
        if isinstance(self.lock_timeout, bool) or not isinstance(self.lock_timeout, (int, float)) \
                or self.lock_timeout < 0:
            raise InvalidOption("lock_timeout must be a number of seconds, 0 or more, got %r" % (self.lock_timeout,))
        if self.label is not None and not re.match(r"^[A-Za-z0-9][A-Za-z0-9._:+-]*$", self.label):
            raise InvalidOption("label %r may only hold letters, digits and . _ : + - "
                                "(it names the backup in the catalog)" % self.label)

    def describe(self):
        """The options recorded in the manifest (no secrets here)."""
        return {
            "db": self.db, "collection": self.collection,
            "query": json_util.dumps(self.query) if self.query is not None else None,
            "ns_include": [p.text for p in self.ns_include],
            "ns_exclude": [p.text for p in self.ns_exclude],
            "gzip": self.gzip, "oplog": self.oplog,
            "dump_users_and_roles": self.dump_users_and_roles,
            "format": "archive" if self.is_archive else "directory",
        }


def parse_query(query, query_file):
    """A filter document from Extended JSON text (or a dict), or None."""
    if query is not None and query_file:
        raise InvalidOption("give query or query_file, not both")
    source = "query"
    if query_file:
        source = "query_file %s" % query_file
        try:
            with open(query_file) as handle:
                query = handle.read()
        except OSError as exc:
            raise InvalidOption("cannot read %s: %s" % (source, exc.strerror or exc))
    if query is None:
        return None
    if isinstance(query, dict):
        query = json.dumps(query)  # a YAML mapping may still hold Extended JSON ($date, $oid...)
    try:
        parsed = json_util.loads(query)
    except (ValueError, TypeError) as exc:
        raise InvalidOption("%s is not valid Extended JSON (%s); write it like "
                            "{\"created\": {\"$gte\": {\"$date\": \"2024-01-01T00:00:00Z\"}}}"
                            % (source, exc))
    if not isinstance(parsed, dict):
        raise InvalidOption("%s must be a JSON object (a filter document), got %s"
                            % (source, type(parsed).__name__))
    return parsed


# --------------------------------------------------------------------------- plan

class NamespacePlan:
    """One namespace to dump: where its data comes from and the metadata to record."""

    def __init__(self, db, name, coll_type, options, indexes, uuid_hex, source_db, source_name,
                 query=None, estimated_bytes=0, estimated_count=0):
        self.db = db
        self.name = name
        self.type = coll_type
        self.options = options
        self.indexes = indexes
        self.uuid_hex = uuid_hex
        self.source_db = source_db
        self.source_name = source_name  # None: metadata only (views)
        self.query = query
        self.estimated_bytes = estimated_bytes
        self.estimated_count = estimated_count

    @property
    def namespace(self):
        return "%s.%s" % (self.db, self.name)

    @property
    def batch_size(self):
        """Documents per server batch for about TARGET_BATCH_BYTES, from the average size."""
        if not self.estimated_count or not self.estimated_bytes:
            return None
        average = max(1, self.estimated_bytes // self.estimated_count)
        return max(1, min(100000, TARGET_BATCH_BYTES // average))

    @property
    def data_name(self):
        """The collection name data is stored under (timeseries keep their buckets name)."""
        if self.type == "timeseries" and self.source_name != self.name:
            return self.source_name
        return self.name

    def metadata_json(self):
        return layout.metadata_to_json(self.options, self.indexes, self.uuid_hex, self.name,
                                       self.type or "")

    def describe(self):
        return {"namespace": self.namespace, "db": self.db, "collection": self.name,
                "type": self.type, "estimated_bytes": self.estimated_bytes,
                "estimated_documents": self.estimated_count}


def skip_system_namespace(db, name, requested_db):
    """mongodump's rules for what a dump leaves out (FORMATS.md, "Which namespaces are dumped")."""
    if db.startswith("__mdb_internal"):
        return True
    if db == "local" and requested_db != "local":
        return True
    if db == "admin" and name == "system.keys":
        return True
    if db == "config" and requested_db != "config" and name not in CONFIG_COLLECTIONS_KEPT:
        return True
    if name.startswith("system.") and db != "admin" and name != "system.js":
        return True
    return "$" in name


def _uuid_hex(info):
    value = (info or {}).get("uuid")
    if value is None:
        return None
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, Binary):
        return value.hex() if hasattr(value, "hex") else bytes(value).hex()
    return None


def _supports_raw_timeseries(server):
    version = server.get("version_array") or [0, 0, 0]
    return tuple(version[:2]) >= (8, 3)


class Planner:
    """Lists what a dump will contain, with metadata gathered before any data is read."""

    def __init__(self, client, options, server):
        self.client = client
        self.options = options
        self.server = server

    def plan(self):
        databases = self._databases()
        plans = []
        for db in databases:
            plans.extend(self._plan_database(db))
        if self.options.db and self.options.dump_users_and_roles:
            plans.extend(self._users_and_roles(self.options.db))
        if not plans and not self.options.allow_empty:
            raise NamespaceNotFound(self._nothing_to_dump())
        return plans

    def _databases(self):
        if self.options.db:
            names = self.client.list_database_names()
            if self.options.db not in names and not self.options.allow_empty:
                raise NamespaceNotFound(
                    "database %r does not exist on %s (it has: %s); check db, or set "
                    "allow_empty: true to accept an empty backup" % (
                        self.options.db, self.server.get("address"), ", ".join(sorted(names)) or "none"))
            return [self.options.db]
        return sorted(self.client.list_database_names())

    def _nothing_to_dump(self):
        scope = self.options.db or "the deployment"
        if self.options.collection:
            scope = "%s.%s" % (self.options.db, self.options.collection)
            return ("collection %s does not exist on %s; check db and collection, or set "
                    "allow_empty: true to accept an empty backup" % (scope, self.server.get("address")))
        return ("nothing to dump in %s on %s after the namespace filters; check db, ns_include and "
                "ns_exclude, or set allow_empty: true to accept an empty backup"
                % (scope, self.server.get("address")))

    def _selected(self, db, name):
        if skip_system_namespace(db, name, self.options.db):
            return False
        namespace = join_namespace(db, name)
        if self.options.ns_include and not matches_any(self.options.ns_include, namespace):
            return False
        return not matches_any(self.options.ns_exclude, namespace)

    def _plan_database(self, db):
        database = self.client[db]
        filter_ = {"name": self.options.collection} if self.options.collection else {}
        plans = []
        for info in database.list_collections(filter=filter_):
            name = info["name"]
            coll_type = info.get("type", "collection")
            if not self._selected(db, name):
                continue
            plans.append(self._plan_collection(database, info, coll_type))
        return sorted(plans, key=lambda plan: plan.name)

    def _plan_collection(self, database, info, coll_type):
        name = info["name"]
        options = dict(info.get("options") or {})
        uuid_hex = _uuid_hex(info.get("info"))
        source_name = name
        if coll_type == "view":
            indexes, source_name, uuid_hex = [], None, None
        else:
            indexes = [dict(index) for index in database[name].list_indexes()]
            if coll_type == "timeseries":
                uuid_hex = None
                if not _supports_raw_timeseries(self.server):
                    source_name = "system.buckets." + name
        size, count = self._estimate(database, source_name) if source_name else (0, 0)
        query = self.options.query if self.options.collection == name else None
        if query is not None and source_name and not self.options.allow_empty:
            self._check_query_matches(database, source_name, query)
        return NamespacePlan(database.name, name, coll_type, options, indexes, uuid_hex,
                             database.name, source_name, query=query,
                             estimated_bytes=size, estimated_count=count)

    def _check_query_matches(self, database, name, query):
        """A query that selects nothing makes an empty backup: refused unless allow_empty (as documented)."""
        if database[name].find_one(query, {"_id": 1}) is None:
            raise NamespaceNotFound(
                "the query %s matches no document in %s.%s on %s, so the backup would hold nothing; "
                "check the query, or set allow_empty: true to accept an empty backup"
                % (json_util.dumps(query), database.name, name, self.server.get("address")))

    @staticmethod
    def _estimate(database, name):
        try:
            stats = database.command("collStats", name)
            return int(stats.get("size", 0)), int(stats.get("count", 0))
        except pymongo_errors.OperationFailure:
            return 0, 0

    def _users_and_roles(self, db):
        admin = self.client.admin
        existing = set(admin.list_collection_names())
        plans = []
        for stored_name, source_name, filter_by_db in USERS_AND_ROLES:
            if source_name not in existing:
                continue
            indexes = [dict(index) for index in admin[source_name].list_indexes()]
            plans.append(NamespacePlan(db, stored_name, "collection", {}, indexes, None, "admin",
                                       source_name, query={"db": db} if filter_by_db else None))
        return plans


# --------------------------------------------------------------------------- outputs

def count_documents(raw_batch):
    """Documents in a buffer of concatenated BSON documents (reads only the length prefixes)."""
    count, position, end = 0, 0, len(raw_batch)
    while position < end:
        position += _INT32.unpack_from(raw_batch, position)[0]
        count += 1
    return count


class _Sink:
    """Where one namespace's raw batches go; counts documents and bytes."""

    def __init__(self, write, close):
        self._write = write
        self._close = close
        self.documents = 0
        self.bytes = 0

    def write(self, raw_batch):
        self.documents += count_documents(raw_batch)
        self.bytes += len(raw_batch)
        self._write(raw_batch)

    def close(self):
        self._close()


class DirectoryOutput:
    """A dump directory in mongodump layout, built inside ``<path>.partial``."""

    def __init__(self, root, options, server_version):
        self.db = options.db
        self.writer = layout.DirectoryWriter(root, gzip=options.gzip, gzip_level=options.gzip_level,
                                             server_version=server_version)

    @staticmethod
    def _sink(stream):
        return _Sink(stream.write, stream.close)

    def write_metadata(self, plan):
        self.writer.write_metadata(plan.db, plan.name, plan.metadata_json())

    def open_namespace(self, plan):
        if plan.name.startswith("$admin."):
            return self._sink(self.writer.open_special(plan.db, plan.name))
        return self._sink(self.writer.open_collection(plan.db, plan.name, plan.type))

    def open_oplog(self):
        return self._sink(self.writer.open_oplog())

    def finish(self, server_version):
        # As mongodump: a single-database dump keeps its prelude in <root>/<db>/, and writes
        # none when nothing was dumped there.
        if self.db and not os.path.isdir(os.path.join(self.writer.root, self.db)):
            return
        self.writer.write_prelude(server_version, TOOL_VERSION, db=self.db)

    def file_records(self):
        return self.writer.file_records()


class ArchiveOutput:
    """A mongodump ``--archive`` file, built at ``<archive>.partial``."""

    def __init__(self, path, options, server_version, plans, with_oplog):
        self.path = path
        # The whole stream is one gzip member under gzip: true, as mongodump --archive --gzip.
        self.stream = bsonio.create_output_file(path, options.gzip, options.gzip_level)
        namespaces = [{"db": plan.db, "collection": plan.name, "metadata": plan.metadata_json(),
                       "type": plan.type or "collection"} for plan in plans]
        if with_oplog:
            # mongodump writes an empty type for the oplog (tools <= 4.x omitted the field)
            namespaces.append({"db": "", "collection": "oplog", "metadata": "", "type": ""})
        self.writer = archive_format.ArchiveWriter(self.stream, server_version, TOOL_VERSION,
                                                   options.num_parallel_collections, namespaces)

    def write_metadata(self, plan):
        """Metadata lives in the prelude, already written."""

    def open_namespace(self, plan):
        db, name = plan.db, plan.data_name
        return _Sink(lambda batch: self.writer.write_segment(db, name, batch),
                     lambda: self.writer.end_namespace(db, name))

    def open_oplog(self):
        return self.open_namespace(NamespacePlan("", "oplog", None, {}, [], None, "", ""))

    def finish(self, server_version):
        """The versions are in the archive header already; close every namespace and the file."""
        self.writer.close()
        self.stream.close()

    def file_records(self):
        disk = self.stream.disk
        return [{"path": os.path.basename(self.path), "bytes": disk.size,
                 "sha256": disk.sha256}]


# --------------------------------------------------------------------------- oplog window

def format_timestamp(ts):
    return "%d:%d" % (ts.time, ts.inc) if ts is not None else None


def _timestamp_result(ts):
    if ts is None:
        return None
    return {"ts": format_timestamp(ts), "t": ts.time, "i": ts.inc,
            "time": datetime.datetime.utcfromtimestamp(ts.time).strftime("%Y-%m-%dT%H:%M:%SZ")}


class OplogWindow:
    """mongodump --oplog: copy [start, end] of the oplog and fail if it rolled over meanwhile."""

    def __init__(self, client, server):
        self.client = client
        self.member = server.get("address")
        name = "oplog.rs" if server.get("replica_set") or server.get("hosts") else "oplog.$main"
        self.collection = client.local[name]
        self.start = None
        self.end = None

    def open(self):
        if self.collection.name not in self.client.local.list_collection_names():
            raise DumpFailed("oplog: true needs a replica-set member with an oplog, and %s has no "
                             "local.%s; dump without oplog, or dump from a replica-set member"
                             % (self.member, self.collection.name))
        self.start = self._oldest_open_transaction() or self._newest()
        self._check_not_rolled_over()
        return self.start

    def close(self):
        self.end = self._newest()
        self._check_not_rolled_over()
        return self.end

    def copy(self, sink):
        cursor = self.collection.find_raw_batches({"ts": {"$gte": self.start, "$lte": self.end}})
        try:
            for batch in cursor:
                for entry in _iter_decoded(batch):
                    check_oplog_entry(entry)
                sink.write(batch)
        finally:
            cursor.close()
        sink.close()
        self._check_not_rolled_over()

    def _newest(self):
        entry = self.collection.find_one({}, {"ts": 1}, sort=[("$natural", -1)])
        if entry is None:
            raise DumpFailed("the oplog local.%s on %s is empty; an oplog dump needs at least one "
                             "entry: write something or dump without oplog"
                             % (self.collection.name, self.member))
        return entry["ts"]

    def _oldest(self):
        entry = self.collection.find_one({}, {"ts": 1}, sort=[("$natural", 1)])
        return entry["ts"] if entry else None

    def _oldest_open_transaction(self):
        """Start at the first write of a transaction still open, so its commit replays whole."""
        try:
            open_txns = self.client.config.transactions.find(
                {"state": {"$in": ["prepared", "inProgress"]}}, {"startOpTime": 1})
            starts = [t["startOpTime"]["ts"] for t in open_txns if t.get("startOpTime")]
        except pymongo_errors.OperationFailure:
            return None
        return min(starts) if starts else None

    def _check_not_rolled_over(self):
        oldest = self._oldest()
        if oldest is None or oldest > self.start:
            raise OplogOverflow(
                "oplog overflow: the oldest entry in local.%s on %s is %s, newer than the dump's "
                "start %s, so writes made during the dump are lost; make the oplog larger "
                "(replSetResizeOplog) or the dump faster (a less busy member, more "
                "num_parallel_collections), then run the dump again" % (
                    self.collection.name, self.member, format_timestamp(oldest),
                    format_timestamp(self.start)))


def _iter_decoded(raw_batch):
    from bson import decode_iter
    return decode_iter(raw_batch)


def check_oplog_entry(entry):
    """Entries that make a point-in-time dump unrestorable (as mongodump refuses them)."""
    namespace = entry.get("ns", "")
    when = format_timestamp(entry.get("ts"))
    if namespace == "admin.system.version":
        raise DumpFailed("the oplog at %s changes admin.system.version (auth schema or feature "
                         "compatibility version) during the dump; run the dump again after "
                         "that change completes" % when)
    if entry.get("op") == "c":
        command = next(iter(entry.get("o") or {}), "")
        if command in ("renameCollection", "importCollection", "upgradeDowngradeViewlessTimeseries"):
            raise DumpFailed("a %s command at %s on %s ran during the dump, which an oplog dump "
                             "cannot capture consistently; run the dump again when no such "
                             "operation is running" % (command, when, namespace))
        if namespace.startswith("config.") and command == "create" and \
                str((entry.get("o") or {}).get("create", "")).startswith("localReshardingOplogBuffer"):
            raise DumpFailed("resharding started at %s during the dump; run the dump again after "
                             "it finishes" % when)


# --------------------------------------------------------------------------- the dump

class _Cancelled(DumpFailed):
    """A worker stopped because another one failed; the other failure is the one reported."""

    def __init__(self, namespace):
        super(_Cancelled, self).__init__("dump of %s cancelled because another collection failed"
                                         % namespace)


class Dumper:
    """Runs one dump. ``progress(event, **details)`` is called from worker threads."""

    def __init__(self, client, options, server, member=None, progress=None):
        self.client = client
        self.options = options
        self.server = server
        self.member = member or server.get("address")
        self.progress = progress or (lambda event, **details: None)
        self._failed = threading.Event()  # one worker failed: the others stop early

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
            self.check_backup_location(os.path.dirname(parent))
            planned["create_parent"] = parent
            return planned
        self.check_backup_location(parent)
        Staging(target, self.options.is_archive).check_free()
        return planned

    def run(self, plans):
        target = os.path.abspath(self.options.target)
        self.check_backup_location(os.path.dirname(target))
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
        workers = max(1, min(self.options.num_parallel_collections, len(plans)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dump") as pool:
            futures = [pool.submit(self._guarded, self._dump_namespace, output, plan) for plan in plans]
        errors = [f.exception() for f in futures if f.exception() is not None]
        root_causes = [e for e in errors if not isinstance(e, _Cancelled)]
        if errors:
            raise (root_causes or errors)[0]
        results = [f.result() for f in futures]
        oplog_result = None
        if oplog:
            oplog.close()
            self.collections_dumped(oplog)
            sink = output.open_oplog()
            oplog.copy(sink)
            oplog_result = {"start": _timestamp_result(oplog.start), "end": _timestamp_result(oplog.end),
                            "entries": sink.documents, "bytes": sink.bytes,
                            "collection": "local." + oplog.collection.name}
        return results, oplog_result

    def collections_dumped(self, oplog):
        """Seam between the data phase and the oplog copy (tests use it to provoke overflow)."""

    def _guarded(self, function, *args):
        try:
            return function(*args)
        except BaseException:
            self._failed.set()
            raise

    def _dump_namespace(self, output, plan):
        started = time.time()
        if self._failed.is_set():
            raise _Cancelled(plan.namespace)
        sink = None
        if plan.source_name is not None:
            sink = output.open_namespace(plan)
            source = self.client[plan.source_db][plan.source_name]
            filter_ = plan.query or {}
            hint = None if plan.query else [("$natural", 1)]
            cursor = source.find_raw_batches(filter_, hint=hint, batch_size=plan.batch_size or 0)
            try:
                for batch in cursor:
                    if self._failed.is_set():
                        raise _Cancelled(plan.namespace)
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
        return result

    def _manifest(self, backup_id, started, finished, results, files, oplog_result):
        document = manifest_utils.new_manifest(
            backup_id, self.options.label, "logical", manifest_utils.iso_time(started), manifest_utils.iso_time(finished),
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

    @staticmethod
    def check_backup_location(parent):
        if not os.path.isdir(parent):
            raise DumpFailed("the backup location %s does not exist or is not a directory; create it "
                             "(or mount the backup volume) first" % parent)
        if not os.access(parent, os.W_OK | os.X_OK):
            raise DumpFailed("the backup location %s is not writable by this user; fix its "
                             "permissions or choose another path" % parent)

    def _translate(self, exc):
        if isinstance(exc, OSError):
            return DumpFailed("writing the backup to %s failed: %s; free space or fix the filesystem, "
                              "then run the dump again (the incomplete backup was removed)"
                              % (exc.filename or self.options.target, exc.strerror or exc))
        if isinstance(exc, pymongo_errors.OperationFailure) and exc.code == 13:
            return DumpFailed("the user is not authorized to read everything the dump needs on %s: "
                              "%s; grant it the backup role" % (self.member, exc))
        if isinstance(exc, pymongo_errors.PyMongoError):
            return DumpFailed("the dump from %s failed: %s; the incomplete backup was removed; "
                              "check the server and run the dump again" % (self.member, driver_error_cause(exc)))
        return exc


# --------------------------------------------------------------------------- target, staging, commit

def check_target_kind(options):
    """Refuse a target of the wrong kind up front, before anything is read or written."""
    target = os.path.abspath(options.target)
    if options.is_archive and os.path.isdir(target):
        raise InvalidOption("archive %s is an existing directory; archive names the file to write "
                            "(e.g. %s), or use path: %s for a backup in mongodump directory layout"
                            % (target, os.path.join(target, "backup.archive"), target))
    if not options.is_archive and os.path.lexists(target) and not os.path.isdir(target):
        raise InvalidOption("path %s is an existing file; path names the directory to create, or use "
                            "archive: %s for a single-file archive backup" % (target, target))


def existing_backup(options):
    """The manifest of a complete backup already at the target, or None (nothing there, or force may
    replace what is there). Refuses what this collection did not write."""
    target = os.path.abspath(options.target)
    manifest = manifest_utils.manifest_path(target, options.is_archive)
    try:
        found = manifest_utils.read_manifest(manifest)
    except FormatError as exc:
        if options.force:
            return None  # our manifest's name, unreadable: force replaces the backup
        raise DumpFailed("%s; force: true replaces the backup at %s with a new one" % (exc.message, target))
    if found is not None or not os.path.lexists(target) or _is_empty_dir(target):
        return found
    if options.force and options.is_archive and os.path.lexists(manifest + PARTIAL_SUFFIX):
        # An archive left by an older version that failed while writing its manifest beside it.
        return None
    raise DumpFailed("%s already exists and is not a complete backup made by this collection; "
                     "choose another path, or remove it" % target)


def _is_empty_dir(path):
    return os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path)


def scope_mismatches(recorded, requested):
    """``["<option>: asked <x>, the backup holds <y>"]`` for every scope option that differs."""
    mismatches = []
    for key, asked in sorted(requested.items()):
        held = recorded.get(key)
        if (asked or None) != (held or None):
            mismatches.append("%s: asked %s, the backup holds %s" % (key, json.dumps(asked), json.dumps(held)))
    return mismatches


def check_kept_backup(existing, options):
    """A complete backup with the requested label is kept only if it is what was asked and intact."""
    target = os.path.abspath(options.target)
    if options.label is None or existing.get("label") != options.label:
        raise DumpFailed("%s already holds backup %s (label %r); use another path, the same label "
                         "to keep it, or force: true to replace it"
                         % (target, existing.get("backup_id"), existing.get("label")))
    mismatches = scope_mismatches(existing.get("options") or {}, options.describe())
    if mismatches:
        raise DumpFailed("%s already holds backup %s with label %r but of another scope (%s); use another "
                         "label or path for this scope, or force: true to replace that backup"
                         % (target, existing.get("backup_id"), options.label, "; ".join(mismatches)))
    damaged = manifest_utils.damaged_files(target, options.is_archive, existing)
    if damaged:
        raise DumpFailed("backup %s with label %r at %s is damaged (%s); run again with force: true to "
                         "replace it with a new backup, or use another path"
                         % (existing.get("backup_id"), options.label, target, "; ".join(damaged[:5])))


def is_ours(path):
    """A directory this collection made: a staging marker or one of our manifests inside."""
    if os.path.islink(path) or not os.path.isdir(path):
        return False
    if os.path.isfile(os.path.join(path, STAGING_MARKER)):
        return True
    try:
        return manifest_utils.read_manifest(os.path.join(path, manifest_utils.MANIFEST_NAME)) is not None
    except FormatError:
        return False


class Staging:
    """``<target>.partial``: the directory a backup is built in (marked as ours), moved into place last.

    A directory backup is the staging directory itself; an archive is built as a file inside it,
    with its manifest, so that the archive reaches its final name only once its manifest is
    complete. Use it only while holding the target's lock.
    """

    def __init__(self, target, is_archive):
        self.target = target
        self.is_archive = is_archive
        self.path = target + PARTIAL_SUFFIX
        self.replaced = target + REPLACED_SUFFIX
        self.marker = os.path.join(self.path, STAGING_MARKER)
        self.manifest = os.path.join(self.path, manifest_utils.MANIFEST_NAME)
        self.data_path = os.path.join(self.path, os.path.basename(target)) if is_archive else self.path
        self.created = False

    def check_free(self):
        """Refuse, before anything is written, what is in the way and was not made by this collection."""
        for path in (self.path, self.replaced):
            if os.path.lexists(path) and not is_ours(path):
                raise DumpFailed("%s is in the way of the backup %s and was not made by this collection (it "
                                 "holds neither our staging marker nor our manifest), so it is left untouched; "
                                 "move it away, or choose another path" % (path, self.target))

    def create(self):
        self.check_free()
        remove_path(self.path)  # a killed run's leftover: provably ours, and we hold the target's lock
        manifest_utils.make_private_dir(self.path)
        self.created = True
        fd = os.open(self.marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, manifest_utils.FILE_MODE)
        with os.fdopen(fd, "w") as handle:
            json.dump({"target": self.target, "pid": os.getpid(), "created_at": manifest_utils.iso_time(time.time())},
                      handle)

    def discard(self):
        if self.created:
            remove_path(self.path)

    def commit(self, document):
        """The manifest is complete on disk before anything moves; then the renames."""
        manifest_utils.write_json_atomic(self.manifest, document)
        if self.is_archive:
            self._commit_archive()
        else:
            self._commit_directory()
        manifest_utils.fsync_directory(os.path.dirname(self.target))
        self.created = False

    def _commit_directory(self):
        os.remove(self.marker)  # from here the manifest inside marks the directory as ours
        old = None
        if os.path.lexists(self.target):
            old = self.replaced
            remove_path(old)  # checked by check_free: an earlier replaced backup of ours
            os.rename(self.target, old)
        os.rename(self.path, self.target)
        if old:
            remove_path(old)

    def _commit_archive(self):
        final_manifest = manifest_utils.manifest_path(self.target, True)
        # The old archive loses its manifest first: from here it is never taken as complete.
        remove_path(final_manifest)
        remove_path(final_manifest + PARTIAL_SUFFIX)  # an older version's leftover temporary
        os.rename(self.data_path, self.target)
        try:
            os.rename(self.manifest, final_manifest)
        except BaseException:
            os.rename(self.target, self.data_path)  # nothing may look complete without its manifest
            raise
        remove_path(self.path)

    def interrupted_commit(self):
        """The staged manifest of an archive commit a killed run left between its two renames, or None.

        The staging then holds the complete manifest and the archive is at its final name; it is
        taken only when the archive matches that manifest's size and sha256.
        """
        if not self.is_archive or not is_ours(self.path) or not os.path.isfile(self.manifest) \
                or os.path.lexists(self.data_path) or not os.path.isfile(self.target) \
                or os.path.lexists(manifest_utils.manifest_path(self.target, True)):
            return None
        try:
            document = manifest_utils.read_manifest(self.manifest)
        except FormatError:
            return None
        if document is None or manifest_utils.damaged_files(self.target, True, document):
            return None
        return document

    def resume_commit(self):
        """Finish an interrupted archive commit (see interrupted_commit); True when done."""
        if self.interrupted_commit() is None:
            return False
        os.rename(self.manifest, manifest_utils.manifest_path(self.target, True))
        manifest_utils.fsync_directory(os.path.dirname(self.target))
        remove_path(self.path)
        return True


def remove_path(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


# --------------------------------------------------------------------------- entry point

def dump(client, options, server, member=None, check_mode=False, progress=None):
    """Run (or, in check mode, plan) a dump. Returns (changed, result dict)."""
    dumper = Dumper(client, options, server, member=member, progress=progress)
    check_target_kind(options)
    if check_mode:
        # a run would first finish an interrupted archive commit (Staging.resume_commit)
        existing = Staging(os.path.abspath(options.target), options.is_archive).interrupted_commit() \
            or existing_backup(options)
        if existing is not None and not options.force:
            check_kept_backup(existing, options)
            return False, _existing_result(existing, options)
        planned = dumper.check(dumper.plan())
        planned.update(path=options.target, label=options.label, server=server)
        return True, planned
    prepare_parent(options)
    with target_lock(options):
        Staging(os.path.abspath(options.target), options.is_archive).resume_commit()
        existing = existing_backup(options)
        if existing is not None and not options.force:
            check_kept_backup(existing, options)
            return False, _existing_result(existing, options)
        document = dumper.run(dumper.plan())
    return True, _run_result(document, options)


def prepare_parent(options):
    """The directory the backup goes in must exist (create_parent makes one missing level, 0700)."""
    parent = os.path.dirname(os.path.abspath(options.target))
    if options.create_parent and not os.path.isdir(parent):
        Dumper.check_backup_location(os.path.dirname(parent))
        try:
            manifest_utils.make_private_dir(parent)
        except FileExistsError:
            pass  # made by a concurrent run meanwhile
    Dumper.check_backup_location(parent)


def target_lock(options):
    """One run per target at a time, held from the idempotence check to the commit."""
    target = os.path.abspath(options.target)
    return locking.exclusive(target + LOCK_SUFFIX, options.lock_timeout, "the backup target %s" % target,
                             "dump with label %s" % options.label)


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
