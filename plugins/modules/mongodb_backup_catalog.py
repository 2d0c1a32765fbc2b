#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: mongodb_backup_catalog
short_description: Add full backups to the catalog of a backup root, or take them out
version_added: "1.0.0"
description:
  - Keeps the catalog (C(catalog.json)) of a backup root, the list of full backups that
    M(dbops.mongodb_backup.mongodb_backup_info) reports and point-in-time restores plan from.
  - With O(state=present), adds the complete backup at O(path) (a directory, or an archive file with its
    C(<archive>.manifest.json)), or, without O(path), every complete backup found under O(backup_root).
    A backup already listed (same backup id) is left alone, so the task is idempotent.
  - With O(state=absent), removes the entries of the backup at O(path) or with O(label). The backup's files
    are not touched; an entry that is not there changes nothing.
  - The catalog is replaced atomically under an exclusive lock (C(catalog.lock)), so runs that change it at
    the same time lose nothing. It is written only when it changes.
  - With O(snapshot), records a snapshot set (EBS, GCE or LVM) as a backup of kind C(snapshot), which gets the
    directory C(<backup_root>/<label>) with a manifest, like a logical backup, and its catalog entry. A replica
    set's snapshot with the oplog time at its lock is a point-in-time base, as a logical backup with an oplog,
    so M(dbops.mongodb_backup.mongodb_backup_info) shows its window and plans restores from it.
  - Needs no connection to MongoDB.
extends_documentation_fragment:
  - dbops.mongodb_backup.attributes
  - dbops.mongodb_backup.attributes.platform
attributes:
  check_mode:
    support: full
    details: Reports the entries it would add or remove, and the catalog as it would be, without writing anything.
  diff_mode:
    support: full
    details: The diff lists the paths of the backups in the catalog before and after.
