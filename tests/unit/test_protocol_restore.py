"""Protocol tests for what the test server lacks: users and roles restored with
_mergeAuthzCollections, answered by mockupdb as MongoDB 7/8 documents it."""

import os

import bson
import pytest
from mockupdb import MockupDB

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import restore as restore_engine

pytestmark = pytest.mark.protocol

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
USERSDUMP = os.path.join(REPO, "..", "shared", "compat", "mongo-tools", "mongorestore", "testdata", "usersdump")


@pytest.fixture
def mongod():
    server = MockupDB()
    received = []

    def record(request):
        if request.command_name in ("hello", "ismaster", "isMaster"):
            return request.ok(isWritablePrimary=True, ismaster=True, maxWireVersion=21, minWireVersion=0)
        received.append((request.command_name, request.doc))
        if request.command_name == "insert":
            return request.ok(n=len(request.docs))
        return request.ok()

    server.autoresponds(record)
    server.run()
    server.received = received
    yield server
    server.stop()


def test_users_and_roles_go_through_merge_authz_collections(mongod):
    import pymongo
    client = pymongo.MongoClient(mongod.uri, directConnection=True, serverSelectionTimeoutMS=3000)
    with open(os.path.join(USERSDUMP, "admin", "system.users.bson"), "rb") as handle:
        users = [bytes(bson.encode(doc)) for doc in bson.decode_all(handle.read())]
    with open(os.path.join(USERSDUMP, "admin", "system.roles.bson"), "rb") as handle:
        roles = [bytes(bson.encode(doc)) for doc in bson.decode_all(handle.read())]
    restore_engine.merge_users_and_roles(client, {"users": users, "roles": roles, "version": []}, "", True)
    names = [name for name, _doc in mongod.received]
    assert names.index("insert") < names.index("_mergeAuthzCollections")
    merge = dict(next(doc for name, doc in mongod.received if name == "_mergeAuthzCollections"))
    assert merge["tempUsersCollection"] == "admin.tempusers" and merge["tempRolesCollection"] == "admin.temproles"
    assert merge["db"] == "" and merge["drop"] is True
    inserted = [doc for name, doc in mongod.received if name == "insert"]
    assert {doc["insert"] for doc in inserted} == {"tempusers", "temproles"}
    # the temporary collections are dropped afterwards
    assert [doc["drop"] for name, doc in mongod.received if name == "drop"][-2:] == ["tempusers", "temproles"]


def test_auth_collections_are_never_plain_inserts():
    options = restore_engine.RestoreOptions(source=USERSDUMP)
    planned = restore_engine.plan_restore(restore_engine.open_source(USERSDUMP), options)
    assert [p.target for p in planned] == []  # users, roles and version need restore_users_and_roles
    options = restore_engine.RestoreOptions(source=USERSDUMP, restore_users_and_roles=True)
    planned = restore_engine.plan_restore(restore_engine.open_source(USERSDUMP), options)
    assert sorted(p.item.auth_kind for p in planned) == ["roles", "users", "version"]
