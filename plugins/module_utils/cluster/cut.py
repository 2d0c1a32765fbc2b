# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One cluster time T for all replica sets of a sharded cluster.

After every replica set's dump has finished (each with its oplog up to its own end), T is chosen
one increment after the latest of their ends. Each oplog is then read on from its dump's end up
to the first entry at or after T, which proves it holds every entry before T; an oplog that has
not reached T yet (an idle replica set) gets no-op notes until it does.

Distributed transactions: every shard a transaction touched logs a prepare, then its own
commitTransaction carrying the coordinator's commitTimestamp (or an abortTransaction). A
transaction committed before T must be in on every shard, one committed at or after T on none.
A shard's commit entry may come after T although the commit time is before it, so the capture
goes on past T until every transaction prepared before T is resolved there; replay with
``resolve_prepared`` then applies exactly the ones whose commitTimestamp is before T.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import io
import time

try:
    from pymongo import errors as pymongo_errors
except ImportError:  # pragma: no cover - reported by the module wrapper
    pymongo_errors = None

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import server_codes
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.timestamps import ts_text
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import ClusterError
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.bsonio import (
    AS_DICT, MAX_OPLOG_ENTRY_SIZE, bson, iter_raw_documents)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog.rules import (
    is_transaction_entry, transaction_key)

# Where a server without appendOplogNote gets its no-op write; replay skips config.* namespaces.
CUT_MARKER_DB = "config"
CUT_MARKER_COLLECTION = "dbops_backup_cut_marker"
NOTE_UNAVAILABLE_CODES = frozenset((server_codes.COMMAND_NOT_FOUND, server_codes.COMMAND_NOT_SUPPORTED, 238))


def choose_cut(dump_ends):
    """One increment after the latest of the dumps' oplog ends."""
    newest = max(dump_ends, key=lambda ts: (ts.time, ts.inc))
    return bson.Timestamp(newest.time, newest.inc + 1)


class PreparedTransactions:
    """Transactions prepared and neither committed nor aborted yet, from entries seen in order."""

    def __init__(self):
        self.pending = {}  # transaction key -> the prepare entry's ts

    def feed(self, entry):
        if not is_transaction_entry(entry):
            return
        command = entry["o"]
        key = transaction_key(entry)
        if command.get("prepare"):
            self.pending[key] = entry["ts"]
        elif "commitTransaction" in command or "abortTransaction" in command:
            self.pending.pop(key, None)

    def resolves(self, entry):
        """True when ``entry`` commits or aborts one of the pending transactions."""
        return is_transaction_entry(entry) and transaction_key(entry) in self.pending and (
            "commitTransaction" in entry["o"] or "abortTransaction" in entry["o"])

    def describe(self):
        return ", ".join("prepared at %s" % ts_text(ts) for ts in sorted(self.pending.values()))


class OplogCut:
    """The cut on one replica set: ``client`` reads its oplog (the member its dump was read from);
    ``writer`` (default ``client``) reaches its primary for the no-op notes."""

    def __init__(self, name, client, member, writer=None, poll_interval=0.2):
        self.name = name
        self.client = client
        self.writer = writer if writer is not None else client
        self.member = member
        self.oplog = client.local["oplog.rs"]
        self.poll_interval = poll_interval

    def capture(self, after, cut, prepared, sink, timeout):
        """Write the entries after ``after`` up to the first one at or after ``cut`` into ``sink``, then
        the commits and aborts of transactions ``prepared`` (a PreparedTransactions fed with the dump's
        oplog) still open at the cut. An oplog that has not reached the cut yet gets a no-op note and is
        read on from where it stopped, until ``timeout``. Returns {"first", "last", "entries"}."""
        captured = {"first": None, "last": None, "entries": 0}

        def keep(raw, entry):
            sink.write(raw)
            captured["first"] = captured["first"] or entry["ts"]
            captured["last"] = entry["ts"]
            captured["entries"] += 1

        deadline = time.time() + timeout
        last_read = after
        while True:
            for raw, entry in self._entries_after(last_read):
                last_read = entry["ts"]
                keep(raw, entry)
                if (entry["ts"].time, entry["ts"].inc) >= (cut.time, cut.inc):
                    self._resolve(prepared, last_read, keep, deadline)
                    return captured
                prepared.feed(entry)
            if time.time() > deadline:
                raise ClusterError(
                    "the oplog of %s on %s has not reached the cut %s within %ss (newest entry %s): its clock "
                    "lags or it takes no writes; check the member's clock and health, or raise cut_timeout; "
                    "the incomplete cluster backup was removed"
                    % (self.name, self.member, ts_text(cut), timeout, ts_text(last_read)))
            self._note(cut)
            time.sleep(self.poll_interval)

    def _note(self, cut):
        """A no-op oplog entry through the primary: appendOplogNote, or a marker write where the server
        lacks the command."""
        note = {"tool": "dbops.mongodb_backup", "note": "cluster backup cut", "cut": cut}
        try:
            self.writer.admin.command("appendOplogNote", data=note)
            return
        except pymongo_errors.OperationFailure as exc:
            if exc.code not in NOTE_UNAVAILABLE_CODES and "no such command" not in str(exc).lower():
                raise
        self.writer[CUT_MARKER_DB][CUT_MARKER_COLLECTION].replace_one(
            {"_id": "cut"}, dict(note, _id="cut"), upsert=True)

    def _resolve(self, prepared, last_read, keep, deadline):
        while prepared.pending:
            for raw, entry in self._entries_after(last_read):
                last_read = entry["ts"]
                if prepared.resolves(entry):
                    keep(raw, entry)
                    prepared.feed(entry)
            if not prepared.pending:
                return
            if time.time() > deadline:
                raise ClusterError(
                    "on %s (%s) %d transaction(s) prepared before the cut were neither committed nor aborted "
                    "in time (%s); a backup cannot tell whether they belong to it; check for a stuck "
                    "transaction coordinator, or raise cut_timeout; the incomplete cluster backup was removed"
                    % (self.name, self.member, len(prepared.pending), prepared.describe()))
            time.sleep(self.poll_interval)

    def _entries_after(self, after):
        """(raw bytes, decoded entry) for every oplog entry newer than ``after``, in oplog order."""
        cursor = self.oplog.find_raw_batches({"ts": {"$gt": after}}, sort=[("$natural", 1)])
        try:
            for batch in cursor:
                for raw in iter_raw_documents(io.BytesIO(batch), self.name, MAX_OPLOG_ENTRY_SIZE):
                    yield raw, bson.decode(raw, codec_options=AS_DICT)
        finally:
            cursor.close()
