"""The namespace vocabulary (core/namespaces.py): name rules, include/exclude patterns and
ns_from/ns_to renames with mongorestore's semantics (no server; the same cases run against the
real mongorestore in tests/integration/test_ns_crosstool.py)."""

import pytest

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_options
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import restore as restore_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import namespaces
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.namespaces import (
    NamespacePattern,
    NamespaceRenamer,
)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import InvalidOption, NamespaceNotFound


# --------------------------------------------------------------------------- include / exclude

@pytest.mark.parametrize("pattern, namespace, expected", [
    ("sales.*", "sales.orders", True),
    ("sales.*", "sales.x.y", True),          # * crosses dots
    ("sales.*", "salesx.orders", False),
    ("sales*", "salesx.orders", True),       # no dot needed when * covers it
    ("*", "any.thing", True),
    ("*.orders", "eu.orders", True),
    ("*.orders", "eu.x.orders", True),
    ("s*.o*", "shop.orders", True),
    ("shop.orders", "shop.ordersX", False),  # the whole namespace must match
    ("shop.orders", "xshop.orders", False),
    (r"shop.a\*b", "shop.a*b", True),        # \* is a literal asterisk
    (r"shop.a\*b", "shop.axxb", False),
    (r"shop.a\\b", "shop.a\\b", True),       # \\ is a literal backslash
    (r"shop.a\b", "shop.ab", True),          # any other backslash is dropped
    ("shop.a+b(c)", "shop.a+b(c)", True),    # regex characters are literal
    ("shop.a+b(c)", "shop.aab(c)", False),
    ("logs*.*", "logs2024.app", True),
])
def test_patterns_match_like_mongorestore(pattern, namespace, expected):
    assert NamespacePattern(pattern, "ns_include").matches(namespace) is expected


@pytest.mark.parametrize("pattern, cause", [
    ("", "it is empty"),
    ("shop", "matches no namespace"),                  # mongorestore silently matches nothing
    ("shop.$coll$", "'$' is not allowed in ns_exclude"),
    (".orders", "database part '' can match no database: it is empty"),
    ("bad db.orders", "database part 'bad db' can match no database: it contains a space"),
])
def test_invalid_patterns_say_why(pattern, cause):
    with pytest.raises(InvalidOption) as failure:
        NamespacePattern(pattern, "ns_exclude")
    assert cause in failure.value.message
    assert "ns_exclude pattern %r is invalid" % pattern in failure.value.message


def test_dump_and_restore_use_the_one_matcher():
    assert dump_options.NamespacePattern is NamespacePattern
    assert restore_engine.NamespacePattern is NamespacePattern
    assert restore_engine.NamespaceRenamer is NamespaceRenamer


# --------------------------------------------------------------------------- renames

@pytest.mark.parametrize("sources, targets, namespace, expected", [
    (["shop.*"], ["shop2.*"], "shop.orders", "shop2.orders"),          # the defect of issue 8
    (["shop.*"], ["shop2.*"], "shop.x.y", "shop2.x.y"),
    (["shop.*"], ["shop2.*"], "shopx.orders", "shopx.orders"),         # no match: unchanged
    (["*.*"], ["*_x.*_y"], "shop.x.y", "shop_x.x.y_y"),                # first * takes the least
    (["sh*.*"], ["a*.b*"], "shop.orders", "aop.borders"),
    (["shop.*"], ["a.*"], "shop.ord*ers", "a.ord*ers"),
    ([r"shop.ord\*ers"], ["lit.x"], "shop.ord*ers", "lit.x"),          # \* literal
    ([r"shop.ord\*ers"], ["lit.x"], "shop.orders", "shop.orders"),
    (["shop.*"], [r"a.\*_*"], "shop.orders", "a.*_orders"),            # \* literal in ns_to
    (["sales.$coll$"], ["archive.$coll$"], "sales.orders", "archive.orders"),
    (["$d$.$c$"], ["$c$.$d$"], "shop.x.y", "x.y.shop"),                # first variable takes the least
    (["$d$.$c$"], ["all.$d$_$c$_$d$"], "shop.orders", "all.shop_orders_shop"),
    (["shop.$c$"], ["v.$c$_*"], "shop.orders", "v.orders_*"),          # with $, * is literal
    (["shop.ord*$c$"], ["v.$c$"], "shop.ord*ers", "v.ers"),
    (["shop.ord*$c$"], ["v.$c$"], "shop.orders", "shop.orders"),
    (["shop.$$"], ["a.$$"], "shop.orders", "a.orders"),                # an empty variable name
    (["shop.$c$"], ["fixed.one"], "shop.orders", "fixed.one"),         # unused variable
    # precedence: the last matching rule wins
    (["shop.*", "shop.orders"], ["a.*", "b.orders"], "shop.orders", "b.orders"),
    (["shop.*", "shop.orders"], ["a.*", "b.orders"], "shop.users", "a.users"),
    (["shop.orders", "shop.*"], ["b.orders", "a.*"], "shop.orders", "a.orders"),
])
def test_renames_like_mongorestore(sources, targets, namespace, expected):
    assert NamespaceRenamer(sources, targets).rename(namespace) == expected


