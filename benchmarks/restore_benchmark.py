#!/usr/bin/env python
"""Throughput and memory of the native restore engine and of its oplog replay.

What it does (see benchmarks/README.md, "Restore benchmark"):
  1. start a loopback test server (tools/testserver.py), or reuse one (--uri, --reuse-server);
  2. load the dump benchmark's dataset into ``dbops_bench`` (its generator and loader, reused),
     unless already loaded, and dump it once with our engine into a temporary directory;
  3. measure, each in a child process of its own, rounds of:
       raw-insert    the dump's .bson files read with bsonio.read_batches and written with
                     insert_many of RawBSONDocuments (unordered, 1000 per call), collections
                     4 at a time: the floor for any restore through pymongo
       native        the engine's restore (plugins/module_utils/logical/restore.py), renaming the
                     database with ns_from/ns_to, indexes included (their build timed apart)
       mongorestore  real mongorestore --nsFrom/--nsTo, when it is on PATH
     each into a freshly dropped target database (the drop is not timed);
  4. generate an oplog of --oplog-entries mixed entries (inserts, $set updates, deletes over
     several collections), from a real workload against the server or synthesized in exactly
     the shape FerretDB writes (checked entry by entry against a real sample), and measure:
       replay              OplogReplayer(mode="crud").replay(iter_oplog_file(...)) into a fresh db
       replay-engine       the same with a target that sends nothing (the engine's own cost)
       mongorestore-oplog  real mongorestore --oplogReplay, when it is on PATH
  5. print medians, ratios and PASS/FAIL/SKIP against the targets; write JSON with --json-out.

Targets (from the issue): native time <= 1.2 x raw-insert time; faster than mongorestore;
replay at least 3 x mongorestore --oplogReplay in ops/s; peak RSS < 300 MB whatever the
data size. MB means 10^6 bytes of BSON; --size-mb is in MiB. Peak RSS is each child's own
VmHWM (see own_peak_rss_mb: wait4's ru_maxrss also counts the parent's RSS at the spawn).

Credentials never go on a command line: children get the URI through $BENCH_URI and
mongorestore through a 0600 config file.
"""

import argparse
import datetime
import functools
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import dump_benchmark  # noqa: E402  (benchmarks/, put on sys.path above; it adds tools/)
from dump_benchmark import (  # noqa: E402
    check_loopback, ensure_dataset, keep_server, log, open_server, own_peak_rss_mb, print_profile,
    print_table, profiled, run_measured_child, run_tool, server_label, tool_path, write_tool_config)

collection_link = dump_benchmark.collection_link

RESTORE_VARIANTS = ("raw-insert", "native", "mongorestore", "mongorestore-w4")
MONGORESTORE_VARIANTS = ("mongorestore", "mongorestore-w4", "mongorestore-oplog")
TOOL_WORKERS = 4  # mongorestore-w4: --numInsertionWorkersPerCollection
OPLOG_VARIANTS = ("replay", "replay-engine", "mongorestore-oplog")
CHILD_VARIANTS = RESTORE_VARIANTS + OPLOG_VARIANTS
TIME_RATIO_TARGET = 1.1  # native restore time / raw-insert time, at most
TOOL_SPEEDUP_TARGET = 1.3  # mongorestore (defaults) time / native restore time, at least
RSS_TARGET_MB = 200  # a restore's peak RSS
REPLAY_RSS_TARGET_MB = 300  # an oplog replay's peak RSS
OPLOG_ENTRIES_TARGET = 200000
REPLAY_SPEEDUP_TARGET = 3.0
INSERT_CHUNK = 1000  # documents per insert_many, as the engine's batch_size default
# FerretDB v1 (SQLite) keeps the read cursor of every statement of an update command open until
# the command ends, from a pool of 100 connections: an update command with 100 or more statements
# that match documents deadlocks the server. The replay writes a window's replacements as one
# update command per namespace, so on FerretDB its window must stay below that.
FERRETDB_MAX_UPDATES_PER_COMMAND = 90
ENGINE_REPLAY_BATCH = 1000  # OplogReplayer's default batch_size
MAX_RUN = 40  # operations per workload step (one command), below the FerretDB limit above
SAMPLE_ENTRIES = 600  # real entries the synthesized ones are checked against
OPLOG_BYTES_PER_ENTRY = 2048  # capacity of a capped oplog created here, per planned entry
TARGETS_COLLECTION = "targets"  # in <db>_meta: databases this benchmark may drop


# --------------------------------------------------------------------------- oplog workload

STATUSES = ("new", "active", "idle", "locked", "closed")
WORDS = dump_benchmark.WORDS
EPOCH = dump_benchmark.EPOCH


def _millis_date(rng):
    """A date with millisecond precision, as BSON stores it (so it compares equal after a round trip)."""
    return EPOCH + datetime.timedelta(milliseconds=rng.randrange(5 * 365 * 86400 * 1000))


