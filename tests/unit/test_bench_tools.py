# -*- coding: utf-8 -*-
"""The benchmarks' handling of the real MongoDB tools: where they are found, why they are
skipped, the 0600 config file that carries the URI, and the tool's own peak RSS."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import stat
import sys

import pytest

from support import REPO as REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))

import dump_benchmark  # noqa: E402  (benchmarks/, put on sys.path above)

SHARED_TOOLS = os.path.join(REPO_ROOT, "..", "shared", "mongo-tools", "bin")


def test_tools_bin_override_without_the_tool_gives_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("MONGO_TOOLS_BIN", str(tmp_path))
    path, reason = dump_benchmark.tool_path("mongorestore")
    assert path is None
    assert reason == "mongorestore is not in $MONGO_TOOLS_BIN (%s)" % tmp_path


def test_tools_bin_override_is_used(tmp_path, monkeypatch):
    tool = tmp_path / "mongodump"
    tool.write_text("#!/bin/sh\nexit 0\n")
    tool.chmod(0o755)
    monkeypatch.setenv("MONGO_TOOLS_BIN", str(tmp_path))
    assert dump_benchmark.tool_path("mongodump") == (str(tool), None)


@pytest.mark.skipif(not os.path.exists(os.path.join(SHARED_TOOLS, "mongorestore")),
                    reason="the real tools are not in ../shared/mongo-tools/bin")
def test_shared_tools_are_found_by_default(monkeypatch):
    monkeypatch.delenv("MONGO_TOOLS_BIN", raising=False)
    path, reason = dump_benchmark.tool_path("mongorestore")
    assert reason is None
    assert os.path.samefile(path, os.path.join(SHARED_TOOLS, "mongorestore"))


def test_tool_config_is_private_and_holds_the_uri(tmp_path):
    uri = "mongodb://user:p@ss:w0rd@127.0.0.1:27017/?authSource=admin"
    previous = os.umask(0)  # 0600 whatever the umask
    try:
        path = dump_benchmark.write_tool_config(str(tmp_path / "tool.yaml"), uri)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path) as handle:
        assert handle.read() == 'uri: "%s"\n' % uri


def test_run_tool_reports_the_tools_own_peak_rss():
    # A child that touches 80 MB and holds it briefly: its VmHWM, not ours, is reported.
    argv = [sys.executable, "-c", "import time; b = bytearray(80 << 20); time.sleep(0.5)"]
    seconds, peak_mb = dump_benchmark.run_tool(argv)
    assert seconds >= 0.5
    assert 80 <= peak_mb < 200


def test_run_tool_failure_names_the_tool():
    with pytest.raises(SystemExit, match="python.* failed with exit status 3"):
        dump_benchmark.run_tool([sys.executable, "-c", "raise SystemExit(3)"])
