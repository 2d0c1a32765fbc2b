#!/usr/bin/env python
"""Oplog archiving throughput and a point-in-time restore through the archived slices.

Starts its own loopback test server (tools/testserver.py), writes a mixed workload that leaves
``--entries`` oplog entries, then measures in child processes (each with its own peak RSS):

* ``archive``: mongodb_oplog_archive's engine copying every entry into gzip slices
  (entries/s, MB/s on disk);
* ``pitr``: restoring the full backup taken before the workload and replaying its oplog plus
  the slices up to the last entry (the engine pitr_restore runs), in seconds and entries/s.

Timings live here only; tests never assert them.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from pymongo import monitoring

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, HERE)


def log(message):
    print(message, file=sys.stderr, flush=True)


def hot_id(number):
    return "doc-%06d" % number


def load_large_dataset(args, server, client):
    """The dump benchmark's dataset (--size-mb MiB in four collections) in database dbops_bench."""
    import dump_benchmark
    dataset_args = argparse.Namespace(db="dbops_bench", size_mb=args.size_mb, collections=4, reload=False,
                                      uri=server.uri, load_workers=2)
    dump_benchmark.ensure_dataset(client, dataset_args, server.client)


def setup(args, server, workdir):
    """Data, a full backup with oplog registered in a catalog, then the workload."""
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog import store as catalog_utils
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump as dump_engine
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_options

    client = server.client()
    if args.size_mb:
        load_large_dataset(args, server, client)
    server.ensure_oplog(4 * 1024 * 1024 * 1024)  # after the load: the oplog holds the hot set and the workload
    client.bench.hot.insert_many([{"_id": hot_id(i), "v": 0, "pad": "x" * 200} for i in range(args.hot_documents)])
    facts = client_utils.server_facts(client)
    root = os.path.join(workdir, "root")
    os.makedirs(root)
    started = time.time()
    _changed, dumped = dump_engine.dump(client, dump_options.DumpOptions(
        path=os.path.join(root, "full"), oplog=True, label="full"), facts)
    backup = {"bytes": dumped["total_bytes"], "documents": dumped["total_documents"],
              "seconds": round(time.time() - started, 1)}
    log("full backup: %(documents)d documents, %(bytes)d bytes in %(seconds).0f s" % backup)
    with catalog_utils.Catalog.locked(root) as catalog:
        catalog.add_backup_from_manifest(os.path.join(root, "full"))
        catalog.save()
    backup["workload"] = write_workload(client, args)
    backup["source"] = fingerprint(client)
    return root, backup


def write_workload(client, args):
    """About --entries oplog entries: 60% inserts into an append-only collection (insert_many),
    30% updates and 10% delete-and-reinsert on a hot set of --hot-documents documents.

    Updates and deletes stay on the small hot collection because FerretDB v1 (SQLite) scans the
    whole collection for every update or delete, even by _id; finds and inserts use its index.
    """
    import random
    from bson import ObjectId
    rng = random.Random(7)
    started = time.time()
    written = step = 0
    while written < args.entries:
        client.bench.log.insert_many([{"_id": ObjectId(), "step": step, "k": k, "pad": "y" * 200}
                                      for k in range(600)])
        for k in range(300):
            client.bench.hot.update_one({"_id": hot_id(rng.randrange(args.hot_documents))},
                                        {"$set": {"v": step * 1000 + k}, "$inc": {"edits": 1}})
        for k in range(50):
            doc_id = hot_id(rng.randrange(args.hot_documents))
            client.bench.hot.delete_one({"_id": doc_id})
            client.bench.hot.insert_one({"_id": doc_id, "v": -step, "pad": "z" * 150})
        written += 1000
        step += 1
        if written % 20000 == 0:
            log("workload: %d entries, %.0f entries/s" % (written, written / (time.time() - started)))
    seconds = time.time() - started
    log("workload written in %.0f s" % seconds)
    return {"operations": written, "seconds": round(seconds, 1)}


def fingerprint(client):
    """What the point-in-time restore must reproduce: counts of every collection of the
    benchmark's databases and a digest of the collections the workload changed."""
    import hashlib
    import bson
    result = {}
    for database in ("bench", "dbops_bench"):
        for name in sorted(client[database].list_collection_names()):
            collection = client[database][name]
            result["%s.%s" % (database, name)] = collection.estimated_document_count()
    for name in ("hot", "log"):
        digest = hashlib.sha256()
        for document in client.bench[name].find().sort("_id", 1):
            digest.update(bson.encode(document))
        result["bench.%s sha256" % name] = digest.hexdigest()
    return result


class CommandStats(monitoring.CommandListener):
    """Count and total server time of each command the child sends (pymongo command monitoring)."""

    def __init__(self):
        self.totals = {}

    def started(self, event):
        pass

    def succeeded(self, event):
        count, micros = self.totals.get(event.command_name, (0, 0))
        self.totals[event.command_name] = (count + 1, micros + event.duration_micros)

    failed = succeeded

    def summary(self):
        return dict((name, {"count": count, "seconds": round(micros / 1e6, 1)})
                    for name, (count, micros) in sorted(self.totals.items(), key=lambda item: -item[1][1]))


