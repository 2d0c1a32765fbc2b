# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What only a mongos can do, and the check that the connection is one."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import ClusterError


def is_mongos(hello):
    return hello.get("msg") == "isdbgrid"


def require_mongos(client, purpose):
    """The ``hello`` of the server ``client`` talks to; ClusterError unless it is a mongos."""
    hello = client.admin.command("hello")
    if is_mongos(hello):
        return hello
    address = "%s:%s" % client.address if client.address else "the server"
    if hello.get("setName"):
        kind = "a member of replica set %s (a shard, config server or plain replica set)" % hello["setName"]
    else:
        kind = "a standalone mongod"
    raise ClusterError("%s needs a mongos, but %s is %s; point the connection at a mongos of the cluster; "
                       "nothing was changed" % (purpose, address, kind))
