# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Apply the ``o`` of an update oplog entry to a document, without the server's help.

Three shapes exist (see ../shared/compat/OPLOG_V2_DIFF.md):
  * a replacement document (it has an ``_id``);
  * ``{$v: 2, diff: {...}}``, the delta format of servers >= 5.0;
  * ``{$set: ..., $unset: ...}`` with optional ``$v: 1``, the modifier format of older servers.

Documents are Python dicts in field order (decode with ``document_class=dict``). Applying an
entry twice gives the same document: an ``i`` (insert) removes an existing field of that name
first, and a binary splice past the end of the value is a no-op.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

try:
    from bson import Binary, Int64
except ImportError:  # pragma: no cover - reported by the module wrapper
    Binary = Int64 = None

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import DiffError

DOC_SECTIONS = "duib"


def apply_update(document, update):
    """The post-image of ``document`` after the oplog ``o`` field ``update``."""
    if "_id" in update:
        return dict(update)  # a replacement, even when it also has a $v field
    version = update.get("$v")
    if version is not None and not isinstance(version, (int, Int64)) or isinstance(version, bool):
        raise DiffError("update $v must be an integer, got %r" % (version,))
    if version == 2:
        diff = update.get("diff")
        if not isinstance(diff, dict):
            raise DiffError("a $v:2 update needs a diff object, got %r" % (diff,))
        if diff and next(iter(diff)) == "a":
            raise DiffError("an array diff cannot be applied to a whole document")
        return apply_document_diff(document, diff)
    if version in (None, 1):
        return apply_modifiers(document, update)
    raise DiffError("update format $v:%s is unknown" % version)


# --------------------------------------------------------------------------- $v:2 documents

def _parse_document_diff(diff):
    """Split a document diff into its sections, enforcing the server's validation rules."""
    if not isinstance(diff, dict) or not diff:
        raise DiffError("a document diff must be a non-empty object, got %r" % (diff,))
    sections = {"d": {}, "u": {}, "i": {}, "b": {}}
    subdiffs = {}
    seen_fields = set()
    last_rank = -1
    for name, value in diff.items():
        if not name:
            raise DiffError("a diff section has an empty name")
        if name[0] == "s":
            rank = len(DOC_SECTIONS)
            field = name[1:]
            if not isinstance(value, dict) or not value:
                raise DiffError("sub-diff %r must be a non-empty object" % name)
            fields = [field]
        elif name in sections:
            rank = DOC_SECTIONS.index(name)
            if rank <= last_rank:
                raise DiffError("diff section %r is repeated or out of order (d, u, i, b, then s...)" % name)
            if not isinstance(value, dict):
                raise DiffError("diff section %r must be an object, got %r" % (name, value))
            fields = list(value)
        else:
            raise DiffError("unknown diff section %r" % name)
        if rank < last_rank:
            raise DiffError("diff section %r comes after a sub-diff" % name)
        last_rank = rank
        for field in fields:
            if field in seen_fields:
                raise DiffError("field %r is named twice in one diff" % field)
            seen_fields.add(field)
        if name[0] == "s":
            subdiffs[field] = value
        else:
            sections[name] = value
    for field, splice in sections["b"].items():
        _check_splice(field, splice)
    return sections, subdiffs


def apply_document_diff(document, diff):
    sections, subdiffs = _parse_document_diff(diff)
    deletes, updates, inserts, binaries = sections["d"], sections["u"], sections["i"], sections["b"]
    result = {}
    for field, value in document.items():
        if field in deletes or field in inserts:
            continue
        if field in updates:
            result[field] = updates[field]
        elif field in binaries:
            result[field] = _splice(value, binaries[field])
        elif field in subdiffs:
            result[field] = _apply_subdiff(value, subdiffs[field])
        else:
            result[field] = value
    for field, value in updates.items():
        if field not in document:
            result[field] = value
    for field, value in inserts.items():
        result[field] = value
    return result


def _apply_subdiff(value, subdiff):
    """Recurse when the kinds match; a mismatch writes null, as the server does."""
    if _is_array_diff(subdiff):
        return apply_array_diff(value, subdiff) if isinstance(value, list) else None
    return apply_document_diff(value, subdiff) if isinstance(value, dict) else None


def _is_array_diff(diff):
    return bool(diff) and next(iter(diff)) == "a"


# --------------------------------------------------------------------------- $v:2 arrays

