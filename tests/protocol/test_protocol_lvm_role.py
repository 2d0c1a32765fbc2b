"""The lvm_snapshot role at the command level (tests/lvm_bed.py): recording stand-ins for the LVM commands, real
read-only bind mounts, and the lockable mock mongod of tests/fsync_bed.py."""

import json
import os
import stat
import subprocess
import types

import pytest

import support
from fsync_bed import FsyncServer
from lvm_bed import LvmBed, can_mount, mounts_under, unmount_all_under

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog.store import Catalog
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import manifest as manifest_utils

pytestmark = pytest.mark.protocol

PLAY = """
- name: LVM snapshot backup
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/dbops.mongodb_backup.mongodb:
      uri: "{{{{ lookup('ansible.builtin.env', 'MONGODB_URI') }}}}"
  roles:
    - role: dbops.mongodb_backup.lvm_snapshot
      vars: {variables}
  post_tasks:
    - name: Keep the role's result
      ansible.builtin.copy:
        content: "{{{{ lvm_snapshot_result | to_json }}}}"
        dest: {result}
        mode: "0600"
"""


@pytest.fixture
def bed(tmp_path):
    able, why = can_mount(tmp_path)
    if not able:
        pytest.skip("this machine does not allow the bind mounts the LVM role test needs: %s" % why)
    bed = LvmBed(tmp_path / "lvm")
    data = bed.origin("vg0", "data")
    os.makedirs(os.path.join(data, "db", "journal"))
    with open(os.path.join(data, "db", "collection-0.wt"), "wb") as handle:
        handle.write(b"w" * 4096)
    with open(os.path.join(data, "db", "journal", "WiredTigerLog.0000000001"), "wb") as handle:
        handle.write(b"j" * 100)
    try:
        yield bed
    finally:
        unmount_all_under(tmp_path)


@pytest.fixture
def member():
    server = FsyncServer()
    yield server
    server.stop()


def run(bed, member, tmp_path, check=False, **overrides):
    root = tmp_path / "backups"
    root.mkdir(exist_ok=True)
    variables = {"lvm_snapshot_vg": "vg0", "lvm_snapshot_lv": "data", "lvm_snapshot_name": "data-snap",
                 "lvm_snapshot_device": bed.device("vg0", "data-snap"), "lvm_snapshot_fstype": "none",
                 "lvm_snapshot_mount_opts": "ro,bind", "lvm_snapshot_mount_point": str(tmp_path / "mnt"),
                 "lvm_snapshot_data_subdir": "db", "lvm_snapshot_backup_root": str(root),
                 "lvm_snapshot_label": "lvm-1"}
    variables.update(overrides)
    variables = dict((key, value) for key, value in variables.items() if value is not None)  # None: the default
    text = PLAY.format(variables=json.dumps(variables), result=json.dumps(str(tmp_path / "result.json")))
    code, out = support.run_playbook(text, tmp_path,
                                     server=types.SimpleNamespace(uri=member.uri), extra_env=bed.environment(),
                                     check=check)
    return code, out, root


def calls(bed):
    """The LVM and mount commands that changed something, in order (the reads left out)."""
    return [c[0] for c in bed.commands() if c[0] in ("lvcreate", "lvremove", "mount", "umount")
            and "--test" not in c and c[1:] not in (["-v"], ["-l"])]


def mounted(path):
    with open("/proc/self/mountinfo") as handle:
        return any(line.split()[4] == str(path) for line in handle)


def test_lock_snapshot_unlock_copy_unmount_remove_and_record(bed, member, tmp_path):
    code, out, root = run(bed, member, tmp_path)
    assert code == 0, out
    assert calls(bed) == ["lvcreate", "mount", "umount", "lvremove"]
    create = [c for c in bed.commands() if c[0] == "lvcreate"][0]
    assert create[-4:] == ["-s", "-n", "data-snap", "vg0/data"] and "10%ORIGIN" in create
    assert member.sent("fsync", "fsyncUnlock") == ["fsync", "fsyncUnlock"] and member.lock_count == 0
    assert bed.state()["vg0"] == {"data": "-wi-ao----"} and not mounted(tmp_path / "mnt")
    assert not (tmp_path / "mnt").exists()
    copy = root / "lvm-1"
    assert (copy / "collection-0.wt").read_bytes() == b"w" * 4096
    assert stat.S_IMODE(os.stat(str(copy / "journal")).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(str(copy / "collection-0.wt")).st_mode) == 0o600
    document = manifest_utils.read_manifest(str(copy / "manifest.json"))
    assert manifest_utils.damaged_files(str(copy), False, document) == []
    entry = Catalog.load(str(root)).backups[0]
    assert (entry["kind"], entry["provider"], entry["oplog_end"]) == ("snapshot", "lvm", "1714521600:3")
    result = _result(tmp_path)
    assert result["path"] == str(copy) and result["registered"] is True and result["backup_id"] == entry["backup_id"]
    assert result["oplog_time_at_lock"]["ts"] == "1714521600:3" and result["locked"] is True
    assert result["snapshot"] == "vg0/data-snap" and result["bytes"] >= 4096 + 100


