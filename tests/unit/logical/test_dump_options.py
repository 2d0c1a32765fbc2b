"""Option parsing and selection rules of the dump engine (no server)."""

import bson
import pytest

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump as dump_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_options
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_outputs
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_plan
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import window
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import mongotools as mongodump_tool
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import InvalidOption


def test_query_accepts_extended_json_text_and_mappings():
    parsed = dump_options.parse_query('{"at": {"$date": "2024-01-01T00:00:00Z"}, "n": {"$numberLong": "5"}}', None)
    assert parsed["at"].year == 2024 and isinstance(parsed["n"], bson.Int64)
    from_yaml = dump_options.parse_query({"_id": {"$oid": "605c74db479d533a6e39d860"}}, None)
    assert from_yaml["_id"] == bson.ObjectId("605c74db479d533a6e39d860")


def test_query_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "q.json"
    bad.write_text("[1, 2]")
    with pytest.raises(InvalidOption, match="query_file .*q.json must be a JSON object"):
        dump_options.parse_query(None, str(bad))
    with pytest.raises(InvalidOption, match="cannot read query_file"):
        dump_options.parse_query(None, str(tmp_path / "missing.json"))


@pytest.mark.parametrize("kwargs, message", [
    (dict(), "exactly one of path"),
    (dict(path="/x", archive="/y"), "exactly one of path"),
    (dict(path="/x", collection="c"), "needs db"),
    (dict(path="/x", db="d", query="{}"), "query applies to one collection"),
    (dict(path="/x", dump_users_and_roles=True), "single-database dump"),
    (dict(path="/x", compression="gzip", compression_level=11), "compression_level 11 is not a gzip level"),
    (dict(path="/x", num_parallel_collections=0), "num_parallel_collections"),
    (dict(path="/x", label="bad label/../x"), "label"),
])
def test_option_combinations_rejected(kwargs, message):
    with pytest.raises(InvalidOption, match=message):
        dump_options.DumpOptions(**kwargs)


@pytest.mark.parametrize("db, name, requested, skipped", [
    ("local", "oplog.rs", None, True),
    ("local", "startup_log", "local", False),
    ("admin", "system.users", None, False),
    ("admin", "system.keys", None, True),
    ("config", "chunks", None, False),
    ("config", "system.sessions", None, True),
    ("config", "transactions", "config", False),
    ("shop", "system.profile", None, True),
    ("shop", "system.js", None, False),
    ("shop", "system.buckets.weather", None, True),
    ("__mdb_internal_x", "c", None, True),
    ("shop", "odd$name", None, True),
])
def test_system_namespaces_follow_mongodump(db, name, requested, skipped):
    assert dump_plan.skip_system_namespace(db, name, requested) is skipped


def test_count_documents_reads_length_prefixes_only():
    docs = [{"a": i, "s": "x" * i} for i in range(10)]
    raw = b"".join(bson.encode(d) for d in docs)
    assert dump_outputs.count_documents(raw) == 10
    assert dump_outputs.count_documents(b"") == 0


@pytest.mark.parametrize("entry, fragment", [
    ({"op": "u", "ns": "admin.system.version", "ts": bson.Timestamp(5, 1)}, "admin.system.version"),
    ({"op": "c", "ns": "shop.$cmd", "o": {"renameCollection": "shop.a", "to": "shop.b"},
      "ts": bson.Timestamp(5, 2)}, "renameCollection command at 5:2"),
])
def test_oplog_entries_that_break_a_point_in_time_dump(entry, fragment):
    with pytest.raises(dump_engine.DumpFailed, match=fragment):
        window.check_oplog_entry(entry)


def test_ordinary_oplog_entries_pass():
    window.check_oplog_entry({"op": "i", "ns": "shop.orders", "o": {"_id": 1}, "ts": bson.Timestamp(1, 1)})
    window.check_oplog_entry({"op": "c", "ns": "shop.$cmd", "o": {"create": "x"}, "ts": bson.Timestamp(1, 2)})


# --------------------------------------------------------------------------- secrets

def test_redact_removes_uri_credentials_and_known_secrets():
    text = "failed for mongodb://admin:Pa55word@db1:27017/?x=1 using Pa55word"
    redacted = client_utils.redact(text, ["Pa55word"])
    assert "Pa55word" not in redacted and "mongodb://********@db1:27017" in redacted


def test_client_kwargs_carry_credentials_outside_the_uri():
    options = client_utils.ConnectionOptions(login_host="db1", login_user="backup", login_password="pw",
                                             tls=True, tls_ca_file="/ca.pem", read_preference="secondary")
    kwargs = options.client_kwargs()
    assert kwargs["username"] == "backup" and kwargs["password"] == "pw"
    assert kwargs["authSource"] == "admin" and kwargs["tlsCAFile"] == "/ca.pem"
    assert kwargs["readPreference"] == "secondary"
    assert options.describe_target() == "db1:27017"


def test_mongodump_password_goes_to_the_config_file_never_argv():
    connection = client_utils.ConnectionOptions(login_host="db1", login_port=27018, login_user="backup",
                                                login_password='p"w\\secret', replica_set="rs0")
    options = dump_options.DumpOptions(path="/backups/x", oplog=True, gzip=True)
    argv = mongodump_tool.build_argv("/usr/bin/mongodump", connection, options, "/backups/x.partial",
                                     "/tmp/cfg.yaml")
    assert not any("secret" in arg for arg in argv)
    assert "--config=/tmp/cfg.yaml" in argv and "--host=rs0/db1" in argv and "--port=27018" in argv
    assert "--oplog" in argv and "--gzip" in argv and "--out=/backups/x.partial" in argv
    assert "--username=backup" in argv and "--authenticationDatabase=admin" in argv
    config = mongodump_tool.config_text(connection)
    import yaml
    assert yaml.safe_load(config) == {"password": 'p"w\\secret'}


def test_mongodump_uri_with_credentials_stays_out_of_argv():
    connection = client_utils.ConnectionOptions(uri="mongodb://u:topsecret@db1/?replicaSet=rs0")
    options = dump_options.DumpOptions(archive="/b/a.archive", db="shop")
    argv = mongodump_tool.build_argv("mongodump", connection, options, "/b/a.archive.partial", "/tmp/c")
    assert not any("topsecret" in arg for arg in argv)
    assert "--archive=/b/a.archive.partial" in argv and "--db=shop" in argv


def test_mongodump_engine_missing_binary_is_a_clear_error(tmp_path):
    with pytest.raises(dump_engine.DumpFailed, match="install the MongoDB Database Tools"):
        mongodump_tool.find_binary(str(tmp_path / "no-mongodump"))


@pytest.mark.parametrize("size, count, expected", [
    (0, 0, None),                         # unknown: the server's default batches
    (60000 * 100, 100, 69),               # 60 KB documents: about 4 MB per batch
    (100 * 10 ** 6, 10 ** 6, 41943),      # 100-byte documents
    (10 ** 9, 10 ** 9, 100000),           # tiny documents: capped
    (40 * 1024 * 1024, 2, 1),             # documents over 4 MB: one at a time
])
def test_batch_size_keeps_batches_near_4_mb(size, count, expected):
    plan = dump_plan.NamespacePlan("db", "c", "collection", {}, [], None, "db", "c",
                                   estimated_bytes=size, estimated_count=count)
    assert plan.batch_size == expected
