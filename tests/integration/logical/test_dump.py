"""The native dump engine against the real test server."""

import gzip
import hashlib
import json
import os
import stat
import subprocess
import sys
import threading
import time

import bson
import pytest
from bson import json_util

from support import REPO
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump as dump_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_options
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.archive import ArchiveReader
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import (
    BackupError,
    ConnectionFailure,
    DumpFailed,
    InvalidOption,
    NamespaceNotFound,
    OplogOverflow,
)


# --------------------------------------------------------------------------- helpers

@pytest.fixture
def dataset(client):
    """Two databases with nested documents, arrays, binary, dates and an extra index."""
    import datetime
    for name in ("dumptest_a", "dumptest_b"):
        client.drop_database(name)
    a = client.dumptest_a
    a.people.insert_many([{"_id": i, "name": "person %d" % i, "tags": ["x", "y", i],
                           "address": {"city": "c%d" % (i % 7), "zip": "%05d" % i},
                           "born": datetime.datetime(1960, 1, 1) + datetime.timedelta(days=i),
                           "photo": bson.Binary(bytes([i % 256]) * 40)} for i in range(1500)])
    a.people.create_index([("name", 1)], unique=True, name="name_unique")
    a.events.insert_many([{"kind": "k%d" % (i % 3), "n": i} for i in range(700)])
    client.dumptest_b.empty.insert_one({"_id": 1})
    client.dumptest_b.empty.delete_one({"_id": 1})
    client.dumptest_b.things.insert_many([{"_id": "t%d" % i, "v": i} for i in range(50)])
    yield client
    for name in ("dumptest_a", "dumptest_b"):
        client.drop_database(name)


def run_dump(client, tmp_path=None, check_mode=False, **options):
    facts = client_utils.server_facts(client)
    return dump_engine.dump(client, dump_options.DumpOptions(**options), facts, check_mode=check_mode)


def documents_in(path):
    data = open(path, "rb").read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return bson.decode_all(data)


def server_documents(client, db, name):
    return list(client[db][name].find().sort("_id", 1))


def assert_nothing_left(tmp_path, name):
    leftovers = [p for p in os.listdir(tmp_path) if p.startswith(name)]
    assert leftovers == [], "a failed dump left %s behind" % leftovers


# --------------------------------------------------------------------------- directory output

