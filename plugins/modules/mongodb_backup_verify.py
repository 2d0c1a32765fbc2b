#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: mongodb_backup_verify
short_description: Prove a logical backup restorable by restoring it into a scratch server and comparing
version_added: "1.3.0"
description:
  - Restores a logical backup (by O(label) or O(path), or the newest one of the catalog), or a point in time
    (O(target_time), planned from the catalog as M(dbops.mongodb_backup.mongodb_backup_info) plans it), into a
    scratch server, compares what was restored with what the backup says it holds, drops what it restored and
    records the result in the catalog entry of the backup.
  - "Before anything is written: the oplog slices of a point-in-time plan and every file of the backup are checked
    against their sha256; the scratch server is refused when it is the backup's source (an address its manifest
    records, host names resolved, or a collection with the UUID of a backed-up one), when it holds user databases
    (unless O(drop_scratch=true)), or when another verification is using it."
  - "Compared per collection, after the data is restored: the document count, the content hash (an order-independent
    hash of every document, computed by M(dbops.mongodb_backup.mongodb_dump) while it wrote the backup, and here
    from every restored document) and the collection options. Then the oplog is replayed (the backup's own, and for
    O(target_time) the archived slices up to it), the indexes are built, and the index definitions are compared.
    Backups taken with C(engine: mongodump) have no content hash: their counts, options and indexes are compared,
    and RV(checks) says so."
  - A point in time has no reference to compare with; its base is compared before the replay, the replay must
    apply every entry, and RV(replay) reports the entries applied.
  - The result (C(ok), C(at), C(restore_seconds), C(mb_per_s), C(collections), C(target_time), C(failures)) is
    stored as C(verified) in the catalog entry of the backup, under the catalog lock. A backup given by O(path)
    that no catalog lists is verified but not recorded.
  - A mismatch fails the task, naming each collection and what differs, after recording the failed verification.
    The scratch server is left as it was found in every case; what was restored there is dropped.
  - The connection options name the scratch server, never the source. This module is not in the C(mongodb)
    action group, so the source connection that playbooks set with C(module_defaults) never reaches it.
  - With O(scratch_mongod) it starts a temporary C(mongod) instead (127.0.0.1, a free port, auth on with a generated
    user, data in a new 0700 directory) and stops it and removes its directory afterwards, also on failure.
extends_documentation_fragment:
  - dbops.mongodb_backup.connection
  - dbops.mongodb_backup.attributes
  - dbops.mongodb_backup.attributes.platform
attributes:
  check_mode:
    support: full
    details:
      - Checks the backup's files, plans what would be restored where and what compared, checks the scratch
        server (read only), and says whether it would be refused; writes nothing and starts no mongod.
  diff_mode:
    support: none
