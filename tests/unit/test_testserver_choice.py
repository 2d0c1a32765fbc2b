"""Which test server ``make test`` prepares: a found mongod needs no Go, FerretDB is built only without one.

These tests look only at the choice (``tools/testserver.py prepare``); the ``mongod`` they put on
PATH is a script that records being run, and the tests check that it never is: no server is
started or imitated here.
"""

import os
import stat
import subprocess
import sys

import pytest

import testserver

TESTSERVER = os.path.join(os.path.dirname(testserver.__file__), "testserver.py")


def executable(path, body="#!/bin/sh\ntouch \"$0.ran\"\nexit 3\n"):
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(body)
    os.chmod(path, stat.S_IRWXU)
    return str(path)


@pytest.fixture(name="no_go_bin")
def fixture_no_go_bin(tmp_path):
    """A PATH directory with no ``go`` and no ``mongod``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    return bin_dir


def prepare(path_dir, **env):
    environ = {key: value for key, value in os.environ.items() if key != "MONGOD"}
    environ.update(PATH=str(path_dir), **env)
    return subprocess.run([sys.executable, TESTSERVER, "prepare"], env=environ, check=False,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_mongod_on_path_is_chosen_without_go(no_go_bin):
    mongod = executable(no_go_bin / "mongod")
    proc = prepare(no_go_bin)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().split() == ["mongod", mongod]
    assert b"building FerretDB" not in proc.stderr
    assert not os.path.exists(mongod + ".ran"), "prepare must not run mongod"


def test_mongod_variable_wins_over_path(no_go_bin, tmp_path):
    executable(no_go_bin / "mongod")
    chosen = executable(tmp_path / "mongod-7.0")
    proc = prepare(no_go_bin, MONGOD=chosen)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().split() == ["mongod", chosen]


def test_without_mongod_ferretdb_is_built_and_needs_go(no_go_bin, tmp_path, monkeypatch):
    monkeypatch.delenv("MONGOD", raising=False)
    monkeypatch.setenv("PATH", str(no_go_bin))
    # an empty cache, so that the choice has to build
    monkeypatch.setattr(testserver, "FERRETDB_BIN", str(tmp_path / "cache" / "ferretdb"))
    monkeypatch.setattr(testserver, "FERRETDB_STAMP", str(tmp_path / "cache" / "ferretdb.stamp"))
    with pytest.raises(SystemExit) as failure:
        testserver.prepare_server()
    message = str(failure.value)
    assert "no mongod found" in message and "Go" in message and "MONGOD" in message


def test_a_mongod_that_is_not_executable_is_not_chosen(no_go_bin, monkeypatch):
    not_executable = no_go_bin / "mongod"
    not_executable.write_text("not a program\n")
    monkeypatch.setenv("PATH", str(no_go_bin))
    monkeypatch.delenv("MONGOD", raising=False)
    assert testserver.find_mongod() is None
