#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: mongodb_backup_info
short_description: Report the backups, oplog slices and point-in-time windows of a backup root
version_added: "1.0.0"
description:
  - Reads the catalog (C(catalog.json)) of a backup root and returns its full backups, archived oplog
    slices, recorded oplog gaps, the point-in-time windows that can be restored, the newest backup and
    its age, and the space used.
  - With O(max_age) the task fails when the newest complete backup is older, so a scheduled job
    alerts when backups stop.
  - Reports the newest backup that passed a test restore (M(dbops.mongodb_backup.mongodb_backup_verify)) as
    RV(last_verified); with O(verify_max_age) the task fails when that backup is older, or when no backup has
    passed one, so a scheduled job alerts when verification stops or keeps failing.
  - With O(target_time) it also returns the restore plan for that time, the newest full backup that
    ends before it and the oplog slices that reach it, and fails when no backup or an oplog gap
    makes the time unreachable.
  - Windows count only the oplog slices whose files exist with the size the catalog recorded (and, with
    O(verify), the recorded sha256). A missing, truncated or corrupt slice ends its window before it; the
    window says so in C(stopped_by_damage), RV(damaged_slices) lists every such slice, and a warning names it.
  - Needs no connection to MongoDB. Never writes anything; M(dbops.mongodb_backup.mongodb_backup_catalog) adds
    backups to the catalog.
extends_documentation_fragment:
  - dbops.mongodb_backup.attributes.info_module
  - dbops.mongodb_backup.attributes.platform
options:
  backup_root:
    description:
      - Directory that holds the backups and their catalog C(catalog.json). It must exist.
    type: path
    required: true
  replica_set:
    description:
      - Report the windows of this replica set only, and plan O(target_time) for it.
      - Needed for O(target_time) when the root holds backups of several replica sets.
    type: str
  max_age:
    description:
      - Fail when the newest complete backup finished longer ago than this, or when there is none.
      - A number of seconds, or a number with a unit C(s), C(m), C(h), C(d) or C(w), such as C(90m), C(26h) or C(2d).
    type: str
  verify_max_age:
    description:
      - Fail when the newest backup that passed a test restore finished longer ago than this, or when no backup
        has passed one. The age is the backup's (how old the newest proven restore point is), not the
        verification's; RV(last_verified) shows both.
      - The same forms as O(max_age).
    type: str
    version_added: "1.3.0"
  target_time:
    description:
      - Plan a point-in-time restore to this time and return it as RV(restore_plan).
      - An ISO-8601 time (C(2024-05-01T12:00:00Z)) or an oplog timestamp C(<seconds>[:<increment>]).
        As C(mongorestore --oplogLimit), the entries before it are applied and the entry at it is not.
    type: str
  verify:
    description:
      - Also check every oplog slice file against its recorded sha256 (reads every slice) before counting it in
        a window. Without it, slices are checked for presence and size only.
      - Slices of the O(target_time) plan are always checked against their sha256.
    type: bool
    default: false
  register_backups:
    description:
      - Removed. This module never writes; setting it fails with a message pointing at
        M(dbops.mongodb_backup.mongodb_backup_catalog), which adds backups to the catalog.
    type: list
    elements: path
notes:
  - Times are UTC.
seealso:
  - module: dbops.mongodb_backup.mongodb_backup_catalog
  - module: dbops.mongodb_backup.mongodb_dump
  - module: dbops.mongodb_backup.mongodb_restore
author:
  - dbops.mongodb_backup contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Alert when the newest backup is older than 26 hours
  dbops.mongodb_backup.mongodb_backup_info:
    backup_root: /backups/mongodb
    max_age: 26h

- name: Alert when no backup younger than two days has passed a test restore
  dbops.mongodb_backup.mongodb_backup_info:
    backup_root: /backups/mongodb
    verify_max_age: 2d

- name: Which backup and oplog slices restore rs0 to noon
  dbops.mongodb_backup.mongodb_backup_info:
    backup_root: /backups/mongodb
    replica_set: rs0
    target_time: "2024-05-01T12:00:00Z"
  register: pitr

