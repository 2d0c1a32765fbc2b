# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The mongodump ``--archive`` format: a writer and a validating streaming reader.

Layout (../shared/compat/FORMATS.md section (a)): magic, a prelude block (header and one
metadata document per namespace), then blocks of ``header(EOF:false) docs* TERM`` and
``header(EOF:true, CRC) TERM``. Segments of different namespaces interleave.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import threading
from collections import OrderedDict

try:
    import bson
    from bson.int64 import Int64
except ImportError:  # pragma: no cover - reported by the module wrapper
    bson = Int64 = None

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.bsonio import (
    BsonStream, Crc64, Truncated, check_length, damaged_stream, open_decompressed, stream_label,
    DECOMPRESSION_ERRORS, MAX_BSON_SIZE, CORRUPT_HINT, INCOMPLETE_HINT)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.versions import data_collection_name
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import FormatError
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.dump_metadata import (
    metadata_from_json)

MAGIC = b"\x6d\xe2\x99\x81"  # uint32 0x8199e26d, little-endian
TERMINATOR = b"\xff\xff\xff\xff"
FORMAT_VERSION = "0.1"
OPLOG_DB = ""
OPLOG_COLLECTION = "oplog"
_TERMINATOR_INT = -1  # 0xFFFFFFFF read as a signed int32
_UINT64 = (1 << 64) - 1
_HEADER_FIELDS = ("db", "collection", "EOF", "CRC")


def namespace(db, collection):
    """Namespace string as mongorestore spells it; the oplog is ".oplog"."""
    return "%s.%s" % (db, collection)


def _to_int64(value):
    """uint64 CRC -> the two's-complement int64 the header stores."""
    return Int64(value - (1 << 64) if value >= (1 << 63) else value)


def encode_header(db, collection, eof=False, crc=0):
    return bson.encode({"db": db, "collection": collection, "EOF": bool(eof), "CRC": _to_int64(crc)})


# --------------------------------------------------------------------------------------
# writer


class _NamespaceState:
    __slots__ = ("db", "collection", "crc", "documents_bytes", "ended")

    def __init__(self, db, collection):
        self.db = db
        self.collection = collection
        self.crc = Crc64()
        self.documents_bytes = 0
        self.ended = False


