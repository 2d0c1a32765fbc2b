"""Issue 8: the catalog refuses overlapping slices and reports damaged ones; the lock helper; compression levels."""

import os
import threading
import time

import pytest

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog import pitr, report
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import bsonio
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import locking
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import manifest as manifest_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog.store import Catalog
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import CatalogError
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import BackupError, InvalidOption, LockError

from test_catalog import register, ts


# --------------------------------------------------------------------------- overlapping slices

@pytest.mark.parametrize("first, last", [(150, 250), (120, 180), (100, 199), (50, 300), (199, 201)])
def test_a_slice_overlapping_a_recorded_one_is_refused(tmp_path, first, last):
    register(tmp_path, backups=[("b1", 0, 100)], slices=[(100, 200)])
    with pytest.raises(CatalogError) as refused:
        register(tmp_path, slices=[(first, last)])
    message = refused.value.message
    assert "overlaps the recorded slice" in message and "it was not recorded" in message
    assert "resumes after %s" % ts(200) in message
    assert len(Catalog.load(str(tmp_path)).slices) == 1


def test_slices_sharing_one_boundary_entry_are_accepted(tmp_path):
    cat = register(tmp_path, backups=[("b1", 0, 100)], slices=[(100, 200), (200, 300), (50, 100)])
    assert len(cat.slices) == 3 and pitr.windows(cat)[0]["end_ts"] == ts(300)


def test_each_entry_is_counted_once(tmp_path):
    cat = register(tmp_path, backups=[("b1", 0, 100)], slices=[(100, 200), (200, 300)])  # 5 entries each
    assert report.summary(cat)["slices"]["replica_sets"]["rs0"]["entries"] == 9


# --------------------------------------------------------------------------- damaged slices

def test_windows_end_before_a_missing_or_resized_slice(tmp_path):
    cat = register(tmp_path, backups=[("b1", 0, 100)], slices=[(100, 200), (200, 300), (300, 400)])
    records = sorted(cat.slices, key=lambda s: s["first_ts"])
    with open(cat.absolute(records[2]["file"]), "ab") as handle:
        handle.write(b"x")
    summary = report.summary(cat)
    window = summary["windows"][0]
    assert window["end_ts"] == ts(300) and window["slices"] == 2
    assert window["stopped_by_damage"]["file"] == records[2]["file"]
    assert "the catalog recorded" in window["stopped_by_damage"]["problem"]
    os.remove(cat.absolute(records[0]["file"]))
    window = report.summary(cat)["windows"][0]
    assert window["end_ts"] == ts(100) and window["slices"] == 0
    assert window["stopped_by_damage"]["problem"].startswith("missing")
    assert len(report.summary(cat)["damaged_slices"]) == 2


# --------------------------------------------------------------------------- the lock helper

def test_second_holder_fails_naming_the_lock_and_the_purpose(tmp_path):
    path = str(tmp_path / "job.lock")
    with locking.exclusive(path, 0, "the job", "the first job") as held:
        assert held.path == path and held.waited_seconds < 1
        with pytest.raises(LockError) as busy:
            with locking.exclusive(path, 0.3, "the oplog archive of replica set rs0", "a second job"):
                pass
    assert isinstance(busy.value, BackupError)
    message = busy.value.message
    assert "the oplog archive of replica set rs0 is in use by another run (pid %d" % os.getpid() in message
    assert "the first job" in message and "stayed locked for 0.3 seconds" in message


def test_second_holder_waits_until_the_first_releases(tmp_path):
    path = str(tmp_path / "job.lock")
    released = threading.Event()

    def hold():
        with locking.exclusive(path, 0, "the job", "first"):
            time.sleep(0.5)
        released.set()

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.1)
    with locking.exclusive(path, 10, "the job", "second") as held:
        assert released.is_set() and held.waited_seconds >= 0.3
    holder.join()


def test_lock_file_is_private_under_umask_000(tmp_path):
    lock = str(tmp_path / "job.lock")
    previous = os.umask(0)
    try:
        with locking.exclusive(lock, 0, "the job", "job"):
            assert oct(os.stat(lock).st_mode & 0o777) == "0o600"
        manifest_utils.make_private_dirs(str(tmp_path / "a" / "b" / "c"))
    finally:
        os.umask(previous)
    assert not os.path.exists(lock)  # removed when released
    for part in ("a", "a/b", "a/b/c"):
        assert oct(os.stat(str(tmp_path / part)).st_mode & 0o777) == "0o700"


# --------------------------------------------------------------------------- compression levels

@pytest.mark.parametrize("compression, level", [("gzip", 1), ("gzip", 9), ("zstd", 1), ("zstd", 22), ("zstd", -7),
                                                ("gzip", None), ("none", None)])
def test_levels_the_compressors_take(compression, level):
    assert bsonio.check_compression_level(compression, level) == level


@pytest.mark.parametrize("compression, level, message", [
    ("gzip", 0, "compression_level 0 is not a gzip level: use 1 to 9"),
    ("gzip", 99, "compression_level 99 is not a gzip level: use 1 to 9"),
    ("zstd", 23, "compression_level 23 is not a zstd level: use -131072 to 22"),
    ("zstd", -131073, "compression_level -131073 is not a zstd level"),
    ("none", 3, "compression_level 3 has no effect without compression"),
])
def test_levels_the_compressors_refuse(compression, level, message):
    with pytest.raises(InvalidOption, match=message):
        bsonio.check_compression_level(compression, level)
