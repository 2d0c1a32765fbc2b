# -*- coding: utf-8 -*-
"""mongodump directory layout: names, metadata.json, scanning, writing."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import gzip
import hashlib
import json
import os
import stat
import uuid
from collections import OrderedDict

import bson
import pytest
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.son import SON

from support import is_gzip, compat_file as fx
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import versions
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import bsonio

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import dump_writer
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import dump_metadata
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import dump_names
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import dump_scan
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import FormatError

TESTDATA = ("mongorestore", "testdata")
LONG_NAME = ("aVery" + "Very" * 43 + "LongCollectionNameConsistingOfExactlyTwoHundredAnd"
             "FortySevenCharacters")


def td(*parts):
    return fx(*(TESTDATA + parts))


def read_docs(path):
    with bsonio.open_decompressed(path) as handle:
        return list(bsonio.iter_raw_documents(handle, path))


# ------------------------------------------------------------------------------- names


@pytest.mark.parametrize("name,escaped", [
    (u"cafés", "caf%C3%A9s"),
    ("with space", "with+space"),
    ("$admin.system.users", "%24admin.system.users"),
    ("coll/three", "coll%2Fthree"),
    ("a-b_c.d~e", "a-b_c.d~e"),
    ("100%+", "100%25%2B"),
    ("system.buckets.foo_ts", "system.buckets.foo_ts"),
])
def test_escape_like_go_query_escape(name, escaped):
    assert dump_names.escape_collection_name(name) == escaped
    assert dump_names.unescape_collection_stem(escaped) == name


def test_long_name_vectors_from_mongodump_tests():
    prefix = "a" + "Very" * 45  # longPrefix of mongodump_test.go
    assert len(prefix) == 181
    name = prefix + "/Long/Collection/Name/Consisting/Of/Many/Characters"
    assert dump_names.collection_file_stem(name) == (
        prefix + "%2FLong%2FCollection%2FName%24FUVlwTrb2eHN1RUE1swI1fFzWmA")
    exactly = "abcdefghijklmnopq" * 14  # 238 bytes: kept as is
    assert dump_names.collection_file_stem(exactly) == exactly
    longer = "abcdefghijklmnopqrstuvwxyz" * 10
    stem = dump_names.collection_file_stem(longer)
    assert stem[:211] == longer[:208] + "%24" and len(stem) == 238
    assert base64.urlsafe_b64decode(stem[211:] + "=") == hashlib.sha1(longer.encode()).digest()
    special = "abcdefghijklmnopqrstuvwxyz+/@" * 8  # 232 raw bytes, longer once escaped
    stem = dump_names.collection_file_stem(special)
    assert stem[:211] == dump_names.escape_collection_name(special)[:208] + "%24"


def test_long_name_fixture_stem_is_reproduced():
    directory = td("longcollectionname", "db1")
    bson_name = [name for name in os.listdir(directory) if name.endswith(".bson")][0]
    stem = bson_name[:-len(".bson")]
    meta = dump_metadata.read_metadata_file(os.path.join(directory, stem + ".metadata.json"))
    assert len(meta["collectionName"]) == 247
    assert dump_names.collection_file_stem(meta["collectionName"]) == stem
    assert dump_names.is_truncated_stem(stem)


@pytest.mark.parametrize("stem", ["bad%2", "bad%zz", "%", "caf%C3s"])
def test_unescape_rejects_invalid_stems(stem):
    with pytest.raises(FormatError) as err:
        dump_names.unescape_collection_stem(stem)
    assert repr(stem) in err.value.message


def test_paths():
    assert dump_names.bson_path("/d", "db", "a b") == os.path.join("/d", "db", "a+b.bson")
    assert dump_names.bson_path("/d", "db", "c", "gzip") == os.path.join("/d", "db", "c.bson.gz")
    assert dump_names.metadata_path("/d", "db", "c", "gzip") == os.path.join("/d", "db", "c.metadata.json.gz")
    assert dump_names.oplog_path("/d") == os.path.join("/d", "oplog.bson")


def test_timeseries_data_names_depend_on_source_version():
    assert versions.data_collection_name("ts", "timeseries", "5.0.0-rc0") == "system.buckets.ts"
    assert versions.data_collection_name("ts", "timeseries", "8.2.1") == "system.buckets.ts"
    assert versions.data_collection_name("ts", "timeseries", "8.3.0") == "ts"
    assert versions.data_collection_name("ts", "timeseries", None) == "system.buckets.ts"
    assert versions.data_collection_name("c", "collection", "5.0.0") == "c"
    assert versions.parse_server_version("unknown") is None
    assert versions.parse_server_version("r3.4.3") == (3, 4, 3)


# --------------------------------------------------------------------------- metadata.json


MODERN_METADATA = [
    ("timeseries_tests", "ts_dump", "timeseries_test", "foo_ts.metadata.json"),
    ("timeseries_tests", "ts_dump", "admin", "system.views.metadata.json"),
    ("timeseries_tests", "ts_dump_with_oplog", "config", "external_validation_keys.metadata.json"),
    ("collMod_ttl_index", "mongodump_test_db", "coll1.metadata.json"),
    ("collMod_ttl_index", "admin", "system.version.metadata.json"),
    ("testdirs", "db1", "c4.metadata.json"),
    ("coll_with_index", "test", "foo.metadata.json"),
    ("duplicate_index_key_with_oplog", "test", "foo.metadata.json"),
    ("indexmetadata", "indextest", "test_coll_no_index_ns.metadata.json"),
]


@pytest.mark.parametrize("parts", MODERN_METADATA, ids="/".join)
def test_metadata_to_json_matches_mongodump_bytes(parts):
    text = open(td(*parts), "rb").read().decode("utf-8")
    meta = dump_metadata.metadata_from_json(text, "/".join(parts))
    out = dump_metadata.metadata_to_json(meta["options"], meta["indexes"], meta["uuid"],
                                         meta["collectionName"], meta["type"])
    assert out == text


def test_metadata_field_rules():
    view = dump_metadata.metadata_to_json({"viewOn": "c", "pipeline": [{"$match": {"a": 1}}]}, [], None,
                                          "v", "view")
    assert view == ('{"options":{"viewOn":"c","pipeline":[{"$match":{"a":{"$numberInt":"1"}}}]},'
                    '"indexes":[],"collectionName":"v","type":"view"}')
    plain = dump_metadata.metadata_to_json({}, None, uuid.UUID("0679db72-0f49-44de-90ae-27472664e94a"),
                                           "c", "")
    assert plain == '{"indexes":[],"uuid":"0679db720f4944de90ae27472664e94a","collectionName":"c"}'


def test_metadata_keeps_key_order_and_types():
    index = SON([("v", 2), ("name", "b_1"), ("key", SON([("b", 1), ("a", -1.5)])),
                 ("expireAfterSeconds", Int64(10)), ("d", Decimal128("2"))])
    text = dump_metadata.metadata_to_json(OrderedDict([("z", 1), ("a", True)]), [index], None, "c", "")
    assert text == (
        '{"options":{"z":{"$numberInt":"1"},"a":true},"indexes":[{"v":{"$numberInt":"2"},'
        '"name":"b_1","key":{"b":{"$numberInt":"1"},"a":{"$numberDouble":"-1.5"}},'
        '"expireAfterSeconds":{"$numberLong":"10"},"d":{"$numberDecimal":"2"}}],"collectionName":"c"}')


@pytest.mark.parametrize("value,text", [
    (1.0, "1.0"), (0.5, "0.5"), (3600.0, "3600.0"), (123456.0, "123456.0"), (1e6, "1E+06"),
    (1234567.0, "1.234567E+06"), (0.0001, "0.0001"), (0.00001, "1E-05"), (-2.5e-7, "-2.5E-07"),
    (1.5e300, "1.5E+300"), (5e-324, "5E-324"), (0.0, "0.0"), (-0.0, "-0.0"),
    (float("inf"), "Infinity"), (float("-inf"), "-Infinity"), (float("nan"), "NaN"),
    (0.1, "0.1"), (100.25, "100.25"),
])
def test_doubles_are_formatted_like_go(value, text):
    assert dump_metadata.metadata_to_json({"x": value}, [], None, "c", "") == (
        '{"options":{"x":{"$numberDouble":"%s"}},"indexes":[],"collectionName":"c"}' % text)


def test_strings_are_escaped_like_the_go_driver():
    text = dump_metadata.metadata_to_json({"s": u"<a&b> é \u2028 \x01\n\""}, [], None, u"cafés", "")
    assert u'"s":"<a&b> é \\u2028 \\u0001\\n\\""' in text
    assert text.endswith(u'"collectionName":"cafés"}')


def test_metadata_from_json_styles():
    assert dump_metadata.metadata_from_json(b"", "c3.metadata.json") is None
    assert dump_metadata.metadata_from_json("  \n", "x") is None
    legacy = dump_metadata.metadata_from_json(open(td("testdirs", "db1", "c1.metadata.json")).read(), "c1")
    assert legacy["indexes"][0]["key"] == {"_id": 1} and legacy["collectionName"] == ""
    assert legacy["uuid"] is None and legacy["type"] == ""
    changelog = fx("test", "qa-tests", "jstests", "restore", "testdata",
                   "dump_extended_json_options", "test", "changelog.metadata.json")
    meta = dump_metadata.read_metadata_file(changelog)
    assert meta["options"]["size"] == Int64(10000000) and meta["options"]["capped"] is True
    assert [index["name"] for index in meta["indexes"]] == ["_id_", "position_2d"]


@pytest.mark.parametrize("text,cause", [
    ('{"indexes":[', "invalid JSON"),
    ('[1, 2]', "not an object"),
    ('{"indexes":{}}', "'indexes'"),
    ('{"options":[]}', "'options'"),
])
def test_metadata_from_json_errors_name_the_file(text, cause):
    with pytest.raises(FormatError) as err:
        dump_metadata.metadata_from_json(text, "/dump/db/c.metadata.json")
    assert "/dump/db/c.metadata.json" in err.value.message and cause in err.value.message


def test_timeseries_bucket_check():
    good = td("timeseries_tests", "ts_dump", "timeseries_test", "system.buckets.foo_ts.bson")
    for index, doc in enumerate(read_docs(good), 1):
        dump_scan.check_timeseries_bucket(doc, good, index)
    bad = td("timeseries_tests", "ts_dump_invalid_buckets", "timeseries_test",
             "system.buckets.foo_ts.bson")
    with pytest.raises(FormatError) as err:
        dump_scan.check_timeseries_bucket(read_docs(bad)[0], bad, 1)
    assert bad in err.value.message and "not a timeseries bucket" in err.value.message


# ------------------------------------------------------------------------------ scanning


def test_scan_testdirs_follows_mongorestore():
    scan = dump_scan.scan_dump_directory(td("testdirs"))
    assert scan.namespaces == ["db1.c1", "db1.c2", "db1.c3", "db1.c4", "db2.c1"]
    c1, c2, c3, c4, d2c1 = scan.entries
    assert c1.metadata_path and c1.metadata["indexes"][0]["name"] == "_id_"
    assert c2.metadata_path is None and c2.metadata is None
    assert c3.metadata_path.endswith("c3.metadata.json") and c3.metadata is None
    assert c4.metadata["uuid"] == "cdc1ea3f66974c739a083cd38ab03670"
    assert d2c1.bson_path.endswith("c1.bin") and d2c1.metadata_path is None
    assert scan.oplog_path.endswith("oplog.bson")
    warnings = "\n".join(scan.warnings)
    for skipped in ("badfile.txt", "baddir", "c2.txt"):
        assert skipped in warnings
    assert scan.prelude is None


def test_scan_special_character_and_long_names():
    scan = dump_scan.scan_dump_directory(td("specialcharacter"))
    assert scan.namespaces == [u"db1.cafés"]
    scan = dump_scan.scan_dump_directory(td("longcollectionname"))
    assert [entry.collection for entry in scan.entries] == [LONG_NAME]
    assert len(LONG_NAME) == 247
    assert any("someMadeUpInvalidHashString" in item for item in scan.warnings)


def test_scan_timeseries_dump():
    scan = dump_scan.scan_dump_directory(td("timeseries_tests", "ts_dump"))
    assert scan.namespaces == ["admin.system.version", "admin.system.views", "timeseries_test.foo_ts"]
    ts = scan.entry("timeseries_test", "foo_ts")
    assert ts.type == "timeseries" and ts.bson_path.endswith("system.buckets.foo_ts.bson")
    assert ts.metadata["options"]["timeseries"]["timeField"] == "ts" and ts.metadata["uuid"] is None
    assert scan.entry("admin", "system.views").type == "collection"


def test_buckets_file_without_metadata_fails():
    with pytest.raises(FormatError) as err:
        dump_scan.scan_dump_directory(td("timeseries_tests"))  # ts_single_buckets_file is a "db"
    assert "system.buckets.foo_ts.bson" in err.value.message and "metadata" in err.value.message


def test_database_directory_entries_carry_their_metadata():
    entry = dump_scan.scan_database_directory(td("timeseries_tests", "ts_dump", "timeseries_test"),
                                              "timeseries_test")[0]
    assert (entry.namespace, entry.type) == ("timeseries_test.foo_ts", "timeseries")
    long_entries = dump_scan.scan_database_directory(td("longcollectionname", "db1"), "db1")
    assert [e.collection for e in long_entries] == [LONG_NAME]


def test_legacy_system_indexes_rules():
    qa = fx("test", "qa-tests", "jstests", "restore", "testdata")
    scan = dump_scan.scan_dump_directory(os.path.join(qa, "dump_with_oplog"))
    assert scan.namespaces == ["test.data"]  # system.indexes ignored: metadata files exist
    assert any("system.indexes.bson" in item for item in scan.warnings)
    scan = dump_scan.scan_dump_directory(fx("test", "legacy42", "jstests", "tool", "data"))
    assert scan.namespaces == ["dumprestore6.foo", "dumprestore6.system.indexes"]
    scan = dump_scan.scan_dump_directory(os.path.join(qa, "dump_with_soft_links"))
    assert scan.namespaces == ["dbOne.data", "dbTwo.data"]
    assert any("not_a_dir" in item for item in scan.warnings)


def test_metadata_only_entry():
    scan = dump_scan.scan_dump_directory(fx("test", "qa-tests", "jstests", "restore", "testdata",
                                         "dump_ordered_partial_index"))
    entry = scan.entries[0]
    assert entry.bson_path is None and entry.type == "collection"
    expr = entry.metadata["indexes"][1]["partialFilterExpression"]
    assert list(expr) == ["a%d" % i for i in range(10)]


def test_prelude_found_at_the_top_or_in_a_database_directory():
    base = td("prelude_test")
    for name in ("prelude_top_level", "prelude_db_target", "prelude_gzip"):
        assert dump_scan.scan_dump_directory(os.path.join(base, name)).prelude == {
            "ServerVersion": "7.0.16", "ToolVersion": ""}, name
    assert dump_scan.scan_dump_directory(os.path.join(base, "server_version_unknown")).prelude["ServerVersion"] \
        == "unknown"
    assert dump_scan.scan_dump_directory(td("foodump")).prelude is None
    db_target = dump_scan.scan_dump_directory(os.path.join(base, "prelude_db_target"))
    assert db_target.prelude["ServerVersion"] == "7.0.16" and not db_target.warnings
    gz = dump_scan.scan_dump_directory(os.path.join(base, "prelude_gzip"))
    assert gz.prelude_path.endswith("prelude.json.gz") and gz.namespaces == ["test.foo"]
    assert gz.entries[0].metadata["uuid"] == "47e9795dfa3049f6961a04aca38c4e8e"


def _touch(path, data=b""):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


def test_scan_rules_on_synthetic_dump(tmp_path):
    root = str(tmp_path)
    doc = bson.encode({"_id": 1})
    _touch(os.path.join(root, "db", "system.profile.bson"), doc)
    _touch(os.path.join(root, "db", "%24admin.system.users.bson"), doc)
    _touch(os.path.join(root, "db", "v.metadata.json"),
           b'{"options":{"viewOn":"c","pipeline":[]},"indexes":[]}')
    _touch(os.path.join(root, "db", "g.bson.gz"), gzip.compress(doc))
    scan = dump_scan.scan_dump_directory(root)
    assert scan.namespaces == ["db.$admin.system.users", "db.g", "db.v"]
    special, gz, view = scan.entries
    assert special.special and view.type == "view" and view.bson_path is None
    assert read_docs(gz.bson_path) == [doc]
    assert any("system.profile" in item for item in scan.warnings)
    assert any("$admin.system.users" in item for item in scan.warnings)


def test_scan_rejects_ambiguous_or_invalid(tmp_path):
    root = str(tmp_path / "a")
    _touch(os.path.join(root, "db", "c.bson"))
    _touch(os.path.join(root, "db", "c.bson.gz"), gzip.compress(b""))
    with pytest.raises(FormatError) as err:
        dump_scan.scan_dump_directory(root)
    assert "db.c" in err.value.message and "c.bson.gz" in err.value.message
    root = str(tmp_path / "b")
    _touch(os.path.join(root, "bad.name", "c.bson"))
    with pytest.raises(FormatError) as err:
        dump_scan.scan_dump_directory(root)
    assert "bad.name" in err.value.message
    root = str(tmp_path / "c")
    _touch(os.path.join(root, "db", "c.metadata.json"), b"{not json")
    with pytest.raises(FormatError) as err:
        dump_scan.scan_dump_directory(root)
    assert "c.metadata.json" in err.value.message and "invalid JSON" in err.value.message
    with pytest.raises(FormatError):
        dump_scan.scan_dump_directory(str(tmp_path / "missing"))


# ------------------------------------------------------------------------------- writing


def _copy_ts_dump(writer):
    """Write the ts_dump fixture through DirectoryWriter; return what went in."""
    scan = dump_scan.scan_dump_directory(td("timeseries_tests", "ts_dump"))
    written = {}
    for entry in scan.entries:
        raw = open(entry.metadata_path, "rb").read().decode("utf-8")
        documents = read_docs(entry.bson_path)
        with writer.open_collection(entry.db, entry.collection, entry.type) as handle:
            handle.write(b"".join(documents))
        writer.write_metadata(entry.db, entry.collection, raw)
        written[entry.namespace] = (documents, raw, entry.type)
    return written


@pytest.mark.parametrize("use_gzip", [False, True])
def test_directory_writer_round_trip(tmp_path, use_gzip):
    root = str(tmp_path / "dump")
    writer = dump_writer.DirectoryWriter(root, "gzip" if use_gzip else None, 1, server_version="5.0.0-rc0")
    written = _copy_ts_dump(writer)
    oplog = read_docs(td("oplogdump", "oplog.bson"))
    with writer.open_oplog() as handle:
        for doc in oplog:
            handle.write(doc)
    writer.write_prelude("5.0.0-rc0", "100.3.1")

    suffix = ".gz" if use_gzip else ""
    assert os.path.isfile(os.path.join(root, "timeseries_test", "system.buckets.foo_ts.bson" + suffix))
    assert os.path.isfile(os.path.join(root, "prelude.json" + suffix))
    assert is_gzip(os.path.join(root, "oplog.bson")) == use_gzip
    for dirpath, dirnames, filenames in os.walk(root):
        assert stat.S_IMODE(os.stat(dirpath).st_mode) == 0o700
        for name in filenames:
            assert stat.S_IMODE(os.stat(os.path.join(dirpath, name)).st_mode) == 0o600

    scan = dump_scan.scan_dump_directory(root)
    assert scan.namespaces == sorted(written)
    for entry in scan.entries:
        documents, raw, coll_type = written[entry.namespace]
        assert read_docs(entry.bson_path) == documents
        with bsonio.open_decompressed(entry.metadata_path) as handle:
            assert handle.read().decode("utf-8") == raw
        assert entry.type == coll_type
    assert read_docs(scan.oplog_path) == oplog
    assert scan.prelude == {"ServerVersion": "5.0.0-rc0", "ToolVersion": "100.3.1"}


def test_prelude_bytes_match_fixture(tmp_path):
    writer = dump_writer.DirectoryWriter(str(tmp_path))
    path = writer.write_prelude("7.0.16", "")
    expected = open(td("prelude_test", "prelude_top_level", "prelude.json"), "rb").read()
    assert open(path, "rb").read() == expected
    assert writer.write_prelude("7.0.16", "", db="test").endswith(os.path.join("test", "prelude.json"))


def test_writer_uses_plain_names_for_viewless_timeseries(tmp_path):
    writer = dump_writer.DirectoryWriter(str(tmp_path), server_version="8.3.0")
    assert writer.collection_path("db", "ts", "timeseries") == os.path.join(str(tmp_path), "db", "ts.bson")
    writer = dump_writer.DirectoryWriter(str(tmp_path), server_version="8.0.4")
    assert writer.collection_path("db", "ts", "timeseries").endswith("system.buckets.ts.bson")
    long_path = writer.collection_path("db", LONG_NAME)
    assert os.path.basename(long_path) == dump_names.collection_file_stem(LONG_NAME) + ".bson"
    with pytest.raises(FormatError):
        writer.open_collection("bad/db", "c")


def test_writer_metadata_bytes_are_mongodump_bytes(tmp_path):
    source = td("collMod_ttl_index", "mongodump_test_db", "coll1.metadata.json")
    meta = dump_metadata.read_metadata_file(source)
    writer = dump_writer.DirectoryWriter(str(tmp_path))
    path = writer.write_metadata("mongodump_test_db", "coll1", dump_metadata.metadata_to_json(
        meta["options"], meta["indexes"], meta["uuid"], meta["collectionName"], meta["type"]))
    assert open(path, "rb").read() == open(source, "rb").read()
    assert json.loads(open(path).read())["indexes"][1]["expireAfterSeconds"] == {"$numberInt": "1000"}
    assert isinstance(meta["indexes"][1]["expireAfterSeconds"], int)
