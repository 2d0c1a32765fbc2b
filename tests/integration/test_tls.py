"""TLS connections to a real server that listens with a certificate from a test CA."""

import pytest
import trustme

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump as dump_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_options
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import ConnectionFailure

import testserver


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    pem = directory / "server.pem"
    certificate.private_key_and_cert_chain_pem.write_to_path(str(pem))
    ca_file = directory / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    server = testserver.start_server(str(directory / "data"), tls_pem=str(pem))
    server.ca_file = str(ca_file)
    yield server
    server.stop()


def _options(server, **extra):
    return client_utils.ConnectionOptions(
        login_host="127.0.0.1", login_port=server.tls_port, login_user=server.username,
        login_password=server.password, direct_connection=True, tls=True, connect_timeout=3, **extra)


def test_dump_over_tls_with_the_right_ca(tls_server, tmp_path):
    client = client_utils.connect(_options(tls_server, tls_ca_file=tls_server.ca_file))
    try:
        client.tlsdb.items.insert_many([{"_id": i} for i in range(25)])
        options = dump_options.DumpOptions(path=str(tmp_path / "tls-backup"), db="tlsdb")
        changed, result = dump_engine.dump(client, options, client_utils.server_facts(client))
    finally:
        client.close()
    assert changed and result["total_documents"] == 25


def test_untrusted_certificate_is_a_tls_error(tls_server):
    with pytest.raises(ConnectionFailure) as failure:
        client_utils.connect(_options(tls_server))  # system CAs do not know the test CA
    message = failure.value.message
    assert message.startswith("TLS connection to 127.0.0.1:%d failed" % tls_server.tls_port)
    assert "certificate verify failed" in message
    assert tls_server.password not in message


def test_wrong_ca_file_path_is_reported(tls_server, tmp_path):
    with pytest.raises(ConnectionFailure) as failure:
        client_utils.connect(_options(tls_server, tls_ca_file=str(tmp_path / "missing-ca.pem")))
    assert "missing-ca.pem" in failure.value.message
