# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Oplog replay: the rules of ``mongorestore --oplogReplay``, with two ways of applying.

The rules (../shared/compat/FORMATS.md section (c)): what is skipped, where ``limit`` stops
the replay, how transactions are buffered, which index commands only feed an in-memory
index catalog that the caller builds after the replay (``build_indexes``).

Applying:
  * ``applyops``: each entry goes to the server as ``{applyOps: [entry]}``, as mongorestore
    sends it; the server's oplog application takes care of idempotency.
  * ``crud``: ordinary writes, for targets where applyOps is missing or forbidden (Atlas
    shared tiers, FerretDB, other compatible servers). Consecutive CRUD entries are applied in
    memory per document and written as one unordered bulk per namespace.
  * ``auto``: applyOps on the first entry that needs it; when the server refuses the command,
    crud for the whole run.

Entries are dicts decoded with ``CodecOptions(document_class=dict)``: field order matters for
commands (the name comes first) and for documents.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
from collections import OrderedDict

try:
    from pymongo import errors as pymongo_errors
except ImportError:  # pragma: no cover - reported by the module wrapper
    pymongo_errors = None
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.namespaces import (
    split_namespace as _split_namespace)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import InvalidOption, ReplayError
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.timestamps import (
    before_limit, ts_text)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog.crud_window import CrudWindow
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog.index_catalog import (
    find_index, index_matches, modify_index)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog.rules import (
    CATALOG_ADD_COMMANDS, CATALOG_DROP_COMMANDS, COLLMOD_DROPPED_OPTIONS, CRUD_UNWRITABLE,
    FCV_TIMESERIES_COMMAND, KNOWN_COMMANDS, NOT_APPLIED_REASONS, applyops_unavailable, command_name,
    document_id, hashable_key, is_transaction_entry, reduce_for_applyops, rerun_outcome, rewrite_entry,
    server_cause, skip_reason, transaction_key)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog.writes import MongoTarget, Write

MODES = ("auto", "applyops", "crud")
DEFAULT_BATCH_SIZE = 1000


RETRY_HINT = "fix the cause and replay again from the same oplog (replay is idempotent)"


_UNSET = object()  # "not given", where None is a meaningful value


# --------------------------------------------------------------------------- entry rules


# --------------------------------------------------------------------------- reading oplogs


# --------------------------------------------------------------------------- the target


# --------------------------------------------------------------------------- crud window


# --------------------------------------------------------------------------- the replayer

class _Top:
    """A top-level oplog entry being replayed: its sequence number and ts."""

    __slots__ = ("seq", "ts")

    def __init__(self, seq, ts):
        self.seq = seq
        self.ts = ts


