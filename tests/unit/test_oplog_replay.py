"""Oplog replay rules that need no server: limit parsing, skip rules, transaction detection,
reading oplog files and archives, option checks. Replaying onto a server is tested against the
real test server (tests/integration/test_oplog_replay_rules.py) and, for what it lacks, over
the wire (tests/protocol/test_protocol_oplog_replay.py)."""

import gzip
import os

import bson
import pytest
from bson import Int64, Timestamp

from ansible_collections.dbops.mongodb_backup.plugins.module_utils import errors
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import InvalidOption, FormatError
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import replay
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import readers
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import rules
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.timestamps import (
    before_limit, ts_text, parse_oplog_limit)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPAT = os.path.join(REPO, "..", "shared", "compat", "mongo-tools")
RESTORE_DATA = os.path.join(COMPAT, "mongorestore", "testdata")
UUID = bson.Binary(bytes(range(16)), 4)


def entry(op, ns, o, ts=None, **extra):
    doc = {"ts": ts or Timestamp(1700000000, 1), "t": Int64(1), "v": 2, "op": op, "ns": ns, "o": o}
    doc.update(extra)
    return doc


# --------------------------------------------------------------------------- oplog limit

@pytest.mark.parametrize("text, expected", [
    ("123", (123, 0)), ("123:", (123, 0)), ("123:456", (123, 456)), ("0", (0, 0)), ("0:1", (0, 1)),
    ("4294967295:4294967295", (4294967295, 4294967295)), (" 1416342266:0 ", (1416342266, 0)),
    ("2024-05-01T12:00:00Z", (1714564800, 0)), ("2024-05-01T12:00:00z", (1714564800, 0)),
    ("2024-05-01T14:00:00+02:00", (1714564800, 0)), ("2024-05-01T07:00:00-05:00", (1714564800, 0)),
    ("2024-05-01T14:00:00+0200", (1714564800, 0)), ("2024-05-01T12:00:00", (1714564800, 0)),
    ("2024-05-01 12:00:00.999Z", (1714564800, 0)), ("2024-05-01T12:00Z", (1714564800, 0)),
    ("1970-01-01T00:00:00Z", (0, 0)),
])
def test_parse_oplog_limit_accepts(text, expected):
    limit = parse_oplog_limit(text)
    assert isinstance(limit, Timestamp) and (limit.time, limit.inc) == expected


@pytest.mark.parametrize("text", [
    "1:1:1", "123.123", ":", "", "   ", "-1", "+5", "abc", "12a", "1:x", "4294967296", "1:4294967296",
    "2024-13-01T00:00:00Z", "2024-05-01", "12:00:00", "2024-05-01T25:00:00Z", "1960-01-01T00:00:00Z",
    "2024-05-01T12:00:00+2", None, 123,
])
def test_parse_oplog_limit_rejects_with_both_forms_in_the_message(text):
    with pytest.raises(InvalidOption) as info:
        parse_oplog_limit(text)
    assert "<seconds>[:<increment>]" in info.value.message and "ISO-8601" in info.value.message


@pytest.mark.parametrize("ts, passes", [
    ((4, 9), True), ((4, 0), True), ((0, 1), True), ((5, 0), False), ((5, 1), False), ((1000, 0), False),
])
def test_limit_is_exclusive(ts, passes):
    """TestValidOplogLimitChecking: limit 5:0."""
    assert before_limit(Timestamp(*ts), Timestamp(5, 0)) is passes
    assert before_limit(Timestamp(*ts), None) is True


def test_nested_entries_without_ts_count_as_zero():
    assert before_limit(None, Timestamp(0, 1)) and not before_limit(None, Timestamp(0, 0))
    assert ts_text(Timestamp(1700000123, 4)) == "1700000123:4" and ts_text(None) is None


# --------------------------------------------------------------------------- skip rules

