# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restoring a sharded-cluster backup (cluster.sharded_backup) to its cut T.

Two ways:
  * ``same_shape``: into a cluster with as many shards. The config servers' sharding metadata
    (config.databases, collections, chunks, tags) first, with source shard names mapped to the
    target's (``shard_map``); then every shard in parallel, straight into the target shard's
    replica set, each replayed to T. The target's routers then reload the routing table.
  * ``through_mongos``: into any deployment (a cluster of another shape through its mongos, or a
    single replica set): every shard's data through the one connection (a mongos routes each
    document by the target's own sharding), then every shard's oplog merged in timestamp order and
    applied as ordinary writes up to T, indexes last.

Both check everything first (the cluster manifest and its checksums, every set's own manifest,
the shard map against both clusters, the balancer) and write nothing when a check fails.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import heapq
import itertools
import os
import time

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.cluster.balancer import (
    balancer_state, check_balancer_stopped)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.cluster.mongos import is_mongos
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.cluster.sharded_backup import KIND
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.cluster.topology import (
    CONFIG_SET, read_cluster, replica_set_connection)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.timestamps import ts_key, ts_text
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.workers import FailFastPool
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import (
    BackupError, ClusterError, InvalidOption, RestoreFailed, VerificationFailed)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import dump_names
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import manifest as manifest_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.bsonio import bson
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import restore as logical_restore
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import index_catalog
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import readers
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog.replay import OplogReplayer

MODES = ("same_shape", "through_mongos")
# The sharding metadata a same-shape restore brings back; the target keeps its own config.shards,
# settings (balancer) and version.
SHARDING_METADATA = ("config.databases", "config.collections", "config.chunks", "config.tags")


class ShardedRestoreOptions:
    def __init__(self, source, mode="same_shape", shard_map=None, shard_uris=None, shard_login_user=None,
                 shard_login_password=None, drop=False, oplog_apply_mode="auto", num_parallel_collections=4,
                 max_failed_documents=0, shard_collections=True):
        if not source:
            raise InvalidOption("source is required: the directory of a sharded-cluster backup")
        if mode not in MODES:
            raise InvalidOption("mode %r is unknown; use same_shape or through_mongos" % (mode,))
        if shard_map and mode != "same_shape":
            raise InvalidOption("shard_map maps source shards to target shards: it only applies to mode: "
                                "same_shape (through_mongos lets the target route every document)")
        if shard_login_password is not None and shard_login_user is None:
            raise InvalidOption("shard_login_password needs shard_login_user")
        self.source = os.path.abspath(source)
        self.mode = mode
        self.shard_map = dict(shard_map or {})
        self.shard_uris = dict(shard_uris or {})
        self.shard_login_user = shard_login_user
        self.shard_login_password = shard_login_password
        self.drop = bool(drop)
        self.oplog_apply_mode = oplog_apply_mode
        self.num_parallel_collections = int(num_parallel_collections)
        self.max_failed_documents = int(max_failed_documents)
        self.shard_collections = bool(shard_collections)

    def set_restore_options(self, set_record, cut):
        """The logical restore of one set of the backup, replayed to the cut."""
        _dump_oplog, cut_slice = set_oplog_files(self.source, set_record)
        return logical_restore.RestoreOptions(
            source=os.path.join(self.source, set_record["path"]), drop=self.drop, oplog_replay=True,
            oplog_slices=[cut_slice], oplog_limit=ts_text(cut), resolve_prepared=True,
            oplog_apply_mode=self.oplog_apply_mode,
            num_parallel_collections=self.num_parallel_collections, max_failed_documents=self.max_failed_documents)


def set_oplog_files(source_root, set_record):
    """The oplog of one set of a cluster backup, in order: its dump's oplog.bson, then its cut slice."""
    return [dump_names.oplog_path(os.path.join(source_root, set_record["path"])),
            os.path.join(source_root, set_record["cut_slice"]["file"]["path"])]


