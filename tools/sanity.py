#!/usr/bin/env python3
"""Run ``antsibull-changelog lint`` and ``ansible-test sanity`` on a clean copy of the collection.

ansible-test wants the collection at ``.../ansible_collections/<namespace>/<name>``, so the
files git knows about (tracked plus untracked, non-ignored) are copied into a temporary
tree of that shape. No git repository is needed there: without one ansible-test tests
every file of the copy, which is exactly the list taken from git here.

``--venv`` (not ``--docker``: no container engine is needed; not ``--requirements``: it
would pip-install ansible-test's pinned tool versions into the project's own venv) makes
ansible-test build one virtualenv per test from PyPI, cached in ~/.ansible/test/venv, so
only the first run pays for the installs.

Exit status: 0 when everything is clean; otherwise the failing lines are printed last.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMESPACE, NAME = "dbops", "mongodb_backup"
PYTHON = "%d.%d" % sys.version_info[:2]  # the controller's Python only
SKIP_DIRS = (".cache", ".venv")


def venv_bin(tool):
    """The tool installed next to this interpreter (the project's .venv under ``make``)."""
    for bindir in (os.path.dirname(sys.executable), os.path.join(ROOT, ".venv", "bin")):
        if os.path.exists(os.path.join(bindir, tool)):
            return os.path.join(bindir, tool)
    raise SystemExit("%s not found: run `make venv` first" % tool)


def collection_files():
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, check=True, stdout=subprocess.PIPE).stdout.decode()
    return sorted(p for p in set(out.split("\0"))
                  if p and p.split("/")[0] not in SKIP_DIRS and os.path.lexists(os.path.join(ROOT, p)))


def copy_collection(dest):
    for rel in collection_files():
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), target, follow_symlinks=False)


def run(title, cmd, cwd):
    """Run cmd, echoing its output; return the failing lines (empty when it passed)."""
    print("==> %s: %s" % (title, " ".join(cmd)), flush=True)
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=""))
    output = proc.stdout.decode(errors="replace")
    print(output, end="", flush=True)
    print("==> %s: exit %d in %.0fs" % (title, proc.returncode, time.monotonic() - start), flush=True)
    if proc.returncode == 0:
        return []
    failing = [line for line in output.splitlines() if line.startswith("ERROR")]
    return ["%s: %s" % (title, line) for line in failing or output.splitlines()[-20:]]


def main():
    failures = []
    with tempfile.TemporaryDirectory(prefix="sanity-") as tmp:
        dest = os.path.join(tmp, "ansible_collections", NAMESPACE, NAME)
        copy_collection(dest)
        failures += run("changelog lint", [venv_bin("antsibull-changelog"), "lint"], dest)
        failures += run("ansible-test sanity", [
            venv_bin("ansible-test"), "sanity", "--venv", "--python", PYTHON, "--color", "no",
        ], dest)
    if failures:
        print("\nSANITY FAILED:\n" + "\n".join(failures))
        return 1
    print("\nsanity: all clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
