"""playbooks/verify.yml (role backup_verify) and backup.yml with backup_verify, as an operator runs them."""

import json
import os

import pytest

import testserver
from support import run_project_playbook_with

from test_verify import assert_scratch_clean, rewrite_bson


@pytest.fixture
def data(client):
    client.drop_database("pshop")
    client.pshop.orders.insert_many([{"_id": i, "total": i} for i in range(300)])
    client.pshop.orders.create_index("total")
    yield client
    client.drop_database("pshop")


def catalog(root):
    return json.loads((root / "localhost" / "catalog.json").read_text())


def test_backup_with_verification_then_verify_yml_catches_a_damaged_backup(
        data, server, scratch, scratch_client, tmp_path):
    root = tmp_path / "backups"
    root.mkdir()
    code, out = run_project_playbook_with("backup.yml", server, {
        "backup_root": str(root), "backup_label": "nightly-1", "backup_verify": True, "scratch_uri": scratch.uri},
        tmp_path)
    assert code == 0, out
    assert "Backup nightly-1 verified: " in out and "scratch server cleaned: " in out, out
    assert scratch.password not in out
    (entry,) = catalog(root)["backups"]
    assert entry["verified"]["ok"] is True and entry["verified"]["restore_seconds"] > 0
    assert_scratch_clean(scratch_client)

    # check mode plans, writes nothing
    before = (root / "localhost" / "catalog.json").read_text()
    code, out = run_project_playbook_with("verify.yml", server, {
        "backup_root": str(root), "scratch_uri": scratch.uri}, tmp_path, check=True)
    assert code == 0 and "check mode, nothing written: would restore nightly-1" in out, out
    assert (root / "localhost" / "catalog.json").read_text() == before

    # one document gone from a .bson, its sha256 and counts made to match: the content hash sees it
    rewrite_bson(str(root / "localhost" / "nightly-1"), _data_file(root),
                 lambda docs: docs[1:], fix_counts=True)
    code, out = run_project_playbook_with("verify.yml", server, {
        "backup_root": str(root), "verify_label": "nightly-1", "scratch_uri": scratch.uri}, tmp_path)
    assert code != 0, out
    assert "verification of nightly-1 FAILED: pshop.orders: content hash differs" in out, out
    assert "Backup nightly-1 FAILED verification" in out, out  # the always report
    assert catalog(root)["backups"][0]["verified"]["ok"] is False
    assert_scratch_clean(scratch_client)


def _data_file(root):
    """The orders data file of the playbook's backup (backup.yml compresses with gzip by default)."""
    names = os.listdir(str(root / "localhost" / "nightly-1" / "pshop"))
    return "pshop/" + next(n for n in names if n.startswith("orders.bson"))


def test_without_a_scratch_uri_or_a_mongod_the_role_says_so_and_leaves_nothing(data, server, tmp_path):
    root = tmp_path / "backups"
    root.mkdir()
    code, out = run_project_playbook_with("backup.yml", server, {"backup_root": str(root), "backup_label": "b1"},
                                          tmp_path)
    assert code == 0, out
    scratch_dir = tmp_path / "scratch"
    scratch_dir.mkdir()
    code, out = run_project_playbook_with("verify.yml", server, {
        "backup_root": str(root), "scratch_mongod": "/nonexistent/mongod", "scratch_dir": str(scratch_dir)},
        tmp_path)
    assert code != 0 and "no mongod to start a temporary scratch server: /nonexistent/mongod" in out, out
    assert os.listdir(str(scratch_dir)) == []  # the role's temporary directory was removed in always
    assert catalog(root)["backups"][0]["verified"] is None


def test_temporary_mongod_scratch(data, server, tmp_path):
    mongod = testserver.find_mongod()
    if mongod is None:
        pytest.skip("no mongod on this machine (MONGOD or PATH): the temporary-mongod scratch server cannot be "
                    "started; the URI scratch server is tested with the test server")
    root = tmp_path / "backups"
    root.mkdir()
    code, out = run_project_playbook_with("backup.yml", server, {"backup_root": str(root), "backup_label": "b1"},
                                          tmp_path)
    assert code == 0, out
    scratch_dir = tmp_path / "scratch"
    scratch_dir.mkdir()
    code, out = run_project_playbook_with("verify.yml", server, {
        "backup_root": str(root), "scratch_mongod": mongod, "scratch_dir": str(scratch_dir)}, tmp_path)
    assert code == 0 and "Backup b1 verified: " in out, out
    assert os.listdir(str(scratch_dir)) == []
    assert catalog(root)["backups"][0]["verified"]["ok"] is True
