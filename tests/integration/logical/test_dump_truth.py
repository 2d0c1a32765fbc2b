"""Issue 8, the dump's part: nothing lost, nothing falsely reported (locks, staging, idempotence, empty queries,
clear errors). Real test server, real files; disk full on a real (small) tmpfs."""

import contextlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump as dump_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import backup_target
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_options
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import locking
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import manifest as manifest_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import (
    DumpFailed,
    InvalidOption,
    LockError,
    NamespaceNotFound,
)

from support import REPO, run_playbook, run_project_playbook, TOOLS_BIN

DB = "truth_shop"


@pytest.fixture
def shop(client):
    client.drop_database(DB)
    client[DB].orders.insert_many([{"_id": i, "total": i * 3, "pad": "x" * 300} for i in range(3000)])
    client[DB].customers.insert_many([{"_id": i, "name": "c%d" % i} for i in range(200)])
    yield client
    client.drop_database(DB)


def run_dump(client, check_mode=False, progress=None, **options):
    facts = client_utils.server_facts(client)
    return dump_engine.dump(client, dump_options.DumpOptions(**options), facts, check_mode=check_mode,
                            progress=progress)


def manifest_of(target, is_archive=False):
    return json.loads(open(manifest_utils.manifest_path(str(target), is_archive)).read())


def assert_intact(target, is_archive=False):
    document = manifest_of(target, is_archive)
    assert manifest_utils.damaged_files(str(target), is_archive, document) == []
    base = os.path.dirname(str(target)) if is_archive else str(target)
    listed = sorted(record["path"] for record in document["files"])
    if not is_archive:
        on_disk = sorted(os.path.relpath(os.path.join(root, name), base)
                         for root, _dirs, files in os.walk(base) for name in files if name != "manifest.json")
        assert on_disk == listed  # every file of the run, nothing from another run, no marker
    return document


# --------------------------------------------------------------------------- defect 4: one run per target

def _second_run_during_first(client, target, second_options):
    """Start a second dump of the same target while the first is writing its first batch; the first's result,
    the second's result or exception."""
    outcome = {}

    def second():
        try:
            outcome["second"] = run_dump(client, **second_options)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["second_error"] = exc

    thread = threading.Thread(target=second)

    def on_progress(event, **details):
        if event == "batch" and not thread.is_alive() and "started" not in outcome:
            outcome["started"] = True
            lock = str(target) + backup_target.LOCK_SUFFIX
            outcome["lock"] = (stat.S_IMODE(os.stat(lock).st_mode), json.loads(open(lock).read()))
            thread.start()
            thread.join(1.0)  # the second run is now waiting on the lock, or failed at once

    outcome["first"] = run_dump(client, progress=on_progress, path=str(target), label="data", db=DB,
                                num_parallel_collections=1)
    thread.join(60)
    return outcome


def test_concurrent_same_label_second_run_waits_then_keeps_the_complete_backup(shop, tmp_path):
    target = tmp_path / "data"
    outcome = _second_run_during_first(shop, target, dict(path=str(target), label="data", db=DB, lock_timeout=60))
    assert "second_error" not in outcome, outcome.get("second_error")
    first_changed, first = outcome["first"]
    second_changed, second = outcome["second"]
    assert first_changed and not second_changed
    mode, holder = outcome["lock"]  # the lock file during the run: private, names the run
    assert mode == 0o600 and holder["pid"] == os.getpid() and holder["purpose"] == "dump with label data"
    assert second["backup_id"] == first["backup_id"]
    assert "already complete" in second["msg"]
    document = assert_intact(target)
    assert {ns["namespace"]: ns["documents"] for ns in document["namespaces"]} == {
        DB + ".customers": 200, DB + ".orders": 3000}
    assert sorted(os.listdir(tmp_path)) == ["data"]  # no .partial, no .lock left


def test_concurrent_run_with_no_wait_fails_naming_the_other_run(shop, tmp_path):
    target = tmp_path / "data"
    outcome = _second_run_during_first(shop, target, dict(path=str(target), label="data", db=DB, lock_timeout=0))
    error = outcome["second_error"]
    assert isinstance(error, LockError)
    assert "the backup target %s is in use by another run (pid %d on " % (target, os.getpid()) in error.message
    assert "dump with label data" in error.message and "lock_timeout" in error.message
    assert outcome["first"][0]
    assert_intact(target)


