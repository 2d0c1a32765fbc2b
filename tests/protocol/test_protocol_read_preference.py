"""Over the wire: which member the dump and the oplog archiver read, for each read preference setting.

Both modules pick their reader with ``members.reader_client(client, options,
members.reads_from_secondary(client))``; this runs that choice against a two-member replica set of
mockupdb servers (a primary and a secondary) answering hello, replSetGetStatus and replSetGetConfig
as MongoDB 7/8 do, and checks the member read from.
"""

import pytest
from mockupdb import MockupDB

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import members

from test_protocol_members import _replica_set

pytestmark = pytest.mark.protocol


@pytest.fixture(name="replica_set", scope="module")
def fixture_replica_set():
    servers = [MockupDB(), MockupDB()]
    for server in servers:
        server.run()
    hosts = ["%s:%s" % server.address for server in servers]
    status, config = _replica_set([(hosts[0], 1, 0, 1.0, {}), (hosts[1], 2, 0, 1.0, {})])
    for index, server in enumerate(servers):
        hello = {"maxWireVersion": 21, "minWireVersion": 0, "setName": "rs0", "hosts": hosts, "me": hosts[index],
                 "isWritablePrimary": index == 0, "secondary": index == 1, "primary": hosts[0],
                 "setVersion": 5}
        server.autoresponds("hello", hello)
        server.autoresponds("ismaster", hello)
        server.autoresponds("ping")
        server.autoresponds("replSetGetStatus", **status)
        server.autoresponds("replSetGetConfig", config=config)
    try:
        yield hosts
    finally:
        for server in servers:
            server.stop()


@pytest.mark.parametrize("option, uri_preference, reads", [
    (None, None, "primary"),                       # unset: the primary, as mongodump
    (None, "secondaryPreferred", "secondary"),     # unset: the URI's, as mongodump
    ("primary", "secondaryPreferred", "primary"),  # the option wins, as --readPreference does
    ("secondaryPreferred", None, "secondary"),
    ("primaryPreferred", None, "primary"),
])
def test_protocol_member_read_for_each_setting(replica_set, option, uri_preference, reads):
    primary, secondary = replica_set
    uri = "mongodb://%s,%s/?replicaSet=rs0" % (primary, secondary)
    if uri_preference:
        uri += "&readPreference=" + uri_preference
    options = client_utils.ConnectionOptions(uri=uri, read_preference=option, connect_timeout=3)
    client = client_utils.connect(options)
    try:
        reader, member, selection = members.reader_client(client, options, members.reads_from_secondary(client))
        try:
            assert member == (primary if reads == "primary" else secondary)
            assert selection["host"] == member
            assert "%s:%s" % reader.address == member
        finally:
            if reader is not client:
                reader.close()
    finally:
        client.close()
