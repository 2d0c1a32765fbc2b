# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A logical backup of a sharded cluster cut at one cluster time.

Flow: from the mongos, the shard map and the config server replica set (topology); the
balancer must be stopped (the role stops it and puts it back); every replica set, config
servers included, is dumped in parallel with its oplog (logical.dump, one worker per set); then
one cut T later than every dump's end (cluster.cut), every oplog waited up to T and captured from
its dump's end to T; last the cluster manifest listing every set's backup with its checksums.

On disk (built in ``<path>.partial``, renamed when complete, like every backup here)::

    <path>/manifest.json          the cluster manifest (kind "sharded", cluster.cut = T)
    <path>/config/                the config servers' dump (mongodump layout, own manifest)
    <path>/<shard>/               each shard's dump
    <path>/cut/<set>.bson[.gz]    each set's oplog from its dump's end up to T

Each set's dump plus its cut slice, replayed to T, is that set at T; together, the cluster at T.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os
import time
import uuid

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.cluster import cut as cut_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.cluster.balancer import (
    balancer_state, check_balancer_stopped)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.cluster.topology import (
    check_shard_uris, read_cluster, replica_set_connection)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import members
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.timestamps import (
    iso_time, timestamp_result, ts_key)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.workers import FailFastPool
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import (
    BackupError, ClusterError, InvalidOption)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import bsonio
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import dump_names
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import manifest as manifest_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical.backup_target import (
    LOCK_SUFFIX, Staging, check_backup_location)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical.dump import Dumper
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical.dump_options import (
    DumpOptions, check_label)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import locking
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import readers

CUT_DIR = "cut"
KIND = "sharded"


class ShardedBackupOptions:
    def __init__(self, path, label=None, compression=None, compression_level=None, num_parallel_collections=4,
                 dump_users_and_roles=False, shard_uris=None, shard_login_user=None, shard_login_password=None,
                 prefer_secondary=True, cut_timeout=60, lock_timeout=60, force=False):
        if not path:
            raise InvalidOption("path is required: the directory the cluster backup is written to")
        self.target = os.path.abspath(path)
        self.label = label or os.path.basename(self.target)
        check_label(self.label)
        self.compression = bsonio.check_compression(compression)
        self.compression_level = bsonio.check_compression_level(self.compression, compression_level)
        self.num_parallel_collections = int(num_parallel_collections)
        self.dump_users_and_roles = bool(dump_users_and_roles)
        self.shard_uris = dict(shard_uris or {})
        if shard_login_password is not None and shard_login_user is None:
            raise InvalidOption("shard_login_password needs shard_login_user")
        self.shard_login_user = shard_login_user
        self.shard_login_password = shard_login_password
        self.prefer_secondary = bool(prefer_secondary)
        for name, value in (("cut_timeout", cut_timeout), ("lock_timeout", lock_timeout),
                            ("num_parallel_collections", num_parallel_collections)):
            if value is None or int(value) < 1:
                raise InvalidOption("%s must be at least 1, got %r" % (name, value))
        self.cut_timeout = int(cut_timeout)
        self.lock_timeout = int(lock_timeout)
        self.force = bool(force)

    def describe(self):
        return {"compression": self.compression, "compression_level": self.compression_level,
                "num_parallel_collections": self.num_parallel_collections,
                "dump_users_and_roles": self.dump_users_and_roles, "cut_timeout": self.cut_timeout}

    def set_dump_options(self, path, info):
        return DumpOptions(path=path, compression=self.compression, compression_level=self.compression_level,
                           oplog=True, label="%s:%s" % (self.label, info.name),
                           dump_users_and_roles=self.dump_users_and_roles and info.is_config,
                           num_parallel_collections=self.num_parallel_collections,
                           prefer_secondary=self.prefer_secondary, lock_timeout=self.lock_timeout)