def read_set_oplog(source_root, set_record):
    """The decoded entries of set_oplog_files, in order."""
    return itertools.chain.from_iterable(readers.iter_oplog_file(path)
                                         for path in set_oplog_files(source_root, set_record))


def load_backup(path):
    """The cluster manifest of the backup at ``path``, its checksums verified."""
    try:
        document = manifest_utils.read_manifest(manifest_utils.manifest_path(path, False))
    except BackupError as exc:
        raise VerificationFailed("%s; nothing was restored" % exc.message)
    if document is None:
        raise VerificationFailed("%s holds no manifest.json: it is not a complete backup; restore another one; "
                                 "nothing was restored" % path)
    if document.get("kind") != KIND or not document.get("cluster"):
        raise InvalidOption("%s is a %s backup, not a sharded-cluster one; restore it with "
                            "dbops.mongodb_backup.mongodb_restore" % (path, document.get("kind")))
    damaged = manifest_utils.damaged_files(path, False, document)
    if damaged:
        raise VerificationFailed("the cluster backup %s does not match its manifest (%s): it is incomplete or "
                                 "damaged; restore another backup; nothing was restored"
                                 % (path, "; ".join(damaged[:5])))
    return document


def resolve_shard_map(source_shards, target_shards, shard_map):
    """{source shard: target shard} for every source shard; refused unless it covers both sets exactly."""
    unknown_sources = sorted(set(shard_map) - set(source_shards))
    if unknown_sources:
        raise ClusterError("shard_map names source shard(s) %s that the backup does not hold (its shards: %s); "
                           "fix shard_map; nothing was changed"
                           % (", ".join(unknown_sources), ", ".join(source_shards)))
    mapping = dict((name, shard_map.get(name, name)) for name in source_shards)
    unknown_targets = sorted(set(mapping.values()) - set(target_shards))
    if unknown_targets:
        raise ClusterError("shard_map sends data to shard(s) %s that the target cluster does not have (its "
                           "shards: %s); map every source shard to a target shard; nothing was changed"
                           % (", ".join(unknown_targets), ", ".join(target_shards)))
    if len(set(mapping.values())) != len(mapping):
        raise ClusterError("shard_map sends two source shards to one target shard (%s); a same-shape restore "
                           "needs one target shard per source shard: use mode: through_mongos for another "
                           "shape; nothing was changed" % mapping)
    idle = sorted(set(target_shards) - set(mapping.values()))
    if idle:
        raise ClusterError("the target cluster has %d shard(s) and the backup %d: %s would receive no data while "
                           "the restored routing table knows nothing of them; restore into a cluster of the same "
                           "shape, or use mode: through_mongos; nothing was changed"
                           % (len(target_shards), len(source_shards), ", ".join(idle)))
    return mapping


def sharded_collections(source_root, document):
    """The collections the backup's cluster had sharded: [{"namespace", "key", "unique"}] from the
    config servers' dump of config.collections (dropped ones and the server's own left out)."""
    directory = os.path.join(source_root, document["cluster"]["config"]["path"])
    source = logical_restore.open_source(directory)
    found = []
    for item in source.namespaces():
        if item.namespace != "config.collections" or not item.data_key:
            continue
        for batch in source.iter_batches(item, logical_restore.READ_BATCH_BYTES):
            for raw in batch:
                entry = bson.decode(raw)
                namespace = entry.get("_id")
                if entry.get("dropped") or not isinstance(namespace, str) or namespace.startswith("config."):
                    continue
                found.append({"namespace": namespace, "key": entry.get("key"), "unique": bool(entry.get("unique"))})
    return sorted(found, key=lambda entry: entry["namespace"])


def shard_collections(mongos, collections):
    """shardCollection on the target mongos for each collection, with the source's key (an existing
    collection sharded on the same key is accepted by the server as it is)."""
    for entry in collections:
        try:
            mongos.admin.command("shardCollection", entry["namespace"], key=entry["key"], unique=entry["unique"])
        except BackupError:
            raise
        except Exception as exc:
            raise ClusterError("sharding %s on the target with the key %s failed: %s; shard it yourself (or drop it "
                               "with drop: true) and restore again; no data was written yet"
                               % (entry["namespace"], dict(entry["key"] or {}), exc))


