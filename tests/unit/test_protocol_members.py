"""Protocol tests for replica-set member selection: the test server is a standalone mongod
without replica-set status, so mockupdb answers replSetGetStatus and replSetGetConfig with
documents shaped as MongoDB 7/8 return them."""

import datetime

import bson
import pytest
from mockupdb import MockupDB

from ansible_collections.dbops.mongodb_backup.plugins.module_utils import errors
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import members
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import ConnectionFailure

pytestmark = pytest.mark.protocol

NOW = datetime.datetime(2024, 5, 14, 9, 30, 0)
HELLO = {"maxWireVersion": 21, "minWireVersion": 0, "isWritablePrimary": True}


def _status_member(ident, name, state, lag=0, health=1.0, primary_at=NOW):
    """One replSetGetStatus member as MongoDB 7/8 reports it (lag relative to primary_at)."""
    state_str = {1: "PRIMARY", 2: "SECONDARY", 3: "RECOVERING", 5: "STARTUP2", 7: "ARBITER",
                 8: "(not reachable/healthy)"}[state]
    entry = {"_id": ident, "name": name, "health": health, "state": state, "stateStr": state_str,
             "uptime": 86400, "lastHeartbeatMessage": "", "syncSourceHost": "", "syncSourceId": -1,
             "infoMessage": "", "configVersion": 5, "configTerm": 3}
    if state == 7:
        return entry  # arbiters report no optime
    if health == 0:
        date, stamp, term = datetime.datetime(1970, 1, 1), bson.Timestamp(0, 0), bson.Int64(-1)
    else:
        date = primary_at - datetime.timedelta(seconds=lag)
        stamp = bson.Timestamp(int((date - datetime.datetime(1970, 1, 1)).total_seconds()), 1)
        term = bson.Int64(3)
    entry.update(optime={"ts": stamp, "t": term}, optimeDate=date,
                 optimeDurable={"ts": stamp, "t": term}, optimeDurableDate=date,
                 lastAppliedWallTime=date, lastDurableWallTime=date)
    return entry


def _config_member(ident, host, **settings):
    """One replSetGetConfig member with the MongoDB 7/8 defaults."""
    entry = {"_id": ident, "host": host, "arbiterOnly": False, "buildIndexes": True, "hidden": False,
             "priority": 1.0, "tags": {}, "secondaryDelaySecs": bson.Int64(0), "votes": 1}
    entry.update(settings)
    return entry


def _replica_set(specs):
    """(status, config) for [(host, state, lag, health, config settings)]."""
    status_members, config_members = [], []
    for ident, (host, state, lag, health, settings) in enumerate(specs):
        status_members.append(_status_member(ident, host, state, lag=lag, health=health))
        config_members.append(_config_member(ident, host, **settings))
    status = {"set": "rs0", "date": NOW, "myState": 1, "term": bson.Int64(3), "heartbeatIntervalMillis": 2000,
              "majorityVoteCount": 2, "writeMajorityCount": 2, "members": status_members}
    config = {"_id": "rs0", "version": 5, "term": 3, "protocolVersion": bson.Int64(1),
              "writeConcernMajorityJournalDefault": True, "members": config_members,
              "settings": {"chainingAllowed": True, "heartbeatIntervalMillis": 2000,
                           "electionTimeoutMillis": 10000, "replicaSetId": bson.ObjectId()}}
    return status, config


class _Mongo:
    """One mockupdb server for the module (stopping one takes a second); each test's
    autoresponders are cancelled when the test ends."""

    def __init__(self, server, client):
        self.server = server
        self.client = client
        self.responders = []

    def responds(self, handler):
        self.responders.append(self.server.autoresponds(handler))

    def reset(self):
        while self.responders:
            self.responders.pop().cancel()


@pytest.fixture(name="shared_mongo", scope="module")
def fixture_shared_mongo():
    server = MockupDB()
    server.autoresponds("hello", HELLO)
    server.autoresponds("ismaster", HELLO)
    server.autoresponds("ping")
    server.run()
    client = None
    try:
        import pymongo
        client = pymongo.MongoClient(server.uri, directConnection=True, serverSelectionTimeoutMS=3000)
        yield _Mongo(server, client)
    finally:
        if client is not None:
            client.close()
        server.stop()


@pytest.fixture(name="mongo")
def fixture_mongo(shared_mongo):
    try:
        yield shared_mongo
    finally:
        shared_mongo.reset()


def _select(mongo, specs, **kwargs):
    status, config = _replica_set(specs)
    mongo.responds(lambda r: r.command_name == "replSetGetStatus" and r.ok(status))
    mongo.responds(lambda r: r.command_name == "replSetGetConfig" and r.ok({"config": config}))
    return members.select_member(mongo.client, **kwargs)


PRIMARY = ("db1:27017", 1, 0, 1.0, {})


def test_protocol_hidden_member_is_preferred(mongo):
    chosen = _select(mongo, [PRIMARY, ("db2:27017", 2, 1, 1.0, {}),
                             ("db3:27017", 2, 4, 1.0, {"hidden": True, "priority": 0.0})])
    assert chosen["host"] == "db3:27017" and chosen["hidden"] is True
    assert chosen["state"] == "SECONDARY" and chosen["lag_seconds"] == 4
    assert "hidden" in chosen["reason"]


