# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A backup's place on disk: staging in <target>.partial, the target lock, same-label reruns and the atomic commit."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import time

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import locking
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import manifest as manifest_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.timestamps import iso_time
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import DumpFailed, FormatError


# Beside the target: its lock, the staging directory a run builds in, an old backup being replaced.
LOCK_SUFFIX = ".lock"


PARTIAL_SUFFIX = ".partial"


REPLACED_SUFFIX = ".replaced"


# Written first into a staging directory: proof that a leftover ``.partial`` is ours to remove.
STAGING_MARKER = ".dbops-mongodb-backup-staging"


def check_backup_location(parent):
    if not os.path.isdir(parent):
        raise DumpFailed("the backup location %s does not exist or is not a directory; create it "
                         "(or mount the backup volume) first" % parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DumpFailed("the backup location %s is not writable by this user; fix its "
                         "permissions or choose another path" % parent)


def kept_backup(options, staging):
    """The manifest of the complete backup a same-label rerun keeps (no change), or None when a backup
    must be taken. Refuses a backup of the same label but another scope, or damaged.

    In check mode a run would first finish an interrupted archive commit (Staging.resume_commit):
    that staged manifest counts as the backup there.
    """
    existing = staging.interrupted_commit() or existing_backup(options)
    if existing is None or options.force:
        return None
    check_kept_backup(existing, options)
    return existing


def existing_backup(options):
    """The manifest of a complete backup already at the target, or None (nothing there, or force may
    replace what is there). Refuses what this collection did not write."""
    target = os.path.abspath(options.target)
    manifest = manifest_utils.manifest_path(target, options.is_archive)
    try:
        found = manifest_utils.read_manifest(manifest)
    except FormatError as exc:
        if options.force:
            return None  # our manifest's name, unreadable: force replaces the backup
        raise DumpFailed("%s; force: true replaces the backup at %s with a new one" % (exc.message, target))
    if found is not None or not os.path.lexists(target) or _is_empty_dir(target):
        return found
    if options.force and options.is_archive and os.path.lexists(manifest + PARTIAL_SUFFIX):
        # An archive left by an older version that failed while writing its manifest beside it.
        return None
    raise DumpFailed("%s already exists and is not a complete backup made by this collection; "
                     "choose another path, or remove it" % target)


def _is_empty_dir(path):
    return os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path)


def _recorded_scope(options):
    """The scope a manifest records, in today's terms: manifests before ``compression`` say ``gzip``."""
    scope = dict(options)
    if "compression" not in scope:
        scope["compression"] = "gzip" if scope.pop("gzip", False) else "none"
    return scope


def scope_mismatches(recorded, requested):
    """``["<option>: asked <x>, the backup holds <y>"]`` for every scope option that differs."""
    recorded = _recorded_scope(recorded)
    mismatches = []
    for key, asked in sorted(requested.items()):
        held = recorded.get(key)
        if (asked or None) != (held or None):
            mismatches.append("%s: asked %s, the backup holds %s" % (key, json.dumps(asked), json.dumps(held)))
    return mismatches


def check_kept_backup(existing, options):
    """A complete backup with the requested label is kept only if it is what was asked and intact."""
    target = os.path.abspath(options.target)
    if options.label is None or existing.get("label") != options.label:
        raise DumpFailed("%s already holds backup %s (label %r); use another path, the same label "
                         "to keep it, or force: true to replace it"
                         % (target, existing.get("backup_id"), existing.get("label")))
    mismatches = scope_mismatches(existing.get("options") or {}, options.describe())
    if mismatches:
        raise DumpFailed("%s already holds backup %s with label %r but of another scope (%s); use another "
                         "label or path for this scope, or force: true to replace that backup"
                         % (target, existing.get("backup_id"), options.label, "; ".join(mismatches)))
    damaged = manifest_utils.damaged_files(target, options.is_archive, existing)
    if damaged:
        raise DumpFailed("backup %s with label %r at %s is damaged (%s); run again with force: true to "
                         "replace it with a new backup, or use another path"
                         % (existing.get("backup_id"), options.label, target, "; ".join(damaged[:5])))


def is_ours(path):
    """A directory this collection made: a staging marker or one of our manifests inside."""
    if os.path.islink(path) or not os.path.isdir(path):
        return False
    if os.path.isfile(os.path.join(path, STAGING_MARKER)):
        return True
    try:
        return manifest_utils.read_manifest(os.path.join(path, manifest_utils.MANIFEST_NAME)) is not None
    except FormatError:
        return False


