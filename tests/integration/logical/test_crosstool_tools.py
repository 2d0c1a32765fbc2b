"""Cross-tool tests with the real MongoDB Database Tools (mongodump, mongorestore, bsondump).

Our output read by the real tools, theirs read by our engine, on the real test server, with every
BSON type the server stores, odd collection names (dots, spaces, unicode, %, +, a name long enough
for mongodump's file-name shortening), a capped collection and secondary indexes. Documents are
compared as raw BSON, sorted by _id. Skipped, with the reason, when the tools are absent.
"""

import datetime
import gzip
import json
import os
import re
import threading
import uuid

import bson
import pytest
from bson import Binary, Int64, Regex, Timestamp
from bson.json_util import CANONICAL_JSON_OPTIONS

from support import raw_documents
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump as dump_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_options
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import dump_names
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import dump_scan
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import manifest as manifest_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import restore as restore_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.archive import ArchiveReader, open_archive_for_read

SOURCE_DB = "xtool_src"
# Escaped far beyond 238 bytes, so the file name is shortened; the 208-byte cut falls inside a %XX.
LONG_NAME = "ab" + "long \u00e9t\u00e9 " * 20
ODD_NAMES = ("with.dots.in.it", "sp ace", "uni \u2713 \u65e5\u672c\u8a9e", "pct%41 and %", "plus+sign", LONG_NAME)
# FerretDB refuses the "ns" field mongorestore adds to every index spec it builds.
INDEX_REFUSED = re.compile(r'error creating indexes for .*Index option "ns" is unknown')

# Every BSON type, first the ones every server stores, then those some test servers refuse.
BASE_TYPES = {
    "double": 1.5, "double_negative": -2.25e-300, "string": "h\u00e9llo \u2713 \u65e5\u672c", "empty_string": "",
    "object": {"a": {"b": {"c": 1}}, "d": [{"e": None}]}, "empty_object": {},
    "array": [1, "two", {"three": 3.0}, None], "empty_array": [],
    "binary_generic": Binary(b"\x00\x01\x02", 0), "binary_function": Binary(b"fn", 1),
    "binary_old": Binary(b"\x02\x00\x00\x00ab", 2), "uuid_old": Binary(uuid.UUID(int=9).bytes, 3),
    "uuid": Binary(uuid.UUID("12345678-1234-5678-1234-567812345678").bytes, 4),
    "md5": Binary(b"0123456789abcdef", 5), "encrypted": Binary(b"\x01enc", 6), "column": Binary(b"\x00col", 7),
    "sensitive": Binary(b"s", 8), "vector": Binary(b"\x03\x00\x01\x02", 9), "binary_user": Binary(b"u", 128),
    "object_id": bson.ObjectId("5f1e2d3c4b5a697887766554"), "true": True, "false": False,
    "date": datetime.datetime(2024, 5, 1, 12, 0, 0, 123000), "date_before_1970": datetime.datetime(1901, 12, 13),
    "null": None, "regex": Regex("^a.*b$", "imsx"), "regex_no_flags": Regex("x", ""),
    "int32": -7, "int32_min": -2 ** 31, "timestamp": Timestamp(1700000000, 5), "timestamp_zero": Timestamp(0, 0),
    "int64": Int64(2 ** 40), "int64_small": Int64(1),
}
EXTENDED_TYPES = {
    "min_key": bson.MinKey(), "max_key": bson.MaxKey(), "javascript": bson.Code("function() { return 1; }"),
    "javascript_with_scope": bson.Code("x", {"a": 1}), "decimal128": bson.Decimal128("12345.6789"),
    "double_nan": float("nan"), "double_infinity": float("inf"), "nested_arrays": [[1, [2]], []],
}
SECONDARY_INDEXES = (
    ([("name", 1)], {"unique": True}),
    ([("int32", 1), ("date", -1)], {"name": "compound int32 date"}),
    ([("object.a.b.c", 1)], {"sparse": True}),
)


# --------------------------------------------------------------------------- helpers


def index_specs(client, db, name):
    """Secondary index definitions as the server lists them: {name: {key, options}} (no v, ns)."""
    specs = {}
    for spec in client[db][name].list_indexes():
        if spec["name"] != "_id_":
            specs[spec["name"]] = dict((k, v) for k, v in spec.items() if k not in ("v", "ns"))
    return specs


