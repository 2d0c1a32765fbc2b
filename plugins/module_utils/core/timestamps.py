# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Times, defined once: oplog timestamps (``secs:inc``, replay limits), recorded wall-clock times, durations."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import calendar
import datetime
import re
import time

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


# Oplog timestamps as this collection records them: "secs:inc" strings, compared as (secs, inc).
_SECS_INC_TEXT_RE = re.compile(r"^(\d+):(\d+)$")


def ts_key(value):
    """``(secs, inc)`` from ``"secs:inc"``, a bson Timestamp, a ``{"t", "i"}`` dict or a pair."""
    if value is None:
        return None
    if isinstance(value, tuple) and len(value) == 2:
        return (int(value[0]), int(value[1]))
    if isinstance(value, dict) and "t" in value:
        return (int(value["t"]), int(value.get("i") or 0))
    if hasattr(value, "time") and hasattr(value, "inc"):
        return (int(value.time), int(value.inc))
    if isinstance(value, str):
        match = _SECS_INC_TEXT_RE.match(value.strip())
        if match:
            return (int(match.group(1)), int(match.group(2)))
    raise InvalidOption("oplog timestamp %r is not valid; use secs:inc such as 1700000123:4" % (value,))


def ts_text(value):
    """``"secs:inc"``, as mongorestore prints timestamps, for any form ``ts_key`` takes; None stays None."""
    key = ts_key(value)
    return None if key is None else "%d:%d" % key


def ts_time(value):
    """ISO-8601 UTC time (whole seconds) of an oplog timestamp; None stays None."""
    key = ts_key(value)
    if key is None:
        return None
    return datetime.datetime.utcfromtimestamp(key[0]).strftime("%Y-%m-%dT%H:%M:%SZ")


def timestamp_result(ts):
    """An oplog timestamp as modules return it: text, seconds, increment and UTC time."""
    if ts is None:
        return None
    return {"ts": ts_text(ts), "t": ts.time, "i": ts.inc, "time": ts_time(ts)}


# Wall-clock times recorded in manifests and the catalog: UTC, ISO-8601, microseconds.
_RECORDED_TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ")


def iso_time(epoch):
    """UTC time as recorded in manifests and the catalog."""
    return datetime.datetime.utcfromtimestamp(epoch).strftime(_RECORDED_TIME_FORMATS[0])


def now_iso():
    return iso_time(time.time())


def parse_iso_time(text):
    """Epoch seconds of a time recorded by ``iso_time``; None when unparsable."""
    if not text:
        return None
    for pattern in _RECORDED_TIME_FORMATS:
        try:
            moment = datetime.datetime.strptime(text, pattern)
        except ValueError:
            continue
        return (moment - datetime.datetime(1970, 1, 1)).total_seconds()
    return None


# Durations in options such as max_age: "26h", "90m", "2d", "1w", "45s" or seconds.
_DURATION_RE = re.compile(r"^(\d+)\s*([smhdw]?)$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value):
    """Seconds from ``26h``, ``90m``, ``2d``, ``1w``, ``45s`` or a number of seconds."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, int):
        seconds = value
    else:
        match = _DURATION_RE.match(str(value).strip().lower()) if value is not None else None
        if not match:
            raise InvalidOption("duration %r is not valid; use a number of seconds or a number with a unit "
                                "s, m, h, d or w (90m, 26h, 2d)" % (value,))
        seconds = int(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise InvalidOption("duration %r must be more than zero" % (value,))
    return seconds


def format_duration(seconds):
    """``1d 2h 3m 4s`` style, for messages."""
    seconds = int(max(seconds, 0))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            parts.append("%d%s" % (seconds // size, unit))
            seconds %= size
    if seconds or not parts:
        parts.append("%ds" % seconds)
    return " ".join(parts)
