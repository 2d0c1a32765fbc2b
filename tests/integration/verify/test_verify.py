"""mongodb_backup_verify through ansible-playbook: test restores into a scratch server (a second real test server),
what they catch, what they record in the catalog, and that the scratch server is left as it was found."""

import gzip
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import bson
import pytest

import support
from support import TOOLS_BIN, run_module_task

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog.store import Catalog
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import timestamps
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import manifest as manifest_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump as dump_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_options
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import archiver

VERIFY = "dbops.mongodb_backup.mongodb_backup_verify"
INFO = "dbops.mongodb_backup.mongodb_backup_info"
DATABASES = ("vshop", "vcrm", "vnew")


@pytest.fixture
def shop(client):
    """Source data: two databases, secondary indexes (one unique), a capped collection."""
    for name in DATABASES:
        client.drop_database(name)
    client.vshop.orders.insert_many([{"_id": i, "total": i * 3, "lines": [{"sku": "s%d" % (i % 17), "qty": i % 5}]}
                                     for i in range(1000)])
    client.vshop.orders.create_index([("total", -1), ("_id", 1)], name="total_id")
    client.vshop.create_collection("log", capped=True, size=65536)
    client.vshop.log.insert_many([{"_id": i, "msg": "m%d" % i} for i in range(20)])
    client.vcrm.users.insert_many([{"_id": "u%d" % i, "name": "user %d" % i} for i in range(50)])
    client.vcrm.users.create_index("name", unique=True)
    yield client
    for name in DATABASES:
        client.drop_database(name)


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "root"
    path.mkdir()
    return path


def take_backup(client, root, label, **options):
    target = dict(path=str(root / label))
    target.update(options)
    path = target["path"] or target["archive"]
    dump_engine.dump(client, dump_options.DumpOptions(oplog=True, label=label, ns_include=["vshop.*", "vcrm.*"],
                                                      **target),
                     client_utils.server_facts(client))
    with Catalog.locked(str(root)) as catalog:
        catalog.add_backup_from_manifest(path)
        catalog.save()
    return path


def verify(tmp_path, scratch, check=False, **options):
    return run_module_task(tmp_path, VERIFY, check=check, server=scratch, **options)


def catalog_entry(root, label):
    return next(b for b in json.loads((root / "catalog.json").read_text())["backups"] if b["label"] == label)


def user_databases(client):
    return sorted(d for d in client.list_database_names() if d not in ("admin", "local", "config"))


def assert_scratch_clean(scratch_client):
    assert user_databases(scratch_client) == []
    assert "dbops_backup_verify" not in scratch_client.admin.list_collection_names()


def split_documents(raw):
    documents, position = [], 0
    while position < len(raw):
        size = int.from_bytes(raw[position:position + 4], "little")
        documents.append(raw[position:position + size])
        position += size
    return documents


def rewrite_bson(backup, relative, change, fix_counts):
    """Change the documents of a .bson of ``backup`` and make its manifest match the new file (sha256 and size;
    with ``fix_counts`` the document counts too), as someone covering their tracks would."""
    path = os.path.join(backup, relative)
    compressed = relative.endswith(".gz")
    with open(path, "rb") as handle:
        raw = handle.read()
    documents = split_documents(gzip.decompress(raw) if compressed else raw)
    changed = change(documents)
    data = gzip.compress(b"".join(changed)) if compressed else b"".join(changed)
    with open(path, "wb") as handle:
        handle.write(data)
    manifest_path = os.path.join(backup, manifest_utils.MANIFEST_NAME)
    document = json.loads(open(manifest_path).read())
    for record in document["files"]:
        if record["path"] == relative:
            record.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    if fix_counts:
        namespace = relative.split(".bson")[0].replace("/", ".")
        for record in document["namespaces"]:
            if record["namespace"] == namespace:
                record["documents"] = len(changed)
    manifest_utils.write_json_atomic(manifest_path, document)


# --------------------------------------------------------------------------- a good backup, recorded and shown

