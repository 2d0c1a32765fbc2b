"""What a verification reports as different between the backup's metadata and a restored collection."""

from bson.int64 import Int64
from bson.son import SON

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.verify import compare


def spec(name, key, **options):
    return dict(SON([("v", 2), ("key", SON(key)), ("name", name)]), **options)


def test_indexes_match_whatever_the_field_order_version_and_number_type():
    backup = [spec("_id_", [("_id", 1)]), spec("a_1_b_-1", [("a", 1), ("b", -1)], unique=True, ns="shop.orders")]
    restored = [SON([("name", "a_1_b_-1"), ("unique", True), ("key", SON([("a", 1.0), ("b", Int64(-1))])),
                     ("v", 1)])]
    assert compare.index_differences(backup, restored) == []


def test_index_key_order_missing_extra_and_changed_options_are_named():
    backup = [spec("a_b", [("a", 1), ("b", 1)]), spec("ttl", [("t", 1)], expireAfterSeconds=60),
              spec("gone", [("g", 1)])]
    restored = [spec("a_b", [("b", 1), ("a", 1)]), spec("ttl", [("t", 1)], expireAfterSeconds=3600),
                spec("new", [("n", 1)])]
    problems = compare.index_differences(backup, restored)
    assert problems == [
        "index a_b: key is [('b', 1), ('a', 1)], the backup has [('a', 1), ('b', 1)]",
        "index gone missing",
        "index new not in the backup",
        "index ttl: expireAfterSeconds is 3600, the backup has 60",
    ]


def test_index_option_lost_by_the_server_is_named():
    problems = compare.index_differences([spec("a", [("a", 1)], sparse=True)], [spec("a", [("a", 1)])])
    assert problems == ["index a: sparse missing (the backup has True)"]


def test_collection_options():
    assert compare.option_differences({"capped": True, "size": 4096}, SON([("size", Int64(4096)), ("capped", True)])) == []
    assert compare.option_differences({"capped": True, "size": 4096}, {}) == [
        "option capped missing (the backup has True)", "option size missing (the backup has 4096)"]
    assert compare.option_differences({}, {"validationLevel": "strict"}) == [
        "option validationLevel='strict' not in the backup"]
    assert compare.option_differences(None, None) == []


def test_failure_text_names_the_collection_first():
    assert compare.describe_failure("shop.orders", ["999 documents restored, the backup holds 1000",
                                                    "content hash differs"]) == \
        "shop.orders: 999 documents restored, the backup holds 1000; content hash differs"
