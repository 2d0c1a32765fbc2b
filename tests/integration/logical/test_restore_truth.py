"""Issue 8, restore: nothing is dropped before every check passed, and nothing is reported that was
not done. Against the real test server; what a user notices: the target's documents, the error text."""

import json
import os
import shutil

import bson
import pytest
from bson import Timestamp

from ansible_collections.dbops.mongodb_backup.plugins.module_utils import errors
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog import store as catalog_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump as dump_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_options
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import restore as restore_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import BackupError, InvalidOption

from support import run_playbook, TOOLS_BIN

from support import TESTDATA
from support import COMPAT


def restore(client, source, check_mode=False, **options):
    return restore_engine.restore(client, restore_engine.RestoreOptions(source=str(source), **options),
                                  check_mode=check_mode)


def dump(client, **options):
    return dump_engine.dump(client, dump_options.DumpOptions(**options), client_utils.server_facts(client))


def everything(client, *databases):
    """Every document of the databases, by namespace: what a wrong drop or insert would change."""
    return dict(("%s.%s" % (db, name), list(client[db][name].find().sort("_id", 1)))
                for db in databases for name in sorted(client[db].list_collection_names()))


@pytest.fixture
def live(client):
    """tr_live holds the user's current data (two collections), tr_src what the backups are taken of."""
    for name in ("tr_live", "tr_src", "tr_extra"):
        client.drop_database(name)
    client.tr_live.orders.insert_many([{"_id": i, "v": "live-%d" % i} for i in range(50)])
    client.tr_live.users.insert_many([{"_id": i, "name": "u%d" % i} for i in range(5)])
    client.tr_src.items.insert_many([{"_id": i, "v": "backup-%d" % i} for i in range(300)])
    yield client
    for name in ("tr_live", "tr_src", "tr_extra"):
        client.drop_database(name)


@pytest.fixture
def backup(live, tmp_path):
    """A backup of ours of tr_src (with its manifest), restored into tr_live by the tests."""
    target = tmp_path / "b1"
    dump(live, db="tr_src", path=str(target))
    return target


INTO_LIVE = {"ns_from": ["tr_src.$c$"], "ns_to": ["tr_live.$c$"]}


# --------------------------------------------------------------------------- defect 2: options first

@pytest.mark.parametrize("write_concern, cause", [
    ({"w": "majority", "wtimout": 60000}, "unknown key(s) 'wtimout'"),
    ({"w": -1}, "w cannot be less than 0"),
    ({"w": 1, "wtimeout": "soon"}, "wtimeout must be an integer"),
    ({"w": 0, "j": True}, "Cannot set w to 0 and j to True"),
])
def test_a_bad_write_concern_fails_before_anything_is_dropped(live, backup, write_concern, cause):
    before = everything(live, "tr_live")
    with pytest.raises(InvalidOption) as failure:
        restore(live, backup, drop=True, write_concern=write_concern, **INTO_LIVE)
    assert cause in failure.value.message and "nothing was restored" in failure.value.message
    assert everything(live, "tr_live") == before


def test_a_write_concern_the_target_cannot_satisfy_fails_before_anything_is_dropped(live, backup):
    members = len(live.admin.command("hello").get("hosts") or [None])
    before = everything(live, "tr_live")
    with pytest.raises(InvalidOption) as failure:
        restore(live, backup, drop=True, write_concern={"w": members + 4}, **INTO_LIVE)
    assert "write_concern w: %d asks for more members than the target has" % (members + 4) in failure.value.message
    assert everything(live, "tr_live") == before


def test_a_write_concern_given_as_text_is_accepted(live, backup):
    _c, result = restore(live, backup, drop=True, write_concern={"w": "1", "wtimeout": "60000", "j": "false"},
                         **INTO_LIVE)
    assert result["total_inserted"] == 300 and live.tr_live.items.count_documents({}) == 300


WRITE_CONCERN_TYPO = """
- hosts: localhost
  gather_facts: false
  tasks:
    - dbops.mongodb_backup.mongodb_restore:
        uri: "{{{{ lookup('ansible.builtin.env', 'MONGODB_URI') }}}}"
        source: "{source}"
        drop: true
        ns_from: ["tr_src.$c$"]
        ns_to: ["tr_live.$c$"]
        write_concern: {{w: majority, wtimout: 60000}}
"""


