#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: gce_disk_snapshot
short_description: Snapshot the persistent disks of a MongoDB member as one labelled set, wait, delete by label
version_added: "1.2.0"
description:
  - Takes a snapshot set, a snapshot of every disk of one member (zonal or regional persistent disks), found again
    by its O(label). Snapshot names come from the label and the disk name, so a rerun finds them.
  - Every snapshot carries the labels C(dbops-backup-label), C(dbops-snapshot-set), C(dbops-replica-set),
    C(dbops-shard) and C(dbops-oplog-ts) (the oplog time at the lock, spelled C(secs-inc)) and O(labels), the
    O(snapshot_type) (C(STANDARD) or C(ARCHIVE)), O(storage_locations) and O(chain_name).
  - Each create operation is polled with the operations client of its zone or region, on the same endpoint and
    credentials; an operation that ends with errors fails the task with the service's messages, naming the disk.
    With O(wait), every snapshot must then become C(READY) (C(FAILED) fails naming it) within O(wait_timeout).
  - Idempotent by label. A set whose snapshots are there reports no change (and is waited for when not yet
    C(READY)); a set with the label but without some of the disks is refused.
  - O(state=absent) deletes every snapshot with the label and waits for the delete operations.
extends_documentation_fragment:
  - dbops.mongodb_backup.attributes
  - dbops.mongodb_backup.attributes.platform
  - dbops.mongodb_backup.gce
attributes:
  check_mode:
    support: full
    details: Lists the snapshots it would create or delete, and creates and deletes nothing.
  diff_mode:
    support: none
options:
  label:
    description:
      - The name of the snapshot set; how it is found again. A GCE label value, lowercase letters, digits, C(_)
        and C(-), at most 63 characters.
    type: str
    required: true
  state:
    description: V(present) takes (or finds) the set; V(absent) deletes it.
    type: str
    choices: [present, absent]
    default: present
  disks:
    description: The disks to snapshot, each with C(name) and either C(zone) or C(region) (a regional disk).
    type: list
    elements: dict
  guest_flush:
    description:
      - Ask the guest agent of the instance to flush before the snapshot (zonal disks only). Under an fsync lock
        the disks are consistent already.
    type: bool
    default: false
  snapshot_type:
    description: C(STANDARD), or C(ARCHIVE) for cheaper long-term storage.
    type: str
    choices: [STANDARD, ARCHIVE]
    default: STANDARD
  storage_locations:
    description: Where the snapshots are stored (a multi-region such as C(eu), or a region).
    type: list
    elements: str
  labels:
    description: More labels on every snapshot; the set's own labels win over these.
    type: dict
    default: {}
  chain_name:
    description: The snapshot chain the snapshots belong to.
    type: str
  description:
    description: Description of every snapshot; one naming the set when unset.
    type: str
  replica_set:
    description: The replica set the disks hold (a label).
    type: str
  shard:
    description: The shard the disks hold (a label).
    type: str
  oplog_ts:
    description: The newest oplog time (C(secs:inc)) when the member was locked (a label).
    type: str
  wait:
    description:
      - Wait until every snapshot is C(READY). The create operations are always waited for.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait for each operation, and for the snapshots.
    type: int
    default: 1800
  poll_interval:
    description: Seconds between two looks at an operation or a snapshot.
    type: float
    default: 5
notes:
  - Needs the Compute permissions C(compute.disks.createSnapshot), C(compute.snapshots.create),
    C(compute.snapshots.list), C(compute.snapshots.get), C(compute.snapshots.delete) and C(compute.*Operations.get).
seealso:
  - module: dbops.mongodb_backup.mongodb_fsync_lock
  - module: dbops.mongodb_backup.ebs_snapshot
author:
  - dbops.mongodb_backup contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Snapshot the data disk of the locked member into archive storage
  dbops.mongodb_backup.gce_disk_snapshot:
    project: shop-prod
    label: nightly-2024-05-01
    disks:
      - {name: db3-data, zone: europe-west1-b}
    snapshot_type: ARCHIVE
    storage_locations: [eu]
    replica_set: rs0
    oplog_ts: "{{ lock.oplog_time_at_lock.ts }}"

- name: Delete an old set
  dbops.mongodb_backup.gce_disk_snapshot:
    project: shop-prod
    label: nightly-2024-04-01
    state: absent
'''

RETURN = r'''
label:
  description: The label of the set.
  returned: always
  type: str
  sample: nightly-2024-05-01
snapshot_set:
  description: The id of the snapshot set (the C(dbops-snapshot-set) label).
  returned: when O(state=present)
  type: str
  sample: 9f1c2d3e4b5a69788796a5b4c3d2e1f0
oplog_ts:
  description: The oplog time of the set (C(secs:inc)).
  returned: when O(state=present)
  type: str
  sample: "1714521600:3"
snapshots:
  description:
    - The snapshots of the set, with C(name), C(source_disk), C(status), C(storage_bytes), C(disk_size_gb),
      C(snapshot_type), C(storage_locations), C(self_link) and C(labels). A restore creates one disk per snapshot.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "nightly-2024-05-01-db3-data", "source_disk": "db3-data", "status": "READY",
            "storage_bytes": 12884901888, "disk_size_gb": 500, "snapshot_type": "ARCHIVE",
            "storage_locations": ["eu"], "self_link": "https://www.googleapis.com/compute/v1/projects/shop-prod/global/snapshots/nightly-2024-05-01-db3-data"}]
deleted:
  description: With O(state=absent), the names of the snapshots deleted (would be deleted in check mode).
  returned: always
  type: list
  elements: str
  sample: ["nightly-2024-04-01-db3-data"]
'''

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.module import GCE_ARGUMENT_SPEC, run_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.snapshots import gce

ENGINE_OPTIONS = ("project", "label", "disks", "state", "guest_flush", "snapshot_type", "storage_locations", "labels",
                  "chain_name", "description", "replica_set", "shard", "oplog_ts", "wait", "wait_timeout",
                  "poll_interval")


def run_module(module):
    params = module.params
    options = gce.GceOptions(**dict((name, params[name]) for name in ENGINE_OPTIONS))
    creds = gce.credentials(params["auth_kind"], params["service_account_file"], params["service_account_contents"])
    return gce.run(gce.Clients(creds, params["api_endpoint"]), options, check_mode=module.check_mode)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            label=dict(type="str", required=True),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            disks=dict(type="list", elements="dict"),
            guest_flush=dict(type="bool", default=False),
            snapshot_type=dict(type="str", default="STANDARD", choices=list(gce.SNAPSHOT_TYPES)),
            storage_locations=dict(type="list", elements="str"),
            labels=dict(type="dict", default={}),
            chain_name=dict(type="str"),
            description=dict(type="str"),
            replica_set=dict(type="str"),
            shard=dict(type="str"),
            oplog_ts=dict(type="str"),
            wait=dict(type="bool", default=True),
            wait_timeout=dict(type="int", default=gce.DEFAULT_WAIT_TIMEOUT),
            poll_interval=dict(type="float", default=gce.DEFAULT_POLL_INTERVAL),
            **GCE_ARGUMENT_SPEC
        ),
        required_if=[["state", "present", ["disks"]]],
        supports_check_mode=True,
    )
    if gce.GOOGLE_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib("google-cloud-compute"), exception=str(gce.GOOGLE_IMPORT_ERROR))
    changed, result = run_engine(module, run_module, module)
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
