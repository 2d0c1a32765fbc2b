#!/usr/bin/env python
"""Throughput and memory of the native dump engine, against two baselines on the same server.

What it does (see benchmarks/README.md):
  1. start a loopback test server (tools/testserver.py), or reuse one (--uri, --reuse-server);
  2. load a dataset of mixed documents (nested documents, arrays, strings, binary, dates,
     decimals) over several collections of database ``dbops_bench``, unless already loaded;
  3. measure, each in a child process of its own, rounds of:
       raw-read        every document read raw with pymongo (find_raw_batches), nothing written
       native          the engine's dump (plugins/module_utils/logical/dump.py), no compression
       native-gzip     the same with gzip
       mongodump[-gzip] real mongodump, when it is on PATH
  4. print medians, ratios and PASS/FAIL against the targets; write JSON with --json-out.

Targets: native time <= 1.15 x raw-read time; peak RSS < 200 MB; native throughput at
least mongodump's. MB means 10^6 bytes of uncompressed BSON; the dataset size (--size-mb)
is in MiB (2^20 bytes), so the default 1024 is one GiB.

Credentials never go on a command line: children get the URI through $BENCH_URI and
mongodump through a 0600 config file.
"""

import argparse
import datetime
import functools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))

import collection_link  # noqa: E402  (tools/, put on sys.path above)

ALL_VARIANTS = ("raw-read", "native", "native-gzip", "mongodump", "mongodump-gzip")
MONGODUMP_VARIANTS = ("mongodump", "mongodump-gzip")
DATASET_VERSION = 1  # bump when the document generators change
TIME_RATIO_TARGET = 1.1  # native dump time / raw-read time, at most
TOOL_SPEEDUP_TARGET = 1.3  # mongodump time / native dump time, at least
RSS_TARGET_MB = 200
INSERT_BATCH_BYTES = 4 * 1024 * 1024
PROGRESS_EVERY = 10.0  # seconds between loading progress lines
STATE_FILE = os.path.join(ROOT, ".cache", "benchmark", "server.json")
# The real MongoDB Database Tools: $MONGO_TOOLS_BIN, else ../shared/mongo-tools/bin beside the
# checkout (see /work/shared/mongo-tools/README.md), else PATH.
DEFAULT_TOOLS_BIN = os.path.join(ROOT, "..", "shared", "mongo-tools", "bin")
TOOL_POLL_SECONDS = 0.05  # how often a tool's peak RSS (VmHWM) is read while it runs
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def log(message):
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- documents

WORDS = ("backup restore oplog shard replica primary secondary cursor batch index document "
         "field array nested binary decimal date string archive gzip manifest namespace "
         "collection database member election journal checkpoint snapshot cache page "
         "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima").split()
CITIES = ("Lisbon", "Oslo", "Quito", "Nairobi", "Osaka", "Perth", "Lyon", "Austin", "Pune")
STATUSES = ("new", "paid", "packed", "shipped", "delivered", "returned")
EPOCH = datetime.datetime(2020, 1, 1)


def _text(rng, words):
    return " ".join(rng.choices(WORDS, k=words))


def _date(rng):
    return EPOCH + datetime.timedelta(seconds=rng.randrange(5 * 365 * 86400),
                                      microseconds=rng.randrange(1000) * 1000)


def _decimal(rng, as_string):
    """A money amount: Decimal128, or its string when the server cannot store Decimal128."""
    from bson.decimal128 import Decimal128
    text = "%d.%02d" % (rng.randrange(100000), rng.randrange(100))
    return text if as_string else Decimal128(text)


def order_doc(rng, i, dec):
    """About 1 KB: nested customer, an array of line sub-documents, decimals, dates."""
    lines = [{"sku": "sku-%05d" % rng.randrange(50000), "qty": rng.randrange(1, 10),
              "price": dec(rng), "options": {"gift": rng.random() < 0.1, "note": _text(rng, 3)}}
             for dummy in range(rng.randrange(1, 10))]
    return {"_id": i, "placed": _date(rng), "status": rng.choice(STATUSES),
            "customer": {"id": rng.randrange(10 ** 6), "name": _text(rng, 2),
                         "address": {"street": _text(rng, 3), "city": rng.choice(CITIES),
                                     "zip": "%05d" % rng.randrange(100000)}},
            "lines": lines, "total": dec(rng), "shipped": _date(rng) if rng.random() < 0.7 else None,
            "tags": rng.sample(WORDS, rng.randrange(0, 5)), "note": _text(rng, rng.randrange(0, 40))}


