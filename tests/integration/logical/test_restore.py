"""The restore engine against the real test server: round trips, real mongodump fixtures, bad input."""

import datetime
import os
import uuid

import bson
import pytest
from bson import Binary, Int64, Regex, Timestamp
from bson.codec_options import CodecOptions

from ansible_collections.dbops.mongodb_backup.plugins.module_utils import errors
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump as dump_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_options
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import restore as restore_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import FormatError, InvalidOption

from support import TESTDATA, raw_documents
ORDERED = CodecOptions(document_class=dict)


def restore(client, source, check_mode=False, **options):
    return restore_engine.restore(client, restore_engine.RestoreOptions(source=str(source), **options),
                                  check_mode=check_mode)


def dump(client, **options):
    return dump_engine.dump(client, dump_options.DumpOptions(**options), client_utils.server_facts(client))


@pytest.fixture
def clean(client):
    names = []

    def track(*dbs):
        for name in dbs:
            client.drop_database(name)
            names.append(name)
    yield track
    for name in names:
        client.drop_database(name)


# --------------------------------------------------------------------------- round trip

BASE_TYPES = {
    "int32": 7, "int64": Int64(2 ** 40), "double": 1.5, "bool": True, "null": None,
    "string": "héllo ✓ 日本語", "date_before_1970": datetime.datetime(1901, 12, 13, 20, 45, 52),
    "date_now": datetime.datetime(2024, 5, 1, 12, 0, 0, 123000),
    "binary_generic": Binary(b"\x00\x01\x02", 0), "binary_uuid": Binary(uuid.UUID(int=7).bytes, 4),
    "binary_md5": Binary(b"0123456789abcdef", 5), "binary_user": Binary(b"xyz", 128),
    "regex": Regex("^a.*b$", "im"), "timestamp": Timestamp(1700000000, 5), "oid": bson.ObjectId(),
    "nested": {"a": {"b": {"c": [1, {"d": "e"}, {"f": []}]}}}, "array_of_docs": [{"x": 1}, {"y": [2, 3]}],
}
EXTENDED_TYPES = {  # types the FerretDB test server does not store
    "decimal": bson.Decimal128("12345.6789"), "minkey": bson.MinKey(), "maxkey": bson.MaxKey(),
    "code": bson.Code("function() { return 1; }"), "nested_arrays": [[1, [2, [3]]], [[]]],
}


def _supported(server, value):
    probe = server.client(serverSelectionTimeoutMS=3000)
    try:
        probe.capability_probe.t.insert_one({"v": value})
        return True
    except Exception:  # the server rejects (or drops the connection on) unsupported types
        return False
    finally:
        try:
            probe.drop_database("capability_probe")
        except Exception:
            pass
        probe.close()


@pytest.mark.parametrize("use_archive", [False, True])
def test_every_bson_type_round_trips_byte_for_byte(server, client, clean, tmp_path, use_archive):
    clean("rt_src", "rt_dst")
    source = client.rt_src
    source.types.insert_many([{"_id": i, "name": name, "value": value}
                              for i, (name, value) in enumerate(sorted(BASE_TYPES.items()))])
    source.types.insert_one({"_id": "big", "blob": Binary(os.urandom(15 * 1024 * 1024))})  # near 16 MB
    for odd in ("odd name ✓", "with.dots", "sp ace", "caf\u00e9s"):
        source[odd].insert_many([{"_id": n, "odd": odd} for n in range(3)])
    source.types.create_index([("name", 1)], unique=True)
    target = {"archive": str(tmp_path / "rt.archive")} if use_archive else {"path": str(tmp_path / "rt")}
    dump(client, db="rt_src", gzip=True, **target)
    _changed, result = restore(client, list(target.values())[0], ns_from=["rt_src.$c$"], ns_to=["rt_dst.$c$"])
    assert result["verification"]["verified"] and result["total_failed"] == 0
    for name in source.list_collection_names():
        assert raw_documents(client, "rt_dst", name) == raw_documents(client, "rt_src", name), name
    indexes = {ix["name"]: ix for ix in client.rt_dst.types.list_indexes()}
    assert indexes["name_1"]["unique"] is True


