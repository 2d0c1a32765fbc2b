"""The update applier against the vectors of ../shared/compat/OPLOG_V2_DIFF.md and real oplog data."""

import os

import bson
import pytest
from bson import Binary
from bson.codec_options import CodecOptions

from ansible_collections.dbops.mongodb_backup.plugins.module_utils import errors
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import diff as diff_utils

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPAT = os.path.join(REPO, "..", "shared", "compat", "mongo-tools")
AS_DICT = CodecOptions(document_class=dict)


def ordered(document):
    """Field order matters: compare as lists of (key, value), recursively."""
    if isinstance(document, dict):
        return [(k, ordered(v)) for k, v in document.items()]
    if isinstance(document, list):
        return [ordered(v) for v in document]
    return (type(document).__name__, document)


VECTORS = [
    ("DeleteSimple", {"f1": 1, "foo": 2, "f2": 3}, {"d": {"f1": False, "f2": False, "f3": False}}, {"foo": 2}),
    ("InsertSimple", {"f1": 1, "foo": 2, "f2": 3}, {"i": {"f1": 1, "newField": 2}},
     {"foo": 2, "f2": 3, "f1": 1, "newField": 2}),
    ("UpdateSimple", {"f1": 0, "foo": 2, "f2": 3}, {"u": {"f1": 1, "newField": 2}},
     {"f1": 1, "foo": 2, "f2": 3, "newField": 2}),
    ("Update case 2", {"f1": {"a": {"b": {"c": 1}, "c": 1}}},
     {"sf1": {"sa": {"u": {"p": False, "c": False, "b": False}}}},
     {"f1": {"a": {"b": False, "c": False, "p": False}}}),
    ("Insert case 2", {"f1": {"a": {"c": True}}}, {"sf1": {"sa": {"i": {"p": False, "c": False, "b": False}}}},
     {"f1": {"a": {"p": False, "c": False, "b": False}}}),
    ("SubObjDiffSimple", {"obj": {"dField": 0, "iField": 0, "uField": 0}, "otherField": 0},
     {"sobj": {"d": {"dField": False}, "u": {"uField": 2}, "i": {"iField": 1}}},
     {"obj": {"uField": 2, "iField": 1}, "otherField": 0}),
    ("FieldOrder", {"a": 1, "b": 2, "c": {"p": 1, "q": 1, "s": 1, "r": 2}, "d": 4}, {"sc": {"i": {"s": 1}}},
     {"a": 1, "b": 2, "c": {"p": 1, "q": 1, "r": 2, "s": 1}, "d": 4}),
    ("DataTypeChangeRecorded", {"a": "valueString", "b": 2, "c": {"subField1": 1, "subField2": 3.0}, "d": 4},
     {"sc": {"u": {"subField2": 3}}},
     {"a": "valueString", "b": 2, "c": {"subField1": 1, "subField2": 3}, "d": 4}),
    ("SimpleArrayPush", {"field1": "abcd", "field2": [1, 2, 3]}, {"sfield2": {"a": True, "u3": 4}},
     {"field1": "abcd", "field2": [1, 2, 3, 4]}),
    ("SubArrayDiffSimpleWithTruncate", {"arr": [999, 999, 999, 999]}, {"sarr": {"a": True, "l": 3, "u1": 1}},
     {"arr": [999, 1, 999]}),
    ("SubArrayDiffSimpleWithNullPadding", {"arr": [0]}, {"sarr": {"a": True, "u3": 1}},
     {"arr": [0, None, None, 1]}),
    ("NestedArray case 2", {"field1": "abcd", "field2": [1, 2, 3, [1, "longString", [2], 4, 5, 6], 5, 5, 5]},
     {"sfield2": {"a": True, "l": 6, "s3": {"a": True, "l": 4, "u2": [4]}, "u5": 6}},
     {"field1": "abcd", "field2": [1, 2, 3, [1, "longString", [4], 4], 5, 6]}),
    ("ArraysInIndexPath case 2", {"f1": [{"a": {"b": {"c": 1}, "c": 1}}, 1]},
     {"sf1": {"a": True, "s0": {"sa": {"sb": {"i": {"d": 1}}}}}},
     {"f1": [{"a": {"b": {"c": 1, "d": 1}, "c": 1}}, 1]}),
    ("SubObjInSubArrayUpdateElements",
     {"field1": "abcd", "field2": [1, 2, 3, {"field3": ["veryLargeStringValueveryLargeStringValue", 2, 3, 4]}]},
     {"sfield2": {"a": True, "s3": {"sfield3": {"a": True, "u2": 4, "u3": 3, "u4": 5}}}},
     {"field1": "abcd", "field2": [1, 2, 3, {"field3": ["veryLargeStringValueveryLargeStringValue", 2, 4, 3, 5]}]}),
    ("SubObjHasEmptyFieldName",
     {"": "1", "field2": [1, 2, 3, {"": {"": 1, "padding": "largeFieldValue"}}]},
     {"u": {"": "2"}, "sfield2": {"a": True, "s3": {"s": {"u": {"": 2}}}}},
     {"": "2", "field2": [1, 2, 3, {"": {"": 2, "padding": "largeFieldValue"}}]}),
    ("UpdateArrayOfObjectsSubDiff case 1",
     {"uField": 1, "dFieldA": 1, "arr": [None, {"a": 0}, {"b": 0}, {"c": 0}], "dFieldB": 1},
     {"d": {"dFieldA": False, "dFieldB": False}, "u": {"uField": 999},
      "sarr": {"a": True, "s1": {"u": {"a": 1}}, "s2": {"u": {"b": 2}}, "s3": {"u": {"c": 3}}, "u4": {"x": 1}}},
     {"uField": 999, "arr": [None, {"a": 1}, {"b": 2}, {"c": 3}, {"x": 1}]}),
    ("UpdateArrayOfObjectsSubDiff short pre-image", {"arr": [], "uField": 1},
     {"d": {"dFieldA": False, "dFieldB": False}, "u": {"uField": 999},
      "sarr": {"a": True, "s1": {"u": {"a": 1}}, "s2": {"u": {"b": 2}}, "s3": {"u": {"c": 3}}, "u4": {"x": 1}}},
     {"arr": [None, None, None, None, {"x": 1}], "uField": 999}),
    ("NestedSubObjUpdateScalar mismatch", {"dummyA": 1, "dummyB": 2, "subObj": "scalar!", "dummyC": 3, "dummyD": 4},
     {"ssubObj": {"ssubObj": {"u": {"a": 1}}}},
     {"dummyA": 1, "dummyB": 2, "subObj": None, "dummyC": 3, "dummyD": 4}),
    ("NestedSubObjUpdateScalar missing", {"someOtherField": 1}, {"ssubObj": {"ssubObj": {"u": {"a": 1}}}},
     {"someOtherField": 1}),
    ("BinaryOverwriteSimple", {"b1": Binary(b"abc", 7)}, {"b": {"b1": {"o": 2, "d": Binary(b"def", 0)}}},
     {"b1": Binary(b"abdef", 7)}),
    ("BinaryAppendSimple", {"b1": Binary(b"abc", 7)}, {"b": {"b1": {"o": 3, "d": Binary(b"def", 0)}}},
     {"b1": Binary(b"abcdef", 7)}),
    ("BinaryShrinkThenOlderSplice", {"b1": Binary(b"ax", 7)}, {"b": {"b1": {"o": 3, "d": Binary(b"def", 0)}}},
     {"b1": Binary(b"ax", 7)}),
    ("DeleteAndInsertFieldAtTheEnd", {"a": 1, "b": "valueString", "c": 3, "d": 4}, {"i": {"a": 1}},
     {"b": "valueString", "c": 3, "d": 4, "a": 1}),
    ("ArraysAfterIndexPath u", {"f1": {"a": {"b": [{"c": 1}, 2]}}}, {"sf1": {"sa": {"sb": {"a": True, "u0": 1}}}},
     {"f1": {"a": {"b": [1, 2]}}}),
    ("ArraysAfterIndexPath s", {"f1": {"a": {"b": [{"c": 1}, 2]}}},
     {"sf1": {"sa": {"sb": {"a": True, "s0": {"u": {"c": 2}}}}}}, {"f1": {"a": {"b": [{"c": 2}, 2]}}}),
    ("NonContiguous", {"arr": [{}, {}, {}, {}]}, {"sarr": {"a": True, "u1": 997, "u2": {"newVal": 998}, "u5": 999}},
     {"arr": [{}, 997, {"newVal": 998}, {}, None, 999]}),
]