def event_doc(rng, i, dec):
    """About 350 bytes: many small documents (ObjectId, UUID binary, int64, doubles)."""
    from bson import Binary, ObjectId
    from bson.int64 import Int64
    return {"_id": ObjectId(), "ts": _date(rng), "type": rng.choice(WORDS),
            "user": rng.randrange(10 ** 6), "session": Binary(rng.randbytes(16), 4),
            "count": Int64(rng.randrange(1 << 40)), "value": rng.random() * 1000,
            "payload": {"path": "/%s/%s" % (rng.choice(WORDS), rng.choice(WORDS)),
                        "status": rng.choice((200, 201, 304, 404, 500)), "ms": rng.random() * 50,
                        "flags": [rng.random() < 0.5 for dummy in range(4)]},
            "amount": dec(rng)}


def profile_doc(rng, i, dec):
    """About 5 KB: long strings, arrays of sub-documents, a small binary avatar."""
    from bson import Binary
    return {"_id": "user-%08d" % i, "name": _text(rng, 2), "email": "u%d@example.com" % i,
            "born": _date(rng), "bio": _text(rng, rng.randrange(100, 500)),
            "addresses": [{"kind": rng.choice(("home", "work")), "street": _text(rng, 3),
                           "city": rng.choice(CITIES), "geo": [rng.uniform(-90, 90), rng.uniform(-180, 180)]}
                          for dummy in range(rng.randrange(1, 4))],
            "skills": rng.sample(WORDS, rng.randrange(1, 12)),
            "scores": [rng.random() for dummy in range(rng.randrange(0, 30))],
            "history": [{"at": _date(rng), "event": rng.choice(WORDS), "amount": dec(rng)}
                        for dummy in range(rng.randrange(0, 20))],
            "avatar": Binary(rng.randbytes(rng.randrange(512, 4096))), "balance": dec(rng)}


def attachment_doc(rng, i, dec):
    """About 60 KB: a binary payload (half random, half compressible) with metadata."""
    from bson import Binary
    random_part = rng.randbytes(rng.randrange(8, 48) * 1024)
    text_part = _text(rng, rng.randrange(1000, 6000)).encode()
    data = random_part + text_part
    return {"_id": i, "filename": "%s-%d.bin" % (rng.choice(WORDS), i),
            "content_type": rng.choice(("application/pdf", "image/png", "text/plain")),
            "uploaded": _date(rng), "size": len(data), "sha256": Binary(rng.randbytes(32)),
            "cost": dec(rng), "meta": {"owner": {"id": rng.randrange(10 ** 6), "name": _text(rng, 2)},
                                       "labels": rng.sample(WORDS, 3)},
            "data": Binary(data)}


# name -> (generator, field to index)
SHAPES = {"orders": (order_doc, "placed"), "events": (event_doc, "ts"),
          "profiles": (profile_doc, "born"), "attachments": (attachment_doc, "uploaded")}


