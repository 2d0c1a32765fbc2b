#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: mongodb_balancer
short_description: Report, stop (and wait for) or start the balancer of a sharded MongoDB cluster
version_added: "1.1.0"
description:
  - Talks to a mongos only; pointed at a shard member, a config server or a standalone it fails
    before sending anything that changes state.
  - Without O(state) it only reports - whether the balancer is enabled, its mode, whether a balancer
    round is in progress, the chunk migrations running and the active window. No default changes
    anything, so a task that forgets O(state) never starts a balancer someone stopped.
  - The result carries the state before the call (RV(before)), so a role can put the balancer back as
    it found it (start it in C(always:) only when C(before.enabled) was true).
  - O(state=stopped) stops the balancer (C(balancerStop)) and then waits, up to O(wait_timeout), until no
    balancer round is in progress and no chunk migration runs, as C(balancerStatus) and C($currentOp)
    report them. Stopping only prevents new rounds; a round or migration in progress finishes on its own,
    so the module also waits when the balancer was already stopped. On timeout the task fails, names
    what is still running, and starts the balancer again when it was running before, unless
    O(leave_stopped_on_timeout=true).
  - O(state=started) starts it (C(balancerStart)). Idempotent - a balancer already in the requested state
    (and idle, for V(stopped)) reports no change.
  - O(window) sets the active window (in C(config.settings)), or removes it with an empty O(window).
extends_documentation_fragment:
  - dbops.mongodb_backup.connection
  - dbops.mongodb_backup.attributes
  - dbops.mongodb_backup.attributes.platform
attributes:
  check_mode:
    support: full
    details: Reports the current state and what would change; sends no balancerStop, balancerStart or settings write.
  diff_mode:
    support: none
options:
  state:
    description:
      - V(stopped) stops the balancer and waits until it is idle; V(started) starts it.
      - Omitted, the module only reports and changes nothing.
    type: str
    choices: [started, stopped]
  wait_timeout:
    description:
      - Seconds O(state=stopped) waits for a balancer round and the chunk migrations in progress to end.
    type: int
    default: 600
  leave_stopped_on_timeout:
    description:
      - When O(state=stopped) times out, leave the balancer stopped instead of starting it again.
    type: bool
    default: false
  poll_interval:
    description:
      - Seconds between two checks while waiting.
    type: float
    default: 1.0
  window:
    description:
      - Active window of the balancer, C(start) and C(stop) as C(HH:MM) in the config servers' local time;
        the balancer only runs rounds inside it. An empty dictionary removes the window.
    type: dict
    suboptions:
      start:
        description: Time of day the window opens, C(HH:MM).
        type: str
      stop:
        description: Time of day the window closes, C(HH:MM).
        type: str
notes:
  - The user needs C(clusterManager) (balancerStart, balancerStop, config.settings) and C(clusterMonitor)
    (balancerStatus, C($currentOp) of all users).
seealso:
  - module: dbops.mongodb_backup.mongodb_sharded_backup
  - name: Manage the sharded cluster balancer
    description: The MongoDB manual on stopping the balancer and waiting for migrations.
    link: https://www.mongodb.com/docs/manual/tutorial/manage-sharded-cluster-balancer/
author:
  - dbops.mongodb_backup contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Record the balancer state (changes nothing)
  dbops.mongodb_backup.mongodb_balancer:
    uri: "{{ mongos_uri }}"
  register: balancer

- name: Maintenance with the balancer stopped, put back as found whatever happens
  block:
    - name: Stop the balancer and wait up to 20 minutes for a migration in progress
      dbops.mongodb_backup.mongodb_balancer:
        uri: "{{ mongos_uri }}"
        state: stopped
        wait_timeout: 1200

    - name: The work that needs no chunk to move
      ansible.builtin.debug:
        msg: maintenance here
  always:
    - name: Start the balancer again only if it was running
      dbops.mongodb_backup.mongodb_balancer:
        uri: "{{ mongos_uri }}"
        state: started
      when: balancer.before.enabled

- name: Let the balancer run only at night
  dbops.mongodb_backup.mongodb_balancer:
    uri: "{{ mongos_uri }}"
    window:
      start: "23:00"
      stop: "05:00"
'''

RETURN = r'''
before:
  description:
    - The balancer before the call - C(enabled), C(mode) (C(full) or C(off)), C(in_balancer_round),
      C(migrations) (each running migration's C(operation), C(namespace), C(shard), C(seconds)) and
      C(window) (C(start), C(stop)) or null.
  returned: always
  type: dict
  sample: {"enabled": true, "mode": "full", "in_balancer_round": true, "window": null,
           "migrations": [{"operation": "moveRange", "namespace": "shop.orders", "shard": "shard01", "seconds": 12}]}
after:
  description: The balancer after the call, same keys as RV(before) (in check mode, what it would be).
  returned: always
  type: dict
  sample: {"enabled": false, "mode": "off", "in_balancer_round": false, "migrations": [], "window": null}
'''

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.module import MongoDBModule
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.cluster.balancer import Balancer, check_window
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils


def run_module(module):
    params = module.params
    window = check_window(params["window"])  # before connecting
    client = client_utils.connect(module.connection_options)
    try:
        balancer = Balancer(client, poll_interval=params["poll_interval"])
        if params["state"] == "stopped":
            changed, before, after = balancer.stop(params["wait_timeout"], params["leave_stopped_on_timeout"],
                                                   module.check_mode)
        elif params["state"] == "started":
            changed, before, after = balancer.start(module.check_mode)
        else:
            changed, before = False, balancer.state()
            after = before
        if window is not None and balancer.set_window(window, module.check_mode):
            changed = True
            after = dict(after, window=window or None)
        return changed, {"before": before, "after": after}
    finally:
        client.close()


def main():
    module = MongoDBModule(
        argument_spec=dict(
            state=dict(type="str", choices=["started", "stopped"]),
            wait_timeout=dict(type="int", default=600),
            leave_stopped_on_timeout=dict(type="bool", default=False),
            poll_interval=dict(type="float", default=1.0),
            window=dict(type="dict", options=dict(start=dict(type="str"), stop=dict(type="str"))),
        ),
        supports_check_mode=True,
    )
    changed, result = module.run(run_module, module)
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
