# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Streams of raw BSON documents, compression (gzip, zstd) by content, output files and CRC-64.

Documents stay raw ``bytes`` exactly as stored: the dump and restore engines never
decode what they only copy. Reading is chunked, so memory stays bounded by one chunk
plus the largest document, whatever the size of the file.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import gzip
import hashlib
import os
import struct
import zlib

try:
    import bson
    from bson.codec_options import CodecOptions
    AS_DICT = CodecOptions(document_class=dict)  # decoded documents keep their field order
except ImportError:  # pragma: no cover - reported by the module wrapper
    bson = AS_DICT = None

try:
    from fastcrc import crc64 as _fastcrc64
    FASTCRC_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by the module wrapper
    _fastcrc64 = None
    FASTCRC_IMPORT_ERROR = exc

try:
    import zstandard  # optional: only zstd-compressed backups and oplog slices need it
except ImportError:  # pragma: no cover
    zstandard = None

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import (
    FormatError, InvalidOption, Truncated)

MAX_BSON_SIZE = 16 * 1024 * 1024
# mongorestore accepts oplog entries a little over the document limit (RestoreOplog).
MAX_OPLOG_ENTRY_SIZE = MAX_BSON_SIZE + 16 * 1024
MIN_BSON_SIZE = 5
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
READ_CHUNK = 1024 * 1024
WRITE_BUFFER = 1024 * 1024
DEFAULT_BATCH_BYTES = 16 * 1024 * 1024

_INT32 = struct.Struct("<i")
# Errors a damaged gzip or zstd stream raises while we read it; anything else is real I/O trouble.
DECOMPRESSION_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error) + ((zstandard.ZstdError,) if zstandard else ())
INCOMPLETE_HINT = "the file is incomplete, take or fetch the backup again"
CORRUPT_HINT = "the file is corrupt, take or fetch the backup again"


class Crc64:
    """CRC-64/XZ, the checksum of Go's hash/crc64 with the ECMA table.

    mongodump stores it per namespace in archives. fastcrc computes it in native code
    (several GB/s, outside the GIL), so the archive writer can feed it every byte.
    """

    __slots__ = ("value",)

    def __init__(self, data=b""):
        self.value = 0  # the CRC of no bytes
        if data:
            self.update(data)

    def update(self, data):
        if data:
            # fastcrc continues from a finished CRC value, so chunks can be fed one by one.
            self.value = _fastcrc64.xz(data, initial=self.value)
        return self


def crc64(data):
    """CRC-64/XZ of one bytes-like object, as an unsigned int."""
    return Crc64(data).value


def compression_of(fileobj):
    """"gzip" or "zstd" for a stream open_decompressed decompresses, None for a plain file."""
    if isinstance(fileobj, gzip.GzipFile):
        return "gzip"
    return getattr(fileobj, "compression", None)


def stream_label(fileobj, source_name):
    """Name a stream in messages, saying when offsets are in uncompressed bytes."""
    compression = compression_of(fileobj)
    if compression:
        return "%s (%s; offsets are in uncompressed bytes)" % (source_name, compression)
    return source_name


def damaged_stream(fileobj):
    """How a message names the damage a DECOMPRESSION_ERRORS exception reports."""
    return "%s stream is damaged" % (compression_of(fileobj) or "compressed")


class BsonStream:
    """Buffered reader that hands out whole BSON documents as single slices.

    One ``read`` of the underlying file per chunk instead of two per document keeps the
    per-document cost low for collections of small documents.
    """

    def __init__(self, fileobj, chunk_size=READ_CHUNK):
        self._file = fileobj
        self._chunk = chunk_size
        self._buf = b""
        self._pos = 0
        self._base = 0  # stream offset of self._buf[0]

    @property
    def offset(self):
        """Stream offset of the next unread byte."""
        return self._base + self._pos

    def _fill(self, need):
        """Make ``need`` bytes available from the current position if the stream has them."""
        parts = [self._buf[self._pos:]]
        have = len(parts[0])
        while have < need:
            chunk = self._file.read(max(self._chunk, need - have))
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        self._base += self._pos
        self._buf = b"".join(parts)
        self._pos = 0
        return have >= need

    def at_end(self):
        return self._pos >= len(self._buf) and not self._fill(1)

    def peek_int32(self):
        """Return the int32 at the current position, None at a clean end of stream."""
        if self._pos + 4 > len(self._buf) and not self._fill(4):
            left = len(self._buf) - self._pos
            if left == 0:
                return None
            raise Truncated(self.offset, 4, left)
        return _INT32.unpack_from(self._buf, self._pos)[0]

    def take(self, size):
        """Consume and return exactly ``size`` bytes."""
        end = self._pos + size
        if end > len(self._buf) and not self._fill(size):
            raise Truncated(self.offset, size, len(self._buf) - self._pos)
        end = self._pos + size
        data = self._buf[self._pos:end]
        self._pos = end
        return data

    def skip(self, size):
        self.take(size)