- name: Show the restorable windows
  ansible.builtin.debug:
    msg: "{{ pitr.windows | map(attribute='start_time') | zip(pitr.windows | map(attribute='end_time')) | list }}"
'''

RETURN = r'''
catalog:
  description: Path of the catalog file of O(backup_root).
  returned: always
  type: str
  sample: /backups/mongodb/catalog.json
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
slices:
  description:
    - Count and size of the archived oplog slices, in total and per replica set.
    - C(entries) counts each oplog entry once (consecutive slices share their boundary entry).
  returned: always
  type: dict
  sample: {"count": 24, "bytes": 1048576, "replica_sets": {"rs0": {"count": 24, "bytes": 1048576, "entries": 5000,
           "first_ts": "1714521792:7", "last_ts": "1714608000:3"}}}
gaps:
  description: Oplog gaps detected by capture, the entries after C(last_archived_ts) up to C(oldest_available_ts) being lost.
  returned: always
  type: list
  elements: dict
  sample: [{"replica_set": "rs0", "last_archived_ts": "1700000001:4", "oldest_available_ts": "1700000123:1",
            "detected_at": "2024-05-01T00:00:00.000000Z"}]
windows:
  description:
    - Restorable point-in-time windows, one per full backup with an oplog, from the end of its oplog through the
      archived slices that follow it without a break. Any time inside a window can be restored.
    - C(stopped_by_gap) is the recorded gap that ends the window early, or null.
    - C(stopped_by_damage) is the damaged slice that ends the window early (C(file), C(first_ts), C(last_ts),
      C(problem), C(msg)), or null.
  returned: always
  type: list
  elements: dict
  sample: [{"replica_set": "rs0", "backup_label": "nightly-2024-05-01", "backup_id": "0b6f0f8e",
            "start_ts": "1714521792:7", "start_time": "2024-05-01T00:03:12Z", "end_ts": "1714608000:3",
            "end_time": "2024-05-02T00:00:00Z", "seconds": 86208, "slices": 24, "stopped_by_gap": null,
            "stopped_by_damage": null}]
damaged_slices:
  description:
    - Oplog slices whose file is missing, unreadable, of another size than recorded, or (with O(verify)) whose
      sha256 differs, with what is wrong. Windows end before them.
  returned: always
  type: list
  elements: dict
  sample: [{"replica_set": "rs0", "file": "oplog/rs0/1714521792-7_1714525392-1.bson.gz",
            "first_ts": "1714521792:7", "last_ts": "1714525392:1",
            "problem": "its size is 1024 bytes, the catalog recorded 210233"}]
slices_verified:
  description: Whether the slices were checked against their sha256 (O(verify)), not only their size.
  returned: always
  type: bool
  sample: false
last_backup:
  description:
    - The newest full backup by finish time, and how old it is; null when there is none.
    - C(verified) is true when its last test restore passed.
  returned: always
  type: dict
  sample: {"label": "nightly-2024-05-01", "backup_id": "0b6f0f8e", "finished_at": "2024-05-01T00:03:12.000000Z",
           "age_seconds": 3600, "verified": false, "path": "/backups/mongodb/db1/nightly-2024-05-01"}
last_verified:
  description:
    - The newest full backup (by finish time) whose last test restore passed, with its age (C(age_seconds)), when it
      was verified (C(verified_at), C(verified_age_seconds)) and what the restore measured (C(restore_seconds),
      C(mb_per_s)); C(target_time) is set when a point in time after it was verified. Null when no backup has
      passed one.
  returned: always
  type: dict
  version_added: "1.3.0"
  sample: {"label": "nightly-2024-05-01", "backup_id": "0b6f0f8e", "path": "/backups/mongodb/db1/nightly-2024-05-01",
           "finished_at": "2024-05-01T00:03:12.000000Z", "age_seconds": 7200,
           "verified_at": "2024-05-01T01:00:00.000000Z", "verified_age_seconds": 3800, "restore_seconds": 95.2,
           "mb_per_s": 0.77, "target_time": null}
backup_bytes:
  description: Size on disk of the full backups.
  returned: always
  type: int
  sample: 20971520
