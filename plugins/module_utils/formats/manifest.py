# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""manifest.json: what a backup holds, written last, so that its presence means "complete".

A directory backup keeps it at ``<dir>/manifest.json``; an archive backup beside the file,
at ``<archive>.manifest.json``. Per-file sha256 are computed while the files are written
(``bsonio.HashingFile``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.bsonio import sha256_file
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import FormatError

# Who wrote a backup: recorded in prelude.json and archive headers as the tool version.
TOOL_NAME = "dbops.mongodb_backup"
TOOL_VERSION = TOOL_NAME + "-1.2.0"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "dbops.mongodb_backup/manifest"
MANIFEST_VERSION = 1
# A snapshot set recorded as a backup (snapshots/record.py): no dump inside, its data is in volume snapshots.
SNAPSHOT_KIND = "snapshot"
FILE_MODE = 0o600
DIR_MODE = 0o700


def manifest_path(target, is_archive):
    return target + "." + MANIFEST_NAME if is_archive else os.path.join(target, MANIFEST_NAME)


def files_base(target, is_archive):
    """The directory the manifest's file paths are relative to."""
    return os.path.dirname(target) if is_archive else target


def make_private_dir(path, parents=False):
    """Create the directory ``path`` with mode 0700 whatever the umask (mkdir's mode is masked by it).

    Without ``parents`` the parent must exist and ``path`` must not (FileExistsError), so the caller
    owns exactly what it made. With ``parents`` missing parents are made 0700 too, and a directory that
    already exists (or that a concurrent run creates meanwhile) is left as it is.
    """
    path = os.path.abspath(path)
    if parents:
        if os.path.isdir(path):
            return
        parent = os.path.dirname(path)
        if parent != path:
            make_private_dir(parent, parents=True)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        if not parents or not os.path.isdir(path):
            raise
        return
    os.chmod(path, DIR_MODE)


def damaged_files(target, is_archive, document):
    """What no longer matches the manifest: ``["<path>: <cause>"]``, empty when every file is intact.

    Sizes are compared first (cheap), then every sha256.
    """
    base = files_base(target, is_archive)
    records = [(os.path.join(base, record["path"]), record) for record in document.get("files") or []]
    problems = []
    for path, record in records:
        if not os.path.isfile(path):
            problems.append("%s: missing" % path)
        elif os.path.getsize(path) != record.get("bytes"):
            problems.append("%s: %d bytes, the manifest records %s" % (path, os.path.getsize(path), record.get("bytes")))
    if problems:
        return problems
    for path, record in records:
        actual = sha256_file(path)
        if actual != record.get("sha256"):
            problems.append("%s: sha256 %s, the manifest records %s" % (path, actual, record.get("sha256")))
    return problems


def write_json_atomic(path, document):
    """Write JSON to ``path`` through a temporary file and a rename, mode 0600."""
    temporary = path + ".partial"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w") as handle:
        json.dump(document, handle, indent=2, sort_keys=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(temporary, path)
    fsync_directory(os.path.dirname(path) or ".")


def fsync_directory(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json_file(path, expected_format, noun):
    """``(document, problem)`` for a JSON file this collection writes: ``(None, None)`` when absent,
    ``(None, why)`` when unreadable or not a document of ``expected_format``."""
    if not os.path.exists(path):
        return None, None
    try:
        with open(path) as handle:
            document = json.load(handle)
    except (OSError, ValueError) as exc:
        return None, "%s %s cannot be read: %s" % (noun, path, exc)
    if not isinstance(document, dict) or document.get("format") != expected_format:
        return None, "%s is not a dbops.mongodb_backup %s" % (path, noun)
    return document, None


def read_manifest(path):
    """The manifest at ``path``, None when absent; FormatError when unreadable."""
    document, problem = read_json_file(path, MANIFEST_FORMAT, "manifest")
    if problem:
        raise FormatError("%s; the backup cannot be trusted, take a new one" % problem)
    return document


def new_manifest(backup_id, label, kind, started, finished, server, member, options):
    return {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "backup_id": backup_id,
        "label": label,
        "kind": kind,
        "started_at": started,
        "finished_at": finished,
        "server": server,
        "member": member,
        "options": options,
        "namespaces": [],
        "files": [],
        "oplog": None,
        "totals": {},
    }
