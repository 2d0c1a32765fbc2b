#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: mongodb_fsync_lock
short_description: Fsync-lock or unlock one MongoDB server for a snapshot, or report its lock
version_added: "1.1.0"
description:
  - Flushes a server's data to disk and blocks its writes (C(fsync) with C(lock)), releases the lock
    (C(fsyncUnlock)), or, without O(state), only reports whether the server is locked.
  - The module connects to exactly one server (a direct connection); a O(uri) naming several hosts is refused.
    Lock a secondary (or a hidden member) of a replica set; on a mongos of a version that supports it, the
    lock covers every shard and the config server.
  - Idempotent. V(locked) on a server that is already locked reports no change and takes no further lock level.
    V(unlocked) on a server that is not locked reports no change.
  - V(unlocked) releases every lock level, sending C(fsyncUnlock) until the server reports a lock count of 0.
    The server does not record who took a level, and a lock outlives the connection that took it, so no client
    can tell its own levels from others'; since V(locked) never stacks a level, the levels it finds were taken
    by someone else (an operator, another tool), and V(unlocked) means writes flow again, which needs a count of 0.
  - The lock count is known only from the replies of C(fsync) and C(fsyncUnlock). A lock this run did not take or
    release is reported with RV(lock_count) null.
  - On a primary the module refuses V(locked) unless O(allow_primary=true) is set, because locking a primary stops
    writes for the whole replica set until it is unlocked.
  - On a mongos it locks or unlocks only when the server supports a cluster-wide fsync lock (MongoDB 7.1 and newer,
    7.0.2+, 6.0.11+ and 5.0.22+); on any other mongos it fails with the server's version and the versions needed.
  - Nothing recorded on the server bounds how long a lock lasts, and the module cannot undo a lock it took once it
    has returned. Roles and playbooks must unlock in an C(always) section (see EXAMPLES, and the role
    C(dbops.mongodb_backup.fsync_locked)). O(max_lock_seconds) turns a lock held too long into an error or warning.
  - Needs the hostManager role (C(fsync), C(unlock)) and clusterMonitor (C(currentOp)) on C(admin), and read access
    to C(local) for the oplog time.
extends_documentation_fragment:
  - dbops.mongodb_backup.connection
  - dbops.mongodb_backup.attributes
  - dbops.mongodb_backup.attributes.platform
attributes:
  check_mode:
    support: full
    details: Reads the lock state and reports what it would do (V(locked) or V(unlocked), the lock count after);
      sends no C(fsync) lock and no C(fsyncUnlock). RV(oplog_time_at_lock) is null when it would lock.
  diff_mode:
    support: none
options:
  state:
    description:
      - V(locked) takes the fsync lock unless the server is already locked.
      - V(unlocked) releases every lock level of the server.
      - Unset, the module only reports the lock state and changes nothing.
    type: str
    choices: [locked, unlocked]
  allow_primary:
    description:
      - Allow V(locked) on a replica-set primary. Locking a primary stops writes for the whole replica set until it
        is unlocked; lock a secondary unless that is what you want.
    type: bool
    default: false
  max_lock_seconds:
    description:
      - The longest a lock may have been held, in seconds, as the server reports the age of its lock (the running
        time of its C(fsyncLockWorker) operation in C(currentOp); RV(lock_age_seconds)).
      - With V(locked), a lock found older than this fails the task, with the age, and leaves the lock as it is. It
        was most likely left behind by a run that failed before unlocking, and writes have been blocked since.
      - With V(unlocked) or without O(state), a lock older than this is reported as a warning (V(unlocked) still
        releases it).
      - The module cannot end a lock by itself after it has returned; unlock in C(always).
      - V(0) disables the check. When the server does not report the age, nothing is checked.
    type: int
    default: 300
  member:
    description:
      - Which member of a replica set to lock, through a connection to the replica set (any member, or a
        O(uri) naming several hosts).
      - V(auto) chooses the member a snapshot should come from, a hidden member first, else the secondary
        with the least lag (the primary only with O(allow_primary=true)); RV(selection) says which and why.
      - A C(host:port) locks that member once it is found healthy and within O(max_lag_seconds), and
        unlocks it whatever the replica set's state (a lock must always be releasable). Pass the
        RV(member) of the lock task to the unlock task.
      - Unset, the module locks the one server it connects to (directly).
    type: str
    version_added: 1.2.0
  max_lag_seconds:
    description:
      - With O(member), the most a member may lag the primary to be locked; no limit when unset.
    type: int
    version_added: 1.2.0
