# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a dump will hold: the namespaces, their metadata and batch sizes, gathered before any data is read."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import uuid

try:
    from bson import json_util
    from bson.binary import Binary
    from pymongo import errors as pymongo_errors
except ImportError:  # pragma: no cover - reported by the module wrapper
    pass

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import dump_metadata
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.versions import data_collection_name
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.namespaces import (
    KEPT_CONFIG_COLLECTIONS, join_namespace, matches_any)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import NamespaceNotFound


# The prelude and archive header record it: how a restore recognises a backup of ours.
USERS_AND_ROLES = (("$admin.system.users", "system.users", True),
                   ("$admin.system.roles", "system.roles", True),
                   ("$admin.system.version", "system.version", False))


# A server batch may reach 16 MB and the driver holds a few copies of it while we write it;
# asking for batches of about this many bytes keeps memory bounded with 4 collections at once.
TARGET_BATCH_BYTES = 4 * 1024 * 1024


class NamespacePlan:
    """One namespace to dump: where its data comes from and the metadata to record."""

    def __init__(self, db, name, coll_type, options, indexes, uuid_hex, source_db, source_name,
                 query=None, estimated_bytes=0, estimated_count=0):
        self.db = db
        self.name = name
        self.type = coll_type
        self.options = options
        self.indexes = indexes
        self.uuid_hex = uuid_hex
        self.source_db = source_db
        self.source_name = source_name  # None: metadata only (views)
        self.query = query
        self.estimated_bytes = estimated_bytes
        self.estimated_count = estimated_count

    @property
    def namespace(self):
        return "%s.%s" % (self.db, self.name)

    @property
    def batch_size(self):
        """Documents per server batch for about TARGET_BATCH_BYTES, from the average size."""
        if not self.estimated_count or not self.estimated_bytes:
            return None
        average = max(1, self.estimated_bytes // self.estimated_count)
        return max(1, min(100000, TARGET_BATCH_BYTES // average))

    @property
    def data_name(self):
        """The collection name data is stored under (timeseries keep their buckets name)."""
        if self.type == "timeseries" and self.source_name != self.name:
            return self.source_name
        return self.name

    def metadata_json(self):
        return dump_metadata.metadata_to_json(self.options, self.indexes, self.uuid_hex, self.name,
                                              self.type or "")

    def describe(self):
        return {"namespace": self.namespace, "db": self.db, "collection": self.name,
                "type": self.type, "estimated_bytes": self.estimated_bytes,
                "estimated_documents": self.estimated_count}


def skip_system_namespace(db, name, requested_db):
    """mongodump's rules for what a dump leaves out (FORMATS.md, "Which namespaces are dumped")."""
    if db.startswith("__mdb_internal"):
        return True
    if db == "local" and requested_db != "local":
        return True
    if db == "admin" and name == "system.keys":
        return True
    if db == "config" and requested_db != "config" and name not in KEPT_CONFIG_COLLECTIONS:
        return True
    if name.startswith("system.") and db != "admin" and name != "system.js":
        return True
    return "$" in name


def _uuid_hex(info):
    value = (info or {}).get("uuid")
    if value is None:
        return None
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, Binary):
        return value.hex() if hasattr(value, "hex") else bytes(value).hex()
    return None


class Planner:
    """Lists what a dump will contain, with metadata gathered before any data is read."""

    def __init__(self, client, options, server):
        self.client = client
        self.options = options
        self.server = server

    def plan(self):
        databases = self._databases()
        plans = []
        for db in databases:
            plans.extend(self._plan_database(db))
        if self.options.db and self.options.dump_users_and_roles:
            plans.extend(self._users_and_roles(self.options.db))
        if not plans and not self.options.allow_empty:
            raise NamespaceNotFound(self._nothing_to_dump())
        return plans

    def _databases(self):
        if self.options.db:
            names = self.client.list_database_names()
            if self.options.db not in names and not self.options.allow_empty:
                raise NamespaceNotFound(
                    "database %r does not exist on %s (it has: %s); check db, or set "
                    "allow_empty: true to accept an empty backup" % (
                        self.options.db, self.server.get("address"), ", ".join(sorted(names)) or "none"))
            return [self.options.db]
        return sorted(self.client.list_database_names())

    def _nothing_to_dump(self):
        scope = self.options.db or "the deployment"
        if self.options.collection:
            scope = "%s.%s" % (self.options.db, self.options.collection)
            return ("collection %s does not exist on %s; check db and collection, or set "
                    "allow_empty: true to accept an empty backup" % (scope, self.server.get("address")))
        return ("nothing to dump in %s on %s after the namespace filters; check db, ns_include and "
                "ns_exclude, or set allow_empty: true to accept an empty backup"
                % (scope, self.server.get("address")))

    def _selected(self, db, name):
        if skip_system_namespace(db, name, self.options.db):
            return False
        namespace = join_namespace(db, name)
        if self.options.ns_include and not matches_any(self.options.ns_include, namespace):
            return False
        return not matches_any(self.options.ns_exclude, namespace)

    def _plan_database(self, db):
        database = self.client[db]
        filter_ = {"name": self.options.collection} if self.options.collection else {}
        plans = []
        for info in database.list_collections(filter=filter_):
            name = info["name"]
            coll_type = info.get("type", "collection")
            if not self._selected(db, name):
                continue
            plans.append(self._plan_collection(database, info, coll_type))
        return sorted(plans, key=lambda plan: plan.name)

    def _plan_collection(self, database, info, coll_type):
        name = info["name"]
        options = dict(info.get("options") or {})
        uuid_hex = _uuid_hex(info.get("info"))
        source_name = name
        if coll_type == "view":
            indexes, source_name, uuid_hex = [], None, None
        else:
            indexes = [dict(index) for index in database[name].list_indexes()]
            if coll_type == "timeseries":
                uuid_hex = None
                source_name = data_collection_name(name, coll_type, self.server.get("version_array"))
        size, count = self._estimate(database, source_name) if source_name else (0, 0)
        query = self.options.query if self.options.collection == name else None
        if query is not None and source_name and not self.options.allow_empty:
            self._check_query_matches(database, source_name, query)
        return NamespacePlan(database.name, name, coll_type, options, indexes, uuid_hex,
                             database.name, source_name, query=query,
                             estimated_bytes=size, estimated_count=count)

    def _check_query_matches(self, database, name, query):
        """A query that selects nothing makes an empty backup: refused unless allow_empty (as documented)."""
        if database[name].find_one(query, {"_id": 1}) is None:
            raise NamespaceNotFound(
                "the query %s matches no document in %s.%s on %s, so the backup would hold nothing; "
                "check the query, or set allow_empty: true to accept an empty backup"
                % (json_util.dumps(query), database.name, name, self.server.get("address")))

    @staticmethod
    def _estimate(database, name):
        try:
            stats = database.command("collStats", name)
            return int(stats.get("size", 0)), int(stats.get("count", 0))
        except pymongo_errors.OperationFailure:
            return 0, 0

    def _users_and_roles(self, db):
        admin = self.client.admin
        existing = set(admin.list_collection_names())
        plans = []
        for stored_name, source_name, filter_by_db in USERS_AND_ROLES:
            if source_name not in existing:
                continue
            indexes = [dict(index) for index in admin[source_name].list_indexes()]
            plans.append(NamespacePlan(db, stored_name, "collection", {}, indexes, None, "admin",
                                       source_name, query={"db": db} if filter_by_db else None))
        return plans
