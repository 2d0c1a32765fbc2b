# -*- coding: utf-8 -*-
"""Every module uses the shared doc fragments: the attributes block, and the shared return values.

ansible-core merges fragments into DOCUMENTATION only, so a shared return value is repeated in each
module's RETURN; this test holds each copy to the text of plugins/doc_fragments/results.py.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import importlib

import pytest
import yaml

from ansible_collections.dbops.mongodb_backup.plugins.doc_fragments.results import ModuleDocFragment as Results

from test_ansible_doc import COLLECTION, MODULES

SHARED = yaml.safe_load(Results.RETURN)
INFO_MODULES = [m for m in MODULES if m.endswith("_info")]


def module_docs(module):
    plugin = importlib.import_module("ansible_collections.%s.plugins.modules.%s" % (COLLECTION, module))
    return yaml.safe_load(plugin.DOCUMENTATION), yaml.safe_load(plugin.RETURN)


@pytest.mark.parametrize("module", MODULES)
def test_attributes_come_from_the_shared_fragment(module):
    doc, _returns = module_docs(module)
    fragments = doc["extends_documentation_fragment"]
    assert "%s.attributes.platform" % COLLECTION in fragments
    expected = "%s.attributes.info_module" % COLLECTION if module in INFO_MODULES else "%s.attributes" % COLLECTION
    assert expected in fragments
    for name, attribute in (doc.get("attributes") or {}).items():
        assert "description" not in attribute, "%s: the description of %s comes from the fragment" % (module, name)
        assert attribute["support"] in ("full", "partial", "none", "N/A")


@pytest.mark.parametrize("module", MODULES)
def test_shared_return_values_match_the_fragment(module):
    _doc, returns = module_docs(module)
    for key in set(SHARED) & set(returns):
        for field in ("description", "type", "elements"):
            assert returns[key].get(field) == SHARED[key].get(field), "%s: %s.%s drifted from results.py" % (
                module, key, field)


def test_every_shared_return_value_is_used_by_two_modules_or_more():
    for key in SHARED:
        assert len([m for m in MODULES if key in module_docs(m)[1]]) >= 2, key


@pytest.mark.parametrize("fragment, spec", [("connection", "CONNECTION_ARGUMENT_SPEC"), ("aws", "AWS_ARGUMENT_SPEC"),
                                            ("gce", "GCE_ARGUMENT_SPEC")])
def test_option_fragments_and_their_argument_specs_agree(fragment, spec):
    """A doc fragment of options and the argument spec it documents: the same names, types and aliases."""
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils import module as module_utils
    documented = yaml.safe_load(importlib.import_module(
        "ansible_collections.%s.plugins.doc_fragments.%s" % (COLLECTION, fragment)).ModuleDocFragment.DOCUMENTATION)
    arguments = getattr(module_utils, spec)
    assert sorted(documented["options"]) == sorted(arguments)
    for name, option in documented["options"].items():
        assert option["type"] == arguments[name]["type"], name
        assert sorted(option.get("aliases") or []) == sorted(arguments[name].get("aliases") or []), name