@pytest.mark.parametrize("name, pre, diff, post", VECTORS, ids=[v[0] for v in VECTORS])
def test_vector_gives_its_post_image_also_when_applied_twice(name, pre, diff, post):
    # Round-trip through BSON so int32/int64/double and field order are what a server sends.
    pre = bson.decode(bson.encode(pre), AS_DICT)
    diff = bson.decode(bson.encode(diff), AS_DICT)
    update = {"$v": 2, "diff": diff}
    once = diff_utils.apply_update(pre, update)
    assert ordered(once) == ordered(post)
    assert ordered(diff_utils.apply_update(once, update)) == ordered(post)
    assert bson.encode(once) == bson.encode(post)


@pytest.mark.parametrize("diff", [
    {}, {"d": {"f": False}, "": {}}, {"p": 1}, {"u": True}, {"i": {}, "d": {}},
    {"sa": {"u": {}}, "d": {"p": False}}, {"a": True, "l": 5, "d0": False}, {"d": {"x": False}, "u": {"x": 1}},
    {"sarr": {"a": True, "3u": 1}}, {"sarr": {"a": True, "u": True}}, {"sarr": {"a": True, "5": {}}},
    {"sarr": {"a": False, "u3": 4}}, {"sarr": {"a": 1, "u3": 4}}, {"sarr": {"a": True, "s3": 4}},
    {"sarr": {"a": True, "d3": 4}}, {"sa": {}},
])
def test_invalid_diffs_are_rejected(diff):
    with pytest.raises(errors.DiffError):
        diff_utils.apply_update({"arr": [1, 2], "a": {"k": 1}, "x": 1}, {"$v": 2, "diff": diff})


