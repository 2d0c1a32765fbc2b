# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading a mongodump directory: which namespaces it holds, their data and metadata files, and its prelude."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

try:
    import bson
except ImportError:  # pragma: no cover - reported by the module wrapper
    bson = None
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.bsonio import CORRUPT_HINT
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.versions import BUCKETS_PREFIX
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import FormatError
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.dump_metadata import (
    read_metadata_file, read_prelude)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.dump_names import (
    PRELUDE_NAMES, classify_file_name, collection_file_stem, is_truncated_stem, unescape_collection_stem,
    validate_db_name)


def check_timeseries_bucket(raw, source_name, index):
    """Reject documents that are not timeseries buckets ({_id, control{version,min,max}, data})."""
    try:
        doc = bson.decode(raw)
    except Exception as exc:
        raise FormatError("timeseries data %s: document #%d is malformed (%s); %s"
                          % (source_name, index, exc, CORRUPT_HINT), path=source_name)
    control = doc.get("control")
    problem = None
    if not isinstance(control, dict):
        problem = "it has no 'control' document"
    elif not isinstance(control.get("version"), int) or isinstance(control.get("version"), bool):
        problem = "control.version is missing or not a number"
    elif not isinstance(control.get("min"), dict) or not isinstance(control.get("max"), dict):
        problem = "control.min or control.max is missing"
    elif not isinstance(doc.get("data"), dict):
        problem = "it has no 'data' document"
    if problem:
        raise FormatError("timeseries data %s: document #%d is not a timeseries bucket (%s); "
                          "the data file does not belong to a timeseries collection, take or "
                          "fetch the backup again" % (source_name, index, problem),
                          path=source_name)


class DumpEntry:
    """One namespace found in a dump directory."""

    __slots__ = ("db", "collection", "type", "bson_path", "metadata_path", "metadata", "special")

    def __init__(self, db, collection, coll_type, bson_path=None, metadata_path=None,
                 metadata=None, special=False):
        self.db = db
        self.collection = collection
        self.type = coll_type
        self.bson_path = bson_path
        self.metadata_path = metadata_path
        self.metadata = metadata
        self.special = special

    @property
    def namespace(self):
        return "%s.%s" % (self.db, self.collection)

    def __repr__(self):
        return "DumpEntry(%s, type=%s, bson=%s, metadata=%s)" % (
            self.namespace, self.type, self.bson_path, self.metadata_path)


class DumpScan:
    """What scan_dump_directory found: entries sorted by namespace, plus the extras."""

    def __init__(self, root):
        self.root = root
        self.entries = []
        self.oplog_path = None
        self.prelude = None
        self.prelude_path = None
        self.warnings = []

    @property
    def namespaces(self):
        return [entry.namespace for entry in self.entries]

    def entry(self, db, collection):
        for item in self.entries:
            if item.db == db and item.collection == collection:
                return item
        return None


def _sibling_metadata(directory, stem):
    for suffix in (".metadata.json", ".metadata.json.gz", ".metadata.json.zst"):
        candidate = os.path.join(directory, stem + suffix)
        if os.path.isfile(candidate):
            return candidate
    return None


def _resolve_stem(stem, path, metadata_file, parsed):
    """Collection name for a file stem; long names come from the metadata's collectionName."""
    if not is_truncated_stem(stem):
        return unescape_collection_stem(stem)
    if metadata_file is None:
        raise FormatError(
            "dump file %s: the name is a shortened long collection name and no metadata file "
            "sits next to it to give the full name; copy its .metadata.json from the same dump "
            "or restore it with an explicit collection name" % path, path=path)
    if parsed is None or not parsed["collectionName"]:
        raise FormatError(
            "dump file %s: the name is a shortened long collection name but %s has no "
            "collectionName; copy a complete metadata file from the same dump" % (path, metadata_file),
            path=path)
    return parsed["collectionName"]


def _entry_type(collection_is_buckets, metadata, has_data):
    if collection_is_buckets:
        return "timeseries"
    if metadata and metadata["type"]:
        return metadata["type"]
    if metadata and not has_data and "viewOn" in metadata["options"]:
        return "view"  # older tools wrote no type field
    return "collection"


