# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Paired with GCE_ARGUMENT_SPEC in plugins/module_utils/module.py: change both together.
    DOCUMENTATION = r'''
options:
  project:
    description: The Google Cloud project of the disks and snapshots.
    type: str
    required: true
  api_endpoint:
    description: The Compute API endpoint, for a private endpoint or a test server (C(http://host:port) allowed).
    type: str
  auth_kind:
    description:
      - V(application) uses the application default credentials, V(serviceaccount) a key in O(service_account_file)
        or O(service_account_contents), V(anonymous) none (test endpoints only).
    type: str
    choices: [application, serviceaccount, anonymous]
    default: application
  service_account_file:
    description: A service account key file.
    type: path
  service_account_contents:
    description: A service account key, as JSON text. Never returned or logged.
    type: str
requirements:
  - google-cloud-compute >= 1.14
'''