def check_length(size, max_size):
    """Return None when ``size`` is a plausible BSON length, else the reason it is not."""
    if size < MIN_BSON_SIZE:
        return "invalid document length %d (below the minimum of %d)" % (size, MIN_BSON_SIZE)
    if size > max_size:
        return "invalid document length %d (above the maximum of %d)" % (size, max_size)
    return None


def read_document(stream, max_size):
    """Read one length-prefixed document; returns (doc, None) or (None, reason).

    Raises Truncated when the stream ends inside it. Returns (None, None) at a clean end.
    """
    size = stream.peek_int32()
    if size is None:
        return None, None
    reason = check_length(size, max_size)
    if reason:
        return None, reason
    doc = stream.take(size)
    if doc[-1] != 0:
        return None, "document of %d bytes does not end with a 0x00 byte" % size
    return doc, None


def iter_raw_documents(fileobj, source_name, max_size=MAX_BSON_SIZE):
    """Yield each raw BSON document (bytes, exactly as stored) of a concatenated stream."""
    label = stream_label(fileobj, source_name)
    stream = BsonStream(fileobj)
    index = 0
    while True:
        start = stream.offset
        try:
            doc, reason = read_document(stream, max_size)
        except Truncated as exc:
            raise FormatError(
                "BSON file %s: truncated document #%d at byte %d (%d of %d bytes present); %s"
                % (label, index + 1, start, exc.have, exc.need, INCOMPLETE_HINT),
                path=source_name, offset=start)
        except DECOMPRESSION_ERRORS as exc:
            raise FormatError(
                "BSON file %s: %s near byte %d (%s); %s"
                % (label, damaged_stream(fileobj), start, exc, CORRUPT_HINT), path=source_name, offset=start)
        if reason:
            raise FormatError(
                "BSON file %s: %s at byte %d (document #%d); %s"
                % (label, reason, start, index + 1, CORRUPT_HINT), path=source_name, offset=start)
        if doc is None:
            return
        index += 1
        yield doc


def read_batches(fileobj, source_name, batch_bytes=DEFAULT_BATCH_BYTES, max_size=MAX_BSON_SIZE):
    """Yield lists of raw documents of about ``batch_bytes`` (at least one document each)."""
    batch, size = [], 0
    for doc in iter_raw_documents(fileobj, source_name, max_size):
        if batch and size + len(doc) > batch_bytes:
            yield batch
            batch, size = [], 0
        batch.append(doc)
        size += len(doc)
    if batch:
        yield batch


def check_document(raw, source_name, offset=None, strict_arrays=False):
    """Fully validate one raw document, like ``bsondump --objcheck``.

    ``strict_arrays`` also requires array keys "0", "1", ... in order; bsondump does not
    check that, but a server never produces anything else, so a mismatch means damage.
    """
    where = "" if offset is None else " at byte %d" % offset
    try:
        bson.decode(raw)
    except Exception as exc:  # bson raises several types for malformed input
        raise FormatError(
            "BSON file %s: document%s is malformed (%s); %s" % (source_name, where, exc, CORRUPT_HINT),
            path=source_name, offset=offset)
    if strict_arrays:
        problem = _array_key_problem(raw, 0, False)
        if problem:
            raise FormatError(
                "BSON file %s: document%s has an array with keys out of order (%s); %s"
                % (source_name, where, problem, CORRUPT_HINT), path=source_name, offset=offset)


# Fixed value sizes per BSON type; None means "length-prefixed or nested" (handled below).
_FIXED = {0x01: 8, 0x06: 0, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8,
          0x12: 8, 0x13: 16, 0x7F: 0, 0xFF: 0}


def _array_key_problem(raw, start, is_array):
    """Walk an already-validated document; report the first array key that is not its index."""
    end = start + _INT32.unpack_from(raw, start)[0] - 1
    pos, expected = start + 4, 0
    while pos < end:
        kind = raw[pos]
        key_end = raw.index(b"\x00", pos + 1)
        key = raw[pos + 1:key_end]
        if is_array:
            if key != str(expected).encode():
                return "key %r where %r was expected" % (key.decode("utf-8", "replace"), str(expected))
            expected += 1
        pos = key_end + 1
        if kind in (0x03, 0x04):
            problem = _array_key_problem(raw, pos, kind == 0x04)
            if problem:
                return problem
            pos += _INT32.unpack_from(raw, pos)[0]
        elif kind in _FIXED:
            pos += _FIXED[kind]
        elif kind in (0x02, 0x0D, 0x0E):
            pos += 4 + _INT32.unpack_from(raw, pos)[0]
        elif kind == 0x05:
            pos += 5 + _INT32.unpack_from(raw, pos)[0]
        elif kind == 0x0B:
            pos = raw.index(b"\x00", raw.index(b"\x00", pos) + 1) + 1
        elif kind == 0x0C:
            pos += 4 + _INT32.unpack_from(raw, pos)[0] + 12
        elif kind == 0x0F:
            pos += _INT32.unpack_from(raw, pos)[0]
        else:  # unreachable after bson.decode succeeded
            return "unknown type 0x%02x" % kind
    return None


