# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup catalog: which full backups and oplog slices exist under one backup root (planning is in
catalog/pitr, reporting in catalog/report).

``<root>/catalog.json`` (0600) lists the full backups (from their manifests), the archived oplog
slices and the oplog gaps that capture detected. It is replaced atomically (``write_json_atomic``)
and every read-modify-write holds an exclusive ``flock`` on ``<root>/catalog.lock``, so two runs
that register at the same time never lose an entry. Readers need no lock: they see either the old
or the new file.

Oplog timestamps are kept as ``"secs:inc"`` strings and compared as ``(secs, inc)``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import errno
import os

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import locking
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.timestamps import (
    now_iso, ts_key, ts_text)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import manifest as manifest_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.bsonio import sha256_file
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import (
    CatalogError, InvalidOption)

CATALOG_NAME = "catalog.json"
LOCK_NAME = "catalog.lock"
CATALOG_FORMAT = "dbops.mongodb_backup/catalog"
CATALOG_VERSION = 1
LOCK_TIMEOUT = 120.0


# --------------------------------------------------------------------------- small helpers

def check_backup_root(root):
    if not os.path.isdir(root or ""):
        raise CatalogError("the backup root %s does not exist or is not a directory; create it or mount the "
                           "backup volume" % root)


def verification_of(record):
    """The last verification of a catalog entry (``{"ok", "at", "restore_seconds", ...}``), or None when it was never
    verified (catalogs written before 1.3.0 hold ``verified: false`` there)."""
    verified = record.get("verified")
    return verified if isinstance(verified, dict) else None


def _empty_document():
    return {"format": CATALOG_FORMAT, "format_version": CATALOG_VERSION, "updated_at": None,
            "backups": [], "slices": [], "gaps": []}


# --------------------------------------------------------------------------- the catalog

