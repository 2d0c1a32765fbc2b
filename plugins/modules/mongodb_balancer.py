#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: mongodb_balancer
short_description: Report, stop or start the balancer of a sharded cluster, and set its active window
version_added: "1.1.0"
description:
  - Connects to a mongos and reports the balancer as the cluster sees it, whether it is enabled, its mode,
    whether a balancing round is in progress, the chunk migrations running and the active window.
  - Without O(state) and O(window) it only reports and changes nothing. There is no default O(state), so
    a task can never start a balancer by accident.
  - With O(state=stopped) it stops the balancer (C(balancerStop)), then waits until no balancing round is in
    progress and no chunk migration runs, as C(balancerStatus) and C($currentOp) report them. A balancer found
    stopped is not stopped again (no change) but is still waited for, since a round it had started, or a
    migration, can still be running.
  - When that does not happen within O(wait_timeout) the task fails, names the round and each migration still
    running, and leaves the balancer as it found it, started again when it was running before, unless
    O(leave_stopped_on_timeout) is set.
  - With O(state=started) it starts a stopped balancer (C(balancerStart)). A running balancer is left alone.
  - RV(before) is the state found, so a play can put it back later; RV(after) is the state at the end.
  - Works only through a mongos. Pointed at a shard member, a config server, a replica set or a standalone server,
    the task fails before it sends anything that changes the cluster.
extends_documentation_fragment:
  - dbops.mongodb_backup.connection
  - dbops.mongodb_backup.attributes
  - dbops.mongodb_backup.attributes.platform
attributes:
  check_mode:
    support: full
    details:
      - Reads the balancer state and reports whether anything would change and the predicted RV(after).
        It sends no C(balancerStop), C(balancerStart) or C(config.settings) write, and does not wait.
  diff_mode:
    support: none
options:
  state:
    description:
      - V(stopped) stops the balancer and waits until it is idle; V(started) starts it.
      - Not set, the balancer is only reported (or only its window changed with O(window)).
    type: str
    choices: [started, stopped]
  wait_timeout:
    description:
      - With O(state=stopped), seconds to wait for the balancing round in progress and the running chunk
        migrations to finish. V(0) checks once and does not wait.
    type: int
    default: 600
  leave_stopped_on_timeout:
    description:
      - With O(state=stopped), when the wait times out, leave the balancer stopped instead of starting it again.
      - Without it a balancer that was running before the task is started again on timeout, so the cluster
        stays as it was found. Either way the task fails.
    type: bool
    default: false
  poll_interval:
    description:
      - Seconds between two checks of the balancer while waiting.
    type: float
    default: 1
  window:
    description:
      - The balancer's active window, the time of day during which it may balance, kept in C(config.settings)
        (document C(balancer), field C(activeWindow)). Times are the config servers' local time.
      - Both O(window.start) and O(window.stop) set the window, rewritten only when it differs.
      - An empty dict (V({})) removes the window, so the balancer may run at any time.
      - Not set, the window is left as it is.
      - Applied after O(state). A stop that times out fails before the window is written.
    type: dict
    suboptions:
      start:
        description:
          - Start of the window, C(HH:MM) from C(00:00) to C(23:59).
        type: str
      stop:
        description:
          - End of the window, C(HH:MM). A window may cross midnight (C(start=23:00), C(stop=06:00)).
        type: str
notes:
  - The user needs the C(clusterManager) role (or the C(enableSharding) action on the cluster for
    C(balancerStop) and C(balancerStart), C(find) and C(update) on C(config.settings), and C(inprog) for C($currentOp)).
  - Roles restore the balancer in C(always:), and start it again only when RV(before) says it was enabled.
seealso:
  - name: Manage the sharded cluster balancer
    description: MongoDB manual on stopping the balancer and its active window.
    link: https://www.mongodb.com/docs/manual/tutorial/manage-sharded-cluster-balancer/
author:
  - dbops.mongodb_backup contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Report the balancer, changing nothing
  dbops.mongodb_backup.mongodb_balancer:
    uri: mongodb://mongos1.example.com:27017
    login_user: backup
    login_password: "{{ vault_backup_password }}"
  register: balancer

- name: Work with the balancer stopped, and put it back as found whatever happens
  block:
    - name: Stop the balancer and wait up to 10 minutes for the round and migrations in progress
      dbops.mongodb_backup.mongodb_balancer:
        uri: mongodb://mongos1.example.com:27017
        state: stopped
        wait_timeout: 600

    - name: Something that needs no chunk moving
      ansible.builtin.debug:
        msg: "the balancer is stopped and idle"
  always:
    - name: Start the balancer again only when it was running before
      dbops.mongodb_backup.mongodb_balancer:
        uri: mongodb://mongos1.example.com:27017
        state: started
      when: balancer.before.enabled

