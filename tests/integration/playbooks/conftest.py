"""The playbook tests back up whole deployments, so they share a server of their own: their backups then
hold only what these tests wrote, not everything the rest of the suite left on the shared server."""

import pytest

from support import start_test_server


@pytest.fixture(scope="package")
def server(tmp_path_factory):
    server = start_test_server(tmp_path_factory, "playbooks-server")
    yield server
    server.stop()
