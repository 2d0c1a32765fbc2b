# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a dump's data goes: a mongodump directory or a single archive, with per-file checksums."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import struct

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import archive as archive_format
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import bsonio
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import content_hash
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import dump_writer
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.manifest import TOOL_VERSION
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical.dump_plan import NamespacePlan

_INT32 = struct.Struct("<i")


def count_documents(raw_batch):
    """Documents in a buffer of concatenated BSON documents (reads only the length prefixes)."""
    count, position, end = 0, 0, len(raw_batch)
    while position < end:
        position += _INT32.unpack_from(raw_batch, position)[0]
        count += 1
    return count


class _Sink:
    """Where one namespace's raw batches go; counts documents and bytes.

    A collection's sink also computes its content hash on the way (``hashed``), so verification has
    a reference without a second read of the backup; the oplog's does not need one.
    """

    def __init__(self, write, close, hashed=True):
        self._write = write
        self._close = close
        self.hash = content_hash.ContentHash() if hashed else None
        self.documents = 0
        self.bytes = 0

    def write(self, raw_batch):
        if self.hash is not None:
            self.documents += self.hash.update(raw_batch)
        else:
            self.documents += count_documents(raw_batch)
        self.bytes += len(raw_batch)
        self._write(raw_batch)

    def close(self):
        self._close()


class DirectoryOutput:
    """A dump directory in mongodump layout, built inside ``<path>.partial``."""

    def __init__(self, root, options, server_version):
        self.db = options.db
        self.writer = dump_writer.DirectoryWriter(root, compression=options.compression,
                                                  level=options.compression_level, server_version=server_version)

    @staticmethod
    def _sink(stream, hashed=True):
        return _Sink(stream.write, stream.close, hashed)

    def write_metadata(self, plan):
        self.writer.write_metadata(plan.db, plan.name, plan.metadata_json())

    def open_namespace(self, plan):
        if plan.name.startswith("$admin."):
            return self._sink(self.writer.open_special(plan.db, plan.name))
        return self._sink(self.writer.open_collection(plan.db, plan.name, plan.type))

    def open_oplog(self):
        return self._sink(self.writer.open_oplog(), hashed=False)

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
        # Compressed as a whole: one gzip member as mongodump --archive --gzip writes, or one zstd frame.
        self.stream = bsonio.create_compressed_file(path, options.compression, options.compression_level)
        namespaces = [{"db": plan.db, "collection": plan.name, "metadata": plan.metadata_json(),
                       "type": plan.type or "collection"} for plan in plans]
        if with_oplog:
            # mongodump writes an empty type for the oplog (tools <= 4.x omitted the field)
            namespaces.append({"db": "", "collection": "oplog", "metadata": "", "type": ""})
        self.writer = archive_format.ArchiveWriter(self.stream, server_version, TOOL_VERSION,
                                                   options.num_parallel_collections, namespaces)

    def write_metadata(self, plan):
        """Metadata lives in the prelude, already written."""

    def open_namespace(self, plan, hashed=True):
        db, name = plan.db, plan.data_name
        return _Sink(lambda batch: self.writer.write_segment(db, name, batch),
                     lambda: self.writer.end_namespace(db, name), hashed)

    def open_oplog(self):
        return self.open_namespace(NamespacePlan("", "oplog", None, {}, [], None, "", ""), hashed=False)

    def finish(self, server_version):
        """The versions are in the archive header already; close every namespace and the file."""
        self.writer.close()
        self.stream.close()

    def file_records(self):
        disk = self.stream.disk
        return [{"path": os.path.basename(self.path), "bytes": disk.size,
                 "sha256": disk.sha256}]
