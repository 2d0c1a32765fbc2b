# -*- coding: utf-8 -*-
"""Raw BSON streams, gzip sniffing, output files and CRC-64/XZ."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import gzip
import io
import os
import random
import stat
import struct

import bson
import pytest

from support import compat_file as fx
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import bsonio
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import FormatError


def reference_crc64_xz(data):
    """Bit-by-bit CRC-64/XZ, independent of the library under test (small inputs only)."""
    crc = 0xFFFFFFFFFFFFFFFF
    for byte in data:
        crc ^= byte
        for dummy in range(8):
            crc = (crc >> 1) ^ (0xC96C5795D7870F42 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFFFFFFFFFF


class ShortReads(io.RawIOBase):
    """A file that returns at most ``step`` bytes per read, like a pipe, and records sizes."""

    def __init__(self, data, step=7):
        self._data = data
        self._pos = 0
        self._step = step
        self.max_request = 0

    def readable(self):
        return True

    def read(self, size=-1):
        self.max_request = max(self.max_request, size)
        take = min(size if size >= 0 else len(self._data), self._step)
        chunk = self._data[self._pos:self._pos + take]
        self._pos += len(chunk)
        return chunk


def docs(count, pad=10):
    return [bson.encode({"_id": i, "pad": "x" * (pad + i % 5)}) for i in range(count)]


# ---------------------------------------------------------------------------------- CRC


def test_crc64_check_value():
    assert bsonio.crc64(b"123456789") == 0x995DC9BBDF1939FA
    assert bsonio.Crc64(b"123456789").value == 0x995DC9BBDF1939FA


def test_crc64_empty_is_zero():
    assert bsonio.Crc64().value == 0
    assert bsonio.Crc64().update(b"").value == 0


def test_crc64_matches_reference_in_random_chunks():
    rng = random.Random(7)
    data = bytes(rng.getrandbits(8) for dummy in range(3000))
    expected = reference_crc64_xz(data)
    assert bsonio.crc64(data) == expected
    crc, pos = bsonio.Crc64(), 0
    while pos < len(data):
        step = rng.randint(0, 97)
        crc.update(memoryview(data)[pos:pos + step])
        pos += step
    assert crc.value == expected
    assert bsonio.crc64(bytearray(data)) == expected


def test_crc64_of_fixture_document_matches_archive_crc():
    # test.bar.archive stores CRC -7824457949569593127 (int64) for its single 35-byte doc
    data = open(fx("mongorestore", "testdata", "test.bar.archive"), "rb").read()
    header = bson.encode({"db": "test", "collection": "bar", "EOF": False, "CRC": bson.Int64(0)})
    start = data.index(header) + len(header)
    doc = data[start:start + 35]
    assert bsonio.crc64(doc) == (-7824457949569593127) & 0xFFFFFFFFFFFFFFFF
    assert reference_crc64_xz(doc) == bsonio.crc64(doc)


# ------------------------------------------------------------------------------- streams


def test_iter_raw_documents_returns_exact_bytes():
    expected = docs(50)
    got = list(bsonio.iter_raw_documents(io.BytesIO(b"".join(expected)), "mem"))
    assert got == expected
    assert all(isinstance(item, bytes) for item in got)


def test_iter_raw_documents_empty_stream():
    assert list(bsonio.iter_raw_documents(io.BytesIO(b""), "mem")) == []


def test_iter_raw_documents_survives_short_reads():
    expected = docs(40)
    source = ShortReads(b"".join(expected), step=7)
    assert list(bsonio.iter_raw_documents(source, "pipe")) == expected


def test_document_larger_than_read_chunk():
    big = bson.encode({"_id": 1, "blob": b"\x01" * (3 * bsonio.READ_CHUNK)})
    small = bson.encode({"_id": 2})
    got = list(bsonio.iter_raw_documents(io.BytesIO(small + big + small), "mem"))
    assert got == [small, big, small]


def test_streaming_reads_in_bounded_chunks():
    # 20 MiB of small documents: the reader must never ask for the whole file
    one = bson.encode({"_id": 0, "pad": "y" * 200})
    data = one * (20 * 1024 * 1024 // len(one))
    source = ShortReads(data, step=len(data))
    count = sum(1 for dummy in bsonio.iter_raw_documents(source, "big"))
    assert count == len(data) // len(one)
    assert source.max_request <= bsonio.READ_CHUNK


def test_max_size_limits():
    over = bson.encode({"blob": b"\x00" * (bsonio.MAX_BSON_SIZE + 1024)})
    with pytest.raises(FormatError) as err:
        list(bsonio.iter_raw_documents(io.BytesIO(over), "big.bson"))
    assert "big.bson" in err.value.message and "above the maximum" in err.value.message
    # the oplog limit (16 MiB + 16 KiB) accepts it
    got = list(bsonio.iter_raw_documents(io.BytesIO(over), "oplog.bson",
                                         max_size=bsonio.MAX_OPLOG_ENTRY_SIZE))
    assert got == [over]
    assert bsonio.MAX_OPLOG_ENTRY_SIZE == 16 * 1024 * 1024 + 16 * 1024


def test_length_below_minimum_is_rejected():
    with pytest.raises(FormatError) as err:
        list(bsonio.iter_raw_documents(io.BytesIO(docs(1)[0] + struct.pack("<i", 4)), "x.bson"))
    assert "x.bson" in err.value.message and "below the minimum" in err.value.message
    assert "at byte %d" % len(docs(1)[0]) in err.value.message


def test_missing_trailing_zero_is_rejected():
    doc = bytearray(docs(1)[0])
    doc[-1] = 1
    with pytest.raises(FormatError) as err:
        list(bsonio.iter_raw_documents(io.BytesIO(bytes(doc)), "x.bson"))
    assert "does not end with a 0x00" in err.value.message


def test_every_truncation_is_reported_with_offset():
    data = b"".join(docs(3))
    boundaries = {0}
    for doc in docs(3):
        boundaries.add(max(boundaries) + len(doc))
    for cut in range(1, len(data)):
        stream = io.BytesIO(data[:cut])
        if cut in boundaries:
            assert len(list(bsonio.iter_raw_documents(stream, "c.bson"))) >= 1
            continue
        with pytest.raises(FormatError) as err:
            list(bsonio.iter_raw_documents(stream, "c.bson"))
        assert "c.bson" in err.value.message and "truncated" in err.value.message
        assert "take or fetch the backup again" in err.value.message
        assert err.value.details["offset"] in boundaries


def test_read_batches_groups_whole_documents():
    items = docs(100)
    batches = list(bsonio.read_batches(io.BytesIO(b"".join(items)), "mem", batch_bytes=300))
    assert [doc for batch in batches for doc in batch] == items
    assert all(sum(map(len, batch)) <= 300 or len(batch) == 1 for batch in batches)
    assert len(batches) > 1


# ---------------------------------------------------------------------------------- gzip


def test_open_decompressed_sniffs_content_not_name(tmp_path):
    payload = b"".join(docs(5))
    gz_named_plain = tmp_path / "plain.bson.gz"
    gz_named_plain.write_bytes(payload)
    plain_named_gz = tmp_path / "oplog.bson"
    plain_named_gz.write_bytes(gzip.compress(payload))
    for path in (gz_named_plain, plain_named_gz):
        with bsonio.open_decompressed(str(path)) as handle:
            assert handle.read() == payload


def test_gzip_fixture_is_read():
    with bsonio.open_decompressed(fx("mongorestore", "testdata", "prelude_test", "prelude_gzip",
                                     "test", "foo.bson.gz")) as handle:
        got = list(bsonio.iter_raw_documents(handle, "foo.bson.gz"))
    with open(fx("mongorestore", "testdata", "prelude_test", "prelude_top_level", "test",
                 "foo.bson"), "rb") as handle:
        assert got == list(bsonio.iter_raw_documents(handle, "foo.bson"))


def test_truncated_gzip_is_a_format_error(tmp_path):
    path = tmp_path / "c.bson.gz"
    path.write_bytes(gzip.compress(b"".join(docs(200)))[:-30])
    with bsonio.open_decompressed(str(path)) as handle:
        with pytest.raises(FormatError) as err:
            list(bsonio.iter_raw_documents(handle, str(path)))
    assert str(path) in err.value.message and "gzip" in err.value.message


# ------------------------------------------------------------------------- document checks


def test_check_document_rejects_malformed_fixtures():
    for name in ("bad_type.bson", "bad_cstring.bson"):
        path = fx("bsondump", "testdata", name)
        with open(path, "rb") as handle:
            first = next(bsonio.iter_raw_documents(handle, path))
        with pytest.raises(FormatError) as err:
            bsonio.check_document(first, path, 0)
        assert path in err.value.message and "malformed" in err.value.message


def test_broken_array_passes_objcheck_but_not_strict_arrays():
    path = fx("bsondump", "testdata", "broken_array.bson")
    with open(path, "rb") as handle:
        items = list(bsonio.iter_raw_documents(handle, path))
    for doc in items:  # bsondump --objcheck accepts this file
        bsonio.check_document(doc, path)
    with pytest.raises(FormatError) as err:
        for doc in items:
            bsonio.check_document(doc, path, strict_arrays=True)
    assert "array" in err.value.message and "'9'" in err.value.message


def test_strict_arrays_accepts_every_type_fixture():
    for name in ("all_types.bson", "all_in_one_doc.bson", "deep_nested.bson", "sample.bson"):
        path = fx("bsondump", "testdata", name)
        with open(path, "rb") as handle:
            for doc in bsonio.iter_raw_documents(handle, path):
                bsonio.check_document(doc, path, strict_arrays=True)


# ------------------------------------------------------------------------------- output


def test_create_compressed_file_is_private(tmp_path):
    path = tmp_path / "x.bson"
    path.write_bytes(b"old")
    os.chmod(str(path), 0o644)
    with bsonio.create_compressed_file(str(path)) as handle:
        handle.write(b"new")
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o600


def test_create_compressed_file_gzip_is_reproducible(tmp_path):
    outputs = []
    for name in ("a.gz", "b.gz"):
        with bsonio.create_compressed_file(str(tmp_path / name), "gzip", 1) as handle:
            handle.write(b"payload" * 100)
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]  # no file name, mtime 0
    assert gzip.decompress(outputs[0]) == b"payload" * 100