class ReplicaSetSource:
    """One replica set of the cluster during a backup: its connection, member and results."""

    def __init__(self, info, connection):
        self.info = info
        self.connection = connection
        self.client = None
        self.reader = None
        self.member = None
        self.server = None
        self.document = None  # the manifest of its dump
        self.cut = None  # cluster.cut.OplogCut
        self.capture = None

    def open(self, prefer_secondary):
        try:
            self.client = client_utils.connect(self.connection)
        except BackupError as exc:
            raise ClusterError("cannot reach %s of the cluster: %s; give its connection in shard_uris (or "
                               "shard_login_user/shard_login_password) when the shard map's hosts or the "
                               "mongos credentials do not work from here" % (self.info.name, exc.message))
        self.server = client_utils.server_facts(self.client)
        self.reader, self.member, _selection = members.reader_client(
            self.client, self.connection, prefer_secondary)
        # Read the oplog where the data was read; write the no-op notes through the primary.
        self.cut = cut_utils.OplogCut(self.info.name, self.reader, self.member, writer=self.client)

    def close(self):
        for client in set(c for c in (self.reader, self.client) if c is not None):
            client.close()

    def fcv(self):
        try:
            reply = self.reader.admin.command("getParameter", 1, featureCompatibilityVersion=1)
        except Exception:  # older or compatible servers: unknown, recorded as None
            return None
        value = reply.get("featureCompatibilityVersion")
        return value.get("version") if isinstance(value, dict) else value


def _dump_end(document):
    return bsonio.bson.Timestamp(*ts_key(document["oplog"]["end"]["ts"]))


