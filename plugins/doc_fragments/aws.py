# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Paired with AWS_ARGUMENT_SPEC in plugins/module_utils/module.py: change both together.
    DOCUMENTATION = r'''
options:
  region:
    description:
      - The AWS region of the volumes and snapshots.
      - Defaults to the environment variable E(AWS_REGION), else E(AWS_DEFAULT_REGION).
    type: str
  endpoint_url:
    description:
      - The EC2 endpoint to use instead of the region's public one (a VPC endpoint, or a test server).
    type: str
  access_key:
    description:
      - AWS access key id. Unset, boto3 looks in its usual places (environment, shared files, instance role).
    type: str
    aliases: [aws_access_key_id]
  secret_key:
    description:
      - AWS secret access key. Never returned or logged.
    type: str
    aliases: [aws_secret_access_key]
  session_token:
    description:
      - AWS session token for temporary credentials. Never returned or logged.
    type: str
    aliases: [aws_session_token]
  profile:
    description:
      - A profile of the AWS shared credentials and config files.
    type: str
    aliases: [aws_profile]
requirements:
  - boto3 >= 1.28
'''
