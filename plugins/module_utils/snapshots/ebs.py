# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""EBS snapshot sets: the volumes of one member snapshotted at one instant, found again by label.

- An instance's volumes go through ``CreateSnapshots``, which starts every snapshot at the same moment
  (crash-consistent across the volumes); listed volumes get one ``CreateSnapshot`` each, which is
  consistent only under an fsync lock.
- Tags are given at creation (``TagSpecifications``), so no snapshot of a set ever exists untagged: the
  set's facts (facts.py) and, per snapshot, the volume and device it came from (for restores).
- ``wait`` polls until every snapshot is ``completed``; one in ``error`` fails naming it; the timeout
  fails naming what is not complete. The snapshots are kept either way: a rerun with the same label
  waits for them instead of taking new ones.
- Copies to another region carry the tags plus the source snapshot id, by which a rerun finds them.

No Ansible imports; boto3 clients are passed in (botocore's Stubber drives them in tests).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

try:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError
    BOTO3_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by the module
    boto3 = None
    BotoCoreError = ClientError = Exception
    BOTO3_IMPORT_ERROR = exc

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import InvalidOption, SnapshotError
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.snapshots import facts as snapshot_facts

VOLUME_TAG = "dbops:volume"
DEVICE_TAG = "dbops:device"
SOURCE_TAG = "dbops:source-snapshot"
SOURCE_REGION_TAG = "dbops:source-region"
DEFAULT_WAIT_TIMEOUT = 1800
DEFAULT_POLL_INTERVAL = 15.0


class EbsOptions:
    """What to snapshot (``instance_id`` or ``volume_ids``), how the set is tagged, waited for and copied."""

    def __init__(self, label, state="present", instance_id=None, volume_ids=None, exclude_boot_volume=True,
                 exclude_volume_ids=None, replica_set=None, shard=None, oplog_ts=None, tags=None,
                 description=None, wait=True, wait_timeout=DEFAULT_WAIT_TIMEOUT, poll_interval=DEFAULT_POLL_INTERVAL,
                 copy_to_region=None, copy_kms_key_id=None, include_copies=False, region=None):
        self.state = state
        self.facts = snapshot_facts.snapshot_facts(label, None, replica_set, shard, oplog_ts)
        self.label = label
        self.instance_id = instance_id
        self.volume_ids = list(volume_ids or [])
        self.exclude_boot_volume = bool(exclude_boot_volume)
        self.exclude_volume_ids = set(exclude_volume_ids or [])
        self.user_tags = dict(tags or {})
        self.description = description
        self.wait = bool(wait)
        self.wait_timeout = float(wait_timeout)
        self.poll_interval = float(poll_interval)
        self.copy_to_region = copy_to_region
        self.copy_kms_key_id = copy_kms_key_id
        self.include_copies = bool(include_copies)
        self.region = region
        if state == "present" and bool(instance_id) == bool(self.volume_ids):
            raise InvalidOption("give exactly one of instance_id (every volume of the instance at one instant) and "
                                "volume_ids (the volumes listed) to snapshot set %s" % label)
        if copy_kms_key_id and not copy_to_region:
            raise InvalidOption("copy_kms_key_id encrypts the copies: it needs copy_to_region")
        if copy_to_region and copy_to_region == region:
            raise InvalidOption("copy_to_region %s is the region of the snapshots themselves; give another region "
                                "for an off-site copy" % copy_to_region)


def client(region, endpoint_url=None, access_key=None, secret_key=None, session_token=None, profile=None):
    """An EC2 client for ``region``; credentials from the arguments, else boto3's usual chain."""
    session = boto3.session.Session(aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                                    aws_session_token=session_token, profile_name=profile, region_name=region)
    return session.client("ec2", endpoint_url=endpoint_url)


def _aws_error(action, exc):
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return "%s: %s (%s)" % (action, error.get("Message") or exc, error.get("Code"))
    return "%s: %s" % (action, exc)


def _call(action, function, **kwargs):
    try:
        return function(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        raise SnapshotError("%s; check the region, the ids and the credentials' EC2 permissions"
                            % _aws_error(action, exc))


def _tags(tags):
    return dict((tag["Key"], tag["Value"]) for tag in tags or [])


def _tag_list(tags):
    return [{"Key": key, "Value": value} for key, value in sorted(tags.items())]


def _describe(snapshot, region):
    tags = _tags(snapshot.get("Tags"))
    start = snapshot.get("StartTime")
    return {"snapshot_id": snapshot["SnapshotId"], "volume_id": tags.get(VOLUME_TAG) or snapshot.get("VolumeId"),
            "device": tags.get(DEVICE_TAG), "volume_size": snapshot.get("VolumeSize"),
            "state": snapshot.get("State"), "progress": snapshot.get("Progress"),
            "state_message": snapshot.get("StateMessage"), "encrypted": snapshot.get("Encrypted"),
            "start_time": start.isoformat() if hasattr(start, "isoformat") else start, "region": region,
            "source_snapshot_id": tags.get(SOURCE_TAG)}


def find_set(ec2, label):
    """Every snapshot (ours) tagged with ``label``, sorted by device then id."""
    pages = ec2.get_paginator("describe_snapshots").paginate(
        OwnerIds=["self"], Filters=[{"Name": "tag:%s" % snapshot_facts.AWS_TAG_KEYS["label"], "Values": [label]}])
    try:
        found = [snapshot for page in pages for snapshot in page["Snapshots"]]
    except (ClientError, BotoCoreError) as exc:
        raise SnapshotError("%s; check the region and the credentials' EC2 permissions"
                            % _aws_error("listing the snapshots labelled %s" % label, exc))
    return sorted(found, key=lambda s: (_tags(s.get("Tags")).get(DEVICE_TAG) or "", s["SnapshotId"]))


def planned_volumes(ec2, options):
    """The volumes to snapshot, as [{volume_id, device}]: the instance's (without the boot volume and the
    excluded ones) or the listed ones. Unknown ids fail here, before anything is created."""
    if options.instance_id:
        reply = _call("describing instance %s" % options.instance_id, ec2.describe_instances,
                      InstanceIds=[options.instance_id])
        instances = [i for r in reply.get("Reservations", []) for i in r.get("Instances", [])]
        if not instances:
            raise SnapshotError("instance %s does not exist in this region; check instance_id and region"
                                % options.instance_id)
        instance = instances[0]
        root = instance.get("RootDeviceName")
        volumes = [{"volume_id": m["Ebs"]["VolumeId"], "device": m["DeviceName"]}
                   for m in instance.get("BlockDeviceMappings", []) if "Ebs" in m
                   and not (options.exclude_boot_volume and m["DeviceName"] == root)
                   and m["Ebs"]["VolumeId"] not in options.exclude_volume_ids]
        if not volumes:
            raise SnapshotError("instance %s has no EBS volume left to snapshot (boot volume excluded: %s, excluded: %s)"
                                % (options.instance_id, options.exclude_boot_volume,
                                   ", ".join(sorted(options.exclude_volume_ids)) or "none"))
        return volumes
    reply = _call("describing volumes %s" % ", ".join(options.volume_ids), ec2.describe_volumes,
                  VolumeIds=options.volume_ids)
    devices = dict((v["VolumeId"], (v.get("Attachments") or [{}])[0].get("Device")) for v in reply.get("Volumes", []))
    return [{"volume_id": volume_id, "device": devices.get(volume_id)} for volume_id in options.volume_ids]


def _tag_specification(options, facts, volume=None, extra=None):
    tags = snapshot_facts.aws_tags(facts, options.user_tags)
    if volume is not None:
        tags[VOLUME_TAG] = volume["volume_id"]
        if volume.get("device"):
            tags[DEVICE_TAG] = volume["device"]
    tags.update(extra or {})
    return [{"ResourceType": "snapshot", "Tags": _tag_list(tags)}]


def create_set(ec2, options, facts, volumes):
    """Start the snapshots of ``volumes`` (tagged from the start); returns their ids."""
    description = options.description or "dbops.mongodb_backup snapshot set %s (%s)" % (
        options.label, facts["snapshot_set"])
    if not options.instance_id:
        return [_call("CreateSnapshot of volume %s" % volume["volume_id"], ec2.create_snapshot,
                      VolumeId=volume["volume_id"], Description=description,
                      TagSpecifications=_tag_specification(options, facts, volume))["SnapshotId"]
                for volume in volumes]
    specification = {"InstanceId": options.instance_id, "ExcludeBootVolume": options.exclude_boot_volume}
    if options.exclude_volume_ids:
        specification["ExcludeDataVolumeIds"] = sorted(options.exclude_volume_ids)
    reply = _call("CreateSnapshots of instance %s" % options.instance_id, ec2.create_snapshots,
                  InstanceSpecification=specification, Description=description,
                  TagSpecifications=_tag_specification(options, facts))
    devices = dict((v["volume_id"], v["device"]) for v in volumes)
    ids = []
    for snapshot in reply.get("Snapshots", []):
        ids.append(snapshot["SnapshotId"])
        volume = {"volume_id": snapshot.get("VolumeId"), "device": devices.get(snapshot.get("VolumeId"))}
        # The set's facts were on it from the start; which volume and device it is, for restores.
        _call("tagging snapshot %s" % snapshot["SnapshotId"], ec2.create_tags, Resources=[snapshot["SnapshotId"]],
              Tags=_tag_list(dict((k, v) for k, v in ((VOLUME_TAG, volume["volume_id"]),
                                                      (DEVICE_TAG, volume["device"])) if v)))
    return ids


def describe_ids(ec2, ids, region):
    reply = _call("describing snapshots %s" % ", ".join(ids), ec2.describe_snapshots, SnapshotIds=list(ids))
    order = dict((snapshot_id, n) for n, snapshot_id in enumerate(ids))
    return sorted((_describe(s, region) for s in reply.get("Snapshots", [])), key=lambda d: order[d["snapshot_id"]])


def _named(snapshots):
    return ", ".join("%s (volume %s%s, %s)" % (
        s["snapshot_id"], s["volume_id"], " at %s" % s["device"] if s.get("device") else "",
        s.get("progress") or "0%") for s in snapshots)


def wait_for(ec2, ids, region, options, what, sleep=time.sleep, clock=time.time):
    """Poll until every snapshot is completed; an error state or the timeout raises, naming the snapshots."""
    deadline = clock() + options.wait_timeout
    while True:
        snapshots = describe_ids(ec2, ids, region)
        failed = [s for s in snapshots if s["state"] == "error"]
        if failed:
            causes = "; ".join(s.get("state_message") or "no message" for s in failed)
            raise SnapshotError(
                "%s of %s failed: %s is in state error (%s); delete the set with state: absent and take it again"
                % (what, options.label, _named(failed), causes), snapshots=snapshots)
        pending = [s for s in snapshots if s["state"] != "completed"]
        if not pending:
            return snapshots
        if clock() >= deadline:
            raise SnapshotError(
                "%s of %s not complete after %d s: %s; they are kept and go on in the background: run again with "
                "the same label to wait for them (a longer wait_timeout), or delete them with state: absent"
                % (what, options.label, options.wait_timeout, _named(pending)), snapshots=snapshots)
        sleep(options.poll_interval)


def _check_existing(options, existing, volumes, region):
    """An existing set must be whole: no snapshot in error, the same volumes as planned."""
    described = [_describe(s, region) for s in existing]
    failed = [s for s in described if s["state"] == "error"]
    if failed:
        raise SnapshotError("the snapshot set %s has a snapshot in state error: %s (%s); delete the set with state: "
                            "absent and take it again" % (options.label, _named(failed),
                                                          failed[0].get("state_message") or "no message"))
    have = sorted(s["volume_id"] or "" for s in described)
    want = sorted(v["volume_id"] for v in volumes)
    if have != want:
        raise SnapshotError("a snapshot set labelled %s exists with the volumes %s, not the volumes %s planned now; it "
                            "is another or an incomplete set: give another label, or delete it with state: absent"
                            % (options.label, ", ".join(have), ", ".join(want)))
    return described


def copy_set(source, destination, snapshots, options, facts, check_mode):
    """Copy every snapshot not yet copied into the destination region; returns (copies, changed)."""
    region = options.copy_to_region
    present = dict((_tags(s.get("Tags")).get(SOURCE_TAG), s) for s in find_set(destination, options.label))
    copies, changed = [], False
    for snapshot in snapshots:
        found = present.get(snapshot["snapshot_id"])
        if found is not None:
            copies.append(_describe(found, region))
            continue
        changed = True
        if check_mode:
            copies.append({"snapshot_id": None, "source_snapshot_id": snapshot["snapshot_id"], "region": region,
                           "state": "would be copied"})
            continue
        extra = {SOURCE_TAG: snapshot["snapshot_id"], SOURCE_REGION_TAG: options.region}
        volume = {"volume_id": snapshot["volume_id"], "device": snapshot.get("device")}
        arguments = dict(SourceRegion=options.region, SourceSnapshotId=snapshot["snapshot_id"],
                         Description="copy of %s (snapshot set %s)" % (snapshot["snapshot_id"], options.label),
                         TagSpecifications=_tag_specification(options, facts, volume, extra))
        if options.copy_kms_key_id:
            arguments.update(Encrypted=True, KmsKeyId=options.copy_kms_key_id)
        reply = _call("copying snapshot %s to %s" % (snapshot["snapshot_id"], region), destination.copy_snapshot,
                      **arguments)
        copies.append({"snapshot_id": reply["SnapshotId"], "source_snapshot_id": snapshot["snapshot_id"],
                       "region": region, "state": "pending"})
    return copies, changed


def delete_set(ec2, options, region_client, check_mode):
    """Delete every snapshot of the label (and of its copies with include_copies); returns (changed, result)."""
    targets = [(options.region, ec2, find_set(ec2, options.label))]
    if options.include_copies and options.copy_to_region:
        destination = region_client(options.copy_to_region)
        targets.append((options.copy_to_region, destination, find_set(destination, options.label)))
    deleted = []
    for region, client_, snapshots in targets:
        for snapshot in snapshots:
            if not check_mode:
                _call("deleting snapshot %s in %s" % (snapshot["SnapshotId"], region), client_.delete_snapshot,
                      SnapshotId=snapshot["SnapshotId"])
            deleted.append({"snapshot_id": snapshot["SnapshotId"], "region": region})
    return bool(deleted), {"label": options.label, "deleted": deleted, "snapshots": [], "copies": []}


def run(options, ec2, region_client, check_mode=False, sleep=time.sleep, clock=time.time):
    """Take (or find), wait for and copy the snapshot set of ``options``, or delete it. Returns (changed, result).

    ``ec2`` is the client of ``options.region``; ``region_client(name)`` makes the client of another region.
    """
    if options.state == "absent":
        return delete_set(ec2, options, region_client, check_mode)
    volumes = planned_volumes(ec2, options)
    existing = find_set(ec2, options.label)
    facts = dict(options.facts)
    result = {"label": options.label, "region": options.region, "copies": [], "deleted": [],
              "oplog_ts": facts.get("oplog_ts")}
    changed = False
    if existing:
        described = _check_existing(options, existing, volumes, options.region)
        facts = dict(facts, **snapshot_facts.facts_from_aws_tags(existing[0].get("Tags") or []))
        ids = [s["snapshot_id"] for s in described]
    elif check_mode:
        result.update(snapshot_set=None, snapshots=[dict(v, snapshot_id=None, state="would be created")
                                                    for v in volumes], msg="check mode: nothing was created")
        return True, result
    else:
        ids = create_set(ec2, options, facts, volumes)
        changed = True
    result.update(snapshot_set=facts["snapshot_set"], oplog_ts=facts.get("oplog_ts"))
    snapshots = (wait_for(ec2, ids, options.region, options, "the snapshots", sleep, clock) if options.wait
                 else describe_ids(ec2, ids, options.region))
    result["snapshots"] = snapshots
    if options.copy_to_region:
        if any(s["state"] != "completed" for s in snapshots):
            result["msg"] = ("the copies to %s are made once every snapshot is complete: run again with wait: true"
                             % options.copy_to_region)
            return changed, result
        destination = region_client(options.copy_to_region)
        copies, copied = copy_set(ec2, destination, snapshots, options, facts, check_mode)
        changed = changed or copied
        if options.wait and not check_mode:
            copies = wait_for(destination, [c["snapshot_id"] for c in copies], options.copy_to_region, options,
                              "the copies to %s" % options.copy_to_region, sleep, clock)
        result["copies"] = copies
    return changed, result