@pytest.mark.parametrize("doc, reason", [
    (entry("n", "", {"msg": "x"}), "noop"),
    (entry("cd", "db.c", {}), "replicated_record_id"),
    (entry("ci", "db.c", {}), "replicated_record_id"),
    (entry("cu", "db.c", {}), "replicated_record_id"),
    (entry("km", "db.c", {}), "replicated_record_id"),
    (entry("i", "__mdb_internal_search.x", {"_id": 1}), "internal_namespace"),
    (entry("i", "config.system.sessions", {"_id": 1}), "config_namespace"),
    (entry("i", "config.cache.test", {"_id": 1}), "config_namespace"),
    (entry("c", "config.$cmd", {"create": "chunks"}), "config_namespace"),
    (entry("c", "db.$cmd", {"startIndexBuild": "c"}), "ignored_command"),
    (entry("c", "db.$cmd", {"abortIndexBuild": "c"}), "ignored_command"),
    (entry("c", "db.$cmd", {"setMultikeyMetadata": "c"}), "ignored_command"),
    (entry("c", "db.$cmd", {"dropIdent": "c"}), "ignored_command"),
    (entry("i", "config.chunks", {"_id": 1}), None),
    (entry("i", "config.settings", {"_id": 1}), None),
    (entry("i", "config.version", {"_id": 1}), None),
    (entry("i", "configx.c", {"_id": 1}), None),
    (entry("c", "db.$cmd", {"createIndexes": "c"}), None),
    (entry("c", "admin.$cmd", {"applyOps": []}), None),
])
def test_skip_rules(doc, reason):
    assert rules.skip_reason(doc) == reason


@pytest.mark.parametrize("doc, is_txn", [
    (entry("c", "admin.$cmd", {"applyOps": []}, lsid={"id": UUID}, txnNumber=Int64(1)), True),
    (entry("c", "admin.$cmd", {"commitTransaction": 1}, lsid={"id": UUID}, txnNumber=Int64(1)), True),
    (entry("c", "admin.$cmd", {"abortTransaction": 1}, lsid={"id": UUID}, txnNumber=Int64(1)), True),
    (entry("c", "admin.$cmd", {"applyOps": []}, lsid={"id": UUID}, txnNumber=Int64(1), multiOpType=1), False),
    (entry("c", "admin.$cmd", {"applyOps": []}, lsid={"id": UUID}), False),
    (entry("c", "admin.$cmd", {"applyOps": []}), False),
    (entry("c", "db.$cmd", {"createIndexes": "k"}, lsid={"id": UUID}, txnNumber=Int64(1)), False),
    (entry("i", "db.c", {"_id": 1}, lsid={"id": UUID}, txnNumber=Int64(1)), False),
])
def test_transaction_detection(doc, is_txn):
    assert rules.is_transaction_entry(doc) is is_txn


# --------------------------------------------------------------------------- commands

def test_fcv_timeseries_conversion_is_fatal():
    """Refused before anything is sent: no server (client None) is needed."""
    with pytest.raises(errors.ReplayError, match="upgradeDowngradeViewlessTimeseries.*no entry was applied"):
        replay.OplogReplayer(None, mode="crud").replay(
            [entry("c", "db.$cmd", {"upgradeDowngradeViewlessTimeseries": "ts"})])


# --------------------------------------------------------------------------- reading oplogs

def test_iter_oplog_file_sniffs_gzip_and_accepts_entries_over_16_mib(tmp_path):
    plain = os.path.join(RESTORE_DATA, "oplogdump", "oplog.bson")
    packed = tmp_path / "oplog.bson"  # mongodump --gzip keeps the name
    with open(plain, "rb") as source, gzip.open(str(packed), "wb") as sink:
        sink.write(source.read())
    assert list(readers.iter_oplog_file(str(packed))) == list(readers.iter_oplog_file(plain))
    big = entry("i", "db.c", {"_id": 1, "blob": "x" * (16 * 1024 * 1024 + 1024)})
    path = tmp_path / "big.bson"
    path.write_bytes(bson.encode(big))
    assert len(list(readers.iter_oplog_file(str(path)))[0]["o"]["blob"]) == 16 * 1024 * 1024 + 1024
    path.write_bytes(bson.encode(big)[:-10])
    with pytest.raises(FormatError):
        list(readers.iter_oplog_file(str(path)))


def test_iter_archive_oplog_reads_only_the_oplog_namespace():
    entries = list(readers.iter_archive_oplog(os.path.join(RESTORE_DATA, "dump-w-oplog.archive")))
    assert len(entries) == 18
    assert sorted(set(e["ns"] for e in entries)) == ["config.system.sessions", "test.foo"]
    assert list(entries[0])[:5] == ["ts", "t", "h", "v", "op"]  # field order as stored


def test_options_are_validated():
    with pytest.raises(InvalidOption, match="mode 'fast' is unknown"):
        replay.OplogReplayer(None, mode="fast")
    with pytest.raises(InvalidOption, match="batch size"):
        replay.OplogReplayer(None, batch_size=0)
    assert replay.OplogReplayer(None, mode="crud", preserve_uuid=True).warnings
