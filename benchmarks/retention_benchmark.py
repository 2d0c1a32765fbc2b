#!/usr/bin/env python
"""Retention on a large catalog: the plan for 10,000 entries must take under a second of engine time.

The catalog is tests/retention_bed.py's: daily logical backups, hourly oplog slices, an oplog gap and an EBS
snapshot set, registered as the engine registers them. Measured, each as the median of --rounds:
  - read: Catalog.load (reading and parsing catalog.json), the floor any retention run pays;
  - plan: retention.plan.make_plan under the issue's policy (keep_daily 30, keep_weekly 12, keep_monthly 12,
    keep_yearly 3, pitr_window_days 7), the engine time the target is about;
  - check-run: retention.apply.run in check mode (read, plan, the scans of the root for orphans, unregistered
    backups and *.partial work), the whole module's work without deleting.
Prints the figures and the ratios plan / read and check-run / read; --check exits 1 when plan is 1 s or more.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import collection_link  # noqa: E402  (tools/, put on sys.path above)

collection_link.expose()

import retention_bed  # noqa: E402
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog.store import Catalog  # noqa: E402
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.retention import apply  # noqa: E402
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.retention.plan import make_plan  # noqa: E402
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.retention.policy import Policy  # noqa: E402

POLICY = {"keep_daily": 30, "keep_weekly": 12, "keep_monthly": 12, "keep_yearly": 3, "pitr_window_days": 7}
TARGET_SECONDS = 1.0


def timed(function, rounds):
    times = []
    for _round in range(rounds):
        started = time.perf_counter()
        outcome = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), outcome


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=401, help="daily backups (default 401: with hourly slices, a gap and "
                                                              "the snapshot set, 10,007 catalog entries)")
    parser.add_argument("--now", default="2024-05-01T23:00:00Z", help="the time of the last slice and the plan")
    parser.add_argument("--rounds", type=int, default=5, help="measured runs of each step (default 5)")
    parser.add_argument("--files", action="store_true", help="write the slice files too (the check run then "
                                                             "scans 10,000 files instead of the backup directories)")
    parser.add_argument("--json-out", help="write the figures here as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 when the plan takes 1 s or more")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="dbops-retention-bench-")
    try:
        started = time.perf_counter()
        bed = retention_bed.build(work, now=args.now, days=args.days, gap_day="2024-04-27",
                                  snapshot_day="2023-11-15", verified_days=["2023-09-15"], with_files=args.files)
        built = time.perf_counter() - started
        catalog = Catalog.load(work)
        entries = len(catalog.backups) + len(catalog.slices) + len(catalog.gaps)
        policy = Policy(**POLICY)
        read, _catalog = timed(lambda: Catalog.load(work), args.rounds)
        plan_seconds, plan = timed(lambda: make_plan(catalog, policy, bed.now), args.rounds)
        run_seconds, (_changed, result) = timed(
            lambda: apply.run(work, policy, now=bed.now, check_mode=True), args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    figures = {
        "entries": entries, "backups": len(catalog.backups), "slices": len(catalog.slices),
        "build_seconds": round(built, 2), "read_seconds": round(read, 4), "plan_seconds": round(plan_seconds, 4),
        "check_run_seconds": round(run_seconds, 4),
        "plan_to_read": round(plan_seconds / read, 2), "check_run_to_read": round(run_seconds / read, 2),
        "deleted_backups": len(plan.delete_backups), "deleted_slices": len(plan.delete_slices),
        "kept_backups": len(plan.keep_backups), "kept_slices": len(plan.keep_slices),
        "cloud_snapshot_sets": len(result["cloud_snapshot_sets"]), "target_seconds": TARGET_SECONDS,
    }
    print("catalog: %(entries)d entries (%(backups)d backups and snapshot sets, %(slices)d slices), built in "
          "%(build_seconds)s s" % figures)
    print("%-10s %10s %8s" % ("step", "median s", "x read"))
    print("%-10s %10.4f %8s" % ("read", read, "1.00"))
    print("%-10s %10.4f %8.2f" % ("plan", plan_seconds, figures["plan_to_read"]))
    print("%-10s %10.4f %8.2f" % ("check-run", run_seconds, figures["check_run_to_read"]))
    print("plan: %(deleted_backups)d backups and %(deleted_slices)d slices deleted, %(kept_backups)d backups and "
          "%(kept_slices)d slices kept, %(cloud_snapshot_sets)d cloud snapshot set" % figures)
    met = plan_seconds < TARGET_SECONDS
    print("%s plan on %d entries %.3f s (target under %.1f s)" % ("PASS" if met else "FAIL", entries, plan_seconds,
                                                                  TARGET_SECONDS))
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump(figures, handle, indent=2)
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    sys.exit(main())