def scan_database_directory(path, db, warnings=None):
    """Entries of one database directory, following mongorestore's CreateIntentsForDB."""
    warnings = warnings if warnings is not None else []
    names = sorted(os.listdir(path))
    has_metadata_files = any(classify_file_name(name)[0] == "metadata" for name in names)
    metadata_files, data_files, parsed = {}, {}, {}

    for name in names:
        full = os.path.join(path, name)
        if os.path.isdir(full):
            warnings.append("skipping subdirectory %s: databases hold no subdirectories" % full)
            continue
        kind, stem = classify_file_name(name)
        if kind is None and name in PRELUDE_NAMES:
            continue  # a single-database dump keeps its prelude here (mongodump --db)
        if kind is None:
            warnings.append("skipping file %s: not a .bson, .bin or .metadata.json file" % full)
            continue
        if kind == "metadata":
            meta = read_metadata_file(full)
            collection = _resolve_stem(stem, full, full, meta)
            _add_unique(metadata_files, collection, full, db)
            parsed[full] = meta
        else:
            meta_file = _sibling_metadata(path, stem)
            if is_truncated_stem(stem) and meta_file is not None and meta_file not in parsed:
                parsed[meta_file] = read_metadata_file(meta_file)
            collection = _resolve_stem(stem, full, meta_file, parsed.get(meta_file))
            _add_unique(data_files, collection, full, db)

    entries = []
    for collection in sorted(set(data_files) | set(metadata_files)):
        entry = _make_entry(db, collection, data_files, metadata_files, parsed,
                            has_metadata_files, warnings)
        if entry is not None:
            entries.append(entry)
    return entries


def _add_unique(table, collection, path, db):
    if collection in table:
        raise FormatError(
            "dump directory %s: both %s and %s hold namespace %s.%s; keep only one of them"
            % (os.path.dirname(path), os.path.basename(table[collection]),
               os.path.basename(path), db, collection), path=path)
    table[collection] = path


def _make_entry(db, collection, data_files, metadata_files, parsed, has_metadata_files, warnings):
    data = data_files.get(collection)
    meta_path = metadata_files.get(collection)
    if collection == "system.profile":
        warnings.append("skipping %s.system.profile: it is never restored" % db)
        return None
    if collection == "system.indexes" and has_metadata_files:
        warnings.append("ignoring %s: the indexes come from the .metadata.json files" % data)
        return None
    is_buckets = collection.startswith(BUCKETS_PREFIX)
    if is_buckets:
        logical = collection[len(BUCKETS_PREFIX):]
        if logical in data_files:
            raise FormatError(
                "dump directory %s: both %s and %s hold data for timeseries %s.%s; keep only one"
                % (os.path.dirname(data), os.path.basename(data_files[logical]),
                   os.path.basename(data), db, logical), path=data)
        meta_path = metadata_files.get(logical)
        if data is None:  # metadata named after the buckets collection: not a dump file
            warnings.append("skipping %s: metadata for a buckets collection" % meta_path)
            return None
        if meta_path is None:
            raise FormatError(
                "dump file %s: timeseries data needs the metadata file %s.metadata.json next to "
                "it, which is missing; copy it from the same dump"
                % (data, collection_file_stem(logical)), path=data)
        collection = logical
    elif BUCKETS_PREFIX + collection in data_files:
        return None  # the buckets file's entry carries this metadata
    metadata = parsed.get(meta_path) if meta_path else None
    special = collection.startswith("$")
    if special:
        warnings.append("%s.%s is a special users/roles file: mongorestore restores it only "
                        "for a single-database restore" % (db, collection))
    coll_type = _entry_type(is_buckets, metadata, data is not None)
    return DumpEntry(db, collection, coll_type, data, meta_path, metadata, special)


def scan_dump_directory(root):
    """List the namespaces of a mongodump directory, following mongorestore's rules."""
    if not os.path.isdir(root):
        raise FormatError("dump directory %s: does not exist or is not a directory; check the "
                          "path" % root, path=root)
    scan = DumpScan(root)
    for name in sorted(os.listdir(root)):
        full = os.path.join(root, name)
        if os.path.isdir(full):
            validate_db_name(name, root)
            scan.entries.extend(scan_database_directory(full, name, scan.warnings))
        elif name == "oplog.bson":
            scan.oplog_path = full
        elif name in PRELUDE_NAMES:
            if scan.prelude_path is not None:
                raise FormatError("dump directory %s: both %s and %s exist; keep only one"
                                  % (root, os.path.basename(scan.prelude_path), name), path=root)
            scan.prelude_path = full
            scan.prelude = read_prelude(full)
        else:
            scan.warnings.append("skipping file %s: only database directories, oplog.bson and "
                                 "prelude.json belong at the top of a dump" % full)
    scan.entries.sort(key=lambda entry: (entry.db, entry.collection))
    if scan.prelude is None:
        scan.prelude_path = _prelude_in_subdirectories(root, scan.entries)
        scan.prelude = read_prelude(scan.prelude_path) if scan.prelude_path else None
    return scan


def _prelude_in_subdirectories(root, entries):
    for db in sorted(set(entry.db for entry in entries)):
        found = _prelude_file_in(os.path.join(root, db))
        if found:
            return found
    return None


def _prelude_file_in(directory):
    found = [os.path.join(directory, name) for name in PRELUDE_NAMES
             if os.path.isfile(os.path.join(directory, name))]
    if len(found) > 1:
        raise FormatError("dump directory %s: both %s exist; keep only one"
                          % (directory, " and ".join(os.path.basename(path) for path in found)), path=directory)
    return found[0] if found else None
