"""Issue 8, restore, end to end through ansible-playbook: playbooks/restore.yml and pitr_restore.yml
fail the play when documents were not written, and refuse a gutted backup before dropping anything."""

import json
import os
import shutil

from support import run_project_playbook


def playbook(name, server, extra_vars, tmp_path, check=False):
    vars_file = tmp_path / ("%s.vars.json" % name)
    vars_file.write_text(json.dumps(extra_vars))
    return run_project_playbook(name, server, vars_file, check=check)


def test_restore_playbook_fails_when_documents_were_not_written(private_server, tmp_path):
    client = private_server.client()
    client.shop.orders.insert_many([{"_id": i, "v": "backup"} for i in range(400)])
    root = tmp_path / "root"
    root.mkdir()
    code, out = playbook("backup.yml", private_server, {"backup_root": str(root), "backup_label": "b1",
                                                        "backup_oplog": False}, tmp_path)
    assert code == 0, out
    client.copy.orders.insert_many([{"_id": i, "v": "newer"} for i in range(0, 400, 4)])
    restore_vars = {"backup_root": str(root), "restore_label": "b1", "restore_drop": False,
                    "restore_ns_include": ["shop.*"], "restore_ns_from": ["shop.$c$"], "restore_ns_to": ["copy.$c$"]}

    code, out = playbook("restore.yml", private_server, restore_vars, tmp_path)
    assert code != 0, out
    assert "100 document(s) or oplog entries were not written: copy.orders: 100 (first error: E11000" in out, out
    assert client.copy.orders.count_documents({"v": "newer"}) == 100  # what was there stays
    assert client.copy.orders.count_documents({}) == 400  # and the rest was restored

    client.drop_database("copy")
    client.copy.orders.insert_many([{"_id": i, "v": "newer"} for i in range(0, 400, 4)])
    code, out = playbook("restore.yml", private_server, dict(restore_vars, restore_max_failed_documents=100),
                         tmp_path)
    assert code == 0, out
    assert "Restored 300 documents into 1 namespaces" in out and "(100 failed)" in out, out
    assert "accepted by max_failed_documents: 100" in out, out


def test_restore_playbook_takes_mongodump_output_only_with_require_manifest_false(private_server, tmp_path):
    client = private_server.client()
    client.shop.orders.insert_many([{"_id": i} for i in range(10)])
    root = tmp_path / "root"
    root.mkdir()
    code, out = playbook("backup.yml", private_server, {"backup_root": str(root), "backup_label": "b1",
                                                        "backup_oplog": False, "backup_gzip": False}, tmp_path)
    assert code == 0, out
    plain = tmp_path / "plain"  # as mongodump would have left it: no manifest, not our prelude
    shutil.copytree(root / "localhost" / "b1", plain)
    os.remove(plain / "manifest.json")
    os.remove(plain / "prelude.json")
    restore_vars = {"restore_source": str(plain), "restore_ns_include": ["shop.*"],
                    "restore_ns_from": ["shop.$c$"], "restore_ns_to": ["copy.$c$"]}
    code, out = playbook("restore.yml", private_server, restore_vars, tmp_path)
    assert code != 0 and "restore it with require_manifest: false" in out, out
    assert "copy" not in client.list_database_names()
    code, out = playbook("restore.yml", private_server, dict(restore_vars, restore_require_manifest=False), tmp_path)
    assert code == 0, out
    assert sorted(d["_id"] for d in client.copy.orders.find()) == list(range(10))


def test_pitr_playbook_refuses_a_gutted_full_backup_before_dropping_anything(private_server, tmp_path):
    client = private_server.client()
    client.shop.orders.insert_many([{"_id": i} for i in range(100)])
    root = tmp_path / "backups"
    root.mkdir()
    common = {"backup_root": str(root)}
    code, out = playbook("backup.yml", private_server, dict(common, backup_label="full-1"), tmp_path)
    assert code == 0, out
    client.shop.orders.insert_many([{"_id": i} for i in range(100, 120)])
    code, out = playbook("oplog_archive.yml", private_server, common, tmp_path)
    assert code == 0, out
    catalog = json.loads((root / "localhost" / "catalog.json").read_text())
    last = catalog["slices"][-1]["last_ts"].split(":")
    target = "%s:%d" % (last[0], int(last[1]) + 1)

    full = root / "localhost" / "full-1"
    for name in os.listdir(full):  # the directory stays, its content is gone
        path = full / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    client.shop.orders.insert_one({"_id": "user data after the backup"})
    before = list(client.shop.orders.find().sort("_id", 1))
    code, out = playbook("pitr_restore.yml", private_server, dict(common, target_time=target), tmp_path)
    assert code != 0, out
    assert str(full) in out and "manifest" in out, out
    assert "holds no oplog" not in out, out
    assert list(client.shop.orders.find().sort("_id", 1)) == before
