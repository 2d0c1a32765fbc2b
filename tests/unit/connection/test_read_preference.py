"""read_preference unset means what it means for mongodump, in the dump and the oplog archiver alike.

mongodump's rule (mongo-tools common/db/read_preferences.go, NewReadPreference): --readPreference,
else the URI's readPreference, else primary. The native engine reads the client's effective read
preference (pymongo applies the same precedence: keyword over URI, primary by default), and the
mongodump engine passes --readPreference only when the option is set, leaving the rest to mongodump.
"""

import pymongo
import pytest

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import members
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_options
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import mongotools as mongodump_tool

URI = "mongodb://db1:27017,db2:27017/?replicaSet=rs0"


def effective(option, uri):
    """Whether a module with these settings reads from a chosen secondary (the member by health and lag)."""
    options = client_utils.ConnectionOptions(uri=uri, read_preference=option)
    client = pymongo.MongoClient(uri, connect=False, **options.client_kwargs())
    try:
        return members.reads_from_secondary(client)
    finally:
        client.close()


@pytest.mark.parametrize("option, uri_preference, secondary", [
    (None, None, False),                      # unset everywhere: the primary, as mongodump
    (None, "secondaryPreferred", True),       # unset: the URI's
    (None, "nearest", True),
    (None, "primaryPreferred", False),
    ("primary", "secondary", False),          # the option wins over the URI, as --readPreference does
    ("secondaryPreferred", None, True),
    ("secondary", "primary", True),
    ("primaryPreferred", None, False),
])
def test_unset_read_preference_follows_the_uri_then_primary(option, uri_preference, secondary):
    uri = URI + ("&readPreference=%s" % uri_preference if uri_preference else "")
    assert effective(option, uri) is secondary


def test_mongodump_engine_leaves_an_unset_read_preference_to_mongodump():
    options = dump_options.DumpOptions(path="/backups/x", prefer_secondary=False)
    unset = mongodump_tool.build_argv("/usr/bin/mongodump", client_utils.ConnectionOptions(
        uri=URI + "&readPreference=secondary"), options, "/backups/x.partial", "/tmp/cfg.yaml")
    assert not any(arg.startswith("--readPreference") for arg in unset)  # mongodump reads the URI's
    chosen = mongodump_tool.build_argv("/usr/bin/mongodump", client_utils.ConnectionOptions(
        login_host="db1", read_preference="nearest"), options, "/backups/x.partial", "/tmp/cfg.yaml")
    assert "--readPreference=nearest" in chosen


def test_engine_default_is_the_primary():
    assert dump_options.DumpOptions(path="/backups/x").prefer_secondary is False
