# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""GCE persistent-disk snapshot sets: the disks of one member snapshotted together, found again by label.

- Each disk (zonal or regional) gets ``createSnapshot`` with the set's labels (facts.py), the snapshot
  type (STANDARD or ARCHIVE), storage locations and chain name; zonal disks may ask for a guest flush.
- Snapshot names are derived from the label and the disk, so a rerun finds the set without a lookup
  table, and a label is also a label on every snapshot (``dbops-backup-label``).
- Every operation is polled with the operations client of its scope (zone, region, global) built on
  the same endpoint and credentials as the others, so a private or test endpoint is honoured
  throughout. An operation with errors fails naming the disk and the service's messages; then every
  snapshot must become READY (FAILED names it), within ``wait_timeout``.

No Ansible imports; the clients are built here from the endpoint and the credentials.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import re
import time

try:
    from google.api_core import exceptions as google_exceptions
    from google.auth import credentials as google_credentials
    from google.cloud import compute_v1
    from google.oauth2 import service_account
    GOOGLE_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by the module
    compute_v1 = None
    google_exceptions = None
    GOOGLE_IMPORT_ERROR = exc

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import InvalidOption, SnapshotError
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.snapshots import facts as snapshot_facts

NAME_MAX = 63
_NAME_INVALID = re.compile(r"[^a-z0-9-]")
DEFAULT_WAIT_TIMEOUT = 1800
DEFAULT_POLL_INTERVAL = 5.0
SNAPSHOT_TYPES = ("STANDARD", "ARCHIVE")


def resource_name(label, disk):
    """A valid Compute resource name (a snapshot's from the set's label and its disk, a restored disk's from the
    instance and the source disk): lowercase letters, digits and ``-``, a letter first, at most 63 characters (a hash
    of the whole keeps names apart when it has to be shortened)."""
    name = _NAME_INVALID.sub("-", ("%s-%s" % (label, disk)).lower()).strip("-")
    if not name[:1].isalpha():
        name = "s-" + name
    if len(name) > NAME_MAX:
        digest = hashlib.sha256(("%s/%s" % (label, disk)).encode("utf-8")).hexdigest()[:8]
        name = name[:NAME_MAX - 9].rstrip("-") + "-" + digest
    return name


class GceOptions:
    def __init__(self, project, label, disks=None, state="present", guest_flush=False, snapshot_type="STANDARD",
                 storage_locations=None, labels=None, chain_name=None, description=None, replica_set=None, shard=None,
                 oplog_ts=None, wait=True, wait_timeout=DEFAULT_WAIT_TIMEOUT, poll_interval=DEFAULT_POLL_INTERVAL):
        snapshot_facts.check_gce_label(label)
        self.project = project
        self.label = label
        self.state = state
        self.disks = [self._disk(d) for d in disks or []]
        if state == "present" and not self.disks:
            raise InvalidOption("snapshot set %s lists no disks: give disks, each with name and zone or region" % label)
        self.guest_flush = bool(guest_flush)
        if snapshot_type not in SNAPSHOT_TYPES:
            raise InvalidOption("snapshot_type %r is not one of %s" % (snapshot_type, ", ".join(SNAPSHOT_TYPES)))
        self.snapshot_type = snapshot_type
        self.storage_locations = list(storage_locations or [])
        self.facts = snapshot_facts.snapshot_facts(label, None, replica_set, shard, oplog_ts)
        self.user_labels = dict(labels or {})
        self.chain_name = chain_name
        self.description = description
        self.wait = bool(wait)
        self.wait_timeout = float(wait_timeout)
        self.poll_interval = float(poll_interval)
        if self.guest_flush and any(d.get("region") for d in self.disks):
            raise InvalidOption("guest_flush asks the guest agent of the instance a zonal disk is attached to; the "
                                "regional disks %s cannot have it: set guest_flush: false (the fsync lock makes the "
                                "disks consistent)" % ", ".join(d["name"] for d in self.disks if d.get("region")))

    @staticmethod
    def _disk(disk):
        unknown = sorted(set(disk) - {"name", "zone", "region"})
        if unknown or not disk.get("name") or bool(disk.get("zone")) == bool(disk.get("region")):
            raise InvalidOption("disk %r: give name and exactly one of zone and region%s"
                                % (disk, " (unknown keys %s)" % ", ".join(unknown) if unknown else ""))
        return dict(disk)


