#!/usr/bin/env python
"""Start and stop the local test server that the demo and the tests use.

Order of preference (DESIGN.md, "Test bed"):
  1. a real ``mongod`` (``$MONGOD`` or PATH): single-node replica set with auth;
  2. FerretDB built from the Go module proxy at the version pinned in tools/go.mod,
     SQLite backend, auth on, telemetry off, bound to 127.0.0.1.

Command line:
  testserver.py start   start in the background; the last line printed is the URI
  testserver.py stop    stop the server started by ``start`` and delete its data
  testserver.py uri     print the URI of the running server
  testserver.py build   build (or reuse) the cached FerretDB binary and print its path
  testserver.py prepare make ready the server that ``start`` would use, and print its kind and
                        binary: nothing to do for a found mongod, else FerretDB is built (Go)

The URI carries generated credentials; the state file holding it is 0600.
"""

import argparse
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS_DIR = os.path.join(ROOT, "tools")
CACHE_DIR = os.path.join(ROOT, ".cache")
FERRETDB_BIN = os.path.join(CACHE_DIR, "bin", "ferretdb")
FERRETDB_STAMP = FERRETDB_BIN + ".stamp"
FERRETDB_MODULE = "github.com/FerretDB/FerretDB"
DEFAULT_STATE = os.path.join(CACHE_DIR, "server", "state.json")
ADMIN_USER = "dbops_admin"
REPLICA_SET = "rs0"
READY_TIMEOUT = 60


# --------------------------------------------------------------------------- helpers

def free_port():
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log(message):
    print(message, file=sys.stderr, flush=True)


def find_mongod():
    candidate = os.environ.get("MONGOD") or shutil.which("mongod")
    if candidate and os.access(candidate, os.X_OK):
        return candidate
    return None


def prepare_server():
    """Make the server that ``start_server`` will use ready; return ``(kind, binary)``.

    A found ``mongod`` is used as it is, so Go is needed only where there is none.
    """
    mongod = find_mongod()
    if mongod:
        return "mongod", mongod
    return "ferretdb", build_ferretdb()


# --------------------------------------------------------------------------- FerretDB build

