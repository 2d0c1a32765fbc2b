"""Protocol tests for mongodb_fsync_lock and the fsync_locked role: the test server has no fsync
lock, so mockupdb answers hello, buildInfo, currentOp, fsync, fsyncUnlock and the oplog read with
replies shaped as MongoDB 7/8 send them, and keeps the lock count as the server does."""

import threading

import bson
import pytest
from mockupdb import MockupDB

import support
from ansible_collections.dbops.mongodb_backup.plugins.module_utils import errors
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.cluster import fsync_lock
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import versions

pytestmark = pytest.mark.protocol

MODULE = "dbops.mongodb_backup.mongodb_fsync_lock"
NEWEST_TS = bson.Timestamp(1714521600, 3)
WIRE = {"5.0": 13, "6.0": 17, "7.0": 21, "7.1": 22, "8.0": 25}
STATE_CHANGING = ("fsync", "fsyncUnlock")


def _hello(role, version):
    wire = WIRE.get(".".join(version.split(".")[:2]), 25)
    doc = {"maxWireVersion": wire, "minWireVersion": 0, "maxBsonObjectSize": 16777216,
           "maxMessageSizeBytes": 48000000, "maxWriteBatchSize": 100000, "logicalSessionTimeoutMinutes": 30,
           "connectionId": 7, "readOnly": False, "localTime": bson.datetime.datetime(2024, 5, 1)}
    if role == "mongos":
        doc.update(isWritablePrimary=True, msg="isdbgrid")
    elif role == "standalone":
        doc.update(isWritablePrimary=True)
    else:
        doc.update(setName="rs0", setVersion=5, hosts=["db1:27017", "db2:27017", "db3:27017"],
                   primary="db1:27017", me="db1:27017" if role == "primary" else "db2:27017",
                   isWritablePrimary=role == "primary", secondary=role == "secondary")
    return doc


class FsyncServer:
    """A mockupdb server with the lock count and the commands it received (in order)."""

    def __init__(self, role="secondary", version="8.0.4", lock_count=0, lock_age=None):
        self.role, self.version = role, version
        self.lock_count, self.lock_age = lock_count, lock_age
        self.commands = []
        self.fail_oplog_read = False
        self.replica_set = None  # (replSetGetStatus, replSetGetConfig) replies, for member selection
        self._mutex = threading.Lock()
        self.server = MockupDB(auto_ismaster=False)
        # mockupdb asks the newest autoresponder first: the catch-all goes in before hello and buildInfo.
        self.server.autoresponds(self._handle)
        hello = _hello(role, version)
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
                status, config = self.replica_set
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


@pytest.fixture(name="mock")
def fixture_mock():
    servers = []

    def make(**kwargs):
        servers.append(FsyncServer(**kwargs))
        return servers[-1]

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


def _run(server, **kwargs):
    options = client_utils.ConnectionOptions(uri=server.uri, connect_timeout=3, socket_timeout=5)
    client = fsync_lock.connect_one(options)
    try:
        return fsync_lock.run(client, client_utils.server_facts(client), **kwargs)
    finally:
        client.close()


def _module_task(tmp_path, **options):
    """The module through ansible-playbook, with short timeouts so that a missing reply fails, never hangs."""
    return support.run_module_task(tmp_path, MODULE, connect_timeout=3, socket_timeout=10, **options)


# ----------------------------------------------------------------------------- engine


def test_protocol_lock_then_lock_again_sends_one_fsync(mock):
    server = mock(role="secondary", version="8.0.4")
    changed, result, warnings = _run(server, state="locked")
    assert changed is True and warnings == []
    assert result["before"] == {"locked": False, "lock_count": 0}
    assert result["locked"] is True and result["lock_count"] == 1 and result["role"] == "secondary"
    assert result["oplog_time_at_lock"] == {"ts": "1714521600:3", "t": 1714521600, "i": 3,
                                            "time": "2024-05-01T00:00:00Z"}
    changed, result, _warnings = _run(server, state="locked")
    assert changed is False
    assert result["before"] == {"locked": True, "lock_count": None} and result["locked"] is True
    assert result["oplog_time_at_lock"]["ts"] == "1714521600:3"
    assert server.sent(*STATE_CHANGING) == ["fsync"] and server.lock_count == 1


