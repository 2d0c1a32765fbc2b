# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading oplog entries: from an oplog.bson file (plain, gzip or zstd) or from the oplog of a mongodump archive."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.archive import (
    ArchiveReader, OPLOG_COLLECTION, OPLOG_DB, open_archive_for_read)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.bsonio import (
    AS_DICT, CORRUPT_HINT, MAX_OPLOG_ENTRY_SIZE, bson, iter_raw_documents, open_decompressed)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import FormatError


def decode_entries(raw_documents, source_name):
    """Decode raw oplog entries into dicts that keep field order."""
    for number, raw in enumerate(raw_documents, 1):
        try:
            yield bson.decode(raw, codec_options=AS_DICT)
        except Exception as exc:  # bson raises several types for malformed input
            raise FormatError("oplog %s: entry #%d is not valid BSON (%s); %s"
                              % (source_name, number, exc, CORRUPT_HINT), path=source_name)


def iter_oplog_file(path):
    """Entries of an oplog.bson (gzip or zstd by content), each up to 16 MiB + 16 KiB as mongorestore allows."""
    with open_decompressed(path) as handle:
        yield from decode_entries(iter_raw_documents(handle, path, MAX_OPLOG_ENTRY_SIZE), path)


def iter_archive_oplog(path):
    """Entries of the oplog namespace (db "", collection "oplog") of a mongodump archive."""
    with open_archive_for_read(path) as handle:
        reader = ArchiveReader(handle, path, max_size=MAX_OPLOG_ENTRY_SIZE)
        raws = (raw for db, coll, raw in reader.iter_documents()
                if db == OPLOG_DB and coll == OPLOG_COLLECTION)
        yield from decode_entries(raws, "%s (oplog)" % path)