def test_concurrent_processes_one_complete_backup(server, shop, tmp_path):
    """Two real module processes (ansible-playbook) on the same label at once: one writes, one keeps it."""
    target = tmp_path / "data"
    playbook = """
- hosts: localhost
  gather_facts: false
  tasks:
    - dbops.mongodb_backup.mongodb_dump:
        uri: "{{{{ lookup('ansible.builtin.env', 'MONGODB_URI') }}}}"
        db: {db}
        path: {target}
        label: data
        num_parallel_collections: 1
      register: result
    - ansible.builtin.copy:
        content: "{{{{ result | to_json }}}}"
        dest: "{{{{ result_file }}}}"
"""
    runs = []
    with _held_a_while(target):  # both runs reach the lock while it is held, then race for it
        _start_two(runs, tmp_path, playbook, server, target)
    results = []
    for work, process in runs:
        out = process.communicate(timeout=300)[0].decode()
        assert process.returncode == 0, out
        results.append(json.loads((work / "result.json").read_text()))
    assert sorted(r["changed"] for r in results) == [False, True]
    assert len({r["backup_id"] for r in results}) == 1
    assert_intact(target)


def _start_two(runs, tmp_path, playbook, server, target):
    for index in range(2):
        work = tmp_path / ("run%d" % index)
        work.mkdir()
        (work / "playbook.yml").write_text(playbook.format(db=DB, target=target))
        env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), MONGODB_URI=server.uri)
        argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), str(work / "playbook.yml"),
                "-e", "result_file=%s" % (work / "result.json")]
        runs.append((work, subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT)))


@contextlib.contextmanager
def _held_a_while(target, seconds=12):
    """Hold the target's lock (as a third run would) while ansible-playbook starts the modules."""
    with locking.exclusive(str(target) + backup_target.LOCK_SUFFIX, 0, "test", "the test holding the lock"):
        yield
        time.sleep(seconds)


def test_a_user_directory_named_partial_survives(shop, tmp_path):
    target = tmp_path / "data"
    users = tmp_path / "data.partial"
    users.mkdir()
    (users / "thesis.txt").write_text("only copy")
    with pytest.raises(DumpFailed, match=r"data\.partial is in the way of the backup .* not made by this "
                                         r"collection .* left untouched; move it away"):
        run_dump(shop, path=str(target), label="data", db=DB)
    assert (users / "thesis.txt").read_text() == "only copy"
    assert not target.exists()
    # check mode says the same, before anything would be read
    with pytest.raises(DumpFailed, match="is in the way"):
        run_dump(shop, check_mode=True, path=str(target), label="data", db=DB)
    # a user's file named <archive>.partial too
    (tmp_path / "a.archive.partial").write_text("mine")
    with pytest.raises(DumpFailed, match="is in the way"):
        run_dump(shop, archive=str(tmp_path / "a.archive"), label="a", db=DB)
    assert (tmp_path / "a.archive.partial").read_text() == "mine"


def test_a_killed_runs_marked_staging_is_removed_and_the_dump_completes(shop, tmp_path):
    target = tmp_path / "data"
    leftover = tmp_path / "data.partial"
    leftover.mkdir()
    (leftover / backup_target.STAGING_MARKER).write_text("{}")
    (leftover / "half-written.bson").write_bytes(b"\x00" * 10)
    changed, _result = run_dump(shop, path=str(target), label="data", db=DB)
    assert changed and not leftover.exists()
    assert_intact(target)


# --------------------------------------------------------------------------- defect 8: archive manifest, disk full

def _tmpfs(path, size):
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a small tmpfs (a real full disk) needs root to mount")
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d,mode=0700" % size, "tmpfs", str(path)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    mounted = tmp_path / "disk"
    yield mounted
    if os.path.ismount(str(mounted)):
        subprocess.run(["umount", str(mounted)], check=True)


