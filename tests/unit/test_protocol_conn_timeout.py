"""socket_timeout on its own: a server that answers the driver's heartbeats but never answers one
request (issue 8, defect 13). mockupdb leaves the request unanswered; the replay must fail after
about socket_timeout, naming the entry, instead of waiting forever."""

import time

import bson
import pytest
from mockupdb import MockupDB

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import BackupError
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import replay as oplog_replay
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog.replay import ReplayError

pytestmark = pytest.mark.protocol

HANDSHAKE = ("hello", "ismaster", "isMaster", "ping", "buildInfo", "buildinfo", "endSessions")


@pytest.fixture
def silent_on_data():
    """Answers the handshake and pings; every data request is left without a reply."""
    server = MockupDB()

    def answer(request):
        if request.command_name in HANDSHAKE:
            return request.ok(isWritablePrimary=True, ismaster=True, maxWireVersion=21, minWireVersion=0,
                              version="7.0.12", versionArray=[7, 0, 12, 0])
        return False  # queued, never answered

    server.autoresponds(answer)
    server.run()
    yield server
    server.stop()


def _connect(server, socket_timeout):
    host, port = server.address
    return client_utils.connect(client_utils.ConnectionOptions(
        login_host=host, login_port=port, direct_connection=True, connect_timeout=30,
        socket_timeout=socket_timeout))


def test_the_default_bounds_every_request():
    kwargs = client_utils.ConnectionOptions(login_host="db1").client_kwargs()
    assert kwargs["socketTimeoutMS"] == client_utils.DEFAULT_SOCKET_TIMEOUT * 1000 > 0


def test_zero_means_no_limit_and_negative_is_refused():
    assert client_utils.ConnectionOptions(login_host="db1", socket_timeout=0).client_kwargs()["socketTimeoutMS"] == 0
    with pytest.raises(client_utils.InvalidOption):
        client_utils.ConnectionOptions(login_host="db1", socket_timeout=-1).client_kwargs()


def test_unanswered_update_fails_after_socket_timeout(silent_on_data):
    client = _connect(silent_on_data, socket_timeout=1)
    entry = {"op": "u", "ns": "shop.orders", "o2": {"_id": 7}, "o": {"$v": 2, "diff": {"u": {"n": 1}}},
             "ts": bson.Timestamp(1700000000, 3)}
    started = time.monotonic()
    try:
        with pytest.raises(ReplayError) as failure:
            oplog_replay.OplogReplayer(client, mode="crud").replay([entry])
    finally:
        client.close()
    elapsed = time.monotonic() - started
    # One request and at most one retry, each bounded by socket_timeout; far below connect_timeout.
    assert elapsed < 6, elapsed
    message = failure.value.message
    assert message.startswith("replay stopped at oplog entry op=u ns=shop.orders ts=1700000000:3: "
                              "the server stopped answering (no reply within socket_timeout"), message
    assert "raise socket_timeout" in message


def test_unanswered_oplog_read_fails_the_archiving_after_socket_timeout(silent_on_data, tmp_path):
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import archiver

    client = _connect(silent_on_data, socket_timeout=1)
    options = archiver.ArchiveOptions(str(tmp_path))
    result = {"slices": [], "entries": 0, "bytes": 0}
    started = time.monotonic()
    try:
        with pytest.raises(BackupError) as failure:
            archiver._copy(client.local["oplog.rs"], options, "rs0", bson.Timestamp(1700000000, 1),
                           bson.Timestamp(1700000100, 1), result)
    finally:
        client.close()
    assert time.monotonic() - started < 6
    message = failure.value.message
    assert message.startswith("reading the oplog of rs0 failed after 0 entries: the server stopped answering "
                              "(no reply within socket_timeout"), message