def test_good_backup_is_verified_recorded_and_shown_by_info(shop, root, tmp_path, scratch, scratch_client):
    take_backup(shop, root, "full-1")
    before = json.loads((root / "full-1" / "manifest.json").read_text())
    assert all(ns["content_hash"]["algorithm"] == "blake2b-128-sum" for ns in before["namespaces"])

    result = verify(tmp_path, scratch, backup_root=str(root), label="full-1")
    assert not result.get("failed"), result
    assert result["changed"] is True and result["recorded"] is True and result["failures"] == []
    assert result["collections"]["vshop.orders"] == {"documents": {"backup": 1000, "restored": 1000},
                                                     "content_hash": "match", "options": "match", "indexes": "match"}
    assert result["collections"]["vshop.log"]["options"] == "match"  # capped, size
    assert sorted(result["collections"]) == ["vcrm.users", "vshop.log", "vshop.orders"]
    assert result["restore_seconds"] > 0 and result["mb_per_s"] > 0
    assert any("content hash" in check for check in result["checks"])
    assert result["msg"].startswith("verified full-1: 3 collections, 1070 documents restored in ")
    assert result["dropped_after"] == ["vcrm", "vshop"]
    assert_scratch_clean(scratch_client)

    recorded = catalog_entry(root, "full-1")["verified"]
    assert recorded == result["verified"]
    assert recorded["ok"] is True and recorded["collections"] == 3 and recorded["failures"] == []
    assert recorded["restore_seconds"] == result["restore_seconds"]
    assert abs(timestamps.parse_iso_time(recorded["at"]) - timestamps.parse_iso_time(timestamps.now_iso())) < 120

    info = run_module_task(tmp_path, INFO, backup_root=str(root), verify_max_age="1h")
    assert not info.get("failed"), info
    assert info["last_verified"]["label"] == "full-1"
    assert info["last_verified"]["restore_seconds"] == recorded["restore_seconds"]
    assert info["last_verified"]["verified_at"] == recorded["at"] and info["last_backup"]["verified"] is True
    assert shop.vshop.orders.count_documents({}) == 1000  # the source is untouched


def test_gzipped_archive_backup_is_verified(shop, root, tmp_path, scratch, scratch_client):
    take_backup(shop, root, "full-1.archive", archive=str(root / "full-1.archive"), path=None, compression="gzip")
    result = verify(tmp_path, scratch, backup_root=str(root), label="full-1.archive")
    assert not result.get("failed"), result
    assert [entry["content_hash"] for entry in result["collections"].values()] == ["match"] * 3
    assert catalog_entry(root, "full-1.archive")["verified"]["ok"] is True
    assert_scratch_clean(scratch_client)


def test_newest_backup_of_the_catalog_is_the_default(shop, root, tmp_path, scratch, scratch_client):
    take_backup(shop, root, "full-1")
    shop.vshop.orders.insert_one({"_id": "late"})
    take_backup(shop, root, "full-2")
    result = verify(tmp_path, scratch, backup_root=str(root))
    assert not result.get("failed"), result
    assert result["backup"]["label"] == "full-2"
    assert result["collections"]["vshop.orders"]["documents"] == {"backup": 1001, "restored": 1001}
    assert catalog_entry(root, "full-1")["verified"] is None
    assert_scratch_clean(scratch_client)


# --------------------------------------------------------------------------- what a verification catches

@pytest.mark.parametrize("fix_counts, expected", [
    (True, "vshop.orders: content hash differs"),
    (False, "vshop.orders: 999 documents restored, the backup holds 1000; content hash differs"),
])
def test_a_removed_document_is_caught_and_recorded(shop, root, tmp_path, scratch, scratch_client, fix_counts, expected):
    backup = take_backup(shop, root, "full-1")
    rewrite_bson(backup, "vshop/orders.bson", lambda docs: docs[:500] + docs[501:], fix_counts)

    result = verify(tmp_path, scratch, backup_root=str(root), label="full-1")
    assert result["failed"] is True
    assert result["msg"] == "verification of full-1 FAILED: %s" % expected
    assert result["failures"] == [expected]
    assert result["collections"]["vcrm.users"]["content_hash"] == "match"  # only the damaged one is named
    assert any(check.startswith("backup files: ") for check in result["checks"])  # the sha256 all matched
    recorded = catalog_entry(root, "full-1")["verified"]
    assert recorded["ok"] is False and recorded["failures"] == [expected]
    assert_scratch_clean(scratch_client)

    info = run_module_task(tmp_path, INFO, backup_root=str(root), verify_max_age="1d")
    assert info["failed"] is True and "has passed a test restore" in info["msg"]


def test_a_changed_document_is_caught_by_the_content_hash_alone(shop, root, tmp_path, scratch, scratch_client):
    backup = take_backup(shop, root, "full-1")

    def change(docs):
        docs[7] = bson.encode({"_id": 7, "total": 99999, "lines": []})
        return docs
    rewrite_bson(backup, "vshop/orders.bson", change, fix_counts=True)
    result = verify(tmp_path, scratch, backup_root=str(root), label="full-1")
    assert result["failed"] is True and result["failures"] == ["vshop.orders: content hash differs"]
    assert result["collections"]["vshop.orders"]["documents"] == {"backup": 1000, "restored": 1000}
    assert_scratch_clean(scratch_client)


