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
from collections import OrderedDict, namedtuple

try:
    import bson
    from bson.codec_options import CodecOptions
    AS_DICT = CodecOptions(document_class=dict)
except ImportError:  # pragma: no cover - reported by the module wrapper
    bson = CodecOptions = AS_DICT = None

try:
    from pymongo import DeleteOne, InsertOne, ReplaceOne
    from pymongo import errors as pymongo_errors
except ImportError:  # pragma: no cover - reported by the module wrapper
    DeleteOne = InsertOne = ReplaceOne = pymongo_errors = None

from ansible_collections.dbops.mongodb_backup.plugins.module_utils import errors
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import server_codes
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.archive import (
    ArchiveReader, OPLOG_COLLECTION, OPLOG_DB, open_archive_for_read)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.bsonio import (
    CORRUPT_HINT, MAX_OPLOG_ENTRY_SIZE, iter_raw_documents, open_maybe_gzip)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.namespaces import (
    KEPT_CONFIG_COLLECTIONS, split_namespace as _split_namespace)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import (
    FormatError, InvalidOption, ReplayError)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection.client import driver_error_cause, is_timeout
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import diff
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.timestamps import (
    before_limit, ts_text)

MODES = ("auto", "applyops", "crud")
DEFAULT_BATCH_SIZE = 1000
WRITE_CHUNK = 90  # statements per write command (see MongoTarget.write)

RECORD_ID_OPS = frozenset(("cd", "ci", "cu", "km"))
IGNORED_COMMANDS = frozenset(("startIndexBuild", "abortIndexBuild", "setMultikeyMetadata", "dropIdent"))
CATALOG_ADD_COMMANDS = frozenset(("createIndexes", "commitIndexBuild"))
CATALOG_DROP_COMMANDS = frozenset(("dropIndexes", "deleteIndexes", "dropIndex", "deleteIndex"))
KNOWN_COMMANDS = frozenset((
    "renameCollection", "dropDatabase", "applyOps", "dbCheck", "create", "convertToCapped",
    "emptycapped", "drop", "collMod")) | IGNORED_COMMANDS | CATALOG_ADD_COMMANDS | CATALOG_DROP_COMMANDS
FCV_TIMESERIES_COMMAND = "upgradeDowngradeViewlessTimeseries"
TRANSACTION_FIELDS = ("applyOps", "commitTransaction", "abortTransaction")
# What survives mongo-tools' re-encoding of an entry before it is sent to applyOps.
APPLYOPS_FIELDS = ("ts", "t", "v", "op", "ns", "o", "o2", "ui", "lsid", "txnNumber", "prevOpTime",
                   "multiOpType")
COLLMOD_DROPPED_OPTIONS = ("noPadding", "usePowerOf2Sizes")  # rejected by servers >= 4.1.11
# Servers refuse ordinary writes to these; user and role changes need their own commands.
CRUD_UNWRITABLE = frozenset(("admin.system.users", "admin.system.roles", "admin.system.version"))

# Answers meaning "applyOps is not available here", not "this entry is wrong":
# Unauthorized, CommandNotFound, CommandNotSupported, NotImplemented, AtlasError.
APPLYOPS_UNAVAILABLE_CODES = frozenset((server_codes.UNAUTHORIZED, server_codes.COMMAND_NOT_FOUND,
                                        server_codes.COMMAND_NOT_SUPPORTED, 238, 8000))  # 238: NotImplemented, 8000: Atlas
APPLYOPS_UNAVAILABLE_WORDS = ("not allowed", "no such command", "not supported", "unsupported",
                              "not implemented", "not authorized")
RETRY_HINT = "fix the cause and replay again from the same oplog (replay is idempotent)"
# Skip reasons that leave a write of the source undone (the others are entries with nothing to
# do): reported as ``not_applied``, and a restore with any fails unless the user accepts them.
NOT_APPLIED_REASONS = ("system_collection",)


