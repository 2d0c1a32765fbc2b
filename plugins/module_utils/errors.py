# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One exception hierarchy for the engine.

Every message names the object, the cause and what the operator should do next.
The modules convert these to ``fail_json`` in exactly one place (``common.py``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class BackupError(Exception):
    """Base class: anything the engine reports to the operator."""

    def __init__(self, message, **details):
        super(BackupError, self).__init__(message)
        self.message = message
        self.details = details


class ConnectionFailure(BackupError):
    """The server could not be reached, refused our credentials, or TLS failed."""


class FormatError(BackupError):
    """A file in mongodump layout or archive format is malformed or truncated."""


class InvalidOption(BackupError):
    """An option value is malformed (a query, a namespace pattern, a path)."""


class NamespaceNotFound(BackupError):
    """A requested database or collection does not exist on the source."""


class DumpFailed(BackupError):
    """The dump could not be completed; nothing that looks complete was left behind."""


class OplogOverflow(DumpFailed):
    """The oplog rolled over while an ``oplog: true`` dump was running."""


class LockError(BackupError):
    """A lock could not be taken: another run held it too long, or its file cannot be created."""


class Cancelled(BackupError):
    """A worker stopped because another one failed first; that other failure is the one reported."""

    def __init__(self, message="cancelled because another worker failed", **details):
        super(Cancelled, self).__init__(message, **details)


class Truncated(FormatError):
    """A BSON stream ended before ``need`` bytes were available at ``offset`` (readers turn it into a
    FormatError that names the file)."""

    def __init__(self, offset, need, have):
        super(Truncated, self).__init__("need %d bytes at byte %d, only %d left" % (need, offset, have))
        self.offset = offset
        self.need = need
        self.have = have


class MemberSelectionError(BackupError):
    """No replica-set member fits the backup (all lagging, none healthy, unknown ``member``)."""


class Terminated(DumpFailed):
    """The module was asked to stop (SIGTERM) while the real mongodump, or a verification, ran."""


class VerificationFailed(BackupError):
    """The source does not match its manifest, or is structurally broken: nothing was written."""


class RestoreFailed(BackupError):
    """The restore stopped; the details say what was and was not applied."""


class ReplayError(BackupError):
    """The replay stopped; ``details`` hold the entry, ``last_applied`` and the counts so far."""


class DiffError(BackupError):
    """An update cannot be applied: malformed, or of a kind this applier does not know."""


class ArchiveFailed(BackupError):
    """The archiving run failed; complete slices written before the failure stay recorded."""


class CatalogError(BackupError):
    """The catalog cannot be read or updated, or it cannot serve the requested restore."""


class OplogGap(CatalogError):
    """Archived oplog has a hole: entries after the last archived one were gone before capture read
    them, so no restore can cross that point."""


class ClusterError(BackupError):
    """A sharded-cluster step cannot run or did not complete: wrong kind of server, balancer state,
    shard map, or the cut across shards."""


class FsyncLockError(BackupError):
    """The fsync lock cannot be taken, released or read on this server (a primary without
    allow_primary, a mongos too old for a cluster-wide lock, a lock older than allowed)."""


class SnapshotError(BackupError):
    """A volume or disk snapshot could not be created, completed, copied or deleted."""
