#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: mongodb_oplog_archive
short_description: Archive new oplog entries of a replica set into slice files
version_added: "1.0.0"
description:
  - Copies the oplog entries written since the last archived one (from the backup catalog, or from
    the end of a given full backup) up to the majority-committed last write, into slice files of at
    most O(slice_span_minutes) each, compressed, each recorded in the catalog of O(backup_root) with
    its sha256 and timestamp range.
  - Meant to run every few minutes (AWX schedule or cron). Running it again soon after captures only
    what is new; a killed run leaves no half slice in the catalog.
  - One run per replica set at a time. A run holds an exclusive lock on
    C(<backup_root>/oplog-archive.<replica set>.lock) (mode 0600); a second run waits up to
    O(lock_timeout) for it, then continues from where the first one stopped, or fails naming the lock.
    The catalog also refuses a slice that overlaps recorded ones.
  - Detects a gap. When the oldest entry still in the oplog is newer than the last archived one,
    entries were lost; the gap is recorded in the catalog, so restorable windows are reported
    correctly, and the task fails advising a new full backup.
extends_documentation_fragment:
  - dbops.mongodb_backup.connection
  - dbops.mongodb_backup.attributes
  - dbops.mongodb_backup.attributes.platform
attributes:
  check_mode:
    support: full
    details:
      - Reports the range and the number of entries a real run would archive (up to the same end); writes
        nothing and takes no lock. Invalid options fail in check mode too.
  diff_mode:
    support: none
options:
  backup_root:
    description:
      - Directory holding the backups and the catalog; slices go to C(<backup_root>/oplog/<replica set>/).
      - The replica set is the one the server reports (or O(replica_set)).
    type: path
    required: true
  slice_span_minutes:
    description: Longest time span of one slice file.
    type: int
    default: 10
  compression:
    description: Compression of the slice files.
    type: str
    choices: [gzip, zstd, none]
    default: gzip
  compression_level:
    description:
      - Compression level, gzip 1 to 9, zstd -131072 to 22 (negative levels are zstd's fast levels, 20 to 22
        need much more memory); the library default (gzip 6, zstd 3) when not set.
      - Checked before connecting, in check mode too. Not allowed with O(compression=none).
    type: int
  lock_timeout:
    description:
      - How long to wait for another archive run of the same replica set to finish before failing.
    type: int
    default: 60
  start_from_backup:
    description:
      - Start at the end of the oplog of this full backup (directory or archive) instead of the
        catalog's last archived timestamp. For the first run after a full backup that is not in the catalog.
    type: path
notes:
  - Directories it creates (C(<backup_root>/oplog) and the replica set's) are mode 0700 and slice files 0600,
    whatever the umask.
  - Reads the member M(dbops.mongodb_backup.mongodb_dump) would read for the same settings, the primary unless
    O(read_preference) (or the C(readPreference) of O(uri)) asks for a secondary. The oplog must be readable by
    the user (the C(backup) role can read it).
author:
  - dbops.mongodb_backup contributors (!UNKNOWN)
'''

EXAMPLES = r'''
- name: Archive the oplog every few minutes (schedule this task)
  dbops.mongodb_backup.mongodb_oplog_archive:
    login_host: db1.example.com
    login_user: backup
    login_password: "{{ vault_mongodb_backup_password }}"
    read_preference: secondaryPreferred
    backup_root: /srv/backups/mongodb/rs0
    compression: zstd
'''

RETURN = r'''
replica_set:
  description: The replica set archived.
  returned: always
  type: str
  sample: rs0
start:
  description: The last archived timestamp this run started from (inclusive).
  returned: always
  type: str
  sample: "1714521600:1"
end:
  description: The majority-committed timestamp this run archived up to (inclusive).
  returned: always
  type: str
  sample: "1714522200:4"
end_source:
  description: Where the end came from (hello.lastWrite, replSetGetStatus, or the newest entry).
  returned: always
  type: str
  sample: hello.lastWrite.majorityOpTime
slices:
  description: The slice files written, with their range, entries, size and sha256.
  returned: always
  type: list
  elements: dict
  sample: [{"first_ts": "1714521600:1", "last_ts": "1714522200:4", "entries": 5120,
            "file": "oplog/rs0/1714521600-1_1714522200-4.bson.gz", "bytes": 210233, "sha256": "9f2c..."}]
entries:
  description:
    - Oplog entries written (slices repeat their predecessor's last entry).
    - In check mode, the entries newer than RV(start) up to RV(end) that a real run would archive.
  returned: always
  type: int
  sample: 5120
bytes:
  description: Bytes written to disk.
  returned: always
  type: int
  sample: 210233
lock:
  description: The lock file this run held, so that no other run archived the same replica set at the same time.
  returned: when not in check mode
  type: str
  sample: /srv/backups/mongodb/rs0/oplog-archive.rs0.lock
lock_waited_seconds:
  description: How long this run waited for another run of the same replica set to finish.
  returned: when not in check mode
  type: float
  sample: 0.0
member:
  description: The replica-set member or server (host:port) the data was read from.
  returned: success
  type: str
  sample: db2.example.com:27017
duration_seconds:
  description: Wall-clock seconds the task spent on its work.
  returned: when something was archived
  type: float
  sample: 0.8
entries_per_second:
  description: Archiving rate.
  returned: when something was archived
  type: float
  sample: 25000.0
mb_per_second:
  description: Throughput in megabytes (10^6 bytes) on disk per second.
  returned: when something was archived
  type: float
  sample: 1.05
'''

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.module import MongoDBModule
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import members
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import archiver


def run_module(module):
    params = module.params
    options = archiver.ArchiveOptions(
        params["backup_root"], replica_set=params["replica_set"], span_seconds=params["slice_span_minutes"] * 60,
        compression=params["compression"], compression_level=params["compression_level"],
        start_from_backup=params["start_from_backup"], lock_timeout=params["lock_timeout"])
    connection = module.connection_options
    client = client_utils.connect(connection)
    try:
        server = client_utils.server_facts(client)
        reader, member, _selection = members.reader_client(
            client, connection, members.reads_from_secondary(client))
        try:
            changed, result = archiver.archive_oplog(reader, options, server, check_mode=module.check_mode)
        finally:
            if reader is not client:
                reader.close()
        result["member"] = member
        return changed, result
    finally:
        client.close()


def main():
    module = MongoDBModule(
        argument_spec=dict(
            backup_root=dict(type="path", required=True),
            slice_span_minutes=dict(type="int", default=10),
            compression=dict(type="str", default="gzip", choices=["gzip", "zstd", "none"]),
            compression_level=dict(type="int"),
            start_from_backup=dict(type="path"),
            lock_timeout=dict(type="int", default=60),
        ),
        supports_check_mode=True,
    )
    changed, result = module.run(run_module, module)
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
