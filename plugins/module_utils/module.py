# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible glue shared by every module: the connection argument spec and error conversion."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import traceback

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import bsonio
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import BackupError

# Paired with plugins/doc_fragments/connection.py: change both together.
CONNECTION_ARGUMENT_SPEC = dict(
    uri=dict(type="str", no_log=True),
    login_host=dict(type="str"),
    login_port=dict(type="int"),
    login_user=dict(type="str"),
    login_password=dict(type="str", no_log=True),
    login_database=dict(type="str"),
    replica_set=dict(type="str"),
    direct_connection=dict(type="bool"),
    tls=dict(type="bool", default=False),
    tls_ca_file=dict(type="path"),
    tls_certificate_key_file=dict(type="path"),
    tls_certificate_key_file_password=dict(type="str", no_log=True),
    tls_allow_invalid_hostnames=dict(type="bool", default=False),
    tls_allow_invalid_certificates=dict(type="bool", default=False),
    read_preference=dict(type="str", choices=list(client_utils.READ_PREFERENCES)),
    connect_timeout=dict(type="int", default=10),
    socket_timeout=dict(type="int", default=client_utils.DEFAULT_SOCKET_TIMEOUT),
)

# Paired with plugins/doc_fragments/aws.py: change both together.
AWS_ARGUMENT_SPEC = dict(
    region=dict(type="str", fallback=(env_fallback, ["AWS_REGION", "AWS_DEFAULT_REGION"])),
    endpoint_url=dict(type="str"),
    access_key=dict(type="str", aliases=["aws_access_key_id"], no_log=False),
    secret_key=dict(type="str", aliases=["aws_secret_access_key"], no_log=True),
    session_token=dict(type="str", aliases=["aws_session_token"], no_log=True),
    profile=dict(type="str", aliases=["aws_profile"]),
)

GCE_ARGUMENT_SPEC = dict(
    project=dict(type="str", required=True),
    api_endpoint=dict(type="str"),
    auth_kind=dict(type="str", default="application", choices=["application", "serviceaccount", "anonymous"]),
    service_account_file=dict(type="path"),
    service_account_contents=dict(type="str", no_log=True),
)

CONNECTION_MUTUALLY_EXCLUSIVE = [
    ["uri", "login_host"],
    ["uri", "login_port"],
    ["uri", "replica_set"],
]


class MongoDBModule(AnsibleModule):
    """AnsibleModule with the connection options and one place that reports engine errors."""

    def __init__(self, argument_spec, mutually_exclusive=None, **kwargs):
        spec = copy.deepcopy(CONNECTION_ARGUMENT_SPEC)
        spec.update(argument_spec)
        super(MongoDBModule, self).__init__(
            argument_spec=spec,
            mutually_exclusive=CONNECTION_MUTUALLY_EXCLUSIVE + list(mutually_exclusive or []),
            **kwargs)
        if client_utils.PYMONGO_IMPORT_ERROR is not None:
            self.fail_json(msg=missing_required_lib("pymongo"),
                           exception=str(client_utils.PYMONGO_IMPORT_ERROR))
        if bsonio.FASTCRC_IMPORT_ERROR is not None:
            self.fail_json(msg=missing_required_lib("fastcrc"),
                           exception=str(bsonio.FASTCRC_IMPORT_ERROR))

    @property
    def connection_options(self):
        return client_utils.ConnectionOptions.from_params(self.params)

    def run(self, function, *args, **kwargs):
        """Call the engine; an engine error becomes a failed task with its message."""
        try:
            return function(*args, **kwargs)
        except BackupError as exc:
            fail_with_engine_error(self, exc)
        except Exception as exc:  # a bug or an unexpected driver error: keep the trace
            secrets = self.connection_options.secrets
            trace = client_utils.redact(traceback.format_exc(), secrets)
            if client_utils.is_timeout(exc):  # a step the engine does not wrap still says what happened
                self.fail_json(msg=client_utils.redact(client_utils.driver_error_cause(exc), secrets),
                               exception=trace)
            self.fail_json(msg="unexpected error: %s" % client_utils.redact(exc, secrets), exception=trace)


def fail_with_engine_error(module, exc):
    """An engine error as a failed task: its message, and its details as return values."""
    result = dict(msg=exc.message, changed=False)
    result.update(exc.details)
    module.fail_json(**result)


def run_engine(module, function, *args, **kwargs):
    """For modules without a MongoDB connection: an engine error becomes a failed task with its message."""
    try:
        return function(*args, **kwargs)
    except BackupError as exc:
        fail_with_engine_error(module, exc)
