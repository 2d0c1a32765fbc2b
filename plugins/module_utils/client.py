# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pymongo clients built from module options, and the facts a backup records about a server.

No Ansible imports: the engine and the tests use this directly.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

try:
    import pymongo
    from pymongo import errors as pymongo_errors
    from pymongo.uri_parser import parse_uri
    PYMONGO_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by the module wrapper
    pymongo = None
    PYMONGO_IMPORT_ERROR = exc

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import (
    ConnectionFailure,
    InvalidOption,
)

READ_PREFERENCES = ("primary", "primaryPreferred", "secondary", "secondaryPreferred", "nearest")
AUTH_FAILED_CODES = (18,)  # AuthenticationFailed
_URI_CREDENTIALS = re.compile(r"(mongodb(?:\+srv)?://)[^@/]*@")


def redact(text, secrets=()):
    """Remove credentials from a message before anyone sees it."""
    text = _URI_CREDENTIALS.sub(r"\1********@", str(text))
    for secret in secrets:
        if secret:
            text = text.replace(secret, "********")
    return text


class ConnectionOptions:
    """What the connection doc fragment exposes, in engine terms."""

    def __init__(self, uri=None, login_host=None, login_port=None, login_user=None,
                 login_password=None, login_database=None, replica_set=None,
                 direct_connection=None, tls=False, tls_ca_file=None,
                 tls_certificate_key_file=None, tls_certificate_key_file_password=None,
                 tls_allow_invalid_hostnames=False, tls_allow_invalid_certificates=False,
                 read_preference=None, connect_timeout=10):
        self.uri = uri
        self.login_host = login_host
        self.login_port = login_port
        self.login_user = login_user
        self.login_password = login_password
        self.login_database = login_database
        self.replica_set = replica_set
        self.direct_connection = direct_connection
        self.tls = tls
        self.tls_ca_file = tls_ca_file
        self.tls_certificate_key_file = tls_certificate_key_file
        self.tls_certificate_key_file_password = tls_certificate_key_file_password
        self.tls_allow_invalid_hostnames = tls_allow_invalid_hostnames
        self.tls_allow_invalid_certificates = tls_allow_invalid_certificates
        self.read_preference = read_preference
        self.connect_timeout = connect_timeout

    @classmethod
    def from_params(cls, params):
        names = cls.__init__.__code__.co_varnames[1:cls.__init__.__code__.co_argcount]
        return cls(**dict((name, params.get(name)) for name in names if params.get(name) is not None))

    @property
    def secrets(self):
        return [s for s in (self.login_password, self.tls_certificate_key_file_password,
                            self._uri_password()) if s]

    def _uri_password(self):
        if not self.uri:
            return None
        match = re.match(r"mongodb(?:\+srv)?://[^:@/]*:([^@/]*)@", self.uri)
        return match.group(1) if match else None

    def describe_target(self):
        """host:port list for messages; never includes credentials."""
        if self.uri:
            try:
                nodes = parse_uri(self.uri, warn=True)["nodelist"]
                return ",".join("%s:%s" % node for node in nodes)
            except Exception:  # malformed URIs are reported by connect()
                return redact(self.uri.split("?")[0], self.secrets)
        return "%s:%s" % (self.login_host or "localhost", self.login_port or 27017)

    def client_kwargs(self):
        """Keyword arguments for MongoClient (credentials passed here, never in a URI string)."""
        timeout_ms = int(self.connect_timeout * 1000)
        kwargs = dict(connectTimeoutMS=timeout_ms, serverSelectionTimeoutMS=timeout_ms,
                      appname="dbops.mongodb_backup")
        if self.login_user is not None:
            kwargs["username"] = self.login_user
        if self.login_password is not None:
            kwargs["password"] = self.login_password
        if self.login_database:
            kwargs["authSource"] = self.login_database
        elif self.login_user and not self.uri:
            kwargs["authSource"] = "admin"
        if self.replica_set:
            kwargs["replicaSet"] = self.replica_set
        if self.direct_connection is not None:
            kwargs["directConnection"] = self.direct_connection
        if self.read_preference:
            kwargs["readPreference"] = self.read_preference
        if self.tls:
            kwargs["tls"] = True
            if self.tls_ca_file:
                kwargs["tlsCAFile"] = self.tls_ca_file
            if self.tls_certificate_key_file:
                kwargs["tlsCertificateKeyFile"] = self.tls_certificate_key_file
            if self.tls_certificate_key_file_password:
                kwargs["tlsCertificateKeyFilePassword"] = self.tls_certificate_key_file_password
            if self.tls_allow_invalid_hostnames:
                kwargs["tlsAllowInvalidHostnames"] = True
            if self.tls_allow_invalid_certificates:
                kwargs["tlsAllowInvalidCertificates"] = True
        return kwargs


def _check_pymongo():
    if pymongo is None:
        raise ConnectionFailure(
            "the Python library pymongo is not installed on the host running the module (%s); "
            "install the collection's requirements.txt there" % PYMONGO_IMPORT_ERROR)


PINNED_DROPPED_OPTIONS = ("replicaset", "directconnection", "readpreference")