class Staging:
    """``<target>.partial``: the directory a backup is built in (marked as ours), moved into place last.

    A directory backup is the staging directory itself; an archive is built as a file inside it,
    with its manifest, so that the archive reaches its final name only once its manifest is
    complete. Use it only while holding the target's lock.
    """

    def __init__(self, target, is_archive):
        self.target = target
        self.is_archive = is_archive
        self.path = target + PARTIAL_SUFFIX
        self.replaced = target + REPLACED_SUFFIX
        self.marker = os.path.join(self.path, STAGING_MARKER)
        self.manifest = os.path.join(self.path, manifest_utils.MANIFEST_NAME)
        self.data_path = os.path.join(self.path, os.path.basename(target)) if is_archive else self.path
        self.created = False

    def check_free(self):
        """Refuse, before anything is written, what is in the way and was not made by this collection."""
        for path in (self.path, self.replaced):
            if os.path.lexists(path) and not is_ours(path):
                raise DumpFailed("%s is in the way of the backup %s and was not made by this collection (it "
                                 "holds neither our staging marker nor our manifest), so it is left untouched; "
                                 "move it away, or choose another path" % (path, self.target))

    def create(self):
        self.check_free()
        remove_path(self.path)  # a killed run's leftover: provably ours, and we hold the target's lock
        manifest_utils.make_private_dir(self.path)
        self.created = True
        fd = os.open(self.marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, manifest_utils.FILE_MODE)
        with os.fdopen(fd, "w") as handle:
            json.dump({"target": self.target, "pid": os.getpid(), "created_at": iso_time(time.time())},
                      handle)

    def discard(self):
        if self.created:
            remove_path(self.path)

    def commit(self, document):
        """The manifest is complete on disk before anything moves; then the renames."""
        manifest_utils.write_json_atomic(self.manifest, document)
        if self.is_archive:
            self._commit_archive()
        else:
            self._commit_directory()
        manifest_utils.fsync_directory(os.path.dirname(self.target))
        self.created = False

    def _commit_directory(self):
        os.remove(self.marker)  # from here the manifest inside marks the directory as ours
        old = None
        if os.path.lexists(self.target):
            old = self.replaced
            remove_path(old)  # checked by check_free: an earlier replaced backup of ours
            os.rename(self.target, old)
        os.rename(self.path, self.target)
        if old:
            remove_path(old)

    def _commit_archive(self):
        final_manifest = manifest_utils.manifest_path(self.target, True)
        # The old archive loses its manifest first: from here it is never taken as complete.
        remove_path(final_manifest)
        remove_path(final_manifest + PARTIAL_SUFFIX)  # an older version's leftover temporary
        os.rename(self.data_path, self.target)
        try:
            os.rename(self.manifest, final_manifest)
        except BaseException:
            os.rename(self.target, self.data_path)  # nothing may look complete without its manifest
            raise
        remove_path(self.path)

    def interrupted_commit(self):
        """The staged manifest of an archive commit a killed run left between its two renames, or None.

        The staging then holds the complete manifest and the archive is at its final name; it is
        taken only when the archive matches that manifest's size and sha256.
        """
        if not self.is_archive or not is_ours(self.path) or not os.path.isfile(self.manifest) \
                or os.path.lexists(self.data_path) or not os.path.isfile(self.target) \
                or os.path.lexists(manifest_utils.manifest_path(self.target, True)):
            return None
        try:
            document = manifest_utils.read_manifest(self.manifest)
        except FormatError:
            return None
        if document is None or manifest_utils.damaged_files(self.target, True, document):
            return None
        return document

    def resume_commit(self):
        """Finish an interrupted archive commit (see interrupted_commit); True when done."""
        if self.interrupted_commit() is None:
            return False
        os.rename(self.manifest, manifest_utils.manifest_path(self.target, True))
        manifest_utils.fsync_directory(os.path.dirname(self.target))
        remove_path(self.path)
        return True


def remove_path(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def prepare_parent(options):
    """The directory the backup goes in must exist (create_parent makes one missing level, 0700)."""
    parent = os.path.dirname(os.path.abspath(options.target))
    if options.create_parent and not os.path.isdir(parent):
        check_backup_location(os.path.dirname(parent))
        try:
            manifest_utils.make_private_dir(parent)
        except FileExistsError:
            pass  # made by a concurrent run meanwhile
    check_backup_location(parent)


def target_lock(options):
    """One run per target at a time, held from the idempotence check to the commit."""
    target = os.path.abspath(options.target)
    return locking.exclusive(target + LOCK_SUFFIX, options.lock_timeout, "the backup target %s" % target,
                             "dump with label %s" % options.label)
