"""Issue 9: compression none/gzip/zstd for mongodb_dump, against the real test server.

zstd backups round-trip through our restore (directory and archive, verified against the manifest); the
deprecated ``gzip: true`` still writes gzip and is recorded so that ``compression: gzip`` keeps it; the
module warns about it and refuses what cannot be written, naming the option.
"""

import json
import os

import bson
import pytest

from support import run_playbook, raw_documents

from ansible_collections.dbops.mongodb_backup.plugins.module_utils import errors
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import bsonio
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import manifest as manifest_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump as dump_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_options
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import restore as restore_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import readers

SOURCE = "zst_src"
TARGET = "zst_dst"


def dump(client, **options):
    return dump_engine.dump(client, dump_options.DumpOptions(**options), client_utils.server_facts(client))


def restore(client, source, **options):
    return restore_engine.restore(client, restore_engine.RestoreOptions(source=str(source), **options))


def manifest_of(target, is_archive):
    with open(manifest_utils.manifest_path(str(target), is_archive)) as handle:
        return json.load(handle)


def files_of(root):
    return sorted(os.path.relpath(os.path.join(d, f), str(root)) for d, _s, names in os.walk(str(root)) for f in names)


def magic_of(path):
    with open(str(path), "rb") as handle:
        return handle.read(4)


@pytest.fixture
def source(client):
    for name in (SOURCE, TARGET):
        client.drop_database(name)
    client[SOURCE].orders.insert_many([{"_id": n, "total": n * 3, "note": "order %d " % n * (n % 7)}
                                       for n in range(2500)])
    client[SOURCE].orders.create_index("total", unique=True)
    client[SOURCE]["odd name ✓"].insert_many([{"_id": n, "blob": bson.Binary(bytes(n % 300))} for n in range(50)])
    yield client
    for name in (SOURCE, TARGET):
        client.drop_database(name)


# --------------------------------------------------------------------------- zstd round trip


@pytest.mark.parametrize("kind", ["directory", "archive"])
def test_zstd_backup_round_trips_through_our_restore(source, tmp_path, kind):
    target = tmp_path / ("b.archive" if kind == "archive" else "b")
    key = "archive" if kind == "archive" else "path"
    changed, result = dump(source, db=SOURCE, compression="zstd", label="z1", **{key: str(target)})
    assert changed and result["total_documents"] == 2550
    manifest = manifest_of(target, kind == "archive")
    assert manifest["options"]["compression"] == "zstd" and "gzip" not in manifest["options"]
    if kind == "directory":
        assert files_of(target) == sorted([
            "manifest.json", SOURCE + "/prelude.json.zst",
            SOURCE + "/orders.bson.zst", SOURCE + "/orders.metadata.json.zst",
            SOURCE + "/odd+name+%E2%9C%93.bson.zst", SOURCE + "/odd+name+%E2%9C%93.metadata.json.zst"])
        for name in files_of(target):
            if name != "manifest.json":
                assert magic_of(target / name) == bsonio.ZSTD_MAGIC, name  # each file compressed on its own
    else:
        assert magic_of(target) == bsonio.ZSTD_MAGIC  # the archive compressed as a whole

    _changed, restored = restore(source, target, ns_from=[SOURCE + ".$c$"], ns_to=[TARGET + ".$c$"])
    assert restored["verification"]["verified"] is True and restored["total_failed"] == 0
    for name in ("orders", "odd name ✓"):
        assert raw_documents(source, TARGET, name) == raw_documents(source, SOURCE, name), name
    assert {ix["name"]: ix.get("unique") for ix in source[TARGET].orders.list_indexes()}["total_1"] is True


