"""Passwords with reserved characters never show, through the real modules run by ansible-playbook
(issue 8, defect 14). Ansible masks a no_log value only where it appears whole; a half-parsed URI
used to leak the pieces around the character that broke it, so every password here is two marker
words around a reserved character, and neither word may appear anywhere: msg, result, traceback
(-vvv output, with tracebacks on)."""

import json
import os

import pytest

from support import run_playbook, TOOLS_BIN

MONGODUMP = os.path.join(TOOLS_BIN, "mongodump")

MARKERS = ("Alpha7k", "Omega9q")
RESERVED = ["/", "@", "?", "#", "[", "]", ":", "%", "+", " ", "%zz", "/@?#[]:%+ "]
# Nothing listens on port 9; short timeouts for the URIs that parse (pymongo and mongodump alike).
URI = "mongodb://backup:%s@127.0.0.1:9/?authSource=admin&serverSelectionTimeoutMS=500&connectTimeoutMS=500"

# One task per module and URI (a loop would show each URI as the item label, which is Ansible's
# output, not the module's). mongodump waits 30 s for a server whatever the URI says, so the engine
# gets the URIs it refuses itself plus one that parses, with a `+` pymongo decodes to a space.
ENGINE_RESERVED = [char for char in RESERVED if char not in ("#", "[", "]", " ")]

TASKS = {
    "native": """
    - dbops.mongodb_backup.mongodb_dump:
        uri: "{{{{ uris[{index}] }}}}"
        connect_timeout: 1
        path: "{tmp}/native"
      register: native_{index}
      ignore_errors: true
""",
    "engine": """
    - dbops.mongodb_backup.mongodb_dump:
        uri: "{{{{ uris[{index}] }}}}"
        engine: mongodump
        mongodump_path: "{mongodump}"
        path: "{tmp}/engine"
      register: engine_{index}
      ignore_errors: true
""",
    "restore": """
    - dbops.mongodb_backup.mongodb_restore:
        uri: "{{{{ uris[{index}] }}}}"
        connect_timeout: 1
        source: "{tmp}"
      register: restore_{index}
      ignore_errors: true
""",
}

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  vars_files: ["{vars_file}"]
  tasks:
{tasks}
    - ansible.builtin.copy:
        content: "{{{{ {{{results}}} | to_json }}}}"
        dest: "{tmp}/results.json"
      no_log: true
"""


def _playbook(tmp_path, vars_file):
    tasks, results = [], []
    for kind, template in TASKS.items():
        for index, char in enumerate(RESERVED):
            if kind == "engine" and char not in ENGINE_RESERVED:
                continue
            tasks.append(template.format(index=index, tmp=tmp_path, mongodump=MONGODUMP))
            results.append("'%s_%d': %s_%d" % (kind, index, kind, index))
    return PLAYBOOK.format(vars_file=vars_file, tasks="".join(tasks), results=", ".join(results), tmp=tmp_path)


@pytest.mark.skipif(not os.access(MONGODUMP, os.X_OK),
                    reason="the real mongodump is not in %s (set MONGO_TOOLS_BIN)" % TOOLS_BIN)
def test_no_piece_of_the_password_shows_through_ansible(tmp_path):
    uris = [URI % (MARKERS[0] + char + MARKERS[1]) for char in RESERVED]
    vars_file = tmp_path / "vars.yml"
    vars_file.write_text(json.dumps({"uris": uris}))
    code, out = run_playbook(_playbook(tmp_path, vars_file), tmp_path,
                             extra_env={"ANSIBLE_VERBOSITY": "3", "ANSIBLE_DISPLAY_TRACEBACK": "error"})
    assert code == 0, out
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results) == 2 * len(RESERVED) + len(ENGINE_RESERVED)
    for name, result in results.items():
        assert result["failed"], (name, result)
        assert result["msg"] and not result["msg"].startswith("unexpected error"), (name, result["msg"])
    dumped = json.dumps(results)
    for marker in MARKERS:
        assert marker not in out, out
        assert marker not in dumped
    # The unescaped ones are named as such, with what to do; the others name the host they tried.
    assert dumped.count("the user name or password in uri holds a character that must be percent-escaped") >= 3 * 6
    assert "mongodb://********@127.0.0.1:9/" in results["engine_%d" % RESERVED.index("+")]["msg"]