def test_full_dump_directory_holds_every_document_with_metadata_and_manifest(dataset, tmp_path):
    target = tmp_path / "full"
    changed, result = run_dump(dataset, path=str(target), label="full-1")
    assert changed
    by_ns = {ns["namespace"]: ns for ns in result["namespaces"]}
    assert by_ns["dumptest_a.people"]["documents"] == 1500
    assert by_ns["dumptest_a.events"]["documents"] == 700
    assert by_ns["dumptest_b.empty"]["documents"] == 0
    # documents on disk equal the server's, field by field
    dumped = sorted(documents_in(target / "dumptest_a" / "people.bson"), key=lambda d: d["_id"])
    assert dumped == server_documents(dataset, "dumptest_a", "people")
    assert (target / "dumptest_b" / "empty.bson").stat().st_size == 0
    metadata = json_util.loads((target / "dumptest_a" / "people.metadata.json").read_text())
    assert [ix["name"] for ix in metadata["indexes"]] == ["_id_", "name_unique"]
    assert metadata["indexes"][1]["unique"] is True
    assert metadata["collectionName"] == "people"
    # internal databases stay out, as with mongodump
    assert not (target / "local").exists()
    # manifest: written last, checksums match the files
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["label"] == "full-1" and manifest["backup_id"] == result["backup_id"]
    for record in manifest["files"]:
        data = (target / record["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == record["sha256"], record["path"]
        assert len(data) == record["bytes"]
    assert manifest["totals"]["documents"] == result["total_documents"]


def test_backup_files_are_private(dataset, tmp_path):
    target = tmp_path / "private"
    run_dump(dataset, path=str(target), db="dumptest_a", gzip=True)
    for root, dirs, files in os.walk(target):
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o700, root
        for name in files:
            assert stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode) == 0o600, name


def test_gzip_directory_files_are_separate_gzip_streams(dataset, tmp_path):
    target = tmp_path / "gz"
    run_dump(dataset, path=str(target), db="dumptest_a", compression="gzip", compression_level=1)
    bson_file = target / "dumptest_a" / "people.bson.gz"
    assert bson_file.read_bytes()[:2] == b"\x1f\x8b"
    assert len(documents_in(bson_file)) == 1500
    metadata = json_util.loads(gzip.decompress((target / "dumptest_a" / "people.metadata.json.gz").read_bytes()))
    assert metadata["collectionName"] == "people"


def test_query_dumps_only_matching_documents(dataset, tmp_path):
    target = tmp_path / "query"
    dummy, result = run_dump(dataset, path=str(target), db="dumptest_a", collection="events",
                             query='{"kind": "k1", "n": {"$gte": 300}}')
    expected = list(dataset.dumptest_a.events.find({"kind": "k1", "n": {"$gte": 300}}))
    assert [ns["namespace"] for ns in result["namespaces"]] == ["dumptest_a.events"]
    assert sorted(d["n"] for d in documents_in(target / "dumptest_a" / "events.bson")) == \
        sorted(d["n"] for d in expected)
    assert result["total_documents"] == len(expected) > 0


def test_namespace_patterns_include_and_exclude(dataset, tmp_path):
    target = tmp_path / "patterns"
    dummy, result = run_dump(dataset, path=str(target), ns_include=["dumptest_*.*"],
                             ns_exclude=["dumptest_a.ev*", "*.empty"])
    assert sorted(ns["namespace"] for ns in result["namespaces"]) == ["dumptest_a.people", "dumptest_b.things"]


# --------------------------------------------------------------------------- archive output

@pytest.mark.parametrize("use_gzip", [False, True])
def test_archive_holds_every_namespace_with_valid_crcs(dataset, tmp_path, use_gzip):
    target = tmp_path / ("full.archive.gz" if use_gzip else "full.archive")
    dummy, result = run_dump(dataset, archive=str(target), ns_include=["dumptest_*.*"], gzip=use_gzip,
                             num_parallel_collections=3)
    raw = target.read_bytes()
    assert raw[:2] == b"\x1f\x8b" if use_gzip else raw[:4] == bytes.fromhex("6de29981")
    with open(target, "rb") as handle:
        stream = gzip.GzipFile(fileobj=handle) if use_gzip else handle
        reader = ArchiveReader(stream, str(target))
        documents = {}
        for db, coll, doc in reader.iter_documents():  # verifies every CRC and the structure
            documents.setdefault("%s.%s" % (db, coll), []).append(bson.decode(doc))
    assert sorted(d["_id"] for d in documents["dumptest_a.people"]) == list(range(1500))
    assert "dumptest_b.empty" not in documents
    prelude = {"%s.%s" % (e["db"], e["collection"]) for e in reader.prelude}
    assert prelude == {"dumptest_a.people", "dumptest_a.events", "dumptest_b.empty", "dumptest_b.things"}
    manifest = json.loads((tmp_path / (target.name + ".manifest.json")).read_text())
    assert manifest["files"][0]["sha256"] == hashlib.sha256(raw).hexdigest()
    assert result["total_documents"] == 1500 + 700 + 50


# --------------------------------------------------------------------------- oplog

def test_oplog_dump_captures_writes_made_during_the_dump(dataset, tmp_path):
    """Writes during the dump land in oplog.bson, inside the recorded [start, end] window."""
    target = tmp_path / "pit"
    stop = threading.Event()
    writer_client = dataset

    def workload():
        n = 0
        while not stop.is_set():
            writer_client.dumptest_b.things.insert_one({"_id": "live%d" % n, "v": n})
            n += 1
            time.sleep(0.005)

    worker = threading.Thread(target=workload)
    worker.start()
    try:
        time.sleep(0.2)
        dummy, result = run_dump(dataset, path=str(target), oplog=True, ns_include=["dumptest_*.*"])
    finally:
        stop.set()
        worker.join()
    window = result["oplog"]
    entries = documents_in(target / "oplog.bson")
    assert window["entries"] == len(entries) >= 1
    start = bson.Timestamp(window["start"]["t"], window["start"]["i"])
    end = bson.Timestamp(window["end"]["t"], window["end"]["i"])
    assert start <= end
    assert entries[0]["ts"] == start and entries[-1]["ts"] == end
    assert all(start <= e["ts"] <= end for e in entries)
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["oplog"]["end"]["ts"] == window["end"]["ts"]


def test_oplog_overflow_fails_and_leaves_no_backup(private_server, tmp_path):
    """If the oldest oplog entry passes the dump's start, the dump must fail (mongodump --oplog).
    On a server of its own: the shared server's oplog grows too large to trim in one delete."""
    client = private_server.client()
    client.dumptest_b.things.insert_many([{"_id": "t%d" % i, "v": i} for i in range(50)])
    oplog = client.local["oplog.rs"]
    rolled = []

    def roll_over_during_the_data_phase(event, **_details):
        # A capped oplog that rolled over while the data was read: every entry up to the dump's
        # start is gone, and the oldest one left is newer than that start.
        if event == "batch" and not rolled:
            rolled.append(True)
            newest = oplog.find_one({}, sort=[("$natural", -1)])["ts"]
            oplog.delete_many({"ts": {"$lte": newest}})
            client.dumptest_b.things.insert_one({"_id": "after-start"})

    facts = client_utils.server_facts(client)
    options = dump_options.DumpOptions(path=str(tmp_path / "overflow"), oplog=True, ns_include=["dumptest_*.*"])
    try:
        with pytest.raises(OplogOverflow) as failure:
            dump_engine.dump(client, options, facts, progress=roll_over_during_the_data_phase)
    finally:
        client.close()
    assert rolled, "the dump read no batch"
    assert "oplog overflow" in failure.value.message
    assert "run the dump again" in failure.value.message
    assert_nothing_left(tmp_path, "overflow")


def test_oplog_needs_a_full_dump(tmp_path):
    with pytest.raises(InvalidOption, match="whole deployment"):
        dump_options.DumpOptions(path=str(tmp_path / "x"), db="shop", oplog=True)


# --------------------------------------------------------------------------- idempotence

def test_same_label_is_idempotent_and_force_replaces(dataset, tmp_path):
    target = str(tmp_path / "nightly")
    changed, first = run_dump(dataset, path=target, db="dumptest_b", label="nightly-1")
    assert changed
    changed, again = run_dump(dataset, path=target, db="dumptest_b", label="nightly-1")
    assert not changed and again["backup_id"] == first["backup_id"]
    with pytest.raises(DumpFailed, match="already holds backup"):
        run_dump(dataset, path=target, db="dumptest_b", label="nightly-2")
    changed, forced = run_dump(dataset, path=target, db="dumptest_b", label="nightly-2", force=True)
    assert changed and forced["backup_id"] != first["backup_id"]
    assert json.loads(open(os.path.join(target, "manifest.json")).read())["label"] == "nightly-2"
    assert sorted(os.listdir(tmp_path)) == ["nightly"]


def test_check_mode_plans_and_writes_nothing(dataset, tmp_path):
    target = tmp_path / "planned"
    changed, plan = run_dump(dataset, path=str(target), ns_include=["dumptest_a.*"], check_mode=True)
    assert changed
    assert sorted(ns["namespace"] for ns in plan["namespaces"]) == ["dumptest_a.events", "dumptest_a.people"]
    assert all("estimated_bytes" in ns for ns in plan["namespaces"])
    assert plan["estimated_documents"] == 2200
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- bad input

def test_unknown_database_fails_unless_allow_empty(dataset, tmp_path):
    with pytest.raises(NamespaceNotFound) as failure:
        run_dump(dataset, path=str(tmp_path / "nodb"), db="no_such_db")
    assert "database 'no_such_db' does not exist" in failure.value.message
    assert "allow_empty" in failure.value.message
    assert_nothing_left(tmp_path, "nodb")
    changed, result = run_dump(dataset, path=str(tmp_path / "nodb"), db="no_such_db", allow_empty=True)
    assert changed and result["total_documents"] == 0
    assert (tmp_path / "nodb" / "manifest.json").exists()


def test_unknown_collection_fails(dataset, tmp_path):
    with pytest.raises(NamespaceNotFound, match="collection dumptest_a.nope does not exist"):
        run_dump(dataset, path=str(tmp_path / "nocoll"), db="dumptest_a", collection="nope")
    assert_nothing_left(tmp_path, "nocoll")


def test_invalid_query_json_is_rejected(tmp_path):
    with pytest.raises(InvalidOption) as failure:
        dump_options.DumpOptions(path=str(tmp_path / "q"), db="a", collection="b", query="{kind: 'x'")
    assert "not valid Extended JSON" in failure.value.message


def test_invalid_namespace_pattern_is_rejected(tmp_path):
    with pytest.raises(InvalidOption, match="ns_include pattern 'nodot' is invalid"):
        dump_options.DumpOptions(path=str(tmp_path / "p"), ns_include=["nodot"])


def test_missing_backup_location_fails_before_reading(dataset, tmp_path):
    with pytest.raises(DumpFailed, match="does not exist or is not a directory; create it"):
        run_dump(dataset, path=str(tmp_path / "not-mounted" / "backup"), db="dumptest_b")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(DumpFailed, match="does not exist or is not a directory"):
        run_dump(dataset, path=str(blocker / "backup"), db="dumptest_b")


def test_unwritable_backup_location_fails_with_the_cause(dataset):
    """/proc refuses new directories even to root: the same path an unwritable mount takes."""
    with pytest.raises(BackupError) as failure:
        run_dump(dataset, path="/proc/dbops-backup-test", db="dumptest_b")
    message = failure.value.message
    # The run's lock file beside the target is the first thing written (issue 8, defect 4).
    assert message.startswith("cannot create the lock file /proc/dbops-backup-test.lock")
    assert "writable" in message
    assert not os.path.exists("/proc/dbops-backup-test")


def test_disk_full_fails_cleanly(server, dataset, tmp_path):
    """A file-size limit (as a full disk) stops the dump; nothing that looks complete remains."""
    script = r'''
import json, os, resource, signal, sys
sys.path.insert(0, os.path.join(sys.argv[1], "tools"))
import collection_link; collection_link.expose()
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as cu
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump as d
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_options
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import BackupError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
client = cu.connect(cu.ConnectionOptions(uri=os.environ["MONGODB_URI"]))
try:
    d.dump(client, dump_options.DumpOptions(path=sys.argv[2], db="dumptest_a"), cu.server_facts(client))
    print(json.dumps({"ok": True}))
except BackupError as exc:
    print(json.dumps({"ok": False, "msg": exc.message}))
'''
    target = tmp_path / "full-disk"
    env = dict(os.environ, MONGODB_URI=server.uri)
    repo = REPO
    out = subprocess.run([sys.executable, "-c", script, repo, str(target)], env=env,
                         stdout=subprocess.PIPE, check=True).stdout.decode()
    outcome = json.loads(out.strip().splitlines()[-1])
    assert outcome["ok"] is False
    assert "File too large" in outcome["msg"] and "incomplete backup was removed" in outcome["msg"]
    assert_nothing_left(tmp_path, "full-disk")


def test_server_killed_mid_dump_fails_and_leaves_nothing(private_server, tmp_path):
    client = private_server.client()
    client.big.docs.insert_many([{"_id": i, "pad": "x" * 2000} for i in range(3000)])
    facts = client_utils.server_facts(client)
    killed = []

    def kill_after_first_batch(event, **details):
        if event == "batch" and not killed:
            private_server.kill()
            killed.append(details)

    options = dump_options.DumpOptions(path=str(tmp_path / "killed"), db="big")
    with pytest.raises(DumpFailed) as failure:
        dump_engine.dump(client, options, facts, progress=kill_after_first_batch)
    assert killed, "the dump finished before the server could be killed"
    assert "big.docs" in failure.value.message and "run the dump again" in failure.value.message
    assert_nothing_left(tmp_path, "killed")


# --------------------------------------------------------------------------- connection errors

def test_wrong_password_names_user_and_host_but_not_the_password(server):
    options = client_utils.ConnectionOptions(login_host=server.host, login_port=server.port,
                                             login_user=server.username, login_password="Wr0ngSecret!",
                                             direct_connection=True, connect_timeout=5)
    with pytest.raises(ConnectionFailure) as failure:
        client_utils.connect(options)
    message = failure.value.message
    assert "authentication as user %r" % server.username in message
    assert server.address in message
    assert "Wr0ngSecret!" not in message


def test_unreachable_host_is_reported_with_its_address():
    import testserver
    port = testserver.free_port()  # nothing listens there
    options = client_utils.ConnectionOptions(login_host="127.0.0.1", login_port=port, connect_timeout=1)
    with pytest.raises(ConnectionFailure) as failure:
        client_utils.connect(options)
    assert "cannot reach MongoDB at 127.0.0.1:%d" % port in failure.value.message


def test_malformed_uri_is_reported_without_the_password():
    options = client_utils.ConnectionOptions(uri="mongodb://admin:S3cret@host:notaport/")
    with pytest.raises(ConnectionFailure) as failure:
        client_utils.connect(options)
    assert "malformed connection settings" in failure.value.message
    assert "S3cret" not in failure.value.message


def test_tls_to_a_plain_server_is_reported_as_tls_failure(server):
    options = client_utils.ConnectionOptions(login_host=server.host, login_port=server.port,
                                             tls=True, tls_allow_invalid_certificates=True,
                                             direct_connection=True, connect_timeout=2)
    with pytest.raises(ConnectionFailure, match="TLS connection to %s failed" % server.address):
        client_utils.connect(options)


def test_server_facts_describe_the_test_server(client):
    facts = client_utils.server_facts(client)
    assert facts["topology"] == "replicaset" and facts["member_state"] == "PRIMARY"
    assert facts["version"] and facts["replica_set"] == "rs0"