class _Deleted:
    """The pending state of a document that the window deleted."""

    def __repr__(self):
        return "DELETED"


DELETED = _Deleted()
_UNSET = object()  # "not given", where None is a meaningful value


# --------------------------------------------------------------------------- entry rules

def command_name(entry):
    """The command of an ``op: c`` entry: the first field of ``o``."""
    command = entry.get("o")
    if isinstance(command, dict) and command:
        return next(iter(command))
    return ""


def skip_reason(entry):
    """Why replay ignores this entry (a short reason), or None when it must be handled."""
    op = entry.get("op")
    if op == "n":
        return "noop"
    if op in RECORD_ID_OPS:
        return "replicated_record_id"
    namespace = entry.get("ns") or ""
    if namespace.startswith("__mdb_internal"):
        return "internal_namespace"
    if namespace.startswith("config.") and namespace[len("config."):] not in KEPT_CONFIG_COLLECTIONS:
        return "config_namespace"
    if op == "c" and command_name(entry) in IGNORED_COMMANDS:
        return "ignored_command"
    return None


def is_transaction_entry(entry):
    """A command with lsid and txnNumber that carries transaction work (not a vectored insert)."""
    if entry.get("op") != "c" or "lsid" not in entry or "txnNumber" not in entry:
        return False
    if entry.get("multiOpType") == 1:
        return False
    command = entry.get("o")
    return isinstance(command, dict) and any(field in command for field in TRANSACTION_FIELDS)


def strip_uuids(entry):
    """A copy without ``ui``, also inside nested applyOps (the target has its own UUIDs)."""
    result = dict((k, v) for k, v in entry.items() if k != "ui")
    command = result.get("o")
    if result.get("op") == "c" and isinstance(command, dict) and isinstance(command.get("applyOps"), list):
        inner = [strip_uuids(op) if isinstance(op, dict) else op for op in command["applyOps"]]
        result["o"] = dict(command, applyOps=inner)
    return result


def reduce_for_applyops(entry):
    """Only the fields mongorestore's Oplog type keeps (h, wall, stmtId... are dropped)."""
    return dict((field, entry[field]) for field in APPLYOPS_FIELDS if field in entry)


def _is_ferretdb_full_image(entry):
    """FerretDB logs every update as ``{$v: 1, $set: <whole post-image>}`` and gives its oplog
    entries an ``_id`` (MongoDB's have none). Applied as a $set, such an entry would keep the
    fields the update removed, so it is applied as the replacement it really is."""
    update = entry.get("o")
    if entry.get("op") != "u" or "_id" not in entry or not isinstance(update, dict):
        return False
    if set(update) != {"$v", "$set"} or update.get("$v") != 1 or not isinstance(update["$set"], dict):
        return False
    target = entry.get("o2")
    return isinstance(target, dict) and "_id" in update["$set"] and hashable_key(update["$set"]["_id"]) == hashable_key(target.get("_id"))


def rewrite_entry(entry, preserve_uuid=False):
    """The entry as it is applied: UUIDs stripped, create and FerretDB updates normalised."""
    result = dict(entry) if preserve_uuid else strip_uuids(entry)
    if _is_ferretdb_full_image(result):
        result["o"] = result["o"]["$set"]
    if result.get("op") == "c" and command_name(result) == "create" and "recordIdsReplicated" in result["o"]:
        result["o"] = dict((k, v) for k, v in result["o"].items() if k != "recordIdsReplicated")
    return result


def hashable_key(value):
    """A hashable identity for an _id, equal exactly when the BSON values are equal."""
    return bson.encode({"_id": value})


def document_id(entry):
    """(found, _id) of the document a CRUD entry changes."""
    if entry.get("op") == "u":
        holder = entry.get("o2") if isinstance(entry.get("o2"), dict) else entry.get("o")
    else:
        holder = entry.get("o")  # a sharded delete may carry the shard key too: _id is enough
    if isinstance(holder, dict) and "_id" in holder:
        return True, holder["_id"]
    return False, None


