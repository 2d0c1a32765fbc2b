"""Protocol tests for the balancer: the test server has no sharding, so a mockupdb server plays the
mongos (hello with msg isdbgrid) and answers balancerStatus, balancerStop, balancerStart,
$currentOp and config.settings as MongoDB 7/8 document them. Its small state machine says for how
many polls a round is still in progress and a migration still runs; every command it receives is
recorded, so each test checks what the cluster saw."""


import bson
import pytest

import support
from cluster_bed import MockMongos
from ansible_collections.dbops.mongodb_backup.plugins.module_utils import errors
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.cluster import balancer
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.cluster.mongos import require_mongos

pytestmark = pytest.mark.protocol

MODULE = "dbops.mongodb_backup.mongodb_balancer"
# Commands that change the balancer or its settings: a report, a check-mode run or a refusal sends none.
WRITES = ("balancerStop", "balancerStart", "update", "insert", "delete", "findAndModify")
EPOCH = bson.ObjectId("65f0a1b2c3d4e5f601234567")


def donor_op(namespace="shop.orders", donor="shard01", recipient="shard02", low=100, high=200, secs=4):
    """A migration as $currentOp through a mongos reports it from the donor shard (MongoDB 7/8)."""
    return {
        "shard": donor, "type": "op", "host": "%s-a.example.net:27018" % donor, "desc": "conn4211",
        "connectionId": 4211, "client_s": "10.0.0.9:40112", "active": True, "opid": "%s:23142" % donor,
        "secs_running": bson.Int64(secs), "microsecs_running": bson.Int64(secs * 1000000 + 1234),
        "op": "command", "ns": namespace, "redacted": False, "numYields": 0, "locks": {},
        "waitingForLock": False, "lockStats": {}, "waitingForFlowControl": False, "flowControlStats": {},
        "command": {"_shardsvrMoveRange": namespace, "toShard": recipient, "min": {"customer": low},
                    "max": {"customer": high}, "waitForDelete": False, "epoch": EPOCH,
                    "collectionTimestamp": bson.Timestamp(1700000000, 3), "fromShard": donor,
                    "maxChunkSizeBytes": bson.Int64(134217728), "forceJumbo": 0, "secondaryThrottle": False,
                    "writeConcern": {"w": 1, "wtimeout": 0}, "$db": "admin"},
    }


def config_op(namespace="shop.orders", recipient="shard02", low=100, high=200):
    """The same migration as the config server runs it for a moveRange sent to a mongos."""
    return {
        "shard": "config", "type": "op", "host": "cfg-a.example.net:27019", "desc": "conn77", "active": True,
        "opid": "config:991", "secs_running": bson.Int64(5), "op": "command", "ns": namespace,
        "command": {"_configsvrMoveRange": namespace, "toShard": recipient, "min": {"customer": low},
                    "max": {"customer": high}, "waitForDelete": False, "forceJumbo": 0,
                    "writeConcern": {"w": "majority", "wtimeout": 60000}, "$db": "admin"},
    }


@pytest.fixture(name="shared_mongos", scope="module")
def fixture_shared_mongos():
    mongos = MockMongos(mode="full")
    try:
        yield mongos
    finally:
        mongos.server.stop()


@pytest.fixture(name="mongos")
def fixture_mongos(shared_mongos):
    shared_mongos.reset(mode="full")
    yield shared_mongos


@pytest.fixture(name="client")
def fixture_client(mongos):
    import pymongo
    client = pymongo.MongoClient(mongos.uri, serverSelectionTimeoutMS=3000, socketTimeoutMS=5000)
    try:
        yield client
    finally:
        client.close()


def run_task(mongos, tmp_path, check=False, **options):
    """The module through ansible-playbook, with short timeouts so nothing hangs."""
    options.setdefault("connect_timeout", 3)
    options.setdefault("socket_timeout", 10)
    return support.run_module_task(tmp_path, MODULE, check=check, uri=mongos.uri, **options)


def assert_no_writes(mongos):
    names = mongos.names()
    assert not [name for name in names if name in WRITES], names


# --------------------------------------------------------------------------- reading the state

