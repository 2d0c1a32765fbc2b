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


MAX_STEM_BYTES = 238  # leaves room for ".metadata.json.gz" within a 255-byte file name


TRUNCATED_PREFIX_BYTES = 208


HASH_MARKER = "%24"


PRELUDE_NAMES = ("prelude.json", "prelude.json.gz")


_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")


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