def credentials(auth_kind="application", service_account_file=None, service_account_contents=None):
    if auth_kind == "anonymous":
        return google_credentials.AnonymousCredentials()
    if auth_kind == "serviceaccount":
        if service_account_contents:
            return service_account.Credentials.from_service_account_info(json.loads(service_account_contents))
        if service_account_file:
            return service_account.Credentials.from_service_account_file(service_account_file)
        raise InvalidOption("auth_kind serviceaccount needs service_account_file or service_account_contents")
    import google.auth  # application default credentials
    found, _project = google.auth.default(scopes=["https://www.googleapis.com/auth/compute"])
    return found


class Clients:
    """Every Compute client the engine uses, on one endpoint with one set of credentials."""

    def __init__(self, creds, api_endpoint=None):
        options = {"api_endpoint": api_endpoint} if api_endpoint else None
        self.disks = compute_v1.DisksClient(credentials=creds, client_options=options)
        self.region_disks = compute_v1.RegionDisksClient(credentials=creds, client_options=options)
        self.snapshots = compute_v1.SnapshotsClient(credentials=creds, client_options=options)
        self.zone_operations = compute_v1.ZoneOperationsClient(credentials=creds, client_options=options)
        self.region_operations = compute_v1.RegionOperationsClient(credentials=creds, client_options=options)
        self.global_operations = compute_v1.GlobalOperationsClient(credentials=creds, client_options=options)
        self.instances = compute_v1.InstancesClient(credentials=creds, client_options=options)


def call_api(action, function, **kwargs):
    try:
        return function(**kwargs)
    except google_exceptions.GoogleAPICallError as exc:
        raise SnapshotError("%s: %s; check the project, the disk names and zones, and the credentials' Compute "
                            "permissions" % (action, exc.message or exc))


def last_part(link):
    return (link or "").rstrip("/").rsplit("/", 1)[-1] or None


def _describe(snapshot):
    return {"name": snapshot.name, "source_disk": last_part(snapshot.source_disk), "status": snapshot.status,
            "storage_bytes": snapshot.storage_bytes, "disk_size_gb": snapshot.disk_size_gb,
            "snapshot_type": snapshot.snapshot_type, "storage_locations": list(snapshot.storage_locations),
            "self_link": snapshot.self_link, "labels": dict(snapshot.labels)}


def find_set(clients, options):
    """The snapshots labelled with the set's label, by name."""
    key = snapshot_facts.GCE_LABEL_KEYS["label"]
    pager = call_api("listing the snapshots labelled %s" % options.label, clients.snapshots.list,
                     request=compute_v1.ListSnapshotsRequest(project=options.project,
                                                             filter='labels.%s = "%s"' % (key, options.label)))
    try:
        return dict((snapshot.name, snapshot) for snapshot in pager)
    except google_exceptions.GoogleAPICallError as exc:
        raise SnapshotError("listing the snapshots labelled %s: %s" % (options.label, exc.message or exc))


def _resource(options, facts, disk, name):
    snapshot = compute_v1.Snapshot(
        name=name, labels=snapshot_facts.gce_labels(facts, options.user_labels), snapshot_type=options.snapshot_type,
        description=options.description or "dbops.mongodb_backup snapshot set %s (%s, oplog time %s)" % (
            options.label, facts["snapshot_set"], facts.get("oplog_ts") or "unknown"))
    if options.storage_locations:
        snapshot.storage_locations = options.storage_locations
    if options.chain_name:
        snapshot.chain_name = options.chain_name
    return snapshot


def _create(clients, options, facts, disk, name):
    """Start the snapshot of one disk; returns (operations client, scope arguments, operation name)."""
    resource = _resource(options, facts, disk, name)
    if disk.get("zone"):
        operation = call_api("createSnapshot of disk %s in %s" % (disk["name"], disk["zone"]),
                             clients.disks.create_snapshot_unary, request=compute_v1.CreateSnapshotDiskRequest(
                                 project=options.project, zone=disk["zone"], disk=disk["name"],
                                 snapshot_resource=resource, guest_flush=options.guest_flush))
        return clients.zone_operations, {"zone": disk["zone"]}, operation.name
    operation = call_api("createSnapshot of regional disk %s in %s" % (disk["name"], disk["region"]),
                         clients.region_disks.create_snapshot_unary, project=options.project, region=disk["region"],
                         disk=disk["name"], snapshot_resource=resource)
    return clients.region_operations, {"region": disk["region"]}, operation.name