def test_disk_full_at_the_archive_manifest_leaves_nothing_complete_looking(shop, small_disk, tmp_path):
    # Many ns_include patterns make the manifest (which records them) larger than the archive itself.
    patterns = [DB + ".*"] + ["%s.unused_%04d" % (DB, i) for i in range(1500)]
    probe = tmp_path / "probe.archive"
    run_dump(shop, archive=str(probe), label="m1", db=DB, collection="customers")
    archive_bytes = os.path.getsize(str(probe))
    page = 4096
    # room for the archive, the lock file and the staging marker, not for the manifest
    _tmpfs(small_disk, (archive_bytes // page + 1) * page + 3 * page)
    target = small_disk / "m1.archive"
    with pytest.raises(DumpFailed) as failure:
        run_dump(shop, archive=str(target), label="m1", db=DB, collection="customers", ns_include=patterns)
    assert "No space left on device" in failure.value.message
    assert "the incomplete backup was removed" in failure.value.message
    assert os.listdir(str(small_disk)) == []  # no archive under its final name, no manifest.partial
    # more room: the rerun (same options) completes
    subprocess.run(["mount", "-o", "remount,size=%d" % (4 * 1024 * 1024), str(small_disk)], check=True)
    changed, result = run_dump(shop, archive=str(target), label="m1", db=DB, collection="customers",
                               ns_include=patterns)
    assert changed and result["total_documents"] == 200
    assert_intact(target, is_archive=True)


def test_an_archive_left_by_the_old_failure_is_replaced_with_force(shop, tmp_path):
    """The state the old version left (archive under its final name, 0-byte manifest.json.partial)."""
    target = tmp_path / "m1.archive"
    target.write_bytes(b"\x6d\xe2\x99\x81" + b"\x00" * 100)
    (tmp_path / "m1.archive.manifest.json.partial").write_bytes(b"")
    with pytest.raises(DumpFailed, match="not a complete backup"):
        run_dump(shop, archive=str(target), label="m1", db=DB)
    changed, _result = run_dump(shop, archive=str(target), label="m1", db=DB, force=True)
    assert changed
    assert sorted(os.listdir(str(tmp_path))) == ["m1.archive", "m1.archive.manifest.json"]
    assert_intact(target, is_archive=True)


def test_a_run_killed_between_the_archive_renames_is_finished_by_the_rerun(shop, tmp_path):
    target = tmp_path / "m1.archive"
    _changed, first = run_dump(shop, archive=str(target), label="m1", db=DB)
    # the state a kill between the two renames leaves: archive in place, its manifest still staged
    staging = tmp_path / "m1.archive.partial"
    staging.mkdir()
    (staging / backup_target.STAGING_MARKER).write_text("{}")
    os.rename(str(tmp_path / "m1.archive.manifest.json"), str(staging / "manifest.json"))
    changed, result = run_dump(shop, archive=str(target), label="m1", db=DB, check_mode=True)
    assert not changed and result["backup_id"] == first["backup_id"]  # check mode plans the same, writes nothing
    assert (staging / "manifest.json").exists()
    changed, result = run_dump(shop, archive=str(target), label="m1", db=DB)
    assert not changed and result["backup_id"] == first["backup_id"]
    assert sorted(os.listdir(str(tmp_path))) == ["m1.archive", "m1.archive.manifest.json"]


# --------------------------------------------------------------------------- defect 9: idempotence checks scope and files

def test_same_label_with_another_scope_is_refused_naming_both(shop, tmp_path):
    target = tmp_path / "data"
    run_dump(shop, path=str(target), label="data", db=DB)
    shop.truth_other.things.insert_one({"_id": 1})
    try:
        with pytest.raises(DumpFailed) as failure:
            run_dump(shop, path=str(target), label="data", db="truth_other")
    finally:
        shop.drop_database("truth_other")
    message = failure.value.message
    assert 'db: asked "truth_other", the backup holds "%s"' % DB in message
    assert "use another label or path for this scope, or force: true" in message
    with pytest.raises(DumpFailed, match=r'compression: asked "gzip", the backup holds "none"'):
        run_dump(shop, path=str(target), label="data", db=DB, gzip=True)
    with pytest.raises(DumpFailed, match=r'collection: asked "orders", the backup holds null'):
        run_dump(shop, path=str(target), label="data", db=DB, collection="orders")
    assert not run_dump(shop, path=str(target), label="data", db=DB)[0]  # same scope: kept


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_same_label_after_a_file_was_damaged_is_refused_naming_the_file(shop, tmp_path, damage):
    target = tmp_path / "data"
    run_dump(shop, path=str(target), label="data", db=DB)
    victim = target / DB / "orders.bson"
    data = bytearray(victim.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
    elif damage == "truncate":
        victim.write_bytes(bytes(data[:100]))
    else:
        victim.unlink()
    with pytest.raises(DumpFailed) as failure:
        run_dump(shop, path=str(target), label="data", db=DB)
    message = failure.value.message
    assert "at %s is damaged (%s: " % (target, victim) in message
    assert {"flip": "sha256", "truncate": "100 bytes", "delete": "missing"}[damage] in message
    assert "force: true" in message
    changed, _result = run_dump(shop, path=str(target), label="data", db=DB, force=True)
    assert changed
    assert_intact(target)


def test_same_label_archive_with_a_damaged_file_is_refused(shop, tmp_path):
    target = tmp_path / "m.archive"
    run_dump(shop, archive=str(target), label="m", db=DB)
    with open(str(target), "r+b") as handle:
        handle.seek(200)
        byte = handle.read(1)
        handle.seek(200)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(DumpFailed, match=r"is damaged \(%s: sha256" % re.escape(str(target))):
        run_dump(shop, archive=str(target), label="m", db=DB)


# --------------------------------------------------------------------------- defect 10: empty query result

def test_a_query_matching_nothing_fails_unless_allow_empty(shop, tmp_path):
    target = tmp_path / "none"
    with pytest.raises(NamespaceNotFound) as failure:
        run_dump(shop, path=str(target), label="none", db=DB, collection="orders", query='{"total": -1}')
    assert failure.value.message.startswith('the query {"total": -1} matches no document in %s.orders' % DB)
    assert "set allow_empty: true" in failure.value.message
    assert not os.path.lexists(str(target)) and os.listdir(str(tmp_path)) == []
    changed, result = run_dump(shop, path=str(target), label="none", db=DB, collection="orders",
                               query='{"total": -1}', allow_empty=True)
    assert changed and result["total_documents"] == 0
    # a query that matches documents is unaffected
    changed, result = run_dump(shop, path=str(tmp_path / "some"), db=DB, collection="orders",
                               query='{"total": {"$lt": 30}}')
    assert result["total_documents"] == 10


# --------------------------------------------------------------------------- clear errors

def test_archive_pointing_at_a_directory_is_refused_before_reading(shop, tmp_path):
    directory = tmp_path / "backups"
    directory.mkdir()
    reads = []
    with pytest.raises(InvalidOption) as failure:
        run_dump(shop, archive=str(directory), db=DB, progress=lambda event, **d: reads.append(event))
    assert failure.value.message.startswith("archive %s is an existing directory" % directory)
    assert "use path: %s" % directory in failure.value.message
    assert reads == [] and os.listdir(str(directory)) == [] and os.listdir(str(tmp_path)) == ["backups"]
    with pytest.raises(InvalidOption, match="is an existing directory"):
        run_dump(shop, archive=str(directory), db=DB, check_mode=True)


def test_member_message_when_member_is_unset(server, tmp_path):
    """The test server announces a replica set name but has no replSetGetStatus: without directConnection
    the module must not advise to "leave member unset" when it is unset."""
    playbook = """
- hosts: localhost
  gather_facts: false
  tasks:
    - dbops.mongodb_backup.mongodb_dump:
        login_host: {host}
        login_port: {port}
        login_user: {user}
        login_password: "{{{{ lookup('ansible.builtin.env', 'PW') }}}}"
        db: admin
        path: {path}
{member}
"""
    text = playbook.format(host=server.host, port=server.port, user=server.username, path=tmp_path / "b",
                           member="")
    code, out = run_playbook(text, tmp_path, extra_env={"PW": server.password})
    assert code != 0
    assert "cannot report a replica set status" in out and "(member is unset)" in out
    assert "directConnection=true" in out
    assert "leave member unset" not in out
    text = playbook.format(host=server.host, port=server.port, user=server.username, path=tmp_path / "b",
                           member="        member: %s\n        direct_connection: true" % server.address)
    code, out = run_playbook(text, tmp_path, extra_env={"PW": server.password})
    assert code != 0
    assert "leave member unset (it is '%s')" % server.address in out
    assert server.password not in out


# --------------------------------------------------------------------------- backup.yml --check, modes under any umask

def test_backup_playbook_check_mode_plans_and_writes_nothing(server, shop, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    vars_file = tmp_path / "vars.yml"
    vars_file.write_text("backup_root: %s\nbackup_label: weekly-1\nbackup_oplog: false\n" % root)
    code, out = run_project_playbook("backup.yml", server, vars_file, check=True)
    assert code == 0, out
    assert "Check mode, nothing written: would create %s/localhost (0700), dump " % root in out
    assert "into %s/localhost/weekly-1 with label weekly-1 and register it" % root in out
    assert os.listdir(str(root)) == []
    code, out = run_project_playbook("backup.yml", server, vars_file)
    assert code == 0, out
    assert "written to %s/localhost/weekly-1" % root in out
    code, out = run_project_playbook("backup.yml", server, vars_file, check=True)
    assert code == 0, out
    assert "already complete at %s/localhost/weekly-1" % root in out
    assert re.search(r"localhost\s+: ok=\d+\s+changed=0 ", out), out


def _modes_under(root):
    found = {}
    for directory, dirs, files in os.walk(str(root)):
        for name in dirs + files:
            path = os.path.join(directory, name)
            found[os.path.relpath(path, str(root))] = stat.S_IMODE(os.lstat(path).st_mode)
    return found


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_every_directory_is_0700_and_every_file_0600_whatever_the_umask(server, shop, tmp_path, umask):
    root = tmp_path / "root"
    root.mkdir(mode=0o700)
    vars_file = tmp_path / "vars.yml"
    vars_file.write_text("backup_root: %s\nbackup_label: u\nbackup_oplog: false\n" % root)
    previous = os.umask(umask)
    try:
        code, out = run_project_playbook("backup.yml", server, vars_file)
        assert code == 0, out
        run_dump(shop, path=str(root / "localhost" / "engine-dir"), db=DB, gzip=True)
        run_dump(shop, archive=str(root / "localhost" / "engine.archive"), db=DB)
    finally:
        os.umask(previous)
    modes = _modes_under(root)
    assert "localhost/catalog.json" in modes and "localhost/u/%s/orders.bson.gz" % DB in modes
    wrong = {path: oct(mode) for path, mode in modes.items()
             if mode != (0o700 if os.path.isdir(str(root / path)) else 0o600)}
    assert wrong == {}


def test_two_backup_playbooks_with_the_same_label_at_once_one_backup_one_catalog_entry(server, shop, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    vars_file = tmp_path / "vars.yml"
    vars_file.write_text("backup_root: %s\nbackup_label: nightly\nbackup_oplog: false\nbackup_parallel: 1\n" % root)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), MONGODB_URI=server.uri,
               ANSIBLE_NOCOLOR="1")
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
            os.path.join(REPO, "playbooks", "backup.yml"), "-e", "@%s" % vars_file]
    (root / "localhost").mkdir(mode=0o700)
    with _held_a_while(root / "localhost" / "nightly"):  # both runs reach the lock while it is held
        processes = [subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                     for _run in range(2)]
    outputs = [process.communicate(timeout=300)[0].decode() for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    assert sorted("written to %s/localhost/nightly" % root in out for out in outputs) == [False, True]
    assert sorted("already complete at %s/localhost/nightly" % root in out for out in outputs) == [False, True]
    document = assert_intact(root / "localhost" / "nightly")
    catalog = json.loads((root / "localhost" / "catalog.json").read_text())
    assert [(b["label"], b["backup_id"]) for b in catalog["backups"]] == [("nightly", document["backup_id"])]
    assert sorted(os.listdir(str(root / "localhost"))) == ["catalog.json", "nightly"]


# --------------------------------------------------------------------------- the same rules with engine: mongodump

def _mongodump_binary():
    tools = TOOLS_BIN
    binary = os.path.join(tools, "mongodump")
    if not os.access(binary, os.X_OK):
        pytest.skip("the real mongodump is not at %s (set MONGO_TOOLS_BIN)" % binary)
    return binary


@pytest.mark.parametrize("kind", ["path", "archive"])
def test_engine_mongodump_uses_the_marked_staging_and_the_kept_backup_checks(shop, connection, tmp_path, kind):
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import mongotools as mongodump_tool
    binary = _mongodump_binary()
    target = tmp_path / ("data" if kind == "path" else "data.archive")
    users = tmp_path / (target.name + ".partial")
    users.mkdir()
    (users / "keep.txt").write_text("mine")

    def run(**extra):
        options = dict({kind: str(target), "label": "data", "db": DB}, **extra)
        return mongodump_tool.run(connection, dump_options.DumpOptions(**options), binary, False)

    with pytest.raises(DumpFailed, match="is in the way"):
        run()
    assert (users / "keep.txt").read_text() == "mine"
    shutil.rmtree(str(users))
    changed, first = run()
    assert changed
    assert_intact(target, is_archive=kind == "archive")
    assert backup_target.STAGING_MARKER not in json.dumps(manifest_of(target, kind == "archive")["files"])
    assert sorted(os.listdir(str(tmp_path))) == sorted([target.name] + (
        [target.name + ".manifest.json"] if kind == "archive" else []))
    changed, kept = run()
    assert not changed and kept["backup_id"] == first["backup_id"]
    with pytest.raises(DumpFailed, match='compression: asked "gzip", the backup holds "none"'):
        run(gzip=True)