def test_a_restore_that_fails_is_recorded_and_the_scratch_left_clean(shop, root, tmp_path, scratch, scratch_client):
    backup = take_backup(shop, root, "full-1")
    rewrite_bson(backup, "vcrm/users.bson", lambda docs: docs + docs[:1], fix_counts=True)  # a duplicate _id
    result = verify(tmp_path, scratch, backup_root=str(root), label="full-1")
    assert result["failed"] is True
    assert result["msg"].startswith("verification of full-1 FAILED: the test restore failed: 1 document(s) or "
                                    "oplog entries were not written: vcrm.users: 1 (first error: "), result["msg"]
    assert catalog_entry(root, "full-1")["verified"]["ok"] is False
    assert_scratch_clean(scratch_client)


def test_a_file_that_no_longer_matches_its_sha256_is_refused_before_the_scratch_is_touched(
        shop, root, tmp_path, scratch, scratch_client):
    backup = take_backup(shop, root, "full-1")
    with open(os.path.join(backup, "vshop", "orders.bson"), "r+b") as handle:
        handle.seek(100)
        handle.write(b"X")
    result = verify(tmp_path, scratch, check=True, backup_root=str(root), label="full-1")
    assert result["failed"] is True and "does not match its manifest" in result["msg"]
    assert catalog_entry(root, "full-1")["verified"] is None  # check mode records nothing
    result = verify(tmp_path, scratch, backup_root=str(root), label="full-1")
    assert result["failed"] is True and "does not match its manifest" in result["msg"] and "sha256" in result["msg"]
    recorded = catalog_entry(root, "full-1")["verified"]
    assert recorded["ok"] is False and recorded["failures"] == [result["msg"]] and recorded["collections"] == 0
    assert_scratch_clean(scratch_client)


# --------------------------------------------------------------------------- a point in time

def test_point_in_time_target_is_verified(shop, root, tmp_path, scratch, scratch_client):
    take_backup(shop, root, "base")
    facts = client_utils.server_facts(shop)
    for n in range(20):
        shop.vshop.orders.insert_one({"_id": 5000 + n, "total": n})
        shop.vshop.orders.update_one({"_id": n}, {"$set": {"total": -n}})
        shop.vshop.orders.delete_one({"_id": 900 + n})
        shop.vnew.notes.insert_one({"_id": n})  # a database the base does not have
    newest = shop.local["oplog.rs"].find_one({}, sort=[("$natural", -1)])["ts"]
    target = "%d:%d" % (newest.time, newest.inc + 1)
    for n in range(10):  # after the target: in the slice, not replayed
        shop.vshop.orders.insert_one({"_id": 9000 + n})
    archiver.archive_oplog(shop, archiver.ArchiveOptions(str(root)), facts)

    result = verify(tmp_path, scratch, backup_root=str(root), target_time=target)
    assert not result.get("failed"), result
    assert result["backup"]["label"] == "base" and result["target_time"] == timestamps.ts_time(target)
    replay = result["replay"]
    assert replay["slices"] and replay["oplog_limit"] == target and replay["stopped_at_limit"] is True
    assert replay["applied"] >= 80 and replay["not_applied"] == {}  # 4 writes in each of 20 rounds
    assert result["collections"]["vshop.orders"]["content_hash"] == "match"  # the base, before the replay
    assert any(check.startswith("oplog slices: ") for check in result["checks"])
    assert any("no reference to compare with" in check for check in result["checks"])
    assert sorted(result["dropped_after"]) == ["vcrm", "vnew", "vshop"]  # vnew: created by the replay
    assert_scratch_clean(scratch_client)
    recorded = catalog_entry(root, "base")["verified"]
    assert recorded["ok"] is True and recorded["target_time"] == timestamps.ts_time(target)


# --------------------------------------------------------------------------- the scratch server

def test_the_source_is_refused_as_scratch_by_its_address(shop, root, tmp_path, server):
    take_backup(shop, root, "full-1")
    result = verify(tmp_path, server, backup_root=str(root), label="full-1", drop_scratch=True)
    assert result["failed"] is True
    assert result["msg"].startswith("refused: the scratch server (%s) is the server the backup full-1 was taken from"
                                    % server.address)
    assert shop.vshop.orders.count_documents({}) == 1000 and shop.vcrm.users.count_documents({}) == 50
    assert "dbops_backup_verify" not in shop.admin.list_collection_names()
    assert catalog_entry(root, "full-1")["verified"] is None


