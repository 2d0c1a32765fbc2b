#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: mongodb_dump
short_description: Take a logical backup of MongoDB in mongodump format
version_added: "1.0.0"
description:
  - Dumps a MongoDB deployment, one database or one collection into a directory in mongodump
    layout or into a single mongodump archive file, so that C(mongorestore) and
    M(dbops.mongodb_backup.mongodb_restore) can read it.
  - The native engine streams raw BSON batches without decoding documents, dumps several
    collections at once, and keeps memory bounded by the driver's batch size whatever the
    collection size.
  - The backup is built in the directory C(<target>.partial) and moved into place only when complete,
    with a C(manifest.json) (per-file sha256, sizes, document counts, oplog range) written before
    anything moves; an archive reaches its final name only once its manifest is complete. A failed
    run leaves nothing that looks like a backup.
  - One run per target at a time. A run holds the lock file C(<target>.lock) (mode 0600, removed at
    the end, released by the kernel if the run dies) from its first check to its last rename; a second
    run on the same target waits up to O(lock_timeout) seconds, then fails naming the run that holds it.
  - A C(<target>.partial) (or C(<target>.replaced)) that this collection did not create is never
    removed; the task fails and names it. A leftover of a killed run of ours is removed under the lock.
  - Idempotent by O(label). When a complete backup with the same O(label) is already at the target,
    the module checks that it was taken with the same scope (O(db), O(collection), O(query),
    O(ns_include), O(ns_exclude), O(oplog), O(compression), O(dump_users_and_roles), directory or archive)
    and that every file still has the size and sha256 its manifest records; then it reports
    C(changed=false) and leaves it alone. A different scope or a damaged file fails the task, naming
    what differs; use another O(label) or path, or O(force=true) to replace it.
extends_documentation_fragment:
  - dbops.mongodb_backup.connection
  - dbops.mongodb_backup.attributes
  - dbops.mongodb_backup.attributes.platform
attributes:
  check_mode:
    support: full
    details: Lists the namespaces it would dump with their estimated sizes and writes nothing.
  diff_mode:
    support: none
