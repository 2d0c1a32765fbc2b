# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which replica-set member a backup reads from, and a client pinned to it.

The choice is made from ``replSetGetStatus`` (health, state, optimes) and
``replSetGetConfig`` (hidden, delayed, arbiter, buildIndexes), as MongoDB 7/8 report them:

* a hidden secondary when one is configured and within ``max_lag_seconds``;
* otherwise the healthy secondary with the least replication lag (ties: the lower name);
* the primary only when there is no usable secondary at all and ``allow_primary`` is true.

No Ansible imports: the engine and the tests use this directly.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from collections import namedtuple

try:
    from pymongo import errors as pymongo_errors
    from pymongo.read_preferences import ReadPreference
except ImportError:  # pragma: no cover - reported by the module wrapper
    pymongo_errors = ReadPreference = None

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import server_codes
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import (
    ConnectionFailure, MemberSelectionError)

STATE_PRIMARY = 1
STATE_SECONDARY = 2
STATE_ARBITER = 7
READABLE_STATES = (STATE_PRIMARY, STATE_SECONDARY)
DEFAULT_PORT = 27017

Member = namedtuple("Member", [
    "name", "state", "state_str", "healthy", "optime", "hidden", "arbiter",
    "build_indexes", "delay", "lag",
])


def select_member(client, member=None, max_lag_seconds=None, prefer_hidden=True, allow_primary=True,
                  member_option=None):
    """The member to back up, as {host, state, hidden, lag_seconds, reason}.

    ``client`` is connected to any member of the set (it runs replSetGetStatus and
    replSetGetConfig, which need the clusterMonitor role). ``max_lag_seconds`` None means
    no limit. A ``member`` ("host:port", port 27017 when omitted) forces the choice: it must
    be in the set's configuration, healthy and PRIMARY or SECONDARY, and must build indexes;
    a delayed member may be forced. ``max_lag_seconds`` still applies to a forced member: the
    operator asked for both, and a backup silently older than the limit is worse than an
    error. The primary's lag is 0 by definition, so forcing the primary never trips it.

    Lag is the primary's optimeDate minus the member's (without a primary: the freshest healthy
    member's), in whole seconds. When no secondary qualifies at all, the primary is returned
    if ``allow_primary``; when secondaries qualify but all lag beyond the limit, the primary is
    not used: MemberSelectionError lists each lag. Unusable state raises MemberSelectionError;
    a lost connection raises ConnectionFailure.

    ``member_option`` is the ``member`` the user gave (default: ``member``), for the messages: a
    member chosen by the module (the primary, for read_preference primary) was not the user's.
    """
    status, config = read_replica_set(client, member if member_option is None else member_option)
    return choose_member(status, config, member=member, max_lag_seconds=max_lag_seconds,
                         prefer_hidden=prefer_hidden, allow_primary=allow_primary)


def read_replica_set(client, member_option=None):
    """(replSetGetStatus, replSetGetConfig["config"]) from the member the client talks to.

    primaryPreferred: a client to the whole set still gets an answer while there is no primary.
    ``member_option``: the ``member`` the user set, if any (it changes what the errors advise).
    """
    admin = client.get_database("admin", read_preference=ReadPreference.PRIMARY_PREFERRED)
    try:
        status = admin.command("replSetGetStatus")
        config = admin.command("replSetGetConfig")["config"]
    except pymongo_errors.OperationFailure as exc:
        raise _status_error(exc, client, member_option)
    except pymongo_errors.PyMongoError as exc:
        raise ConnectionFailure("cannot read the replica set status: %s; check that the members are "
                                "reachable from the host running the module" % exc)
    return status, config


def _status_error(exc, client, member_option):
    if exc.code == server_codes.UNAUTHORIZED:
        return MemberSelectionError(
            "not allowed to run replSetGetStatus/replSetGetConfig: %s; grant the backup user the "
            "clusterMonitor role (or backup plus clusterMonitor)" % exc)
    if exc.code in server_codes.NOT_A_REPLICA_SET and member_option:
        return MemberSelectionError(
            "the server is not a replica set member (%s); member selection applies to replica "
            "sets only, leave member unset (it is %r) for a standalone server or mongos" % (exc, member_option))
    if exc.code in server_codes.NOT_A_REPLICA_SET:
        address = "%s:%s" % client.address if client.address else "the server"
        return MemberSelectionError(
            "%s cannot report a replica set status (%s): it is not a replica set member this module "
            "can inspect, so no member can be chosen by health and lag (member is unset); connect to "
            "the server directly (directConnection=true in the URI, or direct_connection: true) to "
            "back it up as it is"
            % (address, exc))
    return MemberSelectionError("cannot read the replica set status: %s" % exc)