def test_protocol_report_only_changes_nothing(mongos, tmp_path):
    mongos.reset(mode="full", round_polls=99, migration_polls=99, migration_ops=[donor_op()],
                 window={"start": "23:00", "stop": "06:00"})
    result = run_task(mongos, tmp_path)
    assert result.get("failed") is not True, result
    assert result["changed"] is False
    assert result["before"] == result["after"]
    state = result["before"]
    assert state["enabled"] is True and state["mode"] == "full" and state["in_balancer_round"] is True
    assert state["window"] == {"start": "23:00", "stop": "06:00"}
    assert [(m["namespace"], m["from_shard"], m["to_shard"]) for m in state["migrations"]] == [
        ("shop.orders", "shard01", "shard02")]
    assert state["migrations"][0]["min"] == {"customer": 100} and state["migrations"][0]["seconds_running"] == 4
    assert_no_writes(mongos)
    # $currentOp through the mongos: every shard's operations, every user's
    stage = mongos.sent("aggregate")[0]["pipeline"][0]["$currentOp"]
    assert stage["allUsers"] is True and stage["localOps"] is False


def test_protocol_one_migration_seen_on_config_server_and_donor_is_one(client, mongos):
    mongos.reset(mode="off", migration_polls=1, migration_ops=[config_op(), donor_op()])
    state = balancer.balancer_state(client)
    assert state == {"enabled": False, "mode": "off", "in_balancer_round": False, "window": None,
                     "migrations": [{"namespace": "shop.orders", "from_shard": "shard01", "to_shard": "shard02",
                                     "min": {"customer": 100}, "max": {"customer": 200},
                                     "command": "_shardsvrMoveRange", "shard": "shard01", "opid": "shard01:23142",
                                     "seconds_running": 4}]}


def test_protocol_legacy_move_chunk_names_the_donor_from_its_shard(client, mongos):
    op = donor_op(namespace="shop.carts", donor="shard03", recipient="shard01")
    op["command"] = {"moveChunk": "shop.carts", "toShard": "shard01", "min": {"_id": bson.MinKey()},
                     "max": {"_id": 0}, "$db": "admin"}
    mongos.reset(mode="full", migration_polls=1, migration_ops=[op])
    migrations = balancer.balancer_state(client)["migrations"]
    assert [(m["namespace"], m["from_shard"], m["to_shard"], m["min"]) for m in migrations] == [
        ("shop.carts", "shard03", "shard01", {"_id": {"$minKey": 1}})]


# --------------------------------------------------------------------------- stopping

def test_protocol_stop_waits_through_round_and_migration(mongos, tmp_path):
    mongos.reset(mode="full", round_polls=3, migration_polls=5, migration_ops=[donor_op()])
    result = run_task(mongos, tmp_path, state="stopped", wait_timeout=20, poll_interval=0.05)
    assert result.get("failed") is not True, result
    assert result["changed"] is True
    assert result["before"]["enabled"] is True and result["before"]["in_balancer_round"] is True
    assert result["before"]["migrations"][0]["namespace"] == "shop.orders"
    assert result["after"] == {"enabled": False, "mode": "off", "in_balancer_round": False, "migrations": [],
                               "window": None}
    names = mongos.names()
    assert names.count("balancerStop") == 1 and "balancerStart" not in names
    # it polled until the round and the migration were over, and not after
    stop_at = names.index("balancerStop")
    assert names[stop_at + 1:].count("balancerStatus") >= 2
    assert mongos.round_polls == 0 and mongos.migration_polls == 0
    assert mongos.sent("balancerStop")[0]["maxTimeMS"] == 20000


def test_protocol_stop_when_already_stopped_and_idle_changes_nothing(client, mongos):
    mongos.reset(mode="off")
    result = balancer.stop_balancer(client, 5, poll_interval=0.05)
    assert result["changed"] is False and result["before"]["mode"] == "off" and result["after"]["mode"] == "off"
    assert_no_writes(mongos)


def test_protocol_stop_when_stopped_still_waits_for_the_finishing_round(client, mongos):
    mongos.reset(mode="off", round_polls=3)
    result = balancer.stop_balancer(client, 5, poll_interval=0.05)
    assert result["changed"] is False
    assert result["before"]["in_balancer_round"] is True and result["after"]["in_balancer_round"] is False
    assert mongos.round_polls == 0
    assert_no_writes(mongos)


