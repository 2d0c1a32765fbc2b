#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: mongodb_restore
short_description: Restore a logical MongoDB backup, optionally to a point in time
version_added: "1.0.0"
description:
  - Restores a backup in mongodump directory layout or mongodump archive format, written by
    M(dbops.mongodb_backup.mongodb_dump) or by C(mongodump), into a MongoDB deployment.
  - Before anything is written or dropped, every option, the source and the plan are checked. A backup
    with a C(manifest.json) must match its per-file sha256 checksums; a missing or damaged file, or a
    file the manifest does not list, stops the task and is named. A source without a manifest is
    refused unless O(require_manifest=false) (real mongodump output); it then gets a structural check
    only (BSON framing, archive CRCs) and the result says C(verified=false). A backup written by this
    collection that lost its manifest is always refused.
  - A source without any namespace, or without the oplog that O(oplog_replay) needs, is refused before
    anything is dropped.
  - Documents the target refuses (duplicate keys, validation) fail the task after the rest was
    restored (at once with O(stop_on_error=true)); the message names how many in which namespaces and
    the first error of each. O(max_failed_documents) accepts a known number of them.
  - Collections are recreated with their options, documents inserted as raw BSON without decoding,
    indexes built after the data (and after an oplog replay), views created last.
  - With O(oplog_replay=true) the oplog saved by an C(oplog=true) dump (or O(oplog_file)) is replayed,
    up to O(oplog_limit) when given. The replay uses C(applyOps) where the target allows it and
    otherwise translates entries into ordinary writes, so it also works on targets without C(applyOps).
  - Not idempotent in general (inserting twice fails on duplicate keys); use O(drop=true) to replace
    what is there. Oplog replay itself is idempotent.
extends_documentation_fragment:
  - dbops.mongodb_backup.connection
  - dbops.mongodb_backup.attributes
  - dbops.mongodb_backup.attributes.platform
attributes:
  check_mode:
    support: full
    details: Verifies the source and returns the plan (namespaces, targets that exist and would be dropped or conflict); writes nothing.
  diff_mode:
    support: none