def test_protocol_hidden_preference_can_be_disabled(mongo):
    chosen = _select(mongo, [PRIMARY, ("db2:27017", 2, 1, 1.0, {}),
                             ("db3:27017", 2, 4, 1.0, {"hidden": True, "priority": 0.0})], prefer_hidden=False)
    assert chosen["host"] == "db2:27017" and chosen["hidden"] is False


def test_protocol_hidden_member_beyond_max_lag_is_skipped(mongo):
    chosen = _select(mongo, [PRIMARY, ("db2:27017", 2, 3, 1.0, {}),
                             ("db3:27017", 2, 120, 1.0, {"hidden": True, "priority": 0.0})], max_lag_seconds=60)
    assert chosen["host"] == "db2:27017" and chosen["lag_seconds"] == 3
    assert "db3:27017 (120s)" in chosen["reason"]


def test_protocol_least_lag_secondary_is_chosen_ties_by_name(mongo):
    chosen = _select(mongo, [PRIMARY, ("db4:27017", 2, 7, 1.0, {}), ("db3:27017", 2, 2, 1.0, {}),
                             ("db2:27017", 2, 2, 1.0, {})])
    assert chosen == {"host": "db2:27017", "state": "SECONDARY", "hidden": False, "lag_seconds": 2,
                      "reason": "healthy secondary with the least replication lag (2s)"}


def test_protocol_lag_from_optime_timestamps_when_optime_date_is_missing(mongo):
    status, config = _replica_set([PRIMARY, ("db2:27017", 2, 12, 1.0, {}), ("db3:27017", 2, 5, 1.0, {})])
    for entry in status["members"]:
        entry.pop("optimeDate", None)
    mongo.responds(lambda r: r.command_name == "replSetGetStatus" and r.ok(status))
    mongo.responds(lambda r: r.command_name == "replSetGetConfig" and r.ok({"config": config}))
    chosen = members.select_member(mongo.client)
    assert chosen["host"] == "db3:27017" and chosen["lag_seconds"] == 5


def test_protocol_every_secondary_lagging_is_refused(mongo):
    with pytest.raises(errors.MemberSelectionError) as info:
        _select(mongo, [PRIMARY, ("db3:27017", 2, 310, 1.0, {}), ("db2:27017", 2, 95, 1.0, {})],
                max_lag_seconds=60)
    assert str(info.value) == (
        "every secondary lags more than max_lag_seconds=60: db2:27017 lags 95s, db3:27017 lags 310s; "
        "wait for them to catch up, raise max_lag_seconds, or set member")


def test_protocol_delayed_arbiter_unhealthy_recovering_and_no_index_members_are_excluded(mongo):
    chosen = _select(mongo, [
        PRIMARY,
        ("db2:27017", 2, 3600, 1.0, {"hidden": True, "priority": 0.0, "secondaryDelaySecs": bson.Int64(3600)}),
        ("arb:27017", 7, 0, 1.0, {"arbiterOnly": True, "priority": 0.0}),
        ("db3:27017", 8, 0, 0.0, {}),
        ("db4:27017", 3, 0, 1.0, {}),
        ("db5:27017", 2, 0, 1.0, {"buildIndexes": False, "hidden": True, "priority": 0.0}),
        ("db6:27017", 2, 30, 1.0, {}),
    ])
    assert chosen["host"] == "db6:27017" and chosen["lag_seconds"] == 30
    for note in ("db2:27017 is delayed by 3600s", "arb:27017 is an arbiter", "db3:27017 unreachable",
                 "db4:27017 is RECOVERING", "db5:27017 has buildIndexes: false"):
        assert note in chosen["reason"]


def test_protocol_legacy_slave_delay_is_excluded(mongo):
    legacy = {"slaveDelay": 600, "priority": 0.0, "hidden": True}
    chosen = _select(mongo, [PRIMARY, ("db2:27017", 2, 600, 1.0, legacy), ("db3:27017", 2, 9, 1.0, {})])
    assert chosen["host"] == "db3:27017"


def test_protocol_without_primary_lag_is_relative_to_the_freshest_member(mongo):
    chosen = _select(mongo, [("db1:27017", 8, 0, 0.0, {}), ("db2:27017", 2, 20, 1.0, {}),
                             ("db3:27017", 2, 50, 1.0, {})], max_lag_seconds=10)
    assert chosen["host"] == "db2:27017" and chosen["lag_seconds"] == 0
    with pytest.raises(errors.MemberSelectionError, match="neither a healthy secondary nor a primary"):
        _select(mongo, [("db1:27017", 8, 0, 0.0, {}), ("db2:27017", 3, 0, 1.0, {})])