class ShardedBackup:
    def __init__(self, mongos, mongos_options, options):
        self.mongos = mongos
        self.mongos_options = mongos_options
        self.options = options

    def plan(self, check_mode=False):
        topology = read_cluster(self.mongos, "a sharded-cluster backup")
        check_shard_uris(self.options.shard_uris, topology)
        # Check mode takes the balancer as stopped: a role stops it in the task before, which check mode
        # only predicts. The state is reported.
        balancer = balancer_state(self.mongos) if check_mode else \
            check_balancer_stopped(self.mongos, "a sharded-cluster backup")
        sets = [topology["config"]] + topology["shards"]
        return topology, balancer, sets

    def existing(self):
        document = manifest_utils.read_manifest(manifest_utils.manifest_path(self.options.target, False))
        if document is None:
            return None
        if document.get("kind") != KIND or (document.get("label") != self.options.label and not self.options.force):
            raise ClusterError("%s already holds a backup (label %r, kind %s); choose another path, or set force: "
                               "true to replace it" % (self.options.target, document.get("label"),
                                                       document.get("kind")))
        return None if self.options.force else document

    def run(self, check_mode=False):
        topology, balancer, sets = self.plan(check_mode)
        parent = os.path.dirname(self.options.target)
        check_backup_location(parent)
        planned = {"path": self.options.target, "label": self.options.label,
                   "shards": [info.describe() for info in topology["shards"]],
                   "config": topology["config"].describe(), "balancer": balancer}
        if check_mode:
            existing = self.existing()
            return (False, _result(existing, self.options)) if existing else (True, planned)
        lock = locking.exclusive(self.options.target + LOCK_SUFFIX, self.options.lock_timeout,
                                 "the cluster backup %s" % self.options.target,
                                 "cluster backup with label %s" % self.options.label)
        with lock:
            existing = self.existing()
            if existing:
                return False, _result(existing, self.options)
            document = self._run(topology, sets)
        return True, _result(document, self.options)

    def _run(self, topology, sets):
        started = time.time()
        staging = Staging(self.options.target, False)
        sources = [ReplicaSetSource(info, replica_set_connection(
            self.mongos_options, info, self.options.shard_uris, self.options.shard_login_user,
            self.options.shard_login_password)) for info in sets]
        with contextlib.ExitStack() as stack:
            for source in sources:
                stack.callback(source.close)
            try:
                staging.create()
                for source in sources:
                    source.open(self.options.prefer_secondary)
                dumps_started = time.time()
                pool = FailFastPool(len(sources), "cluster-dump")
                pool.run(lambda source: self._dump(source, staging.path, pool), sources)
                dump_seconds = time.time() - dumps_started
                check_balancer_stopped(self.mongos, "a sharded-cluster backup (checked again after the dumps)")
                cut, cut_seconds = self._cut(sources, staging.path)
                document = self._manifest(topology, sources, cut, staging.path, started, dump_seconds,
                                          cut_seconds)
                staging.commit(document)
            except BaseException:
                staging.discard()  # no complete-looking cluster backup without every set and the cut
                raise
        return document

    def _dump(self, source, staging_path, pool):
        def progress(event, **_details):
            pool.check()  # another set failed: stop this dump too
        path = os.path.join(staging_path, source.info.name)
        options = self.options.set_dump_options(path, source.info)
        dumper = Dumper(source.reader, options, source.server, member=source.member, progress=progress)
        try:
            source.document = dumper.run(dumper.plan())
        except BackupError as exc:
            raise ClusterError("the dump of %s (%s) failed: %s; the cluster backup is incomplete and was removed"
                               % (source.info.name, source.member, exc.message))

    def _cut(self, sources, staging_path):
        started = time.time()
        cut = cut_utils.choose_cut([_dump_end(source.document) for source in sources])
        manifest_utils.make_private_dir(os.path.join(staging_path, CUT_DIR))
        FailFastPool(len(sources), "cluster-cut").run(lambda source: self._capture(source, staging_path, cut),
                                                      sources)
        return cut, time.time() - started

    def _capture(self, source, staging_path, cut):
        directory = os.path.join(staging_path, source.info.name)
        prepared = cut_utils.PreparedTransactions()
        for entry in readers.iter_oplog_file(dump_names.oplog_path(directory)):
            prepared.feed(entry)
        name = source.info.name + ".bson" + bsonio.COMPRESSION_SUFFIXES[self.options.compression]
        relative = os.path.join(CUT_DIR, name)
        sink = bsonio.create_compressed_file(os.path.join(staging_path, relative), self.options.compression,
                                             self.options.compression_level)
        try:
            captured = source.cut.capture(_dump_end(source.document), cut, prepared, sink, self.options.cut_timeout)
        finally:
            sink.close()
        source.capture = dict(captured, file={"path": relative, "bytes": sink.disk.size,
                                              "sha256": sink.disk.sha256})

    def _manifest(self, topology, sources, cut, staging_path, started, dump_seconds, cut_seconds):
        finished = time.time()
        server = client_utils.server_facts(self.mongos)
        document = manifest_utils.new_manifest(
            str(uuid.uuid4()), self.options.label, KIND, iso_time(started), iso_time(finished), server,
            server.get("address"), self.options.describe())
        sets = [self._set_record(source) for source in sources]
        files = []
        for source, record in zip(sources, sets):
            manifest_file = os.path.join(source.info.name, manifest_utils.MANIFEST_NAME)
            path = os.path.join(staging_path, manifest_file)
            files.append({"path": manifest_file, "bytes": os.path.getsize(path),
                          "sha256": bsonio.sha256_file(path)})
            files.append(record["cut_slice"]["file"])
        data_bytes = sum(s.document["totals"]["bytes"] for s in sources)
        seconds = max(finished - started, 1e-6)
        document.update(
            files=files,
            cluster={"cut": timestamp_result(cut), "version": topology["version"],
                     "config": sets[0], "shards": sets[1:]},
            totals={"replica_sets": len(sources),
                    "documents": sum(s.document["totals"]["documents"] for s in sources),
                    "bytes": data_bytes,
                    "bytes_on_disk": sum(s.document["totals"]["bytes_on_disk"] for s in sources)
                    + sum(s.capture["file"]["bytes"] for s in sources),
                    "seconds": round(seconds, 3), "dump_seconds": round(dump_seconds, 3),
                    "cut_seconds": round(cut_seconds, 3),
                    "mb_per_second": round(data_bytes / seconds / 1e6, 2)})
        return document

    @staticmethod
    def _set_record(source):
        document = source.document
        return dict(source.info.describe(), path=source.info.name, backup_id=document["backup_id"],
                    member=source.member, version=source.server.get("version"), fcv=source.fcv(),
                    dump={"start": document["oplog"]["start"], "end": document["oplog"]["end"],
                          "documents": document["totals"]["documents"], "bytes": document["totals"]["bytes"],
                          "seconds": document["totals"]["seconds"]},
                    cut_slice={"file": source.capture["file"], "entries": source.capture["entries"],
                               "first": timestamp_result(source.capture["first"]),
                               "last": timestamp_result(source.capture["last"])})


def _result(document, options):
    cluster = document["cluster"]
    totals = document["totals"]
    return {"backup_id": document["backup_id"], "label": document["label"], "path": options.target,
            "manifest": manifest_utils.manifest_path(options.target, False), "cut": cluster["cut"],
            "config": cluster["config"], "shards": cluster["shards"], "total_documents": totals["documents"],
            "total_bytes": totals["bytes"], "bytes_on_disk": totals["bytes_on_disk"],
            "duration_seconds": totals["seconds"], "dump_seconds": totals["dump_seconds"],
            "cut_seconds": totals["cut_seconds"], "mb_per_second": totals["mb_per_second"]}


def backup(mongos, mongos_options, options, check_mode=False):
    """Run (or plan) a sharded-cluster backup. Returns (changed, result)."""
    return ShardedBackup(mongos, mongos_options, options).run(check_mode)
