"""Issue 8, defects 11 and 12 and the archive's clear errors, against the real test server.

Concurrent archive runs, overlapping slices and the replay through them; windows over damaged slices;
compression levels; check mode; directory modes under umask 000.
"""

import json
import os
import stat
import threading
import time

import bson
import pytest

from support import run_project_playbook, run_module_task

from ansible_collections.dbops.mongodb_backup.plugins.module_utils import errors
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import bsonio
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import timestamps
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog import store as catalog_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump as dump_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_options
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import locking
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import restore as restore_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import archiver


@pytest.fixture
def replica(private_server, tmp_path):
    """A server with data and a full oplog backup registered in the catalog of ``<tmp>/backups/localhost``
    (the root playbooks/oplog_archive.yml uses with backup_root <tmp>/backups)."""
    client = private_server.client()
    client.truth.items.insert_many([{"_id": i, "v": i} for i in range(100)])
    root = tmp_path / "backups" / "localhost"
    root.mkdir(parents=True)
    facts = client_utils.server_facts(client)
    dump_engine.dump(client, dump_options.DumpOptions(path=str(root / "full-1"), oplog=True, label="full-1"), facts)
    with catalog_utils.Catalog.locked(str(root)) as catalog:
        catalog.add_backup_from_manifest(str(root / "full-1"))
        catalog.save()
    yield client, facts, str(root)
    client.close()


def workload(client, start, count):
    """Inserts, updates and deletes: ``count`` operations."""
    for n in range(start, start + count):
        kind = n % 3
        if kind == 0:
            client.truth.items.insert_one({"_id": 1000 + n, "v": n})
        elif kind == 1:
            client.truth.items.update_one({"_id": n % 100}, {"$set": {"v": -n}})
        else:
            client.truth.items.delete_one({"_id": (n * 7) % 100})


def module_result(tmp_path, module, check=False, server=None, **options):
    return run_module_task(tmp_path, module, check=check, server=server, **options)


def archive_playbook(server, tmp_path, name, check=False, **extra):
    vars_file = tmp_path / ("%s.vars.json" % name)
    vars_file.write_text(json.dumps(dict({"backup_root": str(tmp_path / "backups")}, **extra)))
    return run_project_playbook("oplog_archive.yml", server, vars_file, check=check)


def slice_ts(root, record):
    """The ts of every entry in a slice file, in file order."""
    with bsonio.open_decompressed(os.path.join(root, record["file"])) as handle:
        return [bson.decode(raw)["ts"] for raw in bsonio.iter_raw_documents(handle, record["file"])]


def oplog_ts_after(client, start_text):
    start = archiver.parse_oplog_limit(start_text)
    return [e["ts"] for e in client.local["oplog.rs"].find({"ts": {"$gte": start}}, {"ts": 1}).sort("$natural", 1)]


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


# --------------------------------------------------------------------------- defect 11: one run at a time

def test_two_concurrent_archive_runs_record_one_chain(private_server, replica, tmp_path):
    """Two real ansible-playbook runs at once: the second waits for the first's lock and continues after it;
    the catalog holds one chain whose slices share only their boundary entry, each entry archived once."""
    client, facts, root = replica
    start = catalog_utils.Catalog.load(root).last_archived_ts(facts["replica_set"])
    workload(client, 0, 2400)
    outputs = {}

    def run(name):
        outputs[name] = archive_playbook(private_server, tmp_path, name, oplog_slice_span_minutes=1)

    runs = [threading.Thread(target=run, args=(name,)) for name in ("first", "second")]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join()
    for name, (code, out) in outputs.items():
        assert code == 0, out

    catalog = catalog_utils.Catalog.load(root)
    slices = sorted(catalog.slices, key=lambda s: timestamps.ts_key(s["first_ts"]))
    assert slices and slices[0]["first_ts"] == start
    for before, after in zip(slices, slices[1:]):
        assert after["first_ts"] == before["last_ts"], "slices overlap or leave a hole: %s" % slices
    archived = []
    for record in slices:
        entries = slice_ts(root, record)
        archived.extend(entries if not archived else entries[1:])  # the shared boundary entry once
    assert archived == oplog_ts_after(client, start), "an entry is missing or archived twice"
    assert not os.path.exists(os.path.join(root, "oplog-archive.%s.lock" % facts["replica_set"]))  # released

    info = module_result(tmp_path, "dbops.mongodb_backup.mongodb_backup_info", backup_root=root)
    per_set = info["slices"]["replica_sets"][facts["replica_set"]]
    assert per_set["entries"] == len(archived)  # each entry counted once, the shared boundaries too
    assert info["windows"][0]["end_ts"] == slices[-1]["last_ts"] and info["damaged_slices"] == []


