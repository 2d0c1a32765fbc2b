# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What replay does with each kind of oplog entry: what it skips, how entries are reduced for applyOps, how a server's refusal is read."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

try:
    from pymongo import errors as pymongo_errors
except ImportError:  # pragma: no cover - reported by the module wrapper
    pymongo_errors = None
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.bsonio import bson
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import server_codes
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.namespaces import (
    KEPT_CONFIG_COLLECTIONS)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection.client import (
    driver_error_cause, is_timeout)


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


# Skip reasons that leave a write of the source undone (the others are entries with nothing to
# do): reported as ``not_applied``, and a restore with any fails unless the user accepts them.
NOT_APPLIED_REASONS = ("system_collection",)


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


def transaction_key(entry):
    """The identity of the transaction a transaction entry belongs to: its session and number.

    Every shard a distributed transaction touches logs it under the same key.
    """
    return hashable_key(entry["lsid"]), int(entry["txnNumber"])


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