def test_empty_delete_section_is_valid():
    assert diff_utils.apply_update({"a": 1}, {"$v": 2, "diff": {"d": {}}}) == {"a": 1}


def test_replacement_keeps_the_given_document_even_with_a_v_field():
    assert diff_utils.apply_update({"_id": 1, "a": 1}, {"_id": 1, "$v": 7, "b": 2}) == {"_id": 1, "$v": 7, "b": 2}


def test_modifier_updates_from_older_servers():
    pre = {"_id": 1, "a": {"b": 1, "c": [1, 2, 3]}, "gone": True}
    update = {"$v": 1, "$set": {"a.b": 5, "a.c.1": 9, "new.deep": "x"}, "$unset": {"gone": True}}
    assert diff_utils.apply_update(pre, update) == {"_id": 1, "a": {"b": 5, "c": [1, 9, 3]}, "new": {"deep": "x"}}
    assert pre["a"]["b"] == 1  # the pre-image is not modified
    with pytest.raises(errors.DiffError, match=r"\$inc"):
        diff_utils.apply_update(pre, {"$inc": {"a.b": 1}})


def test_real_timeseries_oplog_gives_2164_measurements():
    """872 real $v:2 entries (server 5.0) over the dumped buckets: 2164 measurements in 10 buckets,
    the count mongo-tools expects after --oplogReplay; applying them all twice changes nothing."""
    base = os.path.join(COMPAT, "mongorestore", "testdata", "timeseries_tests", "ts_dump_with_oplog")
    with open(os.path.join(base, "timeseries_test", "system.buckets.foo_ts.bson"), "rb") as handle:
        buckets = {b["_id"]: b for b in bson.decode_all(handle.read(), AS_DICT)}
    with open(os.path.join(base, "oplog.bson"), "rb") as handle:
        entries = bson.decode_all(handle.read(), AS_DICT)
    assert len(buckets) == 10 and len(entries) == 872

    def measurements():
        return sum(len(b["data"]["measurement"]) for b in buckets.values())

    assert measurements() == 1294
    for _round in range(2):
        for entry in entries:
            key = entry["o2"]["_id"]
            buckets[key] = diff_utils.apply_update(buckets[key], entry["o"])
        assert measurements() == 2164
    for bucket in buckets.values():
        data = bucket["data"]
        assert len(data["_id"]) == len(data["ts"]) == len(data["measurement"])
