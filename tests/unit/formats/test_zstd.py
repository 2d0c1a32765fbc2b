"""Issue 9: zstd written and read like gzip - one checksummed frame per file, recognised by content, a cut
file refused; the directory layout's .zst names (long names within 255 bytes) and a zstd archive."""

import gzip
import os

import bson
import pytest
import zstandard

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import FormatError
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import archive as archive_format
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import bsonio
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import dump_names
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import dump_scan
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import dump_writer


def documents(count, pad=200):
    return [bson.encode({"_id": n, "pad": "x" * (n % pad), "blob": bytes(n % 50)}) for n in range(count)]


def read_all(path):
    with bsonio.open_decompressed(path) as handle:
        return list(bsonio.iter_raw_documents(handle, path))


# --------------------------------------------------------------------------- files


def test_default_levels_live_in_one_place(tmp_path):
    payload = b"".join(documents(500))
    for compression, default in sorted(bsonio.DEFAULT_COMPRESSION_LEVELS.items()):
        written = []
        for level in (None, default):
            path = str(tmp_path / ("%s-%s" % (compression, level)))
            with bsonio.create_compressed_file(path, compression, level) as handle:
                handle.write(payload)
            written.append(open(path, "rb").read())
        assert written[0] == written[1], compression
    assert bsonio.DEFAULT_COMPRESSION_LEVELS == {"gzip": 6, "zstd": 3}


def test_zstd_file_is_one_checksummed_frame_that_the_zstd_tool_format_reads(tmp_path):
    path = str(tmp_path / "c.bson.zst")
    docs = documents(2000)
    with bsonio.create_compressed_file(path, "zstd", 1) as handle:
        for doc in docs:
            handle.write(doc)
        disk = handle.disk
    data = open(path, "rb").read()
    assert data[:4] == bsonio.ZSTD_MAGIC
    assert zstandard.get_frame_parameters(data).has_checksum
    assert zstandard.ZstdDecompressor().decompressobj().decompress(data) == b"".join(docs)
    assert (disk.size, disk.sha256) == (len(data), bsonio.sha256_file(path))
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


def test_open_decompressed_knows_zstd_by_content_not_name(tmp_path):
    docs = documents(300)
    named_plain = tmp_path / "oplog.bson"  # oplog.bson keeps its name when compressed
    named_plain.write_bytes(zstandard.ZstdCompressor().compress(b"".join(docs)))
    with bsonio.open_decompressed(str(named_plain)) as handle:
        assert bsonio.compression_of(handle) == "zstd"
        assert bsonio.stream_label(handle, "x") == "x (zstd; offsets are in uncompressed bytes)"
    assert read_all(str(named_plain)) == docs


def test_several_zstd_frames_and_skippable_frames_are_read_in_order(tmp_path):
    docs = documents(100)
    path = tmp_path / "frames.bson.zst"
    skippable = b"\x5a\x2a\x4d\x18" + (5).to_bytes(4, "little") + b"notes"
    path.write_bytes(zstandard.ZstdCompressor(write_content_size=True).compress(b"".join(docs[:40])) + skippable
                     + zstandard.ZstdCompressor(level=-3, write_checksum=True).compress(b"".join(docs[40:])))
    assert read_all(str(path)) == docs


@pytest.mark.parametrize("cut", [1, 4, 5, 300, 2000])
def test_a_cut_zstd_file_is_an_error_not_a_shorter_file(tmp_path, cut):
    """zstandard's reader ends quietly where a cut file ends; whatever the cut, the reader says so."""
    path = str(tmp_path / "c.bson.zst")
    with bsonio.create_compressed_file(path, "zstd") as handle:
        handle.write(b"".join(documents(3000)))
    data = open(path, "rb").read()
    open(path, "wb").write(data[:-cut])
    with pytest.raises(FormatError) as failure:
        read_all(path)
    assert "zstd stream is damaged" in failure.value.message and "ends inside a frame" in failure.value.message
    assert path in failure.value.message


def test_a_damaged_zstd_file_is_an_error(tmp_path):
    path = str(tmp_path / "c.bson.zst")
    with bsonio.create_compressed_file(path, "zstd") as handle:
        handle.write(b"".join(documents(3000)))
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x55
    open(path, "wb").write(bytes(data))
    with pytest.raises(FormatError) as failure:
        read_all(path)
    assert "zstd stream is damaged" in failure.value.message and "take or fetch the backup again" in \
        failure.value.message


def test_a_damaged_zstd_metadata_file_names_the_file(tmp_path):
    path = str(tmp_path / "c.metadata.json.zst")
    open(path, "wb").write(zstandard.ZstdCompressor().compress(b'{"indexes":[]}')[:-3])
    with pytest.raises(FormatError) as failure:
        dump_scan.read_metadata_file(path)
    assert failure.value.message.startswith("metadata %s: zstd stream is damaged" % path)


# --------------------------------------------------------------------------- directory layout