def test_protocol_stop_timeout_starts_the_running_balancer_again(mongos, tmp_path):
    mongos.reset(mode="full", round_polls=10 ** 6, migration_polls=10 ** 6,
                 migration_ops=[donor_op(secs=640)])
    result = run_task(mongos, tmp_path, state="stopped", wait_timeout=1, poll_interval=0.05)
    assert result["failed"] is True
    msg = result["msg"]
    assert "did not become idle within 1s" in msg
    assert "a balancer round is still in progress" in msg
    assert "chunk migration of shop.orders from shard shard01 to shard shard02" in msg
    assert "started again, as it was before" in msg
    assert mongos.names().index("balancerStop") < mongos.names().index("balancerStart")
    assert mongos.mode == "full"
    assert result["before"]["enabled"] is True and result["after"]["enabled"] is True
    assert result["balancer_restarted"] is True
    assert result["still_running"]["in_balancer_round"] is True
    assert result["still_running"]["migrations"][0]["seconds_running"] == 640


def test_protocol_stop_timeout_leave_stopped(client, mongos):
    mongos.reset(mode="full", migration_polls=10 ** 6, migration_ops=[donor_op()])
    with pytest.raises(errors.ClusterError) as failure:
        balancer.stop_balancer(client, 0.3, leave_stopped_on_timeout=True, poll_interval=0.05)
    assert "chunk migration of shop.orders" in failure.value.message
    assert "left stopped (leave_stopped_on_timeout); start it again with state: started" in failure.value.message
    assert "balancerStart" not in mongos.names() and mongos.mode == "off"
    assert failure.value.details["balancer_restarted"] is False
    assert failure.value.details["after"]["enabled"] is False


def test_protocol_stop_timeout_of_a_stopped_balancer_keeps_it_stopped(client, mongos):
    mongos.reset(mode="off", round_polls=10 ** 6)
    with pytest.raises(errors.ClusterError) as failure:
        balancer.stop_balancer(client, 0.2, poll_interval=0.05)
    assert "a balancer round is still in progress" in failure.value.message
    assert "stays stopped, as it was before" in failure.value.message
    assert_no_writes(mongos)


def test_protocol_stop_check_mode_sends_no_balancer_stop(mongos, tmp_path):
    mongos.reset(mode="full", round_polls=99)
    result = run_task(mongos, tmp_path, check=True, state="stopped", wait_timeout=5, poll_interval=0.05)
    assert result.get("failed") is not True, result
    assert result["changed"] is True
    assert result["before"]["enabled"] is True and result["after"]["enabled"] is False
    assert result["after"]["mode"] == "off"
    assert_no_writes(mongos)
    assert mongos.mode == "full"


# --------------------------------------------------------------------------- starting

def test_protocol_start_reports_the_previous_state(client, mongos):
    mongos.reset(mode="off")
    result = balancer.start_balancer(client)
    assert result["changed"] is True
    assert result["before"]["enabled"] is False and result["before"]["mode"] == "off"
    assert result["after"]["enabled"] is True and result["after"]["mode"] == "full"
    assert mongos.names().count("balancerStart") == 1 and mongos.mode == "full"


def test_protocol_start_when_running_changes_nothing(client, mongos):
    mongos.reset(mode="full")
    result = balancer.start_balancer(client)
    assert result["changed"] is False and result["before"] == result["after"]
    assert_no_writes(mongos)


def test_protocol_start_check_mode_sends_nothing(client, mongos):
    mongos.reset(mode="off")
    result = balancer.start_balancer(client, check_mode=True)
    assert result["changed"] is True and result["after"]["mode"] == "full"
    assert_no_writes(mongos)
    assert mongos.mode == "off"


# --------------------------------------------------------------------------- not a mongos