def collection_plan(count, size_bytes):
    """[(collection, shape, target bytes, seed)]: shapes in turn, equal shares of the size."""
    shapes = list(SHAPES)
    plan = []
    for index in range(count):
        shape = shapes[index % len(shapes)]
        name = shape if index < len(shapes) else "%s_%d" % (shape, index // len(shapes) + 1)
        plan.append((name, shape, size_bytes // count, 1000 + index))
    return plan


# --------------------------------------------------------------------------- loading

def load_worker(uri, db, jobs, decimal_as_string, queue):
    """In a process of its own: generate and insert the documents of some collections."""
    import bson
    import pymongo
    from bson.raw_bson import RawBSONDocument
    client = pymongo.MongoClient(uri)
    try:
        for name, shape, target, seed in jobs:
            rng = random.Random(seed)
            make = SHAPES[shape][0]
            dec = functools.partial(_decimal, as_string=decimal_as_string)
            loaded, index = 0, 0
            while loaded < target:
                batch, size = [], 0
                while size < INSERT_BATCH_BYTES and loaded + size < target:
                    raw = bson.encode(make(rng, index, dec))  # encoded once, sent as is
                    batch.append(RawBSONDocument(raw))
                    size += len(raw)
                    index += 1
                client[db][name].insert_many(batch, ordered=False)
                loaded += size
                queue.put((size, len(batch)))
    finally:
        client.close()
        queue.put(None)


def decimal128_supported(server_client_factory):
    """Insert one Decimal128 with a fresh client: FerretDB v1 drops the connection on it."""
    from bson.decimal128 import Decimal128
    client = server_client_factory()
    try:
        client.dbops_bench_probe.decimal.insert_one({"d": Decimal128("1.25")})
        supported = True
    except Exception:  # the server closed the connection (AutoReconnect) or refused the type
        supported = False
    finally:
        client.close()
    client = server_client_factory()
    try:
        client.drop_database("dbops_bench_probe")
    finally:
        client.close()
    return supported


def load_dataset(uri, db, plan, decimal_as_string, workers):
    """Insert the planned collections with several processes; print progress."""
    import multiprocessing
    context = multiprocessing.get_context("spawn")  # no fork of a process holding a MongoClient
    queue = context.Queue()
    workers = max(1, min(workers, len(plan)))
    processes = [context.Process(target=load_worker,
                                 args=(uri, db, plan[w::workers], decimal_as_string, queue))
                 for w in range(workers)]
    for process in processes:
        process.start()
    total = sum(job[2] for job in plan)
    loaded = documents = 0
    started = last = time.perf_counter()
    running = workers
    while running:
        try:
            item = queue.get(timeout=1.0)
        except Exception:  # queue.Empty: check nobody died
            item = False
        if item is None:
            running -= 1
        elif item:
            loaded += item[0]
            documents += item[1]
        elif any(p.exitcode not in (None, 0) for p in processes):
            raise SystemExit("a loader process failed; see its traceback above")
        now = time.perf_counter()
        if now - last >= PROGRESS_EVERY:
            last = now
            rate = loaded / (now - started)
            log("loading: %d of %d MB (%.0f%%), %.1f MB/s, %d documents, about %.0f s left"
                % (loaded / 1e6, total / 1e6, 100.0 * loaded / total, rate / 1e6, documents,
                   (total - loaded) / rate if rate else 0))
    for process in processes:
        process.join()
        if process.exitcode != 0:
            raise SystemExit("a loader process failed with exit code %s" % process.exitcode)
    seconds = time.perf_counter() - started
    return {"bytes": loaded, "documents": documents, "seconds": round(seconds, 1),
            "mb_per_second": round(loaded / seconds / 1e6, 2)}


def ensure_dataset(client, args, make_client):
    """Load the dataset unless the one recorded in <db>_meta already matches the request."""
    meta = client[args.db + "_meta"].dataset
    wanted = {"version": DATASET_VERSION, "size_mb": args.size_mb, "collections": args.collections}
    recorded = meta.find_one({"_id": "dataset"})
    if recorded and not args.reload and all(recorded.get(k) == v for k, v in wanted.items()):
        log("dataset already loaded (%d MB, %d collections): not loading again"
            % (args.size_mb, args.collections))
        return recorded
    if args.db in client.list_database_names() and recorded is None:
        raise SystemExit("database %s exists but was not loaded by this benchmark; refusing to "
                         "drop it: choose another --db" % args.db)
    client.drop_database(args.db)
    meta.delete_many({})
    supported = decimal128_supported(make_client)
    if not supported:
        log("this server does not support Decimal128: decimals are stored as strings")
    plan = collection_plan(args.collections, args.size_mb * 1024 * 1024)
    log("loading %d MiB into %d collections of %s (%s) with %d processes"
        % (args.size_mb, args.collections, args.db, ", ".join(p[0] for p in plan), args.load_workers))
    load = load_dataset(args.uri, args.db, plan, not supported, args.load_workers)
    log("loaded %.0f MB, %d documents in %.0f s (%.1f MB/s); creating one index per collection"
        % (load["bytes"] / 1e6, load["documents"], load["seconds"], load["mb_per_second"]))
    for name, shape, _target, _seed in plan:
        client[args.db][name].create_index(SHAPES[shape][1])
    recorded = dict(wanted, _id="dataset", decimal128=supported, load=load,
                    collection_names=[p[0] for p in plan])
    meta.replace_one({"_id": "dataset"}, recorded, upsert=True)
    return recorded


# --------------------------------------------------------------------------- real tools

def tool_path(name):
    """(path, None) of a real MongoDB tool, or (None, why it is not available).

    $MONGO_TOOLS_BIN when set (and only there), else ../shared/mongo-tools/bin relative to the
    repository, else PATH. Also used by restore_benchmark.py.
    """
    configured = os.environ.get("MONGO_TOOLS_BIN")
    directories = [configured] if configured else [DEFAULT_TOOLS_BIN]
    for directory in directories:
        path = os.path.join(directory, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return os.path.abspath(path), None
    if configured:
        return None, "%s is not in $MONGO_TOOLS_BIN (%s)" % (name, configured)
    found = shutil.which(name)
    if found:
        return found, None
    return None, ("%s is neither in %s nor on PATH; set MONGO_TOOLS_BIN to the directory of the "
                  "MongoDB Database Tools" % (name, os.path.normpath(DEFAULT_TOOLS_BIN)))


def write_tool_config(path, uri):
    """A 0600 YAML config holding the URI: credentials never go on a tool's command line."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        handle.write("uri: %s\n" % json.dumps(uri))  # a JSON string is a YAML scalar
    return path


def peak_rss_kib(pid):
    """VmHWM of a live process in KiB (0 when it is gone)."""
    try:
        with open("/proc/%d/status" % pid) as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_tool(argv):
    """Run a real tool; (seconds, its peak RSS in MB). The peak is the largest VmHWM of the tool
    and of any process it starts (psutil), read every TOOL_POLL_SECONDS while it runs."""
    import psutil
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    peaks = {}
    tool = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            pids = [process.pid] + [child.pid for child in tool.children(recursive=True)]
        except psutil.Error:
            pids = [process.pid]
        for pid in pids:
            peaks[pid] = max(peaks.get(pid, 0), peak_rss_kib(pid))
        time.sleep(TOOL_POLL_SECONDS)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit("%s failed with exit status %d" % (os.path.basename(argv[0]), process.returncode))
    return seconds, max(peaks.values() or [0]) / 1024.0


def own_peak_rss_mb():
    """VmHWM: the peak RSS of this process's own address space, counted from its exec.

    ru_maxrss (getrusage, or wait4 in the parent) is not that: at exec, Linux carries the peak RSS
    of the address space being replaced over into it, and a child started with fork or vfork
    replaces a copy of (or the very) address space of its parent, so ru_maxrss is at least the
    parent's peak RSS at the time of the spawn.
    """
    return peak_rss_kib(os.getpid()) / 1024.0 or None


# --------------------------------------------------------------------------- children

def child_raw_read(client, args):
    """The baseline: read every document raw, collections in parallel, write nothing."""
    from concurrent.futures import ThreadPoolExecutor
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical.dump_outputs import (
        count_documents)
    database = client[args.db]

    def read(name):
        documents = size = 0
        for batch in database[name].find_raw_batches({}, hint=[("$natural", 1)]):
            documents += count_documents(batch)
            size += len(batch)
        return documents, size

    names = sorted(n for n in database.list_collection_names() if not n.startswith("system."))
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        totals = list(pool.map(read, names))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "documents": sum(t[0] for t in totals),
            "bytes": sum(t[1] for t in totals), "bytes_on_disk": 0}


def child_native(client, args, gzip):
    """The engine's dump of the benchmark database, as the module runs it."""
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection.client import server_facts
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical.dump import dump
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical.dump_options import DumpOptions
    facts = server_facts(client)
    target = {"archive": args.out} if args.archive else {"path": args.out}
    options = DumpOptions(db=args.db, compression="gzip" if gzip else None, num_parallel_collections=args.parallel,
                          label="benchmark", **target)
    started = time.perf_counter()
    _changed, result = dump(client, options, facts)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "documents": result["total_documents"],
            "bytes": result["total_bytes"], "bytes_on_disk": disk_usage(args.out),
            "engine_seconds": result["duration_seconds"],
            "engine_mb_per_second": result["mb_per_second"]}


def child_mongodump(uri, args, gzip):
    """Real mongodump with the same parallelism; the URI goes through a 0600 config file."""
    config = write_tool_config(os.path.join(os.path.dirname(args.out), "mongodump.yaml"), uri)
    argv = [tool_path("mongodump")[0], "--config=" + config, "--db=" + args.db, "--quiet",
            "--numParallelCollections=%d" % args.parallel]
    argv.append("--archive=" + args.out if args.archive else "--out=" + args.out)
    if gzip:
        argv.append("--gzip")
    try:
        seconds, tool_rss = run_tool(argv)
    finally:
        os.remove(config)
    # mongodump reports no totals: the parent takes them from the raw-read runs.
    return {"seconds": seconds, "documents": None, "bytes": None, "tool_peak_rss_mb": tool_rss,
            "bytes_on_disk": disk_usage(args.out)}


def run_child(args):
    """Entry point of a measured child: one variant, one JSON line on stdout."""
    import resource
    uri = os.environ["BENCH_URI"]
    variant = args.child
    if variant in MONGODUMP_VARIANTS:
        result = child_mongodump(uri, args, variant.endswith("-gzip"))
    else:
        collection_link.expose()
        from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection.client import (
            ConnectionOptions, connect)
        client = connect(ConnectionOptions(uri=uri))  # same client options for every variant
        if variant == "raw-read":
            measure = functools.partial(child_raw_read, client, args)
        else:
            measure = functools.partial(child_native, client, args, variant.endswith("-gzip"))
        result = profiled(measure, args.profile) if args.profile else measure()
        client.close()
    result["child_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    result["own_peak_rss_mb"] = own_peak_rss_mb()
    print(json.dumps(result), flush=True)


def profiled(function, stats_path):
    """Run ``function`` under cProfile in every thread it starts; save the merged stats."""
    import cProfile
    import pstats
    import threading
    profiles = [cProfile.Profile()]

    def hand_over(*_event):  # first event of a new thread: give it a profiler of its own
        profile = cProfile.Profile()
        profiles.append(profile)
        profile.enable()

    threading.setprofile(hand_over)
    profiles[0].enable()
    try:
        return function()
    finally:
        profiles[0].disable()
        threading.setprofile(None)
        stats = pstats.Stats(*profiles)
        stats.dump_stats(stats_path)


def disk_usage(path):
    """Bytes in the files at ``path`` (a file or a directory), with the archive's manifest."""
    if os.path.isfile(path):
        manifest = path + ".manifest.json"
        return os.path.getsize(path) + (os.path.getsize(manifest) if os.path.exists(manifest) else 0)
    total = 0
    for directory, _dirs, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(directory, name)) for name in files)
    return total


# --------------------------------------------------------------------------- measuring

def measure(variant, args, work_dir, profile=None):
    """Run one variant in a child process; its peak RSS comes from wait4 on that child."""
    out = os.path.join(work_dir, variant + (".archive" if args.archive else ""))
    argv = [sys.executable, os.path.abspath(__file__), "--child", variant, "--db", args.db,
            "--parallel", str(args.parallel), "--out", out]
    if args.archive:
        argv.append("--archive")
    if profile:
        argv += ["--profile", profile]
    result, _usage = run_measured_child(argv, args.uri, variant, args.server_pid)
    for name in os.listdir(work_dir):  # dump output is measured, then removed
        remove(os.path.join(work_dir, name))
    return result


def server_cpu_seconds(pid):
    """CPU seconds (user + system) the server process has used so far; None when not known."""
    import psutil
    if not pid:
        return None
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


def run_measured_child(argv, uri, label, server_pid=None):
    """Run a measuring child (URI in $BENCH_URI); (its last JSON line with peak_rss_mb, rusage).

    With ``server_pid`` (a server started or kept here), also the server's CPU seconds during the
    child: on a CPU-bound server that is the work a variant costs it, less noisy than wall time.
    Also used by restore_benchmark.py.
    """
    server_cpu = server_cpu_seconds(server_pid)
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               env=dict(os.environ, BENCH_URI=uri))
    output = process.stdout.read()
    process.stdout.close()
    _pid, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)  # already reaped by wait4
    if process.returncode != 0:
        raise SystemExit("the %s child failed (exit status %d)" % (label, process.returncode))
    result = json.loads(output.decode().strip().splitlines()[-1])
    if server_cpu is not None:
        result["server_cpu_seconds"] = round(server_cpu_seconds(server_pid) - server_cpu, 2)
    # Peak RSS: a real tool's own (polled VmHWM), else the Python child's own VmHWM. wait4's
    # ru_maxrss (KiB) is kept for reference only: it also counts the parent's RSS at the spawn.
    result["wait4_maxrss_mb"] = usage.ru_maxrss / 1024.0
    result["peak_rss_mb"] = (result.get("tool_peak_rss_mb") or result.get("own_peak_rss_mb")
                             or result["wait4_maxrss_mb"])
    return result, usage


def remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)


def run_rounds(variants, args, work_dir):
    """Warm-up reads, then every variant once per round, in turn (raw-read, native, ...)."""
    for index in range(args.warmup):
        result = measure("raw-read", args, work_dir)
        log("warm-up raw-read %d: %.1f s (not counted)" % (index + 1, result["seconds"]))
    runs = dict((variant, []) for variant in variants)
    for round_number in range(1, args.rounds + 1):
        for variant in variants:
            result = measure(variant, args, work_dir)
            runs[variant].append(result)
            log("round %d %-14s %7.1f s  peak RSS %5.1f MB"
                % (round_number, variant, result["seconds"], result["peak_rss_mb"]))
    return runs


def summarize_rounds(results, totals):
    """One variant's rounds: median seconds, throughput from uncompressed BSON bytes (a round's
    own counts, else ``totals`` = (bytes, documents)), max peak RSS."""
    seconds = statistics.median(r["seconds"] for r in results)
    size = results[-1]["bytes"] if results[-1]["bytes"] is not None else totals[0]
    docs = results[-1]["documents"] if results[-1]["documents"] is not None else totals[1]
    return {
        "rounds": len(results), "seconds": round(seconds, 3),
        "round_seconds": [round(r["seconds"], 3) for r in results],
        "bytes": size, "documents": docs,
        "mb_per_second": round(size / seconds / 1e6, 2),
        "docs_per_second": round(docs / seconds, 1),
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in results), 1),
        "server_cpu_seconds": (round(statistics.median(r["server_cpu_seconds"] for r in results), 2)
                               if all("server_cpu_seconds" in r for r in results) else None),
    }