def test_the_source_is_refused_by_its_collection_uuids_when_its_address_differs(shop, root, tmp_path, server):
    backup = take_backup(shop, root, "full-1")
    manifest_path = os.path.join(backup, manifest_utils.MANIFEST_NAME)
    document = json.loads(open(manifest_path).read())
    document["server"].update(address="db1.elsewhere.invalid:27017", hosts=["db1.elsewhere.invalid:27017"])
    document["member"] = "db1.elsewhere.invalid:27017"  # recorded by a name that does not resolve here
    manifest_utils.write_json_atomic(manifest_path, document)
    with Catalog.locked(str(root)) as catalog:
        catalog.backups[0]["member"] = document["member"]
        catalog.changed = True
        catalog.save()
    result = verify(tmp_path, server, path=backup, drop_scratch=True)
    assert result["failed"] is True
    assert "holds vcrm.users with the UUID of the backed-up collection vcrm.users" in result["msg"], result["msg"]
    assert shop.vshop.orders.count_documents({}) == 1000


def test_a_scratch_server_holding_data_is_refused_unless_drop_scratch(shop, root, tmp_path, scratch, scratch_client):
    take_backup(shop, root, "full-1")
    scratch_client.vjunk.things.insert_one({"_id": 1})
    try:
        result = verify(tmp_path, scratch, backup_root=str(root), label="full-1")
        assert result["failed"] is True
        assert "is not empty, it holds the database(s) vjunk (1 collection)" in result["msg"]
        assert user_databases(scratch_client) == ["vjunk"]
        assert "dbops_backup_verify" not in scratch_client.admin.list_collection_names()

        planned = verify(tmp_path, scratch, check=True, backup_root=str(root), label="full-1")
        assert "vjunk" in planned["refused"]

        result = verify(tmp_path, scratch, backup_root=str(root), label="full-1", drop_scratch=True)
        assert not result.get("failed"), result
        assert_scratch_clean(scratch_client)
    finally:
        scratch_client.drop_database("vjunk")


def test_check_mode_plans_and_writes_nothing(shop, root, tmp_path, scratch, scratch_client):
    take_backup(shop, root, "full-1")
    catalog_before = (root / "catalog.json").read_text()
    result = verify(tmp_path, scratch, check=True, backup_root=str(root), label="full-1")
    assert not result.get("failed"), result
    assert result["changed"] is False and result["recorded"] is False and result["refused"] is None
    assert result["msg"].startswith("check mode, nothing written: would restore full-1 (3 namespaces) into the "
                                    "scratch server %s" % scratch.address)
    assert sorted(n["namespace"] for n in result["restore"]) == ["vcrm.users", "vshop.log", "vshop.orders"]
    assert result["compare"] == ["document count per collection", "content hash per collection",
                                 "collection options", "index definitions"]
    assert (root / "catalog.json").read_text() == catalog_before
    assert_scratch_clean(scratch_client)


def test_a_second_verification_is_refused_and_a_dead_ones_lock_taken_over(
        shop, root, tmp_path, scratch, scratch_client):
    take_backup(shop, root, "full-1")
    locks = scratch_client.admin.dbops_backup_verify
    locks.insert_one({"_id": "scratch", "host": socket.gethostname(), "pid": os.getpid(), "since": "now",
                      "backup": "other", "databases": ["vother"], "namespaces": []})
    try:
        result = verify(tmp_path, scratch, backup_root=str(root), label="full-1")
        assert result["failed"] is True
        assert result["msg"].startswith("the scratch server is in use by another verification (of other, by pid %d "
                                        "on %s since now)" % (os.getpid(), socket.gethostname()))
        assert locks.find_one({"_id": "scratch"})["pid"] == os.getpid()  # not ours to remove
    finally:
        locks.delete_many({})

    dead = subprocess.Popen(["true"])
    dead.wait()
    scratch_client.vstale.restored.insert_one({"_id": 1})  # what the killed run had restored
    locks.insert_one({"_id": "scratch", "host": socket.gethostname(), "pid": dead.pid, "since": "before",
                      "backup": "killed", "databases": ["vstale"], "namespaces": []})
    result = verify(tmp_path, scratch, backup_root=str(root), label="full-1")
    assert not result.get("failed"), result
    assert result["taken_over"] == {"pid": dead.pid, "since": "before", "backup": "killed", "dropped": ["vstale"]}
    assert_scratch_clean(scratch_client)


