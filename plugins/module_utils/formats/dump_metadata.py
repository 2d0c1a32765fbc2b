# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The JSON files of a dump: <coll>.metadata.json (options, indexes, uuid, type) and prelude.json, as mongodump writes them."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import math
import uuid

try:
    from bson import json_util
    from bson.code import Code
    from bson.int64 import Int64
    from bson.json_util import CANONICAL_JSON_OPTIONS, JSONOptions
except ImportError:  # pragma: no cover - reported by the module wrapper
    json_util = Code = Int64 = CANONICAL_JSON_OPTIONS = JSONOptions = None
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats.bsonio import (
    DECOMPRESSION_ERRORS, CORRUPT_HINT, damaged_stream, open_decompressed)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import FormatError


MAX_METADATA_BYTES = 64 * 1024 * 1024


# Deleting a file of a backup with a manifest only trades this error for "listed file is missing".
METADATA_HINT = ("restore it from a good copy of the backup; only in mongodump output without a manifest "
                 "may it be deleted, which restores the collection without its options and indexes")


PRELUDE_HINT = ("restore it from a good copy of the backup; only in mongodump output without a manifest "
                "may it be deleted (it only records versions)")


_LOAD_OPTIONS = JSONOptions(document_class=dict) if JSONOptions else None


def _go_double(value):
    """Format a float like Go's strconv.FormatFloat(f, 'G', -1, 64) plus the driver's ".0"."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0.0"
    mantissa, dummy, exp_text = repr(abs(value)).partition("e")
    int_part, dummy, frac_part = mantissa.partition(".")
    digits = int_part + frac_part
    stripped = digits.lstrip("0")
    point = len(int_part) + int(exp_text or 0) - (len(digits) - len(stripped))
    digits = stripped.rstrip("0")
    exponent = point - 1
    if exponent < -4 or exponent >= 6:  # 'G' with shortest precision switches at 6 digits
        text = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        text += "E%s%02d" % ("-" if exponent < 0 else "+", abs(exponent))
        return sign + text
    if point <= 0:
        text = "0." + "0" * -point + digits
    elif point >= len(digits):
        text = digits + "0" * (point - len(digits)) + ".0"
    else:
        text = digits[:point] + "." + digits[point:]
    return sign + text


def _to_extjson(value):
    """Convert decoded BSON values into canonical Extended JSON v2 structures."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return {"$numberDouble": _go_double(value)}
    if isinstance(value, str) and not isinstance(value, Code):
        return value
    if isinstance(value, int) and not isinstance(value, Int64):
        if -2 ** 31 <= value < 2 ** 31:
            return {"$numberInt": str(value)}
        return {"$numberLong": str(value)}
    if hasattr(value, "items") and not hasattr(value, "as_doc"):  # mappings, not DBRef
        return dict((key, _to_extjson(item)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return [_to_extjson(item) for item in value]
    return json_util.default(value, CANONICAL_JSON_OPTIONS)


def dumps_canonical(document):
    """Compact canonical Extended JSON, byte-compatible with the Go driver (no HTML escaping)."""
    text = json.dumps(_to_extjson(document), ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False)
    # Go escapes these two unconditionally; Python leaves them raw.
    return text.replace(u"\u2028", "\\u2028").replace(u"\u2029", "\\u2029")


def _uuid_hex(uuid_value):
    """32 lowercase hex digits from a hex string, a uuid.UUID or 16 raw bytes (bson Binary)."""
    if uuid_value is None or uuid_value == "":
        return None
    if isinstance(uuid_value, uuid.UUID):
        return uuid_value.hex
    if isinstance(uuid_value, (bytes, bytearray)):
        return bytes(uuid_value).hex()
    return str(uuid_value)


def metadata_to_json(options, indexes, uuid_hex, collection_name, coll_type):
    """The text of <coll>.metadata.json exactly as mongodump writes it (no trailing newline)."""
    doc = {}
    if options:
        doc["options"] = options
    doc["indexes"] = list(indexes or [])
    uuid_text = _uuid_hex(uuid_hex)
    if uuid_text:
        doc["uuid"] = uuid_text
    doc["collectionName"] = collection_name
    if coll_type:
        doc["type"] = coll_type
    return dumps_canonical(doc)


def metadata_from_json(text, source_name):
    """Parse metadata.json text (canonical, relaxed or legacy JSON); None when blank."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError("metadata %s: not UTF-8 text (%s); %s" % (source_name, exc, METADATA_HINT),
                              path=source_name)
    if not text.strip():
        return None
    try:
        doc = json_util.loads(text, json_options=_LOAD_OPTIONS)
    except Exception as exc:  # json and json_util raise several types
        raise FormatError("metadata %s: invalid JSON (%s); %s" % (source_name, exc, METADATA_HINT),
                          path=source_name)
    if not isinstance(doc, dict):
        raise FormatError("metadata %s: the JSON is a %s, not an object; restore it from a good "
                          "copy" % (source_name, type(doc).__name__), path=source_name)
    defaults = (("options", {}), ("indexes", []), ("uuid", None), ("collectionName", ""),
                ("type", ""))
    # null counts as missing (Go decodes it to the zero value); wrong types are errors
    result = dict((key, default if doc.get(key) is None else doc[key]) for key, default in defaults)
    if result["uuid"] == "":
        result["uuid"] = None
    for key, kind in (("options", dict), ("indexes", list), ("collectionName", str), ("type", str)):
        if not isinstance(result[key], kind):
            raise FormatError("metadata %s: field %r is a %s, expected a %s; restore it from a "
                              "good copy" % (source_name, key, type(result[key]).__name__,
                                             kind.__name__), path=source_name)
    if result["uuid"] is not None and not isinstance(result["uuid"], str):
        raise FormatError("metadata %s: field 'uuid' is not a string; restore it from a good "
                          "copy" % source_name, path=source_name)
    return result


def _read_decompressed(path, limit, what):
    """Up to ``limit`` bytes of a JSON file of a dump, plain or compressed."""
    handle = None
    try:
        with open_decompressed(path) as handle:
            return handle.read(limit)
    except DECOMPRESSION_ERRORS as exc:
        raise FormatError("%s %s: %s (%s); %s" % (what, path, damaged_stream(handle), exc, CORRUPT_HINT),
                          path=path)


def read_metadata_file(path):
    """Parse a metadata.json[.gz|.zst] file (compression by content); None for an empty file."""
    data = _read_decompressed(path, MAX_METADATA_BYTES + 1, "metadata")
    if len(data) > MAX_METADATA_BYTES:
        raise FormatError("metadata %s: larger than %d bytes, not a metadata file; move it out "
                          "of the dump directory" % (path, MAX_METADATA_BYTES), path=path)
    return metadata_from_json(data, path)


def read_prelude(path):
    """Parse prelude.json[.gz|.zst]: {"ServerVersion": ..., "ToolVersion": ...}."""
    data = _read_decompressed(path, 1024 * 1024, "prelude")
    try:
        doc = json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise FormatError("prelude %s: invalid JSON (%s); %s" % (path, exc, PRELUDE_HINT), path=path)
    if not isinstance(doc, dict) or not all(
            isinstance(doc.get(key, ""), str) for key in ("ServerVersion", "ToolVersion")):
        raise FormatError("prelude %s: expected an object with string ServerVersion and "
                          "ToolVersion; %s" % (path, PRELUDE_HINT), path=path)
    return doc


def prelude_to_json(server_version, tool_version):
    # Go's json.Marshal: compact, and it escapes <, > and & (HTML-safe by default).
    text = json.dumps({"ServerVersion": server_version, "ToolVersion": tool_version},
                      ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
