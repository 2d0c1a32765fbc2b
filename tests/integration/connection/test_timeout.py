"""A server that stops answering makes the task fail within socket_timeout, with a message naming
the step (issue 8, defect 13). The server is really hung: SIGSTOP on the private test server's
process in the middle of the work, SIGCONT in a finally."""

import contextlib
import os
import signal
import time

import bson
import pytest

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump as dump_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_options
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import restore as restore_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import BackupError
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import replay as oplog_replay

SOCKET_TIMEOUT = 2
# A 4 MB batch from the test server can take more than 2 s on a loaded machine: the dump gets more.
DUMP_SOCKET_TIMEOUT = 6


def bound(socket_timeout):
    """socket_timeout, at most one driver retry of the same request, server selection after it, and
    slack for a loaded machine: a hang is far longer than this."""
    return 2 * socket_timeout + 2 + 8


BOUND = bound(SOCKET_TIMEOUT)


def _options(server, socket_timeout=SOCKET_TIMEOUT):
    return client_utils.ConnectionOptions(
        login_host=server.host, login_port=server.port, login_user=server.username,
        login_password=server.password, direct_connection=True, connect_timeout=2,
        socket_timeout=socket_timeout)


class Freezer:
    """Stops the server process the first time the engine reports progress."""

    def __init__(self, server):
        self.server = server
        self.stopped_at = None

    def __call__(self, *args, **kwargs):
        if self.stopped_at is None:
            os.kill(self.server.pid, signal.SIGSTOP)
            self.stopped_at = time.monotonic()

    def elapsed(self):
        return time.monotonic() - self.stopped_at


@contextlib.contextmanager
def resumed_afterwards(server):
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


def test_socket_timeout_reaches_the_driver(private_server):
    client = client_utils.connect(_options(private_server))
    try:
        assert client.options.pool_options.socket_timeout == SOCKET_TIMEOUT
    finally:
        client.close()


def test_restore_into_a_hung_server_fails_within_the_timeout(private_server, tmp_path):
    seed = private_server.client()
    seed.hang.items.insert_many([{"_id": i, "pad": "x" * 200} for i in range(3000)])
    seed.close()
    client = client_utils.connect(_options(private_server))
    try:
        dump_engine.dump(client, dump_options.DumpOptions(path=str(tmp_path / "b"), db="hang"),
                         client_utils.server_facts(client))
        options = restore_engine.RestoreOptions(source=str(tmp_path / "b"), drop=True, batch_size=100,
                                                num_parallel_collections=1)
        freezer = Freezer(private_server)
        with resumed_afterwards(private_server):
            with pytest.raises(BackupError) as failure:
                restore_engine.restore(client, options, progress=freezer)
            elapsed = freezer.elapsed()
    finally:
        client.close()
    message = failure.value.message
    assert freezer.stopped_at is not None and elapsed < BOUND, (elapsed, message)
    assert "hang.items" in message
    assert "the server stopped answering" in message, message


def test_replay_onto_a_hung_server_fails_within_the_timeout(private_server):
    client = client_utils.connect(_options(private_server))
    entries = [{"op": "i", "ns": "hang.events", "o": {"_id": i, "n": 0}, "ts": bson.Timestamp(1700000000, i + 1)}
               for i in range(400)]
    entries += [{"op": "u", "ns": "hang.events", "o2": {"_id": i}, "o": {"$v": 2, "diff": {"u": {"n": 1}}},
                 "ts": bson.Timestamp(1700000001, i + 1)} for i in range(400)]
    freezer = Freezer(private_server)
    try:
        replayer = oplog_replay.OplogReplayer(client, mode="crud", batch_size=50, progress=freezer)
        with resumed_afterwards(private_server):
            with pytest.raises(BackupError) as failure:
                replayer.replay(entries)
            elapsed = freezer.elapsed()
    finally:
        client.close()
    message = failure.value.message
    assert freezer.stopped_at is not None and elapsed < BOUND, (elapsed, message)
    assert message.startswith("replay stopped at oplog entry op=") and "ns=hang.events" in message
    assert "the server stopped answering" in message, message


def test_dump_from_a_hung_server_fails_within_the_timeout(private_server, tmp_path):
    seed = private_server.client()
    seed.hang.big.insert_many([{"_id": i, "pad": "x" * 8000} for i in range(2000)])  # several batches
    seed.close()
    client = client_utils.connect(_options(private_server, DUMP_SOCKET_TIMEOUT))
    freezer = Freezer(private_server)
    target = tmp_path / "dump"
    try:
        options = dump_options.DumpOptions(path=str(target), db="hang", num_parallel_collections=1)
        with resumed_afterwards(private_server):
            with pytest.raises(BackupError) as failure:
                dump_engine.dump(client, options, client_utils.server_facts(client), progress=freezer)
            elapsed = freezer.elapsed()
    finally:
        client.close()
    message = failure.value.message
    assert freezer.stopped_at is not None and elapsed < bound(DUMP_SOCKET_TIMEOUT), (elapsed, message)
    assert message.startswith("reading hang.big from ") and "the server stopped answering" in message, message
    assert not target.exists() and not os.path.exists(str(target) + ".partial")


RESTORE_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - dbops.mongodb_backup.mongodb_restore:
        login_host: "{host}"
        login_port: {port}
        login_user: "{user}"
        login_password: "{password}"
        direct_connection: true
        socket_timeout: {timeout}
        connect_timeout: 2
        source: "{source}"
        batch_size: 200
        num_parallel_collections: 1
      register: restored
      ignore_errors: true
    - ansible.builtin.copy:
        content: "{{{{ restored | to_json }}}}"
        dest: "{result_file}"
"""


def test_restore_task_through_ansible_fails_within_the_timeout(private_server, tmp_path):
    """The task, as a user runs it: the server hangs mid-restore, the task fails with the step."""
    import json
    import subprocess
    import sys
    from support import REPO

    seed = private_server.client()
    for start in range(0, 60000, 10000):
        seed.hang.items.insert_many([{"_id": i, "pad": "x" * 500} for i in range(start, start + 10000)])
    # 4 MB batches from the test server can take longer than 2 s: the dump keeps the default bound.
    dump_engine.dump(seed, dump_options.DumpOptions(path=str(tmp_path / "b"), db="hang"),
                     client_utils.server_facts(seed))
    seed.hang.items.drop()
    playbook = tmp_path / "restore.yml"
    playbook.write_text(RESTORE_PLAYBOOK.format(
        host=private_server.host, port=private_server.port, user=private_server.username,
        password=private_server.password, timeout=SOCKET_TIMEOUT, source=tmp_path / "b",
        result_file=tmp_path / "result.json"))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    running = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), str(playbook)],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    stopped_at = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and running.poll() is None:
            if seed.hang.items.estimated_document_count() > 0:
                os.kill(private_server.pid, signal.SIGSTOP)
                stopped_at = time.monotonic()
                break
            time.sleep(0.02)
        assert stopped_at is not None, "the restore never started writing"
        output, _stderr = running.communicate(timeout=120)
        elapsed = time.monotonic() - stopped_at
    finally:
        os.kill(private_server.pid, signal.SIGCONT)
        if running.poll() is None:
            running.kill()
        seed.close()
    assert running.returncode == 0, output  # ignore_errors: the result is checked below
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["failed"], result
    # Ansible's own start-up and the module's exit come on top of the bound.
    assert elapsed < BOUND + 10, (elapsed, result["msg"])
    assert result["msg"].startswith("inserting into hang.items failed after "), result["msg"]
    assert "the server stopped answering" in result["msg"]
