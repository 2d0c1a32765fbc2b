"""A mongod that can be fsync-locked, for protocol tests: the test server has no fsync lock, so mockupdb
answers hello, buildInfo, currentOp, fsync, fsyncUnlock, the oplog read and (for member selection)
replSetGetStatus/replSetGetConfig with replies shaped as MongoDB 7/8 send them, and keeps the lock count
as the server does. Shared by the fsync-lock module tests and the snapshot role tests."""

import threading

import bson
from mockupdb import MockupDB

NEWEST_TS = bson.Timestamp(1714521600, 3)
WIRE = {"5.0": 13, "6.0": 17, "7.0": 21, "7.1": 22, "8.0": 25}
STATE_CHANGING = ("fsync", "fsyncUnlock")


def _hello(role, version, set_name="rs0"):
    wire = WIRE.get(".".join(version.split(".")[:2]), 25)
    doc = {"maxWireVersion": wire, "minWireVersion": 0, "maxBsonObjectSize": 16777216,
           "maxMessageSizeBytes": 48000000, "maxWriteBatchSize": 100000, "logicalSessionTimeoutMinutes": 30,
           "connectionId": 7, "readOnly": False, "localTime": bson.datetime.datetime(2024, 5, 1)}
    if role == "mongos":
        doc.update(isWritablePrimary=True, msg="isdbgrid")
    elif role == "standalone":
        doc.update(isWritablePrimary=True)
    else:
        doc.update(setName=set_name, setVersion=5, hosts=["db1:27017", "db2:27017", "db3:27017"],
                   primary="db1:27017", me="db1:27017" if role == "primary" else "db2:27017",
                   isWritablePrimary=role == "primary", secondary=role == "secondary")
    return doc


class FsyncServer:
    """A mockupdb server with the lock count and the commands it received (in order)."""

    def __init__(self, role="secondary", version="8.0.4", lock_count=0, lock_age=None, set_name="rs0"):
        self.role, self.version = role, version
        self.lock_count, self.lock_age = lock_count, lock_age
        self.commands = []
        self.fail_oplog_read = False
        self.replica_set = None  # (replSetGetStatus, replSetGetConfig) replies, for member selection
        self.age_after_lock = None  # the lock age currentOp reports once locked (a lock held "too long")
        self._mutex = threading.Lock()
        self.server = MockupDB(auto_ismaster=False)
        # mockupdb asks the newest autoresponder first: the catch-all goes in before hello and buildInfo.
        self.server.autoresponds(self._handle)
        hello = _hello(role, version, set_name)
        self.server.autoresponds("hello", hello)
        self.server.autoresponds("ismaster", hello)
        self.server.autoresponds("isMaster", hello)
        self.server.autoresponds("ping")
        parts = [int(p) for p in version.split(".")] + [0]
        self.server.autoresponds("buildInfo", {"version": version, "versionArray": parts[:4], "gitVersion": "0" * 40,
                                               "bits": 64, "maxBsonObjectSize": 16777216})
        self.server.run()
        self.uri = self.server.uri

    def _handle(self, request):
        name = request.command_name
        with self._mutex:
            self.commands.append(name)
            if name == "currentOp":
                return request.ok(self._current_op())
            if name == "fsync":
                assert request.doc.get("lock") is True
                self.lock_count += 1
                if self.age_after_lock is not None:
                    self.lock_age = self.age_after_lock
                return request.ok(info="now locked against writes, use db.fsyncUnlock() to unlock",
                                  lockCount=bson.Int64(self.lock_count),
                                  seeAlso="https://dochub.mongodb.org/core/fsynccommand")
            if name == "fsyncUnlock":
                if not self.lock_count:
                    return request.reply({"ok": 0, "errmsg": "fsyncUnlock called when not locked",
                                          "code": 20, "codeName": "IllegalOperation"})
                self.lock_count -= 1
                if not self.lock_count:
                    self.lock_age = None
                return request.ok(info="fsyncUnlock completed", lockCount=bson.Int64(self.lock_count))
            if name in ("replSetGetStatus", "replSetGetConfig") and self.replica_set is not None:
                status, config = self.replica_set[0], self.replica_set[1]
                return request.ok(status) if name == "replSetGetStatus" else request.ok(config=config)
            if name == "find" and request.doc.get("find") == "oplog.rs":
                assert request.doc.get("sort") == {"$natural": -1} and request.doc.get("limit") == 1
                if self.fail_oplog_read:
                    return request.reply({"ok": 0, "errmsg": "not authorized on local to execute command",
                                          "code": 13, "codeName": "Unauthorized"})
                return request.ok(cursor={"id": bson.Int64(0), "ns": "local.oplog.rs",
                                          "firstBatch": [{"ts": NEWEST_TS}]})
            return request.ok()  # endSessions and the like

    def _current_op(self):
        if not self.lock_count:
            return {"inprog": []}
        worker = {"type": "op", "host": "db2:27017", "desc": "fsyncLockWorker", "active": True, "opid": 3155664,
                  "op": "none", "ns": "", "command": {}, "numYields": 0, "locks": {"Global": "R"},
                  "waitingForLock": False}
        if self.lock_age is not None:
            worker.update(secs_running=bson.Int64(self.lock_age),
                          microsecs_running=bson.Int64(self.lock_age * 1000000 + 2500))
        return {"inprog": [worker], "fsyncLock": True,
                "info": "use db.fsyncUnlock() to terminate the fsync write/snapshot lock"}

    def sent(self, *names):
        with self._mutex:
            return [c for c in self.commands if c in names]

    def stop(self):
        self.server.stop()


def replica_set_with(hidden_host, secondary_lag=0):
    """replSetGetStatus and replSetGetConfig of a three-member set whose hidden member is ``hidden_host``
    (4 s behind the primary) beside a secondary ``secondary_lag`` seconds behind."""
    now = bson.datetime.datetime(2024, 5, 1, 0, 0, 0)
    hosts = [("db1:27017", 1, "PRIMARY", False, 0), ("db3:27017", 2, "SECONDARY", False, secondary_lag),
             (hidden_host, 2, "SECONDARY", True, 4)]
    status, config = [], []
    for ident, (host, state, state_str, hidden, lag) in enumerate(hosts):
        date = now - bson.datetime.timedelta(seconds=lag)
        optime = {"ts": bson.Timestamp(1714521600 - lag, 1), "t": bson.Int64(3)}
        status.append({"_id": ident, "name": host, "health": 1.0, "state": state, "stateStr": state_str,
                       "uptime": 100, "optime": optime, "optimeDate": date, "optimeDurable": optime,
                       "optimeDurableDate": date, "configVersion": 5, "configTerm": 3})
        config.append({"_id": ident, "host": host, "arbiterOnly": False, "buildIndexes": True, "hidden": hidden,
                       "priority": 0.0 if hidden else 1.0, "tags": {}, "secondaryDelaySecs": bson.Int64(0),
                       "votes": 1})
    return ({"set": "rs0", "date": now, "myState": 2, "term": bson.Int64(3), "members": status},
            {"_id": "rs0", "version": 5, "term": 3, "members": config})
