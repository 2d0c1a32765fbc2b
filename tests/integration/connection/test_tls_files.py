"""TLS files that cannot be used get an error naming the option, the file, the cause and what to give
(issue 8, "clear errors": a CA file that is not PEM said "cannot read None")."""

import pytest

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_options
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import mongotools as mongodump_tool
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import ConnectionFailure
from support import tls_connection_options


def _garbage(tmp_path):
    path = tmp_path / "garbage.pem"
    path.write_text("this is not a certificate\n")
    return str(path)


def test_the_right_ca_connects(tls_server):
    client = client_utils.connect(tls_connection_options(tls_server, tls_ca_file=str(tls_server.directory / "ca.pem")))
    try:
        assert client.admin.command("ping")["ok"] == 1
    finally:
        client.close()


def test_a_ca_file_that_is_not_pem_is_named_with_cause_and_next_step(tls_server, tmp_path):
    garbage = _garbage(tmp_path)
    with pytest.raises(ConnectionFailure) as failure:
        client_utils.connect(tls_connection_options(tls_server, tls_ca_file=garbage))
    message = failure.value.message
    assert message.startswith("tls_ca_file %s holds no PEM certificate (" % garbage), message
    assert "NO_CERTIFICATE_OR_CRL_FOUND" in message and "-----BEGIN CERTIFICATE-----" in message
    assert "None" not in message


def test_a_ca_path_that_is_a_directory(tls_server, tmp_path):
    with pytest.raises(ConnectionFailure) as failure:
        client_utils.connect(tls_connection_options(tls_server, tls_ca_file=str(tmp_path)))
    assert failure.value.message.startswith("tls_ca_file %s cannot be read: Is a directory;" % tmp_path)


def test_a_certificate_key_file_that_is_not_pem(tls_server, tmp_path):
    garbage = _garbage(tmp_path)
    with pytest.raises(ConnectionFailure) as failure:
        client_utils.connect(tls_connection_options(tls_server, tls_ca_file=str(tls_server.directory / "ca.pem"),
                                                    tls_certificate_key_file=garbage))
    message = failure.value.message
    assert message.startswith("tls_certificate_key_file %s cannot be loaded as a PEM client certificate"
                              % garbage), message
    assert "tls_certificate_key_file_password" in message


def test_a_valid_client_certificate_passes_the_check(tls_server):
    options = tls_connection_options(tls_server, tls_ca_file=str(tls_server.directory / "ca.pem"),
                                     tls_certificate_key_file=str(tls_server.directory / "client.pem"))
    client_utils.check_tls_files(options)


def test_the_mongodump_engine_checks_the_files_before_running_anything(tls_server, tmp_path):
    garbage = _garbage(tmp_path)
    options = dump_options.DumpOptions(path=str(tmp_path / "backup"))
    with pytest.raises(ConnectionFailure, match="tls_ca_file %s holds no PEM certificate" % garbage):
        mongodump_tool.run(tls_connection_options(tls_server, tls_ca_file=garbage), options, "/bin/false", False)
    assert not (tmp_path / "backup.partial").exists()