def test_write_concern_typo_through_ansible_is_a_clear_error_and_drops_nothing(server, live, backup, tmp_path):
    live.tr_live.items.insert_one({"_id": "newer", "v": "must survive"})
    before = everything(live, "tr_live")
    code, out = run_playbook(WRITE_CONCERN_TYPO.format(source=backup), tmp_path, server=server)
    assert code != 0, out
    assert "write_concern has unknown key(s) 'wtimout'" in out and "unexpected error" not in out, out
    assert everything(live, "tr_live") == before


# --------------------------------------------------------------------------- defect 3: empty or gutted sources

@pytest.mark.parametrize("require_manifest, cause", [
    (True, "has no manifest"),
    (False, "holds no namespaces: nothing to restore"),
])
def test_an_empty_source_directory_drops_nothing(live, tmp_path, require_manifest, cause):
    empty = tmp_path / "empty"
    empty.mkdir()
    before = everything(live, "tr_live", "tr_src")
    with pytest.raises(BackupError) as failure:
        restore(live, empty, drop=True, drop_extra_collections=True, require_manifest=require_manifest)
    assert cause in failure.value.message and str(empty) in failure.value.message
    assert everything(live, "tr_live", "tr_src") == before
    with pytest.raises(BackupError, match=cause):  # check mode says so as well
        restore(live, empty, check_mode=True, drop=True, drop_extra_collections=True,
                require_manifest=require_manifest)


def test_a_gutted_backup_of_ours_drops_nothing(live, backup):
    for name in os.listdir(backup):
        path = backup / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    before = everything(live, "tr_live", "tr_src")
    for require_manifest in (True, False):
        with pytest.raises(BackupError) as failure:
            restore(live, backup, drop=True, drop_extra_collections=True, require_manifest=require_manifest)
        assert str(backup) in failure.value.message and "nothing" in failure.value.message
    assert everything(live, "tr_live", "tr_src") == before


def test_oplog_replay_from_a_backup_without_an_oplog_drops_nothing(live, backup):
    before = everything(live, "tr_live", "tr_src")
    with pytest.raises(InvalidOption) as failure:
        restore(live, backup, drop=True, oplog_replay=True)
    assert "holds no oplog" in failure.value.message and "nothing was restored" in failure.value.message
    assert everything(live, "tr_live", "tr_src") == before


def test_a_missing_oplog_slice_drops_nothing(live, backup, tmp_path):
    before = everything(live, "tr_live", "tr_src")
    (tmp_path / "oplog.bson").write_bytes(b"")
    with pytest.raises(InvalidOption, match="oplog slice .*gone.bson does not exist"):
        restore(live, backup, drop=True, oplog_replay=True, oplog_file=str(tmp_path / "oplog.bson"),
                oplog_slices=[str(tmp_path / "gone.bson")])
    assert everything(live, "tr_live", "tr_src") == before


def test_a_filter_that_selects_nothing_is_refused(live, backup):
    with pytest.raises(InvalidOption) as failure:
        restore(live, backup, drop=True, ns_include=["nothing.*"])
    assert "none of the 1 namespace(s)" in failure.value.message and "tr_src.items" in failure.value.message


def test_a_target_name_the_server_refuses_fails_before_the_first_drop(live, tmp_path):
    live.tr_src.other.insert_one({"_id": 1})
    dump(live, db="tr_src", path=str(tmp_path / "two"))
    live.tr_live.items.insert_one({"_id": "newer"})
    before = everything(live, "tr_live")
    with pytest.raises(InvalidOption) as failure:
        restore(live, tmp_path / "two", drop=True, ns_from=["tr_src.items", "tr_src.other"],
                ns_to=["tr_live.items", "bad/db.other"])
    assert "would write tr_src.other into bad/db.other, which is not a valid namespace" in failure.value.message
    assert everything(live, "tr_live") == before


@pytest.mark.parametrize("require_manifest, cause", [
    (True, "source / has no manifest"),
    (False, "source / is not a plain dump directory"),
])
def test_the_root_directory_is_refused_quickly_and_clearly(live, require_manifest, cause):
    before = everything(live, "tr_live")
    with pytest.raises(BackupError) as failure:
        restore(live, "/", drop=True, require_manifest=require_manifest)
    assert cause in failure.value.message, failure.value.message
    assert everything(live, "tr_live") == before


def test_invalid_metadata_in_a_backup_of_ours_is_reported_as_damage(live, backup):
    metadata = backup / "tr_src" / "items.metadata.json"
    metadata.write_text("{not json")
    with pytest.raises(errors.VerificationFailed) as failure:
        restore(live, backup, drop=True, **INTO_LIVE)
    assert "does not match its manifest" in failure.value.message
    assert "items.metadata.json: " in failure.value.message and "incomplete or damaged" in failure.value.message
    assert "delete" not in failure.value.message


