# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A pool of worker threads that stops the other workers when one fails."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import Cancelled


class FailFastPool:
    """Run ``function(item)`` for each item on up to ``workers`` threads.

    The first failure sets ``failed``; long-running jobs call ``check()`` between steps and stop
    with ``Cancelled``. ``run`` returns the results in item order, or raises the first failure
    that was not a cancellation.
    """

    def __init__(self, workers, name):
        self.workers = max(1, int(workers))
        self.name = name
        self.failed = threading.Event()

    def check(self):
        if self.failed.is_set():
            raise Cancelled()

    def _guarded(self, function, item):
        try:
            self.check()
            return function(item)
        except BaseException:
            self.failed.set()
            raise

    def run(self, function, items):
        items = list(items)
        with ThreadPoolExecutor(max_workers=min(self.workers, max(1, len(items))),
                                thread_name_prefix=self.name) as pool:
            futures = [pool.submit(self._guarded, function, item) for item in items]
        errors = [f.exception() for f in futures if f.exception() is not None]
        root_causes = [e for e in errors if not isinstance(e, Cancelled)]
        if errors:
            raise (root_causes or errors)[0]
        return [f.result() for f in futures]
