# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """The attributes every module of the collection declares.

    A module extends C(dbops.mongodb_backup.attributes) (check and diff mode), and
    C(dbops.mongodb_backup.attributes.platform) (every module takes POSIX locks with flock);
    C(dbops.mongodb_backup.attributes.info_module) replaces the first for modules that only read.
    In its own C(attributes) block a module then sets only C(support) and C(details).
    """

    DOCUMENTATION = r'''
options: {}
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying the target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
'''

    PLATFORM = r'''
options: {}
attributes:
  platform:
    description: Target operating systems the module can run on (the host that runs the module, not the MongoDB server).
    support: full
    platforms: posix
'''

    INFO_MODULE = r'''
options: {}
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying the target.
    support: full
    details:
      - This module only reads and never changes anything, so it runs the same in check mode.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: N/A
    details:
      - This module only reads and never changes anything.
'''
