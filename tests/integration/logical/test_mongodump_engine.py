"""engine: mongodump with the real binary, through ansible-playbook (issue 8, defect 15 and the
cross-tool line): the password lives only in a 0600 config file in a private 0700 directory
(never in any argv or environment visible in the process table), the child dies with a module
killed by SIGKILL, the next run removes what the killed run left, and the dump is verified and
restored by mongodb_restore."""

import json
import os
import signal
import subprocess
import sys
import time

import bson
import psutil
import pytest

from support import REPO, TOOLS_BIN

MONGODUMP = os.path.join(TOOLS_BIN, "mongodump")

pytestmark = pytest.mark.skipif(not os.access(MONGODUMP, os.X_OK),
                                reason="the real mongodump is not in %s (set MONGO_TOOLS_BIN)" % TOOLS_BIN)

DUMP_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  vars_files: ["{vars_file}"]
  tasks:
    - dbops.mongodb_backup.mongodb_dump:
        login_host: "{{{{ host }}}}"
        login_port: "{{{{ port }}}}"
        login_user: "{{{{ user }}}}"
        login_password: "{{{{ password }}}}"
        direct_connection: true
        engine: mongodump
        mongodump_path: "{mongodump}"
        db: "{db}"
        path: "{target}"
        label: "{label}"
      register: dumped
    - ansible.builtin.copy:
        content: "{{{{ dumped | to_json }}}}"
        dest: "{result_file}"
"""

RESTORE_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  vars_files: ["{vars_file}"]
  tasks:
    - dbops.mongodb_backup.mongodb_restore:
        login_host: "{{{{ host }}}}"
        login_port: "{{{{ port }}}}"
        login_user: "{{{{ user }}}}"
        login_password: "{{{{ password }}}}"
        direct_connection: true
        source: "{source}"
      register: restored
    - ansible.builtin.copy:
        content: "{{{{ restored | to_json }}}}"
        dest: "{result_file}"
"""


def _vars_file(server, tmp_path):
    """Credentials in a 0600 vars file, never in ansible-playbook's argv or environment."""
    path = tmp_path / "vars.yml"
    path.write_text("host: %s\nport: %d\nuser: %s\npassword: %s\n" % (
        server.host, server.port, server.username, json.dumps(server.password)))
    os.chmod(str(path), 0o600)
    return path


