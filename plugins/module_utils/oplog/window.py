# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""mongodump --oplog: the oplog entries written while a dump ran, and the check that none were lost."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

try:
    from pymongo import errors as pymongo_errors
except ImportError:  # pragma: no cover - reported by the module wrapper
    pass

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.timestamps import ts_text
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import DumpFailed, OplogOverflow


class OplogWindow:
    """mongodump --oplog: copy [start, end] of the oplog and fail if it rolled over meanwhile."""

    def __init__(self, client, server):
        self.client = client
        self.member = server.get("address")
        name = "oplog.rs" if server.get("replica_set") or server.get("hosts") else "oplog.$main"
        self.collection = client.local[name]
        self.start = None
        self.end = None

    def open(self):
        if self.collection.name not in self.client.local.list_collection_names():
            raise DumpFailed("oplog: true needs a replica-set member with an oplog, and %s has no "
                             "local.%s; dump without oplog, or dump from a replica-set member"
                             % (self.member, self.collection.name))
        self.start = self._oldest_open_transaction() or self._newest()
        self._check_not_rolled_over()
        return self.start

    def close(self):
        self.end = self._newest()
        self._check_not_rolled_over()
        return self.end

    def copy(self, sink):
        cursor = self.collection.find_raw_batches({"ts": {"$gte": self.start, "$lte": self.end}})
        try:
            for batch in cursor:
                for entry in _iter_decoded(batch):
                    check_oplog_entry(entry)
                sink.write(batch)
        finally:
            cursor.close()
        sink.close()
        self._check_not_rolled_over()

    def _newest(self):
        entry = self.collection.find_one({}, {"ts": 1}, sort=[("$natural", -1)])
        if entry is None:
            raise DumpFailed("the oplog local.%s on %s is empty; an oplog dump needs at least one "
                             "entry: write something or dump without oplog"
                             % (self.collection.name, self.member))
        return entry["ts"]

    def _oldest(self):
        entry = self.collection.find_one({}, {"ts": 1}, sort=[("$natural", 1)])
        return entry["ts"] if entry else None

    def _oldest_open_transaction(self):
        """Start at the first write of a transaction still open, so its commit replays whole."""
        try:
            open_txns = self.client.config.transactions.find(
                {"state": {"$in": ["prepared", "inProgress"]}}, {"startOpTime": 1})
            starts = [t["startOpTime"]["ts"] for t in open_txns if t.get("startOpTime")]
        except pymongo_errors.OperationFailure:
            return None
        return min(starts) if starts else None

    def _check_not_rolled_over(self):
        oldest = self._oldest()
        if oldest is None or oldest > self.start:
            raise OplogOverflow(
                "oplog overflow: the oldest entry in local.%s on %s is %s, newer than the dump's "
                "start %s, so writes made during the dump are lost; make the oplog larger "
                "(replSetResizeOplog) or the dump faster (a less busy member, more "
                "num_parallel_collections), then run the dump again" % (
                    self.collection.name, self.member, ts_text(oldest),
                    ts_text(self.start)))


def _iter_decoded(raw_batch):
    from bson import decode_iter
    return decode_iter(raw_batch)


def check_oplog_entry(entry):
    """Entries that make a point-in-time dump unrestorable (as mongodump refuses them)."""
    namespace = entry.get("ns", "")
    when = ts_text(entry.get("ts"))
    if namespace == "admin.system.version":
        raise DumpFailed("the oplog at %s changes admin.system.version (auth schema or feature "
                         "compatibility version) during the dump; run the dump again after "
                         "that change completes" % when)
    if entry.get("op") == "c":
        command = next(iter(entry.get("o") or {}), "")
        if command in ("renameCollection", "importCollection", "upgradeDowngradeViewlessTimeseries"):
            raise DumpFailed("a %s command at %s on %s ran during the dump, which an oplog dump "
                             "cannot capture consistently; run the dump again when no such "
                             "operation is running" % (command, when, namespace))
        if namespace.startswith("config.") and command == "create" and \
                str((entry.get("o") or {}).get("create", "")).startswith("localReshardingOplogBuffer"):
            raise DumpFailed("resharding started at %s during the dump; run the dump again after "
                             "it finishes" % when)
