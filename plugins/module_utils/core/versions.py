# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Server-version rules, defined once: parsing a version and what changes with it."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

_VERSION_RE = re.compile(r"^\s*r?(\d+)\.(\d+)(?:\.(\d+))?")

# Servers from 8.3 on dump timeseries collections as themselves ("viewless"); older ones keep
# their data in system.buckets.<name>, which is where mongodump reads and writes it.
VIEWLESS_TIMESERIES_VERSION = (8, 3)
BUCKETS_PREFIX = "system.buckets."


def parse_server_version(version):
    """(major, minor, patch) from "5.0.0-rc0", a versionArray list or a tuple; None if unknown."""
    if isinstance(version, (list, tuple)):
        numbers = [int(part) for part in version[:3]]
        return tuple(numbers + [0] * (3 - len(numbers))) if len(numbers) >= 2 else None
    match = _VERSION_RE.match(version or "")
    if not match:
        return None
    return tuple(int(part or 0) for part in match.groups())


def timeseries_uses_buckets(server_version):
    """True when a server of this version keeps timeseries data in system.buckets.<name>.

    An unknown version counts as old: every server that has timeseries and reports no usable
    version predates viewless timeseries.
    """
    parsed = parse_server_version(server_version)
    return parsed is None or parsed[:2] < VIEWLESS_TIMESERIES_VERSION


def data_collection_name(collection, coll_type, server_version):
    """The collection a namespace's documents are stored under in a dump of that server."""
    if coll_type == "timeseries" and timeseries_uses_buckets(server_version):
        return BUCKETS_PREFIX + collection
    return collection


# A mongos takes a cluster-wide fsync lock (every shard and the config server) from 7.1, and in
# these patch releases of older series; other series never do.
CLUSTER_FSYNC_LOCK_SINCE = (7, 1, 0)
CLUSTER_FSYNC_LOCK_BACKPORTS = {(7, 0): (7, 0, 2), (6, 0): (6, 0, 11), (5, 0): (5, 0, 22)}
CLUSTER_FSYNC_LOCK_NEEDED = "7.1 or newer, 7.0.2+, 6.0.11+ or 5.0.22+"


def mongos_supports_fsync_lock(server_version):
    """True when a mongos of this version can fsync-lock the whole cluster; unknown counts as no."""
    parsed = parse_server_version(server_version)
    if parsed is None:
        return False
    if parsed >= CLUSTER_FSYNC_LOCK_SINCE:
        return True
    backport = CLUSTER_FSYNC_LOCK_BACKPORTS.get(parsed[:2])
    return backport is not None and parsed >= backport