def wait_operation(operations, scope, name, options, what, sleep=time.sleep, clock=time.time):
    """Poll one operation with the client of its scope until DONE; its errors raise, naming ``what``."""
    deadline = clock() + options.wait_timeout
    while True:
        operation = call_api("reading operation %s" % name, operations.get, project=options.project, operation=name,
                             **scope)
        if operation.status == compute_v1.Operation.Status.DONE:
            errors = list(operation.error.errors) if operation.error else []
            if errors:
                raise SnapshotError("%s failed (operation %s): %s; nothing usable was created for it, fix the cause "
                                    "and run again" % (what, name, "; ".join("%s: %s" % (e.code, e.message)
                                                                             for e in errors)))
            return operation
        if clock() >= deadline:
            status = operation.status.name if hasattr(operation.status, "name") else operation.status
            raise SnapshotError("%s is still %s after %d s (operation %s); it goes on in the background: run again "
                                "with the same label to wait for it" % (what, status, options.wait_timeout, name))
        sleep(options.poll_interval)


def wait_ready(clients, names, options, sleep=time.sleep, clock=time.time):
    """Poll the snapshots until every one is READY; FAILED or the timeout raise, naming them."""
    deadline = clock() + options.wait_timeout
    while True:
        snapshots = [call_api("reading snapshot %s" % name, clients.snapshots.get, project=options.project,
                              snapshot=name) for name in names]
        failed = [s.name for s in snapshots if s.status == "FAILED"]
        if failed:
            raise SnapshotError("snapshot %s of set %s FAILED; delete the set with state: absent and take it again"
                                % (", ".join(failed), options.label))
        pending = ["%s (%s)" % (s.name, s.status) for s in snapshots if s.status != "READY"]
        if not pending:
            return [_describe(s) for s in snapshots]
        if clock() >= deadline:
            raise SnapshotError("the snapshots of %s are not READY after %d s: %s; they are kept: run again with the "
                                "same label to wait for them" % (options.label, options.wait_timeout,
                                                                 ", ".join(pending)))
        sleep(options.poll_interval)


def delete_set(clients, options, check_mode, sleep=time.sleep, clock=time.time):
    existing = find_set(clients, options)
    for name in sorted(existing):
        if not check_mode:
            operation = call_api("deleting snapshot %s" % name, clients.snapshots.delete_unary, project=options.project,
                                 snapshot=name)
            wait_operation(clients.global_operations, {}, operation.name, options, "deleting snapshot %s" % name,
                           sleep, clock)
    return bool(existing), {"label": options.label, "deleted": sorted(existing), "snapshots": []}


def run(clients, options, check_mode=False, sleep=time.sleep, clock=time.time):
    """Take (or find) and wait for the snapshot set of ``options``, or delete it. Returns (changed, result)."""
    if options.state == "absent":
        return delete_set(clients, options, check_mode, sleep, clock)
    existing = find_set(clients, options)
    facts = dict(options.facts)
    if existing:  # the set's own facts (its id, its oplog time) win over this run's
        first = existing[sorted(existing)[0]]
        found = snapshot_facts.facts_from_gce_labels(dict(first.labels))
        facts["snapshot_set"] = found.get("snapshot_set", facts["snapshot_set"])
        if found.get("oplog_ts"):  # spelled secs-inc in a label
            facts["oplog_ts"] = found["oplog_ts"].replace("-", ":")
    names = [resource_name(options.label, disk["name"]) for disk in options.disks]
    missing = [(disk, name) for disk, name in zip(options.disks, names) if name not in existing]
    result = {"label": options.label, "snapshot_set": facts["snapshot_set"], "oplog_ts": facts.get("oplog_ts"),
              "deleted": []}
    if check_mode:
        result["snapshots"] = [{"name": name, "source_disk": disk["name"], "status": "would be created"}
                               for disk, name in missing] + [_describe(existing[n]) for n in names if n in existing]
        return bool(missing), result
    if existing and missing:
        raise SnapshotError("snapshot set %s exists without the disks %s: it is another or an incomplete set; give "
                            "another label, or delete it with state: absent" % (
                                options.label, ", ".join(d["name"] for d, _n in missing)))
    started = [(disk, name) + _create(clients, options, facts, disk, name) for disk, name in missing]
    for disk, name, operations, scope, operation in started:
        wait_operation(operations, scope, operation, options, "the snapshot %s of disk %s" % (name, disk["name"]),
                       sleep, clock)
    if options.wait:
        result["snapshots"] = wait_ready(clients, names, options, sleep, clock)
    else:
        result["snapshots"] = [_describe(call_api("reading snapshot %s" % n, clients.snapshots.get,
                                                  project=options.project, snapshot=n)) for n in names]
    return bool(missing), result