def summarize(runs, dataset_totals):
    return dict((variant, dict(summarize_rounds(results, dataset_totals), bytes_on_disk=results[-1]["bytes_on_disk"]))
                for variant, results in runs.items())


def checks(summary, mongodump_missing):
    """[(check, value, target, verdict)] for the targets of the issue."""
    rows = []
    raw = summary.get("raw-read")

    def ratio(variant, target):
        if raw and variant in summary:
            value = summary[variant]["seconds"] / raw["seconds"]
            verdict = ("PASS" if value <= target else "FAIL") if target else "info (no target)"
            rows.append(("%s / raw-read time" % variant, "%.3fx" % value,
                         "<= %.2fx" % target if target else "-", verdict))

    ratio("native", TIME_RATIO_TARGET)
    for variant in ("native-gzip", "mongodump", "mongodump-gzip"):
        ratio(variant, None)
    for variant in ("native", "native-gzip", "mongodump", "mongodump-gzip"):
        if variant in summary:
            rss = summary[variant]["peak_rss_mb"]
            ours = not variant.startswith("mongodump")
            rows.append(("%s peak RSS" % variant, "%.1f MB" % rss, "< %d MB" % RSS_TARGET_MB if ours else "-",
                         ("PASS" if rss < RSS_TARGET_MB else "FAIL") if ours else "info (the real tool)"))
    for native, tool in (("native", "mongodump"), ("native-gzip", "mongodump-gzip")):
        if native not in summary:
            continue
        if tool in summary:
            speedup = summary[tool]["seconds"] / summary[native]["seconds"]
            rows.append(("%s time / %s time" % (tool, native), "%.2fx (%.1f vs %.1f MB/s)" % (
                speedup, summary[native]["mb_per_second"], summary[tool]["mb_per_second"]),
                ">= %.1fx" % TOOL_SPEEDUP_TARGET, "PASS" if speedup >= TOOL_SPEEDUP_TARGET else "FAIL"))
        elif mongodump_missing:
            rows.append(("%s time / %s time" % (tool, native), "-", ">= %.1fx" % TOOL_SPEEDUP_TARGET,
                         "SKIP (%s)" % mongodump_missing))
    return rows


