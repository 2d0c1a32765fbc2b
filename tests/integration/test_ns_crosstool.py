"""ns_include/ns_exclude/ns_from/ns_to against the real mongorestore: the same cases planned by our
restore engine and by ``mongorestore --dryRun -v`` (which logs, for every collection it would
restore, where it would restore it), on one small dump made by the real mongodump.

Where mongorestore goes on silently with a rule that cannot be what the user meant, we refuse
before writing anything; those cases assert what mongorestore would have done, so the table
documents each difference.
"""

import json
import os
import re
import subprocess

import pytest

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import restore as restore_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import InvalidOption, NamespaceNotFound

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.environ.get("MONGO_TOOLS_BIN") or os.path.join(REPO, "..", "shared", "mongo-tools", "bin")
MONGODUMP = os.path.join(TOOLS, "mongodump")
MONGORESTORE = os.path.join(TOOLS, "mongorestore")

pytestmark = pytest.mark.skipif(
    not (os.access(MONGODUMP, os.X_OK) and os.access(MONGORESTORE, os.X_OK)),
    reason="the real mongodump/mongorestore are not in %s (set MONGO_TOOLS_BIN)" % TOOLS)

# The source: odd names on purpose (a literal *, a backslash and a dot inside collection names).
DATA = {
    "nsx_shop": ["orders", "users", "ord*ers", "x.y", "b\\s"],
    "nsx_shopx": ["orders"],
    "nsx_other": ["orders"],
}
ALL = sorted("%s.%s" % (db, coll) for db, colls in DATA.items() for coll in colls)
SHOP = [ns for ns in ALL if ns.startswith("nsx_shop.")]
FOUND = re.compile(r'found collection (`[^`]*`|"(?:[^"\\]|\\.)*") bson to restore to (`[^`]*`|"(?:[^"\\]|\\.)*")')


