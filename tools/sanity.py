#!/usr/bin/env python
"""Every static check of the collection, each on a clean copy of it (``make sanity``).

Run it with the project's venv Python. The checks, in order (``--only NAME`` runs some of them,
``--skip NAME`` leaves some out, ``--list`` names them):

  changelog          antsibull-changelog lint (fragments and changelogs/changelog.yaml)
  ansible-test       ansible-test sanity with this venv's ansible-core, the newest we claim
  managed-pythons    ansible-test's compile and import tests of the modules on every other
                     managed-node Python that tests/config.yml claims and this machine has
  ansible-test-floor ansible-test sanity with the oldest ansible-core of meta/runtime.yml,
                     from the .venv-floor venv (requirements-floor.txt), all tests but pylint
  collection-docs    antsibull-docs lint-collection-docs --plugin-docs          (.venv-lint)
  ansible-lint       ansible-lint --profile production, offline (.ansible-lint)  (.venv-lint)
  galaxy-importer    Galaxy's importer on the built tarball, without containers  (.venv-lint)
  ee                 ansible-builder create with execution-environment.yml       (.venv-lint)

The tools of the last four (requirements-lint.txt) pin versions that clash with this venv, so
they live in .venv-lint; ``make sanity`` creates both extra venvs.

Copies: the files git knows about (tracked, plus untracked files that are not ignored) are
copied into a temporary ``.../ansible_collections/<namespace>/<name>`` tree, a fresh one per
check, so that what one tool writes (ansible-test's tests/output, ansible-lint's .ansible) is
never seen by another. No git repository is needed there: without one ansible-test tests every
file of the copy, which is exactly the list taken from git.

ansible-test runs on the controller Python only (``--python X.Y``, this interpreter's version),
neither ``--docker`` (needs a container engine) nor ``--venv`` (would build an extra venv for
ansible-test itself on every run) nor ``--requirements`` (would pip-install ansible-test's pins
into the project's venv). Each sanity test runs in its own venv that ansible-test builds from
PyPI with its pinned tool versions and caches in ~/.ansible/test/venv: only the first run pays
for the installs. ansible-test puts pip into those venvs with a get-pip.py script that it
downloads from a server outside PyPI, which may be unreachable. It first looks for the script in
its cache (~/.ansible/test/cache/get_pip_<version>.py); when none is there, a stand-in is
written that does the same job with the pip wheel of that version from PyPI.

Other Pythons for the managed-pythons check are looked up as ``pythonX.Y`` on PATH, then in
pyenv's ``~/.pyenv/versions``; a version that is not found is reported and skipped.

Arguments after ``--`` go to every ``ansible-test sanity`` run, e.g. ``-- --test pep8``.
Exit status 0 when everything is clean; otherwise non-zero, with the failing lines printed last.
"""

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
LINT_BIN = os.path.join(ROOT, ".venv-lint", "bin")
FLOOR_BIN = os.path.join(ROOT, ".venv-floor", "bin")
NAMESPACE, NAME = "dbops", "mongodb_backup"
PYTHON = "%d.%d" % sys.version_info[:2]
SKIP_DIRS = (".cache", ".venv")  # and .venv-lint, .venv-floor: prefixes
IMPORTER_CONFIG = os.path.join(ROOT, "tools", "galaxy-importer.cfg")

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


# --------------------------------------------------------------------------- helpers

def ensure_pip_bootstrap():
    """Make sure this interpreter's ansible-test finds a pip bootstrap script (see the module doc)."""
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
                  if path and not path.split("/")[0].startswith(SKIP_DIRS) and os.path.lexists(os.path.join(ROOT, path)))


def fresh_copy(tmp, tag):
    """A new copy of the collection under ``<tmp>/<tag>/ansible_collections/<ns>/<name>``."""
    dest = os.path.join(tmp, tag, "ansible_collections", NAMESPACE, NAME)
    for rel in collection_files():
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), target, follow_symlinks=False)
    return dest


def tool(bin_dir, name):
    """Path of a tool in one of the venvs, or SystemExit saying how to get it."""
    path = os.path.join(bin_dir, name)
    if not os.path.exists(path):
        venv = os.path.basename(os.path.dirname(bin_dir))
        raise SystemExit("%s not found in %s: create that venv with `make %s`" % (name, venv, venv.lstrip(".")))
    return path


