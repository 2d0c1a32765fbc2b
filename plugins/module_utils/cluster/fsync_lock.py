# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fsync lock of one server: read it, take it, release it.

What MongoDB 7/8 report, and what this module relies on:

* ``{fsync: 1, lock: true}`` flushes to disk and blocks writes; its reply carries ``lockCount``,
  the number of lock levels now held. Each such command adds one level.
* ``{fsyncUnlock: 1}`` removes one level and replies with the ``lockCount`` left; writes resume at 0.
  On a server that is not locked it fails with IllegalOperation ("fsyncUnlock called when not locked").
* ``currentOp`` adds ``fsyncLock: true`` to its reply while the server is locked. The lock is held
  by a system operation named ``fsyncLockWorker`` (listed with ``$all``) whose running time is the
  age of the lock. No read-only command reports the lock count: it is known only from the replies
  of fsync and fsyncUnlock, so a lock this module did not touch has an unknown count (None).

Levels carry no owner: the server does not record who took which level, and the lock outlives
the connection that took it. This module therefore never stacks a level on a locked server
(``locked`` is idempotent) and ``unlocked`` releases every level, since "unlocked" means writes
flow again, which needs a count of 0.

No Ansible imports.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

try:
    from pymongo import errors as pymongo_errors
except ImportError:  # pragma: no cover - reported by the module wrapper
    pymongo_errors = None

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import members
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import server_codes
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import timestamps
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import versions
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import FsyncLockError, InvalidOption

LOCK_WORKER = "fsyncLockWorker"
DEFAULT_MAX_LOCK_SECONDS = 300
# fsyncUnlock rounds before giving up on a count that does not fall (another client keeps locking).
MAX_UNLOCK_ROUNDS = 1000


def connect_one(options):
    """A direct connection to the one server named by the options: a lock belongs to one server, and a
    client to a whole replica set would send it to whichever member it picks."""
    if options.uri:
        nodes = client_utils.parse_uri(options.uri)["nodelist"]
        if len(nodes) > 1:
            raise InvalidOption(
                "uri names %d hosts (%s); an fsync lock applies to one server: give only the member to "
                "lock (or the mongos) in uri" % (len(nodes), client_utils.describe_uri_hosts(options.uri)))
    return client_utils.connect(options, directConnection=True)


def connect_member(options, member=None, max_lag_seconds=None, allow_primary=False, state=None):
    """A direct client to the member to lock, and how it was chosen: (client, selection or None).

    ``member`` None: the one server the options name (``connect_one``). ``"auto"``: the member a snapshot
    should come from, chosen over the replica set the options reach (hidden first, else the least-lagging
    secondary; the primary only with ``allow_primary``). ``"host:port"``: that member, checked to be healthy
    and within ``max_lag_seconds`` before a lock; an unlock goes straight to it, whatever the set's state,
    because a lock must always be releasable.
    """
    if member is None:
        return connect_one(options), None
    if member != "auto" and state == "unlocked":
        return members.pinned_client(options, member), {"host": member, "reason": "named for the unlock"}
    client = client_utils.connect(options)
    try:
        selection = members.select_member(client, member=None if member == "auto" else member,
                                          max_lag_seconds=max_lag_seconds, prefer_hidden=True,
                                          allow_primary=allow_primary)
    finally:
        client.close()
    return members.pinned_client(options, selection["host"]), selection


def server_role(facts):
    """primary, secondary, mongos or standalone (from connection.client.server_facts); None otherwise."""
    if facts["topology"] == "sharded":
        return "mongos"
    if facts["topology"] == "standalone":
        return "standalone"
    return {"PRIMARY": "primary", "SECONDARY": "secondary"}.get(facts["member_state"])


