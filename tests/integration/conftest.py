"""Fixtures for tests against a real server (mongod when present, else FerretDB)."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tools"))

import testserver  # noqa: E402

from ansible_collections.dbops.mongodb_backup.plugins.module_utils import client as client_utils  # noqa: E402


def _start(tmp_path_factory, name):
    server = testserver.start_server(str(tmp_path_factory.mktemp(name)))
    server.ensure_oplog()
    return server


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The shared server: tests that change it must clean up after themselves."""
    server = _start(tmp_path_factory, "server")
    yield server
    server.stop()


@pytest.fixture
def private_server(tmp_path_factory):
    """A server of the test's own, for tests that kill or reconfigure it."""
    server = _start(tmp_path_factory, "private")
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


def run_playbook(playbook_text, tmp_path, server=None, extra_env=None, check=False, password=None):
    """Run a playbook through ansible-playbook; returns (returncode, stdout+stderr).

    The URI travels through the environment (MONGODB_URI), never argv.
    """
    playbook = tmp_path / "playbook.yml"
    playbook.write_text(playbook_text)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    if server is not None:
        env["MONGODB_URI"] = server.uri
    env.update(extra_env or {})
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), str(playbook)]
    if check:
        argv.append("--check")
    process = subprocess.run(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    return process.returncode, process.stdout.decode("utf-8", "replace")


def run_project_playbook(name, server, vars_file, check=False):
    """One of playbooks/*.yml as an operator runs it: variables from a file, the URI from the environment."""
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), MONGODB_URI=server.uri,
               ANSIBLE_NOCOLOR="1")
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
            os.path.join(REPO, "playbooks", name), "-e", "@%s" % vars_file] + (["--check"] if check else [])
    process = subprocess.run(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             check=False)
    return process.returncode, process.stdout.decode("utf-8", "replace")


def load_result(path):
    with open(path) as handle:
        return json.load(handle)
