# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every snapshot of a snapshot set carries, whatever the cloud: the facts and how each cloud spells them.

A snapshot set is the snapshots taken of one member's volumes (or disks) at one instant. Every snapshot
of the set carries the same facts, so a set can be found again by its label alone (idempotency,
deletion, restore) and says which replica set or shard it holds and the newest oplog time at the lock
(where a point-in-time restore starts replaying).

EBS tags allow almost any text; GCE labels allow only lowercase letters, digits, ``_`` and ``-``, at
most 63 characters, so a GCE label value is a lossless-enough spelling of the fact (see ``gce_value``),
and the exact facts also go into the snapshot's description.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import uuid

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.timestamps import ts_key, ts_text
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import InvalidOption
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical.dump_options import check_label

# fact name -> EBS tag key. The set id and the label are what a set is found by.
AWS_TAG_KEYS = {
    "label": "dbops:backup-label",
    "snapshot_set": "dbops:snapshot-set",
    "replica_set": "dbops:replica-set",
    "shard": "dbops:shard",
    "oplog_ts": "dbops:oplog-ts",
}
# fact name -> GCE label key (lowercase letters, digits, _ and - only).
GCE_LABEL_KEYS = {
    "label": "dbops-backup-label",
    "snapshot_set": "dbops-snapshot-set",
    "replica_set": "dbops-replica-set",
    "shard": "dbops-shard",
    "oplog_ts": "dbops-oplog-ts",
}
GCE_VALUE_MAX = 63
_GCE_INVALID = re.compile(r"[^a-z0-9_-]")


def new_set_id():
    """A fresh snapshot-set id (32 hex digits)."""
    return uuid.uuid4().hex


def snapshot_facts(label, snapshot_set=None, replica_set=None, shard=None, oplog_ts=None):
    """The facts of one snapshot set, validated; ``oplog_ts`` as ``"secs:inc"`` (or anything ts_text takes)."""
    if not label:
        raise InvalidOption("a snapshot set needs a label: it is how the set is found again (idempotency, "
                            "deletion, restore); set label")
    check_label(label)
    facts = {"label": label, "snapshot_set": snapshot_set or new_set_id(), "replica_set": replica_set,
             "shard": shard, "oplog_ts": ts_text(ts_key(oplog_ts)) if oplog_ts is not None else None}
    return dict((key, value) for key, value in facts.items() if value is not None)


def gce_value(text):
    """A fact spelled as a GCE label value: lowercase, every other character ``-``, at most 63 characters.

    ``"Nightly.2026:5+1"`` becomes ``"nightly-2026-5-1"``. Two labels that differ only in case or punctuation
    share one spelling; ``check_gce_label`` refuses a label that does not survive unchanged, so idempotency by
    label can never match another backup's snapshots.
    """
    return _GCE_INVALID.sub("-", str(text).lower())[:GCE_VALUE_MAX]


def check_gce_label(label):
    if gce_value(label) != label:
        raise InvalidOption("label %r cannot be a GCE label value as it is (GCE allows lowercase letters, digits, "
                            "_ and -, at most %d characters); use %r" % (label, GCE_VALUE_MAX, gce_value(label)))


def aws_tags(facts, user_tags=None):
    """The EBS tags of a snapshot of the set: the user's tags, then the facts (which win)."""
    tags = dict(user_tags or {})
    tags.update((AWS_TAG_KEYS[name], str(value)) for name, value in facts.items())
    return tags


def gce_labels(facts, user_labels=None):
    """The GCE labels of a snapshot of the set: the user's labels, then the facts (which win)."""
    labels = dict(user_labels or {})
    labels.update((GCE_LABEL_KEYS[name], gce_value(value)) for name, value in facts.items())
    return labels


def facts_from_aws_tags(tags):
    """The facts read back from EBS tags (a dict, or boto3's list of Key/Value pairs)."""
    if isinstance(tags, list):
        tags = dict((tag["Key"], tag["Value"]) for tag in tags)
    return dict((name, tags[key]) for name, key in AWS_TAG_KEYS.items() if key in tags)


def facts_from_gce_labels(labels):
    """The facts read back from GCE labels (as spelled there: the oplog time is ``secs-inc``)."""
    return dict((name, labels[key]) for name, key in GCE_LABEL_KEYS.items() if key in (labels or {}))
