#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: gce_disk_restore
short_description: Create disks from a GCE snapshot set and attach them to an instance
version_added: "1.2.0"
description:
  - Restores a snapshot set taken by M(dbops.mongodb_backup.gce_disk_snapshot) onto an instance, for
    M(dbops.mongodb_backup.mongodb_restore) O(dbops.mongodb_backup.mongodb_restore#module:oplog_only) to replay
    the archived oplog after it (the role C(snapshot_restore) does both).
  - Creates one zonal disk per snapshot in O(zone), named from O(instance) and the snapshot's source disk, and
    attaches it to O(instance) with the source disk's name as device name (C(/dev/disk/by-id/google-<device>))
    unless O(device_names) maps it to another.
  - Every snapshot must be C(READY). Everything is checked before anything is created; a disk of the same name
    made from another snapshot, or a device name the instance uses for another disk, fails the task naming it.
  - Idempotent. A disk already made from its snapshot is not made again, a disk already attached is not attached
    again; a rerun after a failure finishes the work. Nothing is ever detached or deleted.
extends_documentation_fragment:
  - dbops.mongodb_backup.attributes
  - dbops.mongodb_backup.attributes.platform
  - dbops.mongodb_backup.gce
attributes:
  check_mode:
    support: full
    details: Lists the disks it would create and attach, after the same checks; creates nothing.
  diff_mode:
    support: none
options:
  label:
    description: The label of the snapshot set (the C(dbops-backup-label) label of its snapshots).
    type: str
  snapshots:
    description: The names of the snapshots of the set, instead of O(label).
    type: list
    elements: str
  zone:
    description: The zone of O(instance); the disks are made there.
    type: str
    required: true
  instance:
    description: The instance to attach the disks to, usually stopped or without a running C(mongod).
    type: str
    required: true
  disk_type:
    description: The type of the new disks, such as C(pd-balanced), C(pd-ssd) or C(hyperdisk-balanced).
    type: str
    default: pd-balanced
  device_names:
    description: Device names by source disk name, for disks not to be attached under their source's name.
    type: dict
    default: {}
  labels:
    description:
      - Labels on the new disks. C(dbops-restored-from) is added, naming the set each snapshot belongs to (its
        C(dbops-backup-label) label).
    type: dict
    default: {}
  wait_timeout:
    description: Seconds to wait for each create and attach operation.
    type: int
    default: 1800
  poll_interval:
    description: Seconds between two looks at an operation.
    type: float
    default: 5
notes:
  - Needs the Compute permissions C(compute.snapshots.list), C(compute.snapshots.get),
    C(compute.snapshots.useReadOnly), C(compute.disks.create), C(compute.disks.get), C(compute.disks.use),
    C(compute.instances.get), C(compute.instances.attachDisk) and C(compute.zoneOperations.get).
seealso:
  - module: dbops.mongodb_backup.gce_disk_snapshot
  - module: dbops.mongodb_backup.mongodb_restore
author:
  - dbops.mongodb_backup contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Build the disks of last night's set on the restore instance
  dbops.mongodb_backup.gce_disk_restore:
    project: shop-prod
    label: nightly-2024-05-01-db3
    zone: europe-west1-b
    instance: restore-1
    disk_type: pd-ssd
  register: restored

- name: Mount the data disk where the source had it
  ansible.posix.mount:
    path: /var/lib/mongodb
    src: "{{ restored.disks[0].device_path }}"
    fstype: xfs
    state: mounted
'''

RETURN = r'''
instance:
  description: The instance the disks are attached to.
  returned: always
  type: str
  sample: restore-1
zone:
  description: The zone of the instance and the disks.
  returned: always
  type: str
  sample: europe-west1-b
disks:
  description:
    - One per snapshot, with C(name), C(snapshot), C(source_disk), C(device_name), C(device_path) (where the guest
      sees it), C(size_gb), C(self_link), C(created) (made by this run, or would be in check mode) and C(attached)
      (attached by this run, or would be).
  returned: always
  type: list
  elements: dict
  sample: [{"name": "restore-1-db3-data", "snapshot": "nightly-2024-05-01-db3-db3-data", "source_disk": "db3-data",
            "device_name": "db3-data", "device_path": "/dev/disk/by-id/google-db3-data", "size_gb": 500,
            "created": true, "attached": true,
            "self_link": "https://www.googleapis.com/compute/v1/projects/shop-prod/zones/europe-west1-b/disks/restore-1-db3-data"}]
'''

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.module import GCE_ARGUMENT_SPEC, run_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.snapshots import gce, gce_restore

ENGINE_OPTIONS = ("project", "zone", "instance", "label", "snapshots", "disk_type", "device_names", "labels",
                  "wait_timeout", "poll_interval")


def run_module(module):
    params = module.params
    options = gce_restore.GceRestoreOptions(**dict((name, params[name]) for name in ENGINE_OPTIONS))
    creds = gce.credentials(params["auth_kind"], params["service_account_file"], params["service_account_contents"])
    return gce_restore.run(gce.Clients(creds, params["api_endpoint"]), options, check_mode=module.check_mode)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            label=dict(type="str"),
            snapshots=dict(type="list", elements="str"),
            zone=dict(type="str", required=True),
            instance=dict(type="str", required=True),
            disk_type=dict(type="str", default=gce_restore.DEFAULT_DISK_TYPE),
            device_names=dict(type="dict", default={}),
            labels=dict(type="dict", default={}),
            wait_timeout=dict(type="int", default=gce.DEFAULT_WAIT_TIMEOUT),
            poll_interval=dict(type="float", default=gce.DEFAULT_POLL_INTERVAL),
            **GCE_ARGUMENT_SPEC
        ),
        required_one_of=[["label", "snapshots"]],
        mutually_exclusive=[["label", "snapshots"]],
        supports_check_mode=True,
    )
    if gce.GOOGLE_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib("google-cloud-compute"), exception=str(gce.GOOGLE_IMPORT_ERROR))
    changed, result = run_engine(module, run_module, module)
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
