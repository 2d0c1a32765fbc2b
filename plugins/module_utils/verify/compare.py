# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Comparing one restored collection with what the backup says it holds.

Each check returns the differences as short phrases ("content hash differs", "index a_1 missing");
an empty list means it matched. Index specs and collection options are compared as documents whose
field order does not matter (except inside an index key, where it does), with 1, 1.0 and Int64(1)
equal, and without the fields a server chooses for itself (an index's ``v`` and ``ns``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.content_hash import ContentHash
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog.index_catalog import BUILD_DROPPED_FIELDS

ID_INDEX = "_id_"


def read_content(client, db, collection):
    """(documents, content hash) of a collection, read raw from the server (same hash as the dump's)."""
    digest = ContentHash()
    cursor = client[db][collection].find_raw_batches()
    try:
        for batch in cursor:
            digest.update(batch)
    finally:
        cursor.close()
    return digest.documents, digest.hexdigest()


def _plain(value):
    """A value with 1, 1.0 and Int64(1) alike and its sub-documents as dicts, for order-free comparison."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        number = float(value)
        return int(number) if number.is_integer() else number
    if isinstance(value, dict):
        return dict((key, _plain(item)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _index_form(spec):
    """An index spec as compared: key as ordered pairs, the other options order-free."""
    form = dict((key, _plain(value)) for key, value in spec.items()
                if key not in BUILD_DROPPED_FIELDS and key != "key")
    form["key"] = [(field, _plain(direction)) for field, direction in (spec.get("key") or {}).items()]
    return form


def _field_differences(expected, actual, noun):
    problems = []
    for field in sorted(set(expected) | set(actual)):
        if field not in actual:
            problems.append("%s %s missing (the backup has %r)" % (noun, field, expected[field]))
        elif field not in expected:
            problems.append("%s %s=%r not in the backup" % (noun, field, actual[field]))
        elif expected[field] != actual[field]:
            problems.append("%s %s is %r, the backup has %r" % (noun, field, actual[field], expected[field]))
    return problems


def index_differences(expected_specs, actual_specs):
    """What differs between the backup's index specs and the restored ones (the _id index aside)."""
    expected = dict((spec["name"], _index_form(spec)) for spec in expected_specs if spec.get("name") != ID_INDEX)
    actual = dict((spec["name"], _index_form(spec)) for spec in actual_specs if spec.get("name") != ID_INDEX)
    problems = []
    for name in sorted(set(expected) | set(actual)):
        if name not in actual:
            problems.append("index %s missing" % name)
        elif name not in expected:
            problems.append("index %s not in the backup" % name)
        else:
            problems.extend(_field_differences(expected[name], actual[name], "index %s:" % name))
    return problems


def option_differences(expected_options, actual_options):
    """What differs between the backup's collection options and the restored collection's."""
    return _field_differences(_plain(dict(expected_options or {})), _plain(dict(actual_options or {})), "option")


def describe_failure(namespace, problems):
    """``"shop.orders: 999 documents restored, the backup holds 1000; content hash differs"``."""
    return "%s: %s" % (namespace, "; ".join(problems))
