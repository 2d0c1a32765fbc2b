# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An order-independent content hash of a collection's documents.

Each raw BSON document is hashed on its own with BLAKE2b (16-byte digest, read as a little-endian
integer) and the digests are added modulo 2^128. The sum does not depend on the order in which the
documents arrive (a dump reads in natural order, a verification reads a restored copy in whatever
order the server returns), changes when any single document changes, and, unlike an XOR, does not
cancel out two equal documents. The dump computes it while it streams the batches to the .bson
file, so the backup is read once; a verification computes it again from the restored collection.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import struct

ALGORITHM = "blake2b-128-sum"
DESCRIPTION = "sum of per-document blake2b-128 digests (little-endian) mod 2^128, hex"
_MODULUS = 1 << 128
_INT32 = struct.Struct("<i")


class ContentHash:
    """Feed raw batches (concatenated BSON documents); ``documents`` counts them."""

    def __init__(self):
        self.documents = 0
        self._total = 0

    def update(self, raw_batch):
        """Add every document of ``raw_batch``; returns how many it held."""
        view = memoryview(raw_batch)
        position, end, count, total = 0, len(view), 0, 0
        blake2b, from_bytes, unpack_from = hashlib.blake2b, int.from_bytes, _INT32.unpack_from
        while position < end:
            size = unpack_from(view, position)[0]
            total += from_bytes(blake2b(view[position:position + size], digest_size=16).digest(), "little")
            position += size
            count += 1
        self._total += total  # reduced only when read: the sum of a batch fits easily in a Python int
        self.documents += count
        return count

    def hexdigest(self):
        return "%032x" % (self._total % _MODULUS)

    def record(self):
        """The manifest's ``content_hash`` field."""
        return {"algorithm": ALGORITHM, "value": self.hexdigest()}
