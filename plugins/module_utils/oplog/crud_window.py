# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A window of CRUD entries reduced to one final state per document, so a batch becomes a few bulk writes."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from collections import OrderedDict

from ansible_collections.dbops.mongodb_backup.plugins.module_utils import errors
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import diff
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog.rules import hashable_key
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog.writes import DELETED


class _Item:
    """One CRUD op of the window: the op itself and the top-level entry it came from."""

    __slots__ = ("top", "entry", "namespace", "key", "id_value")

    def __init__(self, top, entry, id_value):
        self.top = top
        self.entry = entry
        self.namespace = entry["ns"]
        self.key = (entry["ns"], hashable_key(id_value))
        self.id_value = id_value


class CrudWindow:
    """Consecutive CRUD ops resolved in memory, in oplog order, into one state per document.

    Only updates in diff or modifier form need the current document. The first op of the window
    that touches a document decides: when it is such an update, the document is fetched (all of
    them in one query per namespace); otherwise the op itself gives the state. Later ops on that
    document then apply to the pending state, so per-document order is kept and the final state
    equals applying the ops one by one.
    """

    def __init__(self):
        self.items = []

    def __len__(self):
        return len(self.items)

    def add(self, top, entry, id_value):
        self.items.append(_Item(top, entry, id_value))

    def ids_to_fetch(self):
        """{namespace: [_id, ...]} of documents whose first op in the window is an update by diff."""
        seen, wanted = set(), OrderedDict()
        for item in self.items:
            if item.key in seen:
                continue
            seen.add(item.key)
            if item.entry["op"] == "u" and "_id" not in item.entry["o"]:
                wanted.setdefault(item.namespace, []).append(item.id_value)
        return wanted

    def resolve(self, fetched):
        """Apply the window to ``fetched`` ({key: document}) in memory.

        Returns (states, steps, missing, failure): ``states`` {key: (item, state)} the final state
        per document in order of first touch; ``steps`` [(index, state)] each op's own result;
        ``missing`` indexes of updates whose document does not exist; ``failure`` (index, error)
        for an update that cannot be applied (resolution stops there).
        """
        states, steps, missing = OrderedDict(), [], []
        for index, item in enumerate(self.items):
            op, update = item.entry["op"], item.entry.get("o")
            if op == "i":
                state = update
            elif op == "d":
                state = DELETED
            elif "_id" in update:
                state = update  # a replacement upserts, whatever existed
            else:
                base = states[item.key][1] if item.key in states else fetched.get(item.key)
                if base is None or base is DELETED:
                    if not item.entry.get("b"):
                        # The document is gone on the target: a later entry of this oplog deletes or
                        # recreates it (the source logged this update before that), so the final
                        # state does not depend on it. Applying it to nothing would invent a document.
                        missing.append(index)
                        continue
                    base = {"_id": item.id_value}  # b: true is an upsert
                try:
                    state = diff.apply_update(base, update)
                except errors.DiffError as exc:
                    return states, steps, missing, (index, exc)
            states[item.key] = (item, state)
            steps.append((index, state))
        return states, steps, missing, None
