"""End to end through ansible-playbook: full backup, oplog archiving, point-in-time restores."""

import json

from conftest import run_project_playbook


def playbook(name, server, extra_vars, tmp_path):
    vars_file = tmp_path / ("%s.vars.json" % name)
    vars_file.write_text(json.dumps(extra_vars))
    return run_project_playbook(name, server, vars_file)


def write(client, start, count):
    for n in range(start, start + count):
        client.shop.orders.insert_one({"_id": n, "total": n})
        if n % 3 == 0:
            client.shop.orders.update_one({"_id": n // 2}, {"$set": {"total": -n}})
        if n % 5 == 0:
            client.shop.orders.delete_one({"_id": n // 3})


def state_and_target(client):
    """The data now, and the target just after the newest oplog entry (restores exactly this state)."""
    newest = client.local["oplog.rs"].find_one({}, sort=[("$natural", -1)])["ts"]
    return list(client.shop.orders.find().sort("_id", 1)), "%d:%d" % (newest.time, newest.inc + 1)


def test_backup_archive_and_restore_to_points_in_time(private_server, tmp_path):
    client = private_server.client()
    root = tmp_path / "backups"
    root.mkdir()
    common = {"backup_root": str(root)}
    write(client, 0, 100)
    code, out = playbook("backup.yml", private_server, dict(common, backup_label="full-1", backup_oplog=True), tmp_path)
    assert code == 0, out
    write(client, 100, 40)
    first_state, first_target = state_and_target(client)
    write(client, 140, 40)
    code, out = playbook("oplog_archive.yml", private_server, common, tmp_path)
    assert code == 0, out
    write(client, 180, 40)
    last_state, last_target = state_and_target(client)
    code, out = playbook("oplog_archive.yml", private_server, common, tmp_path)
    assert code == 0, out
    code, out = playbook("backup.yml", private_server, dict(common, backup_label="full-1", backup_oplog=True), tmp_path)
    assert code == 0 and "already complete at" in out, out  # same label: nothing changes

    for state, target in ((first_state, first_target), (last_state, last_target)):
        write(client, 1000, 5)  # drift that the restore must undo
        code, out = playbook("pitr_restore.yml", private_server, dict(common, target_time=target), tmp_path)
        assert code == 0, out
        assert list(client.shop.orders.find().sort("_id", 1)) == state, "restore to %s" % target

    # a corrupt slice: refused before anything is written
    catalog = json.loads((root / "localhost" / "catalog.json").read_text())
    slice_path = root / "localhost" / catalog["slices"][-1]["file"]
    slice_path.write_bytes(slice_path.read_bytes()[:-5] + b"XXXXX")
    client.shop.orders.insert_one({"_id": "marker"})
    code, out = playbook("pitr_restore.yml", private_server, dict(common, target_time=last_target), tmp_path)
    assert code != 0 and "is corrupt" in out, out
    assert client.shop.orders.find_one({"_id": "marker"}) is not None


def test_gap_is_detected_reported_and_refused(private_server, tmp_path):
    client = private_server.client()
    root = tmp_path / "backups"
    root.mkdir()
    common = {"backup_root": str(root)}
    write(client, 0, 50)
    code, out = playbook("backup.yml", private_server, dict(common, backup_label="full-1", backup_oplog=True), tmp_path)
    assert code == 0, out
    write(client, 50, 20)
    code, out = playbook("oplog_archive.yml", private_server, common, tmp_path)
    assert code == 0, out
    write(client, 70, 20)
    # the capped oplog rolls over: entries after the last archived one are lost
    newest = client.local["oplog.rs"].find_one({}, sort=[("$natural", -1)])["ts"]
    client.local["oplog.rs"].delete_many({"ts": {"$lt": newest}})
    write(client, 90, 10)
    _state, target = state_and_target(client)
    code, out = playbook("oplog_archive.yml", private_server, common, tmp_path)
    assert code != 0 and "oplog gap" in out and "take a new full backup" in out, out
    catalog = json.loads((root / "localhost" / "catalog.json").read_text())
    assert catalog["gaps"], "the gap was not recorded"
    client.shop.orders.insert_one({"_id": "marker"})
    code, out = playbook("pitr_restore.yml", private_server, dict(common, target_time=target), tmp_path)
    assert code != 0 and "oplog gap" in out, out
    assert client.shop.orders.find_one({"_id": "marker"}) is not None  # the target was not touched