def _parse_array_diff(diff):
    items = list(diff.items())
    if not items or items[0][0] != "a":
        raise DiffError("an array diff must start with a: true")
    if not isinstance(items[0][1], bool) or items[0][1] is not True:
        raise DiffError("an array diff must start with a: true, got a: %r" % (items[0][1],))
    items = items[1:]
    new_length = None
    if items and items[0][0] == "l":
        if isinstance(items[0][1], bool) or not isinstance(items[0][1], (int, Int64)) or items[0][1] < 0:
            raise DiffError("array diff length l must be a non-negative integer")
        new_length = int(items[0][1])
        items = items[1:]
    changes = []
    for name, value in items:
        if len(name) < 2:
            raise DiffError("array diff field %r is too short" % name)
        kind, index = name[0], name[1:]
        if kind not in "us":
            raise DiffError("array diff field %r: only u<index> and s<index> exist" % name)
        if not index.isdigit():
            raise DiffError("array diff field %r has no numeric index" % name)
        if kind == "s" and (not isinstance(value, dict) or not value):
            raise DiffError("array sub-diff %r must be a non-empty object" % name)
        changes.append((int(index), kind, value))
    return new_length, changes


def apply_array_diff(array, diff):
    new_length, changes = _parse_array_diff(diff)
    result = []
    position, pending = 0, 0

    def take_change():
        nonlocal pending
        _index, kind, value = changes[pending]
        pending += 1
        return kind, value

    while position < len(array) and (new_length is None or position < new_length):
        if pending < len(changes) and changes[pending][0] == position:
            kind, value = take_change()
            result.append(value if kind == "u" else _apply_subdiff(array[position], value))
        else:
            result.append(array[position])
        position += 1
    while (new_length is not None and position < new_length) or pending < len(changes):
        if pending < len(changes) and changes[pending][0] < position:
            raise DiffError("array diff indexes are not in ascending order")
        if pending < len(changes) and changes[pending][0] == position:
            kind, value = take_change()
            result.append(value if kind == "u" else None)
        else:
            result.append(None)  # the server pads missing elements with null
        position += 1
    return result


# --------------------------------------------------------------------------- binary splices

def _check_splice(field, splice):
    if not isinstance(splice, dict):
        raise DiffError("binary diff for %r must be an object" % field)
    offset, data = splice.get("o"), splice.get("d")
    if isinstance(offset, bool) or not isinstance(offset, (int, Int64)) or offset < 0:
        raise DiffError("binary diff for %r needs a non-negative offset o" % field)
    if not isinstance(data, (bytes, Binary)):
        raise DiffError("binary diff for %r needs BinData d" % field)


def _splice(value, splice):
    """old[0:o] + d, keeping the old subtype; an offset past the end is a no-op."""
    if not isinstance(value, (bytes, Binary)):
        return value
    offset = int(splice["o"])
    if offset > len(value):
        return value
    data = bytes(value[:offset]) + bytes(splice["d"])
    if isinstance(value, Binary):
        return Binary(data, value.subtype)
    return data


# --------------------------------------------------------------------------- $v:1 modifiers

def apply_modifiers(document, update):
    """``{$set: {path: value}, $unset: {path: true}}`` with dotted paths, as pre-5.0 oplogs hold."""
    result = _deep_copy(document)
    for operator, fields in update.items():
        if operator == "$v":
            continue
        if operator not in ("$set", "$unset") or not isinstance(fields, dict):
            raise DiffError("update operator %r is not one an oplog holds ($set, $unset)" % operator)
        for path, value in fields.items():
            if operator == "$set":
                _set_path(result, path.split("."), value)
            else:
                _unset_path(result, path.split("."))
    return result


def _deep_copy(value):
    if isinstance(value, dict):
        return dict((k, _deep_copy(v)) for k, v in value.items())
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _set_path(container, parts, value):
    head, rest = parts[0], parts[1:]
    if isinstance(container, list):
        if not head.isdigit():
            raise DiffError("cannot set field %r inside an array" % head)
        index = int(head)
        while len(container) <= index:
            container.append(None)
        if rest:
            if not isinstance(container[index], (dict, list)):
                container[index] = {}
            _set_path(container[index], rest, value)
        else:
            container[index] = value
        return
    if rest:
        if not isinstance(container.get(head), (dict, list)):
            container[head] = {}
        _set_path(container[head], rest, value)
    else:
        container[head] = value


def _unset_path(container, parts):
    head, rest = parts[0], parts[1:]
    if isinstance(container, list):
        if head.isdigit() and int(head) < len(container):
            if rest:
                _unset_path(container[int(head)], rest)
            else:
                container[int(head)] = None  # $unset on an array element leaves null
        return
    if not isinstance(container, dict) or head not in container:
        return
    if rest:
        if isinstance(container[head], (dict, list)):
            _unset_path(container[head], rest)
    else:
        del container[head]
