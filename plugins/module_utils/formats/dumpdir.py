# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The mongodump directory layout: file names, metadata.json, scanning and writing.

Rules follow ../shared/compat/FORMATS.md section (b); the aim is that mongorestore reads
what we write and that we read what mongodump wrote, byte for byte where it matters.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib
import json
import math
import os
import re
import threading
import uuid
from urllib.parse import quote_plus

try:
    import bson
    from bson import json_util
    from bson.code import Code
    from bson.int64 import Int64
    from bson.json_util import CANONICAL_JSON_OPTIONS, JSONOptions
except ImportError:  # pragma: no cover - reported by the module wrapper
    bson = json_util = Code = Int64 = CANONICAL_JSON_OPTIONS = JSONOptions = None

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.bsonio import (
    create_output_file, open_maybe_gzip, GZIP_ERRORS, CORRUPT_HINT)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.namespaces import (
    DATABASE_NAME_RULE,
    database_name_problem,
)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.versions import BUCKETS_PREFIX, data_collection_name
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import FormatError

MAX_STEM_BYTES = 238  # leaves room for ".metadata.json.gz" within a 255-byte file name
TRUNCATED_PREFIX_BYTES = 208
HASH_MARKER = "%24"
MAX_METADATA_BYTES = 64 * 1024 * 1024
PRELUDE_NAMES = ("prelude.json", "prelude.json.gz")
# Deleting a file of a backup with a manifest only trades this error for "listed file is missing".
METADATA_HINT = ("restore it from a good copy of the backup; only in mongodump output without a manifest "
                 "may it be deleted, which restores the collection without its options and indexes")
PRELUDE_HINT = ("restore it from a good copy of the backup; only in mongodump output without a manifest "
                "may it be deleted (it only records versions)")

_LOAD_OPTIONS = JSONOptions(document_class=dict) if JSONOptions else None
_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")


# --------------------------------------------------------------------------------------
# names


def escape_collection_name(name):
    """Escape like Go's url.QueryEscape: keep A-Z a-z 0-9 -_.~, space -> +, else %XX."""
    return quote_plus(name, safe="", encoding="utf-8", errors="strict")


def collection_file_stem(name):
    """File name stem mongodump uses for a collection, shortened for long names."""
    escaped = escape_collection_name(name)
    if len(escaped) <= MAX_STEM_BYTES:  # escaped text is pure ASCII: chars == bytes
        return escaped
    digest = hashlib.sha1(name.encode("utf-8")).digest()
    tail = base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
    return escaped[:TRUNCATED_PREFIX_BYTES] + HASH_MARKER + tail


def is_truncated_stem(stem):
    """True for stems whose real name lives only in the metadata's collectionName."""
    return HASH_MARKER in stem and len(stem.encode("utf-8")) == MAX_STEM_BYTES


def unescape_collection_stem(stem):
    """Reverse escape_collection_name strictly, as Go's url.QueryUnescape does."""
    bad = _ESCAPE_RE.search(stem)
    if bad:
        raise FormatError(
            "file name stem %r: '%%' at position %d is not followed by two hex digits; "
            "rename the file to the escaped collection name" % (stem, bad.start()), path=stem)
    raw = bytearray()
    i = 0
    data = stem.encode("utf-8")
    while i < len(data):
        ch = data[i]
        if ch == 0x25:  # '%'
            raw.append(int(data[i + 1:i + 3], 16))
            i += 3
            continue
        raw.append(0x20 if ch == 0x2B else ch)  # '+' means a space
        i += 1
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(
            "file name stem %r: the unescaped name is not valid UTF-8 (%s); "
            "rename the file to the escaped collection name" % (stem, exc), path=stem)


def bson_path(root, db, coll, gzip=False):
    """<root>/<db>/<stem>.bson[.gz]; ``coll`` is the data collection name."""
    return os.path.join(root, db, collection_file_stem(coll) + ".bson" + (".gz" if gzip else ""))


def metadata_path(root, db, coll, gzip=False):
    return os.path.join(root, db, collection_file_stem(coll) + ".metadata.json" + (".gz" if gzip else ""))


def oplog_path(root):
    # mongodump never adds .gz here, even when the content is gzipped.
    return os.path.join(root, "oplog.bson")