def test_protocol_unlock_releases_every_level_then_is_idempotent(mock):
    server = mock(role="secondary", version="7.0.12", lock_count=3, lock_age=20)
    changed, result, warnings = _run(server, state="unlocked")
    assert changed is True and warnings == []
    assert result["before"] == {"locked": True, "lock_count": None} and result["lock_age_seconds"] == 20
    assert result["locked"] is False and result["lock_count"] == 0 and result["released"] == 3
    assert server.sent(*STATE_CHANGING) == ["fsyncUnlock"] * 3 and server.lock_count == 0
    changed, result, _warnings = _run(server, state="unlocked")
    assert changed is False and result["before"] == {"locked": False, "lock_count": 0} and result["released"] == 0
    assert server.sent(*STATE_CHANGING) == ["fsyncUnlock"] * 3


def test_protocol_report_only_sends_nothing_that_changes_state(mock):
    server = mock(role="secondary", lock_count=1, lock_age=12)
    changed, result, warnings = _run(server)
    assert changed is False and warnings == []
    assert result["locked"] is True and result["lock_age_seconds"] == 12
    assert result["oplog_time_at_lock"]["ts"] == "1714521600:3"
    unlocked = mock(role="primary")
    changed, result, _warnings = _run(unlocked)
    assert changed is False and result["locked"] is False and result["oplog_time_at_lock"] is None
    assert server.sent(*STATE_CHANGING) == [] and unlocked.sent(*STATE_CHANGING) == []
    assert server.lock_count == 1


def test_protocol_check_mode_plans_without_locking_or_unlocking(mock):
    server = mock(role="secondary")
    changed, result, _warnings = _run(server, state="locked", check_mode=True)
    assert changed is True and result["locked"] is True and result["lock_count"] == 1
    assert result["oplog_time_at_lock"] is None
    locked = mock(role="secondary", lock_count=2)
    changed, result, _warnings = _run(locked, state="unlocked", check_mode=True)
    assert changed is True and result["locked"] is False and result["released"] == 0
    assert server.sent(*STATE_CHANGING) == [] and locked.sent(*STATE_CHANGING) == []
    assert locked.lock_count == 2


def test_protocol_primary_refused_without_allow_primary_and_locked_with_it(mock):
    server = mock(role="primary", version="7.0.12")
    with pytest.raises(errors.FsyncLockError) as caught:
        _run(server, state="locked")
    assert "primary of replica set rs0" in caught.value.message
    assert "stops writes for the whole replica set" in caught.value.message
    assert "allow_primary" in caught.value.message
    assert server.sent(*STATE_CHANGING, "currentOp") == []
    changed, result, _warnings = _run(server, state="locked", allow_primary=True)
    assert changed is True and result["role"] == "primary" and server.lock_count == 1


@pytest.mark.parametrize("version", ["7.0.1", "6.0.10", "5.0.21", "6.3.2"])
def test_protocol_old_mongos_refused_naming_the_version(mock, version):
    server = mock(role="mongos", version=version)
    with pytest.raises(errors.FsyncLockError) as caught:
        _run(server, state="locked")
    message = caught.value.message
    assert "mongos of MongoDB %s" % version in message
    assert versions.CLUSTER_FSYNC_LOCK_NEEDED in message
    assert server.sent(*STATE_CHANGING) == []


@pytest.mark.parametrize("version", ["7.1.0", "7.0.2", "6.0.11", "5.0.22", "8.0.4"])
def test_protocol_mongos_with_cluster_wide_lock_is_locked(mock, version):
    server = mock(role="mongos", version=version)
    changed, result, _warnings = _run(server, state="locked")
    assert changed is True and result["role"] == "mongos" and result["lock_count"] == 1
    assert result["oplog_time_at_lock"] is None  # a mongos has no oplog; reading local through it fails
    assert server.sent(*STATE_CHANGING) == ["fsync"] and server.sent("find") == []


