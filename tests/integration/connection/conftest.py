"""One loopback test server that listens with a certificate from a test CA, for the TLS tests."""

import pytest
import trustme

from support import start_test_server


@pytest.fixture(scope="package")
def tls_server(tmp_path_factory):
    """``ca_file`` is the CA that signed the server's certificate; ``directory`` also holds ``client.pem``,
    a client certificate from the same CA."""
    directory = tmp_path_factory.mktemp("tls")
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    pem = directory / "server.pem"
    certificate.private_key_and_cert_chain_pem.write_to_path(str(pem))
    authority.cert_pem.write_to_path(str(directory / "ca.pem"))
    authority.issue_cert("backup@example.com").private_key_and_cert_chain_pem.write_to_path(str(directory / "client.pem"))
    server = start_test_server(tmp_path_factory, "tls-data", tls_pem=str(pem))
    server.directory = directory
    server.ca_file = str(directory / "ca.pem")
    yield server
    server.stop()
