"""Expose the checkout as ``ansible_collections.dbops.mongodb_backup``.

The repository root is the collection; Ansible and the tests import it through the
``ansible_collections`` namespace, so we link it under ``.cache/collections`` (the
``collections_path`` of ansible.cfg).
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS_DIR = os.path.join(ROOT, ".cache", "collections")


def expose():
    link = os.path.join(COLLECTIONS_DIR, "ansible_collections", "dbops", "mongodb_backup")
    if not os.path.islink(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(ROOT, link)
    if COLLECTIONS_DIR not in sys.path:
        sys.path.insert(0, COLLECTIONS_DIR)
    return COLLECTIONS_DIR