options:
  source:
    description:
      - Required unless O(oplog_only=true).
      - The dump directory or archive file to restore. gzip is detected from the file contents.
    type: path
  db:
    description:
      - Restore only this database of the source (and, without O(ns_from), into a database of that name).
      - Checked before anything connects - a database name is 1 to 63 bytes and holds none of
        C(/ \ . " $), a space or NUL.
    type: str
  collection:
    description:
      - Restore only this collection of O(db). It must not be empty nor hold C($) or NUL.
    type: str
  ns_include:
    description:
      - Restore only namespaces matching one of these patterns, as C(mongorestore --nsInclude).
      - A pattern matches the whole C(database.collection) name. C(*) matches any text, dots included
        (V(sales.*) is every collection of C(sales); V(*.orders) every C(orders) collection; V(sales*)
        also takes C(sales_eu.x)). C(\*) is a literal asterisk, C(\\) a literal backslash.
      - C($) is not allowed. A pattern with neither a C(.) nor a C(*), such as a bare database name, is
        refused (mongorestore would silently restore nothing for it); write V(sales.*).
    type: list
    elements: str
  ns_exclude:
    description:
      - Leave out namespaces matching one of these patterns, as C(mongorestore --nsExclude); same
        syntax as O(ns_include). Exclusion wins over inclusion.
    type: list
    elements: str
  ns_from:
    description:
      - Rename namespaces while restoring, as C(mongorestore --nsFrom); paired in order with O(ns_to).
      - With wildcards, each C(*) of O(ns_from) takes the text it matched to the C(*) at the same place
        in O(ns_to), so both have the same number of C(*) (V(sales.*) -> V(sales_copy.*); V(*.orders)
        -> V(*.orders_old)). C(\*) is a literal asterisk.
      - With variables, C($name$) in O(ns_from) matches any text and O(ns_to) puts it back, in any order
        and as often as needed (V($db$.$coll$) -> V($coll$.$db$)); each variable appears once in O(ns_from).
        In a rule with variables, C(*) and C(\) are plain characters on both sides.
      - When several rules match a namespace, the last one in the list renames it (as mongorestore),
        so put specific rules after general ones. A namespace no rule matches keeps its name.
      - Refused before anything is written or dropped - a rule that matches none of the namespaces being
        restored (the error lists the source's namespaces), a rule that a later rule overrides for every
        namespace it matches, a target that is not a valid namespace, two namespaces renamed to one
        target, and a rule with several C(*) where only one side starts with C(*) (mongorestore pairs
        those wildcards out of order; use variables).
    type: list
    elements: str
  ns_to:
    description:
      - Targets of O(ns_from), one for each, using the same C(*) count or the C($variable$) names of its
        O(ns_from).
    type: list
    elements: str
  drop:
    description: Drop each target collection before restoring it.
    type: bool
    default: false
  drop_extra_collections:
    description:
      - Also drop every user collection and view of the target that the backup does not contain,
        so that the whole deployment returns to the backup (and, with O(oplog_replay), to the state
        just before O(oplog_limit)). Collections the replayed oplog creates are created again by the
        replay; those created later are gone.
      - The databases C(admin), C(local) and C(config) and C(system.*) collections are never dropped.
      - Needs O(drop=true) and a whole-deployment restore (no O(db), O(ns_include), O(ns_exclude) or
        O(ns_from)). In check mode the result lists what would be dropped.
    type: bool
    default: false
  no_index_restore:
    description: Do not build the indexes recorded in the backup.
    type: bool
    default: false
  no_options_restore:
    description: Create collections without their recorded options (capped, collation, validator...).
    type: bool
    default: false
  num_parallel_collections:
    description: How many collections to restore at once (directory sources).
    type: int
    default: 4
  num_insertion_workers_per_collection:
    description: Concurrent insert batches per collection.
    type: int
    default: 1
  batch_size:
    description: Documents per insert command.
    type: int
    default: 1000
  write_concern:
    description:
      - "Write concern for the inserts, for example C({w: majority, wtimeout: 60000})."
      - The keys are C(w), C(wtimeout), C(j) and C(fsync); an unknown key or a bad value fails the task
        before anything is written.
    type: dict
  bypass_document_validation:
    description: Insert documents even when they fail the collection's validator.
    type: bool
    default: false
  restore_users_and_roles:
    description: Also restore the users and roles saved by a single-database dump (C(dump_users_and_roles)).
    type: bool
    default: false
  stop_on_error:
    description:
      - Stop at the first document that cannot be inserted. Without it, documents the target refuses
        (duplicate keys, validation) are counted and the restore goes on, as C(mongorestore) does; the
        task then fails at the end (unlike C(mongorestore), which exits 0), unless O(max_failed_documents)
        accepts them.
    type: bool
    default: false
  max_failed_documents:
    description:
      - How many documents that could not be inserted, and oplog entries that could not be applied,
        the task accepts (they are still counted, listed in the warnings, and their namespaces are not
        C(complete)). More than this fails the task.
    type: int
    default: 0
  skip_verify:
    description:
      - Do not check the source against its manifest checksums. Dangerous, the restore may load damaged
        data. The manifest must still be there (see O(require_manifest)) and list every file.
    type: bool
    default: false
  require_manifest:
    description:
      - Refuse a source without a C(manifest.json) (an archive's C(<archive>.manifest.json)).
      - Set V(false) to restore real C(mongodump) output, which has no manifest; the source then gets a
        structural check only and the result says C(verified=false). A backup written by this collection
        (catalogued, or whose prelude names this collection) that lost its manifest is refused even then.
    type: bool
    default: true
  ignore_unlisted_files:
    description:
      - Files in a backup directory that its manifest does not list (or, without a manifest, files and
        directories that have no place in a mongodump layout) are refused by default. With V(true) they
        are left out of the restore with a warning.
    type: bool
    default: false
  oplog_replay:
    description: Replay the oplog of the backup after restoring the data (point in time).
    type: bool
    default: false
  oplog_limit:
    description:
      - Replay only entries strictly before this time, as C(<seconds>[:<ordinal>]) or ISO-8601
        (C(2024-05-01T12:00:00Z)). The result is the state just before that time.
    type: str
  oplog_file:
    description: Replay this oplog file instead of the one in the backup.
    type: path
  oplog_slices:
    description:
      - Oplog slice files (from M(dbops.mongodb_backup.mongodb_oplog_archive)) replayed after the
        backup's own oplog, in the order given, up to O(oplog_limit). Point-in-time restores use them.
    type: list
    elements: path
  oplog_apply_mode:
    description:
      - V(auto) uses C(applyOps) when the target allows it, else ordinary writes.
      - V(applyops) requires C(applyOps). V(crud) always translates entries into ordinary writes.
    type: str
    choices: [auto, applyops, crud]
    default: auto
  oplog_only:
    description:
      - Replay archived oplog onto a target that already holds the base state, without restoring any data,
        the point-in-time step after a snapshot was restored (role C(snapshot_restore)), as PBM's
        C(oplog-replay). Nothing is dropped.
      - Needs O(oplog_start) and O(oplog_slices) (or O(oplog_file)); O(oplog_limit) gives the target time.
        The first file must start at or before O(oplog_start), otherwise entries after the base were never
        archived and the task fails before writing anything.
      - Cannot be combined with O(source), O(drop), O(drop_extra_collections), O(db), O(collection),
        O(ns_include), O(ns_exclude), O(ns_from), O(ns_to) or O(restore_users_and_roles).
    type: bool
    default: false
  oplog_start:
    description:
      - With O(oplog_only=true), the oplog time (C(secs:inc)) the target already holds every write through;
        that is the C(oplog_end) of the snapshot backup in the catalog. Entries at or before it are skipped.
    type: str
notes:
  - Indexes are built after the oplog replay, so data that a later oplog entry fixes (for example a
    duplicate that is deleted) restores cleanly.
author:
  - dbops.mongodb_backup contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: After a snapshot was restored on the target, replay the archived oplog to a point in time
  dbops.mongodb_backup.mongodb_restore:
    login_host: db1-restore.example.com
    oplog_only: true
    oplog_start: "{{ plan.backup.oplog_end }}"
    oplog_slices: "{{ plan.slices | map(attribute='path') | list }}"
    oplog_limit: "{{ plan.oplog_limit }}"

- name: Restore last night's backup over what is there
  dbops.mongodb_backup.mongodb_restore:
    login_host: db1.example.com
    login_user: restore
    login_password: "{{ vault_mongodb_restore_password }}"
    source: /srv/backups/mongodb/db1/nightly-2024-05-01
    drop: true
    oplog_replay: true

- name: Restore to the state just before a bad deploy
  dbops.mongodb_backup.mongodb_restore:
    source: /srv/backups/mongodb/db1/nightly-2024-05-01
    drop: true
    oplog_replay: true
    oplog_limit: "2024-05-01T09:41:00Z"

- name: Copy one database under another name (production data into staging)
  dbops.mongodb_backup.mongodb_restore:
    source: /srv/backups/mongodb/prod.archive
    ns_from: ["prod.*"]
    ns_to: ["staging.*"]
    drop: true

- name: Every orders collection into one archive database, named after its source database
  dbops.mongodb_backup.mongodb_restore:
    source: /srv/backups/mongodb/db1/nightly-2024-05-01
    ns_include: ["*.orders"]
    ns_from: ["$db$.orders"]
    ns_to: ["archive.orders_$db$"]

- name: Rename the whole shop database, but send its audit log elsewhere (the last rule wins)
  dbops.mongodb_backup.mongodb_restore:
    source: /srv/backups/mongodb/db1/nightly-2024-05-01
    ns_include: ["shop.*"]
    ns_from: ["shop.*", "shop.audit"]
    ns_to: ["shop_restored.*", "audit.shop"]

- name: Restore real mongodump output (it has no manifest), accepting 3 known duplicates
  dbops.mongodb_backup.mongodb_restore:
    source: /srv/dumps/from-mongodump
    require_manifest: false
    max_failed_documents: 3

- name: What would a restore do?
  dbops.mongodb_backup.mongodb_restore:
    source: /srv/backups/mongodb/db1/nightly-2024-05-01
    drop: true
  check_mode: true
'''

RETURN = r'''
namespaces:
  description:
    - Per target namespace, the source namespace, documents inserted and failed (with C(first_error)
      when some failed), bytes, indexes built and whether it was restored completely (never when a
      document failed). In check mode, the plan with C(target_exists) and C(action).
  returned: always
  type: list
  elements: dict
  sample: [{"namespace": "shop.orders", "source_namespace": "shop.orders", "type": "collection",
            "inserted": 5000, "failed": 0, "bytes": 909415, "indexes_built": 1, "complete": true}]
verification:
  description:
    - How the source was checked before the restore. C(verified) is true only when every file matched
      the manifest's checksums. Without a manifest (O(require_manifest=false)) it is false and
      C(structural_check) says what was checked.
  returned: always
  type: dict
  sample: {"verified": true, "manifest": true, "files": 5, "backup_id": "74de39da-a970-4f4f-8a09-cbc3108cf3ba"}
total_inserted:
  description: Documents inserted.
  returned: success, not in check mode
  type: int
  sample: 7000
total_failed:
  description: Documents that could not be inserted (accepted by O(max_failed_documents), else the task fails).
  returned: success, not in check mode
  type: int
  sample: 0
total_bytes:
  description: BSON bytes inserted.
  returned: success, not in check mode
  type: int
  sample: 1138449
duration_seconds:
  description: Wall-clock seconds the task spent on its work.
  returned: success, not in check mode
  type: float
  sample: 2.4
mb_per_second:
  description: Throughput in megabytes (10^6 bytes) of BSON per second.
  returned: success, not in check mode
  type: float
  sample: 40.2
dropped_extra_collections:
  description: The collections and views that O(drop_extra_collections=true) dropped before the restore.
  returned: success, not in check mode
  type: list
  elements: str
  sample: ["shop.created_after_the_backup"]
extra_collections:
  description: In check mode with O(drop_extra_collections=true), what would be dropped.
  returned: check mode
  type: list
  elements: str
  sample: ["shop.created_after_the_backup"]
oplog:
  description: The replay result, with the oplog position reached.
  returned: when O(oplog_replay=true) or O(oplog_only=true)
  type: dict
  sample: {"applied": 5120, "last_applied": "1714521604:7", "stopped_at_limit": false, "mode_used": "crud",
           "not_applied": {}}
oplog_start:
  description: The base the replay started after (C(secs:inc)).
  returned: when O(oplog_only=true)
  type: str
  sample: "1714521600:3"
oplog_limit:
  description: The exclusive limit of the replay (C(secs:inc)), null without O(oplog_limit).
  returned: when O(oplog_only=true)
  type: str
  sample: "1714525200:0"
oplog_files:
  description: The oplog files replayed, in order.
  returned: when O(oplog_only=true)
  type: list
  elements: str
  sample: ["/backups/db1/oplog/rs0/1714521600-1714522500.bson.gz"]
first_ts:
  description: The first entry of the oplog files, at or before RV(oplog_start).
  returned: when O(oplog_only=true)
  type: str
  sample: "1714521600:3"
'''

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.module import MongoDBModule
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import InvalidOption
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import restore as restore_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import replay_only


# Options that restore data: meaningless for an oplog-only replay.
DATA_OPTIONS = ("source", "db", "collection", "ns_include", "ns_exclude", "ns_from", "ns_to", "drop",
                "drop_extra_collections", "restore_users_and_roles")


def oplog_only_options(params):
    """The options of an oplog-only replay; the data options are refused, naming them."""
    given = [name for name in DATA_OPTIONS if params[name]]
    if given:
        raise InvalidOption("oplog_only replays the oplog onto a target that already holds the base state and "
                            "restores no data; remove %s" % ", ".join(given))
    files = ([params["oplog_file"]] if params["oplog_file"] else []) + list(params["oplog_slices"] or [])
    return replay_only.ReplayOnlyOptions(
        files, params["oplog_start"], oplog_limit=params["oplog_limit"], apply_mode=params["oplog_apply_mode"],
        bypass_document_validation=params["bypass_document_validation"],
        max_failed_documents=params["max_failed_documents"], no_index_restore=params["no_index_restore"])


def run_oplog_only(module):
    options = oplog_only_options(module.params)
    client = client_utils.connect(module.connection_options)
    try:
        return replay_only.replay_only(client, options, check_mode=module.check_mode)
    finally:
        client.close()


def run_module(module):
    params = module.params
    if params["oplog_start"] is not None and not params["oplog_only"]:
        raise InvalidOption("oplog_start is the base of an oplog-only replay; set oplog_only: true (a backup's own "
                            "oplog says where its replay starts)")
    if params["oplog_only"]:
        return run_oplog_only(module)
    options = restore_engine.RestoreOptions(
        source=params["source"], db=params["db"], collection=params["collection"],
        ns_include=params["ns_include"], ns_exclude=params["ns_exclude"], ns_from=params["ns_from"],
        ns_to=params["ns_to"], drop=params["drop"], no_index_restore=params["no_index_restore"],
        no_options_restore=params["no_options_restore"],
        num_parallel_collections=params["num_parallel_collections"],
        num_insertion_workers_per_collection=params["num_insertion_workers_per_collection"],
        batch_size=params["batch_size"], write_concern=params["write_concern"],
        bypass_document_validation=params["bypass_document_validation"],
        restore_users_and_roles=params["restore_users_and_roles"], stop_on_error=params["stop_on_error"],
        skip_verify=params["skip_verify"], oplog_replay=params["oplog_replay"],
        oplog_limit=params["oplog_limit"], oplog_file=params["oplog_file"],
        oplog_apply_mode=params["oplog_apply_mode"], oplog_slices=params["oplog_slices"],
        drop_extra_collections=params["drop_extra_collections"],
        require_manifest=params["require_manifest"], ignore_unlisted_files=params["ignore_unlisted_files"],
        max_failed_documents=params["max_failed_documents"])
    client = client_utils.connect(module.connection_options)
    try:
        return restore_engine.restore(client, options, check_mode=module.check_mode)
    finally:
        client.close()


def main():
    module = MongoDBModule(
        argument_spec=dict(
            source=dict(type="path"),
            db=dict(type="str"),
            collection=dict(type="str"),
            ns_include=dict(type="list", elements="str"),
            ns_exclude=dict(type="list", elements="str"),
            ns_from=dict(type="list", elements="str"),
            ns_to=dict(type="list", elements="str"),
            drop=dict(type="bool", default=False),
            drop_extra_collections=dict(type="bool", default=False),
            no_index_restore=dict(type="bool", default=False),
            no_options_restore=dict(type="bool", default=False),
            num_parallel_collections=dict(type="int", default=4),
            num_insertion_workers_per_collection=dict(type="int", default=1),
            batch_size=dict(type="int", default=1000),
            write_concern=dict(type="dict"),
            bypass_document_validation=dict(type="bool", default=False),
            restore_users_and_roles=dict(type="bool", default=False),
            stop_on_error=dict(type="bool", default=False),
            max_failed_documents=dict(type="int", default=0),
            skip_verify=dict(type="bool", default=False),
            require_manifest=dict(type="bool", default=True),
            ignore_unlisted_files=dict(type="bool", default=False),
            oplog_replay=dict(type="bool", default=False),
            oplog_limit=dict(type="str"),
            oplog_file=dict(type="path"),
            oplog_slices=dict(type="list", elements="path"),
            oplog_apply_mode=dict(type="str", default="auto", choices=["auto", "applyops", "crud"]),
            oplog_only=dict(type="bool", default=False),
            oplog_start=dict(type="str"),
        ),
        required_by={"collection": "db"},
        required_together=[["ns_from", "ns_to"]],
        supports_check_mode=True,
    )
    changed, result = module.run(run_module, module)
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
