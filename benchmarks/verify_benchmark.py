#!/usr/bin/env python
"""What the content hash costs the dump, and what a verification costs compared with a plain restore.

On two loopback test servers (tools/testserver.py: a real mongod when found, else FerretDB), the source
loaded with the dump benchmark's dataset (dump_benchmark.ensure_dataset), rounds of, alternating:
  dump-hash     the engine's dump of the dataset as it runs (content hash per collection computed)
  dump-nohash   the same dump with the hash replaced by the plain document count it replaces
  restore       restore_engine.restore() of that dump into the scratch server (manifest sha256 check,
                data, indexes), the scratch emptied afterwards (not timed)
  verify        verify_engine.verify() of the same dump into the scratch server: sha256 check, restore,
                every document read back and hashed, options and indexes compared, restored data dropped
Also, once: the hash alone over the dump's .bson files in memory (its CPU cost per MB).

Targets: dump-hash time <= 1.10 x dump-nohash time (hashing must cost under 10%); verify / restore time
is reported with its parts (restore inside the verification, comparison, cleanup). Medians of the rounds.
Credentials never go on a command line.
"""

import argparse
import functools
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
sys.path.insert(0, HERE)

import collection_link  # noqa: E402  (tools/, put on sys.path above)

collection_link.expose()

import dump_benchmark  # noqa: E402
import testserver  # noqa: E402
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils  # noqa: E402
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import bsonio  # noqa: E402
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import content_hash  # noqa: E402
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump as dump_engine  # noqa: E402
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_outputs  # noqa: E402
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import restore as restore_engine  # noqa: E402
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical.dump_options import DumpOptions  # noqa: E402
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.verify import engine as verify_engine  # noqa: E402

HASH_COST_TARGET = 1.10  # dump-hash time / dump-nohash time, at most
log = dump_benchmark.log


class _CountOnly(content_hash.ContentHash):
    """What the dump did before content hashes: count the documents of a batch, nothing else."""

    def update(self, raw_batch):
        count = dump_outputs.count_documents(raw_batch)
        self.documents += count
        return count


class _Without:
    """The ``content_hash`` the dump's sinks see, with the hash replaced by the count (dump-nohash only)."""

    ContentHash = _CountOnly


def timed(function):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def dump(source, args, path, hashed):
    options = DumpOptions(path=path, db=args.db, num_parallel_collections=args.parallel, label="bench")
    facts = client_utils.server_facts(source)
    dump_outputs.content_hash = content_hash if hashed else _Without
    try:
        return timed(lambda: dump_engine.dump(source, options, facts))
    finally:
        dump_outputs.content_hash = content_hash


def restore(scratch, args, path):
    options = restore_engine.RestoreOptions(source=path, num_parallel_collections=args.parallel)
    seconds, cpu, _result = timed(lambda: restore_engine.restore(scratch, options))
    scratch.drop_database(args.db)  # not timed: the verification drops what it restored itself
    return seconds, cpu, None


def verify(scratch, args, path):
    options = verify_engine.VerifyOptions(path=path, num_parallel_collections=args.parallel)
    return timed(lambda: verify_engine.verify(scratch, options))


def hash_alone(path):
    """CPU seconds to hash every .bson of a dump in memory, and the bytes hashed."""
    seconds, size = 0.0, 0
    for directory, _dirs, files in os.walk(path):
        for name in files:
            if name.endswith(".bson"):
                with bsonio.open_decompressed(os.path.join(directory, name)) as handle:
                    for batch in bsonio.read_batches(handle, name, batch_bytes=4 * 1024 * 1024):
                        data = b"".join(batch)
                        started = time.process_time()
                        content_hash.ContentHash().update(data)
                        seconds += time.process_time() - started
                        size += len(data)
    return seconds, size


def median(values):
    return statistics.median(values)


