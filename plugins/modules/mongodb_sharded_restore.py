#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: mongodb_sharded_restore
short_description: Restore a sharded-cluster backup to its cluster time, into the same shape or any shape
version_added: "1.1.0"
description:
  - Restores a backup written by M(dbops.mongodb_backup.mongodb_sharded_backup) to the state just
    before its cut C(T), in one of two ways.
  - "O(mode=same_shape): the connection is a mongos of a cluster with as many shards as the backup.
    The config servers' sharding metadata (C(config.databases), C(config.collections),
    C(config.chunks), C(config.tags)) is restored first, replacing the target's, replayed to C(T) from
    the config servers' oplog (so a collection created or split while the backup ran is routed as it
    was at C(T)), with the source shard names changed to the target's by O(shard_map); then every shard in parallel, straight into the
    target shard's replica set, each with its oplog replayed to C(T); last the mongos reloads its
    routing table (C(flushRouterConfig)). Restart or flush the other mongos of the target too. The target
    keeps its own C(config.shards), balancer settings and users."
  - "O(mode=through_mongos): the connection is any deployment - a mongos of a cluster of another
    shape (its own sharding routes every document), or a single replica set. Every shard's data goes
    through that connection, then the oplogs of all shards, merged in timestamp order, are applied as
    ordinary writes up to C(T), and the indexes are built. On a mongos, the collections the source
    cluster had sharded are first sharded the same way (O(shard_collections)). Orphaned documents a shard still held at backup
    time would be inserted twice and fail as duplicates; the task then fails naming them."
  - "In both, a transaction prepared before C(T) is applied on every shard when its C(commitTimestamp)
    is before C(T), and on none otherwise."
  - "Everything is checked before the first write: the cluster manifest and the sha256 of every set's
    manifest and cut slice, every set's files against its own manifest, the shard map against both
    clusters (a map naming shards the backup or the target does not have, two shards onto one, or a
    target with other shards, is refused), the balancer (stopped and idle on a mongos target; the role
    C(dbops.mongodb_backup.sharded_restore) stops it and puts it back)."
  - Not idempotent (restoring twice fails on duplicate keys); use O(drop=true) to replace what is there.
extends_documentation_fragment:
  - dbops.mongodb_backup.connection
  - dbops.mongodb_backup.attributes
  - dbops.mongodb_backup.attributes.platform
attributes:
  check_mode:
    support: full
    details: Verifies the backup and the shard map, reports the balancer state, and returns the plan; writes nothing.
  diff_mode:
    support: none
options:
  source:
    description:
      - Directory of the cluster backup (it holds the cluster C(manifest.json)).
    type: path
    required: true
  mode:
    description:
      - C(same_shape) restores each shard into its own target shard; C(through_mongos) restores
        everything through the connection, into a deployment of any shape.
    type: str
    choices: [same_shape, through_mongos]
    default: same_shape
  shard_map:
    description:
      - "Source shard name to target shard name, for O(mode=same_shape); shards not named keep their name.
        Every source shard must land on its own target shard and every target shard must receive one."
    type: dict
  shard_uris:
    description:
      - Connection strings by target replica set (target shard name, or C(config) for the config
        servers), instead of the hosts of the target's shard map with the mongos credentials
        (O(mode=same_shape)). Holds passwords, so it is never logged.
    type: dict
  shard_login_user:
    description:
      - User for every target shard and config server connection not in O(shard_uris).
    type: str
  shard_login_password:
    description:
      - Password of O(shard_login_user).
    type: str
  drop:
    description:
      - Drop each collection before restoring it (C(mongorestore --drop)).
    type: bool
    default: false
  oplog_apply_mode:
    description:
      - How the oplog is applied, as in M(dbops.mongodb_backup.mongodb_restore). O(mode=through_mongos)
        applies it as ordinary writes whatever the mode when the target refuses C(applyOps) (a mongos does).
    type: str
    choices: [auto, applyops, crud]
    default: auto
  num_parallel_collections:
    description:
      - Collections restored at once within each replica set.
    type: int
    default: 4
  shard_collections:
    description:
      - With O(mode=through_mongos) into a mongos, run C(shardCollection) with the source's shard key (and
        C(unique)) for every collection the source cluster had sharded, before any data is written, so the
        target spreads them over its shards. A collection already sharded there on another key fails the
        task before any data is written.
    type: bool
    default: true
  max_failed_documents:
    description:
      - Documents or oplog entries that may fail without failing the task (reported as warnings).
    type: int
    default: 0
