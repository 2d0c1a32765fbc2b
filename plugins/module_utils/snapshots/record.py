# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A snapshot set as a backup of the backup root: ``<root>/<label>/manifest.json`` of kind ``snapshot``.

A snapshot backup lives in the cloud (EBS, GCE) or was copied off an LVM snapshot into the root. Either
way it gets a directory under the backup root with a manifest, like a logical backup, so the catalog,
``mongodb_backup_info`` and retention see one kind of thing:

- ``snapshot``: the provider, the snapshot-set id, and what the cloud modules returned for each snapshot
  (ids, devices, sizes, zones): what a restore needs to build volumes again;
- ``oplog.end``: the newest oplog time when the member was locked. The snapshot holds every write up to
  and including it, so it is where a point-in-time restore starts replaying the archived oplog (the
  same meaning as a logical backup's oplog end);
- for LVM, the copied files with their sha256, like a dump's, so the copy proves what it holds.

The manifest is written last and the directory renamed into place, as for every backup: a directory
without a manifest is not a backup.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import tempfile

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog.store import Catalog, check_backup_root
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.timestamps import now_iso, ts_text
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import CatalogError, InvalidOption
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import manifest as manifest_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.bsonio import sha256_file
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.snapshots.facts import new_set_id, snapshot_facts

SNAPSHOT_KIND = manifest_utils.SNAPSHOT_KIND
PROVIDERS = ("ebs", "gce", "lvm")
CLOUD_PROVIDERS = ("ebs", "gce")


class SnapshotSet:
    """What the catalog records of one snapshot set (validated). ``members`` describes a sharded cluster:
    one entry per locked member (every shard and a config server), each with its own oplog time."""

    def __init__(self, provider, label, snapshot_set=None, replica_set=None, shard=None, member=None,
                 oplog_ts=None, snapshots=None, files=None, members=None, started_at=None, finished_at=None):
        if provider not in PROVIDERS:
            raise InvalidOption("snapshot provider %r is not one of %s" % (provider, ", ".join(PROVIDERS)))
        self.provider = provider
        self.facts = snapshot_facts(label, snapshot_set or new_set_id(), replica_set, shard, oplog_ts)
        self.member = member
        self.snapshots = list(snapshots or [])
        self.files = files
        self.members = [self._member(m) for m in members or []]
        self.started_at = started_at
        self.finished_at = finished_at or now_iso()
        if provider in CLOUD_PROVIDERS and not (self.snapshots or any(m["snapshots"] for m in self.members)):
            raise InvalidOption("the %s snapshot set %s lists no snapshots: give the snapshots that %s returned"
                                % (provider, label, "ebs_snapshot" if provider == "ebs" else "gce_disk_snapshot"))
        if provider == "lvm" and not files:
            raise InvalidOption("the lvm snapshot set %s needs files: the directory the snapshot was copied to "
                                "(<backup_root>/<label>.partial)" % label)

    @staticmethod
    def _member(member):
        unknown = sorted(set(member) - {"replica_set", "shard", "member", "oplog_ts", "snapshots"})
        if unknown:
            raise InvalidOption("snapshot members entry %r has unknown keys %s; use replica_set, shard, member, "
                                "oplog_ts and snapshots" % (member, ", ".join(unknown)))
        return {"replica_set": member.get("replica_set"), "shard": member.get("shard"),
                "member": member.get("member"),
                "oplog_ts": ts_text(member["oplog_ts"]) if member.get("oplog_ts") is not None else None,
                "snapshots": list(member.get("snapshots") or [])}

    @property
    def label(self):
        return self.facts["label"]

    @property
    def set_id(self):
        return self.facts["snapshot_set"]

    def manifest(self, files, totals):
        """The manifest document. Only a replica-set snapshot with an oplog time is a point-in-time base:
        a cluster's members were locked one by one, each at its own time, so no single time restores it."""
        oplog_ts = self.facts.get("oplog_ts")
        document = manifest_utils.new_manifest(
            self.set_id, self.label, SNAPSHOT_KIND, self.started_at, self.finished_at,
            {"replica_set": self.facts.get("replica_set")}, self.member, {"provider": self.provider})
        document.update(files=files, totals=totals,
                        oplog={"start": None, "end": {"ts": oplog_ts}} if oplog_ts and not self.members else None)
        document["snapshot"] = {"provider": self.provider, "snapshot_set": self.set_id,
                                "shard": self.facts.get("shard"), "oplog_ts": oplog_ts,
                                "snapshots": self.snapshots, "members": self.members}
        return document


def _file_records(directory):
    """Every file below ``directory`` with its size and sha256 (paths relative to it), made private."""
    records, total = [], 0
    for current, subdirs, names in os.walk(directory):
        subdirs.sort()
        os.chmod(current, manifest_utils.DIR_MODE)
        for name in sorted(names):
            path = os.path.join(current, name)
            if name == manifest_utils.MANIFEST_NAME and current == directory:
                continue
            if os.path.islink(path) or not os.path.isfile(path):
                raise CatalogError("%s is not a regular file; a snapshot copy holds only files and directories "
                                   "(copy the snapshot again without links or devices)" % path)
            os.chmod(path, manifest_utils.FILE_MODE)
            size = os.path.getsize(path)
            total += size
            records.append({"path": os.path.relpath(path, directory), "bytes": size, "sha256": sha256_file(path)})
    return records, total


def _existing(target):
    return manifest_utils.read_manifest(os.path.join(target, manifest_utils.MANIFEST_NAME))


def _same_set(document, snapshot_set):
    return (document.get("kind") == SNAPSHOT_KIND
            and (document.get("snapshot") or {}).get("snapshot_set") == snapshot_set.set_id)


def _write(root, snapshot_set, target):
    """Write the snapshot backup's directory and manifest; return its path."""
    if snapshot_set.provider == "lvm":
        source = os.path.abspath(os.path.join(root, snapshot_set.files))
        if not os.path.isdir(source):
            raise CatalogError("the snapshot copy %s does not exist; copy the LVM snapshot there first" % source)
        if os.path.dirname(source) != root:
            raise InvalidOption("the snapshot copy %s must be directly under the backup root %s, so that it "
                                "can be renamed into %s" % (source, root, target))
        files, total = _file_records(source)
        if not files:
            raise CatalogError("the snapshot copy %s holds no files: the copy failed or the snapshot is empty; "
                               "nothing was registered" % source)
        manifest_utils.write_json_atomic(os.path.join(source, manifest_utils.MANIFEST_NAME),
                                         snapshot_set.manifest(files, {"bytes": total, "bytes_on_disk": total}))
        os.rename(source, target)
    else:
        # A private, unique work directory: an LVM copy of the same label may be in <label>.partial. Its
        # name ends in .partial, so a crash before the rename leaves nothing that looks like a backup.
        partial = tempfile.mkdtemp(prefix=snapshot_set.label + ".", suffix=".partial", dir=root)
        manifest_utils.write_json_atomic(os.path.join(partial, manifest_utils.MANIFEST_NAME),
                                         snapshot_set.manifest([], {}))
        os.rename(partial, target)
    manifest_utils.fsync_directory(root)
    return target


def record_snapshot_set(root, snapshot_set, check_mode=False):
    """Give ``snapshot_set`` its backup directory under ``root`` and register it in the catalog.

    Idempotent by snapshot-set id: the same set recorded again changes nothing. Another backup already
    using the label is refused. Returns (changed, catalog record or the planned one in check mode).
    """
    check_backup_root(root)
    root = os.path.abspath(root)
    if check_mode:
        _existing_backup(root, snapshot_set)
        known = [b for b in Catalog.load(root).backups if b["backup_id"] == snapshot_set.set_id]
        planned = {"label": snapshot_set.label, "backup_id": snapshot_set.set_id, "path": snapshot_set.label,
                   "kind": SNAPSHOT_KIND}
        return not known, known[0] if known else planned
    # Under the catalog lock from the first look to the save: two runs recording the same label at once
    # cannot both write it.
    with Catalog.locked(root) as catalog:
        document = _existing_backup(root, snapshot_set)
        if document is None:
            _write(root, snapshot_set, os.path.join(root, snapshot_set.label))
        record, added = catalog.add_backup_from_manifest(os.path.join(root, snapshot_set.label))
        if catalog.changed:
            catalog.save()
    return document is None or added, record


def _existing_backup(root, snapshot_set):
    """The manifest of this same set already at ``<root>/<label>``, or None when nothing is there; another
    backup, or a directory without a manifest, under that name is refused."""
    target = os.path.join(root, snapshot_set.label)
    if not os.path.exists(target):
        return None
    document = _existing(target) if os.path.isdir(target) else None
    if document is None:
        raise CatalogError("%s exists but is not a complete backup (no manifest); move it aside, then record the "
                           "snapshot set %s again" % (target, snapshot_set.label))
    if not _same_set(document, snapshot_set):
        raise CatalogError("%s already holds the backup %s (%s); a snapshot set labelled %s cannot be recorded "
                           "there: give the snapshot set another label"
                           % (target, document.get("backup_id"), document.get("kind"), snapshot_set.label))
    return document