def _pin_digest():
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        with open(os.path.join(TOOLS_DIR, name), "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()


def _go(args, cwd, capture=False):
    env = dict(os.environ, GOFLAGS="-mod=mod", GOTOOLCHAIN="local")
    if capture:
        return subprocess.run(["go"] + args, cwd=cwd, env=env, check=True,
                              stdout=subprocess.PIPE).stdout.decode()
    subprocess.run(["go"] + args, cwd=cwd, env=env, check=True, stdout=sys.stderr)


def build_ferretdb():
    """Build FerretDB once per pin and cache the binary under .cache/bin."""
    pin = _pin_digest()
    if os.path.exists(FERRETDB_BIN) and os.path.exists(FERRETDB_STAMP):
        with open(FERRETDB_STAMP) as handle:
            if handle.read().strip() == pin:
                return FERRETDB_BIN
    if not shutil.which("go"):
        raise SystemExit("no mongod found and no Go toolchain to build FerretDB: "
                         "install Go 1.24+ or put a mongod on PATH (or set MONGOD)")
    _log("building FerretDB from the Go module proxy (pinned in tools/go.mod); once per pin")
    info = json.loads(_go(["mod", "download", "-json", FERRETDB_MODULE], TOOLS_DIR, capture=True))
    # The module cache is read-only and FerretDB's release build expects a version file,
    # so build from a private copy of the verified module source.
    src = os.path.join(CACHE_DIR, "ferretdb-src")
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(info["Dir"], src)
    for dirpath, _dirs, files in os.walk(src):
        os.chmod(dirpath, 0o755)
        for name in files:
            os.chmod(os.path.join(dirpath, name), 0o644)
    with open(os.path.join(src, "build", "version", "version.txt"), "w") as handle:
        handle.write(info["Version"] + "\n")
    os.makedirs(os.path.dirname(FERRETDB_BIN), exist_ok=True)
    _go(["build", "-trimpath", "-o", FERRETDB_BIN, "./cmd/ferretdb"], src)
    shutil.rmtree(src, ignore_errors=True)
    with open(FERRETDB_STAMP, "w") as handle:
        handle.write(pin + "\n")
    return FERRETDB_BIN


# --------------------------------------------------------------------------- server

class Server:
    """A running test server process with its credentials."""

    def __init__(self, kind, host, port, username, password, pid, data_dir, log_path, process=None,
                 tls_port=None):
        self.kind = kind
        self.tls_port = tls_port  # where TLS is accepted, when started with a certificate
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.pid = pid
        self.data_dir = data_dir
        self.log_path = log_path
        self.process = process

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    @property
    def uri(self):
        return "mongodb://%s:%s@%s/?authSource=admin&directConnection=true" % (
            self.username, self.password, self.address)

    def client(self, **kwargs):
        import pymongo
        options = dict(username=self.username, password=self.password, authSource="admin",
                       directConnection=True, serverSelectionTimeoutMS=10000)
        options.update(kwargs)
        return pymongo.MongoClient(self.host, self.port, **options)

    def ensure_oplog(self, size_bytes=256 * 1024 * 1024, max_entries=None):
        """FerretDB writes oplog entries once the capped local.oplog.rs exists."""
        client = self.client()
        try:
            if "oplog.rs" not in client.local.list_collection_names():
                limits = {"max": max_entries} if max_entries else {}
                client.local.create_collection("oplog.rs", capped=True, size=size_bytes, **limits)
        finally:
            client.close()

    def to_state(self):
        return {"kind": self.kind, "host": self.host, "port": self.port, "username": self.username,
                "password": self.password, "pid": self.pid, "data_dir": self.data_dir,
                "log_path": self.log_path, "tls_port": self.tls_port}

    @classmethod
    def from_state(cls, state):
        return cls(**state)

    def is_running(self):
        try:
            os.kill(self.pid, 0)
        except OSError:
            return False
        if self.process is not None:
            return self.process.poll() is None
        return True

    def kill(self):
        """SIGKILL, as a crash would: used by the fault tests."""
        self._signal(signal.SIGKILL)

    def stop(self, remove_data=True):
        self._signal(signal.SIGTERM)
        deadline = time.time() + 15
        while self.is_running() and time.time() < deadline:
            time.sleep(0.1)
        if self.is_running():
            self._signal(signal.SIGKILL)
        if remove_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def _signal(self, signum):
        try:
            os.kill(self.pid, signum)
        except OSError:
            pass
        if self.process is not None:
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass


def _wait_ready(server):
    import pymongo
    deadline = time.time() + READY_TIMEOUT
    last_error = None
    while time.time() < deadline:
        if not server.is_running():
            break
        try:
            client = server.client(serverSelectionTimeoutMS=1000)
            client.admin.command("ping")
            client.close()
            return
        except pymongo.errors.PyMongoError as exc:
            last_error = exc
            time.sleep(0.2)
    with open(server.log_path, errors="replace") as handle:
        tail = handle.read()[-3000:]
    server.stop()
    raise RuntimeError("test server (%s) did not become ready: %s\n%s" % (server.kind, last_error, tail))


def start_ferretdb(data_dir, detach=False, tls_pem=None, capped_cleanup_seconds=None):
    binary = build_ferretdb()
    port = free_port()
    password = secrets.token_urlsafe(18)
    log_path = os.path.join(data_dir, "server.log")
    argv = [
        binary,
        "--handler=sqlite",
        "--sqlite-url=file:%s/" % os.path.join(data_dir, "db"),
        "--state-dir=%s" % data_dir,
        "--listen-addr=127.0.0.1:%d" % port,
        "--debug-addr=127.0.0.1:%d" % free_port(),
        "--repl-set-name=%s" % REPLICA_SET,
        "--telemetry=disable",
        "--log-level=WARN",
        "--test-enable-new-auth",
        "--setup-database=admin",
        "--setup-username=%s" % ADMIN_USER,
    ]
    tls_port = None
    if tls_pem:
        tls_port = free_port()
        argv += ["--listen-tls=127.0.0.1:%d" % tls_port, "--listen-tls-cert-file=%s" % tls_pem,
                 "--listen-tls-key-file=%s" % tls_pem]
    os.makedirs(os.path.join(data_dir, "db"), exist_ok=True)
    # The password goes through the environment, never argv.
    env = dict(os.environ, DO_NOT_TRACK="1", FERRETDB_SETUP_PASSWORD=password)
    if capped_cleanup_seconds:  # FerretDB trims capped collections in the background, every minute by default
        env["FERRETDB_TEST_CAPPED_CLEANUP_INTERVAL"] = "%ds" % capped_cleanup_seconds
    server = _spawn("ferretdb", argv, env, port, password, data_dir, log_path, detach, wait=False)
    server.tls_port = tls_port
    _wait_ready(server)
    return server


def start_mongod(mongod, data_dir, detach=False, tls_pem=None):
    port = free_port()
    password = secrets.token_urlsafe(18)
    log_path = os.path.join(data_dir, "server.log")
    keyfile = os.path.join(data_dir, "keyfile")
    with open(os.open(keyfile, os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
        handle.write(secrets.token_hex(32))
    os.makedirs(os.path.join(data_dir, "db"), exist_ok=True)
    argv = [mongod, "--replSet", REPLICA_SET, "--bind_ip", "127.0.0.1", "--port", str(port),
            "--dbpath", os.path.join(data_dir, "db"), "--keyFile", keyfile, "--auth",
            "--oplogSize", "1024"]
    if tls_pem:
        argv += ["--tlsMode", "allowTLS", "--tlsCertificateKeyFile", tls_pem]
    server = _spawn("mongod", argv, dict(os.environ), port, password, data_dir, log_path, detach,
                    wait=False)
    server.tls_port = port if tls_pem else None
    _initiate_replica_set(server)
    _wait_ready(server)
    return server


def _initiate_replica_set(server):
    """Initiate the set and create the admin user through the localhost exception."""
    import pymongo
    deadline = time.time() + READY_TIMEOUT
    client = pymongo.MongoClient(server.host, server.port, directConnection=True,
                                 serverSelectionTimeoutMS=1000)
    while True:
        try:
            client.admin.command("replSetInitiate", {
                "_id": REPLICA_SET, "members": [{"_id": 0, "host": server.address}]})
            break
        except pymongo.errors.PyMongoError:
            if time.time() > deadline:
                raise
            time.sleep(0.3)
    while not client.admin.command("hello").get("isWritablePrimary"):
        if time.time() > deadline:
            raise RuntimeError("mongod did not become primary")
        time.sleep(0.3)
    client.admin.command("createUser", server.username, pwd=server.password, roles=["root"])
    client.close()


def _spawn(kind, argv, env, port, password, data_dir, log_path, detach, wait=True):
    log = open(log_path, "ab")
    process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=detach)
    log.close()
    server = Server(kind, "127.0.0.1", port, ADMIN_USER, password, process.pid, data_dir,
                    log_path, process=None if detach else process)
    if wait:
        _wait_ready(server)
    return server


def start_server(data_dir=None, detach=False, tls_pem=None, capped_cleanup_seconds=None):
    """Start the preferred test server in ``data_dir`` (a new temp dir by default).

    ``tls_pem``: a PEM file with certificate and key; the server then also accepts TLS
    connections on ``Server.tls_port``. ``capped_cleanup_seconds``: how often FerretDB trims
    capped collections (mongod trims at once).
    """
    data_dir = data_dir or tempfile.mkdtemp(prefix="dbops-testserver-")
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    kind, binary = prepare_server()
    if kind == "mongod":
        return start_mongod(binary, data_dir, detach=detach, tls_pem=tls_pem)
    return start_ferretdb(data_dir, detach=detach, tls_pem=tls_pem, capped_cleanup_seconds=capped_cleanup_seconds)


# --------------------------------------------------------------------------- command line

def _read_state(path):
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return Server.from_state(json.load(handle))


def cmd_start(args):
    current = _read_state(args.state)
    if current and current.is_running():
        print(current.uri)
        return
    data_dir = os.path.join(os.path.dirname(args.state), "data")
    shutil.rmtree(data_dir, ignore_errors=True)
    server = start_server(data_dir, detach=True)
    server.ensure_oplog()
    os.makedirs(os.path.dirname(args.state), exist_ok=True)
    fd = os.open(args.state, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(server.to_state(), handle)
    _log("%s listening on %s (pid %d, data in %s)" % (server.kind, server.address, server.pid, data_dir))
    print(server.uri)


def cmd_stop(args):
    server = _read_state(args.state)
    if server is None:
        _log("no test server recorded in %s" % args.state)
        return
    server.stop()
    os.remove(args.state)
    _log("stopped %s (pid %d)" % (server.kind, server.pid))


def cmd_uri(args):
    server = _read_state(args.state)
    if server is None or not server.is_running():
        raise SystemExit("no running test server; start one with: make server")
    print(server.uri)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("command", choices=["start", "stop", "uri", "build", "prepare"])
    parser.add_argument("--state", default=DEFAULT_STATE, help="state file (default: %(default)s)")
    args = parser.parse_args()
    if args.command == "build":
        print(build_ferretdb())
        return
    if args.command == "prepare":
        print("%s %s" % prepare_server())
        return
    {"start": cmd_start, "stop": cmd_stop, "uri": cmd_uri}[args.command](args)


if __name__ == "__main__":
    main()
