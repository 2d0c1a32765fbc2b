# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Adding full backups to a backup root's catalog and taking them out again.

``register`` adds complete backups (found under the root, or named), ``unregister`` removes
entries by path or label. Both change nothing on disk in check mode and report exactly what
they would change; otherwise they hold the catalog lock for the read-modify-write and save only
when the catalog changed. Removing an entry never deletes the backup's files.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog.store import Catalog, check_backup_root
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import manifest as manifest_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog.archiver import SLICE_DIR

ARCHIVE_MANIFEST_SUFFIX = "." + manifest_utils.MANIFEST_NAME
ENTRY_FIELDS = ("label", "backup_id", "path", "format", "finished_at", "replica_set")


def find_backups(root):
    """Every complete backup below ``root``, sorted: directories holding a manifest (not searched
    further) and archive files next to their ``<archive>.manifest.json``. Unfinished ``*.partial``
    targets and the oplog slice directory are skipped."""
    check_backup_root(root)
    found = []
    for directory, subdirs, files in os.walk(root):
        if directory != root and manifest_utils.MANIFEST_NAME in files:
            found.append(directory)
            subdirs[:] = []
            continue
        subdirs[:] = sorted(d for d in subdirs if not d.endswith(".partial")
                            and not (directory == root and d == SLICE_DIR))
        for name in files:
            archive = os.path.join(directory, name[:-len(ARCHIVE_MANIFEST_SUFFIX)])
            if name.endswith(ARCHIVE_MANIFEST_SUFFIX) and os.path.isfile(archive):
                found.append(archive)
    return sorted(found)


def entry(record):
    return dict((key, record.get(key)) for key in ENTRY_FIELDS)


def _change(root, check_mode, apply):
    """Run ``apply(catalog)`` on the catalog of ``root``: in memory in check mode, else under the lock,
    saving only when it changed. Returns (catalog, what ``apply`` returned)."""
    if check_mode:
        catalog = Catalog.load(root)
        return catalog, apply(catalog)
    with Catalog.locked(root) as catalog:
        outcome = apply(catalog)
        if catalog.changed:
            catalog.save()
    return catalog, outcome


def register(root, paths=None, check_mode=False):
    """Add the complete backups at ``paths`` (relative to ``root`` or absolute), or every one found under
    ``root`` when ``paths`` is None. Idempotent by backup id. Returns (catalog, entries added)."""
    check_backup_root(root)
    paths = find_backups(root) if paths is None else list(paths)

    def apply(catalog):
        results = (catalog.add_backup_from_manifest(path) for path in paths)
        return [entry(record) for record, new in results if new]
    return _change(root, check_mode, apply)


def unregister(root, path=None, label=None, check_mode=False):
    """Remove the catalog entries of the backup at ``path`` or with ``label`` (the files stay).
    Returns (catalog, entries removed); nothing matching changes nothing."""
    def apply(catalog):
        wanted = catalog.relative(path) if path is not None else None
        removed = [b for b in catalog.backups
                   if (wanted is not None and b["path"] == wanted) or (label is not None and b["label"] == label)]
        if removed:
            catalog.document["backups"] = [b for b in catalog.backups if b not in removed]
            catalog.changed = True
        return [entry(record) for record in removed]
    return _change(root, check_mode, apply)