total_bytes:
  description: Size on disk of the full backups and the oplog slices.
  returned: always
  type: int
  sample: 22020096
restore_plan:
  description:
    - With O(target_time), the newest full backup that ends before it and the oplog slices, in order, that bring it
      to the target. Pass C(oplog_limit) to the restore.
    - Every slice of the plan is checked against its recorded sha256 first (C(slices_verified)); a missing or
      corrupt slice fails the task, so a point-in-time restore refuses before writing anything.
  returned: when O(target_time) is set
  type: dict
  sample: {"replica_set": "rs0", "target_ts": "1714564800:0", "target_time": "2024-05-01T12:00:00Z",
           "oplog_limit": "1714564800:0", "reaches_ts": "1714566000:2",
           "backup": {"label": "nightly-2024-05-01", "absolute_path": "/backups/mongodb/db1/nightly-2024-05-01"},
           "slices": [{"file": "oplog/rs0/1714521792-7.bson.gz", "path": "/backups/mongodb/oplog/rs0/1714521792-7.bson.gz",
                       "first_ts": "1714521792:7", "last_ts": "1714525392:1", "sha256": "9f86d08..."}]}
'''

import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog import report
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog import pitr
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog import store as catalog_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import BackupError
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import timestamps


def run_module(module, result):
    params = module.params
    root = params["backup_root"]
    if params["register_backups"]:
        module.fail_json(msg="register_backups was removed from mongodb_backup_info, which never writes: add the "
                             "backups to the catalog with dbops.mongodb_backup.mongodb_backup_catalog (backup_root: "
                             "%s, path: <each backup>, state: present), then read it with this module" % root)
    for name in ("max_age", "verify_max_age"):
        if params[name] is not None:
            timestamps.parse_duration(params[name])  # a typo fails before anything is read
    target = None
    if params["target_time"] is not None:
        if timestamps.Timestamp is None:
            module.fail_json(msg=missing_required_lib("pymongo"))
        target = timestamps.parse_oplog_limit(params["target_time"])
    catalog = catalog_utils.Catalog.load(root)
    now = time.time()
    result.update(report.summary(catalog, now=now, verify=params["verify"]))
    damage = dict((s["file"], s["problem"]) for s in result["damaged_slices"])
    if params["replica_set"] is not None:
        result["windows"] = pitr.windows(catalog, params["replica_set"], damage=damage)
    for window in result["windows"]:
        if window["stopped_by_damage"]:
            module.warn(window["stopped_by_damage"]["msg"])
    for record in result["damaged_slices"]:
        module.warn("oplog slice %s (%s to %s) of replica set %s: %s; restorable windows end before it"
                    % (record["file"], record["first_ts"], record["last_ts"], record["replica_set"], record["problem"]))
    if target is not None:
        plan = pitr.restore_plan(catalog, target, params["replica_set"])
        # A plan is only offered once every slice it needs matches its recorded sha256.
        plan["slices_verified"] = pitr.verify_slices(root, plan)
        result["restore_plan"] = plan
    failures = []
    if params["max_age"] is not None:
        failure = report.check_max_age(result, params["max_age"], now=now)
        if failure:
            result["max_age_seconds"] = timestamps.parse_duration(params["max_age"])
            failures.append(failure)
    if params["verify_max_age"] is not None:
        failure = report.check_verify_max_age(result, params["verify_max_age"])
        if failure:
            result["verify_max_age_seconds"] = timestamps.parse_duration(params["verify_max_age"])
            failures.append(failure)
    if failures:
        module.fail_json(msg="; ".join(failures), **result)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            backup_root=dict(type="path", required=True),
            replica_set=dict(type="str"),
            max_age=dict(type="str"),
            verify_max_age=dict(type="str"),
            target_time=dict(type="str"),
            register_backups=dict(type="list", elements="path"),
            verify=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    result = dict(changed=False)
    try:
        run_module(module, result)
    except BackupError as exc:  # the one place an engine error becomes a failed task, with what was gathered
        result.update(exc.details)
        result.update(msg=exc.message)
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