def test_protocol_stale_lock_fails_locked_and_warns_on_unlock(mock):
    server = mock(role="secondary", lock_count=1, lock_age=900)
    with pytest.raises(errors.FsyncLockError) as caught:
        _run(server, state="locked", max_lock_seconds=300)
    assert "fsync-locked for 15m" in caught.value.message and "max_lock_seconds=300" in caught.value.message
    assert server.sent(*STATE_CHANGING) == [] and server.lock_count == 1
    changed, _result, warnings = _run(server, state="unlocked", max_lock_seconds=300)
    assert changed is True and server.lock_count == 0
    assert len(warnings) == 1 and "longer than max_lock_seconds=300" in warnings[0]


def test_protocol_failed_oplog_read_after_lock_releases_the_lock(mock):
    server = mock(role="secondary")
    server.fail_oplog_read = True
    with pytest.raises(errors.FsyncLockError) as caught:
        _run(server, state="locked")
    assert "reading its newest oplog entry failed" in caught.value.message
    assert "the lock was released again (1 level(s))" in caught.value.message
    assert server.sent(*STATE_CHANGING) == ["fsync", "fsyncUnlock"] and server.lock_count == 0


def test_protocol_uri_with_several_hosts_is_refused():
    options = client_utils.ConnectionOptions(uri="mongodb://db1.example.com:27017,db2.example.com:27017/")
    with pytest.raises(errors.InvalidOption) as caught:
        fsync_lock.connect_one(options)
    assert "names 2 hosts" in caught.value.message and "one server" in caught.value.message


def test_mongos_fsync_lock_version_rule():
    assert [v for v in ("5.0.21", "5.0.22", "6.0.10", "6.0.11", "6.1.0", "7.0.1", "7.0.2", "7.1.0", "8.0.0",
                        "7.0.2-rc0", None) if versions.mongos_supports_fsync_lock(v)] == [
        "5.0.22", "6.0.11", "7.0.2", "7.1.0", "8.0.0", "7.0.2-rc0"]


# ----------------------------------------------------------------------------- through ansible-playbook


def test_protocol_module_lock_and_unlock(mock, tmp_path):
    server = mock(role="secondary", version="8.0.4")
    locked = _module_task(tmp_path, uri=server.uri, state="locked")
    assert locked.get("failed") is not True, locked
    assert locked["changed"] is True and locked["locked"] is True and locked["lock_count"] == 1
    assert locked["before"] == {"locked": False, "lock_count": 0}
    assert locked["oplog_time_at_lock"]["ts"] == "1714521600:3" and locked["role"] == "secondary"
    assert locked["member"] == server.uri.split("//")[1].rstrip("/")
    unlocked = _module_task(tmp_path, uri=server.uri, state="unlocked")
    assert unlocked["changed"] is True and unlocked["locked"] is False and unlocked["lock_count"] == 0
    assert server.sent(*STATE_CHANGING) == ["fsync", "fsyncUnlock"] and server.lock_count == 0


def test_protocol_module_check_mode_sends_no_lock(mock, tmp_path):
    server = mock(role="secondary")
    result = _module_task(tmp_path, check=True, uri=server.uri, state="locked")
    assert result["changed"] is True and result["locked"] is True
    assert server.sent(*STATE_CHANGING) == [] and server.lock_count == 0


def test_protocol_module_refuses_primary(mock, tmp_path):
    server = mock(role="primary")
    result = _module_task(tmp_path, uri=server.uri, state="locked")
    assert result["failed"] is True and result["changed"] is False
    assert "stops writes for the whole replica set" in result["msg"] and "allow_primary" in result["msg"]
    assert server.sent(*STATE_CHANGING) == []


@pytest.mark.parametrize("version", ["7.0.1", "6.0.10"])
def test_protocol_module_refuses_old_mongos(mock, tmp_path, version):
    server = mock(role="mongos", version=version)
    result = _module_task(tmp_path, uri=server.uri, state="locked")
    assert result["failed"] is True
    assert "MongoDB %s" % version in result["msg"] and versions.CLUSTER_FSYNC_LOCK_NEEDED in result["msg"]
    assert server.sent(*STATE_CHANGING) == []