def test_invalid_metadata_in_mongodump_output_gives_advice_that_works(live, tmp_path):
    source = tmp_path / "md"
    shutil.copytree(os.path.join(TESTDATA, "testdirs"), source)
    shutil.rmtree(source / "db1" / "baddir")
    for stray in ("badfile.txt", "db2/c2.txt"):
        (source / stray).unlink()
    (source / "db1" / "c1.metadata.json").write_text("{not json")
    with pytest.raises(BackupError) as failure:
        restore(live, source, require_manifest=False, ns_from=["db1.$c$", "db2.$c$"],
                ns_to=["tr_extra.$c$", "tr_extra.two_$c$"])
    assert "c1.metadata.json: invalid JSON" in failure.value.message
    assert "only in mongodump output without a manifest may it be deleted" in failure.value.message
    (source / "db1" / "c1.metadata.json").unlink()  # the advice, followed, restores
    _c, result = restore(live, source, require_manifest=False, ns_from=["db1.$c$", "db2.$c$"],
                         ns_to=["tr_extra.$c$", "tr_extra.two_$c$"])
    assert live.tr_extra.c1.count_documents({}) == 100 and result["verification"]["verified"] is False


@pytest.mark.parametrize("fixture, words", [
    ("bad_type.bson", ["is malformed", "unknown BSON type"]),
    ("bad_cstring.bson", ["is malformed"]),
    ("broken_array.bson", ["array with keys out of order", "'9'"]),
])
def test_mongodump_output_with_a_malformed_document_is_refused_before_any_write(live, tmp_path, fixture, words):
    """Without a manifest the structural check reads every document (bsondump --objcheck and more)."""
    source = tmp_path / "md"
    (source / "shop").mkdir(parents=True)
    shutil.copyfile(os.path.join(COMPAT, "bsondump", "testdata", fixture), source / "shop" / "items.bson")
    with pytest.raises(errors.VerificationFailed) as failure:
        restore(live, source, require_manifest=False, drop=True, ns_from=["shop.$c$"], ns_to=["tr_live.$c$"])
    for word in words:
        assert word in failure.value.message
    assert "nothing was restored" in failure.value.message
    assert "tr_live" not in live.list_database_names() or live.tr_live.items.count_documents({}) == 0


def test_mongodump_timeseries_data_that_is_not_buckets_is_refused(live, tmp_path):
    source = tmp_path / "md"
    shutil.copytree(os.path.join(TESTDATA, "timeseries_tests", "ts_dump_invalid_buckets"),
                    source)
    with pytest.raises(errors.VerificationFailed) as failure:
        restore(live, source, require_manifest=False, ns_from=["timeseries_test.$c$"], ns_to=["tr_live.$c$"])
    assert "is not a timeseries bucket" in failure.value.message


# --------------------------------------------------------------------------- defect 5: documents not written

@pytest.fixture
def overlap(live):
    """The target already holds 100 of the backup's 300 _ids, with other contents."""
    live.tr_live.items.insert_many([{"_id": i, "v": "existing"} for i in range(0, 300, 3)])
    return live


def test_documents_that_fail_fail_the_task(overlap, backup):
    with pytest.raises(errors.RestoreFailed) as failure:
        restore(overlap, backup, **INTO_LIVE)
    message, details = failure.value.message, failure.value.details
    assert message.startswith("100 document(s) or oplog entries were not written: tr_live.items: 100 "
                              "(first error: E11000 duplicate key"), message
    assert "max_failed_documents: 100" in message and "drop: true" in message
    assert details["total_failed"] == 100 and details["total_inserted"] == 200
    assert details["namespaces"][0]["complete"] is False and "E11000" in details["namespaces"][0]["first_error"]
    # what could be written was; what was there is untouched
    assert overlap.tr_live.items.count_documents({}) == 300
    assert overlap.tr_live.items.count_documents({"v": "existing"}) == 100


def test_max_failed_documents_accepts_known_failures_but_never_says_complete(overlap, backup):
    _c, result = restore(overlap, backup, max_failed_documents=100, **INTO_LIVE)
    assert result["total_failed"] == 100 and result["namespaces"][0]["complete"] is False
    assert any("accepted by max_failed_documents: 100" in w for w in result["warnings"])
    overlap.drop_database("tr_live")
    overlap.tr_live.items.insert_many([{"_id": i, "v": "existing"} for i in range(0, 300, 3)])
    with pytest.raises(errors.RestoreFailed, match="max_failed_documents: 100 to accept"):
        restore(overlap, backup, max_failed_documents=99, **INTO_LIVE)