class OplogWorkload:
    """A deterministic mix of inserts, $set updates and deletes over several collections.

    Every step is one command on one collection (a run of 1..MAX_RUN operations of one kind):
    45% of the steps insert, 40% update ($set of three fields and of one nested field; a field
    added on the first update), 15% delete. A collection holds at most ``working_set`` live
    documents: an insert that would pass it deletes instead. The live documents are tracked,
    so the post-image of every update (what FerretDB logs) and the final state are known.
    """

    def __init__(self, collections, working_set, seed):
        self.rng = random.Random(seed)
        self.names = ["c%d" % index for index in range(collections)]
        self.working_set = working_set
        self.docs = dict((name, {}) for name in self.names)  # id -> current document
        self.ids = dict((name, []) for name in self.names)  # live ids, for random choice
        self.position = dict((name, {}) for name in self.names)  # id -> index in ids
        self.next_id = 0
        self.counter = 0

    def _new_document(self):
        rng = self.rng
        self.next_id += 1
        return {"_id": "k-%09d" % self.next_id, "n": self.next_id, "status": rng.choice(STATUSES),
                "score": rng.random() * 100, "at": _millis_date(rng),
                "tags": rng.sample(WORDS, rng.randrange(0, 5)),
                "nested": {"a": rng.randrange(1000), "b": " ".join(rng.choices(WORDS, k=4))},
                "note": " ".join(rng.choices(WORDS, k=rng.randrange(5, 40)))}

    def _add(self, name, document):
        self.docs[name][document["_id"]] = document
        self.position[name][document["_id"]] = len(self.ids[name])
        self.ids[name].append(document["_id"])

    def _remove(self, name, id_value):
        ids, position = self.ids[name], self.position[name]
        index = position.pop(id_value)
        last = ids.pop()
        if last != id_value:
            ids[index] = last
            position[last] = index
        del self.docs[name][id_value]

    def steps(self, total):
        """Yield (kind, collection, items) until ``total`` entries: kind i (documents), u
        ([(_id, $set fields, post-image)]) or d ([_id])."""
        rng = self.rng
        produced = 0
        while produced < total:
            name = rng.choice(self.names)
            live = len(self.ids[name])
            size = min(rng.randint(1, MAX_RUN), total - produced)
            draw = rng.random()
            kind = "i" if draw < 0.45 else ("u" if draw < 0.85 else "d")
            if kind == "i" and live + size > self.working_set and live >= size:
                kind = "d"
            if kind != "i" and live < size:
                kind = "i"
            if kind == "i":
                items = [self._new_document() for dummy in range(size)]
                for document in items:
                    self._add(name, document)
            elif kind == "u":
                items = []
                for id_value in rng.sample(self.ids[name], size):
                    self.counter += 1
                    fields = {"n": self.counter, "status": rng.choice(STATUSES),
                              "nested.a": rng.randrange(1000), "seen": _millis_date(rng)}
                    document = self.docs[name][id_value]
                    document["n"], document["status"] = fields["n"], fields["status"]
                    document["nested"]["a"] = fields["nested.a"]
                    document["seen"] = fields["seen"]  # appended on the first update, as $set does
                    items.append((id_value, fields, document))
            else:
                items = rng.sample(self.ids[name], size)
                for id_value in items:
                    self._remove(name, id_value)
            produced += len(items)
            yield kind, name, items


def apply_step(database, kind, name, items):
    """One workload step as one command (a bulk of at most MAX_RUN operations)."""
    from pymongo import DeleteOne, UpdateOne
    collection = database[name]
    if kind == "i":
        collection.insert_many(items, ordered=True)
    elif kind == "u":
        collection.bulk_write([UpdateOne({"_id": id_value}, {"$set": fields})
                               for id_value, fields, _post in items], ordered=True)
    else:
        collection.bulk_write([DeleteOne({"_id": id_value}) for id_value in items], ordered=True)


class SyntheticOplog:
    """Oplog entries in the exact shape FerretDB v1 writes: _id, op, ns, ts, o, t, v, wall (and
    o2 for updates); an update's o is {$v: 1, $set: <whole post-image>}; Timestamps increase."""

    def __init__(self, database, start_seconds):
        from bson.int64 import Int64
        self.database = database
        self.seconds = start_seconds
        self.increment = 0
        self.term, self.version = Int64(1), Int64(2)

    def _header(self, op, name):
        from bson import ObjectId, Timestamp
        self.increment += 1
        if self.increment > 1000:  # a thousand entries per second of the source
            self.seconds += 1
            self.increment = 1
        return {"_id": ObjectId(), "op": op, "ns": "%s.%s" % (self.database, name),
                "ts": Timestamp(self.seconds, self.increment)}

    def _tail(self, entry):
        entry["t"], entry["v"] = self.term, self.version
        entry["wall"] = datetime.datetime.fromtimestamp(self.seconds, datetime.timezone.utc).replace(
            tzinfo=None, microsecond=self.increment * 1000 % 1000000)
        return entry

    def entries(self, kind, name, items):
        """The entries a workload step produces, encoded (raw BSON)."""
        import bson
        for item in items:
            entry = self._header(kind, name)
            if kind == "i":
                entry["o"] = item
                self._tail(entry)
            elif kind == "u":
                id_value, _fields, post_image = item
                entry["o"] = {"$v": 1, "$set": post_image}
                self._tail(entry)
                entry["o2"] = {"_id": id_value}
            else:
                entry["o"] = {"_id": item}
                self._tail(entry)
            yield bson.encode(entry)


def entry_shape(entry):
    """What must be identical between a real and a synthesized entry: the fields and their types
    in order, op, o2, and o to the byte (the generated _id, ts and wall aside)."""
    import bson
    return ([(key, type(value).__name__) for key, value in entry.items()], entry.get("op"),
            bson.encode(entry["o"]), entry.get("o2"))


# --------------------------------------------------------------------------- oplog preparation

def oplog_collection(client):
    from bson.codec_options import CodecOptions
    return client.local.get_collection("oplog.rs", codec_options=CodecOptions(document_class=dict))


def last_oplog_ts(client):
    last = list(oplog_collection(client).find({}, {"ts": 1}).sort("$natural", -1).limit(1))
    return last[0]["ts"] if last else None


