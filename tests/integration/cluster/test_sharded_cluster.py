"""Sharded-cluster backups cut at one cluster time, restored the same shape and through a mongos:
real test servers for the shards and the config server, a mockupdb mongos for the control plane,
and a workload writing to both shards throughout the backup."""

import os
import threading
import time

import bson
import pymongo
import pytest

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.cluster import sharded_backup, sharded_restore
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.timestamps import ts_key
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import ClusterError
from cluster_bed import MockMongos, shard_uris
from conftest import SHARDS, start_cluster, stop_cluster
from support import start_test_server

NAMESPACE = ("shop", "orders")
PRELOAD = 3000
PAD = "x" * 200


def _connect(mongos):
    options = client_utils.ConnectionOptions(uri=mongos.uri, connect_timeout=5)
    return client_utils.connect(options), options


def _load_metadata(config_server):
    """Sharding metadata shaped as a MongoDB 7 config server holds it (shop.orders split over both shards)."""
    client = config_server.client()
    uuid = bson.Binary(os.urandom(16), 4)
    client.config.databases.insert_one({"_id": "shop", "primary": "shardA",
                                        "version": {"uuid": uuid, "timestamp": bson.Timestamp(1700000000, 1),
                                                    "lastMod": 1}})
    client.config.collections.insert_one({"_id": "shop.orders", "lastmodEpoch": bson.ObjectId(), "uuid": uuid,
                                          "key": {"_id": 1}, "unique": False, "noBalance": False,
                                          "timestamp": bson.Timestamp(1700000000, 2)})
    client.config.chunks.insert_many([
        {"_id": bson.ObjectId(), "uuid": uuid, "min": {"_id": ""}, "max": {"_id": "shardB"}, "shard": "shardA",
         "lastmod": bson.Timestamp(1, 0), "onCurrentShardSince": bson.Timestamp(1700000000, 3),
         "history": [{"validAfter": bson.Timestamp(1700000000, 3), "shard": "shardA"}]},
        {"_id": bson.ObjectId(), "uuid": uuid, "min": {"_id": "shardB"}, "max": {"_id": "~"}, "shard": "shardB",
         "lastmod": bson.Timestamp(1, 1), "onCurrentShardSince": bson.Timestamp(1700000000, 3),
         "history": [{"validAfter": bson.Timestamp(1700000000, 3), "shard": "shardB"}]}])
    client.close()


def _preload(server, name):
    client = server.client()
    client[NAMESPACE[0]][NAMESPACE[1]].insert_many(
        [{"_id": "%s-%06d" % (name, n), "n": n, "pad": PAD} for n in range(PRELOAD)])
    client.close()


