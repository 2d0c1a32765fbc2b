# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The mongodump directory layout: file names, metadata.json, scanning and writing.

Rules follow ../shared/compat/FORMATS.md section (b); the aim is that mongorestore reads
what we write and that we read what mongodump wrote, byte for byte where it matters.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import threading

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.bsonio import (
    COMPRESSION_SUFFIXES, create_compressed_file)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.versions import data_collection_name
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.dump_metadata import (
    prelude_to_json)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.dump_names import (
    bson_path, metadata_path, oplog_path, prelude_path, validate_db_name)


# --------------------------------------------------------------------------------------
# names


# --------------------------------------------------------------------------------------
# metadata.json


# --------------------------------------------------------------------------------------
# timeseries buckets


# --------------------------------------------------------------------------------------
# reading a dump directory


# --------------------------------------------------------------------------------------
# writing a dump directory


class DirectoryWriter:
    """Creates the files of a dump directory: private files (0600) in private dirs (0700).

    With ``compression`` ("gzip" or "zstd") every file is compressed on its own, at ``level`` (None: the
    default level), and named with its suffix (.gz, .zst), except oplog.bson as mongodump names it.
    ``server_version`` is the source server's; it decides where timeseries data goes.
    Safe to use from several threads as long as each collection is written by one.
    """

    def __init__(self, root, compression=None, level=None, server_version=None):
        self.root = root
        self.compression = compression or "none"
        self.level = level
        self.server_version = server_version
        self.written = []  # every stream created, for file_records()
        self._lock = threading.Lock()
        self._make_dir(root)

    def _create(self, path):
        stream = create_compressed_file(path, self.compression, self.level)
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
        return bson_path(self.root, db, data_name, self.compression)

    def open_collection(self, db, coll, coll_type="collection"):
        """Binary file object for the collection's .bson[.gz|.zst]; write raw documents to it."""
        self._db_dir(db)
        return self._create(self.collection_path(db, coll, coll_type))

    def open_special(self, db, name):
        """Users and roles of a single-database dump keep literal names ($admin.system.users.bson)."""
        return self._create(os.path.join(self._db_dir(db), name + ".bson" + COMPRESSION_SUFFIXES[self.compression]))

    def write_metadata(self, db, coll, json_text):
        self._db_dir(db)
        path = metadata_path(self.root, db, coll, self.compression)
        with self._create(path) as handle:
            handle.write(json_text.encode("utf-8"))
        return path

    def open_oplog(self):
        return self._create(oplog_path(self.root))

    def write_prelude(self, server_version, tool_version, db=None):
        """prelude.json[.gz|.zst] in the root, or in the db directory for a single-db dump."""
        directory = self._db_dir(db) if db else self.root
        path = prelude_path(directory, self.compression)
        with self._create(path) as handle:
            handle.write(prelude_to_json(server_version, tool_version).encode("utf-8"))
        return path