def ensure_server_oplog(client, entries, is_ferretdb):
    """Make sure the server logs writes; True when a capped oplog was created here (FerretDB)."""
    if "oplog.rs" in client.local.list_collection_names():
        return False
    if not is_ferretdb:
        raise SystemExit("this server has no local.oplog.rs (not a replica set member): the real "
                         "workload cannot be captured; use a replica set or --oplog-source synthetic")
    size = max(256 * 1024 * 1024, entries * OPLOG_BYTES_PER_ENTRY)
    client.local.create_collection("oplog.rs", capped=True, size=size)
    log("created a capped local.oplog.rs of %d MB (dropped again after the capture)" % (size // 1000000))
    return True


def run_real_workload(client, args, total, is_ferretdb, seed):
    """Run the workload against the server; (its raw entries renamed to the target db, workload,
    seconds). The entries come from local.oplog.rs, as the server wrote them."""
    import bson
    created = ensure_server_oplog(client, total, is_ferretdb)
    try:
        mark_target(client, args, args.oplog_db)
        client.drop_database(args.oplog_db)
        start = last_oplog_ts(client)
        workload = OplogWorkload(args.oplog_collections, args.oplog_working_set, seed)
        database = client[args.oplog_db]
        started = last = time.perf_counter()
        done = 0
        for kind, name, items in workload.steps(total):
            apply_step(database, kind, name, items)
            done += len(items)
            now = time.perf_counter()
            if now - last >= dump_benchmark.PROGRESS_EVERY:
                last = now
                log("oplog workload: %d of %d operations, %.0f ops/s" % (done, total, done / (now - started)))
        seconds = time.perf_counter() - started
        prefix, cmd = args.oplog_db + ".", args.oplog_db + ".$cmd"
        raws, counts = [], {}
        query = {"ts": {"$gt": start}} if start is not None else {}
        for entry in oplog_collection(client).find(query).sort("$natural", 1):
            namespace = entry.get("ns") or ""
            if not namespace.startswith(prefix):
                continue
            for operation in ([entry] if namespace != cmd else (entry.get("o") or {}).get("applyOps") or []):
                if operation.get("op") in ("i", "u", "d"):  # mongod may batch writes into applyOps
                    counts[operation["op"]] = counts.get(operation["op"], 0) + 1
            entry["ns"] = args.oplog_target_db + namespace[len(args.oplog_db):]
            raws.append(bson.encode(entry))
        if sum(counts.values()) != total:
            raise SystemExit("the server's oplog holds %d of the workload's %d operations (did it roll "
                             "over? the capped local.oplog.rs is too small)" % (sum(counts.values()), total))
        client.drop_database(args.oplog_db)
        return raws, workload, seconds
    finally:
        if created:
            client.local.drop_collection("oplog.rs")


def prepare_oplog(client, args, is_ferretdb, path):
    """Write the oplog to replay into ``path``; returns what was generated and how."""
    source = args.oplog_source
    if source == "auto":
        source = "real" if (not is_ferretdb or args.oplog_entries <= args.oplog_real_max) else "synthetic"
    seed = 4242
    started = time.perf_counter()
    if source == "real":
        log("oplog: running a real workload of %d operations against the server" % args.oplog_entries)
        raws, workload, workload_seconds = run_real_workload(client, args, args.oplog_entries, is_ferretdb, seed)
        with open(path, "wb") as handle:
            for raw in raws:
                handle.write(raw)
        info = {"source": "real", "workload_seconds": round(workload_seconds, 1),
                "workload_ops_per_second": round(args.oplog_entries / workload_seconds, 1)}
        entries = len(raws)
    else:
        sample = min(SAMPLE_ENTRIES, args.oplog_entries)
        log("oplog: checking the synthesized shape against %d real entries of this server" % sample)
        real_raws, _workload, _seconds = run_real_workload(client, args, sample, is_ferretdb, seed)
        check_synthetic(real_raws, args, seed, sample)
        log("oplog: synthesizing %d entries in FerretDB's shape" % args.oplog_entries)
        workload = OplogWorkload(args.oplog_collections, args.oplog_working_set, seed)
        synthetic = SyntheticOplog(args.oplog_target_db, int(time.time()))
        entries = 0
        with open(path, "wb") as handle:
            for kind, name, items in workload.steps(args.oplog_entries):
                for raw in synthetic.entries(kind, name, items):
                    handle.write(raw)
                    entries += 1
        info = {"source": "synthetic", "checked_against_real_entries": sample}
    counts = count_ops(path)
    info.update(entries=entries, by_op=counts, bytes=os.path.getsize(path),
                seconds=round(time.perf_counter() - started, 1), collections=args.oplog_collections,
                working_set=args.oplog_working_set,
                final_documents=sum(len(docs) for docs in workload.docs.values()))
    return info, workload


def check_synthetic(real_raws, args, seed, sample):
    """The synthesized entries must equal the server's, entry by entry (generated ids and times aside)."""
    import bson
    from bson.codec_options import CodecOptions
    as_dict = CodecOptions(document_class=dict)
    workload = OplogWorkload(args.oplog_collections, args.oplog_working_set, seed)
    synthetic = SyntheticOplog(args.oplog_target_db, int(time.time()))
    made = [raw for step in workload.steps(sample) for raw in synthetic.entries(*step)]
    if len(made) != len(real_raws):
        raise SystemExit("synthesized %d entries where the server wrote %d: the synthetic oplog does not "
                         "match this server; use --oplog-source real" % (len(made), len(real_raws)))
    for number, (real, ours) in enumerate(zip(real_raws, made), 1):
        real_entry, our_entry = bson.decode(real, as_dict), bson.decode(ours, as_dict)
        if entry_shape(real_entry) != entry_shape(our_entry) or real_entry["ns"] != our_entry["ns"]:
            raise SystemExit("synthesized entry #%d differs from the server's:\n  server: %r\n  ours:   %r\n"
                             "use --oplog-source real" % (number, real_entry, our_entry))


def count_ops(path):
    """{op: entries} of an oplog file, from the raw documents."""
    import bson
    counts = {}
    with open(path, "rb") as handle:
        for entry in bson.decode_file_iter(handle):
            counts[entry["op"]] = counts.get(entry["op"], 0) + 1
    return counts


def verify_replayed(client, database, workload):
    """Compare the replayed database with the workload's final state: (documents, mismatches)."""
    from bson.codec_options import CodecOptions
    as_dict = CodecOptions(document_class=dict)
    documents = mismatches = 0
    for name in workload.names:
        expected = workload.docs[name]
        found = dict((doc["_id"], doc) for doc in
                     client[database].get_collection(name, codec_options=as_dict).find())
        documents += len(found)
        mismatches += sum(1 for key in set(expected) | set(found) if expected.get(key) != found.get(key))
    return documents, mismatches


# --------------------------------------------------------------------------- children

def engine_modules():
    collection_link.expose()
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import bsonio
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import dump_scan
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import restore as restore_module
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import index_catalog, readers
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils.oplog import replay as replay_module
    return bsonio, dump_scan, restore_module, replay_module, readers, index_catalog


def child_raw_insert(client, args):
    """The baseline: every .bson file of the dump inserted raw, collections in parallel."""
    from concurrent.futures import ThreadPoolExecutor
    from bson.raw_bson import RawBSONDocument
    bsonio, dump_scan = engine_modules()[:2]
    database = client[args.target_db]

    def insert(entry):
        collection = database[entry.collection]
        documents = size = 0
        with bsonio.open_decompressed(entry.bson_path) as handle:
            for batch in bsonio.read_batches(handle, entry.bson_path):
                for start in range(0, len(batch), INSERT_CHUNK):
                    chunk = batch[start:start + INSERT_CHUNK]
                    collection.insert_many([RawBSONDocument(raw) for raw in chunk], ordered=False)
                documents += len(batch)
                size += sum(len(raw) for raw in batch)
        return documents, size

    started = time.perf_counter()
    entries = [e for e in dump_scan.scan_dump_directory(args.source).entries
               if e.db == args.db and e.bson_path and not e.special and e.type != "view"]
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        totals = list(pool.map(insert, entries))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "documents": sum(t[0] for t in totals), "bytes": sum(t[1] for t in totals)}


def time_calls(module, name, totals):
    """Replace module.name with a wrapper adding its wall time to totals[name] (this process only)."""
    original = getattr(module, name)

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - started

    setattr(module, name, timed)


def child_native(client, args):
    """The engine's restore of the dump into the target database, as the module runs it."""
    restore_module, index_catalog = engine_modules()[2], engine_modules()[5]
    phases = {}
    time_calls(restore_module, "verify_source", phases)  # manifest sha256 check before writing
    time_calls(index_catalog, "build_indexes", phases)  # after the data, from the metadata
    options = restore_module.RestoreOptions(
        source=args.source, ns_from=["%s.$coll$" % args.db], ns_to=["%s.$coll$" % args.target_db],
        num_parallel_collections=args.parallel)  # the engine's defaults otherwise, as the module's
    started = time.perf_counter()
    _changed, result = restore_module.restore(client, options)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "documents": result["total_inserted"], "bytes": result["total_bytes"],
            "failed": result["total_failed"],
            "indexes": sum(ns["indexes_built"] for ns in result["namespaces"]),
            "index_seconds": phases.get("build_indexes", 0.0),
            "verify_seconds": phases.get("verify_source", 0.0),
            "engine_seconds": result["duration_seconds"]}