def test_a_failed_copy_still_unmounts_and_removes_the_snapshot_and_leaves_no_backup(bed, member, tmp_path):
    code, out, root = run(bed, member, tmp_path, lvm_snapshot_data_subdir="no-such-dir")
    assert code != 0 and "no-such-dir" in out, out
    assert calls(bed) == ["lvcreate", "mount", "umount", "lvremove"]
    assert bed.state()["vg0"] == {"data": "-wi-ao----"} and not mounted(tmp_path / "mnt")
    assert os.listdir(str(root)) == [] and member.lock_count == 0


def test_a_failed_lvcreate_unlocks_the_member(bed, member, tmp_path):
    state = bed.state()
    state["fail_lvcreate"] = True
    bed.save(state)
    code, out, root = run(bed, member, tmp_path)
    assert code != 0 and "Insufficient free space" in out, out
    assert member.sent("fsync", "fsyncUnlock") == ["fsync", "fsyncUnlock"] and member.lock_count == 0
    assert "mount" not in calls(bed) and os.listdir(str(root)) == []


def test_check_mode_creates_no_snapshot_and_locks_nothing(bed, member, tmp_path):
    code, out, root = run(bed, member, tmp_path, check=True)
    assert code == 0, out
    assert calls(bed) == [] and member.sent("fsync", "fsyncUnlock") == []
    # lvol's plan: lvcreate --test (LVM's dry run, no metadata written) and nothing else that changes anything
    assert [c[0] for c in bed.commands() if "--test" in c] == ["lvcreate"]
    assert bed.state()["vg0"] == {"data": "-wi-ao----"} and not mounts_under(tmp_path)
    assert os.listdir(str(root)) == []


def test_snapshot_backup_role_with_lvm_locks_only_for_lvcreate(bed, tmp_path, monkeypatch):
    """snapshot_backup with provider lvm: member auto, lock, lvcreate, unlock, then mount/copy/umount/lvremove."""
    from fsync_bed import replica_set_with
    server = FsyncServer()
    try:
        address = "%s:%d" % server.server.address
        server.replica_set = replica_set_with(address)
        monkeypatch.setenv("PATH", bed.environment()["PATH"])
        root = tmp_path / "backups"
        root.mkdir()
        code, out = support.run_project_playbook_with("snapshot_backup.yml", types.SimpleNamespace(
            uri=server.uri + "/?directConnection=true"), {
                "backup_root": str(root), "backup_label": "lvm-rs", "snapshot_backup_provider": "lvm",
                "snapshot_backup_volumes": {address: {
                    "vg": "vg0", "lv": "data", "name": "data-snap", "device": bed.device("vg0", "data-snap"),
                    "fstype": "none", "mount_opts": "ro,bind", "mount_point": str(tmp_path / "mnt"),
                    "data_subdir": "db"}}}, tmp_path)
        assert code == 0, out
        assert server.sent("fsync", "fsyncUnlock") == ["fsync", "fsyncUnlock"] and server.lock_count == 0
        assert calls(bed) == ["lvcreate", "mount", "umount", "lvremove"]
        entry = Catalog.load(str(root)).backups[0]
        assert (entry["label"], entry["provider"], entry["oplog_end"], entry["member"]) == \
            ("lvm-rs", "lvm", "1714521600:3", address)
        assert (root / "lvm-rs" / "collection-0.wt").read_bytes() == b"w" * 4096
    finally:
        server.stop()


def _result(tmp_path):
    return json.loads((tmp_path / "result.json").read_text())


