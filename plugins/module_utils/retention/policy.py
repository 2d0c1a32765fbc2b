# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A retention policy: how many backups to keep, by count, by calendar period and by point-in-time window.

The calendar rules count periods that have a backup, as restic's ``forget`` does: ``keep_daily 30``
keeps the newest backup of each of the 30 most recent UTC days that have one (a day without a
backup does not use up one of the 30). Weeks are ISO weeks (Monday to Sunday, ``2024-W18``),
months and years are calendar ones, all in UTC. The rules add up: a backup is kept when any rule
keeps it, and the newest backup of a day may also be the newest of its week.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import InvalidOption

# (option, name in reasons): each keeps the newest backup of that many recent periods with a backup.
PERIODS = (("keep_daily", "daily"), ("keep_weekly", "weekly"), ("keep_monthly", "monthly"), ("keep_yearly", "yearly"))
OPTIONS = ("keep_last",) + tuple(option for option, _name in PERIODS) + ("pitr_window_days",)


def period_key(name, epoch):
    """The UTC period of ``name`` (daily, weekly, monthly, yearly) an epoch time falls in, as reasons print it."""
    moment = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=epoch)
    if name == "daily":
        return moment.strftime("%Y-%m-%d")
    if name == "weekly":
        year, week, _day = moment.isocalendar()
        return "%04d-W%02d" % (year, week)
    if name == "monthly":
        return moment.strftime("%Y-%m")
    return moment.strftime("%Y")


class Policy:
    """The counts of a retention policy; unset and 0 both mean "this rule keeps nothing"."""

    def __init__(self, **counts):
        unknown = sorted(set(counts) - set(OPTIONS))
        if unknown:
            raise InvalidOption("unknown retention setting %s; the settings are %s"
                                % (", ".join(unknown), ", ".join(OPTIONS)))
        self.counts = {}
        for option in OPTIONS:
            value = counts.get(option)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidOption("retention setting %s=%r is not a whole number of 0 or more" % (option, value))
            if value:
                self.counts[option] = value
        if not self.counts:
            raise InvalidOption("the retention policy keeps nothing: none of %s is set above 0, so every backup "
                                "would be deleted; nothing was deleted. Set at least one, such as keep_daily: 30"
                                % ", ".join(OPTIONS))

    def get(self, option):
        return self.counts.get(option, 0)

    def describe(self):
        return dict(self.counts)