def test_runs_truly_overlap_and_the_second_waits(replica):
    """The same race inside one process: both runs start while the lock is held, so both are waiting
    when it is released; one wins and the other waits for it to finish (no timing assumption)."""
    client, facts, root = replica
    workload(client, 0, 1800)
    results, errors = [], []

    def run():
        try:
            results.append(archiver.archive_oplog(client, archiver.ArchiveOptions(root, span_seconds=60), facts))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _run in range(2)]
    with locking.exclusive(archiver.lock_path(root, facts["replica_set"]), 0, "the archive lock",
                           "the test, holding it while both runs start"):
        for thread in threads:
            thread.start()
        time.sleep(1.0)
    for thread in threads:
        thread.join()
    assert not errors, errors
    waited = sorted(result["lock_waited_seconds"] for _changed, result in results)
    assert waited[0] >= 0.9 and waited[1] > waited[0], "the runs did not overlap: %s" % waited
    late = max((result for _changed, result in results), key=lambda r: r["lock_waited_seconds"])
    early = min((result for _changed, result in results), key=lambda r: r["lock_waited_seconds"])
    assert late["start"] == early["slices"][-1]["last_ts"]  # resumed after the first run, not from its start
    assert not late["slices"]


def test_a_held_lock_fails_the_second_run_clearly_and_writes_nothing(private_server, replica, tmp_path):
    client, facts, root = replica
    workload(client, 0, 30)
    path = archiver.lock_path(root, facts["replica_set"])
    before = sorted(os.listdir(root)), (open(os.path.join(root, "catalog.json")).read())
    with locking.exclusive(path, 0, "the archive lock", "a test holding the archive lock"):
        result = module_result(tmp_path, "dbops.mongodb_backup.mongodb_oplog_archive", server=private_server,
                               backup_root=root, lock_timeout=1)
    assert result.get("failed"), result
    assert "the oplog archive of replica set %s is in use by another run" % facts["replica_set"] in result["msg"]
    assert "a test holding the archive lock" in result["msg"] and path in result["msg"], result["msg"]
    assert (sorted(os.listdir(root)), open(os.path.join(root, "catalog.json")).read()) == before