def only_namespaces(entries, namespaces):
    """The entries restricted to ``namespaces``: CRUD entries on them, the ops on them inside applyOps
    and transactions (with the transactions' commits and aborts), and commands that name one of them;
    everything else is left out."""
    wanted = set(namespaces)
    for entry in entries:
        kept = _restricted(entry, wanted)
        if kept is not None:
            yield kept


def _restricted(entry, wanted):
    namespace = entry.get("ns") or ""
    if entry.get("op") in ("i", "u", "d"):
        return entry if namespace in wanted else None
    if entry.get("op") != "c":
        return None
    command = entry.get("o") or {}
    if "applyOps" in command:
        inner = [op for op in (_restricted(op, wanted) for op in command["applyOps"]) if op is not None]
        if not inner and not ("lsid" in entry and (command.get("prepare") or command.get("partialTxn"))):
            return None  # a transaction's prepare stays (even empty here) so that its commit finds it
        return dict(entry, o=dict(command, applyOps=inner))
    if "commitTransaction" in command or "abortTransaction" in command:
        return entry
    database = namespace.split(".", 1)[0]
    target = next(iter(command.values()), None) if command else None
    return entry if isinstance(target, str) and "%s.%s" % (database, target) in wanted else None


def _cut(document):
    return bson.Timestamp(*ts_key(document["cluster"]["cut"]["ts"]))


def _sets(document):
    cluster = document["cluster"]
    return [cluster["config"]] + list(cluster["shards"])