options:
  backup_root:
    description:
      - The backup root, the directory holding the catalog C(catalog.json).
      - Required with O(label) and O(target_time); alone, the newest logical backup of the catalog is verified.
      - With O(path), the backup must be in this catalog (the result is recorded there).
    type: path
  label:
    description: The label of the backup to verify, in the catalog of O(backup_root).
    type: str
  path:
    description:
      - The backup directory or archive file to verify. Without O(backup_root), the result is recorded when the
        catalog of its parent directory lists it.
    type: path
  target_time:
    description:
      - Verify a point-in-time restore to this time, planned from the catalog of O(backup_root) (the newest full
        backup before it and the oplog slices up to it). The result is recorded on that base backup.
      - An ISO-8601 time (C(2024-05-01T12:00:00Z)) or an oplog timestamp C(<seconds>[:<increment>]); as
        C(mongorestore --oplogLimit), the entries before it are applied and the entry at it is not.
    type: str
  backup_replica_set:
    description:
      - With O(target_time), the replica set whose backups and oplog slices to use, when the catalog holds several.
      - Not O(replica_set), which is the connection's replica set name (of the scratch server).
    type: str
  drop_scratch:
    description:
      - Drop the user databases the scratch server holds before restoring (their data is lost). Without it, a
        scratch server that holds any is refused.
    type: bool
    default: false
  scratch_mongod:
    description:
      - Start a temporary C(mongod) as the scratch server, with this binary (a path, or a name looked up in
        C(PATH), such as C(mongod)). Mutually exclusive with the connection options.
    type: str
  scratch_dir:
    description:
      - With O(scratch_mongod), the existing directory in which the temporary server's data directory is made
        (default the system's temporary directory). It needs room for the restored data.
    type: path
  oplog_apply_mode:
    description: How the oplog is replayed, as M(dbops.mongodb_backup.mongodb_restore)'s option of that name.
    type: str
    choices: [auto, applyops, crud]
    default: auto
  num_parallel_collections:
    description: Collections restored at once.
    type: int
    default: 4
notes:
  - The scratch server needs room for the backup's data, and the user needs to create, write and drop databases
    there (and insert into C(admin.dbops_backup_verify), the lock of one verification at a time).
  - Not idempotent in its effect on the catalog - every run restores again and records its own result.
seealso:
  - module: dbops.mongodb_backup.mongodb_backup_info
  - module: dbops.mongodb_backup.mongodb_restore
  - module: dbops.mongodb_backup.mongodb_dump
author:
  - dbops.mongodb_backup contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Verify the newest backup of db1 in a scratch server
  dbops.mongodb_backup.mongodb_backup_verify:
    backup_root: /backups/mongodb/db1
    uri: "mongodb://scratch.example.com:27017/?directConnection=true"
    login_user: verify
    login_password: "{{ vault_scratch_password }}"

- name: Verify a point in time, in a temporary mongod on this host
  dbops.mongodb_backup.mongodb_backup_verify:
    backup_root: /backups/mongodb/db1
    target_time: "2024-05-01T12:00:00Z"
    scratch_mongod: mongod
    scratch_dir: /var/tmp/verify
  register: proof

- name: Show the measured restore time
  ansible.builtin.debug:
    msg: "{{ proof.backup.label }} restores in {{ proof.restore_seconds }} s ({{ proof.mb_per_s }} MB/s)"
'''

RETURN = r'''
backup:
  description: The backup verified (for O(target_time), the base of the plan).
  returned: always
  type: dict
  sample: {"label": "nightly-2024-05-01", "backup_id": "0b6f0f8e-2f63-4a43-9d0e-5b0d9a1b2c3d",
           "path": "/backups/mongodb/db1/nightly-2024-05-01", "catalog": "/backups/mongodb/db1/catalog.json",
           "engine": "native", "finished_at": "2024-05-01T00:03:12.000000Z"}
scratch:
  description: The scratch server, its addresses, version and flavor (C(mongodb) or C(ferretdb)).
  returned: always
  type: dict
  sample: {"addresses": ["127.0.0.1:40112"], "version": "7.0.14", "flavor": "mongodb", "kind": "temporary mongod"}
target_time:
  description: With O(target_time), the target as UTC time; else null.
  returned: always
  type: str
  sample: "2024-05-01T12:00:00Z"
verified:
  description:
    - What was recorded in the catalog entry as C(verified) (also when the task fails).
    - C(restore_seconds) covers the checksum check, the data, the oplog replay and the index builds (the restore
      time of this backup at this size), not the comparisons; C(mb_per_s) is the BSON restored per second.
  returned: success, or failure after the restore began
  type: dict
  sample: {"ok": true, "at": "2024-05-01T01:00:00.000000Z", "restore_seconds": 95.2, "mb_per_s": 0.77,
           "collections": 12, "documents": 120000, "target_time": null, "failures": []}
recorded:
  description: Whether the result was stored in the catalog (false for a backup that no catalog lists).
  returned: always
  type: bool
  sample: true
collections:
  description:
    - Per restored namespace what was compared - C(documents) (C(backup) and C(restored)), C(content_hash)
      (C(match), C(differs), C(not available)), C(options) and C(indexes) (C(match) or the differences).
  returned: success, or failure after the restore began
  type: dict
  sample: {"shop.orders": {"documents": {"backup": 1000, "restored": 1000}, "content_hash": "match",
                           "options": "match", "indexes": "match"}}
failures:
  description: Each collection that differs and what differs, or the cause of a failed restore; empty when verified.
  returned: success, or failure after the restore began
  type: list
  elements: str
  sample: ["shop.orders: 999 documents restored, the backup holds 1000; content hash differs"]
checks:
  description: Exactly what was checked, in order.
  returned: always
  type: list
  elements: str
  sample: ["backup files: 10 match the sha256 of the manifest",
           "per collection after restoring the backup's data: document count, content hash (...) and collection
            options (3 collections)"]
replay:
  description: The oplog replay (the backup's own oplog, the slices, the limit), with the entries applied; null without.
  returned: success, or failure after the restore began
  type: dict
  sample: {"backup_oplog": true, "slices": ["oplog/rs0/1714521792-7_1714525392-1.bson.gz"],
           "oplog_limit": "1714564800:0", "target_time": "2024-05-01T12:00:00Z", "applied": 5120,
           "last_applied": "1714564799:3", "stopped_at_limit": true, "not_applied": {}, "mode_used": "crud"}
restore_seconds:
  description: As C(verified.restore_seconds).
  returned: success, or failure after the restore began
  type: float
  sample: 95.2
mb_per_s:
  description: As C(verified.mb_per_s).
  returned: success, or failure after the restore began
  type: float
  sample: 0.77
compare_seconds:
  description: Seconds spent reading the restored documents back and comparing.
  returned: success, or failure after the restore began
  type: float
  sample: 30.1
dropped_after:
  description: The databases (and admin or config collections) dropped from the scratch server at the end.
  returned: success, or failure after the restore began
  type: list
  elements: str
  sample: ["crm", "shop"]
taken_over:
  description: The lock of a verification on this host whose process was gone, taken over (what it had restored dropped).
  returned: success, or failure after the restore began
  type: dict
  sample: {"pid": 4242, "since": "2024-05-01T00:00:00.000000Z", "backup": "nightly-2024-04-30", "dropped": ["shop"]}
restore:
  description: In check mode, the namespaces that would be restored, with their document counts.
  returned: check mode
  type: list
  elements: dict
  sample: [{"namespace": "shop.orders", "type": "collection", "documents": 1000}]
compare:
  description: In check mode, what would be compared.
  returned: check mode
  type: list
  elements: str
  sample: ["document count per collection", "content hash per collection", "collection options", "index definitions"]
would_drop_first:
  description: In check mode with O(drop_scratch=true), the user databases of the scratch server that would be dropped.
  returned: check mode
  type: list
  elements: str
  sample: ["old"]
refused:
  description: In check mode, why the run would be refused (the scratch server is not empty or in use), or null.
  returned: check mode
  type: str
  sample: null
'''

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.module import MongoDBModule
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import InvalidOption
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.verify import engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.verify import scratch

# Connection options that name a server: meaningless with a temporary mongod.
SERVER_OPTIONS = ("uri", "login_host", "login_port", "login_user", "login_password", "replica_set")


def verify_options(params):
    return engine.VerifyOptions(
        backup_root=params["backup_root"], label=params["label"], path=params["path"],
        target_time=params["target_time"], replica_set=params["backup_replica_set"], drop_scratch=params["drop_scratch"],
        apply_mode=params["oplog_apply_mode"], num_parallel_collections=params["num_parallel_collections"])


def run_with_temporary_mongod(module, options):
    params = module.params
    given = [name for name in SERVER_OPTIONS if params[name] is not None]
    if given:
        raise InvalidOption("scratch_mongod starts its own scratch server; remove %s" % ", ".join(given))
    server = scratch.TemporaryMongod(params["scratch_mongod"], parent=params["scratch_dir"])
    if module.check_mode:
        return engine.verify(None, options, scratch_description={"kind": "temporary mongod", "binary": server.binary},
                             check_mode=True)
    server.start()
    try:
        client = server.client()
        try:
            return engine.verify(client, options, scratch_description=server.describe())
        finally:
            client.close()
    finally:
        server.stop()


def run_module(module):
    options = verify_options(module.params)
    if module.params["scratch_mongod"]:
        return run_with_temporary_mongod(module, options)
    client = client_utils.connect(module.connection_options)
    try:
        return engine.verify(client, options, scratch_description={"kind": "uri"}, check_mode=module.check_mode)
    finally:
        client.close()


def main():
    module = MongoDBModule(
        argument_spec=dict(
            backup_root=dict(type="path"),
            label=dict(type="str"),
            path=dict(type="path"),
            target_time=dict(type="str"),
            backup_replica_set=dict(type="str"),
            drop_scratch=dict(type="bool", default=False),
            scratch_mongod=dict(type="str"),
            scratch_dir=dict(type="path"),
            oplog_apply_mode=dict(type="str", default="auto", choices=["auto", "applyops", "crud"]),
            num_parallel_collections=dict(type="int", default=4),
        ),
        mutually_exclusive=[["label", "path", "target_time"]],
        required_one_of=[["uri", "login_host", "scratch_mongod"]],
        required_by={"scratch_dir": "scratch_mongod"},
        supports_check_mode=True,
    )
    changed, result = module.run(run_module, module)
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
