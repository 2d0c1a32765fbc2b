# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Oplog timestamps: parsing a replay limit, comparing against it, printing as ``secs:inc``."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import calendar
import datetime
import re

try:
    from bson import Timestamp
except ImportError:  # pragma: no cover - reported by the module wrapper
    Timestamp = None

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import InvalidOption

MAX_UINT32 = 0xFFFFFFFF
LIMIT_FORMS = ("<seconds>[:<increment>] as mongorestore --oplogLimit takes it (1700000123 or "
               "1700000123:4), or an ISO-8601 time (2024-05-01T12:00:00Z, with Z or an offset "
               "such as +02:00; without one the time is UTC)")

# mongorestore's ParseTimestampFlag: digits, optionally ':' and optional digits.
_SECS_INC_RE = re.compile(r"^(\d+)(?::(\d*))?$")
_ISO_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))?$")


def parse_oplog_limit(text):
    """``secs[:inc]`` or an ISO-8601 time -> bson.Timestamp (an ISO time gives increment 0).

    A fractional second is dropped: oplog times have whole seconds, so the entries of that
    second are excluded, which errs on the side of replaying less.
    """
    if not isinstance(text, str):
        raise InvalidOption("oplog limit %r is not a string; use %s" % (text, LIMIT_FORMS))
    value = text.strip()
    match = _SECS_INC_RE.match(value)
    if match:
        seconds, increment = int(match.group(1)), int(match.group(2) or 0)
        for name, number in (("seconds", seconds), ("increment", increment)):
            if number > MAX_UINT32:
                raise InvalidOption("oplog limit %r: %s %d is above %d; use %s"
                                    % (text, name, number, MAX_UINT32, LIMIT_FORMS))
        return Timestamp(seconds, increment)
    match = _ISO_RE.match(value)
    if match:
        return Timestamp(_iso_epoch_seconds(text, match), 0)
    raise InvalidOption("oplog limit %r is not valid; use %s" % (text, LIMIT_FORMS))


def _iso_epoch_seconds(text, match):
    year, month, day, hour, minute, second = (int(match.group(i) or 0) for i in range(1, 7))
    try:
        moment = datetime.datetime(year, month, day, hour, minute, second)
    except ValueError as exc:
        raise InvalidOption("oplog limit %r is not a valid time (%s); use %s" % (text, exc, LIMIT_FORMS))
    if match.group(9):
        offset = datetime.timedelta(hours=int(match.group(10)), minutes=int(match.group(11)))
        moment = moment - offset if match.group(9) == "+" else moment + offset
    seconds = calendar.timegm(moment.timetuple())
    if not 0 <= seconds <= MAX_UINT32:
        raise InvalidOption("oplog limit %r lies outside the range of oplog timestamps; use %s"
                            % (text, LIMIT_FORMS))
    return seconds


def ts_tuple(ts):
    """(seconds, increment); a missing ts (entries nested in applyOps) counts as 0:0."""
    if ts is None:
        return (0, 0)
    return (ts.time, ts.inc)


def before_limit(ts, limit):
    """True when an entry at ``ts`` may be applied: strictly before ``limit`` (None: no limit)."""
    return limit is None or ts_tuple(ts) < ts_tuple(limit)


def format_ts(ts):
    """``secs:inc`` as mongorestore prints timestamps; None stays None."""
    if ts is None:
        return None
    return "%d:%d" % ts_tuple(ts)