def read_state(client):
    """{locked, lock_count, lock_age_seconds} as the server reports them now (no change).

    lock_count is 0 when unlocked and None when locked (only fsync/fsyncUnlock replies carry it);
    lock_age_seconds is None when unlocked or when the server lists no lock holder.
    """
    try:
        reply = client.admin.command({"currentOp": 1, "$all": True, "desc": LOCK_WORKER})
    except pymongo_errors.OperationFailure as exc:
        raise _command_error("currentOp", client, exc)
    locked = bool(reply.get("fsyncLock"))
    age = None
    if locked:
        for op in reply.get("inprog") or []:
            if op.get("desc") != LOCK_WORKER:
                continue
            if op.get("microsecs_running") is not None:
                age = int(op["microsecs_running"]) // 1000000
            elif op.get("secs_running") is not None:
                age = int(op["secs_running"])
    return {"locked": locked, "lock_count": None if locked else 0, "lock_age_seconds": age}


def newest_oplog_ts(client):
    """ts of the newest local.oplog.rs entry, or None (mongos, standalone, empty oplog)."""
    try:
        docs = list(client.local["oplog.rs"].find({}, {"ts": 1}).sort("$natural", -1).limit(1))
    except pymongo_errors.OperationFailure as exc:
        if exc.code == server_codes.NAMESPACE_NOT_FOUND:
            return None
        raise _command_error("a read of local.oplog.rs", client, exc)
    return docs[0].get("ts") if docs else None


def lock(client):
    """Take one lock level; the lockCount the server reports after."""
    try:
        reply = client.admin.command({"fsync": 1, "lock": True})
    except pymongo_errors.OperationFailure as exc:
        raise _command_error("fsync lock", client, exc)
    return _count(reply)


def unlock_all(client):
    """fsyncUnlock until the server reports lockCount 0; the number of levels released."""
    released = 0
    for _round in range(MAX_UNLOCK_ROUNDS):
        try:
            reply = client.admin.command("fsyncUnlock")
        except pymongo_errors.OperationFailure as exc:
            if exc.code == server_codes.ILLEGAL_OPERATION:  # not locked (any more): done
                return released
            raise _command_error("fsyncUnlock", client, exc, released=released)
        released += 1
        count = _count(reply)
        if not count:  # 0, or a reply without a count: read the state again
            if count is None and read_state(client)["locked"]:
                continue
            return released
    raise FsyncLockError(
        "%s: still fsync-locked after %d fsyncUnlock commands; another client keeps taking the lock. "
        "Find it with currentOp and stop it, then unlock again" % (_address(client), released),
        released=released)


def run(client, facts, state=None, allow_primary=False, max_lock_seconds=DEFAULT_MAX_LOCK_SECONDS,
        check_mode=False):
    """Report, lock (state="locked") or unlock (state="unlocked") the server the client talks to.

    Returns (changed, result, warnings). Refusals are raised before any lock or unlock is sent.
    """
    role = server_role(facts)
    member = facts.get("address")
    _refuse(role, facts, state, allow_primary)
    before = read_state(client)
    result = {"member": member, "role": role, "replica_set": facts.get("replica_set"),
              "server_version": facts.get("version"),
              "before": {"locked": before["locked"], "lock_count": before["lock_count"]},
              "lock_age_seconds": before["lock_age_seconds"], "locked": before["locked"],
              "lock_count": before["lock_count"], "released": 0, "oplog_time_at_lock": None}
    warnings = []
    old = _too_old(before, max_lock_seconds)
    changed = False
    if state == "locked":
        if old:
            raise FsyncLockError(
                "%s (%s) has been fsync-locked for %s, longer than max_lock_seconds=%d: a lock this old "
                "was most likely left behind by a run that failed before unlocking, and writes on this "
                "node have been blocked all that time. Find out who holds it; unlock the node "
                "(state: unlocked) and lock it again for a fresh snapshot, or raise max_lock_seconds"
                % (member, role, timestamps.format_duration(before["lock_age_seconds"]), max_lock_seconds),
                **result)
        if not before["locked"]:
            changed = True
            result["locked"] = True
            result["lock_count"] = 1 if check_mode else lock(client)
            if not check_mode:
                result["oplog_time_at_lock"] = _oplog_time_or_undo(client, member, role)
        else:
            result["oplog_time_at_lock"] = _oplog_time(client, role)
    elif state == "unlocked":
        if old:
            warnings.append("%s was fsync-locked for %s, longer than max_lock_seconds=%d; writes were "
                            "blocked all that time" % (member, timestamps.format_duration(
                                before["lock_age_seconds"]), max_lock_seconds))
        if before["locked"]:
            changed = True
            result["locked"] = False
            result["lock_count"] = 0
            if not check_mode:
                result["released"] = unlock_all(client)
    else:
        if old:
            warnings.append("%s has been fsync-locked for %s, longer than max_lock_seconds=%d; writes are "
                            "blocked until it is unlocked (state: unlocked)" % (
                                member, timestamps.format_duration(before["lock_age_seconds"]), max_lock_seconds))
        if before["locked"]:
            result["oplog_time_at_lock"] = _oplog_time(client, role)
    return changed, result, warnings