def test_protocol_shard_member_is_refused_and_nothing_sent(mongos, tmp_path):
    mongos.reset(set_name="shard01")
    result = run_task(mongos, tmp_path, state="stopped", wait_timeout=5, poll_interval=0.05)
    assert result["failed"] is True
    msg = result["msg"]
    assert "mongodb_balancer needs a mongos" in msg
    assert "a member of replica set shard01" in msg and mongos.server.address_string in msg
    assert "point the connection at a mongos" in msg and "nothing was changed" in msg
    assert_no_writes(mongos)
    assert "balancerStatus" not in mongos.names()


def test_protocol_standalone_is_refused(mongos):
    import pymongo
    mongos.reset(standalone=True)
    client = pymongo.MongoClient(mongos.uri, directConnection=True, serverSelectionTimeoutMS=3000,
                                 socketTimeoutMS=5000)
    try:
        with pytest.raises(errors.ClusterError) as failure:
            require_mongos(client, "stopping the balancer")
    finally:
        client.close()
    assert "stopping the balancer needs a mongos" in failure.value.message
    assert "is a standalone mongod" in failure.value.message
    assert "point the connection at a mongos" in failure.value.message
    assert mongos.names() == []


# --------------------------------------------------------------------------- active window

def test_protocol_window_set_writes_config_settings(mongos, tmp_path):
    mongos.reset(mode="full")
    result = run_task(mongos, tmp_path, window={"start": "23:00", "stop": "6:00"})
    assert result.get("failed") is not True, result
    assert result["changed"] is True
    assert result["before"]["window"] is None
    assert result["after"]["window"] == {"start": "23:00", "stop": "06:00"}
    updates = mongos.sent("update")
    assert len(updates) == 1
    assert updates[0]["updates"][0]["u"] == {"$set": {"activeWindow": {"start": "23:00", "stop": "06:00"}}}
    assert mongos.settings["activeWindow"] == {"start": "23:00", "stop": "06:00"}
    assert "balancerStop" not in mongos.names() and "balancerStart" not in mongos.names()


def test_protocol_window_same_is_no_change(client, mongos):
    mongos.reset(window={"start": "23:00", "stop": "06:00"})
    result = balancer.set_window(client, "23:00", "06:00")
    assert result["changed"] is False
    assert_no_writes(mongos)


def test_protocol_window_cleared_with_empty_dict(mongos, tmp_path):
    mongos.reset(window={"start": "23:00", "stop": "06:00"})
    result = run_task(mongos, tmp_path, window={})
    assert result.get("failed") is not True, result
    assert result["changed"] is True
    assert result["before"]["window"] == {"start": "23:00", "stop": "06:00"} and result["after"]["window"] is None
    assert [doc["updates"][0]["u"] for doc in mongos.sent("update")] == [{"$unset": {"activeWindow": ""}}]
    assert "activeWindow" not in mongos.settings


def test_protocol_window_check_mode_writes_nothing(client, mongos):
    mongos.reset()
    result = balancer.set_window(client, "01:00", "05:00", check_mode=True)
    assert result["changed"] is True and result["after"]["window"] == {"start": "01:00", "stop": "05:00"}
    assert_no_writes(mongos)


@pytest.mark.parametrize("start,stop,problem", [
    ("24:00", "06:00", "window start '24:00' is not a time of day HH:MM"),
    ("23:00", "6.30", "window stop '6.30' is not a time of day HH:MM"),
    ("02:00", "2:00", "start and stop are both 02:00"),
])
def test_protocol_window_bad_times_are_refused_before_anything_sent(client, mongos, start, stop, problem):
    with pytest.raises(errors.InvalidOption) as failure:
        balancer.set_window(client, start, stop)
    assert problem in failure.value.message
    assert mongos.names() == []


def test_protocol_stop_and_window_in_check_mode_predict_both(mongos, tmp_path):
    mongos.reset(mode="full")
    result = run_task(mongos, tmp_path, check=True, state="stopped", window={"start": "22:00", "stop": "04:00"},
                      poll_interval=0.05)
    assert result.get("failed") is not True, result
    assert result["changed"] is True
    assert result["after"]["mode"] == "off" and result["after"]["window"] == {"start": "22:00", "stop": "04:00"}
    assert result["before"]["mode"] == "full" and result["before"]["window"] is None
    assert_no_writes(mongos)