def test_stop_on_error_stops_at_the_first_failure(overlap, backup):
    with pytest.raises(errors.RestoreFailed) as failure:
        restore(overlap, backup, stop_on_error=True, batch_size=30, **INTO_LIVE)
    assert "inserting into tr_live.items failed: E11000" in failure.value.message
    assert "stop_on_error: true" in failure.value.message and "not complete: tr_live.items" in failure.value.message
    assert overlap.tr_live.items.count_documents({}) < 300


def test_validation_failures_are_counted_too_and_the_rest_is_restored(live, backup):
    try:
        live.tr_live.create_collection("items", validator={"v": {"$type": "int"}})
    except Exception as exc:  # noqa: BLE001 - the server's refusal is the reason to skip
        pytest.skip("the test server has no collection validators: %s" % exc)
    if "validator" not in (live.tr_live.command("listCollections", filter={"name": "items"})
                           ["cursor"]["firstBatch"][0].get("options") or {}):
        pytest.skip("the test server does not keep collection validators")
    with pytest.raises(errors.RestoreFailed, match="tr_live.items: 300"):
        restore(live, backup, no_options_restore=True, **INTO_LIVE)


def test_oplog_entries_that_cannot_be_applied_fail_the_task(live, backup, tmp_path, server):
    if server.kind != "ferretdb":
        pytest.skip("needs a target that refuses applyOps, so that the replay writes as crud")
    oplog = tmp_path / "oplog.bson"
    entries = [
        {"ts": Timestamp(2000000000, 1), "t": 1, "v": 2, "op": "i", "ns": "tr_src.items",
         "o": {"_id": 1000, "v": "from the oplog"}},
        {"ts": Timestamp(2000000000, 2), "t": 1, "v": 2, "op": "i", "ns": "admin.system.users",
         "o": {"_id": "tr_src.someone", "user": "someone", "db": "tr_src", "roles": []}},
    ]
    oplog.write_bytes(b"".join(bson.encode(e) for e in entries))
    with pytest.raises(errors.RestoreFailed) as failure:
        restore(live, backup, drop=True, oplog_replay=True, oplog_file=str(oplog), oplog_apply_mode="crud")
    assert "1 oplog entries not applied (system_collection)" in failure.value.message
    assert failure.value.details["oplog"]["not_applied"] == {"system_collection": 1}
    assert live.tr_src.items.find_one({"_id": 1000})["v"] == "from the oplog"  # the rest was done
    _c, result = restore(live, backup, drop=True, oplog_replay=True, oplog_file=str(oplog),
                         oplog_apply_mode="crud", max_failed_documents=1)
    assert result["oplog"]["not_applied"] == {"system_collection": 1}