- name: Let the balancer run at night only
  dbops.mongodb_backup.mongodb_balancer:
    uri: mongodb://mongos1.example.com:27017
    window:
      start: "23:00"
      stop: "06:00"

- name: Remove the active window
  dbops.mongodb_backup.mongodb_balancer:
    uri: mongodb://mongos1.example.com:27017
    window: {}
'''

RETURN = r'''
before:
  description:
    - The balancer as found, before the task changed anything.
    - C(enabled) is false when C(mode) is C(off). C(in_balancer_round) may be true while the balancer is
      stopped, when a round it had started is still finishing.
    - C(migrations) are the chunk migrations running, each with C(namespace), C(from_shard) and C(to_shard)
      (null when the server does not report it), the range C(min) and C(max), the C(command) that runs it,
      the C(shard) that reports it, C(opid) and C(seconds_running).
    - C(window) is the active window C({start, stop}), or null when there is none.
    - Also returned when the task fails, so a play can put the balancer back.
  returned: always
  type: dict
  sample: {"enabled": true, "mode": "full", "in_balancer_round": true, "window": {"start": "23:00", "stop": "06:00"},
           "migrations": [{"namespace": "shop.orders", "from_shard": "shard01", "to_shard": "shard02",
                           "min": {"customer": 100}, "max": {"customer": 200}, "command": "_shardsvrMoveRange",
                           "shard": "shard01", "opid": "shard01:23142", "seconds_running": 4}]}
after:
  description:
    - The balancer at the end of the task, in the same form as RV(before). In check mode the state it would have.
    - On a timeout, the state the balancer was left in.
  returned: always
  type: dict
  sample: {"enabled": false, "mode": "off", "in_balancer_round": false, "migrations": [], "window": null}
waited_seconds:
  description: With O(state=stopped), seconds spent stopping the balancer and waiting until it was idle.
  returned: when O(state=stopped)
  type: float
  sample: 12.5
still_running:
  description: When the wait timed out, what was still running, C(in_balancer_round) and C(migrations).
  returned: failure after a timeout
  type: dict
  sample: {"in_balancer_round": false, "migrations": [{"namespace": "shop.orders", "from_shard": "shard01",
           "to_shard": "shard02", "min": {"customer": 100}, "max": {"customer": 200},
           "command": "_shardsvrMoveRange", "shard": "shard01", "opid": "shard01:23142", "seconds_running": 640}]}
balancer_restarted:
  description: When the wait timed out, whether the balancer was started again because it was running before.
  returned: failure after a timeout
  type: bool
  sample: true
'''

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.module import MongoDBModule
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.cluster import balancer
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.cluster.mongos import require_mongos


def _apply(client, params, check_mode):
    """Steps in order (state, then window); before is the first state seen, after the last."""
    steps = []
    if params["state"] == "stopped":
        steps.append(lambda: balancer.stop_balancer(
            client, params["wait_timeout"], leave_stopped_on_timeout=params["leave_stopped_on_timeout"],
            poll_interval=params["poll_interval"], check_mode=check_mode))
    elif params["state"] == "started":
        steps.append(lambda: balancer.start_balancer(client, check_mode=check_mode))
    window = params["window"]
    if window is not None:
        if window.get("start") is None and window.get("stop") is None:
            steps.append(lambda: balancer.clear_window(client, check_mode=check_mode))
        else:
            steps.append(lambda: balancer.set_window(client, window["start"], window["stop"], check_mode=check_mode))
    if not steps:
        state = balancer.balancer_state(client)
        return False, dict(before=state, after=state)
    result, changed, before = {}, False, None
    for step in steps:
        outcome = step()
        if check_mode and before is not None:
            # later steps read the server, which check mode did not change: carry the predictions on
            outcome["after"] = dict(result["after"], window=outcome["after"]["window"])
        step_changed = outcome.pop("changed")
        changed = changed or step_changed
        before = outcome["before"] if before is None else before
        result.update(outcome)
    result["before"] = before
    return changed, result


def run_module(module):
    params = module.params
    client = client_utils.connect(module.connection_options)
    try:
        require_mongos(client, "mongodb_balancer")
        return _apply(client, params, module.check_mode)
    finally:
        client.close()


def main():
    module = MongoDBModule(
        argument_spec=dict(
            state=dict(type="str", choices=["started", "stopped"]),
            wait_timeout=dict(type="int", default=600),
            leave_stopped_on_timeout=dict(type="bool", default=False),
            poll_interval=dict(type="float", default=1.0),
            window=dict(type="dict", options=dict(start=dict(type="str"), stop=dict(type="str")),
                        required_together=[["start", "stop"]]),
        ),
        supports_check_mode=True,
    )
    changed, result = module.run(run_module, module)
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