class Workload:
    """Inserts and deletes on every shard until stopped, each shard from its own thread."""

    def __init__(self, servers):
        self.servers = servers
        self.stopping = threading.Event()
        self.writes = dict((name, 0) for name in servers)
        self.errors = []
        self.threads = [threading.Thread(target=self._run, args=(name, server), daemon=True)
                        for name, server in servers.items()]

    def start(self):
        for thread in self.threads:
            thread.start()
        time.sleep(0.3)  # writes are flowing before the backup starts

    def stop(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join(30)
        assert not self.errors, self.errors

    def _run(self, name, server):
        client = server.client()
        collection = client[NAMESPACE[0]][NAMESPACE[1]]
        n = PRELOAD
        try:
            while not self.stopping.is_set():
                if name == "config":  # the routing table changes too: a chunk split off now and then
                    client.config.chunks.insert_one({"_id": "split-%06d" % n, "min": {"_id": "s%06d" % n},
                                                     "max": {"_id": "s%06d~" % n}, "shard": "shardB",
                                                     "history": [{"shard": "shardB"}]})
                    self.writes[name] += 1
                    time.sleep(0.05)
                    n += 1
                    continue
                collection.insert_one({"_id": "%s-%06d" % (name, n), "n": n, "pad": PAD})
                if n % 3 == 0:
                    collection.delete_one({"_id": "%s-%06d" % (name, n - 2500)})
                self.writes[name] += 1
                n += 1
                time.sleep(0.002)
        except Exception as exc:  # reported by stop()
            self.errors.append("%s: %r" % (name, exc))
        finally:
            client.close()


def state_before(server, cut):
    """The shard's shop.orders just before ``cut``, from its own oplog (inserts and deletes only)."""
    client = server.client()
    documents = {}
    namespace = "%s.%s" % NAMESPACE
    for entry in client.local["oplog.rs"].find({"ns": namespace, "ts": {"$lt": cut}}).sort("$natural", 1):
        if entry["op"] == "i":
            documents[entry["o"]["_id"]] = entry["o"]
        elif entry["op"] == "d":
            documents.pop(entry["o"]["_id"], None)
    client.close()
    return documents


def chunks_before(config_server, cut):
    """The _ids of config.chunks just before ``cut``, from the config server's oplog (inserts only)."""
    client = config_server.client()
    ids = sorted(str(entry["o"]["_id"]) for entry in client.local["oplog.rs"].find(
        {"ns": "config.chunks", "op": "i", "ts": {"$lt": cut}}))
    client.close()
    return ids


def documents_of(server_or_client):
    """shop.orders by _id, read from a test server or through a client."""
    if isinstance(server_or_client, pymongo.MongoClient):
        return dict((doc["_id"], doc) for doc in server_or_client[NAMESPACE[0]][NAMESPACE[1]].find())
    client = server_or_client.client()
    try:
        return documents_of(client)
    finally:
        client.close()


@pytest.fixture(scope="module")
def backup(cluster, tmp_path_factory):
    """One cluster backup taken while the workload writes to both shards."""
    servers, mongos = cluster
    _load_metadata(servers["config"])
    for name in SHARDS:
        _preload(servers[name], name)
    workload = Workload(dict((name, servers[name]) for name in SHARDS + ("config",)))
    client, options = _connect(mongos)
    path = str(tmp_path_factory.mktemp("cluster-backups") / "nightly")
    workload.start()
    before = dict(workload.writes)
    try:
        changed, result = sharded_backup.backup(client, options, sharded_backup.ShardedBackupOptions(
            path=path, label="nightly", shard_uris=shard_uris(servers), compression="gzip"))
    finally:
        during = dict((name, workload.writes[name] - before[name]) for name in workload.writes)
        workload.stop()
        client.close()
    cut = bson.Timestamp(*ts_key(result["cut"]["ts"]))
    expected = dict((name, state_before(servers[name], cut)) for name in SHARDS)
    expected["chunks"] = chunks_before(servers["config"], cut)
    return {"changed": changed, "result": result, "path": path, "cut": cut, "expected": expected,
            "writes_during": during}


def test_the_cut_is_after_every_dump_and_not_after_any_captured_entry(backup):
    result, cut = backup["result"], backup["cut"]
    assert backup["changed"] is True
    assert all(number > 0 for number in backup["writes_during"].values()), backup["writes_during"]
    sets = [result["config"]] + result["shards"]
    assert [s["name"] for s in sets] == ["config", "shardA", "shardB"]
    for record in sets:
        dump_end = ts_key(record["dump"]["end"]["ts"])
        last_captured = ts_key(record["cut_slice"]["last"]["ts"])
        assert dump_end < (cut.time, cut.inc) <= last_captured, record
    assert os.path.isfile(os.path.join(backup["path"], "manifest.json"))
    assert not os.path.exists(backup["path"] + ".partial")


def test_the_backup_holds_writes_after_the_cut_that_a_restore_must_leave_out(backup, cluster):
    servers, _mongos = cluster
    for name in SHARDS:
        final = documents_of(servers[name])
        assert set(final) != set(backup["expected"][name]), "no write landed after the cut on %s" % name
    client = servers["config"].client()
    assert client.config.chunks.count_documents({}) > len(backup["expected"]["chunks"])
    client.close()


def test_same_shape_restore_gives_each_shard_its_state_just_before_the_cut(backup, tmp_path_factory):
    targets, target_mongos = start_cluster(tmp_path_factory, "same-shape", shard_names=("tA", "tB"))
    try:
        client, options = _connect(target_mongos)
        try:
            changed, result = sharded_restore.restore(client, options, sharded_restore.ShardedRestoreOptions(
                backup["path"], mode="same_shape", shard_map={"shardA": "tA", "shardB": "tB"},
                shard_uris=shard_uris(targets)))
        finally:
            client.close()
        assert changed is True
        assert documents_of(targets["tA"]) == backup["expected"]["shardA"]
        assert documents_of(targets["tB"]) == backup["expected"]["shardB"]
        config = targets["config"].client()
        chunks = list(config.config.chunks.find())
        assert sorted(str(c["_id"]) for c in chunks) == backup["expected"]["chunks"]  # the routing table at T
        assert set(c["shard"] for c in chunks) == {"tA", "tB"}
        assert set(h["shard"] for c in chunks for h in c["history"]) == {"tA", "tB"}
        assert config.config.databases.find_one({"_id": "shop"})["primary"] == "tA"
        config.close()
        assert "flushRouterConfig" in target_mongos.names()
    finally:
        stop_cluster(targets, target_mongos)


def test_through_mongos_restore_into_one_server_gives_the_union_just_before_the_cut(backup, tmp_path_factory):
    target = start_test_server(tmp_path_factory, "single-target")
    try:
        client = target.client()
        options = client_utils.ConnectionOptions(uri=target.uri)
        changed, result = sharded_restore.restore(client, options, sharded_restore.ShardedRestoreOptions(
            backup["path"], mode="through_mongos"))
        expected = dict(backup["expected"]["shardA"], **backup["expected"]["shardB"])
        assert documents_of(client) == expected
        assert result["oplog"]["stopped_at_limit"] is True
        client.close()
    finally:
        target.stop()


def test_a_shard_map_naming_unknown_shards_is_refused_and_nothing_is_written(backup, tmp_path_factory):
    targets, target_mongos = start_cluster(tmp_path_factory, "bad-map", shard_names=("tA", "tB"))
    try:
        client, options = _connect(target_mongos)
        with pytest.raises(ClusterError) as failure:
            sharded_restore.restore(client, options, sharded_restore.ShardedRestoreOptions(
                backup["path"], shard_map={"shardA": "tA", "shardZ": "tB"}, shard_uris=shard_uris(targets)))
        assert "shardZ" in failure.value.message and "nothing was changed" in failure.value.message
        with pytest.raises(ClusterError) as failure:
            sharded_restore.restore(client, options, sharded_restore.ShardedRestoreOptions(
                backup["path"], shard_map={"shardA": "tA", "shardB": "tC"}, shard_uris=shard_uris(targets)))
        assert "tC" in failure.value.message
        client.close()
        for server in targets.values():
            assert documents_of(server) == {}
        assert "flushRouterConfig" not in target_mongos.names()
    finally:
        stop_cluster(targets, target_mongos)


def test_a_target_of_another_shape_is_refused_for_a_same_shape_restore(backup, tmp_path_factory):
    targets, target_mongos = start_cluster(tmp_path_factory, "three-shards", shard_names=("shardA", "shardB", "shardC"))
    try:
        client, options = _connect(target_mongos)
        with pytest.raises(ClusterError) as failure:
            sharded_restore.restore(client, options, sharded_restore.ShardedRestoreOptions(
                backup["path"], shard_uris=shard_uris(targets)))
        assert "shardC" in failure.value.message and "through_mongos" in failure.value.message
        client.close()
        for server in targets.values():
            assert documents_of(server) == {}
    finally:
        stop_cluster(targets, target_mongos)


def test_a_running_balancer_is_refused_before_anything_is_written(cluster, tmp_path):
    servers, mongos = cluster
    mongos.mode = "full"
    try:
        client, options = _connect(mongos)
        with pytest.raises(ClusterError) as failure:
            sharded_backup.backup(client, options, sharded_backup.ShardedBackupOptions(
                path=str(tmp_path / "b"), shard_uris=shard_uris(servers)))
        client.close()
    finally:
        mongos.mode = "off"
    assert "balancer is enabled" in failure.value.message and "mongodb_balancer" in failure.value.message
    assert os.listdir(str(tmp_path)) == []


def test_a_shard_that_cannot_be_dumped_fails_the_backup_and_leaves_nothing_complete(cluster, tmp_path):
    servers, mongos = cluster
    uris = shard_uris(servers)
    uris["shardB"] = uris["shardB"].replace(servers["shardB"].password, "wrong-password")
    client, options = _connect(mongos)
    with pytest.raises(ClusterError) as failure:
        sharded_backup.backup(client, options, sharded_backup.ShardedBackupOptions(
            path=str(tmp_path / "b"), shard_uris=uris))
    client.close()
    assert "shardB" in failure.value.message
    assert "wrong-password" not in failure.value.message
    assert os.listdir(str(tmp_path)) == ["b.lock"] or os.listdir(str(tmp_path)) == []


def test_the_same_label_again_changes_nothing(backup, cluster):
    servers, mongos = cluster
    client, options = _connect(mongos)
    try:
        changed, result = sharded_backup.backup(client, options, sharded_backup.ShardedBackupOptions(
            path=backup["path"], label="nightly", shard_uris=shard_uris(servers)))
    finally:
        client.close()
    assert changed is False
    assert result["backup_id"] == backup["result"]["backup_id"]


def test_a_gutted_cluster_backup_is_refused_before_anything_is_written(backup, tmp_path, tmp_path_factory):
    import shutil
    gutted = str(tmp_path / "gutted")
    shutil.copytree(backup["path"], gutted)
    shutil.rmtree(os.path.join(gutted, "shardB"))
    target = start_test_server(tmp_path_factory, "gutted-target")
    try:
        client = target.client()
        with pytest.raises(Exception) as failure:
            sharded_restore.restore(client, client_utils.ConnectionOptions(uri=target.uri),
                                    sharded_restore.ShardedRestoreOptions(gutted, mode="through_mongos"))
        assert "shardB/manifest.json: missing" in str(failure.value)
        assert "nothing was restored" in str(failure.value)
        assert documents_of(client) == {}
        client.close()
    finally:
        target.stop()


def test_a_balancer_started_by_someone_else_during_the_dumps_fails_the_backup(cluster, tmp_path):
    servers, mongos = cluster
    mongos.next_modes = ["off", "full"]  # off when checked first, running again when checked after the dumps
    try:
        client, options = _connect(mongos)
        with pytest.raises(ClusterError) as failure:
            sharded_backup.backup(client, options, sharded_backup.ShardedBackupOptions(
                path=str(tmp_path / "b"), shard_uris=shard_uris(servers)))
        client.close()
    finally:
        mongos.next_modes = []
        mongos.mode = "off"
    assert "checked again after the dumps" in failure.value.message
    assert not os.path.exists(str(tmp_path / "b")) and not os.path.exists(str(tmp_path / "b.partial"))


def test_through_a_mongos_the_collections_the_source_sharded_are_sharded_first(backup):
    document = sharded_restore.load_backup(backup["path"])
    collections = sharded_restore.sharded_collections(backup["path"], document)
    assert collections == [{"namespace": "shop.orders", "key": {"_id": 1}, "unique": False}]
    target = MockMongos({"t1": "t1/127.0.0.1:1"}, "cfg/127.0.0.1:2")
    try:
        client, _options = _connect(target)
        sharded_restore.shard_collections(client, collections)
        client.close()
        sent = [doc for name, doc in target.commands if name == "shardCollection"]
        assert [(doc["shardCollection"], doc["key"], doc["unique"]) for doc in sent] == [
            ("shop.orders", {"_id": 1}, False)]
    finally:
        target.stop()