def child(args):
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import collection_link
    collection_link.expose()
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils.catalog import store as catalog_utils
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import restore as restore_engine
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import archiver
    stats = CommandStats()
    client = client_utils.connect(client_utils.ConnectionOptions(uri=os.environ["BENCH_URI"]),
                                  event_listeners=[stats])
    facts = client_utils.server_facts(client)
    started = time.perf_counter()
    if args.child == "archive":
        _changed, result = archiver.archive_oplog(client, archiver.ArchiveOptions(args.root), facts)
        figures = {"entries": result["entries"], "bytes": result["bytes"], "slices": len(result["slices"])}
    else:
        marks = {}

        def progress(event, **_details):
            # data batches come first, then the replay's counts after each window it writes
            marks["replay" if isinstance(event, dict) else "data"] = time.perf_counter() - started

        catalog = catalog_utils.Catalog.load(args.root)
        last = catalog.last_archived_ts(facts["replica_set"])
        secs, inc = (int(p) for p in last.split(":"))
        plan = catalog.restore_plan("%d:%d" % (secs, inc + 1), facts["replica_set"])
        catalog_utils.verify_slices(args.root, plan)
        _changed, result = restore_engine.restore(client, restore_engine.RestoreOptions(
            source=plan["backup"]["absolute_path"], drop=True, drop_extra_collections=True, oplog_replay=True,
            oplog_slices=[s["path"] for s in plan["slices"]], oplog_limit=plan["oplog_limit"]), progress=progress)
        figures = {"entries": result["oplog"]["entries"], "applied": result["oplog"]["applied"],
                   "documents": result["total_inserted"], "bytes": result["total_bytes"],
                   "data_seconds": round(marks.get("data", 0), 1), "replay_ends_at": round(marks.get("replay", 0), 1)}
    figures["seconds"] = time.perf_counter() - started
    figures["commands"] = stats.summary()
    if args.child == "pitr":
        figures["restored"] = fingerprint(client)
    from restore_benchmark import own_peak_rss_mb
    figures["peak_rss_mb"] = round(own_peak_rss_mb(), 1)
    print(json.dumps(figures))


def measure(name, args, uri):
    env = dict(os.environ, BENCH_URI=uri)
    process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", name, "--root", args.root],
                               env=env, stdout=subprocess.PIPE)
    out = process.stdout.read()
    if process.wait():
        raise SystemExit("%s child failed" % name)
    return json.loads(out.decode().strip().splitlines()[-1])  # its peak RSS is its own VmHWM


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=200000, help="oplog entries to archive (default 200000)")
    parser.add_argument("--size-mb", type=int, default=0,
                        help="load the dump benchmark's dataset of this many MiB first (default 0: none)")
    parser.add_argument("--hot-documents", type=int, default=1000,
                        help="documents the workload updates and deletes (default 1000)")
    parser.add_argument("--json-out", help="write the figures here as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    import collection_link
    import testserver
    collection_link.expose()
    workdir = tempfile.mkdtemp(prefix="dbops-archive-bench-")
    server = None
    try:
        server = testserver.start_server(os.path.join(workdir, "server"))
        args.root, backup = setup(args, server, workdir)
        archive = measure("archive", args, server.uri)
        pitr = measure("pitr", args, server.uri)
    finally:
        if server:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "server": server.kind if server else None,
        "archive": dict(archive, entries_per_second=round(archive["entries"] / archive["seconds"], 1),
                        mb_per_second=round(archive["bytes"] / archive["seconds"] / 1e6, 2)),
        "full_backup": backup,
        "pitr": dict(pitr, entries_per_second=round(pitr["entries"] / pitr["seconds"], 1),
                     matches_source=pitr["restored"] == backup["source"]),
    }
    print("archive: %(entries)d entries in %(slices)d slices, %(seconds).1f s = %(entries_per_second).0f entries/s, "
          "%(mb_per_second).2f MB/s on disk, peak RSS %(peak_rss_mb).0f MB" % report["archive"])
    print("pitr restore: %(documents)d documents + %(entries)d oplog entries (%(applied)d applied) in %(seconds).1f s "
          "= %(entries_per_second).0f entries/s, peak RSS %(peak_rss_mb).0f MB" % report["pitr"])
    for phase in ("archive", "pitr"):
        busiest = list(report[phase]["commands"].items())[:6]
        print("  %s commands: %s" % (phase, ", ".join("%s %d in %.1f s" % (name, c["count"], c["seconds"])
                                                      for name, c in busiest)))
    print("  data restored by %(data_seconds).0f s, last oplog window written at %(replay_ends_at).0f s, "
          "then index builds; every collection as at the target: %(matches_source)s" % report["pitr"])
    if not report["pitr"]["matches_source"]:
        print("  source:   %s\n  restored: %s" % (backup["source"], pitr["restored"]))
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0 if report["pitr"]["matches_source"] else 1


if __name__ == "__main__":
    sys.exit(main())
