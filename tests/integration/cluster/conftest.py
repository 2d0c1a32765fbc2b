"""A sharded cluster of real test servers (two shards and the config server, each with its own oplog)
behind a mockupdb mongos, shared by the cluster tests of this package."""

import pytest

from cluster_bed import MockMongos, shard_string
from support import start_test_server

SHARDS = ("shardA", "shardB")


def start_cluster(tmp_path_factory, prefix, shard_names=SHARDS, balancer_mode="off"):
    servers = {"config": start_test_server(tmp_path_factory, "%s-config" % prefix)}
    for name in shard_names:
        servers[name] = start_test_server(tmp_path_factory, "%s-%s" % (prefix, name))
    for server in servers.values():  # a replica set's oplog is never empty (it starts with a note)
        client = server.client()
        client.admin.command("ping")
        client.bed.started.insert_one({"replica_set": "initiated"})
        client.close()
    mongos = MockMongos(dict((name, shard_string(name, servers[name])) for name in shard_names),
                        shard_string("configRS", servers["config"]), mode=balancer_mode)
    return servers, mongos


def stop_cluster(servers, mongos):
    mongos.stop()
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="package")
def cluster(tmp_path_factory):
    servers, mongos = start_cluster(tmp_path_factory, "source")
    yield servers, mongos
    stop_cluster(servers, mongos)