class OplogReplayer:
    """Replays oplog entries onto a server. One instance per replay run.

    ``limit``: bson.Timestamp, exclusive (``parse_oplog_limit``). ``index_catalog``: optional
    {namespace: {index name: spec}} to start from (the indexes of the restored metadata, as
    mongorestore keeps them until after the replay). ``progress``: called with a dict of
    counts after every flush. ``target``: replaces the pymongo target (tests).
    ``resolve_prepared``: a transaction prepared before ``limit`` belongs to the state at ``limit`` when
    its ``commitTimestamp`` is before it, even if its commitTransaction entry comes later (each shard
    of a distributed transaction writes its own commit entry after the coordinator chose the commit
    time). With it, the replay reads on past the limit only to resolve such transactions: committed
    before the limit, they are applied; committed later or aborted, discarded. The cut of a
    sharded-cluster backup needs it; mongorestore's ``--oplogLimit`` does not do it.
    ``skip_repeated``: the entries come from a real oplog, in timestamp order (a backup's oplog and
    archived slices): an entry whose ts is not newer than the last one handed over is a repeat (slices
    share their boundary entry; overlapping slices share more) and is skipped, counted as
    ``repeated_entry``, never applied twice. Hand-made streams that reuse timestamps leave it off.
    """

    def __init__(self, client, mode="auto", limit=None, bypass_document_validation=False,
                 preserve_uuid=False, batch_size=DEFAULT_BATCH_SIZE, progress=None,
                 index_catalog=None, target=None, skip_repeated=False, resolve_prepared=False):
        if mode not in MODES:
            raise InvalidOption("oplog replay mode %r is unknown; use one of %s" % (mode, ", ".join(MODES)))
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidOption("oplog replay batch size must be a positive integer, got %r" % (batch_size,))
        self.mode = mode
        self.limit = limit
        self.skip_repeated = bool(skip_repeated)
        self.resolve_prepared = bool(resolve_prepared)
        self._prepared = set()  # keys of buffered transactions that are prepared, not yet resolved
        self.preserve_uuid = preserve_uuid
        self.batch_size = batch_size
        self._progress = progress
        self._target = target if target is not None else MongoTarget(client, bypass_document_validation)
        self._mode_used = None if mode == "auto" else mode
        self.index_catalog = copy.deepcopy(index_catalog) if index_catalog else {}
        self._window = CrudWindow()
        self._transactions = OrderedDict()  # (lsid, txnNumber) -> buffered inner ops
        self._seq = 0
        self._handed_ts = None  # last top-level entry fully handed over (maybe still in the window)
        self._applied_ts = None  # last top-level entry whose effects are all on the target
        self._counts = {"entries": 0, "applied": 0, "applied_by_op": {}, "skipped": {},
                        "committed": 0, "aborted": 0}
        self._seen = [None, None]
        self._newest_ts = None  # the newest ts handed over so far: an entry not newer is a repeat
        self._stopped_at_limit = False
        self.warnings = []
        if preserve_uuid and mode == "crud":
            self.warnings.append("preserve_uuid has no effect in crud mode: ordinary writes cannot set "
                                 "collection UUIDs")

    # -- public --------------------------------------------------------------------

    def replay(self, entries):
        """Apply ``entries`` (an iterable of decoded oplog entries); returns the result dict."""
        for entry in entries:
            self._counts["entries"] += 1
            if not self._handle_top(entry):
                self._stopped_at_limit = True
                break
        self._flush()
        return self.result()

    def result(self):
        """Counts so far: ``applied`` ops (with ``applied_by_op``: i, u, d, c, and index for the
        catalog), ``skipped`` by reason, ``transactions``, ``last_applied`` (the last top-level entry
        whose effects are all on the target), ``first_ts``/``last_ts`` of the entries read (skipped
        ones and the one that reached the limit included), ``index_catalog`` to build afterwards."""
        counts = self._counts
        return {
            "mode": self.mode,
            "mode_used": self._mode_used,
            "entries": counts["entries"],
            "applied": counts["applied"],
            "applied_by_op": dict(counts["applied_by_op"]),
            "skipped": dict(counts["skipped"]),
            "not_applied": dict((reason, number) for reason, number in counts["skipped"].items()
                                if reason in NOT_APPLIED_REASONS),
            "transactions": {"committed": counts["committed"], "aborted": counts["aborted"],
                             "discarded": len(self._transactions)},
            "last_applied": ts_text(self._applied_ts),
            "stopped_at_limit": self._stopped_at_limit,
            "limit": ts_text(self.limit),
            "first_ts": ts_text(self._seen[0]),
            "last_ts": ts_text(self._seen[1]),
            "index_catalog": self.index_catalog,
            "warnings": self._warnings(),
        }

    def _warnings(self):
        warnings = list(self.warnings)
        unwritable = self._counts["skipped"].get("system_collection")
        if unwritable:
            warnings.append("%d oplog writes to users, roles, views or admin.system.version were not "
                            "replayed: crud mode cannot write those collections; re-create the users, roles "
                            "and views changed in the oplog window" % unwritable)
        return warnings

    # -- dispatch ------------------------------------------------------------------

    def _handle_top(self, entry):
        """Handle one entry of the stream; False when it reaches the limit (replay stops)."""
        ts = entry.get("ts")
        self._note_seen(ts)
        reason = skip_reason(entry)
        if reason:  # filtering comes first: skipped entries never stop the replay
            self._skip(reason)
            return True
        if self.skip_repeated and ts is not None and self._newest_ts is not None and ts <= self._newest_ts:
            # Archived slices repeat their predecessor's last entry, and overlapping slices repeat more:
            # an entry is applied at most once, in timestamp order.
            self._skip("repeated_entry")
            return True
        if not before_limit(ts, self.limit):
            if self.resolve_prepared and self._prepared:
                self._stopped_at_limit = True
                self._resolve_after_limit(entry)
                return True
            return False
        if ts is not None:
            self._newest_ts = ts
        self._seq += 1
        top = _Top(self._seq, ts)
        if is_transaction_entry(entry):
            self._handle_transaction(entry, top)
        else:
            self._handle(entry, top)
        self._handed_ts = ts
        if not self._window:
            self._applied_ts = ts
        return True

    def _handle(self, entry, top):
        """An ordinary op, at top level or from inside an applyOps or a transaction.

        Nested ops are not held against the limit: their applyOps entry as a whole was.
        """
        reason = skip_reason(entry)
        if reason:
            self._skip(reason)
            return
        entry = rewrite_entry(entry, self.preserve_uuid)
        op = entry.get("op")
        if op == "c":
            self._handle_command(entry, top)
        elif op == "i" and _split_namespace(entry.get("ns"))[1] == "system.indexes":
            self._catalog_legacy_index(entry, top)
        elif op in ("i", "u", "d"):
            self._apply(entry, top)
        else:
            self._fail(top, entry, "unknown oplog op type %r" % (op,))

    def _handle_transaction(self, entry, top):
        command = entry["o"]
        key = transaction_key(entry)
        if "abortTransaction" in command:
            self._transactions.pop(key, None)
            self._prepared.discard(key)
            self._counts["aborted"] += 1
            return
        ops = self._transactions.setdefault(key, [])
        if "applyOps" in command:
            ops.extend(command["applyOps"])
            if command.get("prepare"):
                self._prepared.add(key)
            if command.get("partialTxn") or command.get("prepare"):
                return  # more entries of this transaction follow
        del self._transactions[key]
        self._prepared.discard(key)
        for op in ops:
            self._handle(op, top)
        self._counts["committed"] += 1

    def _resolve_after_limit(self, entry):
        """Past the limit: only the commit or abort of a transaction prepared before it matters."""
        key = transaction_key(entry) if is_transaction_entry(entry) else None
        if key not in self._prepared:
            return
        command = entry["o"]
        if "commitTransaction" in command and before_limit(command.get("commitTimestamp"), self.limit):
            self._seq += 1
            self._handle_transaction(entry, _Top(self._seq, entry.get("ts")))
            return
        self._prepared.discard(key)
        self._transactions.pop(key, None)
        self._skip("committed_after_limit" if "commitTransaction" in command else "aborted_after_limit")

    def _handle_command(self, entry, top):
        name = command_name(entry)
        if name == FCV_TIMESERIES_COMMAND:
            self._fail(top, entry, "the oplog holds a timeseries format conversion (%s, a feature "
                       "compatibility version change) that cannot be replayed; restore a backup taken "
                       "after the conversion" % name)
        if name not in KNOWN_COMMANDS:
            self._fail(top, entry, "unknown oplog command name %r (this tool does not know how to "
                       "replay it)" % name)
        if name == "applyOps":  # not a transaction: every inner op on its own
            for inner in entry["o"].get("applyOps") or []:
                self._handle(inner, top)
        elif name == "dbCheck":
            self._skip("ignored_command")  # it only writes health-log entries on secondaries
        elif name in CATALOG_ADD_COMMANDS:
            self._catalog_add(entry, top)
        elif name in CATALOG_DROP_COMMANDS:
            self._drop_indexes(entry, top)
        elif name == "collMod":
            remaining = self._collmod(entry)
            if remaining is not None:
                self._apply(remaining, top)
        else:
            self._catalog_before_command(entry)
            self._apply(entry, top)

    # -- index catalog -------------------------------------------------------------

    def _count(self, op):
        self._counts["applied"] += 1
        by_op = self._counts["applied_by_op"]
        by_op[op] = by_op.get(op, 0) + 1

    def _skip(self, reason, number=1):
        skipped = self._counts["skipped"]
        skipped[reason] = skipped.get(reason, 0) + number

    def _catalog_add(self, entry, top):
        command = entry["o"]
        name = command_name(entry)
        database = _split_namespace(entry["ns"])[0]
        namespace = "%s.%s" % (database, command[name])
        if name == "commitIndexBuild":
            specs = command.get("indexes") or []
        else:
            specs = [dict((k, v) for k, v in command.items() if k != name)]
        for spec in specs:
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                self._fail(top, entry, "an index specification has no name: %r" % (spec,))
            spec = dict((k, v) for k, v in spec.items() if k != "ns")
            self.index_catalog.setdefault(namespace, {})[spec["name"]] = spec
        self._count("index")

    def _catalog_legacy_index(self, entry, top):
        """Servers before 3.2 logged an index build as an insert of its spec into system.indexes."""
        spec = entry.get("o")
        if not isinstance(spec, dict) or not isinstance(spec.get("ns"), str) or not isinstance(spec.get("name"), str):
            self._fail(top, entry, "a system.indexes entry without ns or name: %r" % (spec,))
        namespace = spec["ns"]
        self.index_catalog.setdefault(namespace, {})[spec["name"]] = dict(
            (k, v) for k, v in spec.items() if k != "ns")
        self._count("index")

    def _drop_indexes(self, entry, top):
        """Forget the index in the catalog, and drop it on the target when it exists there."""
        command = entry["o"]
        name = command_name(entry)
        database = _split_namespace(entry["ns"])[0]
        namespace = "%s.%s" % (database, command[name])
        which = command.get("index", command.get("indexes"))
        catalog = self.index_catalog.get(namespace, {})
        for index_name in [n for n, spec in catalog.items() if index_matches(spec, which)]:
            del catalog[index_name]
        self._flush()
        try:
            for spec in self._target.list_indexes(namespace):
                if spec.get("name") != "_id_" and index_matches(spec, which):
                    self._target.drop_index(namespace, spec["name"])
        except pymongo_errors.PyMongoError as exc:
            self._fail(top, entry, server_cause(exc))
        self._count("index")

    def _collmod(self, entry):
        """Apply an index change to the catalog; the collMod left to send, or None."""
        command = OrderedDict((k, v) for k, v in entry["o"].items() if k not in COLLMOD_DROPPED_OPTIONS)
        database = _split_namespace(entry["ns"])[0]
        namespace = "%s.%s" % (database, command["collMod"])
        change = command.get("index")
        if isinstance(change, dict):
            spec = find_index(self.index_catalog.get(namespace, {}), change)
            if spec is not None:  # otherwise the index exists only on the target: the server changes it
                modify_index(spec, change)
                del command["index"]
                self._count("index")
        if len(command) == 1:
            return None  # nothing but the collection name is left
        return dict(entry, o=dict(command))

    def _catalog_before_command(self, entry):
        """drop, dropDatabase and renameCollection also change what the catalog should build."""
        name = command_name(entry)
        command = entry["o"]
        database = _split_namespace(entry["ns"])[0]
        if name == "drop":
            self.index_catalog.pop("%s.%s" % (database, command["drop"]), None)
        elif name == "dropDatabase":
            for namespace in [n for n in self.index_catalog if _split_namespace(n)[0] == database]:
                del self.index_catalog[namespace]
        elif name == "renameCollection":
            source, target = command.get("renameCollection"), command.get("to")
            if command.get("dropTarget"):
                self.index_catalog.pop(target, None)
            if source in self.index_catalog:
                self.index_catalog[target] = self.index_catalog.pop(source)

    # -- applying ------------------------------------------------------------------

    def _apply(self, entry, top):
        """Apply a CRUD op or a command through the current mode."""
        if self._mode_used is None and self._try_applyops_first(entry, top):
            return
        if self._mode_used == "applyops":
            self._send_applyops(entry, top)
        elif entry["op"] == "c":
            self._flush()
            self._crud_command(entry, top)
        elif entry.get("ns") in CRUD_UNWRITABLE or _split_namespace(entry.get("ns"))[1] == "system.views":
            self._skip("system_collection")  # reported in the result's warnings
        else:
            found, id_value = document_id(entry)
            if not isinstance(entry.get("o"), dict):
                self._fail(top, entry, "the entry has no o document")
            if not found:
                self._fail(top, entry, "the entry names no document _id")
            self._window.add(top, entry, id_value)
            if len(self._window) >= self.batch_size:
                self._flush()

    def _try_applyops_first(self, entry, top):
        """Auto mode: True when applyOps took this entry; False (now in crud mode) when refused."""
        return self._send_applyops(entry, top, probing=True)

    def _send_applyops(self, entry, top, probing=False):
        try:
            self._target.apply_ops(reduce_for_applyops(entry))
        except pymongo_errors.PyMongoError as exc:
            if probing and applyops_unavailable(exc):
                self._switch_to_crud(exc)
                return False
            outcome = rerun_outcome(entry, exc)
            if outcome is None:
                cause = server_cause(exc)
                if applyops_unavailable(exc):
                    cause += " (the target does not allow applyOps: replay with mode crud or auto)"
                self._fail(top, entry, cause)
            self._mode_used = "applyops"
            if outcome != "applied":
                self._skip(outcome)
                return True
        self._mode_used = "applyops"
        self._count(entry["op"])
        if self._progress and self._counts["applied"] % self.batch_size == 0:
            self._progress(self.result())
        return True

    def _switch_to_crud(self, exc):
        self._mode_used = "crud"
        self.warnings.append("the target refused applyOps (%s); the oplog was replayed with "
                             "ordinary writes (mode crud)" % server_cause(exc))
        if self.preserve_uuid:
            self.warnings.append("preserve_uuid has no effect in crud mode: ordinary writes "
                                 "cannot set collection UUIDs")

    def _crud_command(self, entry, top):
        name = command_name(entry)
        command = entry["o"]
        database = _split_namespace(entry["ns"])[0]
        try:
            if name == "create":
                self._target.create_collection(database, command)
            elif name == "drop":
                self._target.drop_collection(database, command["drop"])
            elif name == "dropDatabase":
                self._target.drop_database(database)
            elif name == "renameCollection":
                if not self._target.rename_collection(command["renameCollection"], command["to"],
                                                      bool(command.get("dropTarget"))):
                    self._skip("rename_source_missing")
                    return
            else:  # collMod, convertToCapped, emptycapped: the command as logged
                self._target.run_command(database, command)
        except pymongo_errors.PyMongoError as exc:
            self._fail(top, entry, server_cause(exc))
        self._count("c")

    def _flush(self):
        """Write the pending CRUD window: one bulk per namespace, or op by op after a write error."""
        window = self._window
        if not window:
            return
        self._window = CrudWindow()
        first = window.items[0]
        try:
            fetched = self._prefetch(window)
        except pymongo_errors.PyMongoError as exc:
            self._fail(first.top, first.entry, server_cause(exc))
        states, steps, missing, failure = window.resolve(fetched)
        if failure is not None:
            self._write_steps(window, steps)  # what came before the bad op, in order
            index, exc = failure
            item = window.items[index]
            self._fail(item.top, item.entry, "the update cannot be applied (%s)" % exc,
                       self._last_top_before(window, index))
        try:
            self._write_final(window, states)
        except pymongo_errors.BulkWriteError:
            # An unordered bulk can trip over a unique index that the original order never did;
            # writing each op's own result in oplog order reproduces that order exactly.
            self._write_steps(window, steps)
        except pymongo_errors.PyMongoError as exc:
            self._fail(first.top, first.entry, server_cause(exc))
        if missing:
            self._skip("update_missing_document", len(missing))
        for index, _state in steps:
            self._count(window.items[index].entry["op"])
        self._applied_ts = self._handed_ts
        if self._progress:
            self._progress(self.result())

    def _prefetch(self, window):
        fetched = {}
        for namespace, ids in window.ids_to_fetch().items():
            for start in range(0, len(ids), self.batch_size):
                for document in self._target.fetch(namespace, ids[start:start + self.batch_size]):
                    fetched[(namespace, hashable_key(document["_id"]))] = document
        return fetched

    def _write_final(self, window, states):
        inserted = {}  # did the window's first op on the document insert it?
        for item in window.items:
            inserted.setdefault(item.key, item.entry["op"] == "i")
        per_namespace = OrderedDict()
        for item, state in states.values():
            per_namespace.setdefault(item.namespace, []).append(Write(item.id_value, state, inserted[item.key]))
        for namespace, writes in per_namespace.items():
            self._target.write(namespace, writes, ordered=False)

    def _write_steps(self, window, steps):
        """Each op's result in oplog order, runs of one namespace as one ordered bulk."""
        position = 0
        while position < len(steps):
            namespace = window.items[steps[position][0]].namespace
            end = position
            while end < len(steps) and window.items[steps[end][0]].namespace == namespace:
                end += 1
            run = steps[position:end]
            try:
                writes = [Write(window.items[i].id_value, state, window.items[i].entry["op"] == "i") for i, state in run]
                self._target.write(namespace, writes, ordered=True)
            except pymongo_errors.PyMongoError as exc:
                failed = run[0][0]
                if isinstance(exc, pymongo_errors.BulkWriteError):
                    errors = exc.details.get("writeErrors") or [{}]
                    failed = run[min(errors[0].get("index", 0), len(run) - 1)][0]
                item = window.items[failed]
                self._fail(item.top, item.entry, server_cause(exc), self._last_top_before(window, failed))
            position = end

    def _last_top_before(self, window, index):
        """The ts of the last top-level entry whose ops in the window all precede ``index``."""
        failing = window.items[index].top
        for item in reversed(window.items[:index]):
            if item.top.seq != failing.seq:
                return item.top.ts
        return self._applied_ts

    # -- errors --------------------------------------------------------------------

    def _note_seen(self, ts):
        if ts is None:
            return
        if self._seen[0] is None:
            self._seen[0] = ts
        self._seen[1] = ts

    def _fail(self, top, entry, cause, last_applied=_UNSET):
        """Raise ReplayError for ``entry``; pending window writes go out first when possible."""
        if last_applied is _UNSET:
            self._flush_quietly()
            last_applied = self._applied_ts
        self._applied_ts = last_applied
        where = ts_text(top.ts) if top.ts is not None else "(none)"
        done = ("entries up to %s were applied" % ts_text(last_applied) if last_applied is not None
                else "no entry was applied")
        message = "replay stopped at oplog entry op=%s ns=%s ts=%s: %s; %s; %s" % (
            entry.get("op"), entry.get("ns"), where, cause, done, RETRY_HINT)
        result = self.result()
        raise ReplayError(message, op=entry.get("op"), namespace=entry.get("ns"), ts=ts_text(top.ts),
                          last_applied=ts_text(last_applied), applied=result["applied"],
                          skipped=result["skipped"], transactions=result["transactions"],
                          mode_used=result["mode_used"])

    def _flush_quietly(self):
        """Before reporting a failure: write what came earlier; its own failure is reported instead."""
        if self._window:
            self._flush()


# --------------------------------------------------------------------------- index builds