class _OwningGzipFile(gzip.GzipFile):
    """GzipFile that also closes the file object it wraps."""

    def __init__(self, raw, mode, compresslevel=6):
        # filename="" and mtime=0 keep the header free of names and times: reproducible bytes.
        super(_OwningGzipFile, self).__init__(
            filename="", mode=mode, compresslevel=compresslevel, fileobj=raw, mtime=0)
        self._raw = raw

    def close(self):
        try:
            super(_OwningGzipFile, self).close()
        finally:
            self._raw.close()


def open_decompressed(path):
    """Open for reading; decompress when the content starts with the gzip magic 1f 8b or the
    zstd magic 28 b5 2f fd.

    We sniff instead of trusting the name because mongodump writes a gzipped oplog.bson
    without a .gz suffix (and so do we, for gzip and zstd alike).
    """
    raw = open(path, "rb")
    try:
        magic = raw.read(4)
        raw.seek(0)
    except Exception:
        raw.close()
        raise
    if magic[:2] == GZIP_MAGIC:
        return _OwningGzipFile(raw, "rb")
    if magic == ZSTD_MAGIC:
        if zstandard is None:
            raw.close()
            raise FormatError("%s is zstd-compressed and the Python library zstandard is not installed; "
                              "install the collection's requirements.txt" % path, path=path)
        return _ZstdReader(raw)
    return raw


class _ZstdFrames:
    """Follows the frame structure of a zstd stream (RFC 8878) as its bytes go by.

    zstandard's reader ends cleanly where the input ends, even inside a frame, so a cut file
    would read as a shorter one; this says whether the input stopped between frames.
    """

    _SKIPPABLE = 0x184D2A50  # skippable frames: magic 0x184D2A50 to 0x184D2A5F, a size, data
    _FRAME = 0xFD2FB528

    def __init__(self):
        self._need, self._state = 4, "magic"
        self._field = b""
        self._skip = 0
        self._checksum = False

    def feed(self, data):
        view, pos, end = memoryview(data), 0, len(data)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            take = min(self._need - len(self._field), end - pos)
            self._field += bytes(view[pos:pos + take])
            pos += take
            if len(self._field) == self._need:
                field, self._field = self._field, b""
                self._advance(field)

    def _advance(self, field):
        value = int.from_bytes(field, "little")
        if self._state == "magic":
            if value & 0xFFFFFFF0 == self._SKIPPABLE:
                self._need, self._state = 4, "skippable"
            elif value == self._FRAME:
                self._need, self._state = 1, "descriptor"
            else:
                raise EOFError("no zstd frame starts at a frame boundary (found %s)" % field.hex())
        elif self._state == "skippable":
            self._skip, self._need, self._state = value, 4, "magic"
        elif self._state == "descriptor":
            single_segment = value >> 5 & 1
            self._checksum = bool(value >> 2 & 1)
            self._skip = ((0 if single_segment else 1) + (0, 1, 2, 4)[value & 3]
                          + ((1 if single_segment else 0), 2, 4, 8)[value >> 6])
            self._need, self._state = 3, "block"
        else:  # a block header: last-block bit, type (raw, RLE, compressed), size
            block_type, size = value >> 1 & 3, value >> 3
            self._skip = 1 if block_type == 1 else size
            if value & 1:
                self._skip += 4 if self._checksum else 0
                self._need, self._state = 4, "magic"

    def check_complete(self):
        if self._state != "magic" or self._field or self._skip:
            raise EOFError("the zstd stream ends inside a frame")


class _ZstdSource:
    """The raw file as zstandard reads it, watched by _ZstdFrames; the end inside a frame is an EOFError."""

    def __init__(self, raw):
        self._raw = raw
        self._frames = _ZstdFrames()

    def read(self, size=-1):
        data = self._raw.read(size)
        if data:
            self._frames.feed(data)
        elif size:
            self._frames.check_complete()
        return data

    def close(self):
        self._raw.close()