def test_protocol_forced_member_is_used_even_when_delayed(mongo):
    specs = [PRIMARY, ("db2:27017", 2, 1, 1.0, {}),
             ("db3:27017", 2, 3600, 1.0, {"hidden": True, "priority": 0.0, "secondaryDelaySecs": bson.Int64(3600)})]
    chosen = _select(mongo, specs, member="DB3")
    assert chosen["host"] == "db3:27017" and chosen["lag_seconds"] == 3600
    assert chosen["reason"].startswith("forced by the member option")
    with pytest.raises(errors.MemberSelectionError, match="lags 3600s, more than max_lag_seconds=60"):
        _select(mongo, specs, member="db3:27017", max_lag_seconds=60)
    primary = _select(mongo, specs, member="db1:27017", max_lag_seconds=0)
    assert primary["state"] == "PRIMARY" and primary["lag_seconds"] == 0


def test_protocol_forced_member_unknown_or_unusable_is_refused(mongo):
    specs = [PRIMARY, ("db2:27017", 2, 1, 1.0, {}), ("db3:27017", 3, 0, 1.0, {}),
             ("arb:27017", 7, 0, 1.0, {"arbiterOnly": True, "priority": 0.0})]
    with pytest.raises(errors.MemberSelectionError) as info:
        _select(mongo, specs, member="db9:27017")
    message = str(info.value)
    assert "member db9:27017 is not in the configuration of replica set rs0" in message
    assert "db1:27017 (PRIMARY), db2:27017 (SECONDARY), db3:27017 (RECOVERING)" in message
    with pytest.raises(errors.MemberSelectionError, match="db3:27017: it is RECOVERING"):
        _select(mongo, specs, member="db3:27017")
    with pytest.raises(errors.MemberSelectionError, match="arbiter"):
        _select(mongo, specs, member="arb:27017")


def test_protocol_no_secondary_falls_back_to_the_primary_or_refuses(mongo):
    specs = [PRIMARY, ("db2:27017", 8, 0, 0.0, {}), ("db3:27017", 5, 0, 1.0, {})]
    chosen = _select(mongo, specs)
    assert chosen == {"host": "db1:27017", "state": "PRIMARY", "hidden": False, "lag_seconds": 0,
                      "reason": "no healthy secondary; reading from the primary"}
    with pytest.raises(errors.MemberSelectionError) as info:
        _select(mongo, specs, allow_primary=False)
    message = str(info.value)
    assert "no healthy secondary in replica set rs0" in message and "reading from the primary is not allowed" in message
    assert "db2:27017 unreachable or unhealthy, db3:27017 is STARTUP2" in message


def test_protocol_standalone_and_unauthorized_errors(mongo):
    mongo.responds(lambda r: r.command_name == "replSetGetStatus" and r.command_err(
        code=76, errmsg="not running with --replSet"))
    with pytest.raises(errors.MemberSelectionError, match="not a replica set member"):
        members.select_member(mongo.client)
    mongo.responds(lambda r: r.command_name == "replSetGetStatus" and r.command_err(
        code=13, errmsg="not authorized on admin to execute command"))
    with pytest.raises(errors.MemberSelectionError, match="clusterMonitor"):
        members.select_member(mongo.client)


def test_protocol_pinned_client_talks_to_the_chosen_member_only(mongo):
    host = "%s:%s" % mongo.server.address
    options = client_utils.ConnectionOptions(
        uri="mongodb://elsewhere:1,other:2/?replicaSet=rs0&readPreference=secondary", connect_timeout=3)
    pinned = members.pinned_client(options, host)
    try:
        assert "%s:%s" % pinned.address == host
        assert pinned.topology_description.topology_type_name == "Single"
        assert pinned.options.read_preference.mongos_mode == "secondaryPreferred"
    finally:
        pinned.close()


def test_protocol_pinned_client_keeps_credentials_and_tls_but_not_discovery():
    from_uri = client_utils.pinned_kwargs(client_utils.ConnectionOptions(
        uri="mongodb://backup:s3cret@a:1,b:2/?replicaSet=rs0&tls=true&authSource=ops&readPreference=secondary"))
    lowered = dict((key.lower(), value) for key, value in from_uri.items())
    assert lowered["username"] == "backup" and lowered["password"] == "s3cret"
    assert lowered["tls"] is True and lowered["authsource"] == "ops"
    assert "replicaset" not in lowered and lowered["directconnection"] is True
    assert lowered["readpreference"] == "secondaryPreferred"
    from_params = client_utils.pinned_kwargs(client_utils.ConnectionOptions(
        login_user="backup", login_password="s3cret", tls=True, tls_ca_file="/ca.pem", replica_set="rs0"))
    assert from_params["username"] == "backup" and from_params["authSource"] == "admin"
    assert from_params["tlsCAFile"] == "/ca.pem" and "replicaSet" not in from_params


def test_protocol_pinned_client_unreachable_member_is_a_connection_failure():
    options = client_utils.ConnectionOptions(login_host="localhost", connect_timeout=0.2)
    with pytest.raises(ConnectionFailure, match="127.0.0.1:9"):
        members.pinned_client(options, "127.0.0.1:9")


@pytest.mark.parametrize("host, expected", [
    ("db2:27018", ("db2", 27018)), ("db2", ("db2", 27017)), ("[::1]:27019", ("::1", 27019)), ("[::1]", ("::1", 27017)),
])
def test_protocol_split_host(host, expected):
    assert members.split_host(host) == expected