def _oplog_time(client, role):
    """timestamp_result of the newest oplog entry; None on a mongos, which has no oplog of its own (and
    refuses reads of the local database): each shard's oplog is read on the shard."""
    if role == "mongos":
        return None
    return timestamps.timestamp_result(newest_oplog_ts(client))


def _oplog_time_or_undo(client, member, role):
    """The oplog time of a lock just taken; if it cannot be read, the lock is released again so that a
    failed task never leaves the server locked (it was unlocked before, so all levels go)."""
    try:
        return _oplog_time(client, role)
    except Exception as exc:  # whatever failed, the lock must not outlive the task
        cause = exc.message if isinstance(exc, FsyncLockError) else str(exc)
        try:
            released = unlock_all(client)
        except Exception as unlock_exc:
            raise FsyncLockError(
                "%s was locked, then reading its newest oplog entry failed (%s) and the unlock failed too (%s): "
                "THE SERVER IS STILL LOCKED; unlock it now (state: unlocked, or db.fsyncUnlock())"
                % (member, cause, unlock_exc), locked=True)
        raise FsyncLockError(
            "%s was locked, then reading its newest oplog entry failed: %s; the lock was released again "
            "(%d level(s)). Fix the cause and lock again" % (member, cause, released), locked=False,
            released=released)


def _refuse(role, facts, state, allow_primary):
    member = facts.get("address")
    if role is None:
        raise FsyncLockError(
            "%s is a replica-set member in state %s, which holds no data to lock; connect to a primary, a "
            "secondary, a standalone server or a mongos" % (member, facts.get("member_state")))
    if state is None:
        return
    if role == "primary" and state == "locked" and not allow_primary:
        raise FsyncLockError(
            "%s is the primary of replica set %s: locking it stops writes for the whole replica set until "
            "it is unlocked. Lock a secondary instead (connect to it directly), or set allow_primary: true "
            "if a write stop is what you want" % (member, facts.get("replica_set")))
    if role == "mongos" and not versions.mongos_supports_fsync_lock(facts.get("version")):
        raise FsyncLockError(
            "%s is a mongos of MongoDB %s, which cannot take or release a cluster-wide fsync lock; that "
            "needs MongoDB %s. Lock one secondary of each shard and of the config server replica set "
            "instead, or upgrade the cluster" % (member, facts.get("version") or "(unknown version)",
                                                 versions.CLUSTER_FSYNC_LOCK_NEEDED))


def _too_old(state, max_lock_seconds):
    age = state["lock_age_seconds"]
    return bool(max_lock_seconds) and age is not None and age > max_lock_seconds


def _count(reply):
    count = reply.get("lockCount")
    return None if count is None else int(count)


def _address(client):
    return "%s:%s" % client.address if client.address else "the server"


def _command_error(what, client, exc, **details):
    if exc.code == server_codes.UNAUTHORIZED:
        return FsyncLockError(
            "%s on %s was refused: %s; grant the user the hostManager role (fsync, unlock) and "
            "clusterMonitor (currentOp) on admin, and read on local (the backup role has it)" % (what, _address(client), exc), **details)
    return FsyncLockError("%s on %s failed: %s" % (what, _address(client), exc), **details)