class SameShapeRestore:
    def __init__(self, mongos, mongos_options, options, document):
        self.mongos = mongos
        self.mongos_options = mongos_options
        self.options = options
        self.document = document
        self.cut = _cut(document)

    def run(self, check_mode):
        topology = read_cluster(self.mongos, "a same-shape cluster restore")
        shards = self.document["cluster"]["shards"]
        mapping = resolve_shard_map([s["name"] for s in shards], [s.name for s in topology["shards"]],
                                    self.options.shard_map)
        balancer = balancer_state(self.mongos) if check_mode else check_balancer_stopped(self.mongos, "a cluster restore")
        targets = dict((info.name, info) for info in topology["shards"])
        targets[CONFIG_SET] = topology["config"]
        jobs = [(self.document["cluster"]["config"], targets[CONFIG_SET])]
        jobs += [(record, targets[mapping[record["name"]]]) for record in shards]
        with contextlib.ExitStack() as stack:
            clients = {}
            for _record, info in jobs:
                clients[info.name] = client_utils.connect(replica_set_connection(
                    self.mongos_options, info, self.options.shard_uris, self.options.shard_login_user,
                    self.options.shard_login_password))
                stack.callback(clients[info.name].close)
            plans = [self._restore_set(record, clients[info.name], True) for record, info in jobs]
            if check_mode:
                return True, {"mode": "same_shape", "shard_map": mapping, "cut": self.document["cluster"]["cut"],
                              "balancer": balancer, "sets": self._describe(jobs, plans)}
            started = time.time()
            config_result = self._restore_set(jobs[0][0], clients[CONFIG_SET], False)
            config_result["oplog"] = self._replay_metadata(clients[CONFIG_SET])
            self._map_shard_names(clients[CONFIG_SET], mapping)
            pool = FailFastPool(len(jobs) - 1, "cluster-restore")
            results = pool.run(lambda job: self._restore_set(job[0], clients[job[1].name], False), jobs[1:])
            self.mongos.admin.command("flushRouterConfig")
        return True, {"mode": "same_shape", "shard_map": mapping, "cut": self.document["cluster"]["cut"],
                      "sets": self._describe(jobs, [config_result] + results),
                      "duration_seconds": round(time.time() - started, 3)}

    def _restore_set(self, record, client, check_mode):
        directory = os.path.join(self.options.source, record["path"])
        if record["name"] == CONFIG_SET:  # the sharding metadata only, as dumped (see SHARDING_METADATA)
            options = logical_restore.RestoreOptions(source=directory, ns_include=list(SHARDING_METADATA),
                                                     drop=True)
        else:
            options = self.options.set_restore_options(record, self.cut)
        try:
            return logical_restore.restore(client, options, check_mode=check_mode)[1]
        except BackupError as exc:
            raise ClusterError("restoring %s of the backup: %s" % (record["name"], exc.message), **exc.details)

    def _replay_metadata(self, config_client):
        """The config servers' oplog up to T, for the sharding metadata only: a collection created or
        sharded while the backup ran is in the routing table as it was at T."""
        entries = read_set_oplog(self.options.source, self.document["cluster"]["config"])
        replayer = OplogReplayer(config_client, mode=self.options.oplog_apply_mode, limit=self.cut,
                                 skip_repeated=True, resolve_prepared=True)
        try:
            return replayer.replay(only_namespaces(entries, SHARDING_METADATA))
        except BackupError as exc:
            raise ClusterError("replaying the config servers' oplog to the cut %s failed: %s; nothing was "
                               "restored on the shards yet; restore again" % (ts_text(self.cut), exc.message),
                               **exc.details)

    @staticmethod
    def _map_shard_names(config_client, mapping):
        """Source shard names in the restored metadata become the target's, all at once (a swap is safe)."""
        renamed = dict((source, target) for source, target in mapping.items() if source != target)
        if not renamed:
            return
        config = config_client.config
        for document in config.databases.find({"primary": {"$in": list(renamed)}}):
            config.databases.update_one({"_id": document["_id"]},
                                        {"$set": {"primary": renamed[document["primary"]]}})
        for chunk in config.chunks.find({"$or": [{"shard": {"$in": list(renamed)}},
                                                 {"history.shard": {"$in": list(renamed)}}]}):
            changes = {"shard": renamed.get(chunk.get("shard"), chunk.get("shard"))}
            if isinstance(chunk.get("history"), list):
                changes["history"] = [dict(entry, shard=renamed.get(entry.get("shard"), entry.get("shard")))
                                      for entry in chunk["history"]]
            config.chunks.update_one({"_id": chunk["_id"]}, {"$set": changes})

    @staticmethod
    def _describe(jobs, results):
        described = []
        for (record, info), result in zip(jobs, results):
            entry = {"source": record["name"], "target": info.name, "target_replica_set": info.replica_set,
                     "namespaces": len(result.get("namespaces") or [])}
            for key in ("total_inserted", "total_failed", "duration_seconds", "oplog"):
                if key in result:
                    entry[key] = result[key]
            described.append(entry)
        return described