def prelude_path(root, gzip=False):
    return os.path.join(root, "prelude.json" + (".gz" if gzip else ""))


def validate_db_name(name, where):
    """Reject directory names that cannot be database names, as mongorestore does."""
    problem = database_name_problem(name)
    if problem:
        raise FormatError(
            "dump directory %s: subdirectory %r is not a valid database name (%s; %s); "
            "move it out of the dump directory" % (where, name, problem, DATABASE_NAME_RULE), path=where)


# --------------------------------------------------------------------------------------
# metadata.json


def _go_double(value):
    """Format a float like Go's strconv.FormatFloat(f, 'G', -1, 64) plus the driver's ".0"."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0.0"
    mantissa, dummy, exp_text = repr(abs(value)).partition("e")
    int_part, dummy, frac_part = mantissa.partition(".")
    digits = int_part + frac_part
    stripped = digits.lstrip("0")
    point = len(int_part) + int(exp_text or 0) - (len(digits) - len(stripped))
    digits = stripped.rstrip("0")
    exponent = point - 1
    if exponent < -4 or exponent >= 6:  # 'G' with shortest precision switches at 6 digits
        text = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        text += "E%s%02d" % ("-" if exponent < 0 else "+", abs(exponent))
        return sign + text
    if point <= 0:
        text = "0." + "0" * -point + digits
    elif point >= len(digits):
        text = digits + "0" * (point - len(digits)) + ".0"
    else:
        text = digits[:point] + "." + digits[point:]
    return sign + text


def _to_extjson(value):
    """Convert decoded BSON values into canonical Extended JSON v2 structures."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return {"$numberDouble": _go_double(value)}
    if isinstance(value, str) and not isinstance(value, Code):
        return value
    if isinstance(value, int) and not isinstance(value, Int64):
        if -2 ** 31 <= value < 2 ** 31:
            return {"$numberInt": str(value)}
        return {"$numberLong": str(value)}
    if hasattr(value, "items") and not hasattr(value, "as_doc"):  # mappings, not DBRef
        return dict((key, _to_extjson(item)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return [_to_extjson(item) for item in value]
    return json_util.default(value, CANONICAL_JSON_OPTIONS)


def dumps_canonical(document):
    """Compact canonical Extended JSON, byte-compatible with the Go driver (no HTML escaping)."""
    text = json.dumps(_to_extjson(document), ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False)
    # Go escapes these two unconditionally; Python leaves them raw.
    return text.replace(u"\u2028", "\\u2028").replace(u"\u2029", "\\u2029")


def _uuid_hex(uuid_value):
    """32 lowercase hex digits from a hex string, a uuid.UUID or 16 raw bytes (bson Binary)."""
    if uuid_value is None or uuid_value == "":
        return None
    if isinstance(uuid_value, uuid.UUID):
        return uuid_value.hex
    if isinstance(uuid_value, (bytes, bytearray)):
        return bytes(uuid_value).hex()
    return str(uuid_value)


def metadata_to_json(options, indexes, uuid_hex, collection_name, coll_type):
    """The text of <coll>.metadata.json exactly as mongodump writes it (no trailing newline)."""
    doc = {}
    if options:
        doc["options"] = options
    doc["indexes"] = list(indexes or [])
    uuid_text = _uuid_hex(uuid_hex)
    if uuid_text:
        doc["uuid"] = uuid_text
    doc["collectionName"] = collection_name
    if coll_type:
        doc["type"] = coll_type
    return dumps_canonical(doc)


def metadata_from_json(text, source_name):
    """Parse metadata.json text (canonical, relaxed or legacy JSON); None when blank."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError("metadata %s: not UTF-8 text (%s); %s" % (source_name, exc, METADATA_HINT),
                              path=source_name)
    if not text.strip():
        return None
    try:
        doc = json_util.loads(text, json_options=_LOAD_OPTIONS)
    except Exception as exc:  # json and json_util raise several types
        raise FormatError("metadata %s: invalid JSON (%s); %s" % (source_name, exc, METADATA_HINT),
                          path=source_name)
    if not isinstance(doc, dict):
        raise FormatError("metadata %s: the JSON is a %s, not an object; restore it from a good "
                          "copy" % (source_name, type(doc).__name__), path=source_name)
    defaults = (("options", {}), ("indexes", []), ("uuid", None), ("collectionName", ""),
                ("type", ""))
    # null counts as missing (Go decodes it to the zero value); wrong types are errors
    result = dict((key, default if doc.get(key) is None else doc[key]) for key, default in defaults)
    if result["uuid"] == "":
        result["uuid"] = None
    for key, kind in (("options", dict), ("indexes", list), ("collectionName", str), ("type", str)):
        if not isinstance(result[key], kind):
            raise FormatError("metadata %s: field %r is a %s, expected a %s; restore it from a "
                              "good copy" % (source_name, key, type(result[key]).__name__,
                                             kind.__name__), path=source_name)
    if result["uuid"] is not None and not isinstance(result["uuid"], str):
        raise FormatError("metadata %s: field 'uuid' is not a string; restore it from a good "
                          "copy" % source_name, path=source_name)
    return result


def read_metadata_file(path):
    """Parse a metadata.json[.gz] file (gzip sniffed); None for an empty file."""
    try:
        with open_maybe_gzip(path) as handle:
            data = handle.read(MAX_METADATA_BYTES + 1)
    except GZIP_ERRORS as exc:
        raise FormatError("metadata %s: gzip stream is damaged (%s); %s" % (path, exc, CORRUPT_HINT),
                          path=path)
    if len(data) > MAX_METADATA_BYTES:
        raise FormatError("metadata %s: larger than %d bytes, not a metadata file; move it out "
                          "of the dump directory" % (path, MAX_METADATA_BYTES), path=path)
    return metadata_from_json(data, path)


def read_prelude(path):
    """Parse prelude.json[.gz]: {"ServerVersion": ..., "ToolVersion": ...}."""
    try:
        with open_maybe_gzip(path) as handle:
            data = handle.read(1024 * 1024)
        doc = json.loads(data.decode("utf-8"))
    except GZIP_ERRORS as exc:
        raise FormatError("prelude %s: gzip stream is damaged (%s); %s" % (path, exc, CORRUPT_HINT),
                          path=path)
    except ValueError as exc:
        raise FormatError("prelude %s: invalid JSON (%s); %s" % (path, exc, PRELUDE_HINT), path=path)
    if not isinstance(doc, dict) or not all(
            isinstance(doc.get(key, ""), str) for key in ("ServerVersion", "ToolVersion")):
        raise FormatError("prelude %s: expected an object with string ServerVersion and "
                          "ToolVersion; %s" % (path, PRELUDE_HINT), path=path)
    return doc


def prelude_to_json(server_version, tool_version):
    # Go's json.Marshal: compact, and it escapes <, > and & (HTML-safe by default).
    text = json.dumps({"ServerVersion": server_version, "ToolVersion": tool_version},
                      ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# --------------------------------------------------------------------------------------
# timeseries buckets


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


# --------------------------------------------------------------------------------------
# reading a dump directory


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


_SUFFIXES = (  # (suffix, kind); longest first so ".metadata.json.gz" wins over ".gz"
    (".metadata.json.gz", "metadata"),
    (".metadata.json", "metadata"),
    (".bson.gz", "bson"),
    (".bson", "bson"),
    (".bin", "bson"),  # legacy extension
)


def classify_file_name(name):
    """(kind, stem) for dump file names, (None, None) for anything else."""
    for suffix, kind in _SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return kind, name[:-len(suffix)]
    return None, None


def _sibling_metadata(directory, stem):
    for suffix in (".metadata.json", ".metadata.json.gz"):
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
            continue  # a single-database dump keeps its prelude here; see find_prelude
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
                raise FormatError("dump directory %s: both prelude.json and prelude.json.gz exist; "
                                  "keep only one" % root, path=root)
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
        raise FormatError("dump directory %s: both prelude.json and prelude.json.gz exist; keep "
                          "only one" % directory, path=directory)
    return found[0] if found else None


def find_prelude(target):
    """Parsed prelude.json[.gz] for a restore target, or None (dumps before tools 100.12).

    Like mongorestore: look in the target directory, then in its parent; a .bson target
    starts from the directory that holds it.
    """
    directory = target if os.path.isdir(target) else os.path.dirname(os.path.abspath(target))
    for candidate in (directory, os.path.dirname(os.path.abspath(directory))):
        found = _prelude_file_in(candidate)
        if found:
            return read_prelude(found)
    return None


def resolve_bson_file(path, db=None, collection=None):
    """Entry for a single .bson target (mongorestore <dir>/<db>/<coll>.bson).

    The database defaults to the parent directory's name and the collection to the
    unescaped file name; timeseries buckets files need their metadata next to them.
    """
    if not os.path.isfile(path):
        raise FormatError("dump file %s: does not exist or is not a file; check the path" % path,
                          path=path)
    directory, name = os.path.split(os.path.abspath(path))
    kind, stem = classify_file_name(name)
    if kind != "bson":
        raise FormatError("dump file %s: not a .bson, .bson.gz or .bin file; point at the "
                          "collection's data file" % path, path=path)
    is_buckets = stem.startswith(BUCKETS_PREFIX)
    meta_stem = stem[len(BUCKETS_PREFIX):] if is_buckets else stem
    meta_path = _sibling_metadata(directory, meta_stem)
    metadata = read_metadata_file(meta_path) if meta_path else None
    if collection is None:
        collection = _resolve_stem(stem, path, meta_path, metadata)
    if is_buckets and collection.startswith(BUCKETS_PREFIX):
        collection = collection[len(BUCKETS_PREFIX):]
    if is_buckets and meta_path is None:
        raise FormatError(
            "dump file %s: timeseries data needs the metadata file %s.metadata.json next to it, "
            "which is missing; copy it from the same dump" % (path, meta_stem), path=path)
    db = db if db is not None else os.path.basename(directory)
    return DumpEntry(db, collection, _entry_type(is_buckets, metadata, True), path, meta_path,
                     metadata, collection.startswith("$"))


# --------------------------------------------------------------------------------------
# writing a dump directory


class DirectoryWriter:
    """Creates the files of a dump directory: private files (0600) in private dirs (0700).

    ``server_version`` is the source server's; it decides where timeseries data goes.
    Safe to use from several threads as long as each collection is written by one.
    """

    def __init__(self, root, gzip=False, gzip_level=6, server_version=None):
        self.root = root
        self.gzip = gzip
        self.gzip_level = gzip_level
        self.server_version = server_version
        self.written = []  # every stream created, for file_records()
        self._lock = threading.Lock()
        self._make_dir(root)

    def _create(self, path):
        stream = create_output_file(path, self.gzip, self.gzip_level)
        with self._lock:
            self.written.append(stream.disk)
        return stream

    def file_records(self):
        """Relative path, size and sha256 of every file written (for the manifest)."""
        return [{"path": os.path.relpath(disk.path, self.root), "bytes": disk.size, "sha256": disk.sha256}
                for disk in self.written]

    def _make_dir(self, path):
        with self._lock:
            if not os.path.isdir(path):
                os.makedirs(path, mode=0o700, exist_ok=True)

    def _db_dir(self, db):
        validate_db_name(db, self.root)
        path = os.path.join(self.root, db)
        self._make_dir(path)
        return path

    def collection_path(self, db, coll, coll_type="collection"):
        data_name = data_collection_name(coll, coll_type, self.server_version)
        return bson_path(self.root, db, data_name, self.gzip)

    def open_collection(self, db, coll, coll_type="collection"):
        """Binary file object for the collection's .bson[.gz]; write raw documents to it."""
        self._db_dir(db)
        return self._create(self.collection_path(db, coll, coll_type))

    def open_special(self, db, name):
        """Users and roles of a single-database dump keep literal names ($admin.system.users.bson)."""
        return self._create(os.path.join(self._db_dir(db), name + ".bson" + (".gz" if self.gzip else "")))

    def write_metadata(self, db, coll, json_text):
        self._db_dir(db)
        path = metadata_path(self.root, db, coll, self.gzip)
        with self._create(path) as handle:
            handle.write(json_text.encode("utf-8"))
        return path

    def open_oplog(self):
        return self._create(oplog_path(self.root))

    def write_prelude(self, server_version, tool_version, db=None):
        """prelude.json[.gz] in the root, or in the db directory for a single-db dump."""
        directory = self._db_dir(db) if db else self.root
        path = prelude_path(directory, self.gzip)
        with self._create(path) as handle:
            handle.write(prelude_to_json(server_version, tool_version).encode("utf-8"))
        return path