@pytest.mark.parametrize("sources, targets, cause", [
    (["shop.*"], [], "ns_from has 1 pattern(s) and ns_to 0"),
    (["shop.*"], ["a.b"], "ns_from has 1 wildcard(s) and ns_to 0"),
    (["shop.orders"], ["a.*"], "ns_from has 0 wildcard(s) and ns_to 1"),
    (["shop.$x"], ["a.$x$"], "ns_from has an odd number of '$'"),
    (["shop.$x$"], ["a.$x"], "ns_to has an odd number of '$'"),
    (["shop.$x$$x$"], ["a.$x$"], "ns_from uses $x$ more than once"),
    (["shop.$x$"], ["a.$y$"], "ns_to uses $y$, which ns_from does not define (it defines $x$)"),
    (["shop.*"], ["a.$1$"], "ns_to uses '$' but ns_from has no $variable$"),
    (["shop.*"], ["a.*$1$"], "ns_to uses '$' but ns_from has no $variable$"),
    (["sh*.*"], ["*.*"], "mongorestore then pairs them out of order"),
    (["*.*"], ["x*.*"], "mongorestore then pairs them out of order"),
    (["shop"], ["a"], "matches no namespace"),
    ([""], ["a.b"], "ns_from is empty"),
])
def test_invalid_renames_say_why(sources, targets, cause):
    with pytest.raises(InvalidOption) as failure:
        NamespaceRenamer(sources, targets)
    assert cause in failure.value.message


def test_a_rule_that_matches_nothing_lists_the_source():
    renamer = NamespaceRenamer(["shpo.*"], ["shop2.*"])
    with pytest.raises(NamespaceNotFound) as failure:
        renamer.check(["shop.orders", "shop.users"], ["shop.orders", "shop.users", "other.x"])
    message = failure.value.message
    assert "ns_from 'shpo.*' (ns_to 'shop2.*') matches none of the namespaces being restored" in message
    assert "the source has: other.x, shop.orders, shop.users" in message


def test_a_rule_that_matches_only_filtered_namespaces_says_so():
    renamer = NamespaceRenamer(["other.*"], ["o2.*"])
    with pytest.raises(NamespaceNotFound, match=r"leave out: other\.x"):
        renamer.check(["shop.orders"], ["shop.orders", "other.x"])


def test_a_rule_every_match_of_which_a_later_rule_takes_is_refused():
    renamer = NamespaceRenamer(["shop.orders", "shop.*"], ["b.orders", "a.*"])
    with pytest.raises(InvalidOption) as failure:
        renamer.check(["shop.orders", "shop.users"])
    assert "ns_from 'shop.orders' (ns_to 'b.orders') never applies" in failure.value.message
    assert "the last one wins" in failure.value.message
    NamespaceRenamer(["shop.*", "shop.orders"], ["a.*", "b.orders"]).check(["shop.orders", "shop.users"])


def test_targets_must_be_valid_and_distinct():
    with pytest.raises(InvalidOption, match=r"shop\.orders into a/b\.orders, which is not a valid namespace: "
                                            r"its database part 'a/b' .*it contains '/'"):
        namespaces.check_targets([("shop.orders", "a/b.orders")])
    with pytest.raises(InvalidOption, match="its collection part '' is not a valid collection name"):
        namespaces.check_targets([("shop.orders", "shop2.")])
    with pytest.raises(InvalidOption, match=r"would write eu\.orders, us\.orders all into all\.orders"):
        namespaces.check_targets([("eu.orders", "all.orders"), ("us.orders", "all.orders"), ("x.y", "x.y")])


# --------------------------------------------------------------------------- names

@pytest.mark.parametrize("name, cause", [
    ("a/b", "it contains '/'"),
    ("..", "it contains '.'"),
    ("", "it is empty"),
    ("a b", "it contains a space"),
    ("a$b", "it contains '$'"),
    ('a"b\\c', "it contains '\\\\' and '\"'"),
    ("x" * 64, "it is 64 bytes long"),
    ("\u00e9" * 32, "it is 64 bytes long"),
])
def test_database_name_rules(name, cause):
    assert namespaces.database_name_problem(name) == cause


@pytest.mark.parametrize("name", ["shop", "x" * 63, "caf\u00e9", "a-b_c+d%e*f"])
def test_valid_database_names(name):
    assert namespaces.database_name_problem(name) is None


@pytest.mark.parametrize("name, cause", [("", "it is empty"), ("a$b", "it contains '$'"),
                                         ("a\x00b", "it contains a NUL character")])
def test_collection_name_rules(name, cause):
    assert namespaces.collection_name_problem(name) == cause
    assert namespaces.collection_name_problem("x.y z*%") is None


@pytest.mark.parametrize("engine", ["dump", "restore"])
@pytest.mark.parametrize("option, value, cause", [
    ("db", "a/b", "db 'a/b' is not a valid database name: it contains '/'"),
    ("db", "..", "db '..' is not a valid database name: it contains '.'"),
    ("db", "", "db '' is not a valid database name: it is empty"),
    ("collection", "a$b", "collection 'a$b' is not a valid collection name: it contains '$'"),
    ("collection", "", "collection '' is not a valid collection name: it is empty"),
])
def test_db_and_collection_options_are_checked_before_anything_else(tmp_path, engine, option, value, cause):
    arguments = {"db": "shop", option: value}
    with pytest.raises(InvalidOption) as failure:
        if engine == "dump":
            dump_options.DumpOptions(path=str(tmp_path / "out"), **arguments)
        else:
            restore_engine.RestoreOptions(source=str(tmp_path / "in"), **arguments)
    assert cause in failure.value.message
    assert "database name is 1 to 63 bytes" in failure.value.message or "collection name is not empty" \
        in failure.value.message
    assert list(tmp_path.iterdir()) == []