def test_zstd_level_is_used_and_the_same_label_keeps_the_backup(source, tmp_path):
    fast, small = tmp_path / "fast.archive", tmp_path / "small.archive"
    dump(source, db=SOURCE, archive=str(fast), compression="zstd", compression_level=-20, label="z")
    dump(source, db=SOURCE, archive=str(small), compression="zstd", compression_level=19, label="z")
    assert os.path.getsize(str(small)) < os.path.getsize(str(fast))
    changed, kept = dump(source, db=SOURCE, archive=str(small), compression="zstd", label="z")
    assert not changed and "already complete" in kept["msg"]  # the level is not part of the scope
    with pytest.raises(errors.DumpFailed) as failure:
        dump(source, db=SOURCE, archive=str(small), compression="gzip", label="z")
    assert 'compression: asked "gzip", the backup holds "zstd"' in failure.value.message


def test_zstd_oplog_dump_keeps_the_name_oplog_bson(source, tmp_path):
    target = tmp_path / "full"
    _changed, result = dump(source, path=str(target), oplog=True, ns_include=[SOURCE + ".*"], compression="zstd")
    oplog = target / "oplog.bson"
    assert magic_of(oplog) == bsonio.ZSTD_MAGIC and not (target / "oplog.bson.zst").exists()
    assert (target / "prelude.json.zst").exists()
    assert sum(1 for _entry in readers.iter_oplog_file(str(oplog))) == result["oplog"]["entries"]


def test_a_cut_zstd_file_of_a_backup_without_manifest_is_refused(source, tmp_path):
    """Without a manifest only the structure protects the restore: a cut .bson.zst must not read as a shorter
    collection."""
    target = tmp_path / "cut"
    dump(source, db=SOURCE, path=str(target), compression="zstd")
    os.remove(str(target / "manifest.json"))
    os.remove(str(target / SOURCE / "prelude.json.zst"))  # as if mongodump-like output, not ours
    data = target / SOURCE / "orders.bson.zst"
    data.write_bytes(data.read_bytes()[:-9])
    with pytest.raises((errors.VerificationFailed, errors.FormatError)) as failure:
        restore(source, target, ns_from=[SOURCE + ".$c$"], ns_to=[TARGET + ".$c$"], require_manifest=False)
    assert "orders.bson.zst" in failure.value.message and "zstd stream is damaged" in failure.value.message
    assert TARGET not in source.list_database_names()


# --------------------------------------------------------------------------- gzip, old and new names


def test_deprecated_gzip_true_writes_gzip_and_compression_gzip_keeps_it(source, tmp_path):
    target = tmp_path / "g"
    changed, first = dump(source, db=SOURCE, path=str(target), gzip=True, label="g1")
    assert changed
    assert magic_of(target / SOURCE / "orders.bson.gz")[:2] == bsonio.GZIP_MAGIC
    assert manifest_of(target, False)["options"]["compression"] == "gzip"
    changed, kept = dump(source, db=SOURCE, path=str(target), compression="gzip", label="g1")
    assert not changed and kept["backup_id"] == first["backup_id"]
    with pytest.raises(errors.DumpFailed, match='compression: asked "zstd", the backup holds "gzip"'):
        dump(source, db=SOURCE, path=str(target), compression="zstd", label="g1")


def test_a_manifest_written_before_compression_existed_still_matches(source, tmp_path):
    target = tmp_path / "old"
    _changed, first = dump(source, db=SOURCE, path=str(target), compression="gzip", label="old")
    manifest_file = target / "manifest.json"
    document = json.loads(manifest_file.read_text())
    document["options"].pop("compression")
    document["options"]["gzip"] = True  # what version 1.0.0 recorded
    manifest_file.write_text(json.dumps(document))
    changed, kept = dump(source, db=SOURCE, path=str(target), compression="gzip", label="old")
    assert not changed and kept["backup_id"] == first["backup_id"]
    changed, kept = dump(source, db=SOURCE, path=str(target), gzip=True, label="old")
    assert not changed
    with pytest.raises(errors.DumpFailed, match='compression: asked "none", the backup holds "gzip"'):
        dump(source, db=SOURCE, path=str(target), label="old")


# --------------------------------------------------------------------------- the module, through ansible-playbook

TASK = """
    - name: {name}
      dbops.mongodb_backup.mongodb_dump:
{options}
      register: {name}
      ignore_errors: true
"""

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
{tasks}
    - ansible.builtin.copy:
        content: "{{{{ {{{names}}} | to_json }}}}"
        dest: "{result_file}"
      check_mode: false
