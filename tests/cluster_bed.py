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
    """A mongos for the control plane that records every command it receives (``commands``).

    ``shards`` ({name: "replicaSet/host:port"}) and ``config`` answer listShards and getShardMap. The
    balancer keeps a small state: ``mode``; ``round_polls`` balancerStatus replies still report a round
    in progress; ``migration_polls`` $currentOp replies still list ``migration_ops``; ``next_modes`` are
    modes balancerStatus switches to on its next calls (someone else starting it); ``settings`` is
    config.settings' balancer document. With ``set_name`` it answers as a replica-set primary (a shard
    member), with ``standalone`` as a standalone mongod: no balancer command then exists.
    """

    def __init__(self, shards=None, config="configRS/127.0.0.1:1", mode="off", version=MONGOS_VERSION):
        self.shards = dict(shards or {})
        self.config = config
        self.version = version
        self.lock = threading.Lock()
        self.server = MockupDB(auto_ismaster=False)
        self.server.autoresponds(self._handle)
        self.server.run()
        self.reset(mode=mode)

    def reset(self, mode="off", round_polls=0, migration_polls=0, migration_ops=None, window=None,
              set_name=None, standalone=False):
        with self.lock:
            self.mode = mode
            self.round_polls = round_polls
            self.migration_polls = migration_polls
            self.migration_ops = list(migration_ops or [])
            self.next_modes = []
            self.settings = {"_id": "balancer", "mode": mode, "stopped": mode == "off"}
            if window is not None:
                self.settings["activeWindow"] = dict(window)
            self.set_name = set_name
            self.standalone = standalone
            self.commands = []

    @property
    def uri(self):
        return self.server.uri

    def names(self):
        with self.lock:
            return [name for name, _doc in self.commands]

    def sent(self, name):
        with self.lock:
            return [doc for command, doc in self.commands if command == name]

    def stop(self):
        self.server.stop()

    def _hello(self):
        reply = {"isWritablePrimary": True, "ismaster": True, "maxWireVersion": 21, "minWireVersion": 0,
                 "maxBsonObjectSize": 16777216, "maxMessageSizeBytes": 48000000, "maxWriteBatchSize": 100000,
                 "localTime": datetime.datetime.utcnow(), "connectionId": 1, "readOnly": False}
        if self.set_name:
            address = self.server.address_string
            reply.update(setName=self.set_name, setVersion=3, hosts=[address], me=address, primary=address,
                         secondary=False, electionId=bson.ObjectId("7fffffff0000000000000003"),
                         lastWrite={"opTime": {"ts": bson.Timestamp(1700000000, 1), "t": bson.Int64(3)}})
        elif not self.standalone:
            reply["msg"] = "isdbgrid"
        return reply

    def _handle(self, request):
        name = request.command_name
        if name is None:
            return False
        document = dict(request.doc)
        with self.lock:
            if name not in ("hello", "ismaster", "isMaster", "ping", "endSessions"):
                self.commands.append((name, document))
            reply = self._reply(name, document)
        if reply is None:
            return request.command_err(59, "no such command: '%s'" % name)
        return request.ok(reply)

    def _reply(self, name, document):
        if name in ("hello", "ismaster", "isMaster"):
            return self._hello()
        if name in ("ping", "endSessions"):
            return {}
        if name == "buildInfo":
            major, minor, patch = (int(part) for part in self.version.split("."))
            return {"version": self.version, "versionArray": [major, minor, patch, 0], "gitVersion": "0" * 40}
        if self.set_name or self.standalone:  # not a mongos: no cluster commands (CommandNotFound)
            return None
        return self._cluster_reply(name, document)

    def _cluster_reply(self, name, document):
        if name == "flushRouterConfig":
            return {}
        if name == "listShards":
            return {"shards": [{"_id": shard, "host": host, "state": 1, "topologyTime": bson.Timestamp(1700000000, 1)}
                               for shard, host in sorted(self.shards.items())]}
        if name == "getShardMap":
            return {"map": dict(self.shards, config=self.config), "hosts": {}, "connStrings": {}}
        if name == "shardCollection":
            return {"collectionsharded": document["shardCollection"]}
        if name == "balancerStatus":
            if self.next_modes:
                self.mode = self.next_modes.pop(0)
            in_round = self.round_polls > 0
            self.round_polls = max(0, self.round_polls - 1)
            return {"mode": self.mode, "inBalancerRound": in_round, "numBalancerRounds": bson.Int64(86)}
        if name in ("balancerStop", "balancerStart"):
            self.mode = "off" if name == "balancerStop" else "full"
            self.settings.update(mode=self.mode, stopped=self.mode == "off")
            return {}
        if name == "aggregate" and document.get("pipeline", [{}])[0].get("$currentOp") is not None:
            ops = self.migration_ops if self.migration_polls > 0 else []
            self.migration_polls = max(0, self.migration_polls - 1)
            return {"cursor": {"id": bson.Int64(0), "ns": "admin.$cmd.aggregate", "firstBatch": ops}}
        if name == "find" and document.get("$db") == "config" and document["find"] == "settings":
            found = [dict(self.settings)] if document.get("filter") == {"_id": "balancer"} else []
            return {"cursor": {"id": bson.Int64(0), "ns": "config.settings", "firstBatch": found}}
        if name == "update" and document.get("$db") == "config" and document["update"] == "settings":
            return self._update(document["updates"][0])
        return None

    def _update(self, update):
        assert update["q"] == {"_id": "balancer"} and update.get("upsert") is True, update
        for field, value in update["u"].get("$set", {}).items():
            self.settings[field] = value
        for field in update["u"].get("$unset", {}):
            self.settings.pop(field, None)
        return {"n": 1, "nModified": 1}


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