def run(title, cmd, cwd, env=None, failing_pattern=r"^(ERROR|FATAL)"):
    """Run cmd, echoing its output; return its failing lines (none when it passed)."""
    print("==> %s: %s" % (title, " ".join(cmd)), flush=True)
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    output = proc.stdout.decode(errors="replace")
    print(output, end="", flush=True)
    failing = [line for line in output.splitlines() if re.search(failing_pattern, line)]
    print("==> %s: exit %d after %.0f s" % (title, proc.returncode, time.monotonic() - start), flush=True)
    if proc.returncode == 0 and not failing:
        return []
    return ["%s: %s" % (title, line) for line in failing or output.splitlines()[-20:]]


def venv_env(bin_dir):
    """Environment with a venv's bin first on PATH (tools that call other tools by name)."""
    return dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))


def build_collection(tmp):
    """Build the tarball from a fresh copy; return its path."""
    src = fresh_copy(tmp, "build")
    out = os.path.join(tmp, "dist")
    subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--output-path", out, src],
                   check=True, stdout=subprocess.DEVNULL)
    return glob.glob(os.path.join(out, "%s-%s-*.tar.gz" % (NAMESPACE, NAME)))[0]


def managed_pythons():
    """Managed-node Python versions claimed by tests/config.yml that ansible-test supports."""
    import yaml
    from ansible_test._internal.constants import SUPPORTED_PYTHON_VERSIONS
    from packaging.specifiers import SpecifierSet
    with open(os.path.join(ROOT, "tests", "config.yml"), encoding="utf-8") as handle:
        claimed = SpecifierSet(yaml.safe_load(handle)["modules"]["python_requires"])
    return [version for version in SUPPORTED_PYTHON_VERSIONS if version in claimed]


def find_python(version):
    """A working ``pythonX.Y``: on PATH, else in pyenv's versions; None when there is none."""
    candidates = [shutil.which("python" + version)]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/%s.*/bin/python%s" % (version, version))))
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False)
        if probe.returncode == 0 and probe.stdout.decode().strip() == version:
            return candidate
    return None


# --------------------------------------------------------------------------- checks

def check_changelog(tmp, extra):
    del extra
    return run("changelog lint", [os.path.join(BIN, "antsibull-changelog"), "lint"], fresh_copy(tmp, "changelog"))


def check_ansible_test(tmp, extra):
    return run("ansible-test sanity (newest)", [os.path.join(BIN, "ansible-test"), "sanity", "--python", PYTHON,
                                                "--color", "no"] + extra, fresh_copy(tmp, "ansible-test"))


def check_managed_pythons(tmp, extra):
    """Compile and import tests of the modules on every other claimed managed-node Python."""
    dest = fresh_copy(tmp, "managed-pythons")
    links = os.path.join(tmp, "pythons")
    os.makedirs(links)
    versions, failures = [], []
    for version in managed_pythons():
        if version == PYTHON:
            continue  # the ansible-test check covers it
        found = find_python(version)
        if found is None:
            print("==> managed-pythons: no python%s on this machine, skipped" % version, flush=True)
            continue
        os.symlink(found, os.path.join(links, "python" + version))
        versions.append(version)
    env = dict(os.environ, PATH=links + os.pathsep + os.environ.get("PATH", ""))
    for version in versions:
        failures += run("ansible-test compile+import on Python %s" % version,
                        [os.path.join(BIN, "ansible-test"), "sanity", "--test", "compile", "--test", "import",
                         "--python", version, "--color", "no"] + extra, dest, env=env)
    return failures


def check_ansible_test_floor(tmp, extra):
    """Every sanity test but pylint (style, run once with the newest; 70 of this check's 85 s)."""
    ansible_test = tool(FLOOR_BIN, "ansible-test")
    python = os.path.join(FLOOR_BIN, "python")
    subprocess.run([python, os.path.abspath(__file__), "--pip-bootstrap"], check=True)
    return run("ansible-test sanity (oldest)", [ansible_test, "sanity", "--python", PYTHON, "--color", "no",
                                                "--skip-test", "pylint"] + extra, fresh_copy(tmp, "ansible-test-floor"))


def check_collection_docs(tmp, extra):
    del extra
    return run("antsibull-docs lint", [tool(LINT_BIN, "antsibull-docs"), "lint-collection-docs", "--plugin-docs", "."],
               fresh_copy(tmp, "collection-docs"), env=venv_env(LINT_BIN), failing_pattern=r"^\S+:\d+:\d+: ")


