# -*- coding: utf-8 -*-
"""The --archive format: writer, validating reader, byte-exact rewrites of real archives."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import gzip
import io
import os
import stat
import threading

import bson
import pytest
from bson.int64 import Int64

from support import is_gzip, compat_file as fx
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import archive as A
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import bsonio
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import FormatError

TS_ORIGINAL = ("_history", "97ebb7952fce28b26a6744c33f7df0b0001628a7", "mongorestore", "testdata",
               "timeseries_tests", "dump.archive")
REAL_ARCHIVES = [
    ("mongorestore", "testdata", "test.bar.archive"),
    ("mongorestore", "testdata", "dump-w-oplog.archive"),
    ("mongorestore", "testdata", "bad-format.archive"),
    ("mongorestore", "testdata", "timeseries_tests", "dump.archive"),
    TS_ORIGINAL,
]


def read_bytes(*parts):
    with open(fx(*parts), "rb") as handle:
        return handle.read()


def doc(i, size=10):
    return bson.encode({"_id": i, "pad": "p" * size})


def ns_list(*items):
    return [{"db": db, "collection": coll, "metadata": meta, "type": kind}
            for db, coll, meta, kind in items]


def read_all(data, name="mem.archive"):
    reader = A.ArchiveReader(io.BytesIO(data), name)
    return reader, list(reader.iter_documents())


def rewrite(data):
    """Re-write an archive with our writer, keeping its namespace order and segmenting."""
    reader = A.ArchiveReader(io.BytesIO(data), "source")
    out = io.BytesIO()
    header = reader.header
    writer = A.ArchiveWriter(out, header["server_version"], header["tool_version"],
                             header["concurrent_collections"], reader.prelude)
    pending = []
    for event in reader.iter_events():
        if event[0] == "segment":
            pending = [event[1], event[2]]
        elif event[0] == "document":
            pending.append(event[3])
        else:
            if pending:
                writer.write_segment(pending[0], pending[1], b"".join(pending[2:]))
                pending = []
            writer.end_namespace(event[1], event[2])
    writer.close()
    return out.getvalue()


# ------------------------------------------------------------------------------ writer


def test_empty_namespace_layout_is_exactly_mongodumps():
    out = io.BytesIO()
    writer = A.ArchiveWriter(out, "7.0.0", "ours", 1, ns_list(("db", "v", "{}", "view")))
    prelude_end = out.tell()
    assert writer.end_namespace("db", "v") == 0
    writer.close()
    expected = (A.encode_header("db", "v") + A.TERMINATOR + A.encode_header("db", "v", True, 0)
                + A.TERMINATOR)
    assert out.getvalue()[prelude_end:] == expected


def test_headers_have_mongodump_field_order_and_types():
    raw = A.encode_header("d", "c", True, 0xFFFFFFFFFFFFFFFF)
    assert list(bson.decode(raw)) == ["db", "collection", "EOF", "CRC"]
    assert bson.decode(raw)["CRC"] == Int64(-1)
    out = io.BytesIO()
    A.ArchiveWriter(out, "4.0.2", "t", 4, ns_list(("test", "foo", "{}", None), ("", "oplog", "", "")))
    reader = A.ArchiveReader(io.BytesIO(out.getvalue() + b""), "x")
    assert reader.header == {"concurrent_collections": 4, "version": "0.1",
                             "server_version": "4.0.2", "tool_version": "t"}
    assert reader.prelude[0]["type"] is None and reader.prelude[1]["type"] == ""
    assert [entry["size"] for entry in reader.prelude] == [0, 0]


def test_interleaved_round_trip_and_crc():
    out = io.BytesIO()
    spec = ns_list(("a", "x", '{"indexes":[]}', "collection"), ("b", "y", "", "collection"),
                   ("", "oplog", "", ""))
    writer = A.ArchiveWriter(out, "6.0.1", "ours", 2, spec)
    x_docs, y_docs, oplog = [doc(i) for i in range(5)], [doc(i, 30) for i in range(4)], [doc(99)]
    writer.write_segment("a", "x", b"".join(x_docs[:2]))
    writer.write_segment("b", "y", b"".join(y_docs[:3]))
    writer.write_segment("a", "x", b"".join(x_docs[2:]))
    writer.end_namespace("a", "x")
    writer.write_segment("b", "y", y_docs[3])
    writer.end_namespace("b", "y")
    writer.write_segment("", "oplog", oplog[0])
    writer.end_namespace("", "oplog")
    writer.close()
    reader, items = read_all(out.getvalue())
    assert [raw for db, coll, raw in items if coll == "x"] == x_docs
    assert [raw for db, coll, raw in items if coll == "y"] == y_docs
    assert [(db, coll) for db, coll, raw in items if raw == oplog[0]] == [("", "oplog")]
    assert reader.prelude[0]["metadata"] == '{"indexes":[]}'
    summary = A.ArchiveReader(io.BytesIO(out.getvalue()), "again").namespaces_summary()
    assert summary["a.x"]["crc"] == bsonio.crc64(b"".join(x_docs))
    assert summary["b.y"]["segments"] == 2 and summary["a.x"]["segments"] == 2
    assert summary[".oplog"]["documents"] == 1


def test_timeseries_data_goes_to_buckets_before_8_3():
    for version, data_coll in (("5.0.0", "system.buckets.ts"), ("8.3.0", "ts")):
        out = io.BytesIO()
        writer = A.ArchiveWriter(out, version, "t", 1, ns_list(("db", "ts", "{}", "timeseries")))
        writer.write_segment("db", "ts", doc(1))  # the logical name is accepted too
        writer.end_namespace("db", data_coll)
        writer.close()
        reader, items = read_all(out.getvalue())
        assert items == [("db", data_coll, doc(1))]
        assert [entry["collection"] for entry in reader.prelude] == ["ts"]


def test_writer_misuse_is_refused():
    writer = A.ArchiveWriter(io.BytesIO(), "7.0.0", "t", 1, ns_list(("db", "c", "", None)))
    with pytest.raises(ValueError):
        writer.write_segment("db", "other", doc(1))
    with pytest.raises(ValueError):
        writer.write_segment("db", "c", b"\x05\x00\x00\x00\x01")  # not whole documents
    with pytest.raises(ValueError):
        writer.close()  # db.c not ended
    writer.end_namespace("db", "c")
    with pytest.raises(ValueError):
        writer.write_segment("db", "c", doc(1))
    writer.close()


def test_unknown_server_version_keeps_timeseries_data_in_buckets():
    """One rule for every reader and writer (core.versions): an unknown version counts as pre-8.3."""
    out = io.BytesIO()
    writer = A.ArchiveWriter(out, "unknown", "t", 1, ns_list(("db", "ts", "", "timeseries")))
    writer.write_segment("db", "ts", doc(1))
    writer.end_namespace("db", "ts")
    writer.close()
    assert bson.encode({"db": "db", "collection": "system.buckets.ts", "EOF": False, "CRC": bson.Int64(0)}) \
        in out.getvalue()


def test_parallel_writers_are_serialised():
    names = ["c%d" % i for i in range(8)]
    out = io.BytesIO()
    writer = A.ArchiveWriter(out, "7.0.0", "t", 8, ns_list(*[("db", n, "", "collection") for n in names]))
    expected = dict((n, [bson.encode({"n": n, "i": i}) for i in range(300)]) for n in names)

    def dump(name):
        for start in range(0, 300, 7):
            writer.write_segment("db", name, b"".join(expected[name][start:start + 7]))
        writer.end_namespace("db", name)

    threads = [threading.Thread(target=dump, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    reader, items = read_all(out.getvalue())  # validates structure and every CRC
    for name in names:
        assert [raw for db, coll, raw in items if coll == name] == expected[name]


# -------------------------------------------------------------------- real archives


@pytest.mark.parametrize("parts", REAL_ARCHIVES, ids=lambda parts: parts[-1] if parts[0] != "_history" else "original-ts")
def test_rewriting_real_archives_is_byte_identical(parts):
    data = read_bytes(*parts)
    assert rewrite(data) == data


def test_timeseries_archive_crcs():
    for parts, crc in ((TS_ORIGINAL, 363712516458175641),
                       (("mongorestore", "testdata", "timeseries_tests", "dump.archive"),
                        4620499534075225423)):
        summary = A.ArchiveReader(io.BytesIO(read_bytes(*parts)), parts[-1]).namespaces_summary()
        assert summary["timeseries_test.system.buckets.foo_ts"]["crc"] == crc
        assert summary["timeseries_test.system.buckets.foo_ts"]["documents"] == 10


@pytest.mark.parametrize("level", [1, 9])
def test_gzip_archive_round_trip(tmp_path, level):
    data = read_bytes("mongorestore", "testdata", "dump-w-oplog.archive")
    path = str(tmp_path / "out.archive.gz")
    with bsonio.create_compressed_file(path, "gzip", level) as handle:
        handle.write(rewrite(data))
    assert is_gzip(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert gzip.decompress(open(path, "rb").read()) == data
    with A.open_archive_for_read(path) as handle:
        reader = A.ArchiveReader(handle, path)
        assert reader.namespaces_summary()["test.foo"]["documents"] == 25
    # --archive=<dir> means <dir>/archive(.gz)
    with bsonio.create_compressed_file(str(tmp_path / "archive.gz"), "gzip") as handle:
        handle.write(data)
    with A.open_archive_for_read(str(tmp_path)) as handle:
        assert handle.read() == data


def test_plain_archive_file(tmp_path):
    data = read_bytes("mongorestore", "testdata", "test.bar.archive")
    path = str(tmp_path / "x.archive")
    with bsonio.create_compressed_file(path) as handle:
        handle.write(data)
    with A.open_archive_for_read(path) as handle:
        assert not isinstance(handle, gzip.GzipFile)
        assert [coll for db, coll, raw in A.ArchiveReader(handle, path).iter_documents()] == [
            "system.version", "bar"]


# ---------------------------------------------------------------------- validation


def good_archive():
    out = io.BytesIO()
    spec = ns_list(("db", "a", "", "collection"), ("db", "b", "", "collection"))
    writer = A.ArchiveWriter(out, "7.0.0", "t", 1, spec)
    writer.write_segment("db", "a", doc(1) + doc(2))
    writer.end_namespace("db", "a")
    writer.write_segment("db", "b", doc(3))
    writer.end_namespace("db", "b")
    writer.close()
    return out.getvalue()


def prelude_len(data):
    return data.index(A.TERMINATOR) + 4


def expect_error(data, *fragments):
    with pytest.raises(FormatError) as err:
        reader = A.ArchiveReader(io.BytesIO(data), "/backups/x.archive")
        reader.namespaces_summary()
    for fragment in fragments:
        assert fragment in err.value.message, err.value.message
    assert "/backups/x.archive" in err.value.message
    return err.value


def test_bad_magic():
    expect_error(b"\x00" * 100, "magic number", "not a mongodump --archive file")
    expect_error(gzip.compress(good_archive()), "magic number", "found 1f8b")
    expect_error(b"", "fewer than the 4-byte magic")


def test_consecutive_terminators():
    data = good_archive()
    expect_error(data + A.TERMINATOR, "consecutive terminators")


def test_unknown_header_field():
    data = good_archive()
    start = prelude_len(data)
    bad = bson.encode({"db": "db", "collection": "a", "EOF": False, "CRC": Int64(0), "x": 1})
    old = A.encode_header("db", "a")
    assert data[start:start + len(old)] == old
    expect_error(data[:start] + bad + data[start + len(old):], "unknown field 'x'")


def test_crc_must_be_int64():
    data = good_archive()
    old = A.encode_header("db", "b", True, bsonio.crc64(doc(3)))
    new = bson.encode({"db": "db", "collection": "b", "EOF": True, "CRC": 5})
    expect_error(data.replace(old, new), "CRC is a int")


def test_crc_mismatch():
    data = bytearray(good_archive())
    position = bytes(data).index(doc(3)) + 10  # inside the "pad" string of doc 3
    data[position] ^= 0x01
    err = expect_error(bytes(data), "CRC mismatch for namespace db.b")
    assert err.details["namespace"] == "db.b"


def test_data_for_an_ended_namespace():
    data = good_archive()
    again = A.encode_header("db", "a") + doc(9) + A.TERMINATOR
    expect_error(data + again, "db.a", "already ended")


def test_body_after_eof_header():
    data = good_archive()
    eof = A.encode_header("db", "b", True, bsonio.crc64(doc(3))) + A.TERMINATOR
    assert data.endswith(eof)
    expect_error(data[:-4] + doc(5) + A.TERMINATOR, "follows the end-of-namespace header of db.b")


def test_unannounced_namespace():
    data = good_archive()
    extra = A.encode_header("db", "zzz") + A.TERMINATOR
    expect_error(data + extra, "db.zzz", "does not list")


def test_unfinished_and_unseen_namespaces():
    data = good_archive()
    eof_b = A.encode_header("db", "b", True, bsonio.crc64(doc(3))) + A.TERMINATOR
    expect_error(data[:-len(eof_b)], "unfinished (db.b)", "take or fetch the backup again")
    start_b = data.index(A.encode_header("db", "b"))
    expect_error(data[:start_b], "before all namespaces were seen (missing db.b)")


def test_bad_lengths_and_trailing_zero():
    data = good_archive()
    start = prelude_len(data)
    expect_error(data[:start] + b"\x02\x00\x00\x00" + data[start + 4:], "below the minimum")
    first = data.index(doc(1))
    broken = bytearray(data)
    broken[first + len(doc(1)) - 1] = 7
    expect_error(bytes(broken), "does not end with 0x00")


def test_every_truncation_fails():
    data = good_archive()
    for cut in range(len(data)):
        err = expect_error(data[:cut], "x.archive")
        assert "take or fetch the backup again" in err.message


def test_short_archive_like_tools_test():
    # TestMongorestoreShortArchive: every size - k*floor(size/10) prefix must fail
    data = read_bytes("mongorestore", "testdata", "test.bar.archive")
    assert len(data) == 896
    cuts = [len(data) - k * (len(data) // 10) for k in range(1, 11)]
    assert cuts[0] == 807 and cuts[-1] == 6
    for cut in cuts:
        expect_error(data[:cut], "truncated", "the file is incomplete")
    err = expect_error(data[:807], "inside the block of namespace test.bar at byte 807")
    assert err.details["offset"] == 807


def test_bad_format_archive_reads_but_its_metadata_does_not_parse():
    data = read_bytes("mongorestore", "testdata", "bad-format.archive")
    reader = A.ArchiveReader(io.BytesIO(data), "bad-format.archive")
    assert [entry["collection"] for entry in reader.prelude] == ["ixtest"]
    summary = reader.namespaces_summary()
    assert summary["test.ixtest"]["documents"] == 0 and summary["test.ixtest"]["crc"] == 0
    with pytest.raises(FormatError) as err:
        reader.parse_metadata(reader.prelude[0])
    assert "test.ixtest" in err.value.message and "bad-format.archive" in err.value.message
    assert "invalid JSON" in err.value.message


def test_events_can_be_read_once():
    reader = A.ArchiveReader(io.BytesIO(good_archive()), "x")
    list(reader.iter_documents())
    with pytest.raises(ValueError):
        list(reader.iter_documents())
