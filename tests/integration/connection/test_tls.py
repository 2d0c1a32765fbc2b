"""TLS connections to a real server that listens with a certificate from a test CA."""

import pytest

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump as dump_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_options
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import ConnectionFailure
from support import tls_connection_options


def test_dump_over_tls_with_the_right_ca(tls_server, tmp_path):
    client = client_utils.connect(tls_connection_options(tls_server, tls_ca_file=tls_server.ca_file))
    try:
        client.tlsdb.items.insert_many([{"_id": i} for i in range(25)])
        options = dump_options.DumpOptions(path=str(tmp_path / "tls-backup"), db="tlsdb")
        changed, result = dump_engine.dump(client, options, client_utils.server_facts(client))
    finally:
        client.close()
    assert changed and result["total_documents"] == 25


def test_untrusted_certificate_is_a_tls_error(tls_server):
    with pytest.raises(ConnectionFailure) as failure:
        client_utils.connect(tls_connection_options(tls_server))  # system CAs do not know the test CA
    message = failure.value.message
    assert message.startswith("TLS connection to 127.0.0.1:%d failed" % tls_server.tls_port)
    assert "certificate verify failed" in message
    assert tls_server.password not in message


def test_wrong_ca_file_path_is_reported(tls_server, tmp_path):
    with pytest.raises(ConnectionFailure) as failure:
        client_utils.connect(tls_connection_options(tls_server, tls_ca_file=str(tmp_path / "missing-ca.pem")))
    assert "missing-ca.pem" in failure.value.message
