"""The roles used on their own, as a playbook of the user's would: one *_backup_root, one catalog.

Every role takes its backup root as the directory holding catalog.json. The backup role writes
<root>/<label> and registers it there, the archiver writes <root>/oplog/<replica set>/ and lists the
slices there, and the restore roles read the same catalog.
"""

import json
import os

import pytest

from support import REPO, run_playbook

ROLE_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  vars_files:
    - {repo}/playbooks/vars/connection.yml
  module_defaults:
    group/dbops.mongodb_backup.mongodb: "{{{{ mongodb_connection }}}}"
  roles:
    - role: dbops.mongodb_backup.{role}
      vars:
{role_vars}"""


def role_playbook(role, **role_vars):
    """A user's play that runs one role of the collection with these variables."""
    lines = "".join("        %s: %s\n" % (name, json.dumps(value)) for name, value in role_vars.items())
    return ROLE_PLAYBOOK.format(repo=REPO, role=role, role_vars=lines)


@pytest.fixture
def sample(client):
    client.drop_database("rl_shop")
    client.rl_shop.orders.insert_many([{"_id": i, "total": i} for i in range(120)])
    yield client
    client.drop_database("rl_shop")
    client.drop_database("rl_copy")


def roles_playbook(root, label, create_root=False):
    return role_playbook("replicaset_backup", replicaset_backup_root=str(root), replicaset_backup_label=label,
                         replicaset_backup_create_root=create_root)


def test_backup_and_slices_land_in_the_one_catalog_of_the_root(server, sample, tmp_path):
    root = tmp_path / "volume"
    root.mkdir()
    code, out = run_playbook(roles_playbook(root, "roles-1"), tmp_path, server=server)
    assert code == 0, out
    assert (root / "roles-1" / "manifest.json").exists()  # <root>/<label>, no host appended
    sample.rl_shop.orders.insert_many([{"_id": 1000 + i} for i in range(10)])  # writes after the backup
    code, out = run_playbook(role_playbook("oplog_archive", oplog_archive_backup_root=str(root)), tmp_path, server=server)
    assert code == 0, out
    catalog = json.loads((root / "catalog.json").read_text())
    assert [b["path"] for b in catalog["backups"]] == ["roles-1"]
    assert catalog["slices"], catalog  # the archiver started from the backup in the same catalog
    assert all(s["file"].startswith("oplog" + os.sep) for s in catalog["slices"])
    assert sorted(os.listdir(str(root))) == ["catalog.json", "oplog", "roles-1"]
    assert "in the catalog of %s" % root in out
    assert server.password not in out

    # the restore role finds the label in the same root
    code, out = run_playbook(role_playbook(
        "restore", restore_backup_root=str(root), restore_label="roles-1", restore_ns_include=["rl_shop.*"],
        restore_ns_from=["rl_shop.$c$"], restore_ns_to=["rl_copy.$c$"]), tmp_path, server=server)
    assert code == 0, out
    assert "Restored 120 documents into 1 namespaces" in out  # the backup holds the data as it was then
    assert sample.rl_copy.orders.count_documents({}) == 120


def test_missing_root_is_refused_unless_the_role_may_create_it(server, sample, tmp_path):
    volume = tmp_path / "volume"
    code, out = run_playbook(roles_playbook(volume / "db1", "r-1"), tmp_path, server=server)
    assert code != 0 and "backup root %s does not exist or is not a directory" % (volume / "db1") in out
    assert not volume.exists()

    code, out = run_playbook(roles_playbook(volume / "db1", "r-1", create_root=True), tmp_path, server=server)
    assert code != 0 and "its parent %s must exist for replicaset_backup_create_root" % volume in out
    assert not volume.exists()  # an unmounted volume is never created

    volume.mkdir()
    code, out = run_playbook(roles_playbook(volume / "db1", "r-1", create_root=True), tmp_path, server=server)
    assert code == 0, out
    assert os.stat(str(volume / "db1")).st_mode & 0o777 == 0o700
    catalog = json.loads((volume / "db1" / "catalog.json").read_text())
    assert [b["path"] for b in catalog["backups"]] == ["r-1"]


def dump_refused(out):
    return "an oplog dump needs at least one entry" in out or "allow_empty" in out


def test_always_removes_the_backup_root_a_failed_run_created(private_server, tmp_path):
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "kept").mkdir()  # an existing root is never removed
    # a new server holds no user data: the dump refuses it after the root was created (an empty oplog on
    # FerretDB, an empty backup on mongod)
    code, out = run_playbook(roles_playbook(volume / "db1", "empty-1", create_root=True), tmp_path,
                             server=private_server)
    assert code != 0 and dump_refused(out), out
    assert "Remove the backup root this run created when the run left it empty" in out
    assert sorted(os.listdir(str(volume))) == ["kept"]

    code, out = run_playbook(roles_playbook(volume / "kept", "empty-2"), tmp_path, server=private_server)
    assert code != 0 and dump_refused(out), out
    assert (volume / "kept").is_dir()


def test_retention_after_a_backup_ages_out_the_older_ones(server, sample, tmp_path):
    root = tmp_path / "volume"
    root.mkdir()
    policy = {"keep_last": 1}
    for label in ("ret-1", "ret-2"):
        code, out = run_playbook(role_playbook("replicaset_backup", replicaset_backup_root=str(root),
                                               replicaset_backup_label=label, replicaset_backup_retention=policy),
                                 tmp_path, server=server)
        assert code == 0, out
    assert "Retention: 1 backup(s) and 0 oplog slice(s) deleted" in out
    assert sorted(os.listdir(str(root))) == ["catalog.json", "ret-2"]
    assert [b["label"] for b in json.loads((root / "catalog.json").read_text())["backups"]] == ["ret-2"]

    # check mode plans the retention of the run it plans, and deletes nothing
    code, out = run_playbook(role_playbook("replicaset_backup", replicaset_backup_root=str(root),
                                           replicaset_backup_label="ret-3", replicaset_backup_retention=policy),
                             tmp_path, server=server, check=True)
    assert code == 0, out
    assert "Retention (check mode, nothing deleted): 0 backup(s)" in out
    assert sorted(os.listdir(str(root))) == ["catalog.json", "ret-2"]


def test_a_mistyped_retention_policy_fails_the_role_before_the_backup(server, sample, tmp_path):
    root = tmp_path / "volume"
    root.mkdir()
    code, out = run_playbook(role_playbook("replicaset_backup", replicaset_backup_root=str(root),
                                           replicaset_backup_label="typo-1",
                                           replicaset_backup_retention={"keep_dialy": 7}), tmp_path, server=server)
    assert code != 0 and "backup_retention_policy.keep_dialy. Supported parameters include: keep_daily" in out, out
    assert os.listdir(str(root)) == []