class _ZstdReader:
    """A zstd stream (every frame of it) read as its uncompressed bytes."""

    compression = "zstd"

    def __init__(self, raw):
        self._source = _ZstdSource(raw)
        try:
            self._reader = zstandard.ZstdDecompressor().stream_reader(
                self._source, read_size=READ_CHUNK, read_across_frames=True, closefd=False)
        except Exception:
            raw.close()
            raise

    def read(self, size=-1):
        """Up to ``size`` bytes (all that is left when negative): fewer only at the end of the stream."""
        if size is None or size < 0:
            return self._reader.readall()
        parts, have = [], 0
        while have < size:
            chunk = self._reader.read(size - have)
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        return b"".join(parts)

    def close(self):
        try:
            self._reader.close()
        finally:
            self._source.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class HashingFile:
    """A private (0600) file that records the sha256 and size of every byte written to disk."""

    def __init__(self, path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_TRUNC
            self._file = os.fdopen(fd, "wb", buffering=WRITE_BUFFER)
        except Exception:
            os.close(fd)
            raise
        self.path = path
        self.size = 0
        self._sha256 = hashlib.sha256()
        self.disk = self

    def write(self, data):
        self._sha256.update(data)
        self.size += len(data)
        return self._file.write(data)

    def flush(self):
        self._file.flush()

    def close(self):
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())  # a backup is complete only once it is on disk
            self._file.close()

    @property
    def closed(self):
        return self._file.closed

    @property
    def sha256(self):
        return self._sha256.hexdigest()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def sha256_file(path):
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(READ_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# The compressions a backup file may have; the suffix each adds to a file name it compresses.
COMPRESSIONS = ("none", "gzip", "zstd")
COMPRESSION_SUFFIXES = {"none": "", "gzip": ".gz", "zstd": ".zst"}
# The levels each compressor really takes: zlib 1 (fastest) to 9 (smallest); zstd its "fast" negative
# levels from ZSTD_minCLevel() up to ZSTD_maxCLevel() (20-22 need much more memory), 0 meaning its default.
COMPRESSION_LEVELS = {"gzip": (1, 9), "zstd": (-131072, 22)}
# The level used when none is given: the libraries' own defaults (zlib's 6, zstd's 3).
DEFAULT_COMPRESSION_LEVELS = {"gzip": 6, "zstd": 3}


def check_compression(compression, option="compression"):
    """``compression`` as one of COMPRESSIONS (None means "none"); InvalidOption naming ``option`` else."""
    compression = compression or "none"
    if compression not in COMPRESSIONS:
        raise InvalidOption("%s %r is not known: use one of %s" % (option, compression, ", ".join(COMPRESSIONS)))
    return compression


def check_compression_level(compression, level, option="compression_level"):
    """The level to use for ``compression`` (None: the library default); InvalidOption naming ``option``
    when the compressor does not take it. The one check for every module, run before connecting."""
    if level is None:
        return None
    if compression in (None, "none"):
        raise InvalidOption("%s %s has no effect without compression; remove it or choose gzip or zstd"
                            % (option, level))
    low, high = COMPRESSION_LEVELS[compression]
    if isinstance(level, bool) or not isinstance(level, int) or not low <= level <= high:
        raise InvalidOption("%s %r is not a %s level: use %d to %d (higher compresses smaller and slower)"
                            % (option, level, compression, max(low, 1) if compression == "gzip" else low, high))
    return level


def create_compressed_file(path, compression=None, level=None):
    """A private file (0600) written through ``compression`` (None or "none", "gzip" or "zstd") at
    ``level`` (None: DEFAULT_COMPRESSION_LEVELS). A gzip or zstd file is one stream (one gzip member,
    one zstd frame with its content checksum).

    The returned stream's ``disk`` attribute is the HashingFile underneath, whose ``sha256`` and
    ``size`` describe the bytes on disk (compressed or not).
    """
    compression = compression or "none"
    if compression not in COMPRESSIONS:
        raise ValueError("unknown compression %r" % compression)
    if compression == "zstd" and zstandard is None:
        raise FormatError("zstd compression needs the Python library zstandard; install the "
                          "collection's requirements.txt, or use gzip", path=path)
    level = DEFAULT_COMPRESSION_LEVELS.get(compression) if level is None else level
    raw = HashingFile(path)
    if compression == "none":
        return raw
    if compression == "gzip":
        stream = _OwningGzipFile(raw, "wb", compresslevel=level)
        stream.disk = raw
        return stream
    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
    return _ZstdStream(compressor.stream_writer(raw, closefd=True), raw)


class _ZstdStream:
    """A zstd writer with the HashingFile below it as ``disk`` (the C writer takes no attributes)."""

    def __init__(self, writer, disk):
        self._writer = writer
        self.disk = disk

    def write(self, data):
        return self._writer.write(data)

    def close(self):
        self._writer.close()  # ends the frame, then closes (and fsyncs) the HashingFile

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