"""


def run_tasks(tmp_path, server, tasks, check=False):
    """Run mongodb_dump tasks (name -> options) in one play; returns (output, {name: result})."""
    result_file = tmp_path / "results.json"
    text = PLAYBOOK.format(
        tasks="".join(TASK.format(name=name, options="\n".join("        %s: %s" % (k, json.dumps(v))
                                                               for k, v in options.items()))
                      for name, options in tasks.items()),
        names=", ".join("'%s': %s" % (name, name) for name in tasks), result_file=result_file)
    code, out = run_playbook(text, tmp_path, server=server, check=check)
    assert code == 0, out
    return out, json.loads(result_file.read_text())


def test_module_warns_about_gzip_and_keeps_its_backup_under_compression_gzip(server, source, tmp_path):
    target = str(tmp_path / "pb")
    common = {"uri": "{{ lookup('ansible.builtin.env', 'MONGODB_URI') }}", "db": SOURCE, "path": target,
              "label": "pb-1"}
    out, results = run_tasks(tmp_path, server, {
        "old_name": dict(common, gzip=True, gzip_level=1),
        "new_name": dict(common, compression="gzip"),
    })
    assert not results["old_name"].get("failed"), results["old_name"]
    assert results["old_name"]["changed"] is True
    assert "[DEPRECATION WARNING]: gzip is deprecated: use compression: gzip instead of gzip: true" in out
    assert "2.0.0" in out
    assert not results["new_name"].get("failed") and results["new_name"]["changed"] is False, results["new_name"]
    assert magic_of(os.path.join(target, SOURCE, "orders.bson.gz"))[:2] == bsonio.GZIP_MAGIC
    assert server.password not in out


@pytest.mark.parametrize("check", [False, True])
def test_module_refuses_what_it_cannot_write_before_connecting(tmp_path, check):
    # nothing listens on port 9: these answers can only come from checks made before connecting
    common = {"login_host": "127.0.0.1", "login_port": 9, "connect_timeout": 1}
    tasks = {
        "gzip_level_range": dict(common, path=str(tmp_path / "a"), gzip=True, gzip_level=10),
        "zstd_level_range": dict(common, path=str(tmp_path / "b"), compression="zstd", compression_level=23),
        "gzip_level_range_new": dict(common, path=str(tmp_path / "c"), compression="gzip", compression_level=0),
        "level_without_compression": dict(common, path=str(tmp_path / "d"), compression_level=3),
        "gzip_and_zstd": dict(common, path=str(tmp_path / "e"), gzip=True, compression="zstd"),
        "zstd_with_mongodump": dict(common, path=str(tmp_path / "f"), compression="zstd", engine="mongodump"),
        "level_with_mongodump": dict(common, path=str(tmp_path / "g"), compression="gzip", compression_level=9,
                                     engine="mongodump"),
    }
    before = sorted(os.listdir(str(tmp_path)))
    _out, results = run_tasks(tmp_path, None, tasks, check=check)
    expected = {
        "gzip_level_range": "gzip_level 10 is not a gzip level: use 1 to 9",
        "zstd_level_range": "compression_level 23 is not a zstd level: use -131072 to 22",
        "gzip_level_range_new": "compression_level 0 is not a gzip level: use 1 to 9",
        "level_without_compression": "compression_level 3 has no effect without compression; remove it or "
                                     "choose gzip or zstd",
        "gzip_and_zstd": "gzip: true asks for gzip but compression is zstd",
        "zstd_with_mongodump": "compression: zstd needs engine: native (mongodump writes only gzip)",
        "level_with_mongodump": "compression_level needs engine: native (mongodump --gzip takes no level)",
    }
    for name, message in expected.items():
        assert results[name].get("failed") and message in results[name]["msg"], (name, results[name])
    assert sorted(os.listdir(str(tmp_path))) == sorted(before + ["playbook.yml", "results.json"])