def assert_same_data(client, source_db, target_db):
    """The target holds the source's collections, documents byte-equal, same options."""
    names = sorted(client[source_db].list_collection_names())
    assert sorted(client[target_db].list_collection_names()) == names
    for name in names:
        assert raw_documents(client, target_db, name) == raw_documents(client, source_db, name), name
        assert client[target_db][name].options() == client[source_db][name].options(), name


def _stores(server, value):
    """True when the test server stores (and returns unchanged) a value of this BSON type."""
    probe = server.client(serverSelectionTimeoutMS=3000)
    try:
        document = {"_id": 1, "v": value}
        probe.xtool_probe.t.insert_one(document)
        return raw_documents(probe, "xtool_probe", "t") == [bson.encode(document)]
    except Exception:  # FerretDB refuses some types, and drops the connection on others
        return False
    finally:
        try:
            probe.drop_database("xtool_probe")
        except Exception:
            pass
        probe.close()


def our_dump(client, **options):
    facts = client_utils.server_facts(client)
    return dump_engine.dump(client, dump_options.DumpOptions(**options), facts)[1]


def restore_foreign(client, source, **options):
    """Restore output of the real mongodump (no manifest of ours) with our engine.

    The one place every test restores foreign output: options such sources need go here.
    """
    options = restore_engine.RestoreOptions(source=str(source), require_manifest=False, **options)
    return restore_engine.restore(client, options)[1]


def gunzip_if_needed(data):
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def dump_files(root):
    """{relative path: content, gunzipped} of every file of a dump directory."""
    files = {}
    for directory, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as handle:
                files[os.path.relpath(path, root)] = gunzip_if_needed(handle.read())
    return files


def archive_contents(path):
    """(header, prelude entries sorted, {namespace: [raw documents]}, {namespace: blocks}) of an
    archive; blocks counts data segments and EOF blocks (mongodump opens a segment even for an
    empty collection)."""
    with open_archive_for_read(path) as handle:
        reader = ArchiveReader(handle, path)
        documents, blocks = {}, {}
        for event in reader.iter_events():
            namespace = "%s.%s" % (event[1], event[2])
            if event[0] == "document":
                documents.setdefault(namespace, []).append(event[3])
            else:
                counts = blocks.setdefault(namespace, {"segment": 0, "end": 0})
                counts[event[0]] += 1
        prelude = sorted(reader.prelude, key=lambda entry: (entry["db"], entry["collection"]))
        return reader.header, prelude, documents, blocks


# mongorestore logs each index spec it parsed (Go %#v) before building it.
_RESTORING_INDEXES = re.compile(r"restoring indexes for collection [`\"](?P<ns>.*)[`\"] from metadata")
_INDEX_LINE = re.compile(r"index: &idx\.IndexDocument\{Options:bson\.M\{(?P<options>.*?)\}, "
                         r"Key:bson\.D\{(?P<key>.*?)\}, PartialFilterExpression:")
_GO_OPTION = re.compile(r'"((?:[^"\\]|\\.)*)":("(?:[^"\\]|\\.)*"|[^,]+)')
_GO_KEY = re.compile(r'bson\.E\{Key:"((?:[^"\\]|\\.)*)", Value:([^}]*)\}')


def _go_value(text):
    text = text.strip()
    if text.startswith('"'):
        return json.loads(text)
    if text in ("true", "false"):
        return text == "true"
    return float(text)


def parsed_index_specs(log):
    """{namespace: {index name: {"key": [(field, value)], option: value}}} from mongorestore's log."""
    found, namespace = {}, None
    for line in log.splitlines():
        match = _RESTORING_INDEXES.search(line)
        if match:
            namespace = match.group("ns")
            continue
        match = _INDEX_LINE.search(line)
        if match and namespace:
            options = dict((key, _go_value(value)) for key, value in _GO_OPTION.findall(match.group("options")))
            options.pop("v", None)
            options["key"] = [(field, _go_value(value)) for field, value in _GO_KEY.findall(match.group("key"))]
            found.setdefault(namespace, {})[options.pop("name")] = options
    return found


