#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: ebs_snapshot
short_description: Snapshot the EBS volumes of a MongoDB member at one instant, wait, copy off-site, delete by label
version_added: "1.2.0"
description:
  - Takes a snapshot set, the snapshots of every volume of one member at one instant, found again by its O(label).
  - With O(instance_id), the instance's volumes go through EC2 C(CreateSnapshots), which starts them all at the same
    moment (crash-consistent across the volumes); the boot volume and O(exclude_volume_ids) are left out. With
    O(volume_ids), each volume gets its own C(CreateSnapshot), consistent together only under an fsync lock
    (M(dbops.mongodb_backup.mongodb_fsync_lock)).
  - Every snapshot is tagged at creation with the label, the snapshot-set id, the replica set, the shard and the
    oplog time at the lock (C(dbops:backup-label), C(dbops:snapshot-set), C(dbops:replica-set), C(dbops:shard),
    C(dbops:oplog-ts)), the volume and device it came from (C(dbops:volume), C(dbops:device)) and O(tags).
  - With O(wait), polls until every snapshot is C(completed). A snapshot in C(error) fails the task naming it; the
    timeout fails naming the snapshots not complete and their progress. The snapshots are kept either way, and a
    rerun with the same label waits for them instead of taking new ones.
  - With O(copy_to_region), copies every snapshot of the set to that region (encrypted with O(copy_kms_key_id) when
    given), tagged like the source plus C(dbops:source-snapshot), and waits for the copies.
  - Idempotent by label. A set with the label whose snapshots are complete reports no change; one still pending is
    waited for; copies already made are not made again. A set with the label but other volumes is refused.
  - O(state=absent) deletes every snapshot with the label (and its copies with O(include_copies)).
extends_documentation_fragment:
  - dbops.mongodb_backup.aws
  - dbops.mongodb_backup.attributes
  - dbops.mongodb_backup.attributes.platform
attributes:
  check_mode:
    support: full
    details: Plans the volumes it would snapshot, the copies it would make and the snapshots it would delete, and
      creates, copies and deletes nothing.
  diff_mode:
    support: none
