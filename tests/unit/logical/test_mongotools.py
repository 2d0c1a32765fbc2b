"""How engine: mongodump runs its child and keeps its config file (issue 8, defect 15), with real
processes: the private directory, leftovers of killed runs, the child dying with its parent."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import mongotools as mongodump_tool
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import DumpFailed

from support import REPO


def _mode(path):
    return os.stat(path).st_mode & 0o777


def _dead_pid():
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_workdir_is_private_whatever_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        workdir = mongodump_tool.private_workdir(str(tmp_path))
    finally:
        os.umask(previous)
    parent = os.path.dirname(workdir)
    assert parent == str(tmp_path / ("dbops-mongodb-backup-%d" % os.getuid()))
    assert _mode(parent) == 0o700 and _mode(workdir) == 0o700
    assert os.path.basename(workdir).startswith("run-%d-" % os.getpid())


def test_leftovers_of_dead_runs_are_removed_and_live_ones_kept(tmp_path):
    parent = tmp_path / ("dbops-mongodb-backup-%d" % os.getuid())
    parent.mkdir(mode=0o700)
    dead = parent / ("run-%d-abc" % _dead_pid())
    dead.mkdir()
    (dead / "mongodump.yaml").write_text("password: leaked\n")
    alive = parent / ("run-%d-def" % os.getppid())
    alive.mkdir()
    unrelated = parent / "notes"
    unrelated.mkdir()
    workdir = mongodump_tool.private_workdir(str(tmp_path))
    assert not dead.exists()
    assert alive.exists() and unrelated.exists() and os.path.isdir(workdir)


def test_a_parent_that_is_not_our_directory_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    os.symlink(str(tmp_path / "elsewhere"), str(tmp_path / ("dbops-mongodb-backup-%d" % os.getuid())))
    with pytest.raises(DumpFailed, match="is not a directory owned by this user"):
        mongodump_tool.private_workdir(str(tmp_path))


def test_secrets_in_the_environment_do_not_reach_the_child(monkeypatch):
    monkeypatch.setenv("MONGODB_URI", "mongodb://backup:Sup3rSecret@db1/")
    monkeypatch.setenv("HARMLESS", "visible")
    returncode, stderr = mongodump_tool.run_tool(["sh", "-c", "env >&2"], ["Sup3rSecret"])
    assert returncode == 0
    assert b"HARMLESS=visible" in stderr and b"Sup3rSecret" not in stderr


def _start_runner(tmp_path):
    """A Python process that runs `sleep 300` through run_tool, as the module runs mongodump."""
    script = tmp_path / "runner.py"
    script.write_text(textwrap.dedent("""
        from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import mongotools as mongodump_tool
        try:
            mongodump_tool.run_tool(["sleep", "300"])
        except Exception as exc:
            print("stopped:", exc, flush=True)
            raise SystemExit(3)
    """))
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, ".cache", "collections"))
    runner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        children = psutil.Process(runner.pid).children()
        try:
            # only once it runs sleep has the child passed its pre-exec setup (process group, death signal)
            if children and children[0].cmdline()[:1] == ["sleep"]:
                return runner, children[0]
        except psutil.Error:
            pass  # the forked child changed while being read: look again
        time.sleep(0.05)
    runner.kill()
    raise AssertionError("the runner did not start its child")


def _gone(process, within=10):
    try:
        process.wait(within)
    except psutil.TimeoutExpired:
        return process.status() == psutil.STATUS_ZOMBIE
    return True


def test_child_runs_in_its_own_process_group(tmp_path):
    runner, child = _start_runner(tmp_path)
    try:
        assert os.getpgid(child.pid) == child.pid != os.getpgid(runner.pid)
    finally:
        runner.kill()
        runner.wait()
        _gone(child)


def test_child_dies_when_its_parent_is_killed_with_sigkill(tmp_path):
    runner, child = _start_runner(tmp_path)
    try:
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait()
        assert _gone(child), "the child outlived its killed parent"
    finally:
        if child.is_running():
            child.kill()


def test_sigterm_stops_the_child_and_reports_it(tmp_path):
    runner, child = _start_runner(tmp_path)
    try:
        os.kill(runner.pid, signal.SIGTERM)
        output, _stderr = runner.communicate(timeout=20)
        assert runner.returncode == 3
        assert b"the module was stopped (signal 15) while mongodump ran" in output
        assert _gone(child, within=1)
    finally:
        if child.is_running():
            child.kill()
