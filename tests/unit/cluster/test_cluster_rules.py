"""The rules of the cluster procedures that need no server: the cut, the shard map, shard connections."""

import bson
import pytest

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.cluster.cut import choose_cut
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.cluster.sharded_restore import (
    ShardedRestoreOptions, resolve_shard_map)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.cluster.topology import (
    ReplicaSetInfo, check_shard_uris, replica_set_connection)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection.client import ConnectionOptions
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import ClusterError, InvalidOption


def test_the_cut_is_one_increment_after_the_newest_end():
    ends = [bson.Timestamp(100, 7), bson.Timestamp(101, 2), bson.Timestamp(99, 50)]
    assert choose_cut(ends) == bson.Timestamp(101, 3)


def test_a_shard_string_gives_its_replica_set_and_hosts():
    info = ReplicaSetInfo("shard01", "shard01rs/db1:27018,db2:27018")
    assert (info.replica_set, info.hosts) == ("shard01rs", ["db1:27018", "db2:27018"])
    with pytest.raises(ClusterError, match="no hosts for shard02"):
        ReplicaSetInfo("shard02", "shard02rs/")


@pytest.mark.parametrize("shard_map, message", [
    ({"shardZ": "t1"}, "shardZ that the backup does not hold"),
    ({"s1": "t9"}, "t9 that the target cluster does not have"),
    ({"s1": "t1", "s2": "t1"}, "two source shards to one target shard"),
])
def test_a_shard_map_that_does_not_cover_both_clusters_is_refused(shard_map, message):
    with pytest.raises(ClusterError, match=message):
        resolve_shard_map(["s1", "s2"], ["t1", "t2"], shard_map)


def test_a_shard_map_may_swap_names_and_defaults_to_the_same_name():
    assert resolve_shard_map(["a", "b"], ["a", "b"], {"a": "b", "b": "a"}) == {"a": "b", "b": "a"}
    assert resolve_shard_map(["a", "b"], ["a", "b"], {}) == {"a": "a", "b": "b"}


def test_a_target_with_more_shards_is_refused_pointing_at_through_mongos():
    with pytest.raises(ClusterError, match="c would receive no data.*through_mongos"):
        resolve_shard_map(["a", "b"], ["a", "b", "c"], {})


def test_shard_map_only_applies_to_a_same_shape_restore():
    with pytest.raises(InvalidOption, match="only applies to mode: same_shape"):
        ShardedRestoreOptions("/b", mode="through_mongos", shard_map={"a": "b"})


def test_a_shard_is_reached_with_the_mongos_uri_credentials_and_tls():
    mongos = ConnectionOptions(uri="mongodb://backup:p%40ss%2Fw@mongos1:27017/?authSource=admin&tls=true")
    info = ReplicaSetInfo("shard01", "shard01rs/db1:27018,db2:27018")
    options = replica_set_connection(mongos, info)
    assert options.uri == "mongodb://db1:27018,db2:27018/" and options.replica_set == "shard01rs"
    assert (options.login_user, options.login_password, options.login_database) == ("backup", "p@ss/w", "admin")
    assert options.tls is True


def test_a_single_host_shard_is_connected_to_directly_and_shard_credentials_win():
    mongos = ConnectionOptions(login_host="mongos1", login_user="clusteruser", login_password="x")
    options = replica_set_connection(mongos, ReplicaSetInfo("s", "rs/[::1]:27019"), login_user="shardlocal",
                                     login_password="y")
    assert (options.login_host, options.login_port, options.direct_connection) == ("::1", 27019, True)
    assert (options.login_user, options.login_password) == ("shardlocal", "y")


def test_shard_uris_replace_the_shard_map_hosts():
    mongos = ConnectionOptions(login_host="mongos1")
    options = replica_set_connection(mongos, ReplicaSetInfo("s", "rs/db1:1"), {"s": "mongodb://u:p@near:2/"})
    assert options.uri == "mongodb://u:p@near:2/" and options.login_host is None


def test_a_typo_in_shard_uris_is_refused_naming_the_known_shards():
    topology = {"shards": [ReplicaSetInfo("shard01", "rs1/db1:1"), ReplicaSetInfo("shard02", "rs2/db2:1")]}
    with pytest.raises(ClusterError, match="shard_uris names shard1, which the cluster does not have .*shard01, shard02"):
        check_shard_uris({"shard1": "mongodb://x/", "config": "mongodb://y/"}, topology)


def test_only_the_sharding_metadata_is_kept_from_the_config_servers_oplog():
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils.cluster.sharded_restore import only_namespaces
    chunk = {"op": "i", "ns": "config.chunks", "o": {"_id": 1}}
    other = {"op": "i", "ns": "admin.system.users", "o": {"_id": "u"}}
    applied = {"op": "c", "ns": "admin.$cmd", "o": {"applyOps": [other, chunk]}}
    prepared = {"op": "c", "ns": "admin.$cmd", "lsid": {"id": 1}, "txnNumber": 1,
                "o": {"applyOps": [other], "prepare": True}}
    commit = {"op": "c", "ns": "admin.$cmd", "lsid": {"id": 1}, "txnNumber": 1, "o": {"commitTransaction": 1}}
    created = {"op": "c", "ns": "config.$cmd", "o": {"create": "chunks"}}
    dropped = {"op": "c", "ns": "config.$cmd", "o": {"drop": "system.sessions"}}
    kept = list(only_namespaces([chunk, other, applied, prepared, commit, created, dropped], ["config.chunks"]))
    assert kept == [chunk, dict(applied, o={"applyOps": [chunk]}), dict(prepared, o={"applyOps": [], "prepare": True}),
                    commit, created]