@pytest.mark.parametrize("name", sorted(EXTENDED_TYPES))
def test_extended_bson_types_round_trip(server, client, clean, tmp_path, name):
    value = EXTENDED_TYPES[name]
    if not _supported(server, value):
        pytest.skip("the %s test server cannot store BSON %s values" % (server.kind, name))
    clean("rtx_src", "rtx_dst")
    client.rtx_src.t.insert_one({"_id": 1, "v": value})
    dump(client, db="rtx_src", path=str(tmp_path / "x"))
    restore(client, tmp_path / "x", ns_from=["rtx_src.$c$"], ns_to=["rtx_dst.$c$"])
    assert raw_documents(client, "rtx_dst", "t") == raw_documents(client, "rtx_src", "t")


def test_capped_collection_options_come_back(client, clean, tmp_path):
    clean("opt_src", "opt_dst")
    client.opt_src.create_collection("events", capped=True, size=65536, max=50)
    client.opt_src.events.insert_many([{"n": n} for n in range(10)])
    dump(client, db="opt_src", path=str(tmp_path / "opt"))
    restore(client, tmp_path / "opt", ns_from=["opt_src.$c$"], ns_to=["opt_dst.$c$"])
    options = client.opt_dst.events.options()
    assert options["capped"] is True and options["size"] == 65536 and options["max"] == 50
    restore(client, tmp_path / "opt", ns_from=["opt_src.$c$"], ns_to=["opt_dst2.$c$"], no_options_restore=True)
    assert not client.opt_dst2.events.options().get("capped")
    client.drop_database("opt_dst2")


# --------------------------------------------------------------------------- real mongodump output

def test_testdirs_fixture_restores_110_documents(client, clean, tmp_path):
    clean("db1", "db2")
    _changed, result = restore(client, os.path.join(TESTDATA, "testdirs"), require_manifest=False,
                               ignore_unlisted_files=True)  # it holds badfile.txt, baddir and c2.txt
    assert result["total_inserted"] == 110
    assert client.db1.c1.count_documents({}) == 100 and client.db1.c4.count_documents({}) == 10
    assert result["verification"]["verified"] is False and result["verification"]["manifest"] is False
    assert result["verification"]["structural_check"]["documents"] == 110


def test_testdirs_include_exclude_and_rename(client, clean):
    clean("db1", "db2")
    _c, result = restore(client, os.path.join(TESTDATA, "testdirs"), require_manifest=False, ignore_unlisted_files=True, ns_exclude=["db1.c1"])
    assert result["total_inserted"] == 10
    clean("db1", "db2")
    _c, result = restore(client, os.path.join(TESTDATA, "testdirs"), require_manifest=False, ignore_unlisted_files=True, ns_include=["db1.c4"])
    assert result["total_inserted"] == 10 and client.db1.list_collection_names() == ["c4"]
    clean("db1", "db2")
    _c, result = restore(client, os.path.join(TESTDATA, "testdirs"), require_manifest=False, ignore_unlisted_files=True,
                         ns_from=["db1.c1"], ns_to=["db1.c1renamed"])
    assert result["total_inserted"] == 110 and client.db1.c1renamed.count_documents({}) == 100


def test_special_character_collection_name(client, clean):
    clean("db1")
    _c, result = restore(client, os.path.join(TESTDATA, "specialcharacter"), require_manifest=False, ns_include=["db1.cafés"])
    assert result["total_inserted"] == 1 and client.db1["cafés"].count_documents({}) == 1


def test_archive_fixture_restores_its_documents(client, clean):
    clean("test")
    _c, result = restore(client, os.path.join(TESTDATA, "dump-w-oplog.archive"), require_manifest=False, ns_include=["test.*"])
    assert client.test.foo.count_documents({}) == 25
    assert sorted(d["a"] for d in client.test.foo.find()) == list(range(1, 26))


def test_collmod_ttl_fixture_indexes(server, client, clean):
    if server.kind == "ferretdb":
        pytest.skip("FerretDB has no TTL indexes (expireAfterSeconds is not implemented)")
    clean("mongodump_test_db")
    restore(client, os.path.join(TESTDATA, "collMod_ttl_index"), require_manifest=False, ns_include=["mongodump_test_db.*"])
    assert client.mongodump_test_db.coll1.count_documents({}) == 10
    indexes = {ix["name"]: ix for ix in client.mongodump_test_db.coll1.list_indexes()}
    assert indexes["a_1"]["expireAfterSeconds"] == 1000