options:
  path:
    description:
      - Directory that becomes the backup (like C(mongodump --out)). Its parent must exist.
      - Mutually exclusive with O(archive).
    type: path
  archive:
    description:
      - File that becomes the backup, in mongodump C(--archive) format. Its directory must exist.
      - The manifest is written beside it as C(<archive>.manifest.json).
      - An existing directory is refused before anything is read (use O(path) for a directory backup).
    type: path
  db:
    description:
      - Dump only this database. Without it the whole deployment is dumped, leaving out C(local),
        internal databases and system collections the way mongodump does.
      - Checked before anything connects - a database name is 1 to 63 bytes and holds none of
        C(/ \ . " $), a space or NUL.
    type: str
  collection:
    description:
      - Dump only this collection of O(db). It must not be empty nor hold C($) or NUL.
    type: str
  query:
    description:
      - Filter for the documents of O(collection), as Extended JSON text or a dictionary.
      - A query that matches no document fails the task before anything is written, unless
        O(allow_empty=true). (C(mongodump --query) writes an empty backup in that case; an empty backup
        that looks successful is what O(allow_empty) exists to prevent.)
    type: raw
  query_file:
    description:
      - File holding the O(query) filter in Extended JSON.
    type: path
  ns_include:
    description:
      - Dump only namespaces matching one of these patterns, with the syntax of C(mongorestore --nsInclude).
      - A pattern matches the whole C(database.collection) name. C(*) matches any text, dots included
        (V(sales.*) is every collection of C(sales); V(*.orders) every C(orders) collection; V(logs*)
        also takes C(logs2024.app)). C(\*) is a literal asterisk, C(\\) a literal backslash.
      - C($) is not allowed. A pattern with neither a C(.) nor a C(*), such as a bare database name, is
        refused because it can match nothing; write V(sales.*).
    type: list
    elements: str
  ns_exclude:
    description:
      - Leave out namespaces matching one of these patterns; same syntax as O(ns_include).
    type: list
    elements: str
  compression:
    description:
      - Compress the backup with V(gzip) or V(zstd), or write it uncompressed with V(none). When not set the
        backup is not compressed (as C(mongodump) without C(--gzip)), unless the deprecated O(gzip=true) asks
        for V(gzip).
      - In a directory every file is compressed on its own and named with the suffix C(.gz) or C(.zst)
        (C(<collection>.bson.zst), C(<collection>.metadata.json.zst), C(prelude.json.zst)), except
        C(oplog.bson), which keeps the name mongodump gives it; an archive is compressed as a whole.
      - M(dbops.mongodb_backup.mongodb_restore) reads all three; it recognises the compression by content.
        The real C(mongorestore) reads V(gzip) backups (with C(--gzip)) but B(not) V(zstd) ones. Choose
        V(gzip) or V(none) when the backup must stay restorable with the MongoDB Database Tools.
      - zstd compresses about as small as gzip at several times its speed. It needs the Python library
        C(zstandard) on the managed node (in the collection's C(requirements.txt)).
      - O(engine=mongodump) writes V(none) or V(gzip) only; V(zstd) with it fails before anything runs.
      - Part of the backup's scope (see the description), so a rerun with the same O(label) but another
        compression fails instead of keeping the backup. A backup taken with O(gzip=true) counts as
        V(gzip).
    type: str
    choices: [none, gzip, zstd]
  compression_level:
    description:
      - Compression level, gzip 1 (fastest) to 9 (smallest), zstd -131072 to 22 (negative levels are zstd's
        fast levels, 20 to 22 need much more memory). When not set, gzip 6 and zstd 3 (each library's default).
      - Checked before connecting, in check mode too. Not allowed without compression, nor with
        O(engine=mongodump) (C(mongodump --gzip) takes no level).
      - The alias O(gzip_level) is the option's former name.
    type: int
    aliases: [gzip_level]
  gzip:
    description:
      - B(Deprecated), will be removed in version 2.0.0; use O(compression=gzip) instead. Setting it (to
        V(true) or V(false)) gives a deprecation warning.
      - V(true) means O(compression=gzip); it fails together with O(compression=zstd) or O(compression=none).
        V(false) asks for nothing (the default of O(compression) applies).
    type: bool
  oplog:
    description:
      - Take a point-in-time consistent dump, exactly as C(mongodump --oplog). The oplog entries
        written while the collections are dumped are saved too, and replaying them gives the state
        at the end of the dump.
      - Only for a full dump of a replica-set member. The task fails with an oplog overflow error
        when the oplog rolls over during the dump.
    type: bool
    default: false
  dump_users_and_roles:
    description:
      - With O(db), also dump the users and roles defined on that database (as
        C(mongodump --dumpDbUsersAndRoles)). A full dump always includes them.
    type: bool
    default: false
  label:
    description:
      - Name of this backup, recorded in the manifest. A second run with the same label finds the
        complete backup and changes nothing.
    type: str
  num_parallel_collections:
    description:
      - How many collections to dump at the same time.
    type: int
    default: 4
  member:
    description:
      - Replica-set member (C(host:port)) to read from, instead of the automatic choice.
      - It must be healthy and build indexes; O(max_lag_seconds) still applies.
    type: str
  max_lag_seconds:
    description:
      - On a replica set, refuse to back up from a secondary that lags the primary by more than this.
        When every candidate lags more, the task fails and lists each member with its lag.
    type: int
  engine:
    description:
      - V(native) uses this collection's engine.
      - V(mongodump) runs the real C(mongodump) binary when it is installed. The password is passed
        through a 0600 C(--config) file in a private 0700 directory under the temporary directory
        (C($TMPDIR/dbops-mongodb-backup-<uid>/)), never on the command line or in its environment;
        the file is deleted when C(mongodump) exits, and a file left by a killed run is deleted by
        the next run. C(mongodump) runs in its own process group and is stopped with the module,
        even when the module is killed. O(ns_include) and O(ns_exclude) need the native engine.
      - C(mongodump) applies its own network timeouts, not O(socket_timeout).
    type: str
    choices: [native, mongodump]
    default: native
  mongodump_path:
    description:
      - Path of the C(mongodump) binary for O(engine=mongodump). Searched on C(PATH) when not set.
    type: path
  allow_empty:
    description:
      - Accept a backup that contains nothing (an unknown database or collection, namespace filters
        that match nothing, or a O(query) that matches no document). Without it such a dump fails, so
        a typo never produces an empty backup that looks successful.
    type: bool
    default: false
  force:
    description:
      - Replace a backup already at the target (complete, of another scope, damaged, or whose manifest
        is unreadable). The new backup is built beside it and swapped in only when complete.
    type: bool
    default: false
  lock_timeout:
    description:
      - Seconds to wait for another run that holds the same target's lock (see the description) before
        failing with its pid, host, start time and label. V(0) fails at once.
      - A run that waited finds the other run's backup and, when it has the same label and scope,
        reports C(changed=false).
    type: int
    default: 60
  create_parent:
    description:
      - Create the directory O(path) or O(archive) goes in (mode 0700) when it is missing. Its own parent
        must exist, so an unmounted backup volume is still refused. Check mode reports it in
        RV(create_parent) and creates nothing.
    type: bool
    default: false
notes:
  - On a replica set reached with several hosts, the dump reads from one member only. As for C(mongodump),
    the read preference is O(read_preference), else the C(readPreference) of O(uri), else C(primary), so by
    default the dump reads the primary. With C(secondary), C(secondaryPreferred) or C(nearest) the member is
    chosen with C(replSetGetStatus) - a hidden member if one is configured, else the healthy secondary with the
    least replication lag (the primary when there is no healthy secondary). The member and the reason are
    recorded in the result. The user needs the C(clusterMonitor) role (included in C(backup)) for this.
  - With O(engine=mongodump), O(read_preference) is passed as C(--readPreference) when set; when unset,
    nothing is passed and C(mongodump) applies the same rule.
  - Files are created with mode 0600 and directories with mode 0700.
seealso:
  - name: mongodump
    description: The MongoDB Database Tools program whose output format this module writes.
    link: https://www.mongodb.com/docs/database-tools/mongodump/
author:
  - dbops.mongodb_backup contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Back up the whole replica set, point in time consistent
  dbops.mongodb_backup.mongodb_dump:
    login_host: db1.example.com
    login_user: backup
    login_password: "{{ vault_mongodb_backup_password }}"
    path: /backups/mongodb/nightly-2024-05-01
    oplog: true
    compression: gzip
    label: nightly-2024-05-01

- name: A smaller, faster compressed archive, for mongodb_restore only (mongorestore cannot read zstd)
  dbops.mongodb_backup.mongodb_dump:
    archive: /backups/mongodb/nightly.archive.zst
    compression: zstd
    compression_level: 6
    label: nightly-zstd

- name: One database into a single archive file
  dbops.mongodb_backup.mongodb_dump:
    uri: mongodb://db1.example.com:27017/?replicaSet=rs0
    login_user: backup
    login_password: "{{ vault_mongodb_backup_password }}"
    db: sales
    dump_users_and_roles: true
    archive: /backups/mongodb/sales.archive

- name: Recent orders only
  dbops.mongodb_backup.mongodb_dump:
    db: sales
    collection: orders
    query: '{"created": {"$gte": {"$date": "2024-01-01T00:00:00Z"}}}'
    path: /backups/mongodb/orders-2024

- name: Everything but the logs databases
  dbops.mongodb_backup.mongodb_dump:
    ns_exclude: ["logs*.*", "*.tmp_*"]
    path: /backups/mongodb/nologs

- name: See what a dump would contain
  dbops.mongodb_backup.mongodb_dump:
    path: /backups/mongodb/preview
  check_mode: true
  register: planned
'''

RETURN = r'''
backup_id:
  description: Unique id of the backup, recorded in its manifest.
  returned: success, not in check mode
  type: str
  sample: 0b6f0f8e-2f63-4a43-9d0e-5b0d9a1b2c3d
label:
  description: The O(label) of the backup.
  returned: always
  type: str
  sample: nightly-2024-05-01
path:
  description: Absolute path of the backup directory or archive file.
  returned: always
  type: str
  sample: /backups/mongodb/nightly-2024-05-01
manifest:
  description: Path of the backup's manifest.
  returned: success, not in check mode
  type: str
  sample: /backups/mongodb/nightly-2024-05-01/manifest.json
namespaces:
  description:
    - The namespaces dumped, with their document count and uncompressed BSON bytes.
    - In check mode, the namespaces that would be dumped with C(estimated_bytes) and C(estimated_documents).
  returned: always
  type: list
  elements: dict
  sample: [{"namespace": "sales.orders", "db": "sales", "collection": "orders", "type": "collection",
            "documents": 120000, "bytes": 73400320, "seconds": 2.1}]
total_documents:
  description: Documents dumped.
  returned: success, not in check mode
  type: int
  sample: 120000
total_bytes:
  description: Uncompressed BSON bytes dumped.
  returned: success, not in check mode
  type: int
  sample: 73400320
bytes_on_disk:
  description: Size of the backup files as written (after compression).
  returned: success, not in check mode
  type: int
  sample: 20971520
estimated_bytes:
  description: Data size the dump would read, from collection statistics.
  returned: check mode
  type: int
  sample: 73400320
estimated_documents:
  description: Documents the dump would read, from collection statistics.
  returned: check mode
  type: int
  sample: 120000
create_parent:
  description: The directory the run would create with O(create_parent=true).
  returned: check mode, when that directory is missing
  type: str
  sample: /backups/mongodb/db1
msg:
  description: Why nothing changed, when a complete, intact backup with the same label and scope is already there.
  returned: when changed is false
  type: str
  sample: backup 0b6f0f8e-2f63-4a43-9d0e-5b0d9a1b2c3d with label 'nightly-2024-05-01' is already complete at /backups/mongodb/nightly-2024-05-01
duration_seconds:
  description: Wall-clock seconds the task spent on its work.
  returned: success, not in check mode
  type: float
  sample: 3.52
mb_per_second:
  description: Throughput in uncompressed megabytes (10^6 bytes) per second.
  returned: success, not in check mode
  type: float
  sample: 20.85
oplog:
  description: The oplog window saved with O(oplog=true), inclusive at both ends.
  returned: success, when O(oplog=true)
  type: dict
  sample: {"start": {"ts": "1714521600:1", "t": 1714521600, "i": 1, "time": "2024-05-01T00:00:00Z"},
           "end": {"ts": "1714521604:7", "t": 1714521604, "i": 7, "time": "2024-05-01T00:00:04Z"},
           "entries": 5120, "bytes": 2170880, "collection": "local.oplog.rs"}
server:
  description: Version and topology of the server dumped.
  returned: always
  type: dict
  sample: {"version": "7.0.12", "topology": "replicaset", "member_state": "SECONDARY", "replica_set": "rs0"}
member:
  description: The replica-set member or server (host:port) the data was read from.
  returned: success, not in check mode
  type: str
  sample: db2.example.com:27017
member_selection:
  description: How the member was chosen on a replica set (host, state, hidden, lag_seconds, reason).
  returned: when the deployment is a replica set reached through several hosts
  type: dict
  sample: {"host": "db3.example.com:27017", "state": "SECONDARY", "hidden": true, "lag_seconds": 0,
           "reason": "hidden member"}
'''

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.module import MongoDBModule
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump as dump_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_options
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import members
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import mongotools as mongodump_tool


def run_module(module):
    params = module.params
    if params["gzip"] is not None:
        module.deprecate("gzip is deprecated: use compression: gzip instead of gzip: true (and leave out gzip: false)",
                         version="2.0.0", collection_name="dbops.mongodb_backup")
    options = dump_options.DumpOptions(
        db=params["db"], collection=params["collection"], query=params["query"],
        query_file=params["query_file"], ns_include=params["ns_include"],
        ns_exclude=params["ns_exclude"], path=params["path"], archive=params["archive"],
        compression=params["compression"], compression_level=params["compression_level"], gzip=params["gzip"],
        level_option="gzip_level" if params.get("gzip_level") is not None else "compression_level",
        oplog=params["oplog"],
        dump_users_and_roles=params["dump_users_and_roles"], label=params["label"],
        num_parallel_collections=params["num_parallel_collections"],
        allow_empty=params["allow_empty"], force=params["force"],
        prefer_secondary=params["read_preference"] in members.SECONDARY_MODES, lock_timeout=params["lock_timeout"],
        create_parent=params["create_parent"])
    connection = module.connection_options
    if params["engine"] == "mongodump":
        return mongodump_tool.run(connection, options, params["mongodump_path"], module.check_mode)
    client = client_utils.connect(connection)
    try:
        server = client_utils.server_facts(client)
        reader, member, selection = members.reader_client(
            client, connection, members.reads_from_secondary(client), params["member"], params["max_lag_seconds"])
        try:
            changed, result = dump_engine.dump(reader, options, server, member=member, check_mode=module.check_mode)
            if selection:
                result["member_selection"] = selection
            return changed, result
        finally:
            if reader is not client:
                reader.close()
    finally:
        client.close()


def main():
    module = MongoDBModule(
        argument_spec=dict(
            path=dict(type="path"),
            archive=dict(type="path"),
            db=dict(type="str"),
            collection=dict(type="str"),
            query=dict(type="raw"),
            query_file=dict(type="path"),
            ns_include=dict(type="list", elements="str"),
            ns_exclude=dict(type="list", elements="str"),
            compression=dict(type="str", choices=["none", "gzip", "zstd"]),
            compression_level=dict(type="int", aliases=["gzip_level"]),
            gzip=dict(type="bool"),
            oplog=dict(type="bool", default=False),
            dump_users_and_roles=dict(type="bool", default=False),
            label=dict(type="str"),
            num_parallel_collections=dict(type="int", default=4),
            member=dict(type="str"),
            max_lag_seconds=dict(type="int"),
            engine=dict(type="str", default="native", choices=["native", "mongodump"]),
            mongodump_path=dict(type="path"),
            allow_empty=dict(type="bool", default=False),
            force=dict(type="bool", default=False),
            lock_timeout=dict(type="int", default=60),
            create_parent=dict(type="bool", default=False),
        ),
        mutually_exclusive=[["path", "archive"], ["query", "query_file"]],
        required_one_of=[["path", "archive"]],
        required_by={"collection": "db", "query": "collection", "query_file": "collection"},
        supports_check_mode=True,
    )
    changed, result = module.run(run_module, module)
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
