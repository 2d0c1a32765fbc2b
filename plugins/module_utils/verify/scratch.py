# -*- coding: utf-8 -*-
# Copyright: dbops.mongodb_backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The scratch server a verification restores into: never the source, empty, one verification at a time,
left as it was found; or a temporary mongod started for one verification and removed after it.

A scratch server is the source when it answers at an address the backup's manifest records for the
server it was taken from (host names resolved, so ``localhost`` and ``127.0.0.1`` are the same), or
when it holds a collection with the UUID of a backed-up collection (the same collection: the source,
or a copy of its data files).

A verification holds a lock document in ``admin.dbops_backup_verify`` while it uses the scratch
server, listing what it restores there. A second verification is refused while it is held; a lock
left by a run on this host whose process is gone is taken over, and what that run restored is
dropped first.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time

try:
    import pymongo
    from pymongo import errors as pymongo_errors
except ImportError:  # pragma: no cover - reported by the module wrapper
    pymongo = pymongo_errors = None

from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.namespaces import split_namespace
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.core.timestamps import now_iso
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.errors import InvalidOption, VerificationFailed
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical.mongotools import (
    dies_with_module, process_exists, stop_process_group)
from ansible_collections.dbops.mongodb_backup.plugins.module_utils.logical.restore import INTERNAL_DATABASES

LOCK_COLLECTION = "dbops_backup_verify"  # in admin
LOCK_ID = "scratch"


# --------------------------------------------------------------------------- never the source

def _endpoints(address):
    """{(ip or lower-case host, port)} of a "host:port", with every address the host name resolves to."""
    host, _sep, port = address.rpartition(":")
    host = host.strip("[]").lower()
    found = set([(host, port)])
    try:
        for info in socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM):
            found.add((info[4][0], port))
    except (OSError, UnicodeError):
        pass  # an unresolvable name still compares by its text
    return found


def source_addresses(manifest, record=None):
    """Every address the backup records for the server it was taken from."""
    server = manifest.get("server") or {}
    names = [server.get("address"), manifest.get("member"), (record or {}).get("member")]
    names += list(server.get("hosts") or [])
    return sorted(set(name for name in names if name))


def scratch_addresses(client):
    hello = client.admin.command("hello")
    names = set(hello.get("hosts") or []) | set(hello.get("passives") or []) | set(hello.get("arbiters") or [])
    if hello.get("me"):
        names.add(hello["me"])
    try:
        address = client.address
    except pymongo_errors.InvalidOperation:  # several mongos: hello named the one that answered
        address = None
    if address:
        names.add("%s:%d" % address)
    return sorted(names)


def _uuid_hex(info):
    value = (info.get("info") or {}).get("uuid")
    return value.hex() if isinstance(value, bytes) else None


def check_not_source(client, manifest, record, planned, label):
    """Refuse a scratch server that is the backup's source (before anything is written to it)."""
    scratch = scratch_addresses(client)
    recorded = source_addresses(manifest, record)
    scratch_points = set()
    for address in scratch:
        scratch_points |= _endpoints(address)
    same = [address for address in recorded if _endpoints(address) & scratch_points]
    if same:
        raise InvalidOption(
            "refused: the scratch server (%s) is the server the backup %s was taken from (its manifest records %s); "
            "a verification never restores into the source. Give an empty scratch server at another address, or "
            "let the backup_verify role start a temporary mongod; nothing was written"
            % (", ".join(scratch), label, ", ".join(same)))
    backed_up = dict((p.item.metadata.get("uuid"), p.item.namespace) for p in planned if p.item.metadata.get("uuid"))
    for database in sorted(set(p.target_db for p in planned)):
        for info in client[database].list_collections():
            namespace = backed_up.get(_uuid_hex(info))
            if namespace:
                raise InvalidOption(
                    "refused: the scratch server (%s) holds %s.%s with the UUID of the backed-up collection %s: it is "
                    "the source deployment or a copy of its data files, not a scratch server. Give an empty scratch "
                    "server; nothing was written" % (", ".join(scratch), database, info["name"], namespace))
    return scratch


