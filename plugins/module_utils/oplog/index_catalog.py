# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The index catalog a restore builds after data and replay: dump metadata plus the oplog's index commands."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

try:
    from pymongo import errors as pymongo_errors
except ImportError:  # pragma: no cover - reported by the module wrapper
    pymongo_errors = None
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import ReplayError
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog.rules import server_cause
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog.writes import MongoTarget


def _normalized_key(key):
    """Index key for comparison: 1, 1.0 and Int64(1) are the same direction."""
    items = []
    for field, value in (key or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
        items.append((field, value))
    return tuple(items)


def index_matches(spec, which):
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


def find_index(catalog, change):
    if "name" in change:
        return catalog.get(change["name"])
    for spec in catalog.values():
        if "keyPattern" in change and _normalized_key(spec.get("key")) == _normalized_key(change["keyPattern"]):
            return spec
    return None


def modify_index(spec, change):
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
