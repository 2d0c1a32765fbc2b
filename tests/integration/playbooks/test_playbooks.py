"""mongodb_dump and playbooks/backup.yml run through ansible-playbook against the test server."""

import json
import os
import re

import pytest

from support import run_playbook, run_project_playbook


@pytest.fixture
def sample(client):
    client.drop_database("pb_shop")
    client.pb_shop.orders.insert_many([{"_id": i, "total": i * 3} for i in range(400)])
    client.pb_shop.orders.create_index("total")
    yield client
    client.drop_database("pb_shop")


def test_backup_playbook_backs_up_and_is_idempotent_by_label(server, sample, tmp_path):
    backup_root = tmp_path / "root"
    backup_root.mkdir()
    vars_file = tmp_path / "vars.yml"
    vars_file.write_text("backup_root: %s\nbackup_label: weekly-1\n" % backup_root)
    code, out = run_project_playbook("backup.yml", server, vars_file)
    assert code == 0, out
    assert "written to %s/localhost/weekly-1" % backup_root in out
    manifest = json.loads((backup_root / "localhost" / "weekly-1" / "manifest.json").read_text())
    assert manifest["label"] == "weekly-1"
    assert any(ns["namespace"] == "pb_shop.orders" and ns["documents"] == 400 for ns in manifest["namespaces"])
    assert (backup_root / "localhost" / "weekly-1" / "pb_shop" / "orders.bson.gz").exists()
    assert server.password not in out  # the generated password never shows

    code, out = run_project_playbook("backup.yml", server, vars_file)
    assert code == 0, out
    assert "already complete at" in out
    assert re.search(r"localhost\s+: ok=\d+\s+changed=0 ", out), out


def test_backup_playbook_refuses_a_missing_backup_root(server, tmp_path):
    vars_file = tmp_path / "vars.yml"
    vars_file.write_text("backup_root: %s\n" % (tmp_path / "not-mounted"))
    code, out = run_project_playbook("backup.yml", server, vars_file)
    assert code != 0
    assert "does not exist or is not a directory; create it or mount the backup volume" in out


def test_backup_playbook_check_mode_creates_nothing(server, sample, tmp_path):
    backup_root = tmp_path / "root"
    backup_root.mkdir()
    vars_file = tmp_path / "vars.yml"
    vars_file.write_text("backup_root: %s\nbackup_label: planned-1\n" % backup_root)
    code, out = run_project_playbook("backup.yml", server, vars_file, check=True)
    assert code == 0, out
    assert "Check mode, nothing written: would create %s/localhost (0700)" % backup_root in out
    assert "register it in the catalog of %s/localhost" % backup_root in out
    assert os.listdir(str(backup_root)) == []  # not even the host's backup root


MODULE_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - dbops.mongodb_backup.mongodb_dump:
        login_host: "{host}"
        login_port: {port}
        login_user: "{user}"
        login_password: "{password}"
        direct_connection: true
        db: pb_shop
        archive: "{archive}"
        label: pb-1
      register: result
    - ansible.builtin.copy:
        content: "{{{{ result | to_json }}}}"
        dest: "{result_file}"
      check_mode: false
"""


def test_module_result_through_ansible(server, sample, tmp_path):
    archive = tmp_path / "pb.archive"
    result_file = tmp_path / "result.json"
    text = MODULE_PLAYBOOK.format(host=server.host, port=server.port, user=server.username,
                                  password=server.password, archive=archive, result_file=result_file)
    code, out = run_playbook(text, tmp_path)
    assert code == 0, out
    result = json.loads(result_file.read_text())
    assert result["changed"] is True
    assert result["total_documents"] == 400 and result["mb_per_second"] >= 0
    assert result["namespaces"][0]["namespace"] == "pb_shop.orders"
    assert result["path"] == str(archive) and archive.exists()
    assert os.path.exists(result["manifest"])
    assert server.password not in result_file.read_text()


def test_module_check_mode_writes_nothing(server, sample, tmp_path):
    archive = tmp_path / "planned.archive"
    result_file = tmp_path / "result.json"
    text = MODULE_PLAYBOOK.format(host=server.host, port=server.port, user=server.username,
                                  password=server.password, archive=archive, result_file=result_file)
    code, out = run_playbook(text, tmp_path, check=True)
    assert code == 0, out
    result = json.loads(result_file.read_text())
    assert result["namespaces"][0]["estimated_documents"] == 400
    assert not archive.exists() and not os.path.exists(str(archive) + ".partial")


def test_module_wrong_password_fails_without_echoing_it(server, sample, tmp_path):
    archive = tmp_path / "denied.archive"
    text = MODULE_PLAYBOOK.format(host=server.host, port=server.port, user=server.username,
                                  password="NotTheRightOne-42", archive=archive,
                                  result_file=tmp_path / "r.json")
    code, out = run_playbook(text, tmp_path)
    assert code != 0
    assert "authentication as user '%s'" % server.username in out
    assert "NotTheRightOne-42" not in out
    assert not archive.exists()


def test_restore_playbook_restores_a_labelled_backup(server, client, sample, tmp_path):
    backup_root = tmp_path / "root"
    backup_root.mkdir()
    backup_vars = tmp_path / "backup.yml"
    backup_vars.write_text("backup_root: %s\nbackup_label: before-change\nbackup_format: archive\n" % backup_root)
    code, out = run_project_playbook("backup.yml", server, backup_vars)
    assert code == 0, out
    restore_vars = tmp_path / "restore.yml"
    restore_vars.write_text("backup_root: %s\nrestore_label: before-change\nrestore_ns_include: ['pb_shop.*']\n"
                            "restore_ns_from: ['pb_shop.$c$']\nrestore_ns_to: ['pb_copy.$c$']\n" % backup_root)
    try:
        code, out = run_project_playbook("restore.yml", server, restore_vars)
        assert code == 0, out
        assert "Restored 400 documents into 1 namespaces" in out
        assert sorted(d["_id"] for d in client.pb_copy.orders.find()) == list(range(400))
        assert "total_1" in [ix["name"] for ix in client.pb_copy.orders.list_indexes()]
    finally:
        client.drop_database("pb_copy")