def check_ansible_lint(tmp, extra):
    del extra
    dest = fresh_copy(tmp, "ansible-lint")
    # The copy; the collections galaxy.yml depends on come from the `ansible` package of .venv-lint
    # (requirements-lint.txt), on the sys.path that ansible-core scans for ansible_collections.
    env = dict(venv_env(LINT_BIN), NO_COLOR="1", ANSIBLE_LINT_SKIP_SCHEMA_UPDATE="1",
               ANSIBLE_COLLECTIONS_PATH=os.path.join(tmp, "ansible-lint"))
    return run("ansible-lint", [tool(LINT_BIN, "ansible-lint"), "--offline", "--profile", "production"], dest, env=env)


def check_galaxy_importer(tmp, extra):
    del extra
    tarball = build_collection(tmp)
    env = dict(venv_env(LINT_BIN), GALAXY_IMPORTER_CONFIG=IMPORTER_CONFIG, NO_COLOR="1")
    # The importer exits 0 with WARNING lines for what Galaxy accepts but shows as problems.
    return run("galaxy-importer", [tool(LINT_BIN, "python"), "-m", "galaxy_importer.main", tarball],
               os.path.dirname(tarball), env=env, failing_pattern=r"^(ERROR|WARNING)")


def check_ee(tmp, extra):
    """ansible-builder create: the definition is valid and its context holds the collection."""
    del extra
    tarball = build_collection(tmp)
    ee_dir = os.path.join(tmp, "ee")
    os.makedirs(ee_dir)
    for name in ("execution-environment.yml", "requirements.txt", "bindep.txt"):
        shutil.copy2(os.path.join(ROOT, name), ee_dir)
    unpacked = os.path.join(ee_dir, ".cache", "ee", "collection", NAME)
    os.makedirs(unpacked)
    with tarfile.open(tarball) as archive:
        archive.extractall(unpacked, filter="data")
    context = os.path.join(ee_dir, "context")
    create = [tool(LINT_BIN, "ansible-builder"), "create", "--file", "execution-environment.yml",
              "--context", context, "--output-filename", "Containerfile"]
    failures = run("ansible-builder create", create, ee_dir, env=venv_env(LINT_BIN))
    for rel in ("Containerfile", "_build/requirements.txt", "_build/bindep.txt", "_build/requirements.yml",
                "_build/collections/%s/MANIFEST.json" % NAME):
        if not failures and not os.path.exists(os.path.join(context, rel)):
            failures.append("ansible-builder create: %s missing from the build context" % rel)
    return failures


CHECKS = {
    "changelog": check_changelog,
    "ansible-test": check_ansible_test,
    "managed-pythons": check_managed_pythons,
    "ansible-test-floor": check_ansible_test_floor,
    "collection-docs": check_collection_docs,
    "ansible-lint": check_ansible_lint,
    "galaxy-importer": check_galaxy_importer,
    "ee": check_ee,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=sorted(CHECKS), help="run only this check (repeatable)")
    parser.add_argument("--skip", action="append", choices=sorted(CHECKS), default=[], help="leave this check out")
    parser.add_argument("--list", action="store_true", help="print the names of the checks")
    parser.add_argument("--pip-bootstrap", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("ansible_test_args", nargs="*", help="after --: extra arguments for ansible-test sanity")
    args = parser.parse_args()
    if args.list:
        print("\n".join(CHECKS))
        return 0
    ensure_pip_bootstrap()
    if args.pip_bootstrap:  # run by check_ansible_test_floor with the floor venv's Python
        return 0
    selected = [name for name in CHECKS if name in (args.only or CHECKS) and name not in args.skip]
    failures, timings = [], []
    with tempfile.TemporaryDirectory(prefix="sanity-") as tmp:
        for name in selected:
            start = time.monotonic()
            failures += CHECKS[name](os.path.join(tmp, name), args.ansible_test_args)
            timings.append("%-20s %5.0f s" % (name, time.monotonic() - start))
    print("\nsanity timings:\n  " + "\n  ".join(timings))
    if failures:
        print("\nSANITY FAILED:\n" + "\n".join(failures))
        return 1
    print("\nsanity: all clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