notes:
  - Only the sharding metadata of the config servers is restored; the target keeps its own users, roles,
    shard registrations and balancer settings.
seealso:
  - module: dbops.mongodb_backup.mongodb_sharded_backup
  - module: dbops.mongodb_backup.mongodb_balancer
author:
  - dbops.mongodb_backup contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Restore into a cluster of the same shape whose shards have other names
  dbops.mongodb_backup.mongodb_sharded_restore:
    uri: "{{ dr_mongos_uri }}"
    source: /backups/cluster/nightly-2026-12-01
    shard_map:
      shard01: dr-shard-a
      shard02: dr-shard-b
    drop: true

- name: Restore a two-shard backup into a single replica set at the DR site
  dbops.mongodb_backup.mongodb_sharded_restore:
    uri: "{{ dr_replica_set_uri }}"
    source: /backups/cluster/nightly-2026-12-01
    mode: through_mongos
    drop: true
'''

RETURN = r'''
mode:
  description: How the backup was restored.
  returned: always
  type: str
  sample: same_shape
cut:
  description: The cluster time restored to (the state just before it).
  returned: always
  type: dict
  sample: {"ts": "1764579600:12", "t": 1764579600, "i": 12, "time": "2025-12-01T09:00:00Z"}
shard_map:
  description: Source shard to target shard, as used (O(mode=same_shape)).
  returned: when mode is same_shape
  type: dict
  sample: {"shard01": "dr-shard-a", "shard02": "dr-shard-b"}
sets:
  description:
    - Per restored replica set - source, target, documents inserted and failed, seconds, and its oplog
      replay (applied, skipped, transactions). In check mode, the plan.
  returned: always
  type: list
  elements: dict
  sample: [{"source": "shard01", "target": "dr-shard-a", "total_inserted": 120000, "total_failed": 0}]
oplog:
  description: The merged replay of every shard's oplog to the cut (O(mode=through_mongos)).
  returned: when mode is through_mongos, not in check mode
  type: dict
  sample: {"applied": 5120, "stopped_at_limit": true, "transactions": {"committed": 3, "aborted": 0}}
shard_collections:
  description: The collections sharded on the target before the data (O(mode=through_mongos) into a mongos).
  returned: when mode is through_mongos
  type: list
  elements: dict
  sample: [{"namespace": "shop.orders", "key": {"customer": "hashed"}, "unique": false}]
namespaces:
  description: The namespaces the restore writes (O(mode=through_mongos), check mode).
  returned: check mode, when mode is through_mongos
  type: list
  elements: str
  sample: ["shop.orders"]
balancer:
  description: The target balancer state checked before the restore (check mode, mongos targets).
  returned: check mode
  type: dict
  sample: {"enabled": false, "mode": "off", "in_balancer_round": false, "migrations": []}
duration_seconds:
  description: Wall-clock seconds the task spent on its work.
  returned: success, not in check mode
  type: float
  sample: 12.5
'''

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.module import MongoDBModule
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.cluster import sharded_restore
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils


def run_module(module):
    params = module.params
    options = sharded_restore.ShardedRestoreOptions(
        params["source"], mode=params["mode"], shard_map=params["shard_map"], shard_uris=params["shard_uris"],
        shard_login_user=params["shard_login_user"], shard_login_password=params["shard_login_password"],
        drop=params["drop"], oplog_apply_mode=params["oplog_apply_mode"],
        num_parallel_collections=params["num_parallel_collections"],
        max_failed_documents=params["max_failed_documents"], shard_collections=params["shard_collections"])
    connection = module.connection_options
    client = client_utils.connect(connection)
    try:
        return sharded_restore.restore(client, connection, options, check_mode=module.check_mode)
    finally:
        client.close()


def main():
    module = MongoDBModule(
        argument_spec=dict(
            source=dict(type="path", required=True),
            mode=dict(type="str", default="same_shape", choices=["same_shape", "through_mongos"]),
            shard_map=dict(type="dict"),
            shard_uris=dict(type="dict", no_log=True),
            shard_login_user=dict(type="str"),
            shard_login_password=dict(type="str", no_log=True),
            drop=dict(type="bool", default=False),
            oplog_apply_mode=dict(type="str", default="auto", choices=["auto", "applyops", "crud"]),
            num_parallel_collections=dict(type="int", default=4),
            max_failed_documents=dict(type="int", default=0),
            shard_collections=dict(type="bool", default=True),
        ),
        required_by={"shard_login_password": "shard_login_user"},
        supports_check_mode=True,
    )
    changed, result = module.run(run_module, module)
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
