"""Verification tests back up a source server of their own (so oplog slices hold only what these tests wrote)
and restore into a second server, the scratch server."""

import pytest

from support import start_test_server


@pytest.fixture(scope="package")
def server(tmp_path_factory):
    server = start_test_server(tmp_path_factory, "verify-source")
    yield server
    server.stop()


@pytest.fixture(scope="package")
def scratch(tmp_path_factory):
    server = start_test_server(tmp_path_factory, "verify-scratch")
    yield server
    server.stop()


@pytest.fixture
def scratch_client(scratch):
    client = scratch.client()
    yield client
    client.close()