def test_without_lock_or_record_the_copy_is_private_and_named_after_the_label(bed, member, tmp_path):
    """lvm_snapshot_fsync_lock false: nothing sent to the member, no oplog time. The snapshot is named after the label,
    mounted at a temporary directory that is gone afterwards; unrecorded, the copy stays in <label>.partial with
    files 0600 and directories 0700 whatever the snapshot held, and lvm_snapshot_result names it."""
    data = bed.origin("vg0", "data")
    os.chmod(os.path.join(data, "db"), 0o755)
    os.chmod(os.path.join(data, "db", "journal"), 0o775)
    os.chmod(os.path.join(data, "db", "collection-0.wt"), 0o644)
    code, out, root = run(bed, member, tmp_path, lvm_snapshot_fsync_lock=False, lvm_snapshot_register=False,
                          lvm_snapshot_label="nightly:7", lvm_snapshot_name=None, lvm_snapshot_mount_point=None,
                          lvm_snapshot_device=bed.device("vg0", "data-snap-nightly_7"))
    assert code == 0, out
    assert member.sent("fsync", "fsyncUnlock") == []
    create = [c for c in bed.commands() if c[0] == "lvcreate"][0]
    assert create[-4:] == ["-s", "-n", "data-snap-nightly_7", "vg0/data"]
    mount = [c for c in bed.commands() if c[0] == "mount"][0]
    assert os.path.basename(mount[-1]).startswith("dbops-lvm-snapshot.") and not os.path.exists(mount[-1])
    assert calls(bed) == ["lvcreate", "mount", "umount", "lvremove"] and bed.state()["vg0"] == {"data": "-wi-ao----"}
    copy = root / "nightly:7.partial"
    modes = dict((os.path.relpath(os.path.join(d, n), str(copy)), stat.S_IMODE(os.stat(os.path.join(d, n)).st_mode))
                 for d, dirs, files in os.walk(str(copy)) for n in dirs + files)
    assert modes == {"journal": 0o700, "collection-0.wt": 0o600, "journal/WiredTigerLog.0000000001": 0o600}
    assert stat.S_IMODE(os.stat(str(copy)).st_mode) == 0o700
    assert (copy / "collection-0.wt").read_bytes() == b"w" * 4096
    assert Catalog.load(str(root)).backups == []
    result = _result(tmp_path)
    assert result["snapshot"] == "vg0/data-snap-nightly_7" and result["locked"] is False
    assert result["oplog_time_at_lock"] is None and result["registered"] is False and result["backup_id"] is None
    assert result["path"] == str(copy) and result["bytes"] >= 4096 + 100


def test_a_stale_snapshot_of_the_same_name_is_refused_and_kept(bed, member, tmp_path):
    state = bed.state()
    state["vg0"]["data-snap"] = "swi-a-s---"
    bed.save(state)
    code, out, root = run(bed, member, tmp_path)
    assert code != 0 and "vg0/data-snap already exists" in out and "lvremove vg0/data-snap" in out, out
    assert calls(bed) == [] and bed.state()["vg0"]["data-snap"] == "swi-a-s---"
    assert member.sent("fsync", "fsyncUnlock") == ["fsync", "fsyncUnlock"] and member.lock_count == 0
    assert os.listdir(str(root)) == []


def test_a_failed_unmount_still_removes_the_snapshot_and_says_what_is_left(bed, member, tmp_path):
    state = bed.state()
    state["fail_umount"] = True
    bed.save(state)
    code, out, root = run(bed, member, tmp_path)
    assert code != 0 and "target is busy" in out and "Unmount " + str(tmp_path / "mnt") in out, out
    assert calls(bed) == ["lvcreate", "mount", "umount", "lvremove"]
    assert mounts_under(tmp_path) == [str(tmp_path / "mnt")]  # still mounted, so the mount point is kept
    assert Catalog.load(str(root)).backups == [] and member.lock_count == 0


def test_a_mount_point_in_use_is_left_alone(bed, member, tmp_path):
    # A tmpfs, with a device of its own as a real mount has: ansible.posix.mount tells a mount point by its device
    # (or, for a bind mount, by its source), so a bind mount of this filesystem from elsewhere would look unmounted.
    busy = tmp_path / "busy"
    busy.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "dbops-test", str(busy)], check=True)
    (busy / "keep.txt").write_text("someone else's")
    code, out, root = run(bed, member, tmp_path, lvm_snapshot_mount_point=str(busy))
    assert code != 0 and "already mounted with a different source" in out, out
    assert mounts_under(tmp_path) == [str(busy)] and (busy / "keep.txt").read_text() == "someone else's"
    assert calls(bed) == ["lvcreate", "lvremove"] and bed.state()["vg0"] == {"data": "-wi-ao----"}
    assert os.listdir(str(root)) == []