options:
  label:
    description:
      - The name of the snapshot set; how it is found again. Letters, digits and the characters C(.), C(_), C(:), C(+)
        and C(-).
    type: str
    required: true
  state:
    description: V(present) takes (or finds) the set; V(absent) deletes it.
    type: str
    choices: [present, absent]
    default: present
  instance_id:
    description: Snapshot every EBS volume of this instance at one instant. Mutually exclusive with O(volume_ids).
    type: str
  exclude_boot_volume:
    description: With O(instance_id), leave out the root volume.
    type: bool
    default: true
  exclude_volume_ids:
    description: With O(instance_id), leave out these data volumes.
    type: list
    elements: str
  volume_ids:
    description: Snapshot these volumes, one C(CreateSnapshot) each. Mutually exclusive with O(instance_id).
    type: list
    elements: str
  replica_set:
    description: The replica set the volumes hold (a tag).
    type: str
  shard:
    description: The shard the volumes hold (a tag).
    type: str
  oplog_ts:
    description:
      - The newest oplog time (C(secs:inc)) when the member was locked, the RV(dbops.mongodb_backup.mongodb_fsync_lock#module:oplog_time_at_lock)
        of the lock (a tag). Point-in-time restores replay from there.
    type: str
  tags:
    description: More tags on every snapshot; the set's own tags win over these.
    type: dict
    default: {}
  description:
    description: Description of every snapshot; one naming the set when unset.
    type: str
  wait:
    description: Wait until every snapshot (and copy) is complete.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait for the snapshots, and again for the copies.
    type: int
    default: 1800
  poll_interval:
    description: Seconds between two looks at the snapshots' state.
    type: float
    default: 15
  copy_to_region:
    description: Copy the set to this region (off-site), once every snapshot is complete.
    type: str
  copy_kms_key_id:
    description: Encrypt the copies with this KMS key (id, alias or ARN in the destination region).
    type: str
  include_copies:
    description: With O(state=absent), delete the copies in O(copy_to_region) too.
    type: bool
    default: false
notes:
  - Needs the EC2 permissions C(DescribeInstances), C(DescribeVolumes), C(DescribeSnapshots), C(CreateSnapshots),
    C(CreateSnapshot), C(CreateTags), C(CopySnapshot), C(DeleteSnapshot).
  - An EBS snapshot holds the data of the moment it was started, so the fsync lock can be released as soon as this
    module returned with O(wait=false); a second run with the same label and O(wait=true) waits for the set
    (the role C(dbops.mongodb_backup.snapshot_backup) does so).
seealso:
  - module: dbops.mongodb_backup.mongodb_fsync_lock
  - module: dbops.mongodb_backup.mongodb_backup_catalog
author:
  - dbops.mongodb_backup contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Snapshot the data volumes of the locked member, then release the lock at once
  dbops.mongodb_backup.ebs_snapshot:
    label: nightly-2024-05-01
    instance_id: i-0123456789abcdef0
    replica_set: rs0
    oplog_ts: "{{ lock.oplog_time_at_lock.ts }}"
    wait: false
    region: eu-west-1
  register: started

- name: Wait for the set and copy it to another region, encrypted
  dbops.mongodb_backup.ebs_snapshot:
    label: nightly-2024-05-01
    instance_id: i-0123456789abcdef0
    copy_to_region: eu-central-1
    copy_kms_key_id: alias/backups
    region: eu-west-1

- name: Delete an old set and its copies
  dbops.mongodb_backup.ebs_snapshot:
    label: nightly-2024-04-01
    state: absent
    include_copies: true
    copy_to_region: eu-central-1
    region: eu-west-1
'''

RETURN = r'''
label:
  description: The label of the set.
  returned: always
  type: str
  sample: nightly-2024-05-01
snapshot_set:
  description: The id of the snapshot set (the C(dbops:snapshot-set) tag); null in check mode for a new set.
  returned: when O(state=present)
  type: str
  sample: 9f1c2d3e4b5a69788796a5b4c3d2e1f0
oplog_ts:
  description: The oplog time the set was tagged with.
  returned: when O(state=present)
  type: str
  sample: "1714521600:3"
snapshots:
  description:
    - The snapshots of the set, with C(snapshot_id), C(volume_id), C(device), C(volume_size) (GiB), C(state),
      C(progress), C(start_time), C(encrypted) and C(region). A restore builds one volume per snapshot at C(device).
  returned: always
  type: list
  elements: dict
  sample: [{"snapshot_id": "snap-0a1b2c3d4e5f67890", "volume_id": "vol-0a1b2c3d4e5f67890", "device": "/dev/sdf",
            "volume_size": 500, "state": "completed", "progress": "100%", "start_time": "2024-05-01T00:00:03+00:00",
            "encrypted": true, "region": "eu-west-1"}]
copies:
  description: The copies in O(copy_to_region), with C(snapshot_id), C(source_snapshot_id), C(state) and C(region).
  returned: always
  type: list
  elements: dict
  sample: [{"snapshot_id": "snap-0f1e2d3c4b5a69788", "source_snapshot_id": "snap-0a1b2c3d4e5f67890",
            "state": "completed", "region": "eu-central-1"}]
deleted:
  description: With O(state=absent), the snapshots deleted (would be deleted in check mode), with their region.
  returned: always
  type: list
  elements: dict
  sample: [{"snapshot_id": "snap-0a1b2c3d4e5f67890", "region": "eu-west-1"}]
'''

import copy

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.module import AWS_ARGUMENT_SPEC, run_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.snapshots import ebs

ENGINE_OPTIONS = ("label", "state", "instance_id", "volume_ids", "exclude_boot_volume", "exclude_volume_ids",
                  "replica_set", "shard", "oplog_ts", "tags", "description", "wait", "wait_timeout", "poll_interval",
                  "copy_to_region", "copy_kms_key_id", "include_copies", "region")


def run_module(module):
    params = module.params
    if not params["region"]:
        module.fail_json(msg="region is required: set region, or AWS_REGION in the environment")
    options = ebs.EbsOptions(**dict((name, params[name]) for name in ENGINE_OPTIONS))
    credentials = dict((name, params[name]) for name in ("endpoint_url", "access_key", "secret_key",
                                                         "session_token", "profile"))

    def region_client(region):
        return ebs.client(region, **credentials)

    return ebs.run(options, region_client(params["region"]), region_client, check_mode=module.check_mode)


def main():
    spec = copy.deepcopy(AWS_ARGUMENT_SPEC)
    spec.update(
        label=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        instance_id=dict(type="str"),
        exclude_boot_volume=dict(type="bool", default=True),
        exclude_volume_ids=dict(type="list", elements="str"),
        volume_ids=dict(type="list", elements="str"),
        replica_set=dict(type="str"),
        shard=dict(type="str"),
        oplog_ts=dict(type="str"),
        tags=dict(type="dict", default={}),
        description=dict(type="str"),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=ebs.DEFAULT_WAIT_TIMEOUT),
        poll_interval=dict(type="float", default=ebs.DEFAULT_POLL_INTERVAL),
        copy_to_region=dict(type="str"),
        copy_kms_key_id=dict(type="str"),
        include_copies=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=spec, mutually_exclusive=[["instance_id", "volume_ids"]],
                           supports_check_mode=True)
    if ebs.BOTO3_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib("boto3"), exception=str(ebs.BOTO3_IMPORT_ERROR))
    changed, result = run_engine(module, run_module, module)
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
