# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How replay writes to a server: one document's final state per window, sent as bulk writes by MongoTarget."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from collections import OrderedDict, namedtuple

try:
    from pymongo import DeleteOne, InsertOne, ReplaceOne
    from pymongo import errors as pymongo_errors
except ImportError:  # pragma: no cover - reported by the module wrapper
    DeleteOne = InsertOne = ReplaceOne = pymongo_errors = None
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.bsonio import AS_DICT
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import server_codes
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.namespaces import (
    split_namespace as _split_namespace)


WRITE_CHUNK = 90  # statements per write command (see MongoTarget.write)


class _Deleted:
    """The pending state of a document that the window deleted."""

    def __repr__(self):
        return "DELETED"


DELETED = _Deleted()


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