class ArchiveWriter:
    """Writes an archive the way mongodump's multiplexer does.

    ``namespaces``: list of dicts {db, collection, metadata (JSON text or ""), type (str, or
    None to omit the field as tools <= 4.x did)}. Timeseries entries name the logical
    collection; their data goes to system.buckets.<name> unless the server is 8.3+.
    Thread-safe: collections dumped in parallel threads may call write_segment at once.
    """

    def __init__(self, fileobj, server_version, tool_version, concurrent_collections, namespaces,
                 write_prelude=True):
        self._out = fileobj
        self._lock = threading.Lock()
        self._current = None  # key of the namespace whose data block is open
        self.server_version = server_version
        self.tool_version = tool_version
        self.concurrent_collections = int(concurrent_collections)
        self.namespaces = [dict(item) for item in namespaces]
        self._states = OrderedDict()
        self._aliases = {}
        for item in self.namespaces:
            self._announce(item)
        self._prelude_written = False
        if write_prelude:
            self.write_prelude()

    def _announce(self, item):
        data_coll = data_collection_name(item["collection"], item.get("type"), self.server_version)
        key = (item["db"], data_coll)
        if key in self._states:
            raise ValueError("namespace %s is announced twice" % namespace(*key))
        self._states[key] = _NamespaceState(item["db"], data_coll)
        # callers may use the logical timeseries name too
        self._aliases[(item["db"], item["collection"])] = key

    def write_prelude(self):
        """Magic, header, one metadata document per namespace, terminator."""
        with self._lock:
            if self._prelude_written:
                raise ValueError("the archive prelude was already written")
            parts = [MAGIC, bson.encode(OrderedDict([
                ("concurrent_collections", self.concurrent_collections),
                ("version", FORMAT_VERSION),
                ("server_version", self.server_version),
                ("tool_version", self.tool_version),
            ]))]
            for item in self.namespaces:
                doc = OrderedDict([("db", item["db"]), ("collection", item["collection"]),
                                   ("metadata", item.get("metadata") or ""), ("size", 0)])
                if item.get("type") is not None:
                    doc["type"] = item["type"]
                parts.append(bson.encode(doc))
            parts.append(TERMINATOR)
            self._out.write(b"".join(parts))
            self._prelude_written = True

    def _state(self, db, collection):
        key = (db, collection)
        state = self._states.get(key) or self._states.get(self._aliases.get(key))
        if state is None:
            raise ValueError("namespace %s was not announced in the archive prelude"
                             % namespace(db, collection))
        if state.ended:
            raise ValueError("namespace %s was already ended" % namespace(db, collection))
        if not self._prelude_written:
            raise ValueError("write the archive prelude before any data")
        return state

    def _switch_to(self, state):
        """Open a data block for ``state`` unless it is the open one (as the multiplexer)."""
        key = (state.db, state.collection)
        if self._current == key:
            return
        if self._current is not None:
            self._out.write(TERMINATOR)
        self._out.write(encode_header(state.db, state.collection))
        self._current = key

    def write_segment(self, db, collection, raw_docs):
        """Append whole raw documents (concatenated bytes) to a namespace."""
        if raw_docs and (len(raw_docs) < 5 or raw_docs[-1] != 0):
            raise ValueError("write_segment for %s needs whole BSON documents"
                             % namespace(db, collection))
        with self._lock:
            state = self._state(db, collection)
            self._switch_to(state)
            if raw_docs:
                self._out.write(raw_docs)
                state.crc.update(raw_docs)
                state.documents_bytes += len(raw_docs)

    def end_namespace(self, db, collection):
        """Close a namespace: flush (header if needed), TERM, EOF header with CRC, TERM."""
        with self._lock:
            state = self._state(db, collection)
            # mongodump always flushes its (maybe empty) buffer first, so an empty
            # namespace still gets a data header before its EOF block.
            self._switch_to(state)
            self._out.write(TERMINATOR + encode_header(state.db, state.collection, True,
                                                       state.crc.value) + TERMINATOR)
            self._current = None
            state.ended = True
            return state.crc.value

    def close(self):
        """Check that every announced namespace was ended, then flush."""
        with self._lock:
            missing = [namespace(*key) for key, state in self._states.items() if not state.ended]
            if missing:
                raise ValueError("archive closed before these namespaces were ended: %s"
                                 % ", ".join(missing))
            if not self._prelude_written:
                raise ValueError("archive closed before its prelude was written")
            flush = getattr(self._out, "flush", None)
            if flush:
                flush()


def open_archive_for_read(path):
    """Open an archive file, decompressing when it starts with the gzip or zstd magic."""
    if os.path.isdir(path):
        plain = os.path.join(path, "archive")
        path = plain if os.path.exists(plain) else os.path.join(path, "archive.gz")
    return open_decompressed(path)


# --------------------------------------------------------------------------------------
# reader


_UNOPENED, _OPEN, _CLOSED = 0, 1, 2