# --------------------------------------------------------------------------- mongodump backups and bad input

def test_mongodump_backup_compares_counts_indexes_and_options_without_a_hash(
        shop, root, tmp_path, server, scratch, scratch_client, mongo_tools):
    dumped = run_module_task(tmp_path, "dbops.mongodb_backup.mongodb_dump", server=server,
                             path=str(root / "tool-1"), label="tool-1", db="vshop", engine="mongodump",
                             mongodump_path=os.path.join(TOOLS_BIN, "mongodump"))
    assert not dumped.get("failed"), dumped
    with Catalog.locked(str(root)) as catalog:
        catalog.add_backup_from_manifest(str(root / "tool-1"))
        catalog.save()
    result = verify(tmp_path, scratch, backup_root=str(root), label="tool-1")
    assert not result.get("failed"), result
    assert result["backup"]["engine"] == "mongodump"
    assert result["collections"]["vshop.orders"] == {"documents": {"backup": 1000, "restored": 1000},
                                                     "content_hash": "not available", "options": "match",
                                                     "indexes": "match"}
    assert any("the content hash was not available for 2 of 2 collections" in check for check in result["checks"])
    assert_scratch_clean(scratch_client)


@pytest.mark.parametrize("options, message", [
    (dict(label="nope"), "no backup with label 'nope' in the catalog"),
    (dict(label="full-1", target_time="1700000000:1"), "parameters are mutually exclusive: label|path|target_time"),
    (dict(path="/nonexistent/backup"), "is not in the catalog"),
    (dict(label="full-1", scratch_mongod="/nonexistent/mongod"), "scratch_mongod starts its own scratch server; "
                                                                 "remove uri"),
    (dict(target_time="not a time"), "not a time"),
    (dict(label="full-1", backup_replica_set="rs0"), "backup_replica_set chooses the oplog chain of a target_time"),
])
def test_bad_input_is_refused_with_a_clear_message(shop, root, tmp_path, scratch, scratch_client, options, message):
    take_backup(shop, root, "full-1")
    result = verify(tmp_path, scratch, backup_root=str(root), **options)
    assert result["failed"] is True and message in result["msg"], result["msg"]
    assert catalog_entry(root, "full-1")["verified"] is None
    assert_scratch_clean(scratch_client)


def test_a_temporary_mongod_that_is_not_installed_is_named(shop, root, tmp_path):
    take_backup(shop, root, "full-1")
    result = run_module_task(tmp_path, VERIFY, backup_root=str(root), label="full-1",
                             scratch_mongod="/nonexistent/mongod")
    assert result["failed"] is True
    assert result["msg"].startswith("no mongod to start a temporary scratch server: /nonexistent/mongod was not found")


CHILD = """
import os, sys
sys.path.insert(0, os.path.join(sys.argv[1], "tools"))
import collection_link
collection_link.expose()
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.verify import engine
client = client_utils.connect(client_utils.ConnectionOptions(uri=os.environ["SCRATCH_URI"]))
engine.verify(client, engine.VerifyOptions(backup_root=sys.argv[2], label="full-1"))
"""


def test_a_verification_stopped_by_sigterm_cleans_the_scratch_and_records_nothing(
        shop, root, tmp_path, scratch, scratch_client):
    shop.vshop.bulk.insert_many([{"_id": i, "pad": "x" * 200} for i in range(20000)])  # a restore that takes a while
    take_backup(shop, root, "full-1")
    child = subprocess.Popen([sys.executable, "-c", CHILD, support.REPO, str(root)], stderr=subprocess.PIPE,
                             env=dict(os.environ, SCRATCH_URI=scratch.uri))
    locks = scratch_client.admin.dbops_backup_verify
    deadline = time.time() + 120
    while not (locks.find_one({"_id": "scratch"}) or {}).get("databases"):  # claimed: the restore is starting
        assert child.poll() is None and time.time() < deadline, child.stderr.read().decode()
        time.sleep(0.02)
    child.send_signal(signal.SIGTERM)
    _out, err = child.communicate(timeout=300)
    assert child.returncode != 0
    assert "the module was stopped (signal 15) while a verification ran" in err.decode(), err.decode()
    assert_scratch_clean(scratch_client)
    assert catalog_entry(root, "full-1")["verified"] is None
