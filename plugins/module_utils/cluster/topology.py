# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shape of a sharded cluster as its mongos reports it, and how to reach each replica set of it.

The shard map comes from ``listShards`` (each shard's name and ``replicaSet/host,host`` string),
the config server replica set from ``getShardMap`` (its ``config`` entry). Each replica set is
reached with the mongos credentials unless the caller gives others: shard-local users differ from
cluster users in many deployments, so ``shard_uris`` (per replica set) and shard credentials win.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.cluster.mongos import require_mongos
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import ClusterError

CONFIG_SET = "config"  # the key of the config server replica set (MongoDB never names a shard "config")

# Connection-string options a shard connection keeps from the mongos URI (pymongo's lower-case keys).
_KEPT_URI_OPTIONS = (("authsource", "login_database"), ("tls", "tls"), ("tlscafile", "tls_ca_file"),
                     ("tlscertificatekeyfile", "tls_certificate_key_file"),
                     ("tlsallowinvalidhostnames", "tls_allow_invalid_hostnames"),
                     ("tlsallowinvalidcertificates", "tls_allow_invalid_certificates"))
_COPIED_ATTRIBUTES = ("login_user", "login_password", "login_database", "tls", "tls_ca_file",
                      "tls_certificate_key_file", "tls_certificate_key_file_password",
                      "tls_allow_invalid_hostnames", "tls_allow_invalid_certificates",
                      "connect_timeout", "socket_timeout")


class ReplicaSetInfo:
    """One replica set of the cluster: a shard, or the config servers (name CONFIG_SET)."""

    def __init__(self, name, connection_string):
        replica_set, sep, hosts = (connection_string or "").partition("/")
        if not sep:  # a standalone shard (no replica set): only the host list
            replica_set, hosts = None, connection_string or ""
        self.name = name
        self.replica_set = replica_set
        self.hosts = [host for host in hosts.split(",") if host]
        if not self.hosts:
            raise ClusterError("the mongos reports no hosts for %s (%r); check the cluster's shard "
                               "registration (listShards)" % (name, connection_string))

    @property
    def is_config(self):
        return self.name == CONFIG_SET

    def describe(self):
        return {"name": self.name, "replica_set": self.replica_set, "hosts": list(self.hosts)}


def read_cluster(mongos_client, purpose):
    """{"shards": [ReplicaSetInfo], "config": ReplicaSetInfo, "version": str} from a mongos."""
    require_mongos(mongos_client, purpose)
    shards = mongos_client.admin.command("listShards").get("shards") or []
    if not shards:
        raise ClusterError("the mongos reports no shard (listShards is empty); %s needs a cluster with "
                           "at least one shard" % purpose)
    shard_map = mongos_client.admin.command("getShardMap").get("map") or {}
    if CONFIG_SET not in shard_map:
        raise ClusterError("the mongos does not report the config server replica set (getShardMap has "
                           "no config entry); check that it is a mongos of MongoDB 4.2 or later")
    version = mongos_client.admin.command("buildInfo").get("version")
    return {
        "shards": sorted((ReplicaSetInfo(shard["_id"], shard.get("host")) for shard in shards),
                         key=lambda info: info.name),
        "config": ReplicaSetInfo(CONFIG_SET, shard_map[CONFIG_SET]),
        "version": version,
    }


def replica_set_connection(mongos_options, info, shard_uris=None, login_user=None, login_password=None):
    """ConnectionOptions reaching one replica set of the cluster.

    ``shard_uris[info.name]`` wins when given; otherwise the hosts of the shard map, with
    ``login_user``/``login_password`` when given, else the mongos credentials and TLS settings.
    One host is connected to directly (a single-member set needs no discovery).
    """
    uri = (shard_uris or {}).get(info.name)
    if uri:
        return client_utils.ConnectionOptions(uri=uri, connect_timeout=mongos_options.connect_timeout,
                                              socket_timeout=mongos_options.socket_timeout)
    settings = dict((name, getattr(mongos_options, name)) for name in _COPIED_ATTRIBUTES)
    if mongos_options.uri:
        parsed = client_utils.parse_uri(mongos_options.uri)
        if parsed.get("username") is not None:
            settings.update(login_user=parsed["username"], login_password=parsed["password"])
        uri_options = dict((key.lower(), value) for key, value in parsed["options"].items())
        for key, attribute in _KEPT_URI_OPTIONS:
            if key in uri_options and not settings.get(attribute):
                settings[attribute] = uri_options[key]
    if login_user is not None:
        settings.update(login_user=login_user, login_password=login_password)
    if len(info.hosts) == 1:
        host, _sep, port = info.hosts[0].rpartition(":")
        settings.update(login_host=host.strip("[]") or info.hosts[0], login_port=int(port or 27017),
                        direct_connection=True)
    else:
        settings.update(uri="mongodb://%s/" % ",".join(info.hosts), replica_set=info.replica_set)
    return client_utils.ConnectionOptions(**dict((k, v) for k, v in settings.items() if v is not None))


def check_shard_uris(shard_uris, topology):
    """Every key of shard_uris names a shard of the cluster or the config servers."""
    known = set(info.name for info in topology["shards"]) | set([CONFIG_SET])
    unknown = sorted(set(shard_uris or {}) - known)
    if unknown:
        raise ClusterError("shard_uris names %s, which the cluster does not have (its shards: %s, and %s for "
                           "the config servers); fix the names; nothing was changed"
                           % (", ".join(unknown), ", ".join(sorted(known - set([CONFIG_SET]))), CONFIG_SET))