notes:
  - Without O(member), connect to the member itself, for example O(uri=mongodb://db2.example.com:27017/) or
    O(login_host)/O(login_port); the connection is always direct.
  - "Snapshot procedure: lock a secondary, snapshot every volume of its data and journal at once, unlock in
    C(always). The RV(oplog_time_at_lock) is the point in time of the snapshot."
seealso:
  - module: dbops.mongodb_backup.mongodb_dump
  - name: fsync command
    description: MongoDB's documentation of the fsync lock.
    link: https://www.mongodb.com/docs/manual/reference/command/fsync/
author:
  - dbops.mongodb_backup contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Snapshot a secondary under an fsync lock; unlock whatever happens
  block:
    - name: Lock the secondary
      dbops.mongodb_backup.mongodb_fsync_lock:
        uri: mongodb://db2.example.com:27017/
        state: locked
        max_lock_seconds: 600
      register: fsync

    - name: Snapshot the data volumes (your snapshot tasks)
      ansible.builtin.debug:
        msg: "snapshot at oplog time {{ fsync.oplog_time_at_lock.ts }}"
  always:
    - name: Unlock the secondary, only if this play locked it
      dbops.mongodb_backup.mongodb_fsync_lock:
        uri: mongodb://db2.example.com:27017/
        state: unlocked
      when: fsync is defined and fsync is changed

- name: Report whether a member is locked
  dbops.mongodb_backup.mongodb_fsync_lock:
    uri: mongodb://db3.example.com:27017/
  register: lock_state

- name: Lock a whole sharded cluster through a mongos (MongoDB 7.1+, 7.0.2+, 6.0.11+, 5.0.22+)
  dbops.mongodb_backup.mongodb_fsync_lock:
    uri: mongodb://mongos1.example.com:27017/
    state: locked
'''

RETURN = r'''
before:
  description:
    - The lock state before the call. C(lock_count) is 0 when not locked and null when locked (the server reports
      the count only in reply to a lock or unlock).
  returned: always
  type: dict
  sample: {"locked": false, "lock_count": 0}
locked:
  description: Whether the server is locked after the call (in check mode, whether it would be).
  returned: always
  type: bool
  sample: true
lock_count:
  description:
    - The server's lock count after the call, as C(fsync) or C(fsyncUnlock) reported it; 0 when unlocked; null when
      the server is locked and this call sent neither command.
  returned: always
  type: int
  sample: 1
released:
  description: The number of lock levels V(unlocked) released (0 in check mode).
  returned: always
  type: int
  sample: 1
lock_age_seconds:
  description: How long the lock found before the call had been held, as the server reports it; null when not
    locked or not reported.
  returned: always
  type: int
  sample: 42
oplog_time_at_lock:
  description:
    - The newest oplog entry of the server while locked, the point in time of a snapshot taken under the lock,
      when the call locked the server or found it locked. Null otherwise, on a mongos and on a standalone server
      (no oplog), and in check mode when the server would be locked.
    - C(ts) is C(secs:inc) as mongorestore prints it, C(t) and C(i) its parts, C(time) the UTC time.
  returned: always
  type: dict
  sample: {"ts": "1714521600:3", "t": 1714521600, "i": 3, "time": "2024-05-01T00:00:00Z"}
member:
  description: The replica-set member or server (host:port) the data was read from.
  returned: always
  type: str
  sample: db2.example.com:27017
replica_set:
  description: The replica set of the server, null for a mongos or a standalone server.
  returned: always
  type: str
  sample: rs0
  version_added: 1.2.0
role:
  description: What the server is, C(primary), C(secondary), C(mongos) or C(standalone).
  returned: always
  type: str
  sample: secondary
selection:
  description: With O(member), the member chosen (C(host)) and why (C(reason)); null without O(member).
  returned: always
  type: dict
  sample: {"host": "db3.example.com:27017", "state": "SECONDARY", "hidden": true, "lag_seconds": 0,
           "reason": "hidden member, preferred for backups"}
server_version:
  description: The server's MongoDB version.
  returned: always
  type: str
  sample: 8.0.4
'''

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.module import MongoDBModule
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.cluster import fsync_lock


def run_module(module):
    params = module.params
    client, selection = fsync_lock.connect_member(
        module.connection_options, member=params["member"], max_lag_seconds=params["max_lag_seconds"],
        allow_primary=params["allow_primary"], state=params["state"])
    try:
        facts = client_utils.server_facts(client)
        changed, result, warnings = fsync_lock.run(
            client, facts, state=params["state"], allow_primary=params["allow_primary"],
            max_lock_seconds=params["max_lock_seconds"], check_mode=module.check_mode)
    finally:
        client.close()
    for warning in warnings:
        module.warn(warning)
    result["selection"] = selection
    return changed, result


def main():
    module = MongoDBModule(
        argument_spec=dict(
            state=dict(type="str", choices=["locked", "unlocked"]),
            allow_primary=dict(type="bool", default=False),
            max_lock_seconds=dict(type="int", default=fsync_lock.DEFAULT_MAX_LOCK_SECONDS),
            member=dict(type="str"),
            max_lag_seconds=dict(type="int"),
        ),
        supports_check_mode=True,
    )
    changed, result = module.run(run_module, module)
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