def _environment(tmp_path):
    env = dict((k, v) for k, v in os.environ.items() if k != "MONGODB_URI")
    temp = tmp_path / "tmp"
    temp.mkdir(exist_ok=True)
    env.update(ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1", TMPDIR=str(temp))
    return env


def _start_playbook(text, tmp_path, name):
    playbook = tmp_path / name
    playbook.write_text(text)
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), str(playbook)]
    return subprocess.Popen(argv, cwd=REPO, env=_environment(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def _finish(process, timeout=300):
    output, _stderr = process.communicate(timeout=timeout)
    return process.returncode, output.decode("utf-8", "replace")


def _dump_playbook(server, tmp_path, db, target, label, result_name="dump.json"):
    return DUMP_PLAYBOOK.format(vars_file=_vars_file(server, tmp_path), mongodump=MONGODUMP, db=db,
                                target=target, label=label, result_file=tmp_path / result_name)


def _wait_for_mongodump(target, within=120):
    """The running mongodump process writing to ``target`` (its --out is target.partial)."""
    wanted = "--out=%s.partial" % target
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for process in psutil.process_iter(["cmdline"]):
            if wanted in (process.info["cmdline"] or []):
                return process
        time.sleep(0.05)
    raise AssertionError("mongodump did not start within %ss" % within)


def _config_path(mongodump):
    return next(arg.split("=", 1)[1] for arg in mongodump.cmdline() if arg.startswith("--config="))


def _secret_sightings(password, server_pid):
    """Every visible process whose argv or environment holds the password (the test server
    itself, which was started with it, aside)."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "name"]):
        if process.info["pid"] == server_pid:
            continue
        try:
            if any(password in arg for arg in process.info["cmdline"] or []):
                found.append((process.info["pid"], process.info["name"], "argv"))
            if any(password in value for value in process.environ().values()):
                found.append((process.info["pid"], process.info["name"], "environ"))
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def _gone(process, within=10):
    try:
        process.wait(within)
    except psutil.TimeoutExpired:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        pass
    return True


def _seed(client, db, count, pad):
    client.drop_database(db)
    documents = [{"_id": i, "n": i, "pad": "x" * pad, "when": bson.Timestamp(1700000000, i % 1000 + 1),
                  "tags": ["a", "b"], "nested": {"f": i / 3.0, "s": "é%+ ."}} for i in range(count)]
    for start in range(0, count, 5000):
        client[db].items.insert_many(documents[start:start + 5000])
    client[db].items.create_index([("n", 1)], name="n_1")
    client[db]["odd name.with dots"].insert_many([{"_id": "k%d" % i, "v": i} for i in range(50)])


def test_mongodump_engine_end_to_end_then_restored_by_mongodb_restore(server, client, tmp_path):
    db = "conn_md_e2e"
    _seed(client, db, 20000, 1000)  # mongodump runs for a few seconds on the test server
    before = {name: list(client[db][name].find().sort("_id", 1)) for name in client[db].list_collection_names()}
    target = tmp_path / "md-backup"
    try:
        running = _start_playbook(_dump_playbook(server, tmp_path, db, target, "md-1"), tmp_path, "dump.yml")
        try:
            mongodump = _wait_for_mongodump(target)
            # Paused, so the checks happen during the run however loaded the machine is.
            mongodump.suspend()
            try:
                config = _config_path(mongodump)
                # While mongodump runs: the password is in its 0600 config file only.
                assert os.stat(config).st_mode & 0o777 == 0o600
                assert os.stat(os.path.dirname(config)).st_mode & 0o777 == 0o700
                assert os.stat(os.path.dirname(os.path.dirname(config))).st_mode & 0o777 == 0o700
                assert config.startswith(str(tmp_path / "tmp")), config
                with open(config) as handle:
                    assert server.password in handle.read()
                assert _secret_sightings(server.password, server.pid) == []
            finally:
                mongodump.resume()
        finally:
            code, out = _finish(running)
        assert code == 0, out
        assert server.password not in out
        assert not os.path.exists(config) and not os.path.exists(os.path.dirname(config))
        dumped = json.loads((tmp_path / "dump.json").read_text())
        assert dumped["changed"] and dumped["engine"] == "mongodump"
        manifest = json.loads((target / "manifest.json").read_text())
        assert {f["path"] for f in manifest["files"]} >= {"%s/items.bson" % db, "%s/items.metadata.json" % db}
        for root, dirs, files in os.walk(str(target)):
            assert os.stat(root).st_mode & 0o777 == 0o700
            assert all(os.stat(os.path.join(root, f)).st_mode & 0o777 == 0o600 for f in files)

        client.drop_database(db)
        restore = RESTORE_PLAYBOOK.format(vars_file=_vars_file(server, tmp_path), source=target,
                                          result_file=tmp_path / "restore.json")
        code, out = _finish(_start_playbook(restore, tmp_path, "restore.yml"))
        assert code == 0, out
        restored = json.loads((tmp_path / "restore.json").read_text())
        assert restored["verification"]["verified"] is True, restored["verification"]
        after = {name: list(client[db][name].find().sort("_id", 1)) for name in client[db].list_collection_names()}
        assert after == before
        assert "n_1" in client[db].items.index_information()
    finally:
        client.drop_database(db)


def test_killed_module_takes_mongodump_with_it_and_the_next_run_cleans_up(private_server, tmp_path):
    db = "conn_md_kill"
    seed = private_server.client()
    try:
        _seed(seed, db, 30000, 1000)
    finally:
        seed.close()
    target = tmp_path / "killed"
    running = _start_playbook(_dump_playbook(private_server, tmp_path, db, target, "k-1"), tmp_path, "dump.yml")
    try:
        mongodump = _wait_for_mongodump(target)
        config = _config_path(mongodump)
        time.sleep(1)  # well inside the dump: mongodump needs several seconds for this dataset
        assert mongodump.is_running()
        module = mongodump.parent()
        os.kill(module.pid, signal.SIGKILL)
        assert _gone(mongodump), "mongodump outlived the module killed with SIGKILL"
    finally:
        code, out = _finish(running)
    assert code != 0
    assert private_server.password not in out
    # SIGKILL left no chance to clean up: the 0600 file waits in its 0700 directory.
    leftover = os.path.dirname(config)
    assert os.path.exists(config) and os.stat(leftover).st_mode & 0o777 == 0o700
    assert not target.exists()

    # The next run (another backup) removes it.
    small = tmp_path / "next"
    text = _dump_playbook(private_server, tmp_path, db, small, "n-1", "next.json")
    code, out = _finish(_start_playbook(text, tmp_path, "next.yml"))
    assert code == 0, out
    assert not os.path.exists(leftover), os.listdir(os.path.dirname(leftover))
    assert os.listdir(os.path.dirname(leftover)) == []
    assert json.loads((tmp_path / "next.json").read_text())["engine"] == "mongodump"
