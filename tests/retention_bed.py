"""A synthetic backup root for retention: daily logical backups, hourly oplog slices, an oplog gap and an
EBS snapshot set, written as the engine writes them (manifests, slice files, catalog.json).

Backups go through the catalog's own registration (``add_backup_from_manifest``, ``record_snapshot_set``).
Slices are appended in the record shape ``Catalog.add_slice`` produces (tests/unit/retention checks that
shape against it): ``add_slice`` checks each new slice against all others, which is quadratic for 10,000.
"""

import datetime
import hashlib
import os

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog.store import Catalog
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import timestamps
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import manifest as manifest_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.snapshots import record as snapshot_record

HOUR = 3600
DAY = 86400
REPLICA_SET = "rs0"


def epoch(text):
    return timestamps.parse_iso_time(text)


def day_label(moment):
    return "daily-" + datetime.datetime.utcfromtimestamp(moment).strftime("%Y-%m-%d")


def write_backup(root, label, finished, oplog_end, replica_set=REPLICA_SET, verified=None, payload=b"data"):
    """A complete logical backup directory (one data file and its manifest) finished at ``finished``."""
    target = os.path.join(str(root), label)
    manifest_utils.make_private_dir(target)
    with open(os.path.join(target, "shop.orders.bson"), "wb") as handle:
        handle.write(payload)
    document = manifest_utils.new_manifest(
        "id-" + label, label, "logical", timestamps.iso_time(finished - 600), timestamps.iso_time(finished),
        {"replica_set": replica_set, "topology": "replicaset"}, "db1:27017", {})
    document["oplog"] = {"start": {"ts": "%d:1" % (oplog_end - 600)}, "end": {"ts": "%d:1" % oplog_end}, "entries": 3}
    document["totals"] = {"bytes": len(payload), "bytes_on_disk": len(payload), "documents": 1}
    manifest_utils.write_json_atomic(os.path.join(target, manifest_utils.MANIFEST_NAME), document)
    return target


def slice_record(root, first, last, replica_set=REPLICA_SET, with_file=True):
    """A slice ``[first:1, last:1]`` as the archiver names and records it; its file written when asked."""
    name = "%d-1_%d-1.bson.gz" % (first, last)
    relative = os.path.join("oplog", replica_set, name)
    content = ("slice %d %d" % (first, last)).encode()
    if with_file:
        path = os.path.join(str(root), relative)
        with open(path, "wb") as handle:
            handle.write(content)
    return {"compression": "gzip", "replica_set": replica_set, "first_ts": "%d:1" % first, "last_ts": "%d:1" % last,
            "entries": 60, "file": relative, "bytes": len(content), "sha256": hashlib.sha256(content).hexdigest(),
            "created_at": timestamps.iso_time(last + 5)}


class Bed:
    """What was built, for the expectations: labels by day, the gap, the snapshot set."""

    def __init__(self, root, first_day, days, now):
        self.root = str(root)
        self.first_day = first_day
        self.days = days
        self.now = now
        self.labels = []
        self.gap = None
        self.snapshot_label = None
        self.verified = []


def build(root, now="2024-05-01T12:00:00Z", days=400, gap_day=None, snapshot_day=None, verified_days=(),
          with_files=True):
    """``days`` daily backups finished at 01:00 UTC (oplog end 00:59:00), the last one on ``now``'s day;
    hourly slices from the first backup's oplog end up to the last full hour before ``now``.

    ``gap_day`` (a ``YYYY-MM-DD``): the archive lost the entries from 05:00 that day until the next
    backup; the gap is recorded and the slices resume from that backup's oplog end, as the archiver does.
    ``snapshot_day``: an EBS snapshot set of the replica set taken at 13:00 that day (oplog time 12:59:00).
    ``verified_days``: those days' backups carry ``"verified": {"ok": true, ...}`` in the catalog.
    """
    now_epoch = int(epoch(now))
    today = now_epoch - now_epoch % DAY
    first_day = today - (days - 1) * DAY
    bed = Bed(root, first_day, days, now_epoch)
    os.makedirs(os.path.join(str(root), "oplog", REPLICA_SET), exist_ok=True)
    gap_start = int(epoch(gap_day + "T05:00:00Z")) if gap_day else None
    with Catalog.locked(str(root)) as catalog:
        for number in range(days):
            day = first_day + number * DAY
            label = day_label(day)
            catalog.add_backup_from_manifest(write_backup(root, label, day + HOUR, day + HOUR - 60))
            bed.labels.append(label)
        for record in catalog.backups:
            if record["label"] in ["daily-" + d for d in verified_days]:
                record["verified"] = {"ok": True, "at": timestamps.iso_time(epoch(record["finished_at"]) + HOUR),
                                      "restore_seconds": 12.5}
                bed.verified.append(record["label"])
        edges = [first_day + HOUR - 60] + list(range(first_day + HOUR, now_epoch + 1, HOUR))
        stretches = [edges]
        if gap_start is not None:
            resume = gap_start - gap_start % DAY + DAY + HOUR - 60  # the next backup's oplog end
            bed.gap = {"last_archived_ts": "%d:1" % gap_start, "resume_ts": "%d:1" % resume}
            stretches = [[e for e in edges if e <= gap_start], [resume] + [e for e in edges if e > resume]]
            catalog.record_gap(REPLICA_SET, "%d:1" % gap_start, "%d:1" % (gap_start + 7 * HOUR),
                               detected_at=timestamps.iso_time(resume + 60))
        for stretch in stretches:
            for first, last in zip(stretch, stretch[1:]):
                catalog.slices.append(slice_record(root, first, last, with_file=with_files))
        catalog.save()
    if snapshot_day:
        taken = int(epoch(snapshot_day + "T13:00:00Z"))
        bed.snapshot_label = "snapshot-" + snapshot_day
        snapshot_record.record_snapshot_set(str(root), snapshot_record.SnapshotSet(
            "ebs", bed.snapshot_label, snapshot_set="set-" + snapshot_day, replica_set=REPLICA_SET,
            member="db3:27017", oplog_ts="%d:1" % (taken - 60), finished_at=timestamps.iso_time(taken),
            snapshots=[{"snapshot_id": "snap-0a1b2c3d4e5f67890", "volume_id": "vol-1", "device": "/dev/sdf",
                        "region": "eu-west-1"}]))
    return bed