def print_report(summary, check_rows, context):
    print()
    print("server: %(server)s   dataset: %(dataset_mb).0f MB BSON, %(documents)d documents in "
          "%(collections)d collections   parallelism: %(parallel)d   format: %(format)s" % context)
    if not context["decimal128"]:
        print("note: the server does not support Decimal128, so decimals are stored as strings")
    if context.get("load"):
        load = context["load"]
        print("load: %.0f MB, %d documents in %.0f s = %.1f MB/s, %.0f docs/s" % (
            load["bytes"] / 1e6, load["documents"], load["seconds"], load["mb_per_second"],
            load["documents"] / load["seconds"]))
    header = ("variant", "rounds", "median s", "round s", "MB/s", "docs/s", "peak RSS MB", "server CPU s",
              "on disk MB")
    rows = [(variant, str(s["rounds"]), "%.2f" % s["seconds"],
             ", ".join("%.1f" % x for x in s["round_seconds"]), "%.2f" % s["mb_per_second"],
             "%.0f" % s["docs_per_second"], "%.1f" % s["peak_rss_mb"], format_optional(s["server_cpu_seconds"]),
             "%.1f" % (s["bytes_on_disk"] / 1e6)) for variant, s in summary.items()]
    print_table(header, rows)
    if context["mongodump_missing"]:
        print("mongodump: not measured: %s" % context["mongodump_missing"])
    elif context.get("mongodump"):
        print("mongodump: %s (peak RSS: its own VmHWM, polled; ours: each child's own VmHWM)" % context["mongodump"])
    print()
    print_table(("check", "value", "target", "result"), check_rows)


