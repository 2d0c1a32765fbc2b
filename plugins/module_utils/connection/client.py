# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pymongo clients built from module options, and the facts a backup records about a server.

No Ansible imports: the engine and the tests use this directly.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import ssl
import warnings

try:
    from urllib.parse import unquote, unquote_plus
except ImportError:  # pragma: no cover - Python 2 on an old managed node
    from urllib import unquote, unquote_plus

try:
    import pymongo
    from pymongo import errors as pymongo_errors
    from pymongo.uri_parser import parse_uri as _pymongo_parse_uri
    PYMONGO_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by the module wrapper
    pymongo = None
    PYMONGO_IMPORT_ERROR = exc

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import server_codes
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import (
    ConnectionFailure,
    InvalidOption,
)

READ_PREFERENCES = ("primary", "primaryPreferred", "secondary", "secondaryPreferred", "nearest")
MASK = "********"
# Seconds a server may take to answer one request (a batch, a write, a command) before the
# operation fails; large enough for a 16 MB getMore or an index build on a busy server.
DEFAULT_SOCKET_TIMEOUT = 300
_URI_SCHEME = re.compile(r"mongodb(?:\+srv)?://", re.IGNORECASE)
# Where pymongo puts the user name and password back into the URI it parses, stand-ins
# that cannot be mistaken for anyone's secret.
_PLACEHOLDER_USERINFO = "user:password"


def split_uri(uri):
    """(scheme, userinfo or None, rest) of a connection string, however malformed.

    The userinfo is everything between ``://`` and the LAST ``@``: an unescaped ``/``, ``?``,
    ``@`` or ``:`` in a password cannot move the split, so the whole secret is always found.
    """
    match = _URI_SCHEME.match(uri or "")
    if not match:
        return "", None, uri or ""
    scheme, rest = match.group(0), uri[match.end():]
    userinfo, at, hosts = rest.rpartition("@")
    if not at:
        return scheme, None, rest
    return scheme, userinfo, hosts


def uri_secrets(uri):
    """Every form in which a URI's credentials may show up in a driver message."""
    _scheme, userinfo, _rest = split_uri(uri)
    if not userinfo:
        return []
    password = userinfo.partition(":")[2]
    forms = [userinfo, password, unquote(password), unquote_plus(password)]
    return [form for form in forms if form]


def _redact_uri_userinfo(line):
    """mongodb://ANYTHING@host -> mongodb://********@host, up to the last @ of the line."""
    match = _URI_SCHEME.search(line)
    if not match:
        return line
    _userinfo, at, rest = line[match.end():].rpartition("@")
    if not at:
        return line
    return line[:match.end()] + MASK + "@" + rest