# --------------------------------------------------------------------------- empty, and left clean

def user_databases(client):
    """{database: number of collections} for every database outside admin, local and config that holds any."""
    found = {}
    for database in client.list_database_names():
        if database not in INTERNAL_DATABASES:
            names = client[database].list_collection_names()
            if names:
                found[database] = len(names)
    return found


def existing_targets(client, targets):
    """The target namespaces of the restore that already exist on the scratch server (admin and config too)."""
    present = []
    for database in sorted(set(split_namespace(n)[0] for n in targets)):
        names = set(client[database].list_collection_names())
        present += sorted(n for n in targets if split_namespace(n)[0] == database and split_namespace(n)[1] in names)
    return present


def restored_places(targets):
    """What cleaning up drops: whole user databases, and single collections in admin and config."""
    databases = sorted(set(split_namespace(n)[0] for n in targets) - set(INTERNAL_DATABASES))
    namespaces = sorted(n for n in targets if split_namespace(n)[0] in INTERNAL_DATABASES)
    return databases, namespaces


def drop_restored(client, databases, namespaces):
    """Drop what a verification restored; returns what was dropped."""
    for database in databases:
        client.drop_database(database)
    for namespace in namespaces:
        database, collection = split_namespace(namespace)
        client[database].drop_collection(collection)
    return list(databases) + list(namespaces)


# --------------------------------------------------------------------------- one verification at a time

class ScratchLock:
    """The lock document of a verification on a scratch server (see the module docstring)."""

    def __init__(self, client, label, databases, namespaces):
        """``databases`` and ``namespaces``: what the verification will restore (``claim`` records them)."""
        self.collection = client.admin[LOCK_COLLECTION]
        self.client = client
        self.document = {"_id": LOCK_ID, "host": socket.gethostname(), "pid": os.getpid(), "since": now_iso(),
                         "backup": label, "databases": [], "namespaces": []}
        self.databases, self.namespaces = list(databases), list(namespaces)
        self.taken_over = None

    def held_by(self):
        return self.collection.find_one({"_id": LOCK_ID})

    def acquire(self):
        """Take the lock, or take over a dead run's (dropping what it restored). Raises when another run holds it."""
        try:
            self.collection.insert_one(dict(self.document))
            return self
        except pymongo_errors.DuplicateKeyError:
            held = self.held_by() or {}
        if held.get("host") != self.document["host"] or process_exists(int(held.get("pid") or 0)):
            raise InvalidOption(
                "the scratch server is in use by another verification (of %s, by pid %s on %s since %s); wait for it "
                "to finish. If that run is gone, delete the document {_id: %r} of admin.%s and drop what it lists "
                "(%s); nothing was written"
                % (held.get("backup"), held.get("pid"), held.get("host"), held.get("since"), LOCK_ID, LOCK_COLLECTION,
                   ", ".join(list(held.get("databases") or []) + list(held.get("namespaces") or [])) or "nothing"))
        dropped = drop_restored(self.client, held.get("databases") or [], held.get("namespaces") or [])
        replaced = self.collection.replace_one({"_id": LOCK_ID, "pid": held.get("pid"), "host": held.get("host")},
                                               dict(self.document))
        if not replaced.matched_count:
            raise InvalidOption("the scratch server was taken by another verification just now; run again later; "
                                "nothing was written")
        self.taken_over = {"pid": held.get("pid"), "since": held.get("since"), "backup": held.get("backup"),
                           "dropped": dropped}
        return self

    def claim(self):
        """Record what this run is about to write, so that a run taking over a dead one's lock drops only that."""
        self.collection.update_one({"_id": LOCK_ID, "pid": self.document["pid"], "host": self.document["host"]},
                                   {"$set": {"databases": self.databases, "namespaces": self.namespaces}})

    def release(self):
        self.collection.delete_one({"_id": LOCK_ID, "pid": self.document["pid"], "host": self.document["host"]})
        if not self.collection.estimated_document_count():
            self.collection.drop()  # leave admin as it was found


