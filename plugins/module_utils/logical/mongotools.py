# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``engine: mongodump``: run the real mongodump binary, then write our manifest for its output.

The password never reaches argv: it goes into a 0600 YAML ``--config`` file in a private 0700
directory, deleted as soon as mongodump exits. The URI goes there too, since it may carry
credentials. If the module is killed before it can delete the file, the next run removes it
(the directory is named after the pid that owns it). mongodump runs in its own process group
and is killed with the module: the kernel sends it SIGKILL when its parent dies
(PR_SET_PDEATHSIG), and every exit path of the module stops the group.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
import uuid

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import bsonio
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core import timestamps
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import dump_options
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical import backup_target
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.formats import manifest as manifest_utils
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.connection.client import check_tls_files, parse_uri, redact
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import (
    DumpFailed, InvalidOption, Terminated)

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


# --------------------------------------------------------------------------- argv

def _opt_eq_val(flag):
    """--flag=value, or nothing when the value is None."""
    return lambda value: [] if value is None else ["%s=%s" % (flag, value)]


def _flag(flag):
    """--flag when the value is true."""
    return lambda value: [flag] if value else []


# Every argument mongodump gets, in order: name -> how its value becomes argv (never a shell).
# Secrets have no entry: they only ever go to the config file.
MONGODUMP_ARGUMENTS = (
    ("config", _opt_eq_val("--config")),
    ("host", _opt_eq_val("--host")),
    ("port", _opt_eq_val("--port")),
    ("username", _opt_eq_val("--username")),
    ("authentication_database", _opt_eq_val("--authenticationDatabase")),
    ("ssl", _flag("--ssl")),
    ("ssl_ca_file", _opt_eq_val("--sslCAFile")),
    ("ssl_pem_key_file", _opt_eq_val("--sslPEMKeyFile")),
    ("ssl_allow_invalid_hostnames", _flag("--sslAllowInvalidHostnames")),
    ("ssl_allow_invalid_certificates", _flag("--sslAllowInvalidCertificates")),
    ("read_preference", _opt_eq_val("--readPreference")),
    ("db", _opt_eq_val("--db")),
    ("collection", _opt_eq_val("--collection")),
    ("query", _opt_eq_val("--query")),
    ("oplog", _flag("--oplog")),
    ("dump_db_users_and_roles", _flag("--dumpDbUsersAndRoles")),
    ("gzip", _flag("--gzip")),
    ("num_parallel_collections", _opt_eq_val("--numParallelCollections")),
    ("archive", _opt_eq_val("--archive")),
    ("out", _opt_eq_val("--out")),
)


def argument_values(connection, options, output, config_path):
    """The values of MONGODUMP_ARGUMENTS for these options (None: not passed)."""
    values = {"config": config_path}
    if not connection.uri:
        host = connection.login_host or "localhost"
        values["host"] = "%s/%s" % (connection.replica_set, host) if connection.replica_set else host
        values["port"] = connection.login_port or 27017
    if connection.login_user:
        values["username"] = connection.login_user
        values["authentication_database"] = connection.login_database or "admin"
    if connection.tls:
        values.update(ssl=True, ssl_ca_file=connection.tls_ca_file,
                      ssl_pem_key_file=connection.tls_certificate_key_file,
                      ssl_allow_invalid_hostnames=connection.tls_allow_invalid_hostnames,
                      ssl_allow_invalid_certificates=connection.tls_allow_invalid_certificates)
    values["read_preference"] = connection.read_preference or (
        "secondaryPreferred" if options.prefer_secondary else None)
    values.update(db=options.db, collection=options.collection, oplog=options.oplog,
                  dump_db_users_and_roles=options.dump_users_and_roles, gzip=options.compression == "gzip",
                  num_parallel_collections=options.num_parallel_collections)
    if options.query is not None:
        values["query"] = json_util.dumps(options.query, json_options=json_util.CANONICAL_JSON_OPTIONS)
    values["archive" if options.is_archive else "out"] = output
    return values


def check_compression(options):
    """mongodump compresses with gzip only (--gzip), at zlib's default level."""
    if options.compression not in ("none", "gzip"):
        raise InvalidOption("compression: %s needs engine: native (mongodump writes only gzip); use "
                            "compression: gzip with engine: mongodump, or engine: native" % options.compression)
    if options.compression_level is not None:
        raise InvalidOption("%s needs engine: native (mongodump --gzip takes no level); remove %s, or use "
                            "engine: native" % (options.level_option, options.level_option))


def build_argv(binary, connection, options, output, config_path):
    """mongodump's argv for these options. Holds no secret."""
    values = argument_values(connection, options, output, config_path)
    argv = [binary]
    for name, to_argv in MONGODUMP_ARGUMENTS:
        argv.extend(to_argv(values.get(name)))
    return argv


def run(connection, options, binary, check_mode):
    """Returns (changed, result) like dump_engine.dump."""
    if options.ns_include or options.ns_exclude:
        raise InvalidOption("ns_include and ns_exclude need engine: native (mongodump has no such filters)")
    check_compression(options)
    if connection.uri:
        parse_uri(connection.uri)  # a malformed URI is refused here, without quoting its credentials
    check_tls_files(connection)
    binary = find_binary(binary)
    target = os.path.abspath(options.target)
    dump_options.check_target_kind(options)
    staging = backup_target.Staging(target, options.is_archive)
    if check_mode:
        existing = backup_target.kept_backup(options, staging)
        if existing is not None:
            return False, _kept(existing, options, target)
        backup_target.check_backup_location(os.path.dirname(target))
        staging.check_free()
        return True, {"path": target, "label": options.label,
                      "command": build_argv(binary, connection, options, staging.data_path, "<0600 config file>")}
    backup_target.prepare_parent(options)
    with backup_target.target_lock(options):
        staging.resume_commit()
        existing = backup_target.kept_backup(options, staging)
        if existing is not None:
            return False, _kept(existing, options, target)
        return True, _dump_into(staging, binary, connection, options, target)