def pinned_kwargs(options):
    """MongoClient keyword arguments for a direct connection to one replica-set member.

    Same credentials, TLS and URI options as the connection options, without the ones
    that would make pymongo discover the replica set again.
    """
    kwargs = {}
    if options.uri:
        # Keep the URI's credentials and options (authSource, tls...) for the pinned client.
        parsed = parse_uri(options.uri)
        kwargs.update(dict(parsed["options"]))
        if parsed.get("username") is not None:
            kwargs.update(username=parsed["username"], password=parsed["password"])
    kwargs.update(options.client_kwargs())
    for key in list(kwargs):
        if key.lower() in PINNED_DROPPED_OPTIONS:
            del kwargs[key]
    kwargs.update(directConnection=True, readPreference="secondaryPreferred")
    return kwargs


def connect(options, pinned_host=None, **overrides):
    """A connected, authenticated MongoClient, or a ConnectionFailure that says why.

    ``pinned_host`` ("host:port") connects to that one member only, with the same credentials.
    """
    _check_pymongo()
    if options.read_preference and options.read_preference not in READ_PREFERENCES:
        raise InvalidOption("read_preference %r is not one of %s" % (
            options.read_preference, ", ".join(READ_PREFERENCES)))
    target = pinned_host or options.describe_target()
    kwargs = pinned_kwargs(options) if pinned_host else options.client_kwargs()
    kwargs.update(overrides)
    try:
        if pinned_host:
            address, _sep, port = pinned_host.rpartition(":")
            client = pymongo.MongoClient(address.strip("[]"), int(port), **kwargs)
        elif options.uri:
            client = pymongo.MongoClient(options.uri, **kwargs)
        else:
            client = pymongo.MongoClient(options.login_host or "localhost",
                                         int(options.login_port or 27017), **kwargs)
    except OSError as exc:  # pymongo opens the TLS files while validating the options
        raise ConnectionFailure(
            "cannot read %s for the TLS connection to %s: %s; check tls_ca_file and "
            "tls_certificate_key_file" % (exc.filename, target, exc.strerror or exc))
    except (pymongo_errors.InvalidURI, pymongo_errors.ConfigurationError, ValueError, TypeError) as exc:
        raise ConnectionFailure(
            "malformed connection settings for %s: %s; check uri (mongodb://host:port/?options, "
            "special characters in user names and passwords percent-escaped) and the TLS options"
            % (target, redact(exc, options.secrets)))
    try:
        # ping forces server selection, the TLS handshake and authentication now.
        client.admin.command("ping")
    except Exception as exc:
        client.close()
        raise translate_connection_error(exc, options, target)
    return client


def translate_connection_error(exc, options, target):
    """Map a pymongo failure at connect time to a message an operator can act on."""
    cause = redact(exc, options.secrets)
    if isinstance(exc, pymongo_errors.OperationFailure) and exc.code in AUTH_FAILED_CODES:
        return ConnectionFailure(
            "authentication as user %r (auth database %r) failed on %s: %s; check login_user, "
            "login_password and login_database" % (
                options.login_user or _uri_user(options.uri), options.login_database or "admin",
                target, cause))
    text = str(exc).lower()
    if any(word in text for word in ("ssl", "tls", "certificate", "handshake")) or (
            options.tls and isinstance(exc, pymongo_errors.ServerSelectionTimeoutError)):
        return ConnectionFailure(
            "TLS connection to %s failed: %s; check that the server accepts TLS on that port, "
            "tls_ca_file, tls_certificate_key_file and that the server's certificate matches its "
            "host name" % (target, cause))
    if isinstance(exc, pymongo_errors.ConfigurationError):
        return ConnectionFailure("cannot connect to %s: %s; check replica_set and uri options"
                                 % (target, cause))
    if isinstance(exc, pymongo_errors.ServerSelectionTimeoutError):
        return ConnectionFailure(
            "cannot reach MongoDB at %s within %ss: %s; check the host, the port, firewalls and "
            "that mongod/mongos is running" % (target, options.connect_timeout, cause))
    return ConnectionFailure("cannot connect to %s: %s" % (target, cause))


def _uri_user(uri):
    if not uri:
        return None
    match = re.match(r"mongodb(?:\+srv)?://([^:@/]*)[:@]", uri)
    return match.group(1) if match and "@" in uri else None


def server_facts(client):
    """Version and topology of the server the client talks to."""
    hello = client.admin.command("hello")
    build = client.admin.command("buildInfo")
    if hello.get("msg") == "isdbgrid":
        topology, member_state = "sharded", "mongos"
    elif hello.get("setName"):
        topology = "replicaset"
        if hello.get("isWritablePrimary") or hello.get("ismaster"):
            member_state = "PRIMARY"
        elif hello.get("secondary"):
            member_state = "SECONDARY"
        elif hello.get("arbiterOnly"):
            member_state = "ARBITER"
        else:
            member_state = "OTHER"
    else:
        topology, member_state = "standalone", "standalone"
    address = client.address
    facts = {
        "version": build.get("version"),
        "version_array": list(build.get("versionArray") or [])[:3],
        "git_version": build.get("gitVersion"),
        "topology": topology,
        "member_state": member_state,
        "replica_set": hello.get("setName"),
        "hidden": bool(hello.get("hidden")),
        "address": "%s:%s" % address if address else None,
        "hosts": list(hello.get("hosts") or []),
        "max_wire_version": hello.get("maxWireVersion"),
        "flavor": "ferretdb" if build.get("ferretdbVersion") else "mongodb",
    }
    if build.get("ferretdbVersion"):
        facts["ferretdb_version"] = build["ferretdbVersion"]
    return facts
