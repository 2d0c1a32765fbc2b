#!/usr/bin/env python
"""Parallel shard dumps: a sharded-cluster backup should take about the time of its largest shard.

The three-server bed of the tests (tools/testserver.py servers for two shards and the config
server, a mockupdb mongos for the control plane, tests/cluster_bed.py), shards of different sizes.
In one run:
  1. baseline: each replica set dumped alone with the same engine (mongodb_dump's, oplog on), one
     after the other: its own time, their sum and the slowest;
  2. the cluster backup (plugins/module_utils/cluster/sharded_backup.py): its parallel dump phase,
     its cut phase and its total.
Prints the ratios parallel dump / slowest single dump (target: about 1) and / sum of the single dumps.
Credentials never go on a command line.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import collection_link  # noqa: E402  (tools/, put on sys.path above)

collection_link.expose()

import testserver  # noqa: E402
from cluster_bed import MockMongos, shard_string, shard_uris  # noqa: E402
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.cluster import sharded_backup  # noqa: E402
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection import client as client_utils  # noqa: E402
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump as dump_engine  # noqa: E402
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical.dump_options import DumpOptions  # noqa: E402

DOCUMENT_BYTES = 1024


def log(message):
    print(message, file=sys.stderr, flush=True)


def load(server, megabytes):
    client = server.client()
    collection = client.bench.orders
    count = int(megabytes * 1024 * 1024 / DOCUMENT_BYTES)
    batch = []
    for number in range(count):
        batch.append({"_id": number, "customer": "c%05d" % (number % 5000), "pad": os.urandom(DOCUMENT_BYTES // 2).hex()[:900]})
        if len(batch) == 1000:
            collection.insert_many(batch)
            batch = []
    if batch:
        collection.insert_many(batch)
    client.close()
    return count


def single_dump(server, path):
    options = client_utils.ConnectionOptions(uri=server.uri)
    client = client_utils.connect(options)
    try:
        started = time.time()
        dump_engine.dump(client, DumpOptions(path=path, oplog=True), client_utils.server_facts(client))
        return time.time() - started
    finally:
        client.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shard-mb", default="48,16", help="data per shard in MiB, comma-separated (default 48,16)")
    parser.add_argument("--config-mb", type=float, default=1, help="data on the config server in MiB (default 1)")
    parser.add_argument("--work-dir", help="where servers and backups go (default: a temp dir, removed)")
    parser.add_argument("--json-out", help="write the figures as JSON here")
    args = parser.parse_args()
    sizes = [float(part) for part in args.shard_mb.split(",")]
    work = args.work_dir or tempfile.mkdtemp(prefix="sharded-bench-")
    os.makedirs(work, exist_ok=True)
    servers = {}
    mongos = None
    try:
        names = ["config"] + ["shard%d" % number for number in range(len(sizes))]
        for name in names:
            servers[name] = testserver.start_server(os.path.join(work, "server-" + name))
            servers[name].ensure_oplog()
        for name, megabytes in zip(names, [args.config_mb] + sizes):
            log("loading %s MiB into %s" % (megabytes, name))
            load(servers[name], megabytes)
        mongos = MockMongos(dict((name, shard_string(name, servers[name])) for name in names[1:]),
                            shard_string("configRS", servers["config"]))
        singles = {}
        for name in names:
            singles[name] = single_dump(servers[name], os.path.join(work, "single-" + name))
            log("single dump of %s: %.2f s" % (name, singles[name]))
        options = client_utils.ConnectionOptions(uri=mongos.uri, connect_timeout=5)
        client = client_utils.connect(options)
        try:
            _changed, result = sharded_backup.backup(client, options, sharded_backup.ShardedBackupOptions(
                path=os.path.join(work, "cluster"), shard_uris=shard_uris(servers)))
        finally:
            client.close()
        slowest, total = max(singles.values()), sum(singles.values())
        figures = {
            "shard_mb": sizes, "config_mb": args.config_mb, "single_dump_seconds": singles,
            "slowest_single_seconds": round(slowest, 3), "sum_single_seconds": round(total, 3),
            "cluster_dump_seconds": result["dump_seconds"], "cluster_cut_seconds": result["cut_seconds"],
            "cluster_total_seconds": result["duration_seconds"],
            "ratio_dump_to_slowest": round(result["dump_seconds"] / slowest, 2),
            "ratio_dump_to_sum": round(result["dump_seconds"] / total, 2),
            "ratio_total_to_slowest": round(result["duration_seconds"] / slowest, 2),
            "cpu_count": os.cpu_count(), "server": servers["config"].kind,
        }
        print("| measure | seconds |\n|---|---|")
        for name in names:
            print("| %s dumped alone | %.2f |" % (name, singles[name]))
        print("| sum of the single dumps | %.2f |" % total)
        print("| cluster backup: parallel dump phase | %.2f |" % result["dump_seconds"])
        print("| cluster backup: cut phase | %.2f |" % result["cut_seconds"])
        print("| cluster backup: total | %.2f |" % result["duration_seconds"])
        print("\nparallel dump / slowest single dump: %.2fx; / sum of single dumps: %.2fx; total / slowest: %.2fx"
              % (figures["ratio_dump_to_slowest"], figures["ratio_dump_to_sum"], figures["ratio_total_to_slowest"]))
        if args.json_out:
            with open(args.json_out, "w") as handle:
                json.dump(figures, handle, indent=2)
    finally:
        if mongos is not None:
            mongos.stop()
        for server in servers.values():
            server.stop()
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