@pytest.fixture(scope="module")
def dump_dir(server, tmp_path_factory):
    """A mongodump directory of DATA, and a 0600 config file carrying the URI for the tools."""
    base = tmp_path_factory.mktemp("ns_crosstool")
    config = base / "tools.yml"
    fd = os.open(str(config), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("uri: %s\n" % json.dumps(server.uri))
    client = server.client()
    try:
        for db, collections in DATA.items():
            client.drop_database(db)
            for name in collections:
                client[db][name].insert_many([{"_id": i, "in": "%s.%s" % (db, name)} for i in range(3)])
        for db in DATA:
            subprocess.run([MONGODUMP, "--config", str(config), "--db", db, "--out", str(base / "dump")],
                           check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    finally:
        for db in DATA:
            client.drop_database(db)
        client.close()
    return base / "dump", config


def theirs(dump_dir, options):
    """What the real mongorestore would restore where: ({source: target}, None) or (None, error)."""
    directory, config = dump_dir
    argv = [MONGORESTORE, "--config", str(config), "--dryRun", "-v"]
    for pattern in options.get("ns_include", []):
        argv += ["--nsInclude", pattern]
    for pattern in options.get("ns_exclude", []):
        argv += ["--nsExclude", pattern]
    for source, target in zip(options.get("ns_from", []), options.get("ns_to", [])):
        argv += ["--nsFrom", source, "--nsTo", target]
    process = subprocess.run(argv + [str(directory)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             check=False)
    output = process.stdout.decode("utf-8", "replace")
    if process.returncode != 0:
        failed = [line for line in output.splitlines() if "Failed:" in line]
        return None, (failed or [output])[-1]
    return dict((_unquote(a), _unquote(b)) for a, b in FOUND.findall(output)), None


def _unquote(text):
    return text[1:-1] if text.startswith("`") else json.loads(text)


def ours(dump_dir, options):
    """What our restore engine plans (no server needed): ({source: target}, None) or (None, error)."""
    directory, _config = dump_dir
    try:
        planned = restore_engine.plan_restore(restore_engine.open_source(str(directory)),
                                              restore_engine.RestoreOptions(source=str(directory), **options))
    except (InvalidOption, NamespaceNotFound) as exc:
        return None, exc.message
    return dict((p.item.namespace, p.target) for p in planned), None


def renamed(prefix_from, prefix_to, namespaces=ALL):
    return dict((ns, prefix_to + ns[len(prefix_from):] if ns.startswith(prefix_from) else ns)
                for ns in namespaces)


# (case, options, what both restore: {source: target} for the same plan, "refused by both")
SAME = [
    ("everything", {}, dict((ns, ns) for ns in ALL)),
    ("wildcard rename: the defect of issue 8", {"ns_from": ["nsx_shop.*"], "ns_to": ["nsx_shop2.*"]},
     renamed("nsx_shop.", "nsx_shop2.")),
    ("include db.*", {"ns_include": ["nsx_shop.*"]}, dict((ns, ns) for ns in SHOP)),
    ("include db* takes shopx too", {"ns_include": ["nsx_shop*"]},
     dict((ns, ns) for ns in ALL if ns.startswith("nsx_shop"))),
    ("include *.orders", {"ns_include": ["*.orders"]}, dict((ns, ns) for ns in ALL if ns.endswith(".orders"))),
    ("exclude", {"ns_exclude": ["nsx_shop.*", "*.x.y"]}, dict((ns, ns) for ns in ALL if ns not in SHOP)),
    ("include a literal asterisk", {"ns_include": [r"nsx_shop.ord\*ers"]}, {"nsx_shop.ord*ers": "nsx_shop.ord*ers"}),
    ("rename a literal asterisk", {"ns_include": ["nsx_shop.*"], "ns_from": [r"nsx_shop.ord\*ers"],
                                   "ns_to": ["nsx_lit.x"]},
     dict(dict((ns, ns) for ns in SHOP), **{"nsx_shop.ord*ers": "nsx_lit.x"})),
    ("the last matching rule wins", {"ns_include": ["nsx_shop.*"], "ns_from": ["nsx_shop.*", "nsx_shop.orders"],
                                     "ns_to": ["nsx_a.*", "nsx_b.orders"]},
     dict(renamed("nsx_shop.", "nsx_a.", SHOP), **{"nsx_shop.orders": "nsx_b.orders"})),
    ("variables swap db and collection", {"ns_include": ["nsx_shop.*"], "ns_exclude": ["nsx_shop.b\\\\s"],
                                          "ns_from": ["$d$.$c$"], "ns_to": ["$c$.$d$"]},
     dict((ns, "%s.nsx_shop" % ns[len("nsx_shop."):]) for ns in SHOP if "\\" not in ns)),
    ("with variables * is literal", {"ns_include": ["nsx_shop.*"], "ns_from": ["nsx_shop.$c$"],
                                     "ns_to": ["nsx_v.$c$_*"]},
     dict((ns, "nsx_v.%s_*" % ns[len("nsx_shop."):]) for ns in SHOP)),
    ("a variable after a literal *", {"ns_include": ["nsx_shop.*"], "ns_from": ["nsx_shop.ord*$c$"],
                                      "ns_to": ["nsx_v.$c$"]},
     dict(dict((ns, ns) for ns in SHOP), **{"nsx_shop.ord*ers": "nsx_v.ers"})),
    ("two wildcards, both sides leading", {"ns_include": ["nsx_shop.*"], "ns_from": ["*.*"], "ns_to": ["*_x.*_y"]},
     dict((ns, "nsx_shop_x.%s_y" % ns[len("nsx_shop."):]) for ns in SHOP)),
    ("rename with an exclude", {"ns_exclude": ["nsx_shop.users"], "ns_from": ["nsx_shop.*"],
                                "ns_to": ["nsx_shop2.*"]},
     renamed("nsx_shop.", "nsx_shop2.", [ns for ns in ALL if ns != "nsx_shop.users"])),
    ("** is two wildcards", {"ns_include": ["nsx_shop.**"]}, dict((ns, ns) for ns in SHOP)),
    ("an escaped backslash", {"ns_include": ["nsx_shop.b\\\\s"]}, {"nsx_shop.b\\s": "nsx_shop.b\\s"}),
    ("a lone backslash is dropped", {"ns_include": ["nsx_shop.b\\s"]}, {}),
    ("a trailing backslash is dropped", {"ns_include": ["nsx_shop.*\\"]}, dict((ns, ns) for ns in SHOP)),
    ("backslashes in a rename", {"ns_include": ["nsx_shop.*"], "ns_from": ["nsx_shop.b\\\\s"],
                                 "ns_to": ["nsx_z.\\\\q"]},
     dict(dict((ns, ns) for ns in SHOP), **{"nsx_shop.b\\s": "nsx_z.\\q"})),
    ("three wildcards", {"ns_include": ["nsx_shop.*"], "ns_from": ["*.*.*"], "ns_to": ["*.*_*"]},
     dict(dict((ns, ns) for ns in SHOP), **{"nsx_shop.x.y": "nsx_shop.x_y"})),
    ("wildcards inside names", {"ns_include": ["nsx_shop.*"], "ns_from": ["nsx_s*o*.*s"],
                                "ns_to": ["nsx_x*y*.*S"]},
     dict((ns, "nsx_xhyp.%sS" % ns[len("nsx_shop."):-1] if ns.endswith("s") else ns) for ns in SHOP)),
    ("variables around a dot", {"ns_include": ["nsx_shop.*"], "ns_from": ["nsx_shop.$a$.$b$"],
                                "ns_to": ["nsx_z.$b$-$a$"]},
     dict(dict((ns, ns) for ns in SHOP), **{"nsx_shop.x.y": "nsx_z.y-x"})),
    ("different numbers of wildcards", {"ns_from": ["nsx_shop.*"], "ns_to": ["nsx_a.b"]}, "refused by both"),
    ("$ in an include", {"ns_include": ["nsx_shop.$c$"]}, "refused by both"),
    ("an unknown variable", {"ns_from": ["nsx_shop.$x$"], "ns_to": ["nsx_a.$y$"]}, "refused by both"),
    ("a variable twice in ns_from", {"ns_from": ["nsx_shop.$x$$x$"], "ns_to": ["nsx_a.$x$"]}, "refused by both"),
    ("two sources into one target", {"ns_include": ["*.orders"], "ns_from": ["$d$.orders"],
                                     "ns_to": ["nsx_all.orders"]}, "refused by both"),
]


@pytest.mark.parametrize("case, options, expected", SAME, ids=[c[0] for c in SAME])
def test_same_plan_as_mongorestore(dump_dir, case, options, expected):
    their_plan, their_error = theirs(dump_dir, options)
    our_plan, our_error = ours(dump_dir, options)
    if expected == "refused by both":
        assert their_error and their_plan is None, their_plan
        assert our_error and our_plan is None, our_plan
        return
    assert their_error is None, their_error
    assert our_error is None, our_error
    assert their_plan == expected
    assert our_plan == expected


# (case, options, what mongorestore does instead, a piece of our error)
REFUSED = [
    ("a bare database name includes nothing", {"ns_include": ["nsx_shop"]}, {},
     "ns_include pattern 'nsx_shop' is invalid: it has neither a '.' nor a '*'"),
    ("a rule that matches nothing", {"ns_from": ["nsx_nope.*"], "ns_to": ["nsx_x.*"]},
     dict((ns, ns) for ns in ALL),
     "ns_from 'nsx_nope.*' (ns_to 'nsx_x.*') matches none of the namespaces being restored; the source "
     "has: " + ", ".join(ALL)),
    ("a rule that a later rule always overrides",
     {"ns_include": ["nsx_shop.*"], "ns_from": ["nsx_shop.orders", "nsx_shop.*"], "ns_to": ["nsx_b.orders", "nsx_a.*"]},
     renamed("nsx_shop.", "nsx_a.", SHOP),
     "ns_from 'nsx_shop.orders' (ns_to 'nsx_b.orders') never applies"),
    # mongorestore numbers a leading * first and the others from the right: the pairs cross
    ("wildcards paired out of order", {"ns_include": ["nsx_shop.*"], "ns_from": ["nsx_sh*.*"], "ns_to": ["*.*"]},
     dict((ns, "%s.op" % ns[len("nsx_shop."):]) for ns in SHOP),
     "mongorestore then pairs them out of order"),
    ("an invalid target", {"ns_include": ["nsx_shop.orders"], "ns_from": ["nsx_shop.orders"],
                           "ns_to": ["nsx_a/b.orders"]},
     {"nsx_shop.orders": "nsx_a/b.orders"},
     "which is not a valid namespace: its database part 'nsx_a/b'"),
]


@pytest.mark.parametrize("case, options, mongorestore_does, our_error", REFUSED, ids=[c[0] for c in REFUSED])
def test_we_refuse_what_mongorestore_does_silently(dump_dir, case, options, mongorestore_does, our_error):
    their_plan, their_error = theirs(dump_dir, options)
    assert their_error is None, their_error
    assert their_plan == mongorestore_does
    our_plan, message = ours(dump_dir, options)
    assert our_plan is None, our_plan
    assert our_error in message
