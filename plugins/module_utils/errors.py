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