def run(args):
    source_server = testserver.start_server(tempfile.mkdtemp(prefix="dbops-bench-source-"))
    scratch_server = testserver.start_server(tempfile.mkdtemp(prefix="dbops-bench-scratch-"))
    work = tempfile.mkdtemp(prefix="dbops-bench-verify-")
    try:
        args.uri = source_server.uri
        source, scratch = source_server.client(), scratch_server.client()
        fresh = functools.partial(source_server.client, serverSelectionTimeoutMS=5000)
        dataset = dump_benchmark.ensure_dataset(source, args, fresh)
        label = dump_benchmark.server_label(source)
        runs = dict((name, []) for name in ("dump-hash", "dump-nohash", "restore", "verify"))
        for round_number in range(1, args.rounds + 1):
            for hashed in (round_number % 2 == 1, round_number % 2 == 0):  # alternate which goes first
                name = "dump-hash" if hashed else "dump-nohash"
                path = os.path.join(work, name)
                seconds, cpu, (_changed, result) = dump(source, args, path, hashed)
                runs[name].append({"seconds": seconds, "cpu": cpu, "bytes": result["total_bytes"]})
                log("round %d %-12s %6.2f s (client CPU %.2f s)" % (round_number, name, seconds, cpu))
                if hashed:
                    kept = path
                else:
                    shutil.rmtree(path)
            seconds, cpu, _result = restore(scratch, args, kept)
            runs["restore"].append({"seconds": seconds, "cpu": cpu})
            log("round %d %-12s %6.2f s" % (round_number, "restore", seconds))
            seconds, cpu, (_changed, result) = verify(scratch, args, kept)
            runs["verify"].append({"seconds": seconds, "cpu": cpu, "restore_seconds": result["restore_seconds"],
                                   "compare_seconds": result["compare_seconds"], "ok": result["verified"]["ok"]})
            log("round %d %-12s %6.2f s (its restore %.2f s, comparison %.2f s)"
                % (round_number, "verify", seconds, result["restore_seconds"], result["compare_seconds"]))
            hash_cpu, hashed_bytes = hash_alone(kept)
            shutil.rmtree(kept)
        report(args, label, dataset, runs, hash_cpu, hashed_bytes)
        source.close()
        scratch.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        source_server.stop()
        scratch_server.stop()


def report(args, label, dataset, runs, hash_cpu, hashed_bytes):
    summary = dict((name, {"seconds": round(median(r["seconds"] for r in rounds), 3),
                           "cpu": round(median(r["cpu"] for r in rounds), 3),
                           "rounds": [round(r["seconds"], 2) for r in rounds]}) for name, rounds in runs.items())
    size = runs["dump-hash"][-1]["bytes"]
    hash_ratio = summary["dump-hash"]["seconds"] / summary["dump-nohash"]["seconds"]
    verify_ratio = summary["verify"]["seconds"] / summary["restore"]["seconds"]
    inner_restore = median(r["restore_seconds"] for r in runs["verify"])
    compare = median(r["compare_seconds"] for r in runs["verify"])
    print()
    print("server: %s   dataset: %.0f MB BSON in %d collections   parallelism: %d   rounds: %d"
          % (label, size / 1e6, args.collections, args.parallel, args.rounds))
    dump_benchmark.print_table(("variant", "median s", "rounds s", "client CPU s", "MB/s"), [
        (name, "%.2f" % s["seconds"], ", ".join("%.2f" % x for x in s["rounds"]), "%.2f" % s["cpu"],
         "%.1f" % (size / s["seconds"] / 1e6)) for name, s in summary.items()])
    print()
    rows = [
        ("dump-hash / dump-nohash time", "%.3fx" % hash_ratio, "<= %.2fx" % HASH_COST_TARGET,
         "PASS" if hash_ratio <= HASH_COST_TARGET else "FAIL"),
        ("hash alone, CPU per dump time", "%.1f%% (%.2f s for %.0f MB: %.0f MB/s)" % (
            100 * hash_cpu / summary["dump-hash"]["seconds"], hash_cpu, hashed_bytes / 1e6,
            hashed_bytes / max(hash_cpu, 1e-9) / 1e6), "-", "info"),
        ("verify / restore time", "%.2fx" % verify_ratio, "-", "info"),
        ("  restore inside verify / restore", "%.2fx" % (inner_restore / summary["restore"]["seconds"]), "-", "info"),
        ("  comparison (read back + hash) / restore", "%.2fx" % (compare / summary["restore"]["seconds"]), "-",
         "info"),
        ("  comparison / dump-nohash (one read of the data)", "%.2fx" % (compare / summary["dump-nohash"]["seconds"]),
         "-", "info"),
        ("hash alone, CPU per verify time", "%.1f%%" % (100 * hash_cpu / summary["verify"]["seconds"]), "< 10%",
         "PASS" if hash_cpu / summary["verify"]["seconds"] < 0.10 else "FAIL"),
        ("every verification passed", str(all(r["ok"] for r in runs["verify"])), "True",
         "PASS" if all(r["ok"] for r in runs["verify"]) else "FAIL"),
    ]
    dump_benchmark.print_table(("check", "value", "target", "result"), rows)
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump({"server": label, "bytes": size, "summary": summary, "runs": runs, "checks": rows}, handle,
                      indent=2)
    return rows


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=50, help="dataset size in MiB of BSON (default 50)")
    parser.add_argument("--collections", type=int, default=4, help="number of collections (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--parallel", type=int, default=4, help="collections at once (default 4)")
    parser.add_argument("--db", default="dbops_bench", help="database loaded and dumped (default dbops_bench)")
    parser.add_argument("--load-workers", type=int, default=2, help="loader processes (default 2)")
    parser.add_argument("--json-out", help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    args.reload = True  # the servers are new every run
    return args


if __name__ == "__main__":
    run(parse_args())
