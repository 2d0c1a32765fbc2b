#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: mongodb_sharded_backup
short_description: Back up a sharded MongoDB cluster at one consistent cluster time
version_added: "1.1.0"
description:
  - Connects to a mongos, reads the shard map (C(listShards)) and the config server replica set
    (C(getShardMap)), and dumps every shard's replica set and the config server replica set in
    parallel, each from one member (the least lagging secondary, unless O(read_preference) is
    C(primary) or C(primaryPreferred)) with its oplog,
    as M(dbops.mongodb_backup.mongodb_dump) with O(dbops.mongodb_backup.mongodb_dump#module:oplog=true)
    would.
  - When every dump has finished it chooses one cut C(T), one increment after the latest dump's oplog
    end, so C(T) is later than every dump's end. It then reads each oplog on from its dump's end up to
    the first entry at or after C(T), which proves that oplog holds every entry before C(T); an oplog
    that has not reached C(T) yet (an idle replica set) gets no-op C(appendOplogNote) writes until it
    does (a server without that command gets a write to C(config.dbops_backup_cut_marker), which a
    replay ignores). Each replica set's data plus its oplog
    replayed to just before C(T) is that replica set at C(T); together they are the cluster at C(T).
  - "Distributed transactions: a transaction prepared before C(T) is captured until each shard has
    logged its commit or abort, so a restore applies it on every shard it touched when its
    C(commitTimestamp) is before C(T), and on none otherwise."
  - The balancer must be stopped and idle (no round, no migration), checked before and again after
    the dumps; a chunk that moves during a backup would be on two shards or none. The role
    C(dbops.mongodb_backup.sharded_backup) stops it with M(dbops.mongodb_backup.mongodb_balancer) and
    puts it back in C(always:).
  - "The backup is built in C(<path>.partial) and renamed to O(path) only when every replica set's dump
    and cut are complete: C(<path>/manifest.json) (the cluster manifest: the cut, the shard map, each
    set's backup id, member, versions and FCV, the sha256 of every set's manifest and cut slice),
    C(<path>/config/) and C(<path>/<shard>/) (mongodump layout, each with its own manifest) and
    C(<path>/cut/<set>.bson) (each set's oplog from its dump's end to the cut). A failure of any
    replica set fails the task and leaves no complete-looking backup."
  - "One orchestrating module, not one task per shard: the cut needs every dump's end at one place,
    and a failure must stop the other dumps. It reaches every replica set from the host that runs it;
    run it with C(delegate_to) on a host near the cluster. Idempotent by O(label): a complete cluster
    backup with the same label at O(path) is reported with C(changed=false)."
extends_documentation_fragment:
  - dbops.mongodb_backup.connection
  - dbops.mongodb_backup.attributes
  - dbops.mongodb_backup.attributes.platform
attributes:
  check_mode:
    support: full
    details:
      - Reads the shard map and the balancer state, checks the backup location, dumps nothing.
      - The balancer is reported, not required stopped - the task that stops it before only predicts that in check mode.
  diff_mode:
    support: none
options:
  path:
    description:
      - Directory the cluster backup is written to. Its parent must exist.
    type: path
    required: true
  label:
    description:
      - "Name of the backup in the catalog (letters, digits and C(. _ : + -)); defaults to the last part
        of O(path). Each replica set's dump is labelled C(<label>:<set>)."
    type: str
  compression:
    description:
      - Compression of every data and oplog file, as in M(dbops.mongodb_backup.mongodb_dump).
    type: str
    choices: [none, gzip, zstd]
    default: none
  compression_level:
    description:
      - Level for O(compression) (gzip 1 to 9, zstd -131072 to 22); the library default when omitted.
    type: int
  num_parallel_collections:
    description:
      - Collections dumped at once within each replica set (every replica set is dumped at the same time).
    type: int
    default: 4
  dump_users_and_roles:
    description:
      - Also dump the cluster's users and roles from the config servers' C(admin) database.
      - A full dump of the config servers includes them already; kept for symmetry with mongodump.
    type: bool
    default: false
  shard_uris:
    description:
      - Connection strings by replica set, keyed by shard name or C(config) for the config servers, used
        instead of the hosts of the shard map with the mongos credentials. For shard-local users, or
        hosts that resolve differently from where the module runs. Holds passwords, so it is never logged.
    type: dict
  shard_login_user:
    description:
      - User for every shard and config server connection not in O(shard_uris) (shard-local users);
        the mongos credentials when omitted.
    type: str
  shard_login_password:
    description:
      - Password of O(shard_login_user).
    type: str
  cut_timeout:
    description:
      - Seconds to wait for every oplog to reach the cut and for transactions prepared before it to be
        committed or aborted; past it the task fails and removes the incomplete backup.
    type: int
    default: 60
  lock_timeout:
    description:
      - Seconds to wait for another run writing the same O(path) to finish.
    type: int
    default: 60
  force:
    description:
      - Replace a complete backup at O(path) with another label.
    type: bool
    default: false
notes:
  - The user needs the C(backup) role on the mongos, the shards and the config servers (C(clusterMonitor)
    for C(balancerStatus), and C(appendOplogNote) on every replica set).
  - A restore goes through M(dbops.mongodb_backup.mongodb_sharded_restore).
seealso:
  - module: dbops.mongodb_backup.mongodb_balancer
  - module: dbops.mongodb_backup.mongodb_sharded_restore
  - module: dbops.mongodb_backup.mongodb_dump
author:
  - dbops.mongodb_backup contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Back up the cluster with the balancer stopped, and put the balancer back whatever happens
  block:
    - name: Stop the balancer and wait until no round or migration runs
      dbops.mongodb_backup.mongodb_balancer:
        uri: "{{ mongos_uri }}"
        state: stopped
      register: balancer

    - name: Back up every shard and the config servers at one cluster time
      dbops.mongodb_backup.mongodb_sharded_backup:
        uri: "{{ mongos_uri }}"
        path: /backups/cluster/nightly-2026-12-01
        compression: zstd
        shard_login_user: backup
        shard_login_password: "{{ vault_shard_backup_password }}"
  always:
    - name: Start the balancer again if it was running
      dbops.mongodb_backup.mongodb_balancer:
        uri: "{{ mongos_uri }}"
        state: started
      when: balancer.before is defined and balancer.before.enabled
'''

RETURN = r'''
backup_id:
  description: Id of the cluster backup (in its manifest).
  returned: success
  type: str
  sample: 0b7c7a52-5a8e-4c7e-9d43-5b3ce3a26c10
label:
  description: Label of the backup.
  returned: success
  type: str
  sample: nightly-2026-12-01
path:
  description: Directory of the cluster backup.
  returned: always
  type: str
  sample: /backups/cluster/nightly-2026-12-01
manifest:
  description: Path of the cluster manifest.
  returned: success, not in check mode
  type: str
  sample: /backups/cluster/nightly-2026-12-01/manifest.json
cut:
  description:
    - The cluster time the backup restores to (exclusive - the state just before it), as text, seconds,
      increment and UTC time.
  returned: success, not in check mode
  type: dict
  sample: {"ts": "1764579600:12", "t": 1764579600, "i": 12, "time": "2025-12-01T09:00:00Z"}
config:
  description: The config server replica set's record - hosts, member read, versions, FCV, dump and cut slice.
  returned: always
  type: dict
  sample: {"name": "config", "replica_set": "configRS", "hosts": ["cfg1:27019"], "member": "cfg1:27019"}
shards:
  description:
    - One record per shard - name, replica set, hosts, member read, C(version), C(fcv), C(dump) (oplog
      start and end, documents, bytes, seconds) and C(cut_slice) (file, entries, first and last entry).
  returned: always
  type: list
  elements: dict
  sample: [{"name": "shard01", "replica_set": "shard01rs", "hosts": ["db1:27018"], "member": "db1:27018",
            "dump": {"documents": 120000, "seconds": 41.2}, "cut_slice": {"entries": 312}}]
balancer:
  description: The balancer state checked before the backup (check mode).
  returned: check mode
  type: dict
  sample: {"enabled": false, "mode": "off", "in_balancer_round": false, "migrations": []}
total_documents:
  description: Documents dumped over every replica set.
  returned: success, not in check mode
  type: int
  sample: 240000
total_bytes:
  description: BSON bytes dumped over every replica set.
  returned: success, not in check mode
  type: int
  sample: 51200000
bytes_on_disk:
  description: Bytes written (compressed when O(compression) is set), cut slices included.
  returned: success, not in check mode
  type: int
  sample: 12800000
duration_seconds:
  description: Wall-clock seconds the task spent on its work.
  returned: success, not in check mode
  type: float
  sample: 12.5
dump_seconds:
  description: Seconds of the parallel dump phase - about the slowest replica set's dump, not the sum.
  returned: success, not in check mode
  type: float
  sample: 41.9
cut_seconds:
  description: Seconds spent reaching and capturing the cut on every replica set.
  returned: success, not in check mode
  type: float
  sample: 0.8
mb_per_second:
  description: Data throughput over the whole task (BSON MB per second).
  returned: success, not in check mode
  type: float
  sample: 1.22
'''

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.module import MongoDBModule
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.cluster import sharded_backup
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import members


def run_module(module):
    params = module.params
    options = sharded_backup.ShardedBackupOptions(
        path=params["path"], label=params["label"], compression=params["compression"],
        compression_level=params["compression_level"], num_parallel_collections=params["num_parallel_collections"],
        dump_users_and_roles=params["dump_users_and_roles"], shard_uris=params["shard_uris"],
        shard_login_user=params["shard_login_user"], shard_login_password=params["shard_login_password"],
        prefer_secondary=params["read_preference"] is None or params["read_preference"] in members.SECONDARY_MODES,
        cut_timeout=params["cut_timeout"], lock_timeout=params["lock_timeout"], force=params["force"])
    connection = module.connection_options
    client = client_utils.connect(connection)
    try:
        return sharded_backup.backup(client, connection, options, check_mode=module.check_mode)
    finally:
        client.close()


def main():
    module = MongoDBModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            label=dict(type="str"),
            compression=dict(type="str", default="none", choices=["none", "gzip", "zstd"]),
            compression_level=dict(type="int"),
            num_parallel_collections=dict(type="int", default=4),
            dump_users_and_roles=dict(type="bool", default=False),
            shard_uris=dict(type="dict", no_log=True),
            shard_login_user=dict(type="str"),
            shard_login_password=dict(type="str", no_log=True),
            cut_timeout=dict(type="int", default=60),
            lock_timeout=dict(type="int", default=60),
            force=dict(type="bool", default=False),
        ),
        required_by={"shard_login_password": "shard_login_user"},
        supports_check_mode=True,
    )
    changed, result = module.run(run_module, module)
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