def comparable_specs(specs):
    """Index specs from list_indexes in the shape parsed_index_specs gives (numbers as floats)."""
    result = {}
    for name, spec in specs.items():
        options = dict((k, float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
                       for k, v in spec.items() if k not in ("key", "name"))
        options["key"] = [(field, float(value)) for field, value in spec["key"].items()]
        result[name] = options
    return result


def mongorestore_args(fmt, path, use_gzip):
    args = ["--gzip"] if use_gzip else []
    return args + (["--archive=%s" % path] if fmt == "archive" else [str(path)])


# --------------------------------------------------------------------------- the source data

@pytest.fixture(scope="module")
def source(server):
    """SOURCE_DB on the shared server; yields (client, names of the types it refused)."""
    client = server.client()
    client.drop_database(SOURCE_DB)
    refused = sorted(name for name, value in EXTENDED_TYPES.items() if not _stores(server, value))
    types = dict(BASE_TYPES, **dict((k, v) for k, v in EXTENDED_TYPES.items() if k not in refused))
    database = client[SOURCE_DB]
    database.types.insert_many([{"_id": i, "name": name, "v": value}
                                for i, (name, value) in enumerate(sorted(types.items()))])
    database.types.insert_one(dict({"_id": "every type", "name": "every type"}, **types))
    for spec, options in SECONDARY_INDEXES:
        database.types.create_index(spec, **options)
    for name in ODD_NAMES:
        database[name].insert_many([{"_id": n, "collection": name, "n": n} for n in range(5)])
    database.create_collection("empty")
    database.big.insert_many([{"_id": 0, "blob": Binary(os.urandom(3 * 1024 * 1024))}]
                             + [{"_id": n, "n": n} for n in range(1, 500)])
    database.create_collection("capped", capped=True, size=65536, max=20)
    database.capped.insert_many([{"_id": n, "n": n} for n in range(10)])  # below max: nothing is trimmed
    yield client, refused
    client.drop_database(SOURCE_DB)
    client.close()


@pytest.fixture
def clean(client):
    names = []

    def track(name):
        client.drop_database(name)
        names.append(name)
        return name
    yield track
    for name in names:
        client.drop_database(name)


def test_dataset_holds_every_type_the_server_stores(source, server):
    """Which BSON types the test server refuses (not part of the data set) is said, not hidden."""
    client, refused = source
    stem = dump_names.collection_file_stem(LONG_NAME)
    assert len(stem) == 238 and stem[204:211] == "%C3%%24", stem
    assert client[SOURCE_DB].types.count_documents({}) == len(BASE_TYPES) + len(EXTENDED_TYPES) - len(refused) + 1
    if refused:
        pytest.skip("the %s test server does not store BSON %s: those types are not in the cross-tool data set"
                    % (server.kind, ", ".join(refused)))


# --------------------------------------------------------------------------- our output, the real tools

VARIANTS = [("directory", False), ("directory", True), ("archive", False), ("archive", True)]
VARIANT_IDS = ["directory", "directory-gzip", "archive", "archive-gzip"]


@pytest.fixture(scope="module")
def our_output(source, tmp_path_factory):
    """Our engine's dump of SOURCE_DB in each layout: {(format, gzip): path}."""
    client, _refused = source
    root = tmp_path_factory.mktemp("ours")
    outputs = {}
    for fmt, use_gzip in VARIANTS:
        name = "%s%s" % (fmt, "-gz" if use_gzip else "")
        target = {"archive": str(root / (name + ".archive"))} if fmt == "archive" else {"path": str(root / name)}
        our_dump(client, db=SOURCE_DB, gzip=use_gzip, **target)
        outputs[(fmt, use_gzip)] = list(target.values())[0]
    return outputs


@pytest.mark.parametrize("use_gzip", [False, True], ids=["plain", "gzip"])
def test_single_database_dump_keeps_its_prelude_in_the_database_directory(our_output, use_gzip):
    """As mongodump --db (FORMATS.md (b)): <root>/<db>/prelude.json[.gz], none at the root."""
    root = our_output[("directory", use_gzip)]
    name = "prelude.json" + (".gz" if use_gzip else "")
    assert os.path.isfile(os.path.join(root, SOURCE_DB, name))
    assert not os.path.exists(os.path.join(root, name))
    assert dump_scan.scan_dump_directory(root).prelude["ToolVersion"] == manifest_utils.TOOL_VERSION


@pytest.mark.parametrize("fmt,use_gzip", VARIANTS, ids=VARIANT_IDS)
def test_mongorestore_restores_our_output_byte_equal(mongo_tools, server, source, our_output, clean, fmt, use_gzip):
    client, _refused = source
    target = clean("xtool_theirs_%s%s" % (fmt, "_gz" if use_gzip else ""))
    path = our_output[(fmt, use_gzip)]
    rename = ["--nsFrom=%s.*" % SOURCE_DB, "--nsTo=%s.*" % target]
    run = mongo_tools.run("mongorestore", "-v", *(rename + mongorestore_args(fmt, path, use_gzip)), server=server)
    source_specs = {"%s.types" % target: comparable_specs(index_specs(client, SOURCE_DB, "types"))}
    if run.returncode == 0:
        assert {"%s.types" % target: comparable_specs(index_specs(client, target, "types"))} == source_specs
    else:
        # The test server refuses mongorestore's index builds: compare the specs it parsed from our
        # metadata with the source's, then restore again without building them.
        assert INDEX_REFUSED.search(run.stderr), run.stderr
        parsed = parsed_index_specs(run.stderr)
        assert dict((ns, specs) for ns, specs in parsed.items() if specs) == source_specs
        run = mongo_tools.run("mongorestore", "--drop", "--noIndexRestore",
                              *(rename + mongorestore_args(fmt, path, use_gzip)), server=server)
        assert run.returncode == 0, run.stderr
    assert " 0 document(s) failed to restore" in run.stderr
    assert_same_data(client, SOURCE_DB, target)


@pytest.mark.parametrize("fmt,use_gzip", VARIANTS, ids=VARIANT_IDS)
def test_mongorestore_dry_run_accepts_our_layouts(mongo_tools, server, source, our_output, fmt, use_gzip):
    client, _refused = source
    run = mongo_tools.run("mongorestore", "--dryRun", "-v",
                          *mongorestore_args(fmt, our_output[(fmt, use_gzip)], use_gzip), server=server)
    assert run.returncode == 0, run.stderr
    assert "dry run completed" in run.stderr
    found = set(re.findall(r"found collection [`\"](.*)[`\"] bson to restore", run.stderr))
    assert found == set("%s.%s" % (SOURCE_DB, name) for name in client[SOURCE_DB].list_collection_names())


@pytest.mark.parametrize("use_gzip", [False, True], ids=["plain", "gzip"])
def test_bsondump_reads_every_bson_file_we_write(mongo_tools, source, our_output, use_gzip):
    client, _refused = source
    root = our_output[("directory", use_gzip)]
    scan = dump_scan.scan_dump_directory(root)
    assert len(scan.entries) == len(client[SOURCE_DB].list_collection_names())
    for entry in scan.entries:
        with open(entry.bson_path, "rb") as handle:
            data = gunzip_if_needed(handle.read())  # bsondump reads plain BSON: feed it the stream
        run = mongo_tools.run("bsondump", "--objcheck", "--type=json", stdin=data)
        assert run.returncode == 0, run.stderr
        expected = sorted(raw_documents(client, SOURCE_DB, entry.collection))
        assert "%d objects found" % len(expected) in run.stderr
        # Canonical Extended JSON back to BSON gives the very bytes the server stored.
        lines = run.stdout.decode("utf-8").splitlines()
        decoded = [bson.encode(bson.json_util.loads(line, json_options=CANONICAL_JSON_OPTIONS)) for line in lines]
        assert sorted(decoded) == expected, entry.collection


@pytest.mark.parametrize("use_gzip", [False, True], ids=["plain", "gzip"])
def test_our_directory_is_file_for_file_what_mongodump_writes(mongo_tools, server, source, our_output, tmp_path,
                                                              use_gzip):
    """Same file names, same bytes (gunzipped): .bson, .metadata.json and prelude placement."""
    theirs = tmp_path / "mongodump"
    run = mongo_tools.run("mongodump", "--db=%s" % SOURCE_DB, "--out=%s" % theirs,
                          *(["--gzip"] if use_gzip else []), server=server)
    assert run.returncode == 0, run.stderr
    ours = dump_files(our_output[("directory", use_gzip)])
    their_files = dump_files(str(theirs))
    assert ours.pop("manifest.json")
    prelude = "%s/prelude.json%s" % (SOURCE_DB, ".gz" if use_gzip else "")
    assert json.loads(ours.pop(prelude))["ServerVersion"] == json.loads(their_files.pop(prelude))["ServerVersion"]
    assert sorted(ours) == sorted(their_files)
    for name in their_files:
        assert ours[name] == their_files[name], name


@pytest.mark.parametrize("use_gzip", [False, True], ids=["plain", "gzip"])
def test_our_archive_holds_what_mongodump_archives(mongo_tools, server, source, our_output, tmp_path, use_gzip):
    """Same header (but the tool version), same prelude entries, same documents per namespace."""
    theirs = tmp_path / "mongodump.archive"
    run = mongo_tools.run("mongodump", "--db=%s" % SOURCE_DB, "--archive=%s" % theirs,
                          *(["--gzip"] if use_gzip else []), server=server)
    assert run.returncode == 0, run.stderr
    our_header, our_prelude, our_documents, our_blocks = archive_contents(our_output[("archive", use_gzip)])
    their_header, their_prelude, their_documents, their_blocks = archive_contents(str(theirs))
    assert our_header.pop("tool_version") != their_header.pop("tool_version")
    assert our_header == their_header
    assert our_prelude == their_prelude
    assert our_documents == their_documents
    assert set(our_blocks) == set(their_blocks)
    for namespace, counts in our_blocks.items():
        assert counts["end"] == 1 and counts["segment"] >= 1, namespace


@pytest.mark.parametrize("use_gzip", [False, True], ids=["plain", "gzip"])
def test_our_full_oplog_dump_is_file_for_file_what_mongodump_writes(mongo_tools, private_server, tmp_path, use_gzip):
    """A whole deployment with oplog: true, on a quiet server: the same files (admin's users, the
    prelude at the root, oplog.bson without .gz even when gzipped) with the same bytes."""
    live = private_server.client()
    try:
        live_data(live)
        gzip_args = ["--gzip"] if use_gzip else []
        run = mongo_tools.run("mongodump", "--oplog", "--out=%s" % (tmp_path / "theirs"), *gzip_args,
                              server=private_server)
        assert run.returncode == 0, run.stderr
        our_dump(live, path=str(tmp_path / "ours"), oplog=True, gzip=use_gzip)
    finally:
        live.close()
    ours, theirs = dump_files(str(tmp_path / "ours")), dump_files(str(tmp_path / "theirs"))
    assert ours.pop("manifest.json")
    prelude = "prelude.json" + (".gz" if use_gzip else "")
    assert json.loads(ours.pop(prelude))["ServerVersion"] == json.loads(theirs.pop(prelude))["ServerVersion"]
    assert "oplog.bson" in theirs
    assert sorted(ours) == sorted(theirs)
    for name in theirs:
        assert ours[name] == theirs[name], name


def test_our_full_oplog_archive_holds_what_mongodump_archives(mongo_tools, private_server, tmp_path):
    """A whole deployment with oplog: true as one gzipped archive, on a quiet server: the same
    prelude (the oplog's entry included) and the same documents, oplog entries included."""
    live = private_server.client()
    try:
        live_data(live)
        run = mongo_tools.run("mongodump", "--oplog", "--gzip", "--archive=%s" % (tmp_path / "theirs.archive"),
                              server=private_server)
        assert run.returncode == 0, run.stderr
        our_dump(live, archive=str(tmp_path / "ours.archive"), oplog=True, gzip=True)
    finally:
        live.close()
    our_header, our_prelude, our_documents, _blocks = archive_contents(str(tmp_path / "ours.archive"))
    their_header, their_prelude, their_documents, _blocks = archive_contents(str(tmp_path / "theirs.archive"))
    assert our_header["server_version"] == their_header["server_version"]
    assert our_prelude == their_prelude
    assert ".oplog" in their_documents
    assert our_documents == their_documents


# --------------------------------------------------------------------------- real mongodump output, our restore

def test_tools_get_the_password_only_through_a_private_config_file(mongo_tools, server):
    argv = mongo_tools.server_args(server)
    assert not any(server.password in arg for arg in argv)
    config = argv[0][len("--config="):]
    assert os.stat(config).st_mode & 0o777 == 0o600
    with open(config) as handle:
        assert server.password in handle.read()


def test_our_restore_takes_a_shortened_name_from_the_metadata_verbatim(mongo_tools, server, client, clean, tmp_path):
    """A long name with + and %: the name in the metadata is the real one (mongorestore unescapes it
    once more, turning + into a space; we do not)."""
    source_db, target = clean("xtool_long_src"), clean("xtool_long_dst")
    name = "plus+percent%25 " + "\u00e9" * 100
    client[source_db][name].insert_many([{"_id": n} for n in range(3)])
    run = mongo_tools.run("mongodump", "--db=%s" % source_db, "--out=%s" % (tmp_path / "dump"), server=server)
    assert run.returncode == 0, run.stderr
    assert len(os.listdir(str(tmp_path / "dump" / source_db))) == 3  # .bson, .metadata.json, prelude.json
    restore_foreign(client, tmp_path / "dump", ns_from=["%s.$c$" % source_db], ns_to=["%s.$c$" % target])
    assert client[target].list_collection_names() == [name]
    assert raw_documents(client, target, name) == raw_documents(client, source_db, name)


@pytest.mark.parametrize("fmt,use_gzip", VARIANTS, ids=VARIANT_IDS)
def test_our_restore_reads_mongodump_output_byte_equal(mongo_tools, server, source, clean, tmp_path, fmt, use_gzip):
    client, _refused = source
    target = clean("xtool_ours_%s%s" % (fmt, "_gz" if use_gzip else ""))
    path = tmp_path / ("dump.archive" if fmt == "archive" else "dump")
    output = ["--archive=%s" % path] if fmt == "archive" else ["--out=%s" % path]
    run = mongo_tools.run("mongodump", "--db=%s" % SOURCE_DB, *(output + (["--gzip"] if use_gzip else [])),
                          server=server)
    assert run.returncode == 0, run.stderr
    # $c$ rather than *: wildcard renames are another part of this issue, tested on their own.
    result = restore_foreign(client, path, ns_from=["%s.$c$" % SOURCE_DB], ns_to=["%s.$c$" % target])
    assert result["total_failed"] == 0
    assert result["total_inserted"] == sum(client[SOURCE_DB][name].count_documents({})
                                           for name in client[SOURCE_DB].list_collection_names())
    assert_same_data(client, SOURCE_DB, target)
    for name in client[SOURCE_DB].list_collection_names():
        assert index_specs(client, target, name) == index_specs(client, SOURCE_DB, name), name


# --------------------------------------------------------------------------- point in time under a workload

LIVE_DB = "xtool_live"


class Writer(threading.Thread):
    """One thread writing to LIVE_DB.w, one acknowledged write at a time, recording each as
    (op, _id, step): the oplog holds them in this order, each entry naming its step."""

    def __init__(self, client, first_id):
        super().__init__(daemon=True)
        self.collection = client[LIVE_DB].w
        self.log = []
        self.next_id = first_id
        self.live = list(range(first_id))
        self.stop_event = threading.Event()
        self.error = None

    def run(self):
        step = 0
        try:
            while not self.stop_event.is_set():
                self.write(step)
                step += 1
        except Exception as exc:  # reported by the test
            self.error = exc

    def write(self, step):
        if step % 4 == 3 and len(self.live) > 10:
            victim = self.live.pop((step * 7) % len(self.live))
            self.collection.delete_one({"_id": victim})
            self.log.append(("d", victim, step))
        elif step % 2 == 1:
            target = self.live[(step * 13) % len(self.live)]
            self.collection.update_one({"_id": target}, {"$set": {"step": step, "v": "updated %d" % step}})
            self.log.append(("u", target, step))
        else:
            self.collection.insert_one({"_id": self.next_id, "step": step, "v": "inserted %d" % step})
            self.log.append(("i", self.next_id, step))
            self.live.append(self.next_id)
            self.next_id += 1

    def stop(self):
        self.stop_event.set()
        self.join(30)
        assert self.error is None, self.error

    def state_after(self, initial, last_step):
        """The collection as it was once the write of ``last_step`` was made."""
        documents = dict((doc["_id"], dict(doc)) for doc in initial)
        for op, _id, step in self.log:
            if step > last_step:
                break
            if op == "i":
                documents[_id] = {"_id": _id, "step": step, "v": "inserted %d" % step}
            elif op == "u":
                documents[_id].update(step=step, v="updated %d" % step)
            else:
                del documents[_id]
        return [bson.encode(documents[key]) for key in sorted(documents)]

    def step_of(self, entry):
        """The writer's step an oplog entry of LIVE_DB.w records."""
        if entry["op"] == "d":
            return next(step for op, _id, step in self.log if op == "d" and _id == entry["o"]["_id"])
        o = entry["o"]
        for fields in (o, o.get("$set"), (o.get("diff") or {}).get("u")):  # insert/replacement, $v:1, $v:2
            if fields and "step" in fields:
                return fields["step"]
        raise AssertionError("no step in %r" % entry)


def live_data(client):
    """A static collection with a secondary index and the writer's collection, before the writer starts."""
    client.drop_database(LIVE_DB)
    client[LIVE_DB].static.insert_many([{"_id": n, "payload": "x" * 200, "n": n} for n in range(500)])
    client[LIVE_DB].static.create_index([("n", -1)], name="n_desc")
    initial = [{"_id": n, "step": -1, "v": "initial"} for n in range(200)]
    client[LIVE_DB].w.insert_many(initial)
    client[LIVE_DB].w.create_index([("step", 1)])
    return initial


def oplog_entries(path, fmt):
    """Decoded oplog entries of a mongodump --oplog output, read with pymongo only."""
    if fmt == "archive":
        with open_archive_for_read(str(path)) as handle:
            raws = [raw for db, coll, raw in ArchiveReader(handle, str(path)).iter_documents() if db == ""]
        return [bson.decode(raw) for raw in raws]
    with open(os.path.join(str(path), "oplog.bson"), "rb") as handle:
        return bson.decode_all(gunzip_if_needed(handle.read()))


OPLOG_VARIANTS = [("directory", False), ("directory", True), ("archive", True)]
OPLOG_VARIANT_IDS = ["directory", "directory-gzip", "archive-gzip"]


@pytest.mark.parametrize("fmt,use_gzip", OPLOG_VARIANTS, ids=OPLOG_VARIANT_IDS)
def test_mongodump_oplog_under_a_workload_restores_to_the_dumps_end(mongo_tools, private_server, server, tmp_path,
                                                                    fmt, use_gzip):
    """mongodump --oplog while a writer runs; our restore with oplog replay gives the state at the oplog's
    last entry: not what the collection scan saw, not what the writer did after the dump."""
    live = private_server.client()
    target = server.client()
    target.drop_database(LIVE_DB)
    try:
        initial = live_data(live)
        writer = Writer(live, first_id=len(initial))
        path = tmp_path / ("dump.archive" if fmt == "archive" else "dump")
        output = ["--archive=%s" % path] if fmt == "archive" else ["--out=%s" % path]
        writer.start()
        while len(writer.log) < 20:  # the writer is under way before the dump starts
            threading.Event().wait(0.01)
        run = mongo_tools.run("mongodump", "--oplog", *(output + (["--gzip"] if use_gzip else [])),
                              server=private_server)
        steps_at_dump_end = len(writer.log)
        while len(writer.log) < steps_at_dump_end + 20:  # and goes on after it
            threading.Event().wait(0.01)
        writer.stop()
        assert run.returncode == 0, run.stderr

        window = [e for e in oplog_entries(path, fmt) if e["ns"] == "%s.w" % LIVE_DB]
        assert window, "no write of the workload fell inside the dump's oplog window"
        last_step = writer.step_of(window[-1])
        assert last_step < writer.log[-1][2], "the writer went on after the dump"

        result = restore_foreign(target, path, oplog_replay=True)
        assert result["total_failed"] == 0
        assert result["oplog"]["applied"] >= len(window)
        assert raw_documents(target, LIVE_DB, "w") == writer.state_after(initial, last_step)
        assert raw_documents(target, LIVE_DB, "static") == raw_documents(live, LIVE_DB, "static")
        for name in ("w", "static"):
            assert index_specs(target, LIVE_DB, name) == index_specs(live, LIVE_DB, name)
    finally:
        target.drop_database(LIVE_DB)
        target.close()
        live.close()


@pytest.mark.parametrize("fmt,use_gzip", OPLOG_VARIANTS, ids=OPLOG_VARIANT_IDS)
def test_our_oplog_dump_is_read_by_bsondump_and_accepted_by_mongorestore(mongo_tools, private_server, tmp_path,
                                                                         fmt, use_gzip):
    """Our oplog: true dump under a workload: bsondump reads every entry of oplog.bson, and
    mongorestore --oplogReplay --dryRun (which fails when it finds no oplog) accepts the output."""
    live = private_server.client()
    try:
        initial = live_data(live)
        writer = Writer(live, first_id=len(initial))
        writer.start()
        while len(writer.log) < 20:
            threading.Event().wait(0.01)
        path = tmp_path / ("ours.archive" if fmt == "archive" else "ours")
        try:
            our_dump(live, oplog=True, gzip=use_gzip, **{"archive" if fmt == "archive" else "path": str(path)})
        finally:
            writer.stop()
        entries = [bson.encode(entry) for entry in oplog_entries(path, fmt)]
        assert any(bson.decode(raw)["ns"] == "%s.w" % LIVE_DB for raw in entries), "no workload write in the window"
        if fmt == "directory":
            with open(str(path / "oplog.bson"), "rb") as handle:
                data = gunzip_if_needed(handle.read())
            run = mongo_tools.run("bsondump", "--objcheck", "--type=json", stdin=data)
            assert run.returncode == 0, run.stderr
            assert "%d objects found" % len(entries) in run.stderr
            lines = run.stdout.decode("utf-8").splitlines()
            assert [bson.encode(bson.json_util.loads(line, json_options=CANONICAL_JSON_OPTIONS))
                    for line in lines] == entries
        run = mongo_tools.run("mongorestore", "--dryRun", "--oplogReplay",
                              *mongorestore_args(fmt, path, use_gzip), server=private_server)
        assert run.returncode == 0, run.stderr
        assert "dry run completed" in run.stderr
    finally:
        live.close()


def _has_apply_ops(client):
    try:
        client.admin.command("applyOps", [])
        return True
    except Exception:  # FerretDB: CommandNotFound
        return False


def test_mongorestore_replays_our_oplog_dump_to_its_end(mongo_tools, private_server, server, tmp_path):
    """Our oplog: true dump under a workload, restored by mongorestore --oplogReplay: the state at
    the oplog's last entry, indexes built. mongorestore replays through applyOps."""
    target = server.client()
    if not _has_apply_ops(target):
        target.close()
        pytest.skip("the %s test server has no applyOps, which mongorestore --oplogReplay needs" % server.kind)
    live = private_server.client()
    target.drop_database(LIVE_DB)
    try:
        initial = live_data(live)
        writer = Writer(live, first_id=len(initial))
        writer.start()
        while len(writer.log) < 20:
            threading.Event().wait(0.01)
        try:
            # admin left out: mongorestore would restore the private server's users over the shared one's
            our_dump(live, path=str(tmp_path / "ours"), oplog=True, ns_exclude=["admin.*"])
            steps_at_dump_end = len(writer.log)
            while len(writer.log) < steps_at_dump_end + 20:
                threading.Event().wait(0.01)
        finally:
            writer.stop()
        window = [e for e in oplog_entries(tmp_path / "ours", "directory") if e["ns"] == "%s.w" % LIVE_DB]
        assert window, "no write of the workload fell inside the dump's oplog window"
        last_step = writer.step_of(window[-1])
        run = mongo_tools.run("mongorestore", "--oplogReplay", str(tmp_path / "ours"), server=server)
        assert run.returncode == 0, run.stderr
        assert raw_documents(target, LIVE_DB, "w") == writer.state_after(initial, last_step)
        assert raw_documents(target, LIVE_DB, "static") == raw_documents(live, LIVE_DB, "static")
        for name in ("w", "static"):
            assert index_specs(target, LIVE_DB, name) == index_specs(live, LIVE_DB, name)
    finally:
        target.drop_database(LIVE_DB)
        target.close()
        live.close()