class Catalog:
    """The catalog of one backup root. Use ``Catalog.locked(root)`` to change it, ``Catalog.load(root)`` to read."""

    def __init__(self, root, document=None, writable=False):
        self.root = os.path.abspath(root)
        self.document = document or _empty_document()
        self.writable = writable
        self.changed = False

    # ------------------------------------------------------------------ files

    @staticmethod
    def catalog_path(root):
        return os.path.join(os.path.abspath(root), CATALOG_NAME)

    @property
    def path(self):
        return self.catalog_path(self.root)

    @classmethod
    def load(cls, root):
        """Read-only view (no lock: the file is only ever replaced whole). Empty when there is none yet."""
        check_backup_root(root)
        return cls(root, cls._read(cls.catalog_path(root)))

    @classmethod
    @contextlib.contextmanager
    def locked(cls, root, timeout=LOCK_TIMEOUT):
        """Hold the catalog lock for a read-modify-write: ``with Catalog.locked(root) as cat: ...; cat.save()``."""
        check_backup_root(root)
        path = cls.catalog_path(root)
        with locking.exclusive(os.path.join(os.path.abspath(root), LOCK_NAME), timeout, "the catalog %s" % path,
                               "updating the catalog"):
            yield cls(root, cls._read(path), writable=True)

    @staticmethod
    def _read(path):
        document, problem = manifest_utils.read_json_file(path, CATALOG_FORMAT, "catalog")
        if problem:
            raise CatalogError("%s; move it aside and register the backups again" % problem)
        document = document or _empty_document()
        for key in ("backups", "slices", "gaps"):
            document.setdefault(key, [])
        return document

    def save(self):
        """Write the catalog atomically (only under ``locked``)."""
        if not self.writable:
            raise CatalogError("the catalog of %s was opened read-only; open it with Catalog.locked to change it"
                               % self.root)
        self.document["updated_at"] = now_iso()
        manifest_utils.write_json_atomic(self.path, self.document)
        self.changed = False

    def relative(self, path):
        """A path below the root relative to it; a path elsewhere stays absolute."""
        absolute = os.path.abspath(os.path.join(self.root, path))
        relative = os.path.relpath(absolute, self.root)
        return absolute if relative == ".." or relative.startswith(".." + os.sep) else relative

    def absolute(self, path):
        return os.path.normpath(os.path.join(self.root, path))

    # ------------------------------------------------------------------ records

    @property
    def backups(self):
        return self.document["backups"]

    @property
    def slices(self):
        return self.document["slices"]

    @property
    def gaps(self):
        return self.document["gaps"]

    def add_backup_from_manifest(self, backup_path):
        """Register the complete backup at ``backup_path`` (a directory or an archive file).

        Idempotent by backup_id: returns the record and True when it was added (or replaced an entry
        for the same path whose backup was replaced with ``force``), False when already there.
        """
        absolute = os.path.abspath(os.path.join(self.root, backup_path))
        is_archive = not os.path.isdir(absolute)
        document = manifest_utils.read_manifest(manifest_utils.manifest_path(absolute, is_archive))
        if document is None:
            raise CatalogError("%s is not a complete backup: it has no manifest; only a finished backup can be "
                               "registered (run the dump again)" % absolute)
        record = self._backup_record(absolute, is_archive, document)
        for existing in self.backups:
            if existing["backup_id"] == record["backup_id"]:
                return existing, False
        self.document["backups"] = [b for b in self.backups if b["path"] != record["path"]] + [record]
        self.backups.sort(key=lambda b: (b.get("finished_at") or "", b["backup_id"]))
        self.changed = True
        return record, True

    def _backup_record(self, absolute, is_archive, document):
        oplog = document.get("oplog") or {}
        totals = document.get("totals") or {}
        server = document.get("server") or {}
        record = {
            "label": document.get("label"),
            "backup_id": document["backup_id"],
            "path": self.relative(absolute),
            "format": "archive" if is_archive else "directory",
            "started_at": document.get("started_at"),
            "finished_at": document.get("finished_at"),
            "replica_set": server.get("replica_set"),
            "member": document.get("member"),
            "oplog_start": ts_text((oplog.get("start") or {}).get("ts")),
            "oplog_end": ts_text((oplog.get("end") or {}).get("ts")),
            "bytes": totals.get("bytes_on_disk", 0),
            "data_bytes": totals.get("bytes", 0),
            "documents": totals.get("documents", 0),
            "verified": None,  # the last test restore, set by mongodb_backup_verify (verification_of)
        }
        cluster = document.get("cluster")
        if cluster:  # a sharded-cluster backup: one entry, restorable to its cut only
            record.update(kind=document.get("kind"), cut=(cluster.get("cut") or {}).get("ts"),
                          shards=[shard["name"] for shard in cluster.get("shards") or []])
        snapshot = document.get("snapshot")
        if snapshot:  # a snapshot set: its volumes are elsewhere; a replica set's is a point-in-time base
            record.update(kind=document.get("kind"), provider=snapshot.get("provider"),
                          snapshot_set=snapshot.get("snapshot_set"), shard=snapshot.get("shard"),
                          snapshots=len(snapshot.get("snapshots") or []),
                          members=[m.get("shard") or m.get("replica_set") for m in snapshot.get("members") or []])
        return record

    def add_slice(self, replica_set, first_ts, last_ts, file, entries=0, sha256=None, created_at=None, **fields):
        """Register an archived oplog slice ``[first_ts, last_ts]`` (both inclusive); idempotent by file.

        ``bytes`` (or ``size``) and ``sha256`` are computed from the file when not given; other keyword
        fields (such as ``compression``) are kept in the record as they are.
        """
        first, last = ts_key(first_ts), ts_key(last_ts)
        if first > last:
            raise InvalidOption("oplog slice %s: first timestamp %s is after the last %s"
                                % (file, ts_text(first), ts_text(last)))
        relative = self.relative(file)
        for existing in self.slices:
            if existing["file"] == relative:
                return existing, False
        self._check_no_overlap(replica_set, first, last, relative)
        absolute = self.absolute(relative)
        size = fields.pop("bytes", fields.pop("size", None))
        if size is None or sha256 is None:
            try:
                size = os.path.getsize(absolute) if size is None else size
                sha256 = sha256_file(absolute) if sha256 is None else sha256
            except OSError as exc:
                raise CatalogError("oplog slice %s cannot be read: %s" % (absolute, exc.strerror or exc))
        record = dict(fields)
        record.update({"replica_set": replica_set, "first_ts": ts_text(first), "last_ts": ts_text(last),
                       "entries": int(entries), "file": relative, "bytes": int(size), "sha256": sha256,
                       "created_at": created_at or now_iso()})
        self.slices.append(record)
        self.slices.sort(key=lambda s: (s["replica_set"] or "", ts_key(s["first_ts"]), ts_key(s["last_ts"])))
        self.changed = True
        return record, True

    def _check_no_overlap(self, replica_set, first, last, relative):
        """Refuse a slice that shares more than one boundary entry with a recorded slice of its replica set.

        Consecutive slices legitimately share exactly one entry (each starts at its predecessor's last one);
        anything more means two runs archived the same entries and the chain would count them twice.
        """
        for existing in self.slices_of(replica_set):
            other_first, other_last = ts_key(existing["first_ts"]), ts_key(existing["last_ts"])
            if max(first, other_first) < min(last, other_last) or (first, last) == (other_first, other_last):
                raise CatalogError(
                    "oplog slice %s (%s to %s) overlaps the recorded slice %s (%s to %s) of replica set %s: the "
                    "same entries would be archived twice; it was not recorded. Was another archive run going "
                    "on at the same time? Run the archiving again: it resumes after %s"
                    % (relative, ts_text(first), ts_text(last), existing["file"], existing["first_ts"],
                       existing["last_ts"], replica_set, ts_text(self.last_archived_ts(replica_set))),
                    slice=relative, overlaps=existing["file"])

    def record_gap(self, replica_set, last_archived_ts, oldest_available_ts, detected_at=None):
        """Record that the oplog entries after ``last_archived_ts`` up to ``oldest_available_ts`` are lost.

        ``oldest_available_ts`` may be None (the oplog was empty when capture looked).
        """
        if last_archived_ts is None:
            raise InvalidOption("an oplog gap of %s needs the last archived timestamp" % replica_set)
        record = {"replica_set": replica_set, "last_archived_ts": ts_text(last_archived_ts),
                  "oldest_available_ts": ts_text(oldest_available_ts), "detected_at": detected_at or now_iso()}
        for existing in self.gaps:
            if all(existing[k] == record[k] for k in ("replica_set", "last_archived_ts", "oldest_available_ts")):
                return existing, False
        self.gaps.append(record)
        self.changed = True
        return record, True

    # ------------------------------------------------------------------ queries

    def replica_sets(self):
        names = set(b["replica_set"] for b in self.backups if b.get("oplog_end"))
        names.update(s["replica_set"] for s in self.slices)
        return sorted(names, key=lambda n: n or "")

    def slices_of(self, replica_set):
        return sorted((s for s in self.slices if s["replica_set"] == replica_set),
                      key=lambda s: (ts_key(s["first_ts"]), ts_key(s["last_ts"])))

    def gaps_of(self, replica_set):
        return sorted((g for g in self.gaps if g["replica_set"] == replica_set),
                      key=lambda g: ts_key(g["last_archived_ts"]))

    def last_archived_ts(self, replica_set):
        """Where oplog capture resumes, or None when there is nothing to continue from.

        The newest slice's last_ts, else the newest backup's oplog end. When a recorded gap broke the chain
        at or after the newest slice and a full backup ends later, that backup's end: a new full backup is
        how an operator starts a new chain after a gap, and capture must not report the same gap forever.
        """
        slice_ends = [ts_key(s["last_ts"]) for s in self.slices if s["replica_set"] == replica_set]
        backup_ends = [ts_key(b["oplog_end"]) for b in self.backups
                       if b["replica_set"] == replica_set and b.get("oplog_end")]
        if not slice_ends:
            return ts_text(max(backup_ends)) if backup_ends else None
        newest_slice = max(slice_ends)
        broken = any(ts_key(g["last_archived_ts"]) >= newest_slice for g in self.gaps_of(replica_set))
        if broken and backup_ends and max(backup_ends) > newest_slice:
            return ts_text(max(backup_ends))
        return ts_text(newest_slice)

    def slice_problem(self, record, verify=False):
        """What is wrong with the file of a slice record, or None: missing, a size other than the recorded one,
        or (with ``verify``) a sha256 other than the recorded one. Reads only."""
        path = self.absolute(record["file"])
        try:
            size = os.path.getsize(path)
        except OSError as exc:
            return "missing (%s)" % (exc.strerror or exc) if exc.errno == errno.ENOENT else \
                "unreadable (%s)" % (exc.strerror or exc)
        if size != record["bytes"]:
            return "its size is %d bytes, the catalog recorded %d" % (size, record["bytes"])
        if verify:
            try:
                digest = sha256_file(path)
            except OSError as exc:
                return "unreadable (%s)" % (exc.strerror or exc)
            if digest != record.get("sha256"):
                return "corrupt: its sha256 is %s, the catalog recorded %s" % (digest, record.get("sha256"))
        return None

    def damaged_slices(self, verify=False):
        """{file: problem} for every slice whose file is missing, of the wrong size or (``verify``) checksum."""
        found = {}
        for record in self.slices:
            problem = self.slice_problem(record, verify)
            if problem:
                found[record["file"]] = problem
        return found