def child_mongorestore(args, variant):
    """Real mongorestore: the renamed restore, or --oplogReplay of a directory holding oplog.bson.
    The URI goes through a 0600 config file; the peak RSS is mongorestore's own."""
    config = write_tool_config(os.path.join(args.work_dir, "mongorestore.yaml"), os.environ["BENCH_URI"])
    argv = [tool_path("mongorestore")[0], "--config=" + config, "--quiet"]
    if variant == "mongorestore-oplog":
        argv += ["--oplogReplay", "--dir=" + os.path.dirname(args.oplog_file)]
    else:  # its defaults otherwise (--numParallelCollections 4, one insertion worker per collection)
        argv += ["--dir=" + args.source, "--nsFrom=%s.*" % args.db, "--nsTo=%s.*" % args.target_db]
        if variant == "mongorestore-w4":
            argv.append("--numInsertionWorkersPerCollection=%d" % TOOL_WORKERS)
        if args.tool_no_index_restore:  # FerretDB refuses its index builds ("ns" option)
            argv.append("--noIndexRestore")
    try:
        seconds, tool_rss = run_tool(argv)
    finally:
        os.remove(config)
    return {"seconds": seconds, "documents": None, "bytes": None, "tool_peak_rss_mb": tool_rss}


class NullTarget:
    """A replay target that sends nothing: what the engine itself costs (decode, rules, window,
    the encoding of every document it would write). Same methods as replay.MongoTarget."""

    def __init__(self):
        self.writes = 0

    def apply_ops(self, entry):
        raise AssertionError("crud mode never sends applyOps")

    def fetch(self, namespace, ids):
        return []

    def write(self, namespace, writes, ordered=False):
        import bson
        for write in writes:  # replay.Write tuples
            self.writes += 1
            bson.encode({"_id": write.id_value} if not isinstance(write.state, dict) else write.state)

    def create_collection(self, database, command):
        return True

    def drop_collection(self, database, collection):
        return None

    def drop_database(self, database):
        return None

    def rename_collection(self, source, target, drop_target):
        return True

    def run_command(self, database, command):
        return None

    def list_indexes(self, namespace):
        return []

    def drop_index(self, namespace, name):
        return None

    def create_index(self, namespace, spec):
        return None


class ReplayProgress:
    """A log line every PROGRESS_EVERY seconds of a long replay (called after every flush)."""

    def __init__(self, started):
        self.started = self.last = started

    def __call__(self, result):
        now = time.perf_counter()
        if now - self.last >= 3 * dump_benchmark.PROGRESS_EVERY:
            self.last = now
            log("replay: %d entries in %.0f s, %.0f ops/s" % (
                result["entries"], now - self.started, result["entries"] / (now - self.started)))


def until(entries, deadline, state):
    """Stop handing entries over once ``deadline`` (perf_counter) has passed."""
    for number, entry in enumerate(entries):
        if number % 64 == 0 and time.perf_counter() > deadline:
            state["stopped_by_time_cap"] = True
            return
        yield entry