# --------------------------------------------------------------------------- verification and bad input

@pytest.fixture
def small_backup(client, clean, tmp_path):
    clean("vb_src", "vb_dst")
    client.vb_src.items.insert_many([{"_id": i, "v": "x" * 50} for i in range(300)])
    target = tmp_path / "small"
    dump(client, db="vb_src", path=str(target))
    return target


def _assert_untouched(client):
    assert "vb_dst" not in client.list_database_names()


def test_checksum_mismatch_refuses_before_writing(client, small_backup):
    data = small_backup / "vb_src" / "items.bson"
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(errors.VerificationFailed) as failure:
        restore(client, small_backup, ns_from=["vb_src.$c$"], ns_to=["vb_dst.$c$"])
    assert "%s: sha256" % data in failure.value.message and "incomplete or damaged" in failure.value.message
    _assert_untouched(client)


def test_missing_file_refuses_before_writing(client, small_backup):
    os.remove(small_backup / "vb_src" / "items.metadata.json")
    with pytest.raises(errors.VerificationFailed, match="does not match its manifest .*items.metadata.json: missing"):
        restore(client, small_backup, ns_from=["vb_src.$c$"], ns_to=["vb_dst.$c$"])
    _assert_untouched(client)


def test_truncated_bson_without_manifest_fails_the_structural_check(client, small_backup):
    # Without the manifest and the prelude that says it is ours, it looks like mongodump output.
    os.remove(small_backup / "manifest.json")
    os.remove(small_backup / "vb_src" / "prelude.json")  # a single-database dump keeps it there
    data = small_backup / "vb_src" / "items.bson"
    data.write_bytes(data.read_bytes()[:-7])
    with pytest.raises(errors.VerificationFailed) as failure:
        restore(client, small_backup, ns_from=["vb_src.$c$"], ns_to=["vb_dst.$c$"], require_manifest=False)
    assert "structural check" in failure.value.message and "items.bson" in failure.value.message
    _assert_untouched(client)


