"""Protocol tests: what the test server cannot show (mongos, secondaries, views, timeseries),
answered over the wire by mockupdb with replies shaped as MongoDB 7/8 documents them."""

import json

import bson
import pytest
from mockupdb import MockupDB

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_options
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_plan

pytestmark = pytest.mark.protocol

UUID_BIN = bson.Binary(bytes.fromhex("0679db72a5b84a8e9d3c4b2a1f0e9d8c"), 4)


def _server(hello, version="7.0.12"):
    server = MockupDB()
    server.autoresponds("hello", dict({"maxWireVersion": 21, "minWireVersion": 0}, **hello))
    server.autoresponds("ismaster", dict({"maxWireVersion": 21, "minWireVersion": 0}, **hello))
    server.autoresponds("buildInfo", version=version,
                        versionArray=[int(p) for p in version.split(".")] + [0], gitVersion="abc")
    server.autoresponds("ping")
    server.run()
    return server


def _connect(server):
    import pymongo
    return pymongo.MongoClient(server.uri, directConnection=True, serverSelectionTimeoutMS=3000)


@pytest.mark.parametrize("hello, topology, state", [
    ({"isWritablePrimary": True, "msg": "isdbgrid"}, "sharded", "mongos"),
    ({"isWritablePrimary": False, "secondary": True, "setName": "rs0", "hosts": ["a:1", "b:2"]},
     "replicaset", "SECONDARY"),
    ({"isWritablePrimary": True, "setName": "rs0", "hosts": ["a:1"]}, "replicaset", "PRIMARY"),
    ({"isWritablePrimary": True}, "standalone", "standalone"),
])
def test_server_facts_for_each_topology(hello, topology, state):
    server = _server(hello)
    try:
        client = _connect(server)
        facts = client_utils.server_facts(client)
        assert facts["topology"] == topology and facts["member_state"] == state
        assert facts["version"] == "7.0.12" and facts["flavor"] == "mongodb"
    finally:
        server.stop()


def _cursor(request, ns, batch):
    return request.replies({"cursor": {"id": bson.Int64(0), "ns": ns, "firstBatch": batch}})


def test_views_are_metadata_only_and_timeseries_read_their_buckets():
    """MongoDB 7: a view gets metadata without data; a timeseries collection is read from
    system.buckets.<name> and its metadata has type timeseries and no uuid."""
    server = _server({"isWritablePrimary": True, "setName": "rs0", "hosts": ["a:1"]})
    collections = [
        {"name": "orders", "type": "collection", "options": {},
         "info": {"readOnly": False, "uuid": UUID_BIN}, "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"}},
        {"name": "big_orders", "type": "view",
         "options": {"viewOn": "orders", "pipeline": [{"$match": {"total": {"$gt": 100}}}]},
         "info": {"readOnly": True}},
        {"name": "weather", "type": "timeseries",
         "options": {"timeseries": {"timeField": "ts", "metaField": "sensor", "granularity": "seconds",
                                    "bucketMaxSpanSeconds": 3600}}, "info": {"readOnly": False}},
        {"name": "system.buckets.weather", "type": "collection", "options": {}, "info": {"uuid": UUID_BIN}},
        {"name": "system.views", "type": "collection", "options": {}, "info": {"uuid": UUID_BIN}},
    ]
    indexes = {
        "orders": [{"v": 2, "key": {"_id": 1}, "name": "_id_"},
                   {"v": 2, "key": {"total": -1}, "name": "total_-1", "unique": True}],
        "weather": [{"v": 2, "key": {"sensor": 1, "ts": 1}, "name": "sensor_1_ts_1"}],
    }
    server.autoresponds("listDatabases", databases=[{"name": "shop", "sizeOnDisk": 1, "empty": False}])
    server.autoresponds("listCollections", lambda r: _cursor(r, "shop.$cmd.listCollections", collections))
    for name, specs in indexes.items():
        server.autoresponds({"listIndexes": name}, cursor={"id": 0, "ns": "shop." + name, "firstBatch": specs})
    server.autoresponds(lambda r: r.command_name == "collStats" and r.ok(size=1000, count=10))
    try:
        client = _connect(server)
        facts = client_utils.server_facts(client)
        options = dump_options.DumpOptions(path="/unused", db="shop")
        plans = {p.name: p for p in dump_plan.Planner(client, options, facts).plan()}
    finally:
        server.stop()
    assert sorted(plans) == ["big_orders", "orders", "weather"]  # system collections left out
    view = plans["big_orders"]
    assert view.source_name is None and view.indexes == []
    view_meta = json.loads(view.metadata_json())
    assert view_meta["type"] == "view" and view_meta["options"]["viewOn"] == "orders"
    assert "uuid" not in view_meta and view_meta["indexes"] == []
    weather = plans["weather"]
    assert weather.source_name == "system.buckets.weather" and weather.data_name == "system.buckets.weather"
    weather_meta = json.loads(weather.metadata_json())
    assert weather_meta["type"] == "timeseries" and "uuid" not in weather_meta
    assert [ix["name"] for ix in weather_meta["indexes"]] == ["sensor_1_ts_1"]
    orders_meta = json.loads(plans["orders"].metadata_json())
    assert orders_meta["uuid"] == "0679db72a5b84a8e9d3c4b2a1f0e9d8c"
    assert orders_meta["indexes"][1]["unique"] is True


def test_timeseries_on_8_3_reads_the_collection_itself():
    server = _server({"isWritablePrimary": True}, version="8.3.0")
    collections = [{"name": "weather", "type": "timeseries",
                    "options": {"timeseries": {"timeField": "ts"}}, "info": {"readOnly": False}}]
    server.autoresponds("listDatabases", databases=[{"name": "iot", "sizeOnDisk": 1, "empty": False}])
    server.autoresponds("listCollections", lambda r: _cursor(r, "iot.$cmd.listCollections", collections))
    server.autoresponds({"listIndexes": "weather"}, cursor={"id": 0, "ns": "iot.weather", "firstBatch": []})
    server.autoresponds(lambda r: r.command_name == "collStats" and r.ok(size=0, count=0))
    try:
        client = _connect(server)
        plans = dump_plan.Planner(client, dump_options.DumpOptions(path="/unused", db="iot"),
                                  client_utils.server_facts(client)).plan()
    finally:
        server.stop()
    assert plans[0].source_name == "weather" and plans[0].data_name == "weather"