def child_replay(client, args, variant):
    """OplogReplayer in crud mode over the oplog file, into the (fresh) target database."""
    replay_module, readers = engine_modules()[3:5]
    null_target = variant == "replay-engine"
    target = NullTarget() if null_target else None
    batch = ENGINE_REPLAY_BATCH if null_target else args.replay_batch_size
    started = time.perf_counter()
    replayer = replay_module.OplogReplayer(client, mode="crud", batch_size=batch, target=target,
                                           progress=None if null_target else ReplayProgress(started))
    state = {"stopped_by_time_cap": False}
    entries = readers.iter_oplog_file(args.oplog_file)
    if args.oplog_max_seconds and not null_target:
        entries = until(entries, started + args.oplog_max_seconds, state)
    result = replayer.replay(entries)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "entries": result["entries"], "applied": result["applied"],
            "applied_by_op": result["applied_by_op"], "skipped": result["skipped"],
            "mode_used": result["mode_used"], "batch_size": batch,
            "stopped_by_time_cap": state["stopped_by_time_cap"],
            "writes_sent": target.writes if null_target else None}


def run_child(args):
    """Entry point of a measured child: one variant, one JSON line on stdout."""
    import resource
    variant = args.child
    if variant in MONGORESTORE_VARIANTS:
        result = child_mongorestore(args, variant)
    else:
        collection_link.expose()
        from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection.client import (
            ConnectionOptions, connect)
        client = connect(ConnectionOptions(uri=os.environ["BENCH_URI"]))  # same options for every variant
        if variant == "raw-insert":
            measure = functools.partial(child_raw_insert, client, args)
        elif variant == "native":
            measure = functools.partial(child_native, client, args)
        else:
            measure = functools.partial(child_replay, client, args, variant)
        result = profiled(measure, args.profile) if args.profile else measure()
        client.close()
    result["child_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    result["own_peak_rss_mb"] = own_peak_rss_mb()
    print(json.dumps(result), flush=True)


# --------------------------------------------------------------------------- measuring

def mark_target(client, args, database):
    """Record that this benchmark owns ``database``; refuse one that exists and is not ours."""
    marks = client[args.db + "_meta"][TARGETS_COLLECTION]
    if marks.find_one({"_id": database}) is None:
        if database in client.list_database_names():
            raise SystemExit("database %s exists but was not created by this benchmark; refusing to "
                             "drop it: choose another name (--target-db, --oplog-db, --oplog-target-db)"
                             % database)
        marks.replace_one({"_id": database}, {"_id": database, "by": "restore_benchmark.py"}, upsert=True)


def measure(variant, args, client, extra=(), profile=None):
    """Drop the target (untimed), then run one variant in a child; its peak RSS (see
    dump_benchmark.run_measured_child) and its CPU time (wait4)."""
    database = args.oplog_target_db if variant in OPLOG_VARIANTS else args.target_db
    client.drop_database(database)
    argv = [sys.executable, os.path.abspath(__file__), "--child", variant, "--db", args.db,
            "--target-db", args.target_db, "--oplog-target-db", args.oplog_target_db,
            "--parallel", str(args.parallel), "--work-dir", args.work_dir] + list(extra)
    if profile:
        argv += ["--profile", profile]
    if args.tool_no_index_restore:
        argv.append("--tool-no-index-restore")
    result, usage = run_measured_child(argv, args.uri, variant, args.server_pid)
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    return result


def run_restore_rounds(variants, args, client, dump_dir):
    runs = dict((variant, []) for variant in variants)
    for round_number in range(1, args.rounds + 1):
        for variant in variants:
            result = measure(variant, args, client, ["--source", dump_dir])
            runs[variant].append(result)
            log("round %d %-13s %7.1f s  peak RSS %5.1f MB%s" % (
                round_number, variant, result["seconds"], result["peak_rss_mb"],
                "  (index build %.1f s)" % result["index_seconds"] if "index_seconds" in result else ""))
    client.drop_database(args.target_db)
    return runs


def summarize(runs, totals):
    """Median seconds per variant, throughput from the dump's BSON bytes, max peak RSS."""
    summary = {}
    for variant, results in runs.items():
        summary[variant] = dump_benchmark.summarize_rounds(results, totals)
        summary[variant].update(
            cpu_seconds=round(statistics.median(r["cpu_seconds"] for r in results), 1),
            wait4_maxrss_mb=round(max(r["wait4_maxrss_mb"] for r in results), 1))
        size, docs = summary[variant]["bytes"], summary[variant]["documents"]
        if "index_seconds" in results[0]:
            summary[variant]["index_seconds"] = round(statistics.median(r["index_seconds"] for r in results), 3)
            summary[variant]["verify_seconds"] = round(statistics.median(r["verify_seconds"] for r in results), 3)
            summary[variant]["data_seconds"] = round(statistics.median(
                r["seconds"] - r["index_seconds"] - r["verify_seconds"] for r in results), 3)
            summary[variant]["indexes"] = results[-1]["indexes"]
        if (size, docs) != totals:
            log("WARNING: %s restored %d bytes / %d documents, the dump holds %d / %d"
                % (variant, size, docs, totals[0], totals[1]))
    return summary


def restore_checks(summary, mongorestore_missing):
    rows = []
    raw, native = summary.get("raw-insert"), summary.get("native")
    if raw and native:
        value = native["seconds"] / raw["seconds"]
        rows.append(("native / raw-insert time", "%.3fx" % value, "<= %.2fx" % TIME_RATIO_TARGET,
                     "PASS" if value <= TIME_RATIO_TARGET else "FAIL"))
        value = native["data_seconds"] / raw["seconds"]
        rows.append(("native data phase / raw-insert", "%.3fx" % value, "-",
                     "info (no verify, no index build)"))
    if raw:
        for tool in ("mongorestore", "mongorestore-w4"):
            if tool in summary:
                rows.append(("%s / raw-insert time" % tool, "%.3fx" % (summary[tool]["seconds"] / raw["seconds"]),
                             "-", "info (the real tool)"))
    for variant in ("native", "mongorestore", "mongorestore-w4"):
        if variant in summary:
            rss, ours = summary[variant]["peak_rss_mb"], variant == "native"
            rows.append(("%s peak RSS" % variant, "%.1f MB" % rss, "< %d MB" % RSS_TARGET_MB if ours else "-",
                         ("PASS" if rss < RSS_TARGET_MB else "FAIL") if ours else "info (the real tool)"))
    if native and "mongorestore" in summary:
        # On FerretDB mongorestore runs with --noIndexRestore: the same work is native without its build.
        value = summary["mongorestore"]["seconds"] / (native["seconds"] - native["index_seconds"])
        rows.append(("mongorestore time / native time without index build", "%.2fx" % value,
                     ">= %.1fx" % TOOL_SPEEDUP_TARGET, "info (the same work as --noIndexRestore)"))
    if native:
        for tool, target in (("mongorestore", TOOL_SPEEDUP_TARGET), ("mongorestore-w4", None)):
            if tool in summary:
                speedup = summary[tool]["seconds"] / native["seconds"]
                rows.append(("%s time / native time" % tool, "%.2fx (%.1f vs %.1f MB/s)" % (
                    speedup, native["mb_per_second"], summary[tool]["mb_per_second"]),
                    ">= %.1fx" % target if target else "-",
                    ("PASS" if speedup >= target else "FAIL") if target else "info"))
            elif mongorestore_missing:
                rows.append(("%s time / native time" % tool, "-", ">= %.1fx" % target if target else "-",
                             "SKIP (%s)" % mongorestore_missing))
    return rows


def oplog_checks(oplog, replays, mongorestore_missing):
    rows = []
    entries = oplog["entries"]
    rows.append(("oplog entries generated", "%d (%s)" % (entries, oplog["source"]), ">= %d" % OPLOG_ENTRIES_TARGET,
                 "PASS" if entries >= OPLOG_ENTRIES_TARGET else "info (fewer than the issue's %d)" % OPLOG_ENTRIES_TARGET))
    replay = replays.get("replay")
    if replay:
        rows.append(("replay peak RSS", "%.1f MB" % replay["peak_rss_mb"], "< %d MB" % REPLAY_RSS_TARGET_MB,
                     "PASS" if replay["peak_rss_mb"] < REPLAY_RSS_TARGET_MB else "FAIL"))
        rows.append(("replay coverage", "%d of %d entries" % (replay["entries"], entries), "all",
                     "PARTIAL (stopped by --oplog-max-seconds)" if replay["stopped_by_time_cap"] else "complete"))
        if replay.get("verified") is not None:
            rows.append(("replayed state", replay["verified"], "= workload's final state",
                         "PASS" if replay["verified_ok"] else "FAIL"))
        if "mongorestore-oplog" in replays:
            ours, theirs = replay["ops_per_second"], replays["mongorestore-oplog"]["ops_per_second"]
            value = ours / theirs
            rows.append(("replay vs mongorestore --oplogReplay", "%.2fx (%.0f vs %.0f ops/s)" % (value, ours, theirs),
                         ">= %.1fx" % REPLAY_SPEEDUP_TARGET, "PASS" if value >= REPLAY_SPEEDUP_TARGET else "FAIL"))
        elif mongorestore_missing:
            rows.append(("replay vs mongorestore --oplogReplay", "-", ">= %.1fx" % REPLAY_SPEEDUP_TARGET,
                         "SKIP (%s)" % mongorestore_missing))
    return rows


def run_oplog(args, client, is_ferretdb, variants):
    """Generate the oplog, then replay it (each variant once) into a fresh database."""
    oplog_dir = os.path.join(args.work_dir, "oplog")  # holds only oplog.bson: a dump for mongorestore
    os.makedirs(oplog_dir, exist_ok=True)
    path = os.path.join(oplog_dir, "oplog.bson")
    mark_target(client, args, args.oplog_target_db)
    oplog, workload = prepare_oplog(client, args, is_ferretdb, path)
    log("oplog: %(entries)d entries (%(source)s), %(bytes)d bytes, by op %(by_op)s, in %(seconds).0f s" % oplog)
    extra = ["--oplog-file", path, "--replay-batch-size", str(args.replay_batch_size),
             "--oplog-max-seconds", str(args.oplog_max_seconds)]
    replays = {}
    for variant in variants:
        result = measure(variant, args, client, extra)
        entries = result.get("entries") or oplog["entries"]
        result["ops_per_second"] = round(entries / result["seconds"], 1)
        if variant != "replay-engine":
            if not result.get("stopped_by_time_cap"):
                documents, mismatches = verify_replayed(client, args.oplog_target_db, workload)
                result["verified"] = "%d documents, %d differ" % (documents, mismatches)
                result["verified_ok"] = mismatches == 0
        replays[variant] = result
        log("oplog %-18s %d entries in %.1f s = %.0f ops/s, peak RSS %.1f MB" % (
            variant, entries, result["seconds"], result["ops_per_second"], result["peak_rss_mb"]))
    client.drop_database(args.oplog_target_db)
    return oplog, replays


# --------------------------------------------------------------------------- report

def print_restore_report(summary, check_rows, context):
    print()
    print("server: %(server)s   load average: %(loadavg)s" % context)
    print("dataset: %(dataset_mb).0f MB BSON, %(documents)d documents in %(collections)d collections "
          "(dump benchmark generator), dumped by the engine in %(dump_seconds).0f s   parallelism: %(parallel)d"
          % context)
    if not context["decimal128"]:
        print("note: the server does not support Decimal128, so decimals are stored as strings")
    header = ("variant", "rounds", "median s", "round s", "MB/s", "docs/s", "peak RSS MB", "CPU s",
              "server CPU s", "index s")
    rows = [(variant, str(s["rounds"]), "%.2f" % s["seconds"], ", ".join("%.1f" % x for x in s["round_seconds"]),
             "%.2f" % s["mb_per_second"], "%.0f" % s["docs_per_second"], "%.1f" % s["peak_rss_mb"],
             "%.1f" % s["cpu_seconds"], dump_benchmark.format_optional(s["server_cpu_seconds"]),
             "%.2f" % s["index_seconds"] if "index_seconds" in s else "-")
            for variant, s in summary.items()]
    print_table(header, rows)
    if "native" in summary:
        print("native: verify (manifest sha256) %.2f s, data %.2f s, index build %.2f s (%d indexes)" % (
            summary["native"]["verify_seconds"], summary["native"]["data_seconds"],
            summary["native"]["index_seconds"], summary["native"]["indexes"]))
    print("peak RSS: each child's own VmHWM; wait4's ru_maxrss, which also counts this parent's RSS "
          "when it spawned the child, was at most %.1f MB" % max(s["wait4_maxrss_mb"] for s in summary.values()))
    if context["mongorestore_missing"]:
        print("mongorestore: not measured: %s" % context["mongorestore_missing"])
    else:
        print("mongorestore: %s, its defaults%s; mongorestore-w4 adds --numInsertionWorkersPerCollection=%d; "
              "its peak RSS is its own VmHWM, polled" % (
                  context["mongorestore"], " and --noIndexRestore (FerretDB refuses its index builds)"
                  if context["is_ferretdb"] else "", TOOL_WORKERS))
    print()
    print_table(("check", "value", "target", "result"), check_rows)


def print_oplog_report(oplog, replays, check_rows, context):
    print()
    print("oplog: %d entries (%s), %.1f MB, by op %s, %d collections, working set %d documents each"
          % (oplog["entries"], describe_source(oplog), oplog["bytes"] / 1e6,
             ", ".join("%s %d" % item for item in sorted(oplog["by_op"].items())),
             oplog["collections"], oplog["working_set"]))
    header = ("variant", "entries", "seconds", "ops/s", "applied", "peak RSS MB", "CPU s", "batch")
    rows = [(variant, str(r.get("entries") or oplog["entries"]), "%.1f" % r["seconds"], "%.0f" % r["ops_per_second"],
             str(r.get("applied", "-")), "%.1f" % r["peak_rss_mb"], "%.1f" % r["cpu_seconds"],
             str(r.get("batch_size", "-"))) for variant, r in replays.items()]
    print_table(header, rows)
    if "replay" in replays and context["is_ferretdb"]:
        print("note: replay batch %d on FerretDB (its update commands deadlock the server at 100 matching "
              "statements; the engine's default batch is %d)" % (replays["replay"]["batch_size"], ENGINE_REPLAY_BATCH))
    print("peak RSS: each child's own VmHWM (wait4's ru_maxrss: %s MB)"
          % ", ".join("%.1f" % r["wait4_maxrss_mb"] for r in replays.values()))
    if "replay-engine" in replays:
        print("replay-engine: the same replay with a target that sends nothing (decode, rules, window, "
              "encoding): the engine's own ceiling")
    if context["mongorestore_missing"] or context["is_ferretdb"]:
        print("mongorestore --oplogReplay: not measured: %s" % (
            context["mongorestore_missing"] or "FerretDB lacks applyOps, which it needs"))
    print()
    print_table(("check", "value", "target", "result"), check_rows)


def describe_source(oplog):
    if oplog["source"] == "real":
        return "real: captured from the server's local.oplog.rs after a workload at %.0f ops/s" % (
            oplog["workload_ops_per_second"])
    return ("synthesized in FerretDB's exact shape, checked entry by entry against %d real entries"
            % oplog["checked_against_real_entries"])


def write_json(args, document):
    document.update(when=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    size_mb=args.size_mb, collections=args.collections,
                    targets={"native_over_raw_insert_time": TIME_RATIO_TARGET, "peak_rss_mb": RSS_TARGET_MB,
                             "mongorestore_over_native_time": TOOL_SPEEDUP_TARGET,
                             "replay_peak_rss_mb": REPLAY_RSS_TARGET_MB,
                             "oplog_entries": OPLOG_ENTRIES_TARGET,
                             "replay_over_mongorestore_ops": REPLAY_SPEEDUP_TARGET})
    with open(args.json_out, "w") as handle:
        json.dump(document, handle, indent=2, default=str)
        handle.write("\n")
    log("results written to %s" % args.json_out)


# --------------------------------------------------------------------------- main

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=200,
                        help="dataset size in MiB of BSON (default 200; 1024 as the dump benchmark takes long "
                             "to load and restore on FerretDB)")
    parser.add_argument("--collections", type=int, default=4, help="number of collections (default 4)")
    parser.add_argument("--variants", default=",".join(CHILD_VARIANTS),
                        help="comma-separated, of: %s (default: all)" % ", ".join(CHILD_VARIANTS))
    parser.add_argument("--rounds", type=int, default=2, help="measured restores per variant (default 2)")
    parser.add_argument("--parallel", type=int, default=4,
                        help="collections restored at once, by the engine and the baselines (default 4)")
    parser.add_argument("--db", default="dbops_bench", help="database of the dataset (default dbops_bench)")
    parser.add_argument("--target-db", default="dbops_restore_bench",
                        help="database restored into, dropped before every run (default dbops_restore_bench)")
    parser.add_argument("--oplog-entries", type=int, default=OPLOG_ENTRIES_TARGET,
                        help="oplog entries to generate and replay (default %d)" % OPLOG_ENTRIES_TARGET)
    parser.add_argument("--oplog-source", choices=("auto", "real", "synthetic"), default="auto",
                        help="real: run the workload on the server and capture its oplog; synthetic: build "
                             "the entries in FerretDB's shape (checked against a real sample); auto: real "
                             "unless FerretDB and more than --oplog-real-max entries (default auto)")
    parser.add_argument("--oplog-real-max", type=int, default=20000,
                        help="auto: most entries produced through FerretDB, ~5 ms per update (default 20000)")
    parser.add_argument("--oplog-collections", type=int, default=4, help="collections of the workload (default 4)")
    parser.add_argument("--oplog-working-set", type=int, default=1000,
                        help="most live documents per workload collection (default 1000)")
    parser.add_argument("--oplog-db", default="dbops_oplog_src", help="database of the real workload")
    parser.add_argument("--oplog-target-db", default="dbops_oplog_bench", help="database replayed into")
    parser.add_argument("--replay-batch-size", type=int, default=0,
                        help="OplogReplayer batch_size; 0: the engine's default (%d), %d on FerretDB"
                             % (ENGINE_REPLAY_BATCH, FERRETDB_MAX_UPDATES_PER_COMMAND))
    parser.add_argument("--oplog-max-seconds", type=float, default=300,
                        help="stop a replay after this long and report the rate so far (0: no limit; "
                             "default 300)")
    parser.add_argument("--skip-restore", action="store_true", help="only the oplog part")
    parser.add_argument("--skip-oplog", action="store_true", help="only the restore part")
    dump_benchmark.add_server_arguments(parser)
    parser.add_argument("--profile", help="after measuring, profile one native restore (cProfile, all threads) "
                                          "and save the stats to this file")
    parser.add_argument("--work-dir", help="where the dump and the oplog go (default: a new temp dir, removed)")
    parser.add_argument("--check", action="store_true", help="exit with status 1 when a target is missed")
    parser.add_argument("--child", choices=CHILD_VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--oplog-file", help=argparse.SUPPRESS)
    parser.add_argument("--tool-no-index-restore", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def selected_variants(args):
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in CHILD_VARIANTS]
    if unknown:
        raise SystemExit("unknown variants %s; choose from %s" % (unknown, ", ".join(CHILD_VARIANTS)))
    path, missing = tool_path("mongorestore")
    if missing:
        variants = [v for v in variants if v not in MONGORESTORE_VARIANTS]
    return ([v for v in variants if v in RESTORE_VARIANTS], [v for v in variants if v in OPLOG_VARIANTS],
            path, missing)


def dump_dataset(args, dump_dir):
    """Dump the dataset once with the engine (directory format); returns the dump's result."""
    collection_link.expose()
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection.client import (
        ConnectionOptions, connect, server_facts)
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical.dump import dump
    from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical.dump_options import DumpOptions
    client = connect(ConnectionOptions(uri=args.uri))
    try:
        options = DumpOptions(db=args.db, path=dump_dir, num_parallel_collections=args.parallel,
                              label="restore-benchmark")
        log("dumping %s with the engine into %s" % (args.db, dump_dir))
        _changed, result = dump(client, options, server_facts(client))
    finally:
        client.close()
    log("dumped %d documents, %.0f MB in %.0f s" % (result["total_documents"], result["total_bytes"] / 1e6,
                                                    result["duration_seconds"]))
    return result


def benchmark(args):
    restore_variants, oplog_variants, mongorestore, mongorestore_missing = selected_variants(args)
    if mongorestore_missing:
        log("mongorestore variants skipped: %s" % mongorestore_missing)
    server, owned = open_server(args)
    check_loopback(args.uri, args.allow_remote)
    import pymongo
    own_work_dir = not args.work_dir
    args.work_dir = args.work_dir or tempfile.mkdtemp(prefix="dbops-restore-bench-")
    os.makedirs(args.work_dir, mode=0o700, exist_ok=True)
    document, check_rows = {}, []
    try:
        client = pymongo.MongoClient(args.uri)
        label = server_label(client)
        is_ferretdb = label.startswith("FerretDB")
        args.tool_no_index_restore = is_ferretdb
        if is_ferretdb and "mongorestore-oplog" in oplog_variants:
            oplog_variants.remove("mongorestore-oplog")
            log("mongorestore-oplog skipped: FerretDB lacks applyOps, which --oplogReplay needs")
        if not args.replay_batch_size:
            args.replay_batch_size = FERRETDB_MAX_UPDATES_PER_COMMAND if is_ferretdb else ENGINE_REPLAY_BATCH
        context = {"server": label, "is_ferretdb": is_ferretdb, "parallel": args.parallel,
                   "mongorestore": mongorestore, "mongorestore_missing": mongorestore_missing,
                   "loadavg": ", ".join("%.2f" % x for x in os.getloadavg()), "cpus": os.cpu_count()}
        document["context"] = context
        if not args.skip_restore and restore_variants:
            fresh_client = functools.partial(pymongo.MongoClient, args.uri, serverSelectionTimeoutMS=5000)
            dataset = ensure_dataset(client, args, fresh_client)
            mark_target(client, args, args.target_db)
            dump_dir = os.path.join(args.work_dir, "dump")
            dumped = dump_dataset(args, dump_dir)
            totals = (dumped["total_bytes"], dumped["total_documents"])
            runs = run_restore_rounds(restore_variants, args, client, dump_dir)
            summary = summarize(runs, totals)
            rows = restore_checks(summary, mongorestore_missing)
            context.update(dataset_mb=totals[0] / 1e6, documents=totals[1], collections=args.collections,
                           decimal128=dataset["decimal128"], dump_seconds=dumped["duration_seconds"])
            print_restore_report(summary, rows, context)
            check_rows += rows
            document.update(restore={"summary": summary, "runs": runs})
            if args.profile and "native" in restore_variants:
                measure("native", args, client, ["--source", dump_dir], profile=args.profile)
                client.drop_database(args.target_db)
                print_profile(args.profile)
        if not args.skip_oplog and oplog_variants:
            oplog, replays = run_oplog(args, client, is_ferretdb, oplog_variants)
            rows = oplog_checks(oplog, replays, mongorestore_missing)
            context["loadavg_end"] = ", ".join("%.2f" % x for x in os.getloadavg())
            print_oplog_report(oplog, replays, rows, context)
            check_rows += rows
            document.update(oplog=oplog, replays=replays)
        client.close()
        document["checks"] = [dict(zip(("check", "value", "target", "result"), row)) for row in check_rows]
        if args.json_out:
            write_json(args, document)
        return 1 if args.check and any(row[3] == "FAIL" for row in check_rows) else 0
    finally:
        if own_work_dir:
            shutil.rmtree(args.work_dir, ignore_errors=True)
        if server is not None and owned:
            if args.keep_server:
                keep_server(server)
            else:
                server.stop()


def main():
    args = parse_args()
    if args.child:
        run_child(args)
        return 0
    return benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