def server_cause(exc):
    """A short cause for a driver error: code, name and the server's message."""
    if is_timeout(exc):
        return driver_error_cause(exc)
    if isinstance(exc, pymongo_errors.BulkWriteError):
        errors = exc.details.get("writeErrors") or []
        if errors:
            first = errors[0]
            return "write error %s: %s" % (first.get("code"), first.get("errmsg"))
    if isinstance(exc, pymongo_errors.OperationFailure):
        details = exc.details or {}
        return "server error %s (%s): %s" % (exc.code, details.get("codeName", "?"),
                                             details.get("errmsg", str(exc)))
    return "%s: %s" % (type(exc).__name__, exc)


def rerun_outcome(entry, exc):
    """What an error means when an earlier replay of the same oplog got here first: "applied"
    (nothing left to do), a skip reason, or None for a real failure."""
    code = getattr(exc, "code", None)
    name = command_name(entry) if entry.get("op") == "c" else ""
    if name == "create" and code == server_codes.NAMESPACE_EXISTS:
        return "applied"
    if name == "renameCollection" and code == server_codes.NAMESPACE_NOT_FOUND:
        return "rename_source_missing"
    return None


def applyops_unavailable(exc):
    """True when the server refuses applyOps itself rather than the entry we sent."""
    if not isinstance(exc, pymongo_errors.OperationFailure):
        return False
    if exc.code in APPLYOPS_UNAVAILABLE_CODES:
        return True
    message = str((exc.details or {}).get("errmsg", exc)).lower()
    return any(words in message for words in APPLYOPS_UNAVAILABLE_WORDS)


# --------------------------------------------------------------------------- reading oplogs

def decode_entries(raw_documents, source_name):
    """Decode raw oplog entries into dicts that keep field order."""
    for number, raw in enumerate(raw_documents, 1):
        try:
            yield bson.decode(raw, codec_options=AS_DICT)
        except Exception as exc:  # bson raises several types for malformed input
            raise FormatError("oplog %s: entry #%d is not valid BSON (%s); %s"
                              % (source_name, number, exc, CORRUPT_HINT), path=source_name)


def iter_oplog_file(path):
    """Entries of an oplog.bson (gzip sniffed), each up to 16 MiB + 16 KiB as mongorestore allows."""
    with open_maybe_gzip(path) as handle:
        yield from decode_entries(iter_raw_documents(handle, path, MAX_OPLOG_ENTRY_SIZE), path)


def iter_archive_oplog(path):
    """Entries of the oplog namespace (db "", collection "oplog") of a mongodump archive."""
    with open_archive_for_read(path) as handle:
        reader = ArchiveReader(handle, path, max_size=MAX_OPLOG_ENTRY_SIZE)
        raws = (raw for db, coll, raw in reader.iter_documents()
                if db == OPLOG_DB and coll == OPLOG_COLLECTION)
        yield from decode_entries(raws, "%s (oplog)" % path)


# --------------------------------------------------------------------------- the target

class Write(namedtuple("Write", "id_value state inserted")):
    """One document's state to write: a document, or DELETED; ``inserted`` when the window
    inserted the document (so it most likely does not exist on the target yet)."""

    __slots__ = ()


def _selector(id_value):
    # $eq only where the _id is a document, which may hold $-keys.
    return {"_id": {"$eq": id_value}} if isinstance(id_value, dict) else {"_id": id_value}


def _write_request(write):
    if write.state is DELETED:
        return DeleteOne(_selector(write.id_value))
    if write.inserted:
        return InsertOne(write.state)
    return ReplaceOne(_selector(write.id_value), write.state, upsert=True)


def _existing_id(error, request):
    """True when an insert failed only because a document with its _id exists."""
    if error.get("code") != server_codes.DUPLICATE_KEY or not isinstance(request, InsertOne):
        return False
    pattern = error.get("keyPattern")
    return pattern is None or list(pattern) == ["_id"]


