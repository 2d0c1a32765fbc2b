#!/usr/bin/env python
"""Run ``antsibull-changelog lint`` and ``ansible-test sanity`` on a clean copy of the collection.

Run it with the project's venv Python (``make sanity``); it uses that venv's ansible-test.

* ansible-test wants the collection at ``.../ansible_collections/<namespace>/<name>``, so the
  files git knows about (tracked, plus untracked files that are not ignored) are copied into a
  temporary tree of that shape. No git repository is needed there: without one ansible-test
  tests every file of the copy, which is exactly the list taken from git.
* ansible-test runs on the controller Python only (``--python X.Y``, this interpreter's version),
  neither ``--docker`` (needs a container engine) nor ``--venv`` (would build an extra venv for
  ansible-test itself inside the temporary tree on every run) nor ``--requirements`` (would
  pip-install ansible-test's pins into the project's venv). Whatever the mode, each sanity test
  runs in its own venv that ansible-test builds from PyPI with its pinned tool versions and
  caches in ~/.ansible/test/venv: only the first run pays for the installs.
* ansible-test puts pip into those venvs with a get-pip.py script that it downloads from a
  server outside PyPI, which may be unreachable. It first looks for the script in its cache
  (~/.ansible/test/cache/get_pip_<version>.py); when none is there, a stand-in is written that
  does the same job with the pip wheel of that version from PyPI.

Extra arguments go to ``ansible-test sanity``, e.g. ``--test pep8``.
Exit status 0 when everything is clean; otherwise non-zero, with the failing lines printed last.
"""

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
NAMESPACE, NAME = "dbops", "mongodb_backup"
PYTHON = "%d.%d" % sys.version_info[:2]
SKIP_DIRS = (".cache", ".venv")

PIP_BOOTSTRAP = '''\
"""Stand-in for get-pip.py written by tools/sanity.py of dbops.mongodb_backup.

Like get-pip.py: installs pip (plus setuptools and wheel unless --no-setuptools/--no-wheel)
with the remaining arguments, running pip from its own wheel downloaded from PyPI.
"""
import sys

sys.path.insert(0, %r)
from pip._internal.cli.main import main  # noqa: E402 pylint: disable=wrong-import-position

args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
args += [name for name in ("setuptools", "wheel") if "--no-" + name not in sys.argv]
sys.exit(main(["install", "--upgrade", "--force-reinstall"] + args))
'''


def ensure_pip_bootstrap():
    """Make sure ansible-test finds a pip bootstrap script in its cache (see the module doc)."""
    try:
        from ansible_test._internal.host_configs import NativePythonConfig
        from ansible_test._internal.python_requirements import get_venv_packages
    except ImportError:
        raise SystemExit("ansible-test is not installed for %s: run `make sanity`" % sys.executable) from None
    version = get_venv_packages(NativePythonConfig(version=PYTHON, path=sys.executable))["pip"]
    cache = os.path.expanduser("~/.ansible/test/cache")
    script = os.path.join(cache, "get_pip_%s.py" % version.replace(".", "_"))
    if os.path.exists(script):
        return
    os.makedirs(cache, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--dest", cache, "pip==" + version], check=True)
    wheel = glob.glob(os.path.join(cache, "pip-%s-*.whl" % version))[0]
    with open(script + ".tmp", "w", encoding="utf-8") as handle:
        handle.write(PIP_BOOTSTRAP % wheel)
    os.replace(script + ".tmp", script)


def collection_files():
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, check=True, stdout=subprocess.PIPE).stdout.decode()
    return sorted(path for path in set(out.split("\0"))
                  if path and path.split("/")[0] not in SKIP_DIRS and os.path.lexists(os.path.join(ROOT, path)))


def copy_collection(dest):
    for rel in collection_files():
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), target, follow_symlinks=False)


def run(title, cmd, cwd):
    """Run cmd, echoing its output; return its failing lines (none when it passed)."""
    print("==> %s: %s" % (title, " ".join(cmd)), flush=True)
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    output = proc.stdout.decode(errors="replace")
    print(output, end="", flush=True)
    print("==> %s: exit %d after %.0f s" % (title, proc.returncode, time.monotonic() - start), flush=True)
    if proc.returncode == 0:
        return []
    failing = [line for line in output.splitlines() if line.startswith(("ERROR", "FATAL"))]
    return ["%s: %s" % (title, line) for line in failing or output.splitlines()[-20:]]


def main():
    ensure_pip_bootstrap()
    failures = []
    with tempfile.TemporaryDirectory(prefix="sanity-") as tmp:
        dest = os.path.join(tmp, "ansible_collections", NAMESPACE, NAME)
        copy_collection(dest)
        failures += run("changelog lint", [os.path.join(BIN, "antsibull-changelog"), "lint"], dest)
        failures += run("ansible-test sanity", [os.path.join(BIN, "ansible-test"), "sanity",
                                                "--python", PYTHON, "--color", "no"] + sys.argv[1:], dest)
    if failures:
        print("\nSANITY FAILED:\n" + "\n".join(failures))
        return 1
    print("\nsanity: all clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
