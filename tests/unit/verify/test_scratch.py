"""How a verification recognises the backup's source, and what it drops afterwards."""

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.verify import scratch


def test_addresses_match_across_names_of_the_same_host():
    assert scratch._endpoints("localhost:27017") & scratch._endpoints("127.0.0.1:27017")
    assert scratch._endpoints("LOCALHOST:27017") & scratch._endpoints("localhost:27017")
    assert not scratch._endpoints("localhost:27017") & scratch._endpoints("127.0.0.1:27018")
    assert scratch._endpoints("[::1]:27017") >= set([("::1", "27017")])
    assert not scratch._endpoints("db1.elsewhere.invalid:27017") & scratch._endpoints("127.0.0.1:27017")


def test_every_recorded_address_of_the_source_counts():
    manifest = {"server": {"address": "db2:27017", "hosts": ["db1:27017", "db2:27017", "db3:27017"]},
                "member": "db2:27017"}
    assert scratch.source_addresses(manifest, {"member": "db9:27017"}) == [
        "db1:27017", "db2:27017", "db3:27017", "db9:27017"]
    assert scratch.source_addresses({"server": {"tool": "mongodump"}, "member": None}) == []  # engine: mongodump


def test_whole_user_databases_are_dropped_but_only_collections_of_admin_and_config():
    assert scratch.restored_places(["shop.orders", "shop.items", "crm.users", "admin.settings", "config.x"]) == (
        ["crm", "shop"], ["admin.settings", "config.x"])
