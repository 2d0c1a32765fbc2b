# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The balancer of a sharded cluster, seen and driven through a mongos.

State comes from three places, each as MongoDB 7/8 report it:

- ``balancerStatus``: ``mode`` (``full`` or ``off``) and ``inBalancerRound``. A round that had
  started when the balancer was stopped runs to its end, so ``mode: off`` with
  ``inBalancerRound: true`` is a normal, passing state.
- ``$currentOp`` through the mongos (every shard's operations): a chunk migration runs on its
  donor shard as ``_shardsvrMoveRange`` (alias ``moveChunk``, with ``fromShard``, ``toShard``,
  ``min`` and ``max``); the router-level ``moveChunk``/``moveRange`` and the config server's
  ``_configsvrMoveRange``/``_configsvrMoveChunk`` are the same migration seen one step earlier.
- ``config.settings`` ``{_id: "balancer"}``: ``activeWindow {start, stop}`` (``HH:MM``, the config
  server's local time).

Every function takes a connected client of a mongos (see ``cluster.mongos.require_mongos``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re
import time

try:
    from bson import json_util
    from pymongo import errors as pymongo_errors
except ImportError:  # pragma: no cover - reported by the module wrapper
    json_util = None
    pymongo_errors = None

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import server_codes
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import ClusterError, InvalidOption

# Commands whose running operation is a chunk migration (the command name is the first key).
MIGRATION_COMMANDS = ("_shardsvrMoveRange", "moveChunk", "moveRange", "_configsvrMoveRange",
                      "_configsvrMoveChunk")
# The ones a shard runs as the migration's donor.
DONOR_COMMANDS = ("_shardsvrMoveRange", "moveChunk")
# balancerStop waits for the round in progress up to its maxTimeMS (mongosh gives it 60s); capped
# so the command always returns well within the connection's socket timeout, the polling goes on.
STOP_COMMAND_MAX_SECONDS = 60
_WINDOW_TIME = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])$")


# --------------------------------------------------------------------------- reading the state

def _mongos_name(client):
    return "%s:%s" % client.address if client.address else "the mongos"


def _relaxed(value):
    """A shard-key bound as plain JSON-safe values (MinKey/MaxKey as {"$minKey": 1}...)."""
    if value is None:
        return None
    return json.loads(json_util.dumps(value, json_options=json_util.RELAXED_JSON_OPTIONS))


def _describe_migration(op):
    """One running migration from a $currentOp entry, or None when the entry is not one."""
    command = op.get("command") or {}
    name = next(iter(command), None)
    if name not in MIGRATION_COMMANDS:
        return None
    namespace = command.get(name)
    if not isinstance(namespace, str):
        namespace = op.get("ns")
    from_shard = command.get("fromShard")
    if from_shard is None and name in DONOR_COMMANDS:
        from_shard = op.get("shard")  # the donor runs it: $currentOp through a mongos names its shard
    migration = {
        "namespace": namespace,
        "from_shard": from_shard,
        "to_shard": command.get("toShard") or command.get("to"),
        "min": _relaxed(command.get("min")),
        "max": _relaxed(command.get("max")),
        "command": name,
        "shard": op.get("shard"),
        "opid": _relaxed(op.get("opid")),
        "seconds_running": op.get("secs_running"),
    }
    return migration


def _same_migration(one, other):
    return all(one[key] == other[key] for key in ("namespace", "min", "max")) and (
        None in (one["to_shard"], other["to_shard"]) or one["to_shard"] == other["to_shard"])


def running_migrations(client):
    """The chunk migrations running in the cluster, one entry per migration.

    The same migration may show as the router's command, the config server's and the donor's;
    the donor's ``_shardsvrMoveRange`` (which names both shards) describes it best, so entries
    for the same namespace and range are merged into the most detailed one.
    """
    match = {"$or": [{"command.%s" % name: {"$exists": True}} for name in MIGRATION_COMMANDS]}
    pipeline = [{"$currentOp": {"allUsers": True, "idleConnections": False, "localOps": False}},
                {"$match": match}]
    migrations = []
    for op in client.admin.aggregate(pipeline):
        migration = _describe_migration(op)
        if migration is None:
            continue
        for index, known in enumerate(migrations):
            if _same_migration(known, migration):
                if known["from_shard"] is None and migration["from_shard"] is not None:
                    migrations[index] = migration
                break
        else:
            migrations.append(migration)
    return migrations


def active_window(client):
    """{start, stop} of the balancer's active window in config.settings, or None."""
    settings = client.config.settings.find_one({"_id": "balancer"}) or {}
    window = settings.get("activeWindow")
    if not isinstance(window, dict) or not (window.get("start") or window.get("stop")):
        return None
    return {"start": window.get("start"), "stop": window.get("stop")}


def _status(client):
    status = client.admin.command("balancerStatus")
    mode = status.get("mode") or "off"
    return {"enabled": mode != "off", "mode": mode, "in_balancer_round": bool(status.get("inBalancerRound"))}


def balancer_state(client):
    """enabled, mode, in_balancer_round, migrations and window, as the cluster reports them now."""
    state = _status(client)
    state["migrations"] = running_migrations(client)
    state["window"] = active_window(client)
    return state


def describe_activity(state):
    """What keeps the balancer busy, in words ("" when idle)."""
    parts = []
    if state["in_balancer_round"]:
        parts.append("a balancer round is still in progress")
    for migration in state["migrations"]:
        text = "chunk migration of %s" % migration["namespace"]
        if migration["from_shard"]:
            text += " from shard %s" % migration["from_shard"]
        if migration["to_shard"]:
            text += " to shard %s" % migration["to_shard"]
        if migration["min"] is not None:
            text += " (range %s - %s)" % (json.dumps(migration["min"]), json.dumps(migration["max"]))
        if migration["seconds_running"] is not None:
            text += ", running for %ss" % migration["seconds_running"]
        parts.append(text)
    return "; ".join(parts)


def check_balancer_stopped(client, what):
    """The balancer state; ClusterError unless it is off and idle: a chunk moving during a backup or
    restore leaves its documents on two shards or none."""
    state = balancer_state(client)
    problems = ["the balancer is enabled (mode %s)" % state["mode"]] if state["enabled"] else []
    if _busy(state):
        problems.append(describe_activity(state))
    if problems:
        raise ClusterError("%s needs the balancer stopped and idle, but %s; stop it first with "
                           "dbops.mongodb_backup.mongodb_balancer state: stopped (the sharded roles do, and "
                           "start it again afterwards)" % (what, "; ".join(problems)))
    return state


def _busy(state):
    return state["in_balancer_round"] or bool(state["migrations"])


# --------------------------------------------------------------------------- changing it

def _result(changed, before, after, **extra):
    result = {"changed": changed, "before": before, "after": after}
    result.update(extra)
    return result


def _balancer_command(client, name, **kwargs):
    try:
        return client.admin.command(name, **kwargs)
    except pymongo_errors.OperationFailure as exc:
        raise ClusterError("%s on %s failed: %s; check that the user has the clusterManager role (or the "
                           "enableSharding action on the cluster) and that the config servers are reachable "
                           "from the mongos" % (name, _mongos_name(client), exc.details.get("errmsg") or exc),
                           code=exc.code)


def wait_until_idle(client, deadline, poll_interval):
    """Poll until no round and no migration runs, or the deadline (time.monotonic) passes.

    Returns (idle, state), with the last state seen.
    """
    while True:
        state = _status(client)
        state["migrations"] = running_migrations(client)
        if not _busy(state):
            return True, state
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False, state
        time.sleep(min(poll_interval, remaining))


def stop_balancer(client, wait_timeout, leave_stopped_on_timeout=False, poll_interval=1.0, check_mode=False):
    """Stop the balancer and wait until no round is in progress and no chunk migration runs.

    A balancer found stopped is not stopped again (changed=False) but still waited for: a round
    it had started, or a migration, may still be running. On timeout a balancer that was enabled is
    started again, unless ``leave_stopped_on_timeout``, and ClusterError names what still runs and
    the state the balancer was left in. In check mode nothing is sent that changes the balancer and
    nothing is waited for; ``after`` is the predicted state.
    """
    if wait_timeout < 0:
        raise InvalidOption("wait_timeout must be 0 or more seconds, not %s" % wait_timeout)
    if poll_interval <= 0:
        raise InvalidOption("poll_interval must be more than 0 seconds, not %s" % poll_interval)
    started = time.monotonic()
    deadline = started + wait_timeout
    before = balancer_state(client)
    changed = before["enabled"]
    if check_mode:
        return _result(changed, before, dict(before, enabled=False, mode="off"), waited_seconds=0.0)
    if changed:
        # balancerStop itself waits for the round in progress, up to maxTimeMS; the mode is off
        # as soon as the command has begun, so running out of that time is not a failure here.
        try:
            client.admin.command("balancerStop",
                                 maxTimeMS=max(1, int(min(wait_timeout, STOP_COMMAND_MAX_SECONDS) * 1000)))
        except pymongo_errors.OperationFailure as exc:
            if exc.code != server_codes.MAX_TIME_MS_EXPIRED:
                raise ClusterError(
                    "balancerStop on %s failed: %s; check that the user has the clusterManager role and that "
                    "the config servers are reachable from the mongos; the balancer was %s before"
                    % (_mongos_name(client), exc.details.get("errmsg") or exc, before["mode"]), code=exc.code)
    idle, state = wait_until_idle(client, deadline, poll_interval)
    waited = round(time.monotonic() - started, 3)
    if idle:
        state["window"] = before["window"]
        return _result(changed, before, state, waited_seconds=waited)
    _timed_out(client, before, state, wait_timeout, leave_stopped_on_timeout, waited)


def _timed_out(client, before, state, wait_timeout, leave_stopped_on_timeout, waited):
    activity = describe_activity(state)
    still_running = {"in_balancer_round": state["in_balancer_round"], "migrations": state["migrations"]}
    restarted = False
    if not before["enabled"]:
        left = "the balancer stays stopped, as it was before"
        advice = "wait for them to finish and run again, or raise wait_timeout"
    elif leave_stopped_on_timeout:
        left = "the balancer was left stopped (leave_stopped_on_timeout); start it again with state: started"
        advice = "wait for them to finish and run again, or raise wait_timeout"
    else:
        try:
            client.admin.command("balancerStart")
            restarted = True
            left = "the balancer was started again, as it was before"
        except pymongo_errors.PyMongoError as exc:
            left = ("starting the balancer again failed (%s): it is STOPPED now although it was running before; "
                    "start it with state: started" % exc)
        advice = "run again when they have finished, or raise wait_timeout"
    try:
        after = balancer_state(client)
    except pymongo_errors.PyMongoError:
        after = dict(state, enabled=restarted, mode="full" if restarted else "off", window=before["window"])
    raise ClusterError(
        "the balancer of %s did not become idle within %ss (wait_timeout): %s; %s; %s"
        % (_mongos_name(client), wait_timeout, activity, left, advice),
        before=before, after=after, still_running=still_running, balancer_restarted=restarted,
        waited_seconds=waited)


def start_balancer(client, check_mode=False):
    """Start the balancer; a balancer already running is left alone (changed=False)."""
    before = balancer_state(client)
    if before["enabled"]:
        return _result(False, before, before)
    if check_mode:
        return _result(True, before, dict(before, enabled=True, mode="full"))
    _balancer_command(client, "balancerStart")
    return _result(True, before, balancer_state(client))


def parse_window_time(value, name):
    """'H:MM' or 'HH:MM' (00:00 to 23:59) as 'HH:MM'."""
    match = _WINDOW_TIME.match(str(value).strip()) if value is not None else None
    if not match:
        raise InvalidOption("window %s %r is not a time of day HH:MM from 00:00 to 23:59 (such as 23:30); "
                            "fix window.%s" % (name, value, name))
    return "%02d:%s" % (int(match.group(1)), match.group(2))


def _write_window(client, update):
    try:
        client.config.settings.update_one({"_id": "balancer"}, update, upsert=True)
    except pymongo_errors.OperationFailure as exc:
        raise ClusterError("writing the balancer window to config.settings through %s failed: %s; check that "
                           "the user may update config.settings (the clusterManager role)"
                           % (_mongos_name(client), exc.details.get("errmsg") or exc), code=exc.code)


def set_window(client, start, stop, check_mode=False):
    """Set the balancer's active window to start-stop (HH:MM, the config server's local time)."""
    window = {"start": parse_window_time(start, "start"), "stop": parse_window_time(stop, "stop")}
    if window["start"] == window["stop"]:
        raise InvalidOption("window start and stop are both %s: the balancer would hardly ever run; give a "
                            "window with different times, or remove the window" % window["start"])
    before = balancer_state(client)
    current = before["window"]
    if current is not None and _normalized(current) == window:
        return _result(False, before, before)
    if check_mode:
        return _result(True, before, dict(before, window=window))
    _write_window(client, {"$set": {"activeWindow": window}})
    return _result(True, before, balancer_state(client))


def clear_window(client, check_mode=False):
    """Remove the balancer's active window, so it may balance at any time of day."""
    before = balancer_state(client)
    if before["window"] is None:
        return _result(False, before, before)
    if check_mode:
        return _result(True, before, dict(before, window=None))
    _write_window(client, {"$unset": {"activeWindow": ""}})
    return _result(True, before, balancer_state(client))


def _normalized(window):
    try:
        return {"start": parse_window_time(window.get("start"), "start"),
                "stop": parse_window_time(window.get("stop"), "stop")}
    except InvalidOption:  # a window written by hand in another form: rewrite it
        return None
