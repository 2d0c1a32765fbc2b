# -*- coding: utf-8 -*-
"""Every module's documentation renders with ansible-doc, and its secrets are no_log.

Modules are found in plugins/modules, so a new module is covered without editing this file.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import importlib
import json
import os
import re
import subprocess
import sys

import pytest

from ansible.module_utils import basic
from support import REPO as REPO_ROOT

COLLECTION = "dbops.mongodb_backup"
MODULES = sorted(
    name[:-3] for name in os.listdir(os.path.join(REPO_ROOT, "plugins", "modules"))
    if name.endswith(".py") and not name.startswith("_"))

# Options of the shared connection doc fragment, which every module extends.
CONNECTION_OPTIONS = {"uri", "login_host", "login_port", "login_user", "login_password"}
SECRET_OPTIONS = ("login_password", "uri", "tls_certificate_key_file_password")
# Options particular to one module, on top of the connection ones.
MODULE_OPTIONS = {
    "mongodb_dump": {"path", "archive", "oplog"},
    "mongodb_restore": {"source", "drop", "oplog_replay", "oplog_limit", "oplog_slices"},
    "mongodb_oplog_archive": {"backup_root", "slice_span_minutes", "compression"},
    "mongodb_backup_info": {"backup_root", "max_age", "target_time"},
    "mongodb_backup_catalog": {"backup_root", "state", "path", "label", "snapshot"},
    "mongodb_backup_retention": {"backup_root", "keep_last", "keep_daily", "keep_weekly", "keep_monthly",
                                 "keep_yearly", "pitr_window_days", "replica_set", "now"},
    "gce_disk_snapshot": {"project", "label", "disks", "guest_flush", "snapshot_type", "api_endpoint"},
    "gce_disk_restore": {"project", "label", "snapshots", "zone", "instance", "device_names", "api_endpoint"},
    "ebs_snapshot": {"label", "instance_id", "volume_ids", "copy_to_region", "region", "endpoint_url", "secret_key"},
}
# Modules that reach no server, so they have no connection options (and no secrets).
NO_CONNECTION = {"mongodb_backup_info", "mongodb_backup_catalog", "mongodb_backup_retention", "ebs_snapshot",
                 "gce_disk_snapshot", "gce_disk_restore"}
# Secrets of the cloud modules, by module.
CLOUD_SECRETS = {"ebs_snapshot": ("secret_key", "session_token"), "gce_disk_snapshot": ("service_account_contents",),
                 "gce_disk_restore": ("service_account_contents",)}


def ansible_doc(*args):
    """Run the venv's ansible-doc against the checkout exposed by the root conftest.py."""
    env = dict(os.environ,
               ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO_ROOT, ".cache", "collections"),
               ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ansible-doc"), "-t", "module"] + list(args),
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    return proc.returncode, proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8")


def expected_options(module):
    connection = set() if module in NO_CONNECTION else CONNECTION_OPTIONS
    return connection | MODULE_OPTIONS.get(module, set())


def test_modules_found():
    assert "mongodb_dump" in MODULES


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_text(module):
    returncode, out, err = ansible_doc("%s.%s" % (COLLECTION, module))
    assert returncode == 0, err
    assert "%s.%s" % (COLLECTION, module) in out
    assert "[WARNING]" not in err and "ERROR" not in err, err
    # The OPTIONS section runs up to the next heading; its entries start with "- " ("= " if required).
    section = re.search(r"^OPTIONS\b.*?\n(.*?)^(?=[A-Z])", out, re.MULTILINE | re.DOTALL)
    assert section, out
    documented = set(re.findall(r"^[-=] (\w+)\s", section.group(1), re.MULTILINE))
    assert expected_options(module) <= documented, out


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_json(module):
    fqcn = "%s.%s" % (COLLECTION, module)
    returncode, out, err = ansible_doc("--json", fqcn)
    assert returncode == 0, err
    doc = json.loads(out)[fqcn]["doc"]
    assert doc["module"] == module
    assert expected_options(module) <= set(doc["options"])
    if module in NO_CONNECTION:
        assert not set(SECRET_OPTIONS) & set(doc["options"])
        return
    assert doc["options"]["login_password"]["type"] == "str"
    for option in SECRET_OPTIONS:
        assert option in doc["options"], option


class ArgumentSpecCaptured(Exception):
    """Raised instead of building the AnsibleModule, carrying the arguments it was given."""


@pytest.mark.parametrize("module", MODULES)
def test_secrets_are_no_log(module, monkeypatch):
    def capture(self, *args, **kwargs):
        raise ArgumentSpecCaptured(kwargs.get("argument_spec", args[0] if args else None))

    monkeypatch.setattr(basic.AnsibleModule, "__init__", capture)
    plugin = importlib.import_module("ansible_collections.%s.plugins.modules.%s" % (COLLECTION, module))
    with pytest.raises(ArgumentSpecCaptured) as captured:
        plugin.main()
    spec = captured.value.args[0]
    if module in NO_CONNECTION:
        assert not set(SECRET_OPTIONS) & set(spec)
        for option in CLOUD_SECRETS.get(module, ()):
            assert spec[option].get("no_log") is True, "%s.%s is not no_log" % (module, option)
        return
    for option in SECRET_OPTIONS:
        assert spec[option].get("no_log") is True, "%s.%s is not no_log" % (module, option)