class ArchiveReader:
    """Validating, streaming reader. The constructor reads the magic and the prelude.

    ``header``: dict of the archive header. ``prelude``: list of dicts {db, collection,
    metadata, type, size} in file order (``type`` None when the field is absent).
    """

    def __init__(self, fileobj, source_name, max_size=MAX_BSON_SIZE):
        self.source_name = source_name
        self._label = stream_label(fileobj, source_name)
        self._damaged = damaged_stream(fileobj)
        self._stream = BsonStream(fileobj)
        self._max_size = max_size
        self._consumed = False
        self.header = None
        self.prelude = []
        self._by_data_ns = OrderedDict()
        self._guard(self._read_prelude)

    # -- errors ----------------------------------------------------------------------

    def _error(self, cause, hint=CORRUPT_HINT, **details):
        details.setdefault("path", self.source_name)
        return FormatError("archive %s: %s; %s" % (self._label, cause, hint), **details)

    def _guard(self, func, *args):
        try:
            return func(*args)
        except DECOMPRESSION_ERRORS as exc:
            raise self._error("the %s near byte %d (%s)" % (self._damaged, self._stream.offset, exc))

    def _read_doc(self, where):
        """Next document or terminator: returns bytes, or None for a terminator."""
        start = self._stream.offset
        try:
            size = self._stream.peek_int32()
            if size is None:
                raise Truncated(start, 4, 0)
            if size == _TERMINATOR_INT:
                self._stream.skip(4)
                return None
            reason = check_length(size, self._max_size)
            if reason:
                raise self._error("%s at byte %d, %s (neither a BSON document nor a terminator)"
                                  % (reason, start, where), offset=start)
            doc = self._stream.take(size)
        except Truncated as exc:
            end = exc.offset + exc.have
            raise self._error("truncated %s at byte %d (the item starting at byte %d needs %d "
                              "bytes, %d are left)" % (where, end, start, exc.need, exc.have),
                              INCOMPLETE_HINT, offset=end)
        if doc[-1] != 0:
            raise self._error("document of %d bytes at byte %d %s does not end with 0x00"
                              % (size, start, where), offset=start)
        return doc

    def _decode(self, raw, what, offset):
        try:
            return bson.decode(raw)
        except Exception as exc:  # bson raises several types for malformed input
            raise self._error("%s at byte %d is not valid BSON (%s)" % (what, offset, exc),
                              offset=offset)

    # -- prelude ---------------------------------------------------------------------

    def _read_prelude(self):
        try:
            magic = self._stream.take(4)
        except Truncated as exc:
            raise self._error("the file holds %d bytes, fewer than the 4-byte magic number"
                              % exc.have, INCOMPLETE_HINT)
        if magic != MAGIC:
            raise self._error(
                "it does not start with the mongodump archive magic number 6d e2 99 81 "
                "(found %s)" % magic.hex(),
                "it is not a mongodump --archive file (a directory dump, or a gzip stream read "
                "without decompression?)")
        offset = self._stream.offset
        raw = self._read_doc("inside the archive header")
        if raw is None:
            raise self._error("a terminator at byte %d where the archive header belongs" % offset)
        self.header = self._parse_archive_header(self._decode(raw, "the archive header", offset))
        while True:
            offset = self._stream.offset
            raw = self._read_doc("inside the prelude's collection list")
            if raw is None:
                break
            self._add_prelude_entry(self._decode(raw, "a prelude entry", offset), offset)
        self._map_data_namespaces()

    def _parse_archive_header(self, doc):
        types = (("concurrent_collections", int), ("version", str), ("server_version", str),
                 ("tool_version", str))
        header = {}
        for key, kind in types:
            value = doc.get(key, 0 if kind is int else "")
            if not isinstance(value, kind) or isinstance(value, bool):
                raise self._error("archive header field %r is a %s, expected %s"
                                  % (key, type(value).__name__, kind.__name__))
            header[key] = value
        return header

    def _add_prelude_entry(self, doc, offset):
        entry = {"db": doc.get("db", ""), "collection": doc.get("collection", ""),
                 "metadata": doc.get("metadata", ""), "type": doc.get("type"),
                 "size": doc.get("size", 0)}
        for key in ("db", "collection", "metadata"):
            if not isinstance(entry[key], str):
                raise self._error("prelude entry at byte %d: field %r is not a string"
                                  % (offset, key), offset=offset)
        if entry["type"] is not None and not isinstance(entry["type"], str):
            raise self._error("prelude entry at byte %d: field 'type' is not a string" % offset,
                              offset=offset)
        if not entry["collection"]:
            raise self._error("prelude entry at byte %d names no collection" % offset,
                              offset=offset)
        self.prelude.append(entry)

    def _map_data_namespaces(self):
        server = self.header["server_version"]
        for entry in self.prelude:
            data_coll = data_collection_name(entry["collection"], entry.get("type"), server)
            data_ns = namespace(entry["db"], data_coll)
            if data_ns in self._by_data_ns:
                raise self._error("the prelude lists namespace %s twice" % data_ns)
            self._by_data_ns[data_ns] = entry

    def parse_metadata(self, entry):
        """Parsed metadata of a prelude entry (None when empty), naming the namespace on errors."""
        label = "of namespace %s in archive %s" % (namespace(entry["db"], entry["collection"]),
                                                   self.source_name)
        return metadata_from_json(entry["metadata"], label)

    # -- data blocks -----------------------------------------------------------------

    def iter_documents(self):
        """Yield (db, collection, raw_doc) in stream order; ``collection`` as stored."""
        for event in self.iter_events():
            if event[0] == "document":
                yield event[1], event[2], event[3]

    def iter_events(self):
        """Yield ("segment", db, coll), ("document", db, coll, raw), ("end", db, coll, crc).

        Validates the whole structure; a FormatError stops the stream.
        """
        if self._consumed:
            raise ValueError("the archive data can be read only once")
        self._consumed = True
        status = dict((ns, _UNOPENED) for ns in self._by_data_ns)
        crcs = {}
        while True:
            start = self._stream.offset
            if self._guard(self._stream.at_end):
                break
            raw = self._guard(self._read_doc, "inside a namespace header")
            if raw is None:
                raise self._error("a terminator at byte %d where a namespace header belongs "
                                  "(consecutive terminators / headerless block)" % start,
                                  offset=start)
            db, coll, eof, crc = self._parse_ns_header(raw, start)
            ns = namespace(db, coll)
            self._check_header_allowed(ns, status, start)
            status[ns] = _OPEN
            crc_state = crcs.setdefault(ns, Crc64())
            if eof:
                self._finish_eof_block(ns, crc, crc_state, start)
                status[ns] = _CLOSED
                yield ("end", db, coll, crc_state.value)
                continue
            yield ("segment", db, coll)
            for doc in self._iter_block_body(ns):
                crc_state.update(doc)
                yield ("document", db, coll, doc)
        self._check_all_closed(status)

    def _iter_block_body(self, ns):
        where = "inside the block of namespace %s" % ns
        while True:
            doc = self._guard(self._read_doc, where)
            if doc is None:
                return
            yield doc

    def _parse_ns_header(self, raw, offset):
        doc = self._decode(raw, "namespace header", offset)
        unknown = [key for key in doc if key not in _HEADER_FIELDS]
        if unknown:
            raise self._error("namespace header at byte %d has unknown field %r"
                              % (offset, unknown[0]), offset=offset)
        db, coll = doc.get("db", ""), doc.get("collection", "")
        eof, crc = doc.get("EOF", False), doc.get("CRC", Int64(0))
        if not isinstance(db, str) or not isinstance(coll, str) or not isinstance(eof, bool):
            raise self._error("namespace header at byte %d has fields of the wrong type" % offset,
                              offset=offset)
        if not isinstance(crc, Int64):
            raise self._error("namespace header at byte %d: CRC is a %s, expected int64"
                              % (offset, type(crc).__name__), offset=offset)
        if not coll:
            raise self._error("namespace header at byte %d names no collection" % offset,
                              offset=offset)
        return db, coll, eof, int(crc) & _UINT64

    def _check_header_allowed(self, ns, status, offset):
        if ns not in status:
            raise self._error("block at byte %d is for namespace %s, which the prelude does not "
                              "list" % (offset, ns), offset=offset)
        if status[ns] == _CLOSED:
            raise self._error("block at byte %d is for namespace %s, which was already ended"
                              % (offset, ns), offset=offset)

    def _finish_eof_block(self, ns, stored, computed, offset):
        after = self._stream.offset
        doc = self._guard(self._read_doc, "after the end-of-namespace header of %s" % ns)
        if doc is not None:
            raise self._error("document at byte %d follows the end-of-namespace header of %s "
                              "(collection data without a collection header)" % (after, ns),
                              offset=after)
        if stored != computed.value:
            raise self._error("CRC mismatch for namespace %s: the archive stores %d, the data "
                              "gives %d (end block at byte %d)" % (ns, stored, computed.value, offset),
                              namespace=ns, offset=offset)

    def _check_all_closed(self, status):
        unfinished = [ns for ns, state in status.items() if state == _OPEN]
        unseen = [ns for ns, state in status.items() if state == _UNOPENED]
        if unfinished:
            raise self._error("the archive ended while namespaces were unfinished (%s)"
                              % ", ".join(unfinished), INCOMPLETE_HINT)
        if unseen:
            raise self._error("the archive ended before all namespaces were seen (missing %s)"
                              % ", ".join(unseen), INCOMPLETE_HINT)

    def namespaces_summary(self):
        """Read everything; per data namespace in order of first appearance:
        {db, collection, documents, bytes, segments, crc}."""
        summary = OrderedDict()
        for event in self.iter_events():
            ns = namespace(event[1], event[2])
            item = summary.get(ns)
            if item is None:
                item = summary[ns] = {"db": event[1], "collection": event[2], "documents": 0,
                                      "bytes": 0, "segments": 0, "crc": 0}
            if event[0] == "document":
                item["documents"] += 1
                item["bytes"] += len(event[3])
            elif event[0] == "segment":
                item["segments"] += 1
            else:
                item["crc"] = event[3]
        return summary
