"""Protocol tests for mongodb_fsync_lock and the fsync_locked role, against the lockable mock mongod of
tests/fsync_bed.py (the test server has no fsync lock)."""

import pytest

import support
from fsync_bed import STATE_CHANGING, FsyncServer, replica_set_with
from ansible_collections.dbops.mongodb_backup.plugins.module_utils import errors
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.cluster import fsync_lock
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import versions

pytestmark = pytest.mark.protocol

MODULE = "dbops.mongodb_backup.mongodb_fsync_lock"


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


def test_protocol_member_auto_locks_the_hidden_member_and_the_unlock_goes_straight_to_it(mock, tmp_path):
    """member: auto asks the set for its members and locks the hidden one, though it lags a little more than
    the other secondary; the unlock names the member the lock returned."""
    server = mock(role="secondary")
    address = "%s:%d" % server.server.address
    server.replica_set = replica_set_with(address)
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
    server.replica_set = replica_set_with("%s:%d" % server.server.address, secondary_lag=6)
    result = _module_task(tmp_path, uri=server.uri, direct_connection=True, member="auto", max_lag_seconds=2,
                          state="locked")
    assert result.get("failed") and "lag" in result["msg"] and "db3:27017" in result["msg"], result
    assert server.sent(*STATE_CHANGING) == []
