"""mongodb_balancer over the wire: a mockupdb mongos answering balancerStatus, balancerStop/Start,
$currentOp and config.settings as MongoDB 7/8 do, and a replica-set member that is no mongos."""

import pytest
from mockupdb import MockupDB

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.cluster.balancer import Balancer
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import ClusterError
from cluster_bed import MockMongos
from support import run_module_task

pytestmark = pytest.mark.protocol

MODULE = "dbops.mongodb_backup.mongodb_balancer"
CHANGES = ("balancerStop", "balancerStart", "update")


@pytest.fixture
def mongos():
    server = MockMongos({"shardA": "shardA/a1:27018", "shardB": "shardB/b1:27018"}, "cfg/c1:27019",
                        balancer_mode="full")
    yield server
    server.stop()


def _balancer(mongos):
    client = client_utils.connect(client_utils.ConnectionOptions(uri=mongos.uri, connect_timeout=3))
    return client, Balancer(client, poll_interval=0.01)


def _changes(mongos):
    return [name for name in mongos.names() if name in CHANGES]


def test_without_state_it_only_reports(mongos, tmp_path):
    mongos.round_polls, mongos.migration_polls = 5, 5
    result = run_module_task(tmp_path, MODULE, uri=mongos.uri)
    assert result["failed"] is False and result["changed"] is False
    assert result["before"]["enabled"] is True and result["before"]["in_balancer_round"] is True
    assert result["before"]["migrations"] == [{"operation": "_shardsvrMoveRange", "namespace": "shop.orders",
                                               "shard": "shardA", "seconds": 12}]
    assert _changes(mongos) == []


def test_stop_waits_through_a_round_and_a_migration_then_reports_the_state_before(mongos, tmp_path):
    mongos.round_polls, mongos.migration_polls = 3, 4
    result = run_module_task(tmp_path, MODULE, uri=mongos.uri, state="stopped", poll_interval=0.05, wait_timeout=30)
    assert result["failed"] is False and result["changed"] is True
    assert result["before"]["enabled"] is True and result["before"]["mode"] == "full"
    assert result["after"] == {"enabled": False, "mode": "off", "in_balancer_round": False, "migrations": [],
                               "window": None}
    assert mongos.round_polls == 0 and mongos.migration_polls == 0  # it polled until both were over
    assert _changes(mongos) == ["balancerStop"]


def test_stop_on_a_stopped_idle_balancer_changes_nothing(mongos):
    mongos.balancer_mode = "off"
    client, balancer = _balancer(mongos)
    changed, before, after = balancer.stop(wait_timeout=5)
    client.close()
    assert changed is False and before["enabled"] is False
    assert _changes(mongos) == []


def test_a_timeout_fails_naming_what_runs_and_starts_the_balancer_again(mongos, tmp_path):
    mongos.migration_polls = 10 ** 6
    result = run_module_task(tmp_path, MODULE, uri=mongos.uri, state="stopped", poll_interval=0.05, wait_timeout=1)
    assert result["failed"] is True
    assert "did not become idle within 1s" in result["msg"]
    assert "chunk migration (_shardsvrMoveRange of shop.orders on shard shardA" in result["msg"]
    assert "started again" in result["msg"]
    assert _changes(mongos) == ["balancerStop", "balancerStart"]
    assert mongos.balancer_mode == "full"


def test_a_timeout_with_leave_stopped_on_timeout_keeps_it_stopped(mongos):
    mongos.round_polls = 10 ** 6
    client, balancer = _balancer(mongos)
    with pytest.raises(ClusterError) as failure:
        balancer.stop(wait_timeout=0.3, leave_stopped_on_timeout=True)
    client.close()
    assert "a balancer round is in progress" in failure.value.message
    assert "left stopped" in failure.value.message
    assert mongos.balancer_mode == "off" and _changes(mongos) == ["balancerStop"]


def test_start_starts_a_stopped_balancer_and_reports_it_was_stopped(mongos, tmp_path):
    mongos.balancer_mode = "off"
    result = run_module_task(tmp_path, MODULE, uri=mongos.uri, state="started")
    assert result["changed"] is True and result["before"]["enabled"] is False and result["after"]["enabled"] is True
    assert _changes(mongos) == ["balancerStart"]
    result = run_module_task(tmp_path, MODULE, uri=mongos.uri, state="started")
    assert result["changed"] is False and _changes(mongos) == ["balancerStart"]


def test_check_mode_sends_nothing_that_changes_state(mongos, tmp_path):
    result = run_module_task(tmp_path, MODULE, check=True, uri=mongos.uri, state="stopped",
                             window={"start": "23:00", "stop": "05:00"})
    assert result["changed"] is True and result["after"]["enabled"] is False
    assert _changes(mongos) == []


def test_the_window_is_set_and_removed_in_config_settings(mongos, tmp_path):
    result = run_module_task(tmp_path, MODULE, uri=mongos.uri, window={"start": "23:00", "stop": "05:00"})
    assert result["changed"] is True and result["after"]["window"] == {"start": "23:00", "stop": "05:00"}
    assert mongos.settings["balancer"]["activeWindow"] == {"start": "23:00", "stop": "05:00"}
    result = run_module_task(tmp_path, MODULE, uri=mongos.uri, window={"start": "23:00", "stop": "05:00"})
    assert result["changed"] is False
    result = run_module_task(tmp_path, MODULE, uri=mongos.uri, window={})
    assert result["changed"] is True and "activeWindow" not in mongos.settings["balancer"]
    result = run_module_task(tmp_path, MODULE, uri=mongos.uri, window={"start": "25:00", "stop": "05:00"})
    assert result["failed"] is True and "not a time of day HH:MM" in result["msg"]


def test_pointed_at_a_shard_member_it_fails_and_sends_nothing(tmp_path):
    hello = {"maxWireVersion": 21, "minWireVersion": 0, "isWritablePrimary": True, "setName": "shardA"}
    member = MockupDB(auto_ismaster=hello)
    received = []
    member.autoresponds(lambda request: received.append(request.command_name))  # records, answers nothing
    member.autoresponds("hello", **hello)
    member.autoresponds("ping")
    member.run()
    try:
        result = run_module_task(tmp_path, MODULE, uri=member.uri + "/?directConnection=true", state="stopped",
                                 socket_timeout=5)
    finally:
        member.stop()
    assert result["failed"] is True
    assert "needs a mongos" in result["msg"] and "replica set shardA" in result["msg"]
    assert not set(received) & set(CHANGES)
