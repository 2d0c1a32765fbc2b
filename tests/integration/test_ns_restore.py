"""Namespace options of mongodb_dump/mongodb_restore against the real test server: the wildcard
rename of issue 8 (it restored into, and with drop: true dropped, the source's own namespaces),
rules that rename nothing, and invalid db/collection names, all refused before any write."""

import pytest

from conftest import run_playbook
from testserver import free_port

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump as dump_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_options
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import restore as restore_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import InvalidOption, NamespaceNotFound

SHOP, SHOP2 = "nsr_shop", "nsr_shop2"


def documents(client, db, name):
    return list(client[db][name].find().sort("_id", 1))


@pytest.fixture(params=["directory", "archive"])
def backup(request, client, tmp_path):
    """A backup of nsr_shop (orders, users), after which nsr_shop gets newer data."""
    for name in (SHOP, SHOP2):
        client.drop_database(name)
    client[SHOP].orders.insert_many([{"_id": i, "state": "backed up"} for i in range(50)])
    client[SHOP].users.insert_many([{"_id": i, "name": "u%d" % i} for i in range(5)])
    path = tmp_path / ("backup.archive" if request.param == "archive" else "backup")
    dump_engine.dump(client, dump_options.DumpOptions(ns_include=[SHOP + ".*"], **{
        "archive" if request.param == "archive" else "path": str(path)}), client_utils.server_facts(client))
    client[SHOP].orders.insert_many([{"_id": 1000 + i, "state": "newer"} for i in range(7)])
    client[SHOP].orders.update_one({"_id": 0}, {"$set": {"state": "changed after the backup"}})
    yield path
    for name in (SHOP, SHOP2):
        client.drop_database(name)


def restore(client, source, check_mode=False, **options):
    return restore_engine.restore(client, restore_engine.RestoreOptions(source=str(source), **options),
                                  check_mode=check_mode)


def test_wildcard_rename_with_drop_leaves_the_source_untouched_and_fills_the_target(client, backup):
    newer_orders, users = documents(client, SHOP, "orders"), documents(client, SHOP, "users")
    _changed, result = restore(client, backup, ns_from=[SHOP + ".*"], ns_to=[SHOP2 + ".*"], drop=True)
    assert documents(client, SHOP, "orders") == newer_orders  # 57 documents, one changed: still there
    assert documents(client, SHOP, "users") == users
    assert documents(client, SHOP2, "orders") == [{"_id": i, "state": "backed up"} for i in range(50)]
    assert documents(client, SHOP2, "users") == users
    assert sorted((n["source_namespace"], n["namespace"]) for n in result["namespaces"]) == [
        (SHOP + ".orders", SHOP2 + ".orders"), (SHOP + ".users", SHOP2 + ".users")]


def test_check_mode_shows_the_renamed_targets(client, backup):
    _changed, plan = restore(client, backup, check_mode=True, ns_from=[SHOP + ".*"], ns_to=[SHOP2 + ".*"],
                             drop=True)
    assert sorted((n["source_namespace"], n["namespace"], n["action"]) for n in plan["namespaces"]) == [
        (SHOP + ".orders", SHOP2 + ".orders", "create"), (SHOP + ".users", SHOP2 + ".users", "create")]
    assert SHOP2 not in client.list_database_names()


@pytest.mark.parametrize("options, error, message", [
    ({"ns_from": ["nsr_shpo.*"], "ns_to": [SHOP2 + ".*"]}, NamespaceNotFound,
     "ns_from 'nsr_shpo.*' (ns_to 'nsr_shop2.*') matches none of the namespaces being restored; the source "
     "has: nsr_shop.orders, nsr_shop.users"),
    ({"ns_from": [SHOP + ".orders", SHOP + ".*"], "ns_to": [SHOP2 + ".o", SHOP + "_x.*"]}, InvalidOption,
     "never applies"),
    ({"ns_from": [SHOP + ".*"], "ns_to": ["nsr_a b.*"]}, InvalidOption,
     "which is not a valid namespace: its database part 'nsr_a b'"),
    ({"ns_from": ["$d$.$c$"], "ns_to": [SHOP + ".all"]}, InvalidOption, "all into nsr_shop.all"),
])
def test_a_rename_plan_the_user_cannot_mean_drops_nothing(client, backup, options, error, message):
    before = dict((name, documents(client, SHOP, name)) for name in ("orders", "users"))
    for check_mode in (True, False):
        with pytest.raises(error) as failure:
            restore(client, backup, check_mode=check_mode, drop=True, **options)
        assert message in failure.value.message
    assert dict((name, documents(client, SHOP, name)) for name in ("orders", "users")) == before
    assert SHOP2 not in client.list_database_names()


MODULE = """
- hosts: localhost
  gather_facts: false
  tasks:
    - dbops.mongodb_backup.{module}:
        login_host: 127.0.0.1
        login_port: {port}
        connect_timeout: 1
        {target}: "{path}"
        db: "{db}"
{extra}
"""


@pytest.mark.parametrize("module, target", [("mongodb_dump", "path"), ("mongodb_restore", "source")])
@pytest.mark.parametrize("db, collection, message", [
    ("a/b", None, "db 'a/b' is not a valid database name: it contains '/'"),
    ("..", None, "db '..' is not a valid database name: it contains '.'"),
    ("shop", "a$b", "collection 'a$b' is not a valid collection name: it contains '$'"),
])
def test_invalid_names_fail_clearly_before_connecting(tmp_path, module, target, db, collection, message):
    """The port is closed: the task must fail on the name, never reach the connection."""
    path = tmp_path / "data"
    if module == "mongodb_restore":
        path.mkdir()
    extra = '        collection: "%s"' % collection if collection else ""
    code, out = run_playbook(MODULE.format(module=module, port=free_port(), target=target,
                                           path=path, db=db, extra=extra), tmp_path)
    assert code != 0
    assert message in out, out
    assert "Traceback" not in out and "unexpected error" not in out
    assert not (tmp_path / "data.partial").exists() and not (tmp_path / "a").exists()
    if module == "mongodb_dump":
        assert not path.exists()


RESTORE_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - dbops.mongodb_backup.mongodb_restore:
        uri: "{{{{ lookup('env', 'MONGODB_URI') }}}}"
        source: "{source}"
        ns_from: ["{ns_from}"]
        ns_to: ["nsr_shop2.*"]
        drop: true
      register: restored
    - debug:
        msg: "restored {{{{ restored.namespaces | map(attribute='namespace') | sort | join(',') }}}}"
"""


def test_the_module_renames_with_wildcards_and_refuses_a_rule_that_matches_nothing(server, client, backup,
                                                                                   tmp_path):
    newer_orders = documents(client, SHOP, "orders")
    code, out = run_playbook(RESTORE_PLAYBOOK.format(source=backup, ns_from="nsr_shop.*"), tmp_path, server=server)
    assert code == 0, out
    assert "restored nsr_shop2.orders,nsr_shop2.users" in out
    assert documents(client, SHOP, "orders") == newer_orders
    assert len(documents(client, SHOP2, "orders")) == 50

    client.drop_database(SHOP2)
    code, out = run_playbook(RESTORE_PLAYBOOK.format(source=backup, ns_from="nsr_shpo.*"), tmp_path, server=server)
    assert code != 0
    assert ("ns_from 'nsr_shpo.*' (ns_to 'nsr_shop2.*') matches none of the namespaces being restored; "
            "the source has: nsr_shop.orders, nsr_shop.users") in out
    assert documents(client, SHOP, "orders") == newer_orders
    assert SHOP2 not in client.list_database_names()