class ThroughMongosRestore:
    def __init__(self, target, options, document):
        self.target = target
        self.options = options
        self.document = document
        self.cut = _cut(document)
        self.shards = list(document["cluster"]["shards"])

    def _data_options(self, record):
        return logical_restore.RestoreOptions(
            source=os.path.join(self.options.source, record["path"]), drop=False, no_index_restore=True,
            ns_exclude=["config.*"], num_parallel_collections=self.options.num_parallel_collections,
            max_failed_documents=self.options.max_failed_documents)

    def run(self, check_mode):
        hello = self.target.admin.command("hello")
        balancer = None
        if is_mongos(hello):  # check mode takes it as stopped by the task before, and reports it
            balancer = balancer_state(self.target) if check_mode else check_balancer_stopped(self.target,
                                                                                             "a cluster restore")
        # Through a mongos, the collections the source had sharded are sharded the same way first, so the
        # target spreads them over its own shards instead of keeping them on their primary shard.
        to_shard = sharded_collections(self.options.source, self.document) \
            if is_mongos(hello) and self.options.shard_collections else []
        plans = [logical_restore.restore(self.target, self._data_options(record), check_mode=True)[1]
                 for record in self.shards]
        for record in self.shards:  # the oplogs are read in full before any write
            for _entry in self._shard_oplog(record):
                pass
        namespaces = sorted(set(item["namespace"] for plan in plans for item in plan["namespaces"]))
        if check_mode:
            return True, {"mode": "through_mongos", "cut": self.document["cluster"]["cut"], "balancer": balancer,
                          "namespaces": namespaces, "drop": self.options.drop, "shard_collections": to_shard,
                          "sets": [{"source": record["name"], "namespaces": len(plan["namespaces"])}
                                   for record, plan in zip(self.shards, plans)]}
        started = time.time()
        if self.options.drop:
            for namespace in namespaces:
                database, _sep, collection = namespace.partition(".")
                self.target[database].drop_collection(collection)
        shard_collections(self.target, to_shard)
        pool = FailFastPool(len(self.shards), "cluster-restore")
        results = pool.run(self._restore_data, self.shards)
        oplog_result = self._replay()
        return True, {"mode": "through_mongos", "cut": self.document["cluster"]["cut"], "shard_collections": to_shard,
                      "sets": [dict(source=record["name"], total_inserted=result["total_inserted"],
                                    total_failed=result["total_failed"], duration_seconds=result["duration_seconds"])
                               for record, result in zip(self.shards, results)],
                      "oplog": oplog_result, "duration_seconds": round(time.time() - started, 3)}

    def _restore_data(self, record):
        try:
            return logical_restore.restore(self.target, self._data_options(record))[1]
        except BackupError as exc:
            raise ClusterError("restoring the data of shard %s through the target: %s"
                               % (record["name"], exc.message), **exc.details)

    def _shard_oplog(self, record):
        """One shard's entries in order: its dump's oplog, then its cut slice (the target's own
        config.* entries and our cut markers left out)."""
        newest = None
        for entry in read_set_oplog(self.options.source, record):
            key = (entry["ts"].time, entry["ts"].inc)
            if newest is not None and key <= newest:
                continue  # a repeat within this shard's own stream
            newest = key
            if not (entry.get("ns") or "").startswith("config."):
                yield entry

    def _replay(self):
        catalog = {}
        for record in self.shards:
            source = logical_restore.open_source(os.path.join(self.options.source, record["path"]))
            planned = logical_restore.plan_restore(source, self._data_options(record))
            for namespace, specs in logical_restore.metadata_index_catalog(planned, False).items():
                catalog.setdefault(namespace, {}).update(specs)
        merged = heapq.merge(*[self._shard_oplog(record) for record in self.shards],
                             key=lambda entry: (entry["ts"].time, entry["ts"].inc))
        replayer = OplogReplayer(self.target, mode=self.options.oplog_apply_mode, limit=self.cut,
                                 index_catalog=catalog, resolve_prepared=True)
        try:
            oplog_result = replayer.replay(merged)
            index_catalog.build_indexes(self.target, oplog_result.pop("index_catalog"))
        except BackupError as exc:
            raise RestoreFailed("the data of every shard was restored, but replaying their oplogs to the cut %s "
                                "failed: %s; fix the cause and restore again with drop: true"
                                % (ts_text(self.cut), exc.message), **exc.details)
        not_applied = sum((oplog_result.get("not_applied") or {}).values())
        if not_applied > self.options.max_failed_documents:
            raise RestoreFailed("%d oplog entries of the shards were not applied (%s); restore again with drop: true "
                                "after fixing the cause, or accept them with max_failed_documents"
                                % (not_applied, oplog_result["not_applied"]), oplog=oplog_result)
        return oplog_result


def restore(client, connection, options, check_mode=False):
    """Restore (or plan) a sharded-cluster backup. Returns (changed, result)."""
    document = load_backup(options.source)
    if options.mode == "same_shape":
        return SameShapeRestore(client, connection, options, document).run(check_mode)
    return ThroughMongosRestore(client, options, document).run(check_mode)