def choose_member(status, config, member=None, max_lag_seconds=None, prefer_hidden=True, allow_primary=True):
    """select_member's decision from already-read status and config documents."""
    members = _members(status, config)
    set_name = status.get("set") or config.get("_id") or "?"
    if member:
        return _forced(members, member, max_lag_seconds, set_name)
    candidates = [m for m in members if _is_candidate(m)]
    if not candidates:
        return _primary_fallback(members, allow_primary, set_name)
    return _preferred(candidates, members, max_lag_seconds, prefer_hidden)


def _members(status, config):
    """Status members joined with their configuration, each with its lag in seconds."""
    configured = dict((entry.get("_id"), entry) for entry in config.get("members") or [])
    by_host = dict((_normalize(entry.get("host")), entry) for entry in configured.values())
    raw = []
    for entry in status.get("members") or []:
        conf = configured.get(entry.get("_id")) or by_host.get(_normalize(entry.get("name"))) or {}
        raw.append((entry, conf))
    bearing = [entry for entry, conf in raw if _data_bearing(entry, conf)]
    reference = _reference_optime([_optime(entry) for entry in bearing],
                                  [_optime(entry) for entry in bearing if entry.get("state") == STATE_PRIMARY])
    return [_member(entry, conf, reference) for entry, conf in raw]


def _data_bearing(entry, conf):
    return _healthy(entry) and not conf.get("arbiterOnly") and entry.get("state") != STATE_ARBITER


def _healthy(entry):
    return entry.get("health") == 1


def _reference_optime(optimes, primary_optimes):
    """The primary's optime; without a primary, the freshest healthy member's."""
    for value in primary_optimes:
        if value is not None:
            return value
    known = [value for value in optimes if value is not None]
    return max(known) if known else None


def _optime(entry):
    """Seconds since the epoch of the member's last applied operation, or None."""
    date = entry.get("optimeDate")
    if date is not None and hasattr(date, "timestamp"):
        if date.tzinfo is None:  # bson decodes to naive UTC by default
            return (date - date.__class__(1970, 1, 1)).total_seconds()
        return date.timestamp()
    optime = entry.get("optime")
    stamp = optime.get("ts") if isinstance(optime, dict) else None
    return float(stamp.time) if stamp is not None and hasattr(stamp, "time") else None


def _member(entry, conf, reference):
    optime = _optime(entry)
    lag = None
    if optime is not None and reference is not None and _healthy(entry):
        lag = max(0, int(round(reference - optime)))
    return Member(
        name=entry.get("name") or conf.get("host"),
        state=entry.get("state"),
        state_str=entry.get("stateStr") or str(entry.get("state")),
        healthy=_healthy(entry),
        optime=optime,
        hidden=bool(conf.get("hidden")),
        arbiter=bool(conf.get("arbiterOnly")) or entry.get("state") == STATE_ARBITER,
        build_indexes=conf.get("buildIndexes", True) is not False,
        delay=int(conf.get("secondaryDelaySecs") or conf.get("slaveDelay") or 0),
        lag=lag,
    )


def _is_candidate(member):
    return (member.healthy and member.state == STATE_SECONDARY and not member.arbiter
            and member.build_indexes and not member.delay and member.lag is not None)


def _preferred(candidates, members, max_lag_seconds, prefer_hidden):
    fresh = [m for m in candidates if max_lag_seconds is None or m.lag <= max_lag_seconds]
    if not fresh:
        lagging = ", ".join("%s lags %ds" % (m.name, m.lag) for m in _by_lag(candidates))
        raise MemberSelectionError(
            "every secondary lags more than max_lag_seconds=%g: %s; wait for them to catch up, "
            "raise max_lag_seconds, or set member" % (max_lag_seconds, lagging))
    hidden = [m for m in fresh if m.hidden] if prefer_hidden else []
    if hidden:
        chosen = _by_lag(hidden)[0]
        return _result(chosen, "hidden secondary, preferred for backups (lag %ds)" % chosen.lag)
    chosen = _by_lag(fresh)[0]
    reason = "healthy secondary with the least replication lag (%ds)" % chosen.lag
    stale_hidden = [m for m in candidates if m.hidden and m not in fresh]
    if prefer_hidden and stale_hidden:
        reason += "; hidden %s skipped: lags more than max_lag_seconds=%g" % (
            ", ".join("%s (%ds)" % (m.name, m.lag) for m in stale_hidden), max_lag_seconds)
    skipped = _describe_excluded(members)
    if skipped:
        reason += "; not considered: %s" % skipped
    return _result(chosen, reason)


def _by_lag(members):
    return sorted(members, key=lambda m: (m.lag, m.name))


def _primary_fallback(members, allow_primary, set_name):
    excluded = _describe_excluded(members) or "no other members"
    primary = [m for m in members if m.healthy and m.state == STATE_PRIMARY]
    if not allow_primary:
        raise MemberSelectionError(
            "no healthy secondary in replica set %s to back up from (%s) and reading from the "
            "primary is not allowed; repair or add a secondary, allow the primary, or set member"
            % (set_name, excluded))
    if not primary:
        raise MemberSelectionError(
            "replica set %s has neither a healthy secondary nor a primary to back up from (%s); "
            "check the set's health (rs.status())" % (set_name, excluded))
    return _result(primary[0], "no healthy secondary; reading from the primary")


