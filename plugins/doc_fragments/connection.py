# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Paired with CONNECTION_ARGUMENT_SPEC in plugins/module_utils/module.py: change both together.
    DOCUMENTATION = r'''
options:
  uri:
    description:
      - MongoDB connection string, for example C(mongodb://db1.example.com:27017,db2.example.com:27017/?replicaSet=rs0).
      - Credentials may be part of the URI, but O(login_user) and O(login_password) are preferred
        so the password is not part of a string that might be logged elsewhere.
      - Mutually exclusive with O(login_host), O(login_port) and O(replica_set).
    type: str
  login_host:
    description:
      - Host name or address of the server to connect to. Defaults to C(localhost) when O(uri) is not set.
    type: str
  login_port:
    description:
      - Port of the server. Defaults to C(27017) when O(uri) is not set.
    type: int
  login_user:
    description:
      - User to authenticate as.
    type: str
  login_password:
    description:
      - Password of O(login_user). Never written to logs, results or command lines.
    type: str
  login_database:
    description:
      - Authentication database of O(login_user) (the C(authSource)). Defaults to C(admin).
    type: str
  replica_set:
    description:
      - Name of the replica set to connect to. The driver discovers the other members.
    type: str
  direct_connection:
    description:
      - Connect to the given host only, without discovering the replica set.
      - When not set, the driver decides (direct for a single host without O(replica_set)).
    type: bool
  tls:
    description:
      - Use TLS for the connection.
    type: bool
    default: false
  tls_ca_file:
    description:
      - File with the certificate authorities that sign the server certificates.
    type: path
  tls_certificate_key_file:
    description:
      - File with the client certificate and its private key, for x.509 or mutual TLS.
    type: path
  tls_certificate_key_file_password:
    description:
      - Password that decrypts the private key in O(tls_certificate_key_file).
    type: str
  tls_allow_invalid_hostnames:
    description:
      - Accept a server certificate whose host name does not match. Only for test environments.
    type: bool
    default: false
  tls_allow_invalid_certificates:
    description:
      - Accept server certificates that do not validate. Only for test environments.
    type: bool
    default: false
  read_preference:
    description:
      - Which replica-set member reads go to, as C(mongodump --readPreference).
      - When unset, the C(readPreference) of O(uri) applies, and without one the primary, as for C(mongodump).
        Every module reads the same member for the same settings.
      - V(secondary), V(secondaryPreferred) and V(nearest) make the dump and the oplog archiver choose one member
        by health and lag (a hidden member first, else the least-lagging healthy secondary, else the primary);
        V(primary) and V(primaryPreferred) read the primary.
    type: str
    choices: [primary, primaryPreferred, secondary, secondaryPreferred, nearest]
  connect_timeout:
    description:
      - Seconds to wait for the server to answer when connecting and selecting a server.
    type: int
    default: 10
  socket_timeout:
    description:
      - Seconds to wait for the server to answer any one request once connected (a batch of
        documents, a write, a command such as an index build). A server that stops answering
        makes the task fail after this time with a message naming the step, instead of hanging.
      - The bound is per request, never for the whole run, so a long dump or restore is not
        affected; raise it only when single commands legitimately run longer, for example index
        builds on very large collections. V(0) waits forever.
      - The driver may retry a read or write once after a network error, so a stall can take up to
        about twice this time to be reported.
    type: int
    default: 300
requirements:
  - pymongo >= 4.6 on the host that runs the module
  - fastcrc >= 0.5 on the host that runs the module
notes:
  - Set the connection once for every module of the collection with C(module_defaults) and the
    action group C(group/dbops.mongodb_backup.mongodb).
'''