class MongoTarget:
    """The server side of the replay, through pymongo. Tests may pass another object with
    the same methods as ``OplogReplayer(target=...)``."""

    def __init__(self, client, bypass_document_validation=False):
        self._client = client
        self._bypass = bool(bypass_document_validation)

    def _collection(self, namespace):
        database, collection = _split_namespace(namespace)
        return self._client[database].get_collection(collection, codec_options=AS_DICT)

    def apply_ops(self, entry):
        command = OrderedDict([("applyOps", [entry]), ("bypassDocumentValidation", self._bypass)])
        self._client.admin.command(command, codec_options=AS_DICT)

    def fetch(self, namespace, ids):
        return list(self._collection(namespace).find({"_id": {"$in": ids}}))

    def write(self, namespace, writes, ordered=False):
        """Apply ``writes`` (``Write`` tuples, final states) to one namespace, no query first.

        A document the window inserted is inserted: much cheaper than an upsert, and when its _id
        exists already (the dump or an earlier replay holds it) it is replaced instead. Other
        states are replacements with upsert, deletions plain deletes. A BulkWriteError's indexes
        refer to ``writes``.
        """
        collection = self._collection(namespace)
        requests = [_write_request(write) for write in writes]
        # Small bulks: FerretDB 1.x deadlocks on an update command of 100 or more statements.
        for start in range(0, len(requests), WRITE_CHUNK):
            chunk = list(range(start, min(start + WRITE_CHUNK, len(requests))))
            self._bulk_write(collection, writes, requests, chunk, ordered)

    def _bulk_write(self, collection, writes, requests, positions, ordered):
        """Send ``requests[p] for p in positions``; inserts that hit their own _id become replacements."""
        while positions:
            try:
                # None, not False: some compatible servers reject an explicit bypassDocumentValidation
                collection.bulk_write([requests[p] for p in positions], ordered=ordered,
                                      bypass_document_validation=self._bypass or None)
                return
            except pymongo_errors.BulkWriteError as exc:
                errors = exc.details.get("writeErrors") or []
                failed = [positions[error.get("index", 0)] for error in errors]
                if not errors or not all(_existing_id(error, requests[p]) for error, p in zip(errors, failed)):
                    for error, position in zip(errors, failed):
                        error["index"] = position
                    raise
                for position in failed:
                    requests[position] = ReplaceOne(_selector(writes[position].id_value), writes[position].state,
                                                    upsert=True)
                # unordered: the others went through; ordered: the bulk stopped at its first failure
                positions = positions[positions.index(failed[0]):] if ordered else failed

    def create_collection(self, database, command):
        """Run a create command; False when the collection already exists."""
        try:
            self._client[database].command(command)
        except pymongo_errors.OperationFailure as exc:
            if exc.code == server_codes.NAMESPACE_EXISTS:
                return False
            raise
        return True

    def drop_collection(self, database, collection):
        self._client[database].drop_collection(collection)

    def drop_database(self, database):
        self._client.drop_database(database)

    def rename_collection(self, source, target, drop_target):
        """Rename; False when the source does not exist (already renamed by an earlier replay)."""
        command = OrderedDict([("renameCollection", source), ("to", target), ("dropTarget", drop_target)])
        try:
            self._client.admin.command(command)
        except pymongo_errors.OperationFailure as exc:
            if exc.code == server_codes.NAMESPACE_NOT_FOUND:
                return False
            raise
        return True

    def run_command(self, database, command):
        self._client[database].command(command)

    def list_indexes(self, namespace):
        return list(self._collection(namespace).list_indexes())

    def drop_index(self, namespace, name):
        database, collection = _split_namespace(namespace)
        try:
            self._client[database].command(OrderedDict([("dropIndexes", collection), ("index", name)]))
        except pymongo_errors.OperationFailure as exc:
            if exc.code not in (server_codes.INDEX_NOT_FOUND, server_codes.NAMESPACE_NOT_FOUND):
                raise

    def create_index(self, namespace, spec):
        database, collection = _split_namespace(namespace)
        self._client[database].command(OrderedDict([("createIndexes", collection), ("indexes", [spec])]))