def _describe_excluded(members):
    """Why each non-candidate, non-primary member was left out, for messages."""
    notes = []
    for member in members:
        if _is_candidate(member) or (member.healthy and member.state == STATE_PRIMARY):
            continue
        notes.append("%s %s" % (member.name, _exclusion(member)))
    return ", ".join(notes)


def _exclusion(member):
    if not member.healthy:
        return "unreachable or unhealthy"
    if member.arbiter:
        return "is an arbiter"
    if member.state != STATE_SECONDARY:
        return "is %s" % member.state_str
    if member.delay:
        return "is delayed by %ds" % member.delay
    if not member.build_indexes:
        return "has buildIndexes: false"
    return "reports no optime"


def _forced(members, wanted, max_lag_seconds, set_name):
    key = _normalize(wanted)
    matches = [m for m in members if _normalize(m.name) == key]
    known = ", ".join("%s (%s)" % (m.name, m.state_str) for m in members)
    if not matches:
        raise MemberSelectionError(
            "member %s is not in the configuration of replica set %s; members: %s; set member to "
            "one of them as host:port" % (wanted, set_name, known))
    chosen = matches[0]
    problem = _forced_problem(chosen, max_lag_seconds)
    if problem:
        raise MemberSelectionError("cannot back up from member %s: %s; members: %s"
                                   % (chosen.name, problem, known))
    reason = "forced by the member option (lag %ds)" % chosen.lag
    if chosen.delay:
        reason += "; delayed member: its data is about %ds behind by design" % chosen.delay
    return _result(chosen, reason)


def _forced_problem(member, max_lag_seconds):
    if not member.healthy:
        return "it is unreachable or unhealthy"
    if member.arbiter:
        return "it is an arbiter and holds no data"
    if member.state not in READABLE_STATES:
        return "it is %s, not PRIMARY or SECONDARY" % member.state_str
    if not member.build_indexes:
        return "it has buildIndexes: false, so its index definitions are incomplete"
    if member.lag is None:
        return "it reports no optime, so its replication lag is unknown"
    if max_lag_seconds is not None and member.lag > max_lag_seconds:
        return "it lags %ds, more than max_lag_seconds=%g; raise or unset max_lag_seconds" % (
            member.lag, max_lag_seconds)
    return None


def _result(member, reason):
    return {
        "host": member.name,
        "state": member.state_str,
        "hidden": member.hidden,
        "lag_seconds": member.lag,
        "reason": reason,
    }


def _normalize(host):
    """'Host' or '[::1]' or 'host:port' -> 'host:port' in lower case, for comparisons."""
    name, port = split_host(host or "")
    return "%s:%s" % (name.lower(), port)


def split_host(host):
    """'db2:27018' -> ('db2', 27018); '[::1]:27017' -> ('::1', 27017); 'db2' -> ('db2', 27017)."""
    host = str(host).strip()
    if host.startswith("["):
        address, sep, rest = host[1:].partition("]")
        port = rest[1:] if sep and rest.startswith(":") else ""
    elif host.count(":") == 1:
        address, port = host.split(":")
    else:
        address, port = host, ""
    try:
        return address, int(port) if port else DEFAULT_PORT
    except ValueError:
        raise MemberSelectionError("malformed member %r: expected host:port" % host)


def pinned_client(options, host):
    """A connected client talking only to ``host`` ("host:port"), e.g. select_member()["host"]."""
    address, port = split_host(host)
    return client_utils.connect(options, pinned_host="%s:%d" % (address, port))


SECONDARY_MODES = ("secondary", "secondaryPreferred", "nearest")


def reads_from_secondary(client):
    """Whether the client's read preference (read_preference, else the URI's, else primary, as mongodump) asks for a secondary."""
    return client.read_preference.mongos_mode in SECONDARY_MODES


def reader_client(client, options, prefer_secondary=True, member=None, max_lag_seconds=None):
    """The client a backup reads through, pinned to one member for the whole run so data and
    oplog agree, and the selection made: (client, "host:port", selection or None).

    A connection to one server (directConnection, mongos, standalone) is used as it is unless a
    member is forced; on a replica set the member comes from select_member().
    """
    topology = client.topology_description.topology_type_name
    if not member and topology in ("Single", "Unknown", "Sharded", "LoadBalanced"):
        address = "%s:%s" % client.address if client.address else None
        return client, address, None
    member_option = member
    if not prefer_secondary and not member:
        primary = client.primary
        member = "%s:%s" % primary if primary else None
    selection = select_member(client, member=member, max_lag_seconds=max_lag_seconds,
                              member_option=member_option or "")
    return pinned_client(options, selection["host"]), selection["host"], selection
