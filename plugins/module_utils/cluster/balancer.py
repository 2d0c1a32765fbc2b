# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The sharded-cluster balancer, seen and switched from a mongos.

State: ``balancerStatus`` (mode, whether a round is in progress), the chunk migrations running
(``$currentOp`` across the cluster: moveChunk / moveRange commands and the donor's migration),
and the active window (``config.settings`` document ``balancer``). Stopping waits until no round
and no migration runs: ``balancerStop`` only keeps new rounds from starting.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import time

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.cluster.mongos import require_mongos
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import ClusterError, InvalidOption

# Operations that are, or run, a chunk migration, as $currentOp reports them on MongoDB 5 to 8.
MIGRATION_COMMANDS = ("moveChunk", "moveRange", "_shardsvrMoveRange", "_configsvrMoveRange", "_recvChunkStart")
MIGRATION_DESCRIPTIONS = "^(MoveChunk|migrateThread|MoveRange)"
WINDOW_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def running_migrations(client):
    """The chunk migrations running now, each {"operation", "namespace", "shard", "seconds"}."""
    match = {"$or": [{"desc": {"$regex": MIGRATION_DESCRIPTIONS}}]
             + [{"command.%s" % name: {"$exists": True}} for name in MIGRATION_COMMANDS]}
    pipeline = [{"$currentOp": {"allUsers": True, "localOps": False}}, {"$match": match}]
    migrations = []
    for operation in client.admin.aggregate(pipeline):
        command = operation.get("command") or {}
        name = next((n for n in MIGRATION_COMMANDS if n in command), operation.get("desc"))
        namespace = command.get(name) if isinstance(command.get(name), str) else operation.get("ns")
        migrations.append({"operation": name, "namespace": namespace, "shard": operation.get("shard"),
                           "seconds": operation.get("secs_running")})
    return migrations


def active_window(client):
    settings = client.config.settings.find_one({"_id": "balancer"}) or {}
    window = settings.get("activeWindow")
    return {"start": window.get("start"), "stop": window.get("stop")} if isinstance(window, dict) else None


def balancer_state(client):
    """{enabled, mode, in_balancer_round, migrations, window} as the mongos reports them."""
    status = client.admin.command("balancerStatus")
    mode = status.get("mode")
    return {"enabled": mode not in ("off", None), "mode": mode,
            "in_balancer_round": bool(status.get("inBalancerRound")),
            "migrations": running_migrations(client), "window": active_window(client)}


def describe_activity(state):
    """What keeps the balancer busy, in words; empty when it is idle."""
    busy = []
    if state["in_balancer_round"]:
        busy.append("a balancer round is in progress")
    for migration in state["migrations"]:
        busy.append("a chunk migration (%s of %s%s%s)" % (
            migration["operation"], migration["namespace"] or "an unknown collection",
            " on shard %s" % migration["shard"] if migration.get("shard") else "",
            ", running %ss" % migration["seconds"] if migration.get("seconds") is not None else ""))
    return busy


def check_window(window):
    """None (leave it), {} (remove it) or {"start": "HH:MM", "stop": "HH:MM"}."""
    if window is None:
        return None
    if not any(value is not None for value in window.values()):
        return {}  # window: {} (Ansible fills the suboptions it was not given with None)
    unknown = sorted(set(window) - set(("start", "stop")))
    if unknown:
        raise InvalidOption("window takes start and stop only, not %s" % ", ".join(unknown))
    for key in ("start", "stop"):
        if not isinstance(window.get(key), str) or not WINDOW_TIME.match(window[key]):
            raise InvalidOption("window %s %r is not a time of day HH:MM (00:00 to 23:59); give both start and "
                                "stop, or window: {} to remove the window" % (key, window.get(key)))
    if window["start"] == window["stop"]:
        raise InvalidOption("window start and stop are both %s: the balancer would never run; give two times"
                            % window["start"])
    return {"start": window["start"], "stop": window["stop"]}


class Balancer:
    """The balancer of the cluster ``client`` (a mongos) talks to."""

    def __init__(self, client, poll_interval=1.0):
        require_mongos(client, "the balancer module")
        self.client = client
        self.poll_interval = poll_interval

    def state(self):
        return balancer_state(self.client)

    def stop(self, wait_timeout, leave_stopped_on_timeout=False, check_mode=False):
        """Stop and wait until idle. Returns (changed, before, after)."""
        before = self.state()
        if check_mode:
            return before["enabled"], before, dict(before, enabled=False, mode="off")
        if before["enabled"]:
            self.client.admin.command("balancerStop")
        deadline = time.time() + wait_timeout
        state = self.state()
        while describe_activity(state):
            if time.time() > deadline:
                self._timed_out(before, state, wait_timeout, leave_stopped_on_timeout)
            time.sleep(self.poll_interval)
            state = self.state()
        return before["enabled"], before, state

    def _timed_out(self, before, state, wait_timeout, leave_stopped):
        if before["enabled"] and not leave_stopped:
            self.client.admin.command("balancerStart")
            left = "it was started again, as it was running before (leave_stopped_on_timeout: true keeps it stopped)"
        elif before["enabled"]:
            left = "it was left stopped (leave_stopped_on_timeout: true)"
        else:
            left = "it was already stopped before and stays stopped"
        raise ClusterError("the balancer did not become idle within %ss: %s; %s; wait for the migration to end or "
                           "raise wait_timeout" % (wait_timeout, "; ".join(describe_activity(state)), left),
                           before=before, after=self.state())

    def start(self, check_mode=False):
        before = self.state()
        if before["enabled"]:
            return False, before, before
        if check_mode:
            return True, before, dict(before, enabled=True, mode="full")
        self.client.admin.command("balancerStart")
        return True, before, self.state()

    def set_window(self, window, check_mode=False):
        """Set ({"start", "stop"}) or remove ({}) the active window; True when it changed."""
        current = active_window(self.client)
        wanted = window or None
        if current == wanted:
            return False
        if not check_mode:
            update = {"$set": {"activeWindow": wanted}} if wanted else {"$unset": {"activeWindow": ""}}
            self.client.config.settings.update_one({"_id": "balancer"}, update, upsert=bool(wanted))
        return True