ROLE_PLAY = """
- hosts: localhost
  gather_facts: false
  module_defaults:
    group/dbops.mongodb_backup.mongodb:
      uri: "{{{{ lookup('ansible.builtin.env', 'MONGODB_URI') }}}}"
      connect_timeout: 3
      socket_timeout: 5
  roles:
    - role: dbops.mongodb_backup.fsync_locked
      vars:
        fsync_locked_tasks: "{tasks}"
"""

FAILING_TASKS = """
- name: Record the lock time seen inside the window
  ansible.builtin.copy:
    content: "{{ fsync_locked_result.oplog_time_at_lock.ts }}"
    dest: "{marker}"
    mode: "0600"

- name: A snapshot step that fails
  ansible.builtin.fail:
    msg: snapshot failed on purpose
"""


def test_protocol_role_unlocks_after_a_failed_step(mock, tmp_path):
    server = mock(role="secondary", version="7.0.12")
    marker = tmp_path / "inside.txt"
    tasks = tmp_path / "snapshot.yml"
    tasks.write_text(FAILING_TASKS.replace("{marker}", str(marker)))
    code, out = support.run_playbook(ROLE_PLAY.format(tasks=tasks), tmp_path, server=server)
    assert code != 0, out
    assert "snapshot failed on purpose" in out
    assert marker.read_text() == "1714521600:3"  # the step ran under the lock
    assert server.sent(*STATE_CHANGING) == ["fsync", "fsyncUnlock"], out
    assert server.lock_count == 0


def test_protocol_role_leaves_a_lock_it_found(mock, tmp_path):
    server = mock(role="secondary", lock_count=1, lock_age=5)
    tasks = tmp_path / "noop.yml"
    tasks.write_text("- name: Nothing\n  ansible.builtin.debug:\n    msg: locked\n")
    code, out = support.run_playbook(ROLE_PLAY.format(tasks=tasks), tmp_path, server=server)
    assert code == 0, out
    assert server.sent(*STATE_CHANGING) == [] and server.lock_count == 1


# ----------------------------------------------------------------------------- member selection


def _replica_set_with(hidden_host, secondary_lag=0):
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


def test_protocol_member_auto_locks_the_hidden_member_and_the_unlock_goes_straight_to_it(mock, tmp_path):
    """member: auto asks the set for its members and locks the hidden one, though it lags a little more than
    the other secondary; the unlock names the member the lock returned."""
    server = mock(role="secondary")
    address = "%s:%d" % server.server.address
    server.replica_set = _replica_set_with(address)
    locked = _module_task(tmp_path, uri=server.uri, direct_connection=True, member="auto", state="locked")
    assert not locked.get("failed"), locked
    assert locked["selection"]["host"] == address and locked["selection"]["hidden"] is True
    assert "hidden" in locked["selection"]["reason"] and locked["member"] == address
    assert server.sent(*STATE_CHANGING) == ["fsync"]
    server.commands.clear()
    unlocked = _module_task(tmp_path, uri=server.uri, direct_connection=True, member=locked["member"],
                            state="unlocked")
    assert not unlocked.get("failed") and unlocked["changed"], unlocked
    assert server.sent(*STATE_CHANGING) == ["fsyncUnlock"] and server.lock_count == 0
    assert server.sent("replSetGetStatus") == []  # an unlock never depends on the set's state


def test_protocol_member_auto_refuses_when_every_secondary_lags_too_much(mock, tmp_path):
    server = mock(role="secondary")
    server.replica_set = _replica_set_with("%s:%d" % server.server.address, secondary_lag=6)
    result = _module_task(tmp_path, uri=server.uri, direct_connection=True, member="auto", max_lag_seconds=2,
                          state="locked")
    assert result.get("failed") and "lag" in result["msg"] and "db3:27017" in result["msg"], result
    assert server.sent(*STATE_CHANGING) == []