def test_mongorestore_for_comparison_exits_0_with_failed_documents(server, overlap, backup):
    """What the real tool does (and why we fail the task instead)."""
    import subprocess
    mongorestore = os.path.join(TOOLS_BIN, "mongorestore")
    if not os.path.exists(mongorestore):
        pytest.skip("the real mongorestore is not in %s (set MONGO_TOOLS_BIN)" % TOOLS_BIN)
    config = backup.parent / "mongorestore.yaml"
    config.write_text("uri: %s\n" % server.uri)
    os.chmod(config, 0o600)
    process = subprocess.run([mongorestore, "--config", str(config), "--nsFrom", "tr_src.*", "--nsTo",
                              "tr_live.*", str(backup)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             check=False)
    out = process.stdout.decode("utf-8", "replace")
    assert process.returncode == 0, out
    assert "200 document(s) restored successfully. 100 document(s) failed to restore." in out, out


# --------------------------------------------------------------------------- defect 6: unlisted files

def _add_unlisted_files(backup):
    shutil.copy(backup / "tr_src" / "items.bson", backup / "tr_src" / "smuggled.bson")
    (backup / "tr_extra").mkdir()
    shutil.copy(backup / "tr_src" / "items.bson", backup / "tr_extra" / "whole.bson")
    shutil.copy(backup / "tr_src" / "items.metadata.json", backup / "tr_extra" / "whole.metadata.json")


def test_files_the_manifest_does_not_list_are_refused(live, backup):
    _add_unlisted_files(backup)
    before = everything(live, "tr_live", "tr_src")
    with pytest.raises(errors.VerificationFailed) as failure:
        restore(live, backup, drop=True)
    message = failure.value.message
    assert "holds 3 file(s) that its manifest" in message and "tr_src/smuggled.bson" in message
    assert "tr_extra/whole.bson" in message and "ignore_unlisted_files: true" in message
    assert everything(live, "tr_live", "tr_src") == before and "tr_extra" not in live.list_database_names()


def test_ignore_unlisted_files_leaves_them_out_with_a_warning(live, backup):
    _add_unlisted_files(backup)
    live.drop_database("tr_src")
    _c, result = restore(live, backup, drop=True, ignore_unlisted_files=True)
    assert [ns["namespace"] for ns in result["namespaces"]] == ["tr_src.items"]
    assert result["verification"]["verified"] is True
    assert any("ignored 3 file(s)" in w and "smuggled.bson" in w for w in result["warnings"])
    assert live.tr_src.list_collection_names() == ["items"] and "tr_extra" not in live.list_database_names()


# --------------------------------------------------------------------------- defect 7: a deleted manifest

def test_a_backup_of_ours_without_its_manifest_is_refused_even_with_require_manifest_false(live, backup):
    os.remove(backup / "manifest.json")
    data = backup / "tr_src" / "items.bson"
    raw = data.read_bytes()
    data.write_bytes(raw.replace(b"backup-7\x00", b"altered\x00\x00"))  # one document altered, framing intact
    before = everything(live, "tr_live")
    for require_manifest in (True, False):
        with pytest.raises(errors.VerificationFailed) as failure:
            restore(live, backup, drop=True, require_manifest=require_manifest, **INTO_LIVE)
        message = failure.value.message
        assert "written by dbops.mongodb_backup" in message and "manifest" in message and "missing" in message
    assert everything(live, "tr_live") == before


def test_an_archive_of_ours_without_its_manifest_is_refused(live, tmp_path):
    archive = tmp_path / "a.archive"
    dump(live, db="tr_src", archive=str(archive))
    os.remove(str(archive) + ".manifest.json")
    with pytest.raises(errors.VerificationFailed, match="written by dbops.mongodb_backup"):
        restore(live, archive, require_manifest=False, **INTO_LIVE)


def test_a_catalogued_backup_without_manifest_or_prelude_is_refused(live, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    dump(live, db="tr_src", path=str(root / "full-1"))
    with catalog_utils.Catalog.locked(str(root)) as catalog:
        catalog.add_backup_from_manifest(str(root / "full-1"))
        catalog.save()
    os.remove(root / "full-1" / "manifest.json")
    os.remove(root / "full-1" / "tr_src" / "prelude.json")  # a single-database dump keeps it there
    with pytest.raises(errors.VerificationFailed) as failure:
        restore(live, root / "full-1", require_manifest=False, **INTO_LIVE)
    assert "catalog.json lists it" in failure.value.message


def test_mongodump_output_needs_require_manifest_false_and_is_not_called_verified(live, tmp_path):
    source = os.path.join(TESTDATA, "specialcharacter")
    with pytest.raises(errors.VerificationFailed) as failure:
        restore(live, source, ns_from=["db1.$c$"], ns_to=["tr_extra.$c$"])
    assert "restore it with require_manifest: false" in failure.value.message
    assert "tr_extra" not in live.list_database_names()
    _c, result = restore(live, source, require_manifest=False, ns_from=["db1.$c$"], ns_to=["tr_extra.$c$"])
    assert result["verification"]["verified"] is False and result["verification"]["manifest"] is False
    assert result["verification"]["structural_check"]["documents"] == result["total_inserted"] > 0


def test_real_mongodump_output_restores_with_require_manifest_false(server, live, tmp_path):
    import subprocess
    mongodump = os.path.join(TOOLS_BIN, "mongodump")
    if not os.path.exists(mongodump):
        pytest.skip("the real mongodump is not in %s (set MONGO_TOOLS_BIN)" % TOOLS_BIN)
    config = tmp_path / "mongodump.yaml"
    config.write_text("uri: %s\n" % server.uri)
    os.chmod(config, 0o600)
    out = tmp_path / "md"
    subprocess.run([mongodump, "--config", str(config), "--db", "tr_src", "--out", str(out)], check=True,
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    with pytest.raises(errors.VerificationFailed, match="require_manifest: false"):
        restore(live, out, **INTO_LIVE)
    _c, result = restore(live, out, require_manifest=False, **INTO_LIVE)
    assert result["verification"]["verified"] is False
    assert list(live.tr_live.items.find().sort("_id", 1)) == list(live.tr_src.items.find().sort("_id", 1))
    assert json.dumps(result["verification"])  # plain data for the module result