def format_optional(value, pattern="%.1f"):
    return "-" if value is None else pattern % value


def print_table(header, rows):
    widths = [max(len(str(row[i])) for row in [header] + list(rows)) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths]] + list(rows):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


# --------------------------------------------------------------------------- server

def check_loopback(uri, allow_remote):
    from pymongo.uri_parser import parse_uri
    hosts = [host for host, _port in parse_uri(uri)["nodelist"]]
    if not allow_remote and any(host not in LOOPBACK for host in hosts):
        raise SystemExit("refusing to benchmark against %s: not a loopback address (the benchmark "
                         "loads and drops data); pass --allow-remote if you mean it" % ", ".join(hosts))


def open_server(args):
    """(server or None, whether we own it): --uri / $MONGODB_URI, --reuse-server, or a new one."""
    import testserver
    args.server_pid = None  # known for a server started or kept here: its CPU time is measured
    if args.reuse_server:
        if not os.path.exists(STATE_FILE):
            raise SystemExit("no kept benchmark server (%s); run once with --keep-server" % STATE_FILE)
        with open(STATE_FILE) as handle:
            server = testserver.Server.from_state(json.load(handle))
        if not server.is_running():
            raise SystemExit("the kept benchmark server (pid %d) is not running" % server.pid)
        args.uri = server.uri
        args.server_pid = server.pid
        return server, False
    if args.uri:
        return None, False
    server = testserver.start_server(detach=args.keep_server)
    args.uri = server.uri
    args.server_pid = server.pid
    log("started %s on %s (data in %s)" % (server.kind, server.address, server.data_dir))
    return server, True