# --------------------------------------------------------------------------- crud window

class _Item:
    """One CRUD op of the window: the op itself and the top-level entry it came from."""

    __slots__ = ("top", "entry", "namespace", "key", "id_value")

    def __init__(self, top, entry, id_value):
        self.top = top
        self.entry = entry
        self.namespace = entry["ns"]
        self.key = (entry["ns"], hashable_key(id_value))
        self.id_value = id_value


class CrudWindow:
    """Consecutive CRUD ops resolved in memory, in oplog order, into one state per document.

    Only updates in diff or modifier form need the current document. The first op of the window
    that touches a document decides: when it is such an update, the document is fetched (all of
    them in one query per namespace); otherwise the op itself gives the state. Later ops on that
    document then apply to the pending state, so per-document order is kept and the final state
    equals applying the ops one by one.
    """

    def __init__(self):
        self.items = []

    def __len__(self):
        return len(self.items)

    def add(self, top, entry, id_value):
        self.items.append(_Item(top, entry, id_value))

    def ids_to_fetch(self):
        """{namespace: [_id, ...]} of documents whose first op in the window is an update by diff."""
        seen, wanted = set(), OrderedDict()
        for item in self.items:
            if item.key in seen:
                continue
            seen.add(item.key)
            if item.entry["op"] == "u" and "_id" not in item.entry["o"]:
                wanted.setdefault(item.namespace, []).append(item.id_value)
        return wanted

    def resolve(self, fetched):
        """Apply the window to ``fetched`` ({key: document}) in memory.

        Returns (states, steps, missing, failure): ``states`` {key: (item, state)} the final state
        per document in order of first touch; ``steps`` [(index, state)] each op's own result;
        ``missing`` indexes of updates whose document does not exist; ``failure`` (index, error)
        for an update that cannot be applied (resolution stops there).
        """
        states, steps, missing = OrderedDict(), [], []
        for index, item in enumerate(self.items):
            op, update = item.entry["op"], item.entry.get("o")
            if op == "i":
                state = update
            elif op == "d":
                state = DELETED
            elif "_id" in update:
                state = update  # a replacement upserts, whatever existed
            else:
                base = states[item.key][1] if item.key in states else fetched.get(item.key)
                if base is None or base is DELETED:
                    if not item.entry.get("b"):
                        # The document is gone on the target: a later entry of this oplog deletes or
                        # recreates it (the source logged this update before that), so the final
                        # state does not depend on it. Applying it to nothing would invent a document.
                        missing.append(index)
                        continue
                    base = {"_id": item.id_value}  # b: true is an upsert
                try:
                    state = diff.apply_update(base, update)
                except errors.DiffError as exc:
                    return states, steps, missing, (index, exc)
            states[item.key] = (item, state)
            steps.append((index, state))
        return states, steps, missing, None


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
    ``skip_repeated``: the entries come from a real oplog, in timestamp order (a backup's oplog and
    archived slices): an entry whose ts is not newer than the last one handed over is a repeat (slices
    share their boundary entry; overlapping slices share more) and is skipped, counted as
    ``repeated_entry``, never applied twice. Hand-made streams that reuse timestamps leave it off.
    """

    def __init__(self, client, mode="auto", limit=None, bypass_document_validation=False,
                 preserve_uuid=False, batch_size=DEFAULT_BATCH_SIZE, progress=None,
                 index_catalog=None, target=None, skip_repeated=False):
        if mode not in MODES:
            raise InvalidOption("oplog replay mode %r is unknown; use one of %s" % (mode, ", ".join(MODES)))
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidOption("oplog replay batch size must be a positive integer, got %r" % (batch_size,))
        self.mode = mode
        self.limit = limit
        self.skip_repeated = bool(skip_repeated)
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
        key = (hashable_key(entry["lsid"]), int(entry["txnNumber"]))
        if "abortTransaction" in command:
            self._transactions.pop(key, None)
            self._counts["aborted"] += 1
            return
        ops = self._transactions.setdefault(key, [])
        if "applyOps" in command:
            ops.extend(command["applyOps"])
            if command.get("partialTxn") or command.get("prepare"):
                return  # more entries of this transaction follow
        del self._transactions[key]
        for op in ops:
            self._handle(op, top)
        self._counts["committed"] += 1

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
        for index_name in [n for n, spec in catalog.items() if _index_matches(spec, which)]:
            del catalog[index_name]
        self._flush()
        try:
            for spec in self._target.list_indexes(namespace):
                if spec.get("name") != "_id_" and _index_matches(spec, which):
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
            spec = _find_index(self.index_catalog.get(namespace, {}), change)
            if spec is not None:  # otherwise the index exists only on the target: the server changes it
                _modify_index(spec, change)
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


def _normalized_key(key):
    """Index key for comparison: 1, 1.0 and Int64(1) are the same direction."""
    items = []
    for field, value in (key or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
        items.append((field, value))
    return tuple(items)


def _index_matches(spec, which):
    """Does a dropIndexes ``index`` value (name, "*", key pattern or list of names) name ``spec``?"""
    if which == "*":
        return spec.get("name") != "_id_"
    if isinstance(which, str):
        return spec.get("name") == which
    if isinstance(which, list):
        return spec.get("name") in which
    if isinstance(which, dict):
        return _normalized_key(spec.get("key")) == _normalized_key(which)
    return False


def _find_index(catalog, change):
    if "name" in change:
        return catalog.get(change["name"])
    for spec in catalog.values():
        if "keyPattern" in change and _normalized_key(spec.get("key")) == _normalized_key(change["keyPattern"]):
            return spec
    return None


def _modify_index(spec, change):
    """collMod index options on a catalog spec, as the server would change the index."""
    for option, value in change.items():
        if option in ("name", "keyPattern"):
            continue
        if option == "forceNonUnique":
            if value:
                spec.pop("unique", None)
        elif option == "hidden" and not value:
            spec.pop("hidden", None)
        elif option == "expireAfterSeconds":
            # collMod logs an int64; an index spec holds an int32, as createIndexes writes it
            spec[option] = int(value)
        else:
            spec[option] = value


# --------------------------------------------------------------------------- index builds

# The target picks its own index version (FerretDB even rejects the field); "ns" and
# "background" are leftovers of old servers.
BUILD_DROPPED_FIELDS = ("v", "ns", "background")


def _buildable_spec(spec):
    return dict((k, v) for k, v in spec.items() if k not in BUILD_DROPPED_FIELDS)


def build_indexes(client, index_catalog, target=None):
    """Create the catalog's indexes after a replay, skipping those whose key already exists.

    Returns {"created": n, "existing": n}. Raises ReplayError naming the index that failed.
    """
    target = target if target is not None else MongoTarget(client)
    counts = {"created": 0, "existing": 0}
    for namespace, specs in index_catalog.items():
        try:
            present = set(_normalized_key(spec.get("key")) for spec in target.list_indexes(namespace))
        except pymongo_errors.PyMongoError as exc:
            raise ReplayError("cannot list the indexes of %s: %s; check the connection and rerun the "
                              "index build" % (namespace, server_cause(exc)), namespace=namespace, **counts)
        for name, spec in specs.items():
            key = _normalized_key(spec.get("key"))
            if key in present or key == (("_id", 1.0),):
                counts["existing"] += 1
                continue
            try:
                target.create_index(namespace, _buildable_spec(spec))
            except pymongo_errors.PyMongoError as exc:
                raise ReplayError("building index %s on %s failed: %s; the documents are restored, fix "
                                  "the cause (for example duplicate keys for a unique index) and build the "
                                  "index again" % (name, namespace, server_cause(exc)),
                                  namespace=namespace, index=name, **counts)
            present.add(key)
            counts["created"] += 1
    return counts
