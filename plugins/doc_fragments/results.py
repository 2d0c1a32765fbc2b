# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """Return values that several modules share, documented once here.

    ansible-core merges doc fragments into DOCUMENTATION only, never into RETURN, and reads RETURN
    as a literal string; so each module repeats the entries of C(RETURN) below that it returns,
    word for word, and tests/unit/test_doc_fragments.py fails when one drifts from this text.
    Change a shared return value here first, then in the modules the test names.
    """

    # Nothing to add to the options: a module names this fragment only through its RETURN entries.
    DOCUMENTATION = r'''
options: {}
'''

    RETURN = r'''
catalog:
  description: Path of the catalog file of O(backup_root).
  returned: always
  type: str
  sample: /backups/mongodb/catalog.json
backups:
  description:
    - The full backups in the catalog, oldest first. C(path) is relative to O(backup_root), C(absolute_path) is not.
    - C(oplog_start) and C(oplog_end) are C(secs:inc) timestamps, null for a backup without oplog.
    - C(bytes) is the size on disk, C(data_bytes) the uncompressed BSON size.
    - C(verified) is the last test restore of the backup (M(dbops.mongodb_backup.mongodb_backup_verify)), with
      C(ok), C(at), C(restore_seconds), C(mb_per_s), C(collections), C(documents), C(target_time),
      C(failures); null when it was never verified.
  returned: always
  type: list
  elements: dict
  sample: [{"label": "nightly-2024-05-01", "backup_id": "0b6f0f8e-2f63-4a43-9d0e-5b0d9a1b2c3d",
            "path": "db1/nightly-2024-05-01", "absolute_path": "/backups/mongodb/db1/nightly-2024-05-01",
            "format": "directory", "started_at": "2024-05-01T00:00:00.000000Z",
            "finished_at": "2024-05-01T00:03:12.000000Z", "replica_set": "rs0", "member": "db2:27017",
            "oplog_start": "1714521600:1", "oplog_end": "1714521792:7", "bytes": 20971520,
            "data_bytes": 73400320, "documents": 120000,
            "verified": {"ok": true, "at": "2024-05-01T01:00:00.000000Z", "restore_seconds": 95.2,
                         "mb_per_s": 0.77, "collections": 12, "documents": 120000, "target_time": null,
                         "failures": []},
            "age_seconds": 3600}]
member:
  description: The replica-set member or server (host:port) the data was read from.
  returned: success, not in check mode
  type: str
  sample: db2.example.com:27017
duration_seconds:
  description: Wall-clock seconds the task spent on its work.
  returned: success, not in check mode
  type: float
  sample: 12.5
'''