def redact(text, secrets=()):
    """Remove credentials from a message before anyone sees it.

    Known secrets go first (longest first, so a password is never half replaced), then the
    userinfo of any URI left in the text, whether or not that URI is well formed.
    """
    text = str(text)
    for secret in sorted(set(s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return "\n".join(_redact_uri_userinfo(line) for line in text.split("\n"))


def parse_uri(uri):
    """pymongo's parse of a connection string; a malformed one raises ConnectionFailure whose
    message never quotes the user name or password, whichever character broke the parse."""
    _check_pymongo()
    cause = None
    try:
        with warnings.catch_warnings():  # pymongo's warnings quote the URI, password included
            warnings.simplefilter("ignore")
            return _pymongo_parse_uri(uri)
    except (pymongo_errors.InvalidURI, pymongo_errors.ConfigurationError, ValueError, TypeError) as exc:
        cause = exc
    scheme, userinfo, rest = split_uri(uri)
    target = describe_uri_hosts(uri)
    if userinfo is None:
        raise ConnectionFailure(
            "malformed connection settings for %s: %s; check uri (mongodb://host:port/?options)"
            % (target, redact(cause)))
    # Same URI with harmless credentials: if that parses, the credentials were the problem.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _pymongo_parse_uri(scheme + _PLACEHOLDER_USERINFO + "@" + rest)
    except (pymongo_errors.InvalidURI, pymongo_errors.ConfigurationError, ValueError, TypeError) as exc:
        raise ConnectionFailure(
            "malformed connection settings for %s: %s; check uri (mongodb://host:port/?options)"
            % (target, redact(exc, uri_secrets(uri))))
    raise ConnectionFailure(
        "malformed connection settings for %s: the user name or password in uri holds a character "
        "that must be percent-escaped (: / ? # [ ] @ %% or a space); escape them with "
        "urllib.parse.quote_plus, or pass them as login_user and login_password instead" % target)


def describe_uri_hosts(uri):
    """The host list of a connection string, for messages: never its credentials or options."""
    scheme, _userinfo, rest = split_uri(uri)
    if scheme.lower() == "mongodb://":  # an SRV name would need a DNS query: shown as written
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                nodes = _pymongo_parse_uri(uri)["nodelist"]
            return ",".join("%s:%s" % node for node in nodes)
        except Exception:  # malformed: reported by parse_uri; the hosts as written will do
            pass
    hosts = re.split(r"[/?]", rest, maxsplit=1)[0]
    return hosts or "(no host in uri)"


class ConnectionOptions:
    """What the connection doc fragment exposes, in engine terms."""

    def __init__(self, uri=None, login_host=None, login_port=None, login_user=None,
                 login_password=None, login_database=None, replica_set=None,
                 direct_connection=None, tls=False, tls_ca_file=None,
                 tls_certificate_key_file=None, tls_certificate_key_file_password=None,
                 tls_allow_invalid_hostnames=False, tls_allow_invalid_certificates=False,
                 read_preference=None, connect_timeout=10, socket_timeout=DEFAULT_SOCKET_TIMEOUT):
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
        self.socket_timeout = socket_timeout

    @classmethod
    def from_params(cls, params):
        names = cls.__init__.__code__.co_varnames[1:cls.__init__.__code__.co_argcount]
        return cls(**dict((name, params.get(name)) for name in names if params.get(name) is not None))

    @property
    def secrets(self):
        return [s for s in [self.login_password, self.tls_certificate_key_file_password]
                + uri_secrets(self.uri) if s]

    def describe_target(self):
        """host:port list for messages; never includes credentials."""
        if self.uri:
            return describe_uri_hosts(self.uri)
        return "%s:%s" % (self.login_host or "localhost", self.login_port or 27017)

    def client_kwargs(self):
        """Keyword arguments for MongoClient (credentials passed here, never in a URI string)."""
        timeout_ms = int(self.connect_timeout * 1000)
        kwargs = dict(connectTimeoutMS=timeout_ms, serverSelectionTimeoutMS=timeout_ms,
                      socketTimeoutMS=socket_timeout_ms(self.socket_timeout),
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


def socket_timeout_ms(seconds):
    """socketTimeoutMS for ``socket_timeout`` seconds; 0 turns the bound off, as in pymongo."""
    if seconds is None:
        seconds = DEFAULT_SOCKET_TIMEOUT
    if seconds < 0:
        raise InvalidOption("socket_timeout must be 0 (no limit) or a number of seconds, not %r"
                            % (seconds,))
    return int(seconds * 1000)


def _stall_kinds():
    """The driver errors that mean the server stopped answering, with what each one measured."""
    if pymongo_errors is None:
        return ()
    kinds = [(pymongo_errors.NetworkTimeout, "no reply within socket_timeout"),
             (pymongo_errors.ExecutionTimeout, "the server's own time limit for the operation ran out")]
    cancelled = getattr(pymongo_errors, "_OperationCancelled", None)  # pymongo >= 4.9
    if cancelled is not None:
        kinds.append((cancelled, "the driver's heartbeat got no reply within connect_timeout and "
                                 "cancelled the request"))
    kinds.append((pymongo_errors.ServerSelectionTimeoutError,
                  "the server could not be reached again within connect_timeout"))
    return kinds


def is_timeout(exc):
    """True when the server did not answer in time (a hung or overloaded server)."""
    return any(isinstance(exc, kind) for kind, _what in _stall_kinds())


def driver_error_cause(exc):
    """A driver error in words; a stall says that the server stopped answering and what to do."""
    for kind, what in _stall_kinds():
        if isinstance(exc, kind):
            return ("the server stopped answering (%s: %s: %s); check that it is running and not "
                    "overloaded, or raise socket_timeout when single requests legitimately take longer"
                    % (what, type(exc).__name__, exc))
    return str(exc)


def check_tls_files(options):
    """Load the TLS files as the driver will, and say which one is wrong, why, and what to give.

    Without this, a CA file that is not PEM surfaces as "cannot read None" (the ssl module's
    errors carry no file name).
    """
    if not options.tls:
        return
    context = ssl.create_default_context()
    if options.tls_ca_file:
        try:
            context.load_verify_locations(cafile=options.tls_ca_file)
        except ssl.SSLError as exc:
            raise ConnectionFailure(
                "tls_ca_file %s holds no PEM certificate (%s); give the PEM file (-----BEGIN "
                "CERTIFICATE----- blocks) of the certificate authority that signed the server's "
                "certificate" % (options.tls_ca_file, exc.reason or exc))
        except OSError as exc:
            raise ConnectionFailure(
                "tls_ca_file %s cannot be read: %s; give the path of a PEM file on the host that "
                "runs the module" % (options.tls_ca_file, exc.strerror or exc))
    if options.tls_certificate_key_file:
        try:
            context.load_cert_chain(options.tls_certificate_key_file,
                                    password=options.tls_certificate_key_file_password or None)
        except ssl.SSLError as exc:
            raise ConnectionFailure(
                "tls_certificate_key_file %s cannot be loaded as a PEM client certificate with its "
                "private key (%s); give one PEM file holding both, and "
                "tls_certificate_key_file_password when the key is encrypted"
                % (options.tls_certificate_key_file, redact(exc.reason or exc, options.secrets)))
        except OSError as exc:
            raise ConnectionFailure(
                "tls_certificate_key_file %s cannot be read: %s; give the path of a PEM file on the "
                "host that runs the module" % (options.tls_certificate_key_file, exc.strerror or exc))


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
    if options.uri:
        parse_uri(options.uri)  # a malformed URI is reported without its credentials
    check_tls_files(options)
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
            "tls_certificate_key_file (or the tls options in uri)"
            % (exc.filename or "the TLS files", target, exc.strerror or exc))
    except (pymongo_errors.InvalidURI, pymongo_errors.ConfigurationError, ValueError, TypeError) as exc:
        raise ConnectionFailure(
            "malformed connection settings for %s: %s; check uri (mongodb://host:port/?options, "
            "special characters in user names and passwords percent-escaped), the TLS options and "
            "the timeouts" % (target, redact(exc, options.secrets)))
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
    if isinstance(exc, pymongo_errors.OperationFailure) and exc.code == server_codes.AUTHENTICATION_FAILED:
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
    _scheme, userinfo, _rest = split_uri(uri)
    return unquote_plus(userinfo.partition(":")[0]) if userinfo else None


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