def test_file_names_of_each_compression():
    assert dump_names.bson_path("/d", "db", "c", "zstd") == "/d/db/c.bson.zst"
    assert dump_names.metadata_path("/d", "db", "c", "zstd") == "/d/db/c.metadata.json.zst"
    assert dump_names.prelude_path("/d", "zstd") == "/d/prelude.json.zst"
    assert dump_names.bson_path("/d", "db", "c", "gzip") == "/d/db/c.bson.gz"
    assert dump_names.bson_path("/d", "db", "c") == dump_names.bson_path("/d", "db", "c", "none") == "/d/db/c.bson"
    assert dump_names.oplog_path("/d") == "/d/oplog.bson"
    assert dump_names.classify_file_name("a+b.bson.zst") == ("bson", "a+b")
    assert dump_names.classify_file_name("a.metadata.json.zst") == ("metadata", "a")
    assert "prelude.json.zst" in dump_names.PRELUDE_NAMES


def test_long_names_keep_every_zstd_file_name_within_255_bytes():
    name = "l" * 300
    for compression in ("none", "gzip", "zstd"):
        stem = dump_names.collection_file_stem(name, compression)
        assert dump_names.is_truncated_stem(stem)
        assert len(os.path.basename(dump_names.metadata_path("/d", "db", name, compression))) <= 255
    assert dump_names.collection_file_stem(name, "gzip") == dump_names.collection_file_stem(name)  # mongodump's
    assert len(dump_names.collection_file_stem(name, "zstd")) == 237
    exactly = "e" * 237
    assert dump_names.collection_file_stem(exactly, "zstd") == exactly
    assert not dump_names.is_truncated_stem(exactly)


def _write_directory(root, compression, docs, long_name):
    writer = dump_writer.DirectoryWriter(root, compression, None, server_version="7.0.0")
    for name in ("people", "odd name ✓", long_name):
        with writer.open_collection("shop", name) as handle:
            for doc in docs:
                handle.write(doc)
        writer.write_metadata("shop", name, '{"indexes":[],"collectionName":"%s","type":"collection"}' % name)
    with writer.open_oplog() as handle:
        handle.write(docs[0])
    writer.write_prelude("7.0.0", "dbops")
    return writer


def test_zstd_directory_is_written_file_by_file_and_scanned_back(tmp_path):
    root = str(tmp_path / "dump")
    docs = documents(400)
    long_name = "z" * 260
    writer = _write_directory(root, "zstd", docs, long_name)
    names = sorted(os.path.relpath(os.path.join(d, f), root) for d, _s, files in os.walk(root) for f in files)
    assert "prelude.json.zst" in names and "oplog.bson" in names and "shop/people.bson.zst" in names
    assert "shop/people.metadata.json.zst" in names and "shop/odd+name+%E2%9C%93.bson.zst" in names
    for name in names:  # every file a zstd stream of its own, oplog.bson included
        with open(os.path.join(root, name), "rb") as handle:
            assert handle.read(4) == bsonio.ZSTD_MAGIC, name
    assert sorted(record["path"] for record in writer.file_records()) == names

    scan = dump_scan.scan_dump_directory(root)
    assert scan.namespaces == sorted("shop." + name for name in ("people", "odd name ✓", long_name))
    for entry in scan.entries:
        assert read_all(entry.bson_path) == docs
        assert entry.metadata["collectionName"] == entry.collection
    assert scan.prelude == {"ServerVersion": "7.0.0", "ToolVersion": "dbops"}
    assert read_all(scan.oplog_path) == docs[:1]


def test_two_preludes_of_different_compressions_are_refused(tmp_path):
    root = str(tmp_path / "dump")
    _write_directory(root, "zstd", documents(3), "y" * 10)
    with gzip.open(os.path.join(root, "prelude.json.gz"), "wb") as handle:
        handle.write(b'{"ServerVersion":"7.0.0","ToolVersion":"x"}')
    with pytest.raises(FormatError, match="both prelude.json.gz and prelude.json.zst exist; keep only one"):
        dump_scan.scan_dump_directory(root)


# --------------------------------------------------------------------------- archive


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_archive_is_compressed_as_a_whole_and_read_back(tmp_path, compression):
    path = str(tmp_path / "a.archive")
    docs = documents(1000)
    stream = bsonio.create_compressed_file(path, compression, None)
    namespaces = [{"db": "shop", "collection": "people", "metadata": "", "type": "collection"}]
    writer = archive_format.ArchiveWriter(stream, "7.0.0", "dbops", 1, namespaces)
    writer.write_segment("shop", "people", b"".join(docs))
    writer.end_namespace("shop", "people")
    writer.close()
    stream.close()
    magic = {"gzip": bsonio.GZIP_MAGIC, "zstd": bsonio.ZSTD_MAGIC}[compression]
    assert open(path, "rb").read(len(magic)) == magic
    with archive_format.open_archive_for_read(path) as handle:
        reader = archive_format.ArchiveReader(handle, path)
        assert [raw for _db, _coll, raw in reader.iter_documents()] == docs