options:
  backup_root:
    description:
      - Directory holding the catalog C(catalog.json); the catalog is created there when missing. It must exist.
    type: path
    required: true
  state:
    description:
      - V(present) adds backups to the catalog, V(absent) removes entries from it.
    type: str
    choices: [present, absent]
    default: present
  path:
    description:
      - The backup directory or archive file, relative to O(backup_root) or absolute.
      - With O(state=present), it must be a complete backup (it has its manifest). When unset, every complete
        backup under O(backup_root) is added (unfinished C(*.partial) targets and the oplog slices are skipped).
      - With O(state=absent), the entry with this path is removed. Mutually exclusive with O(label).
    type: path
  label:
    description:
      - With O(state=absent), remove every entry with this label.
      - One of O(path) and O(label) is required with O(state=absent).
    type: str
  snapshot:
    description:
      - A snapshot set to record, with O(state=present). Mutually exclusive with O(path).
      - Idempotent by O(snapshot.snapshot_set), so the same set recorded again changes nothing. A label that
        another backup of the root already uses is refused.
    type: dict
    suboptions:
      provider:
        description: Where the snapshots are.
        type: str
        choices: [ebs, gce, lvm]
        required: true
      label:
        description:
          - The snapshot set's label; the backup directory is C(<backup_root>/<label>).
          - Letters, digits and the characters C(.), C(_), C(:), C(+) and C(-).
        type: str
        required: true
      snapshot_set:
        description: The snapshot-set id (RV(dbops.mongodb_backup.ebs_snapshot#module:snapshot_set)); generated when unset.
        type: str
      replica_set:
        description: The replica set the snapshots hold.
        type: str
      shard:
        description: The shard the snapshots hold, for one shard of a cluster.
        type: str
      member:
        description: The member (C(host:port)) that was locked and snapshotted.
        type: str
      oplog_ts:
        description:
          - The newest oplog time (C(secs:inc)) when the member was locked
            (RV(dbops.mongodb_backup.mongodb_fsync_lock#module:oplog_time_at_lock)). The snapshot holds every
            write through it, so a point-in-time restore replays the archived oplog from there.
          - Without it the snapshot set is recorded but is no point-in-time base.
        type: str
      snapshots:
        description:
          - The snapshots of the set as the snapshot module returned them (RV(dbops.mongodb_backup.ebs_snapshot#module:snapshots)
            or RV(dbops.mongodb_backup.gce_disk_snapshot#module:snapshots)); kept in the manifest for restores.
          - Required for O(snapshot.provider=ebs) and O(snapshot.provider=gce) unless O(snapshot.members) lists them.
        type: list
        elements: dict
      members:
        description:
          - For a sharded cluster, one entry per locked member (every shard and a config server) with the keys
            C(replica_set), C(shard), C(member), C(oplog_ts) and C(snapshots). Each member was locked at its own
            oplog time, so a cluster snapshot set is restorable as a whole and is no point-in-time base.
        type: list
        elements: dict
      files:
        description:
          - For O(snapshot.provider=lvm), the directory directly under O(backup_root) that the snapshot was copied
            to (C(<label>.partial)). Every file gets its sha256 in the manifest, files become 0600 and directories
            0700, and the directory is renamed to C(<label>) after the manifest is written.
        type: path
      started_at:
        description: When the snapshot run started (ISO-8601 UTC).
        type: str
      finished_at:
        description: When the snapshots were taken (ISO-8601 UTC); now when unset.
        type: str
notes:
  - The catalog and its lock file are created with mode 0600.
  - Before version 1.0.0 of this module, M(dbops.mongodb_backup.mongodb_backup_info) registered backups with
    its option C(register_backups); an C(_info) module never changes anything, so that moved here.
seealso:
  - module: dbops.mongodb_backup.mongodb_backup_info
  - module: dbops.mongodb_backup.mongodb_dump
author:
  - dbops.mongodb_backup contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Add last night's backup to the catalog of its root
  dbops.mongodb_backup.mongodb_backup_catalog:
    backup_root: /backups/mongodb/db1
    path: nightly-2024-05-01

- name: Add every complete backup found under the root (after copying backups in from elsewhere)
  dbops.mongodb_backup.mongodb_backup_catalog:
    backup_root: /backups/mongodb/db1

- name: Record an EBS snapshot set as a point-in-time base
  dbops.mongodb_backup.mongodb_backup_catalog:
    backup_root: /backups/mongodb/db1
    snapshot:
      provider: ebs
      label: "{{ ebs.label }}"
      snapshot_set: "{{ ebs.snapshot_set }}"
      replica_set: rs0
      member: db3.example.com:27017
      oplog_ts: "{{ lock.oplog_time_at_lock.ts }}"
      snapshots: "{{ ebs.snapshots }}"

- name: Take a backup out of the catalog before deleting its files
  dbops.mongodb_backup.mongodb_backup_catalog:
    backup_root: /backups/mongodb/db1
    label: nightly-2024-04-01
    state: absent
'''

RETURN = r'''
catalog:
  description: Path of the catalog file of O(backup_root).
  returned: always
  type: str
  sample: /backups/mongodb/catalog.json
added:
  description: The entries added (would be added in check mode), with C(label), C(backup_id), C(path), C(format),
    C(finished_at) and C(replica_set).
  returned: always
  type: list
  elements: dict
  sample: [{"label": "nightly-2024-05-01", "backup_id": "0b6f0f8e-2f63-4a43-9d0e-5b0d9a1b2c3d",
            "path": "nightly-2024-05-01", "format": "directory", "finished_at": "2024-05-01T00:03:12.000000Z",
            "replica_set": "rs0"}]
removed:
  description: The entries removed (would be removed in check mode), with the same fields as RV(added).
  returned: always
  type: list
  elements: dict
  sample: []
backups:
  description:
    - The full backups in the catalog, oldest first. C(path) is relative to O(backup_root), C(absolute_path) is not.
    - C(oplog_start) and C(oplog_end) are C(secs:inc) timestamps, null for a backup without oplog.
    - C(bytes) is the size on disk, C(data_bytes) the uncompressed BSON size.
    - C(verified) is the last test restore of the backup (M(dbops.mongodb_backup.mongodb_backup_verify)), with
      C(ok), C(at), C(restore_seconds), C(mb_per_s), C(collections), C(documents), C(target_time),
      C(failures); null when it was never verified.
  returned: always
  type: list
  elements: dict
  sample: [{"label": "nightly-2024-05-01", "backup_id": "0b6f0f8e-2f63-4a43-9d0e-5b0d9a1b2c3d",
            "path": "db1/nightly-2024-05-01", "absolute_path": "/backups/mongodb/db1/nightly-2024-05-01",
            "format": "directory", "started_at": "2024-05-01T00:00:00.000000Z",
            "finished_at": "2024-05-01T00:03:12.000000Z", "replica_set": "rs0", "member": "db2:27017",
            "oplog_start": "1714521600:1", "oplog_end": "1714521792:7", "bytes": 20971520,
            "data_bytes": 73400320, "documents": 120000,
            "verified": {"ok": true, "at": "2024-05-01T01:00:00.000000Z", "restore_seconds": 95.2,
                         "mb_per_s": 0.77, "collections": 12, "documents": 120000, "target_time": null,
                         "failures": []},
            "age_seconds": 3600}]
'''

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog import entries as catalog_entries
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog import report
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import BackupError
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.snapshots import record as snapshot_record


def run_module(module, result):
    params = module.params
    root = params["backup_root"]
    if params["snapshot"] is not None:
        snapshot = dict((k, v) for k, v in params["snapshot"].items() if v is not None)
        changed, record = snapshot_record.record_snapshot_set(
            root, snapshot_record.SnapshotSet(**snapshot), check_mode=module.check_mode)
        catalog = catalog_entries.Catalog.load(root)
        added, removed = ([catalog_entries.entry(record)] if changed else []), []
    elif params["state"] == "present":
        catalog, added = catalog_entries.register(
            root, None if params["path"] is None else [params["path"]], check_mode=module.check_mode)
        removed = []
    else:
        catalog, removed = catalog_entries.unregister(
            root, path=params["path"], label=params["label"], check_mode=module.check_mode)
        added = []
    backups = report.summary(catalog, now=time.time())["backups"]
    result.update(catalog=catalog.path, added=added, removed=removed, backups=backups,
                  changed=bool(added or removed))
    if module._diff:
        after = [b["path"] for b in backups]
        before = [p for p in after if p not in [a["path"] for a in added]] + [r["path"] for r in removed]
        result["diff"] = dict(before="".join(p + "\n" for p in sorted(before)),
                              after="".join(p + "\n" for p in sorted(after)),
                              before_header=catalog.path, after_header=catalog.path)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            backup_root=dict(type="path", required=True),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            path=dict(type="path"),
            label=dict(type="str"),
            snapshot=dict(type="dict", options=dict(
                provider=dict(type="str", required=True, choices=list(snapshot_record.PROVIDERS)),
                label=dict(type="str", required=True),
                snapshot_set=dict(type="str"),
                replica_set=dict(type="str"),
                shard=dict(type="str"),
                member=dict(type="str"),
                oplog_ts=dict(type="str"),
                snapshots=dict(type="list", elements="dict"),
                members=dict(type="list", elements="dict"),
                files=dict(type="path"),
                started_at=dict(type="str"),
                finished_at=dict(type="str"),
            )),
        ),
        mutually_exclusive=[["path", "label"], ["snapshot", "path"], ["snapshot", "label"]],
        required_if=[["state", "absent", ["path", "label"], True]],
        supports_check_mode=True,
    )
    if module.params["snapshot"] is not None and module.params["state"] != "present":
        module.fail_json(msg="snapshot records a snapshot set (state=present); to take one out of the catalog, "
                             "give its label with state=absent")
    if module.params["state"] == "present" and module.params["label"] is not None:
        module.fail_json(msg="label only selects entries to remove (state=absent); to add a backup, give its "
                             "path, or nothing to add every complete backup under backup_root")
    result = dict(changed=False)
    try:
        run_module(module, result)
    except BackupError as exc:  # the one place an engine error becomes a failed task
        result.update(exc.details)
        result.update(msg=exc.message)
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