def test_catalog_refuses_a_slice_that_overlaps_recorded_ones(replica):
    client, facts, root = replica
    workload(client, 0, 60)
    _changed, result = archiver.archive_oplog(client, archiver.ArchiveOptions(root), facts)
    record = result["slices"][0]
    entries = slice_ts(root, record)
    middle = entries[len(entries) // 2]
    copy = os.path.join(os.path.dirname(os.path.join(root, record["file"])), "copy.bson.gz")
    with open(os.path.join(root, record["file"]), "rb") as source, open(copy, "wb") as target:
        target.write(source.read())
    with catalog_utils.Catalog.locked(root) as catalog:
        with pytest.raises(errors.CatalogError) as refused:
            catalog.add_slice(facts["replica_set"], "%d:%d" % (middle.time, middle.inc), record["last_ts"], copy,
                              entries=10)
    message = refused.value.message
    assert "overlaps the recorded slice %s" % record["file"] in message and "it was not recorded" in message
    assert len(catalog_utils.Catalog.load(root).slices) == len(result["slices"])
    # the one-entry boundary overlap of consecutive slices stays allowed
    with catalog_utils.Catalog.locked(root) as catalog:
        _record, added = catalog.add_slice(facts["replica_set"], record["last_ts"], record["last_ts"], copy,
                                           entries=1)
        assert added


def test_replay_through_overlapping_slices_applies_each_entry_once(replica, tmp_path):
    """Two slices of real oplog entries sharing 40 entries (as two runs racing wrote them): the restore
    reaches the right state, applies each entry once and counts the repeats."""
    client, facts, root = replica
    workload(client, 0, 150)
    expected = list(client.truth.items.find().sort("_id", 1))
    start = catalog_utils.Catalog.load(root).last_archived_ts(facts["replica_set"])
    raw = list(client.local["oplog.rs"].find_raw_batches(
        {"ts": {"$gte": archiver.parse_oplog_limit(start)}}, sort=[("$natural", 1)]))
    entries = [doc for batch in raw for doc, _ts in archiver._split_by_slice(batch)]
    assert len(entries) > 120
    paths = []
    for name, part in (("a", entries[:100]), ("b", entries[60:])):
        path = str(tmp_path / ("%s.bson.gz" % name))
        stream = bsonio.create_compressed_file(path, "gzip")
        for document in part:
            stream.write(document)
        stream.close()
        paths.append(path)
    client.drop_database("truth")
    _changed, result = restore_engine.restore(client, restore_engine.RestoreOptions(
        source=os.path.join(root, "full-1"), drop=True, oplog_replay=True, oplog_slices=paths))
    assert list(client.truth.items.find().sort("_id", 1)) == expected
    oplog = result["oplog"]
    # slice a repeats the backup's last entry, slice b repeats 40 entries of slice a
    assert oplog["skipped"].get("repeated_entry") == 1 + 40, oplog
    with open(os.path.join(root, "full-1", "oplog.bson"), "rb") as handle:
        in_backup = sum(1 for _raw in bsonio.iter_raw_documents(handle, "oplog.bson"))
    assert oplog["applied"] == in_backup + len(entries) - 1, oplog  # every entry once


# --------------------------------------------------------------------------- defect 12: damaged slices

def test_backup_info_windows_end_before_a_damaged_slice_and_stay_read_only(private_server, replica, tmp_path):
    client, facts, root = replica
    records = []
    for round_ in range(3):  # three runs: three slices in one chain
        workload(client, round_ * 40, 40)
        records.extend(archiver.archive_oplog(client, archiver.ArchiveOptions(root), facts)[1]["slices"])
    assert len(records) == 3
    intact = module_result(tmp_path, "dbops.mongodb_backup.mongodb_backup_info", backup_root=root)
    assert intact["windows"][0]["end_ts"] == records[2]["last_ts"] and intact["damaged_slices"] == []

    def snapshot():
        listing = sorted((dirpath, sorted(names)) for dirpath, _dirs, names in os.walk(root))
        with open(os.path.join(root, "catalog.json"), "rb") as handle:
            return listing, handle.read()

    # a truncated second slice: the window ends where it starts
    second = os.path.join(root, records[1]["file"])
    with open(second, "r+b") as handle:
        handle.truncate(records[1]["bytes"] - 7)
    before = snapshot()
    info = module_result(tmp_path, "dbops.mongodb_backup.mongodb_backup_info", backup_root=root)
    assert snapshot() == before  # read-only
    window = info["windows"][0]
    assert window["end_ts"] == records[1]["first_ts"] and window["slices"] == 1
    damage = window["stopped_by_damage"]
    assert damage["file"] == records[1]["file"] and "the catalog recorded %d" % records[1]["bytes"] in damage["problem"]
    assert "ends at %s" % records[1]["first_ts"] in damage["msg"]
    assert [d["file"] for d in info["damaged_slices"]] == [records[1]["file"]]
    assert any(records[1]["file"] in warning for warning in info.get("warnings", []))

    # a deleted first slice: the window ends at the backup itself
    os.remove(os.path.join(root, records[0]["file"]))
    info = module_result(tmp_path, "dbops.mongodb_backup.mongodb_backup_info", backup_root=root,
                         replica_set=facts["replica_set"])
    window = info["windows"][0]
    assert window["end_ts"] == window["start_ts"] and window["slices"] == 0
    assert window["stopped_by_damage"]["file"] == records[0]["file"]
    assert window["stopped_by_damage"]["problem"].startswith("missing")
    assert sorted(d["file"] for d in info["damaged_slices"]) == sorted([records[0]["file"], records[1]["file"]])


def test_a_same_size_corruption_shows_with_verify(replica, tmp_path):
    client, facts, root = replica
    workload(client, 0, 40)
    record = archiver.archive_oplog(client, archiver.ArchiveOptions(root), facts)[1]["slices"][0]
    path = os.path.join(root, record["file"])
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    with open(path, "wb") as handle:
        handle.write(bytes(data))
    quick = module_result(tmp_path, "dbops.mongodb_backup.mongodb_backup_info", backup_root=root)
    assert quick["damaged_slices"] == [] and quick["slices_verified"] is False  # same size: not seen without verify
    verified = module_result(tmp_path, "dbops.mongodb_backup.mongodb_backup_info", backup_root=root, verify=True)
    assert verified["slices_verified"] is True
    window = verified["windows"][0]
    assert window["end_ts"] == window["start_ts"] and "corrupt: its sha256 is" in window["stopped_by_damage"]["problem"]


# --------------------------------------------------------------------------- clear errors

@pytest.mark.parametrize("check", [False, True])
@pytest.mark.parametrize("module, options, expected", [
    ("mongodb_oplog_archive", {"compression_level": 99}, "compression_level 99 is not a gzip level: use 1 to 9"),
    ("mongodb_oplog_archive", {"compression": "zstd", "compression_level": 23},
     "compression_level 23 is not a zstd level: use -131072 to 22"),
    ("mongodb_oplog_archive", {"compression": "none", "compression_level": 5},
     "compression_level 5 has no effect without compression"),
    ("mongodb_dump", {"gzip": True, "gzip_level": 99}, "gzip_level 99 is not a gzip level: use 1 to 9"),
])
def test_compression_level_refused_before_connecting_and_nothing_written(replica, tmp_path, module, options,
                                                                         expected, check):
    _client, _facts, root = replica
    before = sorted(os.listdir(root))
    target = {"backup_root": root} if module == "mongodb_oplog_archive" else {"path": os.path.join(root, "d1")}
    # nothing listens on this port: only a check made before connecting can give this message
    result = module_result(tmp_path, "dbops.mongodb_backup." + module, check=check, login_host="127.0.0.1",
                           login_port=9, connect_timeout=1, **dict(target, **options))
    assert result.get("failed") and expected in result["msg"], result
    assert "unexpected error" not in result["msg"]
    assert sorted(os.listdir(root)) == before


def test_valid_levels_write_slices(replica):
    client, facts, root = replica
    workload(client, 0, 20)
    for compression, level in (("gzip", 9), ("zstd", 22), ("zstd", -5)):
        workload(client, 100 + level * 10, 3)
        _changed, result = archiver.archive_oplog(
            client, archiver.ArchiveOptions(root, compression=compression, compression_level=level), facts)
        assert result["slices"] and all(s["bytes"] > 0 for s in result["slices"])


def test_a_failed_run_leaves_no_slice_file(replica, monkeypatch):
    """A failure while the slice is written (here: the disk refuses the compressed bytes) leaves no file."""
    client, facts, root = replica
    workload(client, 0, 20)

    def refuse(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bsonio.HashingFile, "write", refuse)
    with pytest.raises(errors.ArchiveFailed, match="No space left on device; the unfinished slice was removed"):
        archiver.archive_oplog(client, archiver.ArchiveOptions(root, compression="none"), facts)
    slice_dir = os.path.join(root, "oplog", facts["replica_set"])
    assert os.listdir(slice_dir) == []
    assert catalog_utils.Catalog.load(root).slices == []


def test_check_mode_reports_the_pending_entries_and_writes_nothing(private_server, replica, tmp_path):
    client, facts, root = replica
    workload(client, 0, 300)
    start = catalog_utils.Catalog.load(root).last_archived_ts(facts["replica_set"])
    pending = len(oplog_ts_after(client, start)) - 1  # the entries after the start
    before = sorted(os.listdir(root)), open(os.path.join(root, "catalog.json")).read()
    code, out = archive_playbook(private_server, tmp_path, "check", check=True)
    assert code == 0, out
    assert "check mode, nothing written: %d oplog entries of %s after %s would be archived" % (
        pending, facts["replica_set"], start) in out, out
    assert (sorted(os.listdir(root)), open(os.path.join(root, "catalog.json")).read()) == before
    code, out = archive_playbook(private_server, tmp_path, "real")
    assert code == 0, out
    slices = catalog_utils.Catalog.load(root).slices
    assert sum(s["entries"] for s in slices) - len(slices) == pending  # each slice repeats one entry


def test_directories_are_private_under_umask_000(private_server, replica, tmp_path):
    client, facts, root = replica
    workload(client, 0, 20)
    previous = os.umask(0)
    try:
        code, out = archive_playbook(private_server, tmp_path, "umask")
    finally:
        os.umask(previous)
    assert code == 0, out
    assert mode(os.path.join(root, "oplog")) == 0o700
    assert mode(os.path.join(root, "oplog", facts["replica_set"])) == 0o700
    for record in catalog_utils.Catalog.load(root).slices:
        assert mode(os.path.join(root, record["file"])) == 0o600
    assert not os.path.exists(archiver.lock_path(root, facts["replica_set"]))  # released; 0600 while held
    assert mode(os.path.join(root, "catalog.json")) == 0o600
