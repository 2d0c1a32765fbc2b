# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""File names of the mongodump directory layout: collection name escaping, long-name truncation, where each file goes."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib
import os
import re
from urllib.parse import quote_plus

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.namespaces import (
    DATABASE_NAME_RULE, database_name_problem)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import FormatError
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.bsonio import COMPRESSION_SUFFIXES


MAX_FILE_NAME_BYTES = 255
MAX_STEM_BYTES = 238  # mongodump's: leaves room for ".metadata.json.gz" within a 255-byte file name
# A zstd dump (ours only) needs one byte more for ".metadata.json.zst": its stems are one byte shorter.
ZSTD_STEM_BYTES = MAX_FILE_NAME_BYTES - len(".metadata.json" + COMPRESSION_SUFFIXES["zstd"])
HASH_BYTES = 27  # unpadded url-safe base64 of a sha1
TRUNCATED_PREFIX_BYTES = 208


HASH_MARKER = "%24"


PRELUDE_NAMES = tuple("prelude.json" + suffix for suffix in ("", ".gz", ".zst"))


_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def escape_collection_name(name):
    """Escape like Go's url.QueryEscape: keep A-Z a-z 0-9 -_.~, space -> +, else %XX."""
    return quote_plus(name, safe="", encoding="utf-8", errors="strict")


def _stem_bytes(compression):
    return ZSTD_STEM_BYTES if compression == "zstd" else MAX_STEM_BYTES


def collection_file_stem(name, compression=None):
    """File name stem mongodump uses for a collection, shortened for long names (by one byte more in
    a zstd dump, so that its .metadata.json.zst still fits in 255 bytes)."""
    limit = _stem_bytes(compression)
    escaped = escape_collection_name(name)
    if len(escaped) <= limit:  # escaped text is pure ASCII: chars == bytes
        return escaped
    digest = hashlib.sha1(name.encode("utf-8")).digest()
    tail = base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
    return escaped[:limit - len(HASH_MARKER) - HASH_BYTES] + HASH_MARKER + tail


def is_truncated_stem(stem):
    """True for stems whose real name lives only in the metadata's collectionName."""
    size = len(stem.encode("utf-8"))
    if size == MAX_STEM_BYTES:
        return HASH_MARKER in stem
    # a collection name holds no "$", so only a shortened zstd stem has %24 just before the hash
    return size == ZSTD_STEM_BYTES and stem[-HASH_BYTES - len(HASH_MARKER):-HASH_BYTES] == HASH_MARKER


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


def bson_path(root, db, coll, compression=None):
    """<root>/<db>/<stem>.bson[.gz|.zst]; ``coll`` is the data collection name."""
    return os.path.join(root, db, collection_file_stem(coll, compression) + ".bson"
                        + COMPRESSION_SUFFIXES[compression or "none"])


def metadata_path(root, db, coll, compression=None):
    return os.path.join(root, db, collection_file_stem(coll, compression) + ".metadata.json"
                        + COMPRESSION_SUFFIXES[compression or "none"])


def oplog_path(root):
    # mongodump never adds .gz here, even when the content is gzipped; nor do we .zst.
    return os.path.join(root, "oplog.bson")


def prelude_path(root, compression=None):
    return os.path.join(root, "prelude.json" + COMPRESSION_SUFFIXES[compression or "none"])


def validate_db_name(name, where):
    """Reject directory names that cannot be database names, as mongorestore does."""
    problem = database_name_problem(name)
    if problem:
        raise FormatError(
            "dump directory %s: subdirectory %r is not a valid database name (%s; %s); "
            "move it out of the dump directory" % (where, name, problem, DATABASE_NAME_RULE), path=where)


_SUFFIXES = (  # (suffix, kind); longest first so ".metadata.json.gz" wins over ".gz"
    (".metadata.json.gz", "metadata"),
    (".metadata.json.zst", "metadata"),
    (".metadata.json", "metadata"),
    (".bson.gz", "bson"),
    (".bson.zst", "bson"),
    (".bson", "bson"),
    (".bin", "bson"),  # legacy extension
)


def classify_file_name(name):
    """(kind, stem) for dump file names, (None, None) for anything else."""
    for suffix, kind in _SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return kind, name[:-len(suffix)]
    return None, None
