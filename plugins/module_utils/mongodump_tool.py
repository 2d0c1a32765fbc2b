# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``engine: mongodump``: run the real mongodump binary, then write our manifest for its output.

The password never reaches argv: it goes into a 0600 YAML ``--config`` file that is deleted
as soon as mongodump exits. The URI goes there too, since it may carry credentials.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid

from ansible_collections.dbops.mongodb_backup.plugins.module_utils import bsonio
from ansible_collections.dbops.mongodb_backup.plugins.module_utils import dump as dump_engine
from ansible_collections.dbops.mongodb_backup.plugins.module_utils import manifest as manifest_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.client import redact
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import DumpFailed, InvalidOption

try:
    from bson import json_util
except ImportError:  # pragma: no cover
    json_util = None


def find_binary(explicit=None):
    binary = explicit or shutil.which("mongodump")
    if not binary or not os.access(binary, os.X_OK):
        raise DumpFailed("engine: mongodump needs the mongodump program, and %s; install the MongoDB "
                         "Database Tools, set mongodump_path, or use engine: native"
                         % ("%s is not executable" % explicit if explicit else "none was found on PATH"))
    return binary


def config_text(connection):
    """YAML for ``mongodump --config``: the secrets, each as a JSON (valid YAML) string."""
    lines = []
    if connection.uri:
        lines.append("uri: %s" % json.dumps(connection.uri))
    if connection.login_password is not None:
        lines.append("password: %s" % json.dumps(connection.login_password))
    if connection.tls_certificate_key_file_password:
        lines.append("sslPEMKeyPassword: %s" % json.dumps(connection.tls_certificate_key_file_password))
    return "\n".join(lines) + "\n"


def build_argv(binary, connection, options, output, config_path):
    """mongodump's argv for these options. Holds no secret."""
    argv = [binary, "--config=%s" % config_path]
    if not connection.uri:
        host = connection.login_host or "localhost"
        if connection.replica_set:
            host = "%s/%s" % (connection.replica_set, host)
        argv += ["--host=%s" % host, "--port=%d" % (connection.login_port or 27017)]
    if connection.login_user:
        argv.append("--username=%s" % connection.login_user)
        argv.append("--authenticationDatabase=%s" % (connection.login_database or "admin"))
    if connection.tls:
        argv.append("--ssl")
        if connection.tls_ca_file:
            argv.append("--sslCAFile=%s" % connection.tls_ca_file)
        if connection.tls_certificate_key_file:
            argv.append("--sslPEMKeyFile=%s" % connection.tls_certificate_key_file)
        if connection.tls_allow_invalid_hostnames:
            argv.append("--sslAllowInvalidHostnames")
        if connection.tls_allow_invalid_certificates:
            argv.append("--sslAllowInvalidCertificates")
    read_preference = connection.read_preference or ("secondaryPreferred" if options.prefer_secondary else None)
    if read_preference:
        argv.append("--readPreference=%s" % read_preference)
    if options.db:
        argv.append("--db=%s" % options.db)
    if options.collection:
        argv.append("--collection=%s" % options.collection)
    if options.query is not None:
        argv.append("--query=%s" % json_util.dumps(options.query, json_options=json_util.CANONICAL_JSON_OPTIONS))
    if options.oplog:
        argv.append("--oplog")
    if options.dump_users_and_roles:
        argv.append("--dumpDbUsersAndRoles")
    if options.gzip:
        argv.append("--gzip")
    argv.append("--numParallelCollections=%d" % options.num_parallel_collections)
    argv.append(("--archive=%s" if options.is_archive else "--out=%s") % output)
    return argv


def run(connection, options, binary, check_mode):
    """Returns (changed, result) like dump_engine.dump."""
    if options.ns_include or options.ns_exclude:
        raise InvalidOption("ns_include and ns_exclude need engine: native (mongodump has no such filters)")
    binary = find_binary(binary)
    target = os.path.abspath(options.target)
    dump_engine.check_target_kind(options)
    staging = dump_engine.Staging(target, options.is_archive)
    if check_mode:
        existing = dump_engine.existing_backup(options)
        if existing is not None and not options.force:
            return False, _kept(existing, options, target)
        dump_engine.Dumper.check_backup_location(os.path.dirname(target))
        staging.check_free()
        return True, {"path": target, "label": options.label,
                      "command": build_argv(binary, connection, options, staging.data_path, "<0600 config file>")}
    dump_engine.prepare_parent(options)
    with dump_engine.target_lock(options):
        staging.resume_commit()
        existing = dump_engine.existing_backup(options)
        if existing is not None and not options.force:
            return False, _kept(existing, options, target)
        return True, _dump_into(staging, binary, connection, options, target)


def _kept(existing, options, target):
    dump_engine.check_kept_backup(existing, options)
    return {"backup_id": existing["backup_id"], "label": existing["label"], "path": target,
            "msg": "backup with label %r is already complete at %s" % (options.label, target)}


def _dump_into(staging, binary, connection, options, target):
    started = time.time()
    try:
        staging.create()  # discard() removes only what create() made: never what was in the way
        _run_mongodump(binary, connection, options, staging.data_path)
        files = _file_records(staging.data_path)
        finished = time.time()
        document = manifest_utils.new_manifest(
            str(uuid.uuid4()), options.label, "logical", manifest_utils.iso_time(started), manifest_utils.iso_time(finished),
            {"tool": "mongodump"}, None, dict(options.describe(), engine="mongodump"))
        document["files"] = files
        document["totals"] = {"bytes_on_disk": sum(f["bytes"] for f in files),
                              "seconds": round(finished - started, 3)}
        staging.commit(document)
    except BaseException:
        staging.discard()
        raise
    return {"backup_id": document["backup_id"], "label": options.label, "path": target,
            "manifest": manifest_utils.manifest_path(target, options.is_archive),
            "bytes_on_disk": document["totals"]["bytes_on_disk"],
            "duration_seconds": document["totals"]["seconds"], "engine": "mongodump"}


def _run_mongodump(binary, connection, options, output):
    workdir = tempfile.mkdtemp(prefix="dbops-mongodump-")
    try:
        config_path = os.path.join(workdir, "mongodump.yaml")
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(config_text(connection))
        argv = build_argv(binary, connection, options, output, config_path)
        process = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, check=False)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if process.returncode != 0:
        stderr = redact(process.stderr.decode("utf-8", "replace"), connection.secrets)
        raise DumpFailed("mongodump exited with status %d: %s; the incomplete backup was removed"
                         % (process.returncode, stderr.strip()[-2000:]))
    for root, dirs, files in os.walk(output):
        os.chmod(root, manifest_utils.DIR_MODE)
        for name in files:
            os.chmod(os.path.join(root, name), manifest_utils.FILE_MODE)
    if os.path.isfile(output):
        os.chmod(output, manifest_utils.FILE_MODE)


def _file_records(output):
    paths = [output] if os.path.isfile(output) else sorted(
        os.path.join(root, name) for root, _dirs, files in os.walk(output) for name in files)
    base = os.path.dirname(output) if os.path.isfile(output) else output
    records = []
    for path in paths:
        relative = os.path.relpath(path, base)
        if relative == dump_engine.STAGING_MARKER:
            continue
        records.append({"path": relative, "bytes": os.path.getsize(path), "sha256": bsonio.sha256_file(path)})
    return records
