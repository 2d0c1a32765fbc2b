"""Distributed transactions at the cut, with oplog entries shaped as MongoDB writes them (a prepare
applyOps on every shard touched, then each shard's own commitTransaction carrying the coordinator's
commitTimestamp, or abortTransaction), replayed onto a real server: per shard (same-shape restore)
and merged across shards (through-mongos restore)."""

import heapq

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog.replay import OplogReplayer
from cluster_bed import CUT, abort, commit, insert, prepare


def shard_oplogs(db):
    """Two shards' oplogs around CUT (inc 20):
    - session 1: prepared on both, commitTimestamp 4 (before the cut); shard A logs its commit at 9,
      shard B only at 22, after the cut: in on both.
    - session 2: prepared on both, commitTimestamp 21 (after the cut), commits at 23: in on neither.
    - session 3: prepared on A, aborted at 24: never in.
    - plain inserts before (1, 2) and after (25, 26) the cut."""
    shard_a = [insert(1, db, "a-before"), prepare(3, db, 1, ["a-t1"]), commit(9, 1, 4, 3),
               prepare(10, db, 2, ["a-t2"]), prepare(12, db, 3, ["a-t3"]), insert(20, db, "a-at-cut"),
               commit(23, 2, 21, 10), abort(24, 3, 12), insert(25, db, "a-after")]
    shard_b = [insert(2, db, "b-before"), prepare(4, db, 1, ["b-t1"]), prepare(11, db, 2, ["b-t2"]),
               commit(22, 1, 4, 4), commit(23, 2, 21, 11), insert(26, db, "b-after")]
    return shard_a, shard_b


def _ids(client, db):
    return sorted(doc["_id"] for doc in client[db].orders.find())


def test_each_shard_replayed_to_the_cut_holds_exactly_the_transactions_committed_before_it(client):
    shard_a = shard_oplogs("cut_txn_a")[0]
    shard_b = shard_oplogs("cut_txn_b")[1]
    try:
        for entries, db in ((shard_a, "cut_txn_a"), (shard_b, "cut_txn_b")):
            result = OplogReplayer(client, limit=CUT, resolve_prepared=True).replay(entries)
            assert result["stopped_at_limit"] is True
        assert _ids(client, "cut_txn_a") == ["a-before", "a-t1"]
        assert _ids(client, "cut_txn_b") == ["b-before", "b-t1"]  # its commit entry is after the cut
    finally:
        client.drop_database("cut_txn_a")
        client.drop_database("cut_txn_b")


def test_without_resolving_prepared_transactions_a_shard_would_lose_its_half(client):
    _shard_a, shard_b = shard_oplogs("cut_txn_plain")
    try:
        OplogReplayer(client, limit=CUT).replay(shard_b)  # mongorestore's --oplogLimit meaning
        assert _ids(client, "cut_txn_plain") == ["b-before"]
    finally:
        client.drop_database("cut_txn_plain")


def test_merged_shard_oplogs_replayed_to_the_cut_hold_a_transaction_on_every_shard_or_none(client):
    shard_a, shard_b = shard_oplogs("cut_txn_merged")
    merged = heapq.merge(shard_a, shard_b, key=lambda entry: (entry["ts"].time, entry["ts"].inc))
    try:
        result = OplogReplayer(client, limit=CUT, resolve_prepared=True).replay(merged)
        assert _ids(client, "cut_txn_merged") == ["a-before", "a-t1", "b-before", "b-t1"]
        assert result["skipped"].get("committed_after_limit", 0) >= 1
    finally:
        client.drop_database("cut_txn_merged")
