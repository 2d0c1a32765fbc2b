#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: mongodb_backup_retention
short_description: Age out old backups and oplog slices of a backup root (GFS, keep last, point-in-time window)
version_added: "1.3.0"
description:
  - Applies a retention policy to the catalog (C(catalog.json)) of a backup root and deletes the full backups,
    snapshot sets and archived oplog slices it does not keep. Every survivor is returned with the reasons it is kept.
  - Each replica set of the catalog is planned on its own (or only O(replica_set)). A backup's time is its finish
    time, in UTC. A backup is kept when any rule keeps it; the rules add up.
  - O(keep_last) keeps the newest backups. O(keep_daily), O(keep_weekly), O(keep_monthly) and O(keep_yearly) keep the
    newest backup of each of that many most recent UTC days, ISO weeks, months and years B(that have a backup), as
    restic's C(forget) counts them; a day without a backup does not use up one of the days.
  - O(pitr_window_days) keeps every time of the last days restorable that is restorable today. It keeps every backup
    finished inside the window, the newest point-in-time base (a backup or snapshot set with an oplog end) at or
    before the window's start, and the oplog slices from that base on. Older backups kept by the other rules stay
    restorable to their own point only; the window decides how far back the slices go.
  - Without O(pitr_window_days), every point-in-time base kept by a rule keeps its whole window, so slices are deleted
    only before the oldest such base.
  - "Always kept, whatever the policy, each with its reason: the newest verified backup (its catalog entry says
    C(verified) with C(ok) true), the newest backup, a backup without a readable time, a backup outside the backup
    root. These keep the backup itself, not its window of slices. A slice after the oldest kept base is never
    deleted, even where no kept window reaches it."
  - Oplog gaps and chains broken by them are reported (RV(gaps), RV(broken_chains)), never "repaired" by deleting
    what surrounds them.
  - Crash-safe. Under the catalog lock, one atomic write takes the deleted entries out of the catalog and lists their
    files as C(pending_deletions); then the files are removed; then a second write clears that list. A run
    interrupted in between leaves files the catalog names in C(pending_deletions), and the next run removes them
    first (RV(pending_deletions)). It also removes slice files that no catalog entry lists (RV(orphans_removed)).
  - Never removes a C(*.partial), which a live run may be writing (RV(in_progress)), nor a complete backup that the
    catalog does not list (RV(unregistered_backups); a dump is renamed into place before it is registered).
  - Snapshot sets are aged out like backups. An LVM copy's files are removed; for EBS and GCE sets the local record
    is removed and RV(cloud_snapshot_sets) lists the sets to delete with M(dbops.mongodb_backup.ebs_snapshot) or
    M(dbops.mongodb_backup.gce_disk_snapshot) and O(dbops.mongodb_backup.ebs_snapshot#module:state=absent)
    (the role C(replicaset_backup) does it with C(replicaset_backup_retention)).
  - Needs no connection to MongoDB.
extends_documentation_fragment:
  - dbops.mongodb_backup.attributes
  - dbops.mongodb_backup.attributes.platform
attributes:
  check_mode:
    support: full
    details: Returns exactly what would be deleted (the same plan, pending deletions and orphans) and why each survivor
      is kept, and deletes and writes nothing.
  diff_mode:
    support: none
options:
  backup_root:
    description: The backup root, the directory holding the catalog C(catalog.json). It must exist.
    type: path
    required: true
  keep_last:
    description: Keep this many newest backups.
    type: int
  keep_daily:
    description: Keep the newest backup of each of this many most recent UTC days that have a backup.
    type: int
  keep_weekly:
    description: Keep the newest backup of each of this many most recent ISO weeks (Monday to Sunday, UTC) that have a backup.
    type: int
  keep_monthly:
    description: Keep the newest backup of each of this many most recent UTC months that have a backup.
    type: int
  keep_yearly:
    description: Keep the newest backup of each of this many most recent UTC years that have a backup.
    type: int
  pitr_window_days:
    description:
      - Keep every time of this many last days restorable that is restorable today (backups inside the window, the
        newest point-in-time base at or before its start, and the oplog slices from that base on).
    type: int
  replica_set:
    description:
      - Apply the policy to this replica set only, when the catalog holds several. A name the catalog does not hold fails.
      - When unset, each replica set of the catalog is planned on its own.
    type: str
  now:
    description:
      - The time the policy is applied at, as the catalog records times (C(2024-05-01T00:00:00Z)); the clock when unset.
        For reproducible plans and tests.
    type: str
notes:
  - A policy that sets nothing (every count unset or 0) is refused before anything is read or deleted.
  - Idempotent. A second run with the same policy and time deletes nothing and reports no change.
  - The catalog lock is held for the whole run, so oplog archiving and backup registrations wait for it.
seealso:
  - module: dbops.mongodb_backup.mongodb_backup_info
  - module: dbops.mongodb_backup.mongodb_backup_catalog
  - module: dbops.mongodb_backup.ebs_snapshot
  - module: dbops.mongodb_backup.gce_disk_snapshot
author:
  - dbops.mongodb_backup contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: See what a GFS policy with a 7-day point-in-time window would delete
  dbops.mongodb_backup.mongodb_backup_retention:
    backup_root: /backups/mongodb/db1
    keep_daily: 30
    keep_weekly: 12
    keep_monthly: 12
    keep_yearly: 3
    pitr_window_days: 7
  check_mode: true
  register: retention

- name: Show why each backup is kept
  ansible.builtin.debug:
    msg: "{{ retention.kept_backups | map(attribute='label') | zip(retention.kept_backups | map(attribute='reasons')) | list }}"

- name: Keep the last 14 backups of rs0 only
  dbops.mongodb_backup.mongodb_backup_retention:
    backup_root: /backups/mongodb/shared
    replica_set: rs0
    keep_last: 14
  register: aged

- name: Delete the EBS snapshot sets that aged out
  dbops.mongodb_backup.ebs_snapshot:
    label: "{{ item.label }}"
    region: "{{ item.region }}"
    state: absent
  loop: "{{ aged.cloud_snapshot_sets | selectattr('provider', 'equalto', 'ebs') | list }}"
'''

RETURN = r'''
catalog:
  description: Path of the catalog file of O(backup_root).
  returned: always
  type: str
  sample: /backups/mongodb/db1/catalog.json
now:
  description: The time the policy was applied at.
  returned: always
  type: str
  sample: "2024-05-01T00:00:00.000000Z"
policy:
  description: The rules of the policy that are set.
  returned: always
  type: dict
  sample: {"keep_daily": 30, "pitr_window_days": 7}
replica_sets:
  description: The replica sets planned (null for backups of a deployment without one).
  returned: always
  type: list
  elements: str
  sample: ["rs0"]
deleted_backups:
  description:
    - The backups and snapshot sets deleted (would be deleted in check mode), with C(label), C(backup_id), C(path),
      C(kind), C(provider), C(finished_at), C(replica_set), C(oplog_end) and C(bytes).
  returned: always
  type: list
  elements: dict
  sample: [{"label": "nightly-2024-03-01", "backup_id": "0b6f0f8e", "path": "nightly-2024-03-01", "kind": "logical",
            "provider": null, "finished_at": "2024-03-01T00:03:12.000000Z", "replica_set": "rs0",
            "oplog_end": "1709251392:7", "bytes": 20971520}]
deleted_slices:
  description: The oplog slices deleted (would be deleted in check mode), with C(replica_set), C(file), C(first_ts),
    C(last_ts) and C(bytes).
  returned: always
  type: list
  elements: dict
  sample: [{"replica_set": "rs0", "file": "oplog/rs0/1709251392-7_1709254992-1.bson.gz", "first_ts": "1709251392:7",
            "last_ts": "1709254992:1", "bytes": 210233}]
kept_backups:
  description: The backups kept, with the fields of RV(deleted_backups) and C(reasons), every rule that keeps it.
  returned: always
  type: list
  elements: dict
  sample: [{"label": "nightly-2024-04-28", "path": "nightly-2024-04-28", "kind": "logical",
            "finished_at": "2024-04-28T00:03:12.000000Z", "replica_set": "rs0",
            "reasons": ["daily 2024-04-28", "weekly 2024-W17",
                        "inside the point-in-time window of 7 days (from 2024-04-24T00:00:00Z)"]}]
kept_slices:
  description:
    - The oplog slices kept, as runs of consecutive slices of one replica set kept for the same reasons, with
      C(count), C(first_file), C(last_file), C(first_ts), C(last_ts), C(first_time), C(last_time), C(bytes) and C(reasons).
  returned: always
  type: list
  elements: dict
  sample: [{"replica_set": "rs0", "count": 168, "first_file": "oplog/rs0/1713916800-1_1713920400-1.bson.gz",
            "last_file": "oplog/rs0/1714518000-1_1714521600-1.bson.gz", "first_ts": "1713916800:1",
            "last_ts": "1714521600:1", "first_time": "2024-04-24T00:00:00Z", "last_time": "2024-05-01T00:00:00Z",
            "bytes": 35319144, "reasons": ["point-in-time window of backup nightly-2024-04-23"]}]
pitr_windows:
  description: With O(pitr_window_days), per replica set the window's start and the base kept for it (null when none).
  returned: always
  type: list
  elements: dict
  sample: [{"replica_set": "rs0", "days": 7, "start_time": "2024-04-24T00:00:00Z", "base": "nightly-2024-04-23",
            "base_oplog_end": "1713830592:7"}]
gaps:
  description: The oplog gaps recorded for the planned replica sets. They are reported, never deleted around.
  returned: always
  type: list
  elements: dict
  sample: [{"replica_set": "rs0", "last_archived_ts": "1700000001:4", "oldest_available_ts": "1700000123:1",
            "detected_at": "2024-05-01T00:00:00.000000Z"}]
broken_chains:
  description:
    - Where the point-in-time window of a kept base ends before the newest slice, with C(backup_label), C(ends_ts),
      C(ends_time), the C(gap) that ends it (or null), C(next_slice) (the slice after the break, or null) and C(msg).
  returned: always
  type: list
  elements: dict
  sample: [{"replica_set": "rs0", "backup_label": "nightly-2024-04-23", "ends_ts": "1714000000:4",
            "ends_time": "2024-04-24T23:06:40Z", "gap": {"last_archived_ts": "1714000000:4"}, "next_slice": null,
            "msg": "the point-in-time window of nightly-2024-04-23 ends at 1714000000:4 ..."}]
pending_deletions:
  description:
    - Deletions an interrupted earlier run left (its catalog entries gone, its files still there), removed by this run
      (would be, in check mode), with C(what), C(name), C(paths) and C(since).
  returned: always
  type: list
  elements: dict
  sample: [{"what": "backup", "name": "nightly-2024-02-01", "paths": ["nightly-2024-02-01"],
            "since": "2024-04-30T00:05:00.000000Z", "bytes": 20971520}]
orphans_removed:
  description: Slice files below C(oplog/<replica set>/) that no catalog entry lists, removed (would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: ["oplog/rs0/1714521600-1_1714525200-3.bson.gz"]
cloud_snapshot_sets:
  description:
    - EBS and GCE snapshot sets among the deleted backups, to delete with M(dbops.mongodb_backup.ebs_snapshot) or
      M(dbops.mongodb_backup.gce_disk_snapshot) and C(state=absent), by C(label); with C(provider), C(backup_label),
      C(snapshot_set), and C(region) and C(snapshot_ids) (EBS) or C(project) and C(snapshot_names) (GCE). A sharded
      set has one entry per member, labelled C(<label>.<shard or config>).
    - Also the sets of RV(pending_deletions), so the sets of a run killed after its catalog write are handed over by
      the next run. Deleting a set that is already gone changes nothing, so handing one over twice is harmless.
  returned: always
  type: list
  elements: dict
  sample: [{"provider": "ebs", "label": "snapshot-20240301T000000Z", "backup_label": "snapshot-20240301T000000Z",
            "snapshot_set": "9f1c2d3e", "region": "eu-west-1", "snapshot_ids": ["snap-0a1b2c3d4e5f67890"]}]
unregistered_backups:
  description: Complete backups below O(backup_root) that the catalog does not list; left in place.
  returned: always
  type: list
  elements: str
  sample: ["logical-20240501T000000Z"]
in_progress:
  description: C(*.partial) entries (a run may be writing them) in the root and the slice directories, with their age; left in place.
  returned: always
  type: list
  elements: dict
  sample: [{"path": "logical-20240501T000000Z.partial", "age_seconds": 42}]
failed:
  description: Deletions whose files could not be removed (C(name), C(cause)); they stay pending for the next run, and the task fails.
  returned: always
  type: list
  elements: dict
  sample: []
left_in_place:
  description:
    - Pending deletions of an earlier run whose files the catalog lists again (registered again since, for example by
      M(dbops.mongodb_backup.mongodb_backup_catalog) over the whole root), with C(name) and C(cause); their files are
      kept and they leave the pending list.
  returned: always
  type: list
  elements: dict
  sample: []
bytes_freed:
  description: Bytes of the backups, slices and orphans removed (that would be removed, in check mode), as recorded.
  returned: always
  type: int
  sample: 629145600
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.module import run_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.retention import apply
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.retention.policy import OPTIONS, Policy


def run_module(module):
    params = module.params
    policy = Policy(**dict((option, params[option]) for option in OPTIONS))  # refused before anything is read
    now = apply.parse_now(params["now"])
    return apply.run(params["backup_root"], policy, now=now, replica_set=params["replica_set"],
                     check_mode=module.check_mode)


def main():
    spec = dict(backup_root=dict(type="path", required=True), replica_set=dict(type="str"), now=dict(type="str"))
    spec.update((option, dict(type="int")) for option in OPTIONS)
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    changed, result = run_engine(module, run_module, module)
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
