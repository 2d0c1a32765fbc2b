"""Issue 9: one compression scheme (compression none/gzip/zstd, compression_level) for every module that
writes files; the deprecated gzip option; engine: mongodump; manifests recorded before compression existed."""

import os

import pytest

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import InvalidOption
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import backup_target
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_options
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import mongotools
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import archiver


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize("compression, gzip_option, expected", [
    (None, None, "none"), ("none", None, "none"), ("gzip", None, "gzip"), ("zstd", None, "zstd"),
    (None, True, "gzip"), ("gzip", True, "gzip"), (None, False, "none"), ("zstd", False, "zstd"),
])
def test_the_compression_a_dump_writes(compression, gzip_option, expected):
    options = dump_options.DumpOptions(path="/backups/x", compression=compression, gzip=gzip_option)
    assert options.compression == expected
    assert options.describe()["compression"] == expected
    assert "gzip" not in options.describe()


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_gzip_true_contradicting_compression_is_refused(compression):
    with pytest.raises(InvalidOption) as failure:
        dump_options.DumpOptions(path="/backups/x", compression=compression, gzip=True)
    assert failure.value.message == (
        "gzip: true asks for gzip but compression is %s; remove gzip (deprecated: compression replaces it) "
        "and keep compression: %s" % (compression, compression))


def test_an_unknown_compression_is_refused():
    with pytest.raises(InvalidOption, match="compression 'xz' is not known: use one of none, gzip, zstd"):
        dump_options.DumpOptions(path="/backups/x", compression="xz")


@pytest.mark.parametrize("compression, level, option, message", [
    ("gzip", 0, "compression_level", "compression_level 0 is not a gzip level: use 1 to 9"),
    ("gzip", 10, "gzip_level", "gzip_level 10 is not a gzip level: use 1 to 9"),
    ("zstd", 23, "compression_level", "compression_level 23 is not a zstd level: use -131072 to 22"),
    ("zstd", -131073, "gzip_level", "gzip_level -131073 is not a zstd level: use -131072 to 22"),
    (None, 5, "compression_level", "compression_level 5 has no effect without compression"),
    ("none", 5, "gzip_level", "gzip_level 5 has no effect without compression"),
])
def test_a_level_out_of_range_names_the_option_given(compression, level, option, message):
    with pytest.raises(InvalidOption) as failure:
        dump_options.DumpOptions(path="/backups/x", compression=compression, compression_level=level,
                                 level_option=option)
    assert message in failure.value.message


@pytest.mark.parametrize("compression, level", [("gzip", 1), ("gzip", 9), ("zstd", -5), ("zstd", 0), ("zstd", 22),
                                                ("gzip", None), ("zstd", None)])
def test_levels_each_compressor_takes(compression, level):
    options = dump_options.DumpOptions(archive="/backups/x.archive", compression=compression, compression_level=level)
    assert options.compression_level == level


def test_oplog_archive_and_dump_share_the_scheme(tmp_path):
    with pytest.raises(InvalidOption, match="compression 'bz2' is not known: use one of none, gzip, zstd"):
        archiver.ArchiveOptions(str(tmp_path), compression="bz2")
    with pytest.raises(InvalidOption, match="compression_level 23 is not a zstd level: use -131072 to 22"):
        archiver.ArchiveOptions(str(tmp_path), compression="zstd", compression_level=23)
    assert archiver.ArchiveOptions(str(tmp_path)).compression == "gzip"  # the archiver's default stays gzip


# --------------------------------------------------------------------------- engine: mongodump


def _connection():
    return client_utils.ConnectionOptions(login_host="127.0.0.1", login_port=9)


@pytest.mark.parametrize("options, message", [
    (dict(compression="zstd"), "compression: zstd needs engine: native (mongodump writes only gzip)"),
    (dict(compression="gzip", compression_level=9), "compression_level needs engine: native (mongodump --gzip "
                                                    "takes no level)"),
    (dict(gzip=True, compression_level=1, level_option="gzip_level"), "gzip_level needs engine: native"),
])
def test_mongodump_engine_refuses_what_mongodump_cannot_write_before_anything_runs(tmp_path, options, message):
    target = tmp_path / "dump"
    # a binary that does not exist: the refusal must come before looking for it, and nothing is created
    with pytest.raises(InvalidOption) as failure:
        mongotools.run(_connection(), dump_options.DumpOptions(path=str(target), **options),
                       str(tmp_path / "no-mongodump"), check_mode=False)
    assert message in failure.value.message
    assert os.listdir(str(tmp_path)) == []


def test_mongodump_engine_gets_gzip_from_either_option():
    for options in (dict(compression="gzip"), dict(gzip=True)):
        argv = mongotools.build_argv("mongodump", _connection(), dump_options.DumpOptions(path="/b/x", **options),
                                     "/b/x.partial", "/tmp/c.yml")
        assert "--gzip" in argv
    argv = mongotools.build_argv("mongodump", _connection(), dump_options.DumpOptions(path="/b/x"),
                                 "/b/x.partial", "/tmp/c.yml")
    assert "--gzip" not in argv


# --------------------------------------------------------------------------- idempotence scope


@pytest.mark.parametrize("recorded, asked", [
    ({"gzip": True}, "gzip"), ({"gzip": False}, "none"), ({}, "none"),
    ({"compression": "zstd", "gzip": False}, "zstd"), ({"compression": "gzip"}, "gzip"),
])
def test_manifests_from_before_compression_compare_equal(recorded, asked):
    requested = dump_options.DumpOptions(path="/b/x", compression=asked).describe()
    base = {key: value for key, value in requested.items() if key != "compression"}
    assert backup_target.scope_mismatches(dict(base, **recorded), requested) == []


@pytest.mark.parametrize("recorded, asked, message", [
    ({"gzip": True}, "zstd", 'compression: asked "zstd", the backup holds "gzip"'),
    ({"gzip": False}, "gzip", 'compression: asked "gzip", the backup holds "none"'),
    ({"compression": "zstd"}, "none", 'compression: asked "none", the backup holds "zstd"'),
])
def test_another_compression_is_another_scope(recorded, asked, message):
    requested = dump_options.DumpOptions(path="/b/x", compression=asked).describe()
    base = {key: value for key, value in requested.items() if key != "compression"}
    assert backup_target.scope_mismatches(dict(base, **recorded), requested) == [message]
