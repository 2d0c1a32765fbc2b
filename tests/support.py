"""What the tests share that is not a fixture: where things are, and running playbooks as an operator does.

The root conftest.py puts this directory on sys.path, so every test imports it as ``support``.
"""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Real mongodump output and server oplogs from the MongoDB Database Tools (../shared/compat, see MANIFEST.md).
COMPAT = os.path.join(REPO, "..", "shared", "compat", "mongo-tools")
TESTDATA = os.path.join(COMPAT, "mongorestore", "testdata")
# The real mongodump, mongorestore and bsondump (../shared/mongo-tools/README.md).
TOOLS_BIN = os.environ.get("MONGO_TOOLS_BIN") or os.path.join(REPO, "..", "shared", "mongo-tools", "bin")


def run_playbook(playbook_text, tmp_path, server=None, extra_env=None, check=False, password=None):
    """Run a playbook through ansible-playbook; returns (returncode, stdout+stderr).

    The URI travels through the environment (MONGODB_URI), never argv.
    """
    playbook = tmp_path / "playbook.yml"
    playbook.write_text(playbook_text)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    if server is not None:
        env["MONGODB_URI"] = server.uri
    env.update(extra_env or {})
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), str(playbook)]
    if check:
        argv.append("--check")
    process = subprocess.run(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    return process.returncode, process.stdout.decode("utf-8", "replace")


def run_project_playbook(name, server, vars_file, check=False):
    """One of playbooks/*.yml as an operator runs it: variables from a file, the URI from the environment."""
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), MONGODB_URI=server.uri,
               ANSIBLE_NOCOLOR="1")
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
            os.path.join(REPO, "playbooks", name), "-e", "@%s" % vars_file] + (["--check"] if check else [])
    process = subprocess.run(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             check=False)
    return process.returncode, process.stdout.decode("utf-8", "replace")


def run_project_playbook_with(name, server, extra_vars, tmp_path, check=False):
    """run_project_playbook with ``extra_vars`` written to a 0600 vars file (it may hold passwords)."""
    vars_file = tmp_path / ("%s.vars.json" % name)
    vars_file.write_text(json.dumps(extra_vars))
    os.chmod(str(vars_file), 0o600)
    return run_project_playbook(name, server, vars_file, check=check)


def load_result(path):
    with open(path) as handle:
        return json.load(handle)


def is_gzip(path):
    """True when the file starts with the gzip magic (what mongorestore and our readers look at)."""
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def start_test_server(tmp_path_factory, name, tls_pem=None):
    """A loopback test server (mongod when present, else FerretDB) with data in a temp dir; with
    ``tls_pem`` it also listens with that certificate (on ``tls_port``), without it it has an oplog."""
    import testserver  # tools/, on sys.path through the root conftest.py
    server = testserver.start_server(str(tmp_path_factory.mktemp(name)), tls_pem=tls_pem)
    if tls_pem is None:
        server.ensure_oplog()
    return server


def tls_connection_options(server, **extra):
    """Connection options for the TLS listener of a test server started with ``tls_pem``."""
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
    return client_utils.ConnectionOptions(
        login_host="127.0.0.1", login_port=server.tls_port, login_user=server.username,
        login_password=server.password, direct_connection=True, tls=True, connect_timeout=3, **extra)


MODULE_TASK_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - {module}:
{options}
{diff}      register: result
      ignore_errors: true
    - ansible.builtin.copy:
        content: "{{{{ result | to_json }}}}"
        dest: "{result_file}"
      check_mode: false
"""


def run_module_task(tmp_path, module, check=False, diff=False, server=None, **options):
    """Run one task of ``module`` through ansible-playbook and return what it registered (failed or not).

    With ``server`` the URI (with its password) reaches the task through the environment, never argv.
    """
    result_file = tmp_path / "result.json"
    if result_file.exists():
        result_file.unlink()
    if server is not None:
        options["uri"] = "{{ lookup('ansible.builtin.env', 'MONGODB_URI') }}"
    lines = "\n".join("        %s: %s" % (key, json.dumps(value)) for key, value in options.items())
    text = MODULE_TASK_PLAYBOOK.format(module=module, options=lines, result_file=result_file,
                                       diff="      diff: true\n" if diff else "")
    code, out = run_playbook(text, tmp_path, server=server, check=check)
    assert code == 0, out
    return json.loads(result_file.read_text())


# --------------------------------------------------------------------------- data helpers

def compat_file(*parts):
    """A path in ../shared/compat; CI always has it beside the checkout, so a missing file fails, never skips."""
    assert os.path.isdir(COMPAT), "compat fixtures missing at %s" % os.path.abspath(COMPAT)
    path = os.path.join(COMPAT, *parts)
    assert os.path.exists(path), "fixture missing: %s" % path
    return path


def compat_ext_json(*parts):
    """A fixture of ../shared/compat in MongoDB Extended JSON, decoded into dicts in field order."""
    from bson import json_util
    with open(os.path.join(COMPAT, *parts)) as handle:
        return json_util.loads(handle.read(), json_options=json_util.JSONOptions(document_class=dict))


def raw_documents(client, db, name):
    """Documents as the server stores them, sorted by _id, to compare byte for byte."""
    from bson.codec_options import CodecOptions
    from bson.raw_bson import RawBSONDocument
    collection = client[db].get_collection(name, codec_options=CodecOptions(document_class=RawBSONDocument))
    return [bytes(doc.raw) for doc in collection.find().sort("_id", 1)]


def interleave(cases, seed):
    """One oplog from several op streams, shuffled but keeping each stream's order."""
    import random
    streams = [list(case["ops"]) for case in cases]
    rng = random.Random(seed)
    result = []
    while any(streams):
        stream = rng.choice([s for s in streams if s])
        result.append(stream.pop(0))
    return result


def remap_namespace(namespace, mapping):
    """``mapping`` renames whole namespaces ("a.b": "c.d") or databases ("a": "c")."""
    if namespace in mapping:
        return mapping[namespace]
    database, dot, rest = namespace.partition(".")
    return mapping.get(database, database) + dot + rest


def remap_entry(entry, mapping):
    """An oplog entry with its namespaces renamed: ns, renameCollection and to, idIndex.ns and the
    ops nested in applyOps."""
    entry = dict(entry)
    if isinstance(entry.get("ns"), str):
        entry["ns"] = remap_namespace(entry["ns"], mapping)
    command = entry.get("o")
    if entry.get("op") == "c" and isinstance(command, dict):
        command = dict(command)
        for field in ("renameCollection", "to"):
            if isinstance(command.get(field), str):
                command[field] = remap_namespace(command[field], mapping)
        if isinstance(command.get("idIndex"), dict) and "ns" in command["idIndex"]:
            command["idIndex"] = dict(command["idIndex"], ns=remap_namespace(command["idIndex"]["ns"], mapping))
        if isinstance(command.get("applyOps"), list):
            command["applyOps"] = [remap_entry(op, mapping) for op in command["applyOps"]]
        entry["o"] = command
    return entry
