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

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))


def log(message):
    print(message, file=sys.stderr, flush=True)


def setup(args, workdir):
    """Server, a full backup with oplog registered in a catalog, then the workload."""
    import testserver
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils import catalog as catalog_utils
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils import client as client_utils
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils import dump as dump_engine

    server = testserver.start_server(os.path.join(workdir, "server"))
    server.ensure_oplog(4 * 1024 * 1024 * 1024)
    client = server.client()
    client.bench.items.insert_many([{"_id": i, "v": i, "pad": "x" * 200} for i in range(args.documents)])
    facts = client_utils.server_facts(client)
    root = os.path.join(workdir, "root")
    os.makedirs(root)
    dump_engine.dump(client, dump_engine.DumpOptions(path=os.path.join(root, "full"), oplog=True, label="full"), facts)
    with catalog_utils.Catalog.locked(root) as catalog:
        catalog.add_backup_from_manifest(os.path.join(root, "full"))
        catalog.save()
    log("workload: %d oplog entries (inserts, updates, deletes)" % args.entries)
    started = time.time()
    written, n = 0, 0
    batch = 1000
    while written < args.entries:
        docs = [{"_id": args.documents + n + k, "v": k, "pad": "y" * 200} for k in range(batch)]
        client.bench.items.insert_many(docs)
        for k in range(0, batch, 10):
            client.bench.items.update_one({"_id": (n + k) % args.documents}, {"$set": {"v": -k}})
        client.bench.items.delete_many({"_id": {"$gte": args.documents + n, "$lt": args.documents + n + 50}})
        written += batch + batch // 10 + 50
        n += batch
    log("workload written in %.0f s" % (time.time() - started))
    return server, root


def child(args):
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import collection_link
    collection_link.expose()
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils import catalog as catalog_utils
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils import client as client_utils
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils import restore as restore_engine
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import archiver
    client = client_utils.connect(client_utils.ConnectionOptions(uri=os.environ["BENCH_URI"]))
    facts = client_utils.server_facts(client)
    started = time.perf_counter()
    if args.child == "archive":
        _changed, result = archiver.archive_oplog(client, archiver.ArchiveOptions(args.root), facts)
        figures = {"entries": result["entries"], "bytes": result["bytes"], "slices": len(result["slices"])}
    else:
        catalog = catalog_utils.Catalog.load(args.root)
        last = catalog.last_archived_ts(facts["replica_set"])
        secs, inc = (int(p) for p in last.split(":"))
        plan = catalog.restore_plan("%d:%d" % (secs, inc + 1), facts["replica_set"])
        catalog_utils.verify_slices(args.root, plan)
        _changed, result = restore_engine.restore(client, restore_engine.RestoreOptions(
            source=plan["backup"]["absolute_path"], drop=True, oplog_replay=True,
            oplog_slices=[s["path"] for s in plan["slices"]], oplog_limit=plan["oplog_limit"]))
        figures = {"entries": result["oplog"]["entries"], "applied": result["oplog"]["applied"],
                   "documents": result["total_inserted"]}
    figures["seconds"] = time.perf_counter() - started
    print(json.dumps(figures))


def measure(name, args, uri):
    env = dict(os.environ, BENCH_URI=uri)
    process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", name, "--root", args.root],
                               env=env, stdout=subprocess.PIPE)
    out = process.stdout.read()
    _pid, status, usage = os.wait4(process.pid, 0)  # reaps the child and gives its own peak RSS
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit("%s child failed" % name)
    figures = json.loads(out.decode().strip().splitlines()[-1])
    figures["peak_rss_mb"] = round(usage.ru_maxrss / 1024.0, 1)
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=200000, help="oplog entries to archive (default 200000)")
    parser.add_argument("--documents", type=int, default=20000, help="documents in the full backup")
    parser.add_argument("--json-out", help="write the figures here as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    import collection_link
    collection_link.expose()
    workdir = tempfile.mkdtemp(prefix="dbops-archive-bench-")
    server = None
    try:
        server, args.root = setup(args, workdir)
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
        "pitr": dict(pitr, entries_per_second=round(pitr["entries"] / pitr["seconds"], 1)),
    }
    print("archive: %(entries)d entries in %(slices)d slices, %(seconds).1f s = %(entries_per_second).0f entries/s, "
          "%(mb_per_second).2f MB/s on disk, peak RSS %(peak_rss_mb).0f MB" % report["archive"])
    print("pitr restore: %(documents)d documents + %(entries)d oplog entries (%(applied)d applied) in %(seconds).1f s "
          "= %(entries_per_second).0f entries/s, peak RSS %(peak_rss_mb).0f MB" % report["pitr"])
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
