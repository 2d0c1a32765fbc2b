"""The sharded-cluster test bed: real test servers standing in for the shards and the config server,
behind a mockupdb mongos that answers the control-plane commands as MongoDB 7/8 document them
(hello with msg isdbgrid, listShards, getShardMap, balancerStatus/Start/Stop, $currentOp,
config.settings, flushRouterConfig). Data never goes through the mock: every data path runs
against the real servers.
"""

import datetime
import threading
import uuid

import bson
from bson.binary import Binary, UuidRepresentation
from mockupdb import MockupDB

MONGOS_VERSION = "7.0.14"


class MockMongos:
    """A mongos for the control plane; records every command it receives (``commands``)."""

    def __init__(self, shards, config, balancer_mode="off", version=MONGOS_VERSION):
        self.shards = dict(shards)  # name -> "replicaSet/host:port,..."
        self.config = config
        self.balancer_mode = balancer_mode
        self.next_modes = []  # modes balancerStatus switches to on its next calls (someone else's doing)
        self.version = version
        self.commands = []
        self.lock = threading.Lock()
        self.server = MockupDB(auto_ismaster=False)
        self.server.autoresponds(self._handle)
        self.server.run()

    @property
    def uri(self):
        return self.server.uri

    @property
    def address(self):
        return "%s:%d" % self.server.address

    def names(self):
        with self.lock:
            return [name for name, _doc in self.commands]

    def stop(self):
        self.server.stop()

    def _handle(self, request):
        name = request.command_name
        if name is None:
            return False
        document = dict(request.doc)
        with self.lock:
            if name not in ("hello", "ismaster", "isMaster", "ping"):
                self.commands.append((name, document))
        reply = self._reply(name, document)
        if reply is None:
            return request.command_err(59, "no such command: '%s'" % name)
        return request.ok(reply)

    def _reply(self, name, document):
        if name in ("hello", "ismaster", "isMaster"):
            return {"isWritablePrimary": True, "ismaster": True, "msg": "isdbgrid", "maxWireVersion": 21,
                    "minWireVersion": 0, "maxBsonObjectSize": 16777216, "maxMessageSizeBytes": 48000000,
                    "maxWriteBatchSize": 100000, "localTime": bson.datetime.datetime.utcnow(),
                    "connectionId": 1, "readOnly": False}
        if name in ("ping", "endSessions", "flushRouterConfig"):
            return {}
        if name == "buildInfo":
            major, minor, patch = (int(part) for part in self.version.split("."))
            return {"version": self.version, "versionArray": [major, minor, patch, 0], "gitVersion": "0" * 40}
        if name == "listShards":
            return {"shards": [{"_id": shard, "host": host, "state": 1, "topologyTime": bson.Timestamp(1700000000, 1)}
                               for shard, host in sorted(self.shards.items())]}
        if name == "getShardMap":
            mapping = dict(self.shards, config=self.config)
            return {"map": mapping, "hosts": {}, "connStrings": {}}
        if name == "shardCollection":
            return {"collectionsharded": document["shardCollection"]}
        if name == "balancerStatus":
            if self.next_modes:
                self.balancer_mode = self.next_modes.pop(0)
            return {"mode": self.balancer_mode, "inBalancerRound": False, "numBalancerRounds": bson.Int64(12)}
        if name == "balancerStop":
            self.balancer_mode = "off"
            return {}
        if name == "balancerStart":
            self.balancer_mode = "full"
            return {}
        if name in ("aggregate", "find"):  # $currentOp (no migration runs) and config.settings (no window)
            target = document.get(name)
            collection = target if isinstance(target, str) else "$cmd.aggregate"
            namespace = "%s.%s" % (document.get("$db", "admin"), collection)
            return {"cursor": {"id": bson.Int64(0), "ns": namespace, "firstBatch": []}}
        return None


def shard_string(name, server):
    """How listShards names a single-member replica set: ``<replica set>/<host:port>``."""
    return "%s/%s:%d" % (name, server.host, server.port)


def shard_uris(servers):
    """{set name: URI with credentials} for the test servers (each has its own password)."""
    return dict((name, server.uri) for name, server in servers.items())


# --------------------------------------------------------------------------- oplog entries around a cut
# Shaped as MongoDB 7/8 write them: a distributed transaction is a prepare applyOps on every shard it
# touched, then each shard's own commitTransaction with the coordinator's commitTimestamp (or an
# abortTransaction). Timestamps are CUT's second with the given increment.

CUT = bson.Timestamp(1800000000, 20)
COLLECTION_UUID = Binary.from_uuid(uuid.UUID(int=7), UuidRepresentation.STANDARD)


def _ts(inc):
    return bson.Timestamp(CUT.time, inc)


def _session(number):
    return {"id": Binary.from_uuid(uuid.UUID(int=number), UuidRepresentation.STANDARD),
            "uid": Binary(bytes(32), 0)}


def _base(inc):
    return {"ts": _ts(inc), "t": bson.Int64(3), "v": bson.Int64(2),
            "wall": datetime.datetime(2027, 1, 15, 8, 0, 0) + datetime.timedelta(milliseconds=inc)}


def insert(inc, db, doc_id):
    return dict(_base(inc), op="i", ns="%s.orders" % db, ui=COLLECTION_UUID, o={"_id": doc_id}, o2={"_id": doc_id})


def prepare(inc, db, session, doc_ids):
    ops = [{"op": "i", "ns": "%s.orders" % db, "ui": COLLECTION_UUID, "o": {"_id": i}, "o2": {"_id": i}}
           for i in doc_ids]
    return dict(_base(inc), op="c", ns="admin.$cmd", o={"applyOps": ops, "prepare": True},
                lsid=_session(session), txnNumber=bson.Int64(1), stmtId=0,
                prevOpTime={"ts": bson.Timestamp(0, 0), "t": bson.Int64(-1)})


def commit(inc, session, commit_inc, prepared_inc):
    return dict(_base(inc), op="c", ns="admin.$cmd",
                o={"commitTransaction": 1, "commitTimestamp": _ts(commit_inc)},
                lsid=_session(session), txnNumber=bson.Int64(1),
                prevOpTime={"ts": _ts(prepared_inc), "t": bson.Int64(3)})


def abort(inc, session, prepared_inc):
    return dict(_base(inc), op="c", ns="admin.$cmd", o={"abortTransaction": 1},
                lsid=_session(session), txnNumber=bson.Int64(1),
                prevOpTime={"ts": _ts(prepared_inc), "t": bson.Int64(3)})
