"""The collection tarball holds the collection and nothing a developer's checkout accumulates.

A copy of the checkout is dirtied the way work leaves it (demo backups, ansible-lint's
``.ansible/``, bytecode, ansible-test output, old tarballs, extra venvs, caches) and built with
``ansible-galaxy collection build``, as a user publishing it would.
"""

import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from support import REPO as ROOT
ANSIBLE_GALAXY = os.path.join(os.path.dirname(sys.executable), "ansible-galaxy")

# What a published collection is made of (galaxy.yml's build_ignore keeps the rest out).
SHIPPED_TOP_LEVEL = {"MANIFEST.json", "FILES.json", "README.md", "LICENSE", "CHANGELOG.rst", "requirements.txt",
                     "bindep.txt", "plugins", "roles", "playbooks", "docs", "meta", "changelogs"}
SHIPPED_TREES = ("plugins/", "roles/", "playbooks/", "docs/", "meta/")

# Left behind by work in a checkout: path -> content.
LITTER = {
    "backups/localhost/nightly/manifest.json": "{}",
    ".cache/demo/backups/localhost/demo/manifest.json": "{}",
    ".ansible/collections/ansible_collections/x/y/galaxy.yml": "x",
    "plugins/modules/__pycache__/mongodb_dump.cpython-311.pyc": "bytecode",
    "plugins/module_utils/stray.pyc": "bytecode",
    "roles/replicaset_backup/tasks/.pytest_cache/v/cache/lastfailed": "{}",
    ".pytest_cache/v/cache/lastfailed": "{}",
    "tests/output/junit/sanity.xml": "<x/>",
    "dbops-mongodb_backup-0.9.0.tar.gz": "old build",
    "docs/examples.tar.gz": "a stray archive",
    ".venv-lint/bin/python": "#!/bin/sh\n",
    ".venv-floor/pyvenv.cfg": "home = /usr/bin\n",
    "changelogs/.plugin-cache.yaml": "plugins: {}\n",
    "context/Containerfile": "FROM scratch\n",
    "playbooks/site.retry": "localhost\n",
}


def checkout_files():
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         check=True, stdout=subprocess.PIPE).stdout.decode()
    return sorted(path for path in set(out.split("\0"))
                  if path and path.split("/")[0] not in (".venv", ".cache") and os.path.isfile(os.path.join(ROOT, path)))


@pytest.fixture(name="built", scope="module")
def fixture_built(tmp_path_factory):
    """(list of the tarball's members, list of the checkout's files) for a build from a dirty copy."""
    files = checkout_files()
    src = tmp_path_factory.mktemp("checkout") / "mongodb_backup"
    for rel in files:
        os.makedirs(os.path.dirname(src / rel), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), src / rel)
    for rel, content in LITTER.items():
        os.makedirs(os.path.dirname(src / rel), exist_ok=True)
        (src / rel).write_text(content)
    os.symlink(ROOT, src / ".venv")  # as the worktrees have it
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([ANSIBLE_GALAXY, "collection", "build", "--output-path", str(out), str(src)], check=True,
                   cwd=str(out), stdout=subprocess.PIPE)
    (tarball,) = out.glob("dbops-mongodb_backup-*.tar.gz")
    with tarfile.open(tarball) as archive:
        members = [member.name for member in archive.getmembers() if member.isfile()]
    return members, files


def test_only_the_collection_is_shipped(built):
    members, _files = built
    assert sorted({name.split("/")[0] for name in members} - SHIPPED_TOP_LEVEL) == []


def test_nothing_generated_is_shipped(built):
    members, _files = built
    litter = [name for name in members
              if name in LITTER or "__pycache__" in name or name.endswith((".pyc", ".retry", ".tar.gz"))
              or ".pytest_cache" in name or name.startswith("changelogs/.plugin-cache")]
    assert litter == []


def test_every_file_of_the_collection_is_shipped(built):
    members, files = built
    expected = [rel for rel in files if rel.startswith(SHIPPED_TREES)]
    expected += ["README.md", "LICENSE", "requirements.txt", "bindep.txt", "CHANGELOG.rst",
                 "changelogs/changelog.yaml", "changelogs/config.yaml", "meta/runtime.yml"]
    assert sorted(set(expected) - set(members)) == []
    assert any(name.startswith("plugins/modules/") for name in members)
    assert any(name.startswith("roles/") and name.endswith("/tasks/main.yml") for name in members)


def test_no_test_or_development_file_is_shipped(built):
    members, _files = built
    development = ("tests/", "benchmarks/", "tools/", ".ci/", ".cache/", ".ansible/", "backups/", ".venv")
    assert [name for name in members if name.startswith(development)] == []
    assert not {"Makefile", "conftest.py", "pytest.ini", "ansible.cfg", "execution-environment.yml",
                "requirements-dev.txt", "requirements-lint.txt", "requirements-floor.txt", ".gitignore",
                ".ansible-lint"} & set(members)
