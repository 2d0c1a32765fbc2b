# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a dump is asked to do: its options, checked before anything is read or written."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re

try:
    from bson import json_util
except ImportError:  # pragma: no cover - reported by the module wrapper
    pass

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import bsonio
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.namespaces import (
    NamespacePattern, check_collection_option, check_database_option)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import InvalidOption


DEFAULT_LOCK_TIMEOUT = 60


LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]*$")


def check_label(label):
    """A backup label names the backup in the catalog and on disk: letters, digits and . _ : + -."""
    if label is not None and not LABEL_RE.match(label):
        raise InvalidOption("label %r may only hold letters, digits and . _ : + - "
                            "(it names the backup in the catalog)" % label)


class DumpOptions:
    """The dump's options, validated; mirrors mongodump where the meaning is the same."""

    def __init__(self, db=None, collection=None, query=None, query_file=None, ns_include=None,
                 ns_exclude=None, path=None, archive=None, compression=None, compression_level=None,
                 gzip=None, oplog=False, dump_users_and_roles=False, label=None, num_parallel_collections=4,
                 allow_empty=False, force=False, prefer_secondary=False, lock_timeout=DEFAULT_LOCK_TIMEOUT,
                 create_parent=False, level_option="compression_level"):
        self.db = db
        self.collection = collection
        self.query = parse_query(query, query_file)
        self.ns_include = [NamespacePattern(p, "ns_include") for p in (ns_include or [])]
        self.ns_exclude = [NamespacePattern(p, "ns_exclude") for p in (ns_exclude or [])]
        self.path = path
        self.archive = archive
        self.compression = resolve_compression(compression, gzip)
        self.level_option = level_option  # the name the level was given under, for messages
        self.compression_level = bsonio.check_compression_level(self.compression, compression_level, level_option)
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
        if self.num_parallel_collections < 1:
            raise InvalidOption("num_parallel_collections must be at least 1")
        if isinstance(self.lock_timeout, bool) or not isinstance(self.lock_timeout, (int, float)) \
                or self.lock_timeout < 0:
            raise InvalidOption("lock_timeout must be a number of seconds, 0 or more, got %r" % (self.lock_timeout,))
        check_label(self.label)

    def describe(self):
        """The options recorded in the manifest (no secrets here)."""
        return {
            "db": self.db, "collection": self.collection,
            "query": json_util.dumps(self.query) if self.query is not None else None,
            "ns_include": [p.text for p in self.ns_include],
            "ns_exclude": [p.text for p in self.ns_exclude],
            "compression": self.compression, "oplog": self.oplog,
            "dump_users_and_roles": self.dump_users_and_roles,
            "format": "archive" if self.is_archive else "directory",
        }


def resolve_compression(compression, gzip=None):
    """The compression of a dump: ``compression`` (None: none), or gzip under the deprecated ``gzip: true``.

    ``gzip: false`` asks for nothing; ``gzip: true`` with another ``compression`` is a contradiction.
    """
    if gzip and compression not in (None, "gzip"):
        raise InvalidOption("gzip: true asks for gzip but compression is %s; remove gzip (deprecated: "
                            "compression replaces it) and keep compression: %s" % (compression, compression))
    return bsonio.check_compression("gzip" if gzip else compression)


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
