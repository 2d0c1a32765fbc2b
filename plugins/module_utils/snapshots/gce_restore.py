# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore a GCE snapshot set: one new zonal disk per snapshot, attached to the target instance.

- The set is found by its label (or given as snapshot names); every snapshot must be READY.
- A disk is named from the instance and the snapshot's source disk, and attached with the source disk's
  name as its device name (``/dev/disk/by-id/google-<device>``) unless ``device_names`` maps it elsewhere,
  so the target's mounts can name the same devices as the source's.
- Everything is checked before anything is created: a disk of that name made from another snapshot, or a
  device name the instance already uses for another disk, is refused. A rerun finds its disks and
  attachments and changes nothing. Disks are never deleted or detached here.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import InvalidOption, SnapshotError
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.snapshots import facts as snapshot_facts
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.snapshots import gce
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.snapshots.gce import call_api, last_part

DEFAULT_DISK_TYPE = "pd-balanced"
DEVICE_PREFIX = "/dev/disk/by-id/google-"
RESTORED_FROM = "dbops-restored-from"  # a disk's label: the set (dbops-backup-label) its snapshot belongs to


class GceRestoreOptions:
    def __init__(self, project, zone, instance, label=None, snapshots=None, disk_type=DEFAULT_DISK_TYPE,
                 device_names=None, labels=None, wait_timeout=gce.DEFAULT_WAIT_TIMEOUT,
                 poll_interval=gce.DEFAULT_POLL_INTERVAL):
        if bool(label) == bool(snapshots):
            raise InvalidOption("give the snapshot set either by label or as a list of snapshot names, not both")
        if label:
            snapshot_facts.check_gce_label(label)
        self.project = project
        self.zone = zone
        self.instance = instance
        self.label = label
        self.snapshots = list(snapshots or [])
        self.disk_type = disk_type
        self.device_names = dict(device_names or {})
        self.labels = dict(labels or {})
        self.wait_timeout = float(wait_timeout)
        self.poll_interval = float(poll_interval)


def _snapshots(clients, options):
    """The READY snapshots of the set, by name."""
    if options.label:
        found = gce.find_set(clients, options)
        if not found:
            raise SnapshotError("no snapshot in project %s has the label %s=%s; check the label and the project"
                                % (options.project, snapshot_facts.GCE_LABEL_KEYS["label"], options.label))
    else:
        found = dict((name, call_api("reading snapshot %s" % name, clients.snapshots.get, project=options.project,
                                     snapshot=name)) for name in options.snapshots)
    not_ready = ["%s (%s)" % (s.name, s.status) for s in found.values() if s.status != "READY"]
    if not_ready:
        raise SnapshotError("the snapshots %s are not READY; wait for them (gce_disk_snapshot with wait: true) and "
                            "run again" % ", ".join(sorted(not_ready)))
    return found


def _existing_disk(clients, options, name):
    try:
        return clients.disks.get(project=options.project, zone=options.zone, disk=name)
    except gce.google_exceptions.NotFound:
        return None
    except gce.google_exceptions.GoogleAPICallError as exc:
        raise SnapshotError("reading disk %s in %s: %s" % (name, options.zone, exc.message or exc))


def plan(clients, options):
    """One step per snapshot: the disk to have and the device to attach it at, with what already exists."""
    snapshots = _snapshots(clients, options)
    instance = call_api("reading instance %s in %s" % (options.instance, options.zone), clients.instances.get,
                        project=options.project, zone=options.zone, instance=options.instance)
    attached = dict((d.device_name, last_part(d.source)) for d in instance.disks)
    unknown = sorted(set(options.device_names) - set(last_part(s.source_disk) for s in snapshots.values()))
    if unknown:
        raise InvalidOption("device_names names %s, which no snapshot of the set was taken from" % ", ".join(unknown))
    steps = []
    for name in sorted(snapshots):
        snapshot = snapshots[name]
        source_disk = last_part(snapshot.source_disk)
        disk = gce.resource_name(options.instance, source_disk)
        device = options.device_names.get(source_disk, source_disk)
        existing = _existing_disk(clients, options, disk)
        if existing is not None and last_part(existing.source_snapshot) != name:
            raise SnapshotError("disk %s in %s exists and was not made from snapshot %s (its source: %s); nothing was "
                                "created: delete that disk or restore onto another instance"
                                % (disk, options.zone, name, last_part(existing.source_snapshot) or "none"))
        if attached.get(device) not in (None, disk):
            raise SnapshotError("instance %s already has disk %s at device %s; nothing was created: detach it or map "
                                "%s to another device with device_names" % (options.instance, attached[device], device,
                                                                            source_disk))
        steps.append({"name": disk, "snapshot": name, "source_disk": source_disk, "device_name": device,
                      "device_path": DEVICE_PREFIX + device, "size_gb": snapshot.disk_size_gb,
                      "created": existing is None, "attached": attached.get(device) != disk,
                      "self_link": existing.self_link if existing is not None else None,
                      "snapshot_link": snapshot.self_link,
                      "restored_from": dict(snapshot.labels).get(snapshot_facts.GCE_LABEL_KEYS["label"])})
    return steps


def _wait_zone(clients, options, operation, what):
    gce.wait_operation(clients.zone_operations, {"zone": options.zone}, operation.name, options, what)


def _create_disk(clients, options, step):
    labels = dict(options.labels)
    if step["restored_from"]:
        labels[RESTORED_FROM] = step["restored_from"]
    resource = gce.compute_v1.Disk(name=step["name"], source_snapshot=step["snapshot_link"], labels=labels,
                                   type_="zones/%s/diskTypes/%s" % (options.zone, options.disk_type))
    operation = call_api("creating disk %s from snapshot %s" % (step["name"], step["snapshot"]),
                         clients.disks.insert_unary, project=options.project, zone=options.zone,
                         disk_resource=resource)
    _wait_zone(clients, options, operation, "creating disk %s from snapshot %s" % (step["name"], step["snapshot"]))
    return call_api("reading disk %s" % step["name"], clients.disks.get, project=options.project, zone=options.zone,
                    disk=step["name"]).self_link


def _attach(clients, options, step):
    attachment = gce.compute_v1.AttachedDisk(source=step["self_link"], device_name=step["device_name"],
                                             auto_delete=False, mode="READ_WRITE")
    operation = call_api("attaching disk %s to %s" % (step["name"], options.instance), clients.instances.attach_disk_unary,
                         project=options.project, zone=options.zone, instance=options.instance,
                         attached_disk_resource=attachment)
    _wait_zone(clients, options, operation, "attaching disk %s to %s" % (step["name"], options.instance))


def run(clients, options, check_mode=False):
    """Create and attach what the plan lacks. Returns (changed, result)."""
    steps = plan(clients, options)
    changed = any(step["created"] or step["attached"] for step in steps)
    if not check_mode:
        for step in steps:
            if step["created"]:
                step["self_link"] = _create_disk(clients, options, step)
            if step["attached"]:
                _attach(clients, options, step)
    disks = [dict((k, v) for k, v in step.items() if k not in ("snapshot_link", "restored_from")) for step in steps]
    return changed, {"instance": options.instance, "zone": options.zone, "disks": disks}
