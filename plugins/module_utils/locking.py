# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One exclusive lock per job that must not run twice at once (an oplog archive run, a dump target).

``with exclusive_lock(path, purpose, wait_seconds) as held: ...`` holds an ``fcntl.flock`` on ``path`` (created
0600 when missing; never deleted, so two runs always lock the same inode). A second run waits up to
``wait_seconds`` and then fails with ``LockBusy``, naming the lock file and what holds it. The kernel
releases the lock of a process that dies, so a killed run never blocks the next one. ``held`` tells
the lock's ``path`` and how long this run ``waited_seconds`` for it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import errno
import fcntl
import os
import time
from collections import namedtuple

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import BackupError

LOCK_FILE_MODE = 0o600
POLL_SECONDS = 0.1


class LockBusy(BackupError):
    """Another run holds the lock for the same job, or the lock file cannot be used."""


HeldLock = namedtuple("HeldLock", "path waited_seconds")


@contextlib.contextmanager
def exclusive_lock(path, purpose, wait_seconds=0):
    """Hold an exclusive lock on ``path`` for ``purpose`` (words such as "oplog archiving of rs0")."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, LOCK_FILE_MODE)
    except OSError as exc:
        raise LockBusy("cannot open the lock file %s for %s: %s; check the permissions of its directory"
                       % (path, purpose, exc.strerror or exc), lock=path)
    try:
        os.fchmod(fd, LOCK_FILE_MODE)  # a file created under a lax umask or by hand is made private
        asked = time.time()
        _acquire(fd, path, purpose, float(wait_seconds))
        try:
            os.ftruncate(fd, 0)
            os.write(fd, ("pid %d\n" % os.getpid()).encode("ascii"))  # who holds it, for the next message
            yield HeldLock(path, round(time.time() - asked, 3))
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd, path, purpose, wait_seconds):
    deadline = time.time() + max(wait_seconds, 0.0)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise LockBusy("cannot lock %s for %s: %s" % (path, purpose, exc.strerror or exc), lock=path)
        if time.time() >= deadline:
            raise LockBusy("another run holds the lock %s (%s) for %s, still after waiting %g seconds; let it "
                           "finish, or raise the wait (a lock left by a killed process is released by the kernel)"
                           % (path, _holder(path), purpose, wait_seconds), lock=path)
        time.sleep(POLL_SECONDS)


def _holder(path):
    try:
        with open(path) as handle:
            return handle.read().strip() or "holder unknown"
    except OSError:
        return "holder unknown"