def keep_server(server):
    os.makedirs(os.path.dirname(STATE_FILE), mode=0o700, exist_ok=True)
    with os.fdopen(os.open(STATE_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        json.dump(server.to_state(), handle)
    log("server kept running: measure again with --reuse-server; stop it with: "
        "python tools/testserver.py stop --state %s" % os.path.relpath(STATE_FILE, os.getcwd()))


def server_label(client):
    build = client.admin.command("buildInfo")
    if build.get("ferretdbVersion"):
        return "FerretDB %s (MongoDB %s compatible)" % (build["ferretdbVersion"], build.get("version"))
    return "mongod %s" % build.get("version")


# --------------------------------------------------------------------------- main

def add_server_arguments(parser):
    """Options every benchmark shares: which server, its dataset, where the results go."""
    parser.add_argument("--uri", default=os.environ.get("MONGODB_URI"),
                        help="use this server (default $MONGODB_URI) instead of starting one")
    parser.add_argument("--reuse-server", action="store_true", help="use the server kept by --keep-server")
    parser.add_argument("--keep-server", action="store_true",
                        help="leave the server started here running, with its data, for --reuse-server")
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --uri")
    parser.add_argument("--reload", action="store_true", help="load the dataset even if already loaded")
    parser.add_argument("--load-workers", type=int, default=2, help="loader processes (default 2)")
    parser.add_argument("--json-out", help="write the results as JSON to this file")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024,
                        help="dataset size in MiB of BSON (default 1024)")
    parser.add_argument("--collections", type=int, default=4, help="number of collections (default 4)")
    parser.add_argument("--variants", default=",".join(ALL_VARIANTS),
                        help="comma-separated, of: %s (default: all)" % ", ".join(ALL_VARIANTS))
    parser.add_argument("--rounds", type=int, default=2, help="measured runs per variant (default 2)")
    parser.add_argument("--warmup", type=int, default=1, help="raw-read passes before measuring (default 1)")
    parser.add_argument("--parallel", type=int, default=4,
                        help="collections read at once, by the dump and the baselines (default 4)")
    parser.add_argument("--archive", action="store_true", help="dump to an archive file, not a directory")
    parser.add_argument("--db", default="dbops_bench", help="database to load and dump (default dbops_bench)")
    add_server_arguments(parser)
    parser.add_argument("--profile", help="after measuring, profile one native run (cProfile, all "
                                          "threads) and save the stats to this file")
    parser.add_argument("--work-dir", help="where dumps are written (default: a new temp dir, removed)")
    parser.add_argument("--check", action="store_true", help="exit with status 1 when a target is missed")
    parser.add_argument("--child", choices=ALL_VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def selected_variants(args):
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in ALL_VARIANTS]
    if unknown:
        raise SystemExit("unknown variants %s; choose from %s" % (unknown, ", ".join(ALL_VARIANTS)))
    path, missing = tool_path("mongodump")
    if missing:
        variants = [v for v in variants if v not in MONGODUMP_VARIANTS]
    return variants, path, missing


def print_profile(path, limit=25):
    import pstats
    print("\nprofile of one native run (all threads; wall time per thread, summed): %s" % path)
    stats = pstats.Stats(path)
    stats.sort_stats("tottime").print_stats(limit)


def benchmark(args):
    variants, mongodump, mongodump_missing = selected_variants(args)
    if mongodump_missing:
        log("mongodump variants skipped: %s" % mongodump_missing)
    server, owned = open_server(args)
    check_loopback(args.uri, args.allow_remote)
    import pymongo
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="dbops-bench-")
    os.makedirs(work_dir, mode=0o700, exist_ok=True)
    try:
        client = pymongo.MongoClient(args.uri)
        fresh_client = functools.partial(pymongo.MongoClient, args.uri, serverSelectionTimeoutMS=5000)
        dataset = ensure_dataset(client, args, fresh_client)
        label = server_label(client)
        client.close()
        runs = run_rounds(variants, args, work_dir)
        totals = (runs["raw-read"][-1]["bytes"], runs["raw-read"][-1]["documents"]) if "raw-read" in runs \
            else (dataset["load"]["bytes"], dataset["load"]["documents"])
        summary = summarize(runs, totals)
        check_native_totals(summary)
        check_rows = checks(summary, mongodump_missing)
        context = {"server": label, "dataset_mb": totals[0] / 1e6, "documents": totals[1],
                   "collections": args.collections, "parallel": args.parallel,
                   "format": "archive" if args.archive else "directory",
                   "decimal128": dataset["decimal128"], "load": dataset.get("load"),
                   "mongodump": mongodump, "mongodump_missing": mongodump_missing}
        print_report(summary, check_rows, context)
        if args.profile:
            measure("native", args, work_dir, profile=args.profile)
            print_profile(args.profile)
        if args.json_out:
            write_json(args, context, summary, check_rows, runs)
        return 1 if args.check and any(row[3] == "FAIL" for row in check_rows) else 0
    finally:
        if not args.work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
        if server is not None and owned:
            if args.keep_server:
                keep_server(server)
            else:
                server.stop()


def check_native_totals(summary):
    """The dump must have copied what the raw read saw; say so loudly when it did not."""
    raw = summary.get("raw-read")
    for variant in ("native", "native-gzip"):
        if raw and variant in summary and (summary[variant]["bytes"], summary[variant]["documents"]) \
                != (raw["bytes"], raw["documents"]):
            log("WARNING: %s dumped %d bytes / %d documents, raw-read saw %d / %d"
                % (variant, summary[variant]["bytes"], summary[variant]["documents"],
                   raw["bytes"], raw["documents"]))


def write_json(args, context, summary, check_rows, runs):
    document = {"when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "size_mb": args.size_mb, "collections": args.collections, "context": context,
                "summary": summary, "runs": runs,
                "checks": [dict(zip(("check", "value", "target", "result"), row)) for row in check_rows],
                "targets": {"native_over_raw_read_time": TIME_RATIO_TARGET, "peak_rss_mb": RSS_TARGET_MB,
                            "mongodump_over_native_time": TOOL_SPEEDUP_TARGET}}
    with open(args.json_out, "w") as handle:
        json.dump(document, handle, indent=2)
        handle.write("\n")
    log("results written to %s" % args.json_out)


def main():
    args = parse_args()
    if args.child:
        run_child(args)
        return 0
    return benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