def test_corrupt_gzip_archive_is_rejected(client, clean, tmp_path):
    clean("gz_src")
    client.gz_src.t.insert_many([{"_id": i, "pad": os.urandom(200).hex()} for i in range(500)])
    archive = tmp_path / "a.archive.gz"
    dump(client, db="gz_src", archive=str(archive), gzip=True)
    os.remove(str(archive) + ".manifest.json")
    raw = bytearray(archive.read_bytes())
    raw[len(raw) // 2] ^= 0x55
    archive.write_bytes(bytes(raw))
    with pytest.raises((errors.VerificationFailed, FormatError)) as failure:
        restore(client, archive, ns_from=["gz_src.$c$"], ns_to=["gz_dst.$c$"])
    assert str(archive) in failure.value.message
    assert "gz_dst" not in client.list_database_names()


def test_ns_from_ns_to_mismatch_is_rejected(tmp_path):
    with pytest.raises(InvalidOption, match="ns_to uses \\$y\\$, which ns_from does not define"):
        restore_engine.RestoreOptions(source=str(tmp_path), ns_from=["a.$x$"], ns_to=["b.$y$"])
    with pytest.raises(InvalidOption, match="they pair up in order"):
        restore_engine.RestoreOptions(source=str(tmp_path), ns_from=["a.$x$", "c.d"], ns_to=["b.$x$"])


def test_duplicate_keys_are_counted_or_stop_the_restore(client, small_backup):
    client.vb_dst.items.insert_many([{"_id": i, "v": "existing"} for i in range(0, 300, 3)])
    _c, result = restore(client, small_backup, ns_from=["vb_src.$c$"], ns_to=["vb_dst.$c$"], max_failed_documents=100)
    assert result["total_inserted"] == 200 and result["total_failed"] == 100
    assert result["namespaces"][0]["failed"] == 100
    client.drop_database("vb_dst")
    client.vb_dst.items.insert_many([{"_id": i, "v": "existing"} for i in range(0, 300, 3)])
    with pytest.raises(errors.RestoreFailed) as failure:
        restore(client, small_backup, ns_from=["vb_src.$c$"], ns_to=["vb_dst.$c$"], stop_on_error=True,
                batch_size=50)
    message = failure.value.message
    assert "inserting into vb_dst.items failed" in message and "duplicate key" in message.lower()
    assert "not complete: vb_dst.items" in message


def test_drop_replaces_existing_documents(client, small_backup):
    client.vb_dst.items.insert_many([{"_id": i, "v": "old"} for i in range(1000, 1010)])
    _c, result = restore(client, small_backup, ns_from=["vb_src.$c$"], ns_to=["vb_dst.$c$"], drop=True,
                         num_insertion_workers_per_collection=3, batch_size=40, write_concern={"w": 1})
    assert client.vb_dst.items.count_documents({}) == 300 and result["total_failed"] == 0
    assert raw_documents(client, "vb_dst", "items") == raw_documents(client, "vb_src", "items")


def test_check_mode_plans_without_writing(client, small_backup):
    client.vb_dst.items.insert_one({"_id": "keep"})
    _c, plan = restore(client, small_backup, check_mode=True, ns_from=["vb_src.$c$"], ns_to=["vb_dst.$c$"],
                       drop=True)
    assert plan["namespaces"] == [{"namespace": "vb_dst.items", "source_namespace": "vb_src.items",
                                   "type": "collection", "target_exists": True, "action": "drop and restore",
                                   "documents": 300}]
    assert list(client.vb_dst.items.find()) == [{"_id": "keep"}]


@pytest.mark.parametrize("options", [{}, {"drop": True, "ns_include": ["a.*"]}, {"drop": True, "db": "a"},
                                     {"drop": True, "ns_from": ["a.$c$"], "ns_to": ["b.$c$"]}])
def test_drop_extra_collections_needs_drop_and_a_whole_deployment(tmp_path, options):
    with pytest.raises(InvalidOption, match="drop_extra_collections returns the whole deployment to the backup"):
        restore_engine.RestoreOptions(source=str(tmp_path), drop_extra_collections=True, **options)


def test_drop_extra_collections_returns_the_deployment_to_the_backup(private_server, tmp_path):
    client = private_server.client()
    client.keep.items.insert_many([{"_id": i} for i in range(20)])
    dump(client, path=str(tmp_path / "full"))
    client.keep.items.insert_one({"_id": "later"})
    client.keep.later.insert_one({"_id": 1})
    client.newdb.things.insert_one({"_id": 1})

    _c, plan = restore(client, tmp_path / "full", check_mode=True, drop=True, drop_extra_collections=True)
    assert plan["extra_collections"] == ["keep.later", "newdb.things"]
    assert sorted(client.keep.list_collection_names()) == ["items", "later"]  # check mode drops nothing

    _c, result = restore(client, tmp_path / "full", drop=True, drop_extra_collections=True)
    assert result["dropped_extra_collections"] == ["keep.later", "newdb.things"]
    assert client.keep.list_collection_names() == ["items"] and "newdb" not in client.list_database_names()
    assert sorted(d["_id"] for d in client.keep.items.find()) == list(range(20))
    private_server.client().admin.command("ping")  # admin (users) untouched: logging in still works


def test_unreachable_target_is_a_connection_error():
    import testserver
    port = testserver.free_port()
    with pytest.raises(client_utils.ConnectionFailure, match="cannot reach MongoDB at 127.0.0.1:%d" % port):
        client_utils.connect(client_utils.ConnectionOptions(login_host="127.0.0.1", login_port=port,
                                                            connect_timeout=1))


def test_server_killed_mid_restore_says_which_namespaces_are_complete(private_server, client, clean, tmp_path):
    clean("kill_src")
    client.kill_src.a_small.insert_many([{"_id": i} for i in range(10)])
    client.kill_src.b_large.insert_many([{"_id": i, "pad": "y" * 1000} for i in range(4000)])
    dump(client, db="kill_src", path=str(tmp_path / "k"))
    target = private_server.client()
    killed = []

    def kill_on_large(event, **details):
        if event == "batch" and details["namespace"] == "kill_src.b_large" and not killed:
            private_server.kill()
            killed.append(True)

    options = restore_engine.RestoreOptions(source=str(tmp_path / "k"), num_parallel_collections=1,
                                            batch_size=500)
    with pytest.raises(errors.RestoreFailed) as failure:
        restore_engine.restore(target, options, progress=kill_on_large)
    assert killed
    message = failure.value.message
    assert "namespaces restored completely: kill_src.a_small" in message
    assert "not complete: kill_src.b_large" in message