# --------------------------------------------------------------------------- a temporary mongod

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_mongod(binary):
    """The path of ``binary`` (a path, or a name looked up in PATH); InvalidOption when there is none."""
    path = binary if os.sep in binary else shutil.which(binary)
    if not path or not os.access(path, os.X_OK):
        raise InvalidOption("no mongod to start a temporary scratch server: %s was not found or is not executable "
                            "on this host; install mongod here, or give the scratch server's uri instead" % binary)
    return path


class TemporaryMongod:
    """A mongod on 127.0.0.1 and a free port, with its data in a new 0700 directory, auth on with a generated
    user; stopped and its directory removed by ``stop()`` (it also dies with the module process)."""

    USER = "dbops_verify"
    READY_SECONDS = 60
    START_ATTEMPTS = 3  # another process may take the free port before mongod binds it

    def __init__(self, binary, parent=None):
        self.binary = find_mongod(binary)
        self.parent = parent
        self.directory = None
        self.process = None
        self.port = None
        self.password = secrets.token_urlsafe(24)

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def describe(self):
        return {"kind": "temporary mongod", "address": self.address, "binary": self.binary,
                "directory": self.directory}

    def start(self):
        if self.parent is not None and not os.path.isdir(self.parent):
            raise InvalidOption("scratch_dir %s does not exist; create it or leave it out" % self.parent)
        self.directory = tempfile.mkdtemp(prefix="dbops-verify-", dir=self.parent)
        os.chmod(self.directory, 0o700)
        try:
            for attempt in range(self.START_ATTEMPTS):
                if self._spawn(attempt):
                    break
            self._create_user()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, attempt):
        self.port = free_port()
        data = os.path.join(self.directory, "db")
        os.makedirs(data, mode=0o700, exist_ok=True)
        log = os.path.join(self.directory, "mongod.log")
        argv = [self.binary, "--dbpath", data, "--bind_ip", "127.0.0.1", "--port", str(self.port), "--auth",
                "--nounixsocket", "--logpath", log]
        # preexec_fn only calls prctl and getppid (async-signal-safe)
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,  # pylint: disable=subprocess-popen-preexec-fn
                                        stderr=subprocess.DEVNULL, close_fds=True, start_new_session=True,
                                        preexec_fn=dies_with_module())
        deadline = time.time() + self.READY_SECONDS
        while time.time() < deadline:
            if self.process.poll() is not None:
                tail = _tail(log)
                if "Address already in use" in tail and attempt + 1 < self.START_ATTEMPTS:
                    return False
                raise VerificationFailed("the temporary mongod (%s) exited with status %s: %s; nothing was restored"
                                         % (self.binary, self.process.returncode, tail[-1500:]))
            if self._answers():
                return True
            time.sleep(0.2)
        raise VerificationFailed("the temporary mongod on %s did not answer within %d seconds: %s"
                                 % (self.address, self.READY_SECONDS, _tail(log)[-1500:]))

    def _answers(self):
        client = pymongo.MongoClient("127.0.0.1", self.port, directConnection=True, serverSelectionTimeoutMS=500)
        try:
            client.admin.command("ping")
            return True
        except pymongo_errors.PyMongoError:
            return False
        finally:
            client.close()

    def _create_user(self):
        # The localhost exception lets the first user be created without credentials.
        client = pymongo.MongoClient("127.0.0.1", self.port, directConnection=True)
        try:
            client.admin.command("createUser", self.USER, pwd=self.password, roles=["root"])
        finally:
            client.close()

    def client(self):
        return pymongo.MongoClient("127.0.0.1", self.port, username=self.USER, password=self.password,
                                   authSource="admin", directConnection=True)

    def stop(self):
        """Stop mongod (SIGTERM, then SIGKILL) and remove its directory; safe to call twice."""
        if self.process is not None:
            stop_process_group(self.process)
        if self.directory and os.path.isdir(self.directory):
            shutil.rmtree(self.directory, ignore_errors=True)


def _tail(path):
    try:
        with open(path, errors="replace") as handle:
            return handle.read()[-4000:]
    except OSError:
        return ""