def _kept(existing, options, target):
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
            str(uuid.uuid4()), options.label, "logical", timestamps.iso_time(started), timestamps.iso_time(finished),
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
    workdir = private_workdir()
    try:
        config_path = os.path.join(workdir, "mongodump.yaml")
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.fchmod(fd, 0o600)  # exactly 0600, whatever the umask
        with os.fdopen(fd, "w") as handle:
            handle.write(config_text(connection))
        argv = build_argv(binary, connection, options, output, config_path)
        returncode, stderr = run_tool(argv, connection.secrets)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if returncode != 0:
        stderr = redact(stderr.decode("utf-8", "replace"), connection.secrets)
        raise DumpFailed("mongodump exited with status %d: %s; the incomplete backup was removed"
                         % (returncode, stderr.strip()[-2000:]))
    for root, dirs, files in os.walk(output):
        os.chmod(root, manifest_utils.DIR_MODE)
        for name in files:
            os.chmod(os.path.join(root, name), manifest_utils.FILE_MODE)
    if os.path.isfile(output):
        os.chmod(output, manifest_utils.FILE_MODE)


# --------------------------------------------------------------------------- private files

WORKDIR_PARENT = "dbops-mongodb-backup-%d"  # per user, in the temporary directory
_RUN_DIR = re.compile(r"^run-(\d+)-")


def private_workdir(temp_root=None):
    """A new 0700 directory for this run's secret files.

    It lives in a 0700 directory of this user (``$TMPDIR/dbops-mongodb-backup-<uid>``) and is
    named ``run-<pid>-...``; directories left by runs whose process is gone (a killed module)
    are removed first.
    """
    parent = os.path.join(temp_root or tempfile.gettempdir(), WORKDIR_PARENT % os.getuid())
    _ensure_private_dir(parent)
    remove_stale_workdirs(parent)
    workdir = tempfile.mkdtemp(prefix="run-%d-" % os.getpid(), dir=parent)
    os.chmod(workdir, 0o700)
    return workdir


def _ensure_private_dir(path):
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise DumpFailed("%s, where engine: mongodump keeps its 0600 config file, is not a directory "
                         "owned by this user; remove it (or set TMPDIR elsewhere) and run again" % path)
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)


def remove_stale_workdirs(parent):
    """Remove run directories whose owner process no longer exists. Returns their names."""
    removed = []
    for name in sorted(os.listdir(parent)):
        match = _RUN_DIR.match(name)
        if match and not process_exists(int(match.group(1))):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
            removed.append(name)
    return removed


def process_exists(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


# --------------------------------------------------------------------------- the child process

PR_SET_PDEATHSIG = 1  # linux/prctl.h
STOP_GRACE_SECONDS = 5


def _load_prctl():
    """libc's prctl, or None where there is none (not Linux): the group kill still applies."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _die_with_parent(prctl, parent_pid):
    """Runs in the child between fork and exec: SIGKILL when the module process dies."""
    def setup():
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)
    return setup


def dies_with_module():
    """``preexec_fn`` for a child that must not outlive the module process (a tool, a scratch mongod)."""
    return _die_with_parent(_load_prctl(), os.getpid())


def run_tool(argv, secrets=()):
    """Run a tool (argv, never a shell) in its own process group; returns (returncode, stderr).

    The tool dies with the module: SIGKILL from the kernel if the module is killed, and the
    group is stopped on every other way out (an exception, SIGTERM, Ctrl-C). Environment
    variables that hold a secret are not passed on: the tool reads its config file.
    """
    environment = dict((name, value) for name, value in os.environ.items()
                       if not any(secret in value for secret in secrets if secret))
    # preexec_fn only calls prctl and getppid (async-signal-safe); the module runs no other threads here.
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,  # pylint: disable=subprocess-popen-preexec-fn
                               stderr=subprocess.PIPE, close_fds=True, start_new_session=True,
                               env=environment,
                               preexec_fn=dies_with_module())
    try:
        with sigterm_raises("mongodump ran; mongodump was stopped and the incomplete backup removed"):
            _stdout, stderr = process.communicate()
    finally:
        stop_process_group(process)
    return process.returncode, stderr


def stop_process_group(process):
    """SIGTERM, then SIGKILL, to the group of a child that is still running."""
    if process.poll() is not None:
        return  # reaped: its group id may belong to someone else by now
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            return
        try:
            process.wait(STOP_GRACE_SECONDS)
            return
        except subprocess.TimeoutExpired:
            continue


class sigterm_raises:
    """While the block runs, SIGTERM raises Terminated (so finally blocks clean up) instead of killing us.

    ``what`` ends the message: "the module was stopped (signal 15) while <what>". ``fired`` says whether it
    happened, for callers that see the error wrapped in another.
    """

    def __init__(self, what):
        self.what = what
        self.fired = False

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._raise)
        return self

    def _raise(self, signum, _frame):
        self.fired = True
        raise Terminated("the module was stopped (signal %d) while %s" % (signum, self.what))

    def __exit__(self, *exc_info):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


def _file_records(output):
    paths = [output] if os.path.isfile(output) else sorted(
        os.path.join(root, name) for root, _dirs, files in os.walk(output) for name in files)
    base = os.path.dirname(output) if os.path.isfile(output) else output
    records = []
    for path in paths:
        relative = os.path.relpath(path, base)
        if relative == backup_target.STAGING_MARKER:
            continue
        records.append({"path": relative, "bytes": os.path.getsize(path), "sha256": bsonio.sha256_file(path)})
    return records
