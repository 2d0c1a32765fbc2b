# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Exclusive locks on a lock file beside what they protect (``flock``).

The kernel releases a lock when its process dies, so a killed run never leaves a stale lock. The
holder writes who it is (pid, host, start time, what it does) into the file, so that a run that
gives up waiting can name the other run. The file is removed when the lock is released; a waiter
that had opened the removed file notices (its inode is no longer at the path) and tries again, so
two runs never hold "the same" lock through two different files.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections import namedtuple

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import LockError

LOCK_POLL = 0.1
LOCK_FILE_MODE = 0o600

# What a holder learns: the lock file and how long this run waited for it.
HeldLock = namedtuple("HeldLock", "path waited_seconds")


@contextlib.contextmanager
def exclusive(path, timeout, what, purpose):
    """Hold an exclusive lock on ``path`` for the block, waiting at most ``timeout`` seconds.

    ``what`` names the locked object in messages ("the backup target /b/x"); ``purpose`` says what
    this run does, recorded for the runs that wait.
    """
    asked = time.monotonic()
    deadline = asked + max(0.0, float(timeout))
    while True:
        fd = _open(path, what)
        if _lock_if_current(fd, path):
            break
        os.close(fd)
        if time.monotonic() >= deadline:
            raise LockError("%s is in use by another run (%s) and stayed locked for %g seconds; wait "
                            "for that run to finish, or raise lock_timeout (the lock file %s is released "
                            "by the kernel when its process ends: never delete it by hand)"
                            % (what, describe_holder(path), timeout, path))
        time.sleep(LOCK_POLL)
    try:
        _record_holder(fd, purpose)
        yield HeldLock(path, round(time.monotonic() - asked, 3))
    finally:
        try:
            os.unlink(path)  # while still held: a waiter on this inode sees it is gone and retries
        except OSError:
            pass
        os.close(fd)


def describe_holder(path):
    """Who holds the lock at ``path``, as its holder recorded it."""
    try:
        with open(path) as handle:
            holder = json.loads(handle.read() or "{}")
    except (OSError, ValueError):
        holder = {}
    if not holder:
        return "holder unknown"
    return "pid %s on %s since %s: %s" % (holder.get("pid"), holder.get("host"), holder.get("since"),
                                          holder.get("purpose"))


def _open(path, what):
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), LOCK_FILE_MODE)
    except OSError as exc:
        raise LockError("cannot create the lock file %s of %s: %s; check that its directory exists and "
                        "is writable by this user" % (path, what, exc.strerror or exc))
    return fd


def _lock_if_current(fd, path):
    """Lock ``fd`` without waiting; True only when it is still the file at ``path``."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        os.close(fd)
        raise
    try:
        on_disk = os.stat(path)
    except OSError:
        return False  # released and removed by its previous holder: open the new one
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _record_holder(fd, purpose):
    os.fchmod(fd, LOCK_FILE_MODE)
    holder = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                         "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "purpose": purpose})
    os.ftruncate(fd, 0)
    os.pwrite(fd, holder.encode("utf-8"), 0)
