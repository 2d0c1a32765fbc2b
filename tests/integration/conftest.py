"""Fixtures for tests against a real server (mongod when present, else FerretDB)."""

import json
import os
import subprocess

import pytest

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from support import TOOLS_BIN, start_test_server


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The shared server: tests that change it must clean up after themselves."""
    server = start_test_server(tmp_path_factory, "server")
    yield server
    server.stop()


@pytest.fixture
def private_server(tmp_path_factory):
    """A server of the test's own, for tests that kill or reconfigure it."""
    server = start_test_server(tmp_path_factory, "private")
    yield server
    server.stop()


@pytest.fixture
def client(server):
    client = server.client()
    yield client
    client.close()


@pytest.fixture
def connection(server):
    return client_utils.ConnectionOptions(login_host=server.host, login_port=server.port,
                                          login_user=server.username, login_password=server.password,
                                          direct_connection=True)


# --------------------------------------------------------------------------- the real MongoDB Database Tools

MONGO_TOOLS = ("mongodump", "mongorestore", "bsondump")


class MongoTools:
    """The real mongodump, mongorestore and bsondump, run against a test server.

    The password goes into a 0600 ``--config`` YAML file, never into argv.
    """

    def __init__(self, bin_dir, config_dir):
        self.bin_dir = bin_dir
        self.config_dir = config_dir

    def path(self, tool):
        return os.path.join(self.bin_dir, tool)

    def server_args(self, server):
        config = os.path.join(self.config_dir, "%s-%d.yml" % (server.host, server.port))
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("password: %s\n" % json.dumps(server.password))
        return ["--config=%s" % config, "--host=%s" % server.host, "--port=%d" % server.port,
                "--username=%s" % server.username, "--authenticationDatabase=admin"]

    def run(self, tool, *args, server=None, stdin=None, timeout=120):
        """Run a tool; returns the CompletedProcess (stdout bytes, stderr text)."""
        argv = [self.path(tool)] + (self.server_args(server) if server is not None else []) + list(args)
        process = subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 timeout=timeout, check=False)
        process.stderr = process.stderr.decode("utf-8", "replace")
        return process


@pytest.fixture(scope="session")
def mongo_tools(tmp_path_factory):
    """The real tools from MONGO_TOOLS_BIN (default ../shared/mongo-tools/bin); skips when absent."""
    bin_dir = TOOLS_BIN
    missing = [tool for tool in MONGO_TOOLS if not os.access(os.path.join(bin_dir, tool), os.X_OK)]
    if missing:
        pytest.skip("the MongoDB Database Tools are not installed: %s not found in %s (set MONGO_TOOLS_BIN)"
                    % (", ".join(missing), bin_dir))
    config_dir = tmp_path_factory.mktemp("mongo-tools-config")
    os.chmod(str(config_dir), 0o700)
    return MongoTools(os.path.abspath(bin_dir), str(config_dir))
