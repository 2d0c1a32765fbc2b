# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""MongoDB server error codes the engine reacts to (src/mongo/base/error_codes.yml), named once."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

UNAUTHORIZED = 13
AUTHENTICATION_FAILED = 18
ILLEGAL_OPERATION = 20
NAMESPACE_NOT_FOUND = 26
INDEX_NOT_FOUND = 27
NAMESPACE_EXISTS = 48
MAX_TIME_MS_EXPIRED = 50
COMMAND_NOT_FOUND = 59
NO_REPLICATION_ENABLED = 76
COMMAND_NOT_SUPPORTED = 115
DUPLICATE_KEY = 11000

# A command the server does not have, or does not run on a standalone.
NOT_A_REPLICA_SET = (NO_REPLICATION_ENABLED, COMMAND_NOT_FOUND, COMMAND_NOT_SUPPORTED)
