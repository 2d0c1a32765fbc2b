"""A local endpoint shaped as the Compute Engine API v1 documents the disk, snapshot and operation resources,
for the GCE protocol tests: the modules reach it through api_endpoint with anonymous credentials.

It keeps the snapshots it created and the operations it started, answers createSnapshot (zonal and regional
disks), snapshots.get/list (with a labels filter)/delete and zoneOperations/regionOperations/globalOperations.get.
``pending_polls`` makes each new operation PENDING, then RUNNING, for that many reads before DONE;
``missing_disks`` do not exist; ``failing_disks`` {disk or instance: message} ends that disk's snapshot or that
instance's attachDisk operation DONE with the error (the instance unchanged); ``requests`` records
(method, path, query, body) of every call.
"""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

PREFIX = "/compute/v1/projects/"
BASE = "https://www.googleapis.com/compute/v1/projects/"


class ComputeEndpoint:
    def __init__(self, project="shop-prod", disk_size_gb=500):
        self.project = project
        self.disk_size_gb = disk_size_gb
        self.snapshots = {}
        self.disks = {}
        self.instances = {}
        self.operations = {}
        self.requests = []
        self.pending_polls = 0
        self.failing_disks = {}
        self.missing_disks = set()
        self.lock = threading.Lock()
        self._counter = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args):
                pass

            def _reply(self, status, document):
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self, method):
                parsed = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}") if length else {}
                query = dict((k, v[0]) for k, v in parse_qs(parsed.query).items())
                with endpoint.lock:
                    endpoint.requests.append((method, parsed.path, query, body))
                    status, document = endpoint.route(method, parsed.path, query, body)
                self._reply(status, document)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_DELETE(self):
                self._handle("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.api_endpoint = "http://127.0.0.1:%d" % self.server.server_address[1]

    def add_instance(self, name, zone, attached=()):
        """An instance in ``zone`` with ``attached`` [(device name, disk name)] (the disks are made too)."""
        disks = []
        for device, disk in attached:
            self.disks[(zone, disk)] = self._disk(zone, disk, None)
            disks.append({"kind": "compute#attachedDisk", "deviceName": device, "mode": "READ_WRITE",
                          "source": self.disks[(zone, disk)]["selfLink"], "boot": device == "boot"})
        self.instances[(zone, name)] = {"kind": "compute#instance", "name": name, "status": "RUNNING",
                                        "zone": "%s%s/zones/%s" % (BASE, self.project, zone), "disks": disks,
                                        "selfLink": "%s%s/zones/%s/instances/%s" % (BASE, self.project, zone, name)}

    def _disk(self, zone, name, snapshot_link):
        disk = {"kind": "compute#disk", "name": name, "status": "READY", "sizeGb": str(self.disk_size_gb),
                "zone": "%s%s/zones/%s" % (BASE, self.project, zone),
                "type": "%s%s/zones/%s/diskTypes/pd-balanced" % (BASE, self.project, zone),
                "selfLink": "%s%s/zones/%s/disks/%s" % (BASE, self.project, zone, name)}
        if snapshot_link:
            disk["sourceSnapshot"] = snapshot_link
        return disk

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ the API

    def route(self, method, path, query, body):
        if not path.startswith(PREFIX + self.project + "/"):
            return _error(404, "The resource '%s' was not found" % path)
        rest = path[len(PREFIX + self.project + "/"):]
        match = re.match(r"^(zones|regions)/([^/]+)/disks/([^/]+)/createSnapshot$", rest)
        if match and method == "POST":
            return self._create(match.group(1), match.group(2), match.group(3), body)
        match = re.match(r"^zones/([^/]+)/(disks|instances)(?:/([^/]+))?(/attachDisk)?$", rest)
        if match:
            return self._zonal(method, match.group(1), match.group(2), match.group(3), match.group(4), body)
        match = re.match(r"^(?:(zones|regions)/([^/]+)|global)/operations/([^/]+)$", rest)
        if match and method == "GET":
            return self._operation(match.group(3))
        if rest == "global/snapshots" and method == "GET":
            return 200, {"kind": "compute#snapshotList", "id": "projects/%s/global/snapshots" % self.project,
                         "items": [s for s in self.snapshots.values() if _matches(s, query.get("filter"))],
                         "selfLink": BASE + self.project + "/global/snapshots"}
        match = re.match(r"^global/snapshots/([^/]+)$", rest)
        if match and match.group(1) in self.snapshots:
            name = match.group(1)
            if method == "GET":
                return 200, self.snapshots[name]
            if method == "DELETE":
                del self.snapshots[name]
                return 200, self._start("delete", None, None, name, BASE + self.project + "/global/snapshots/" + name)
        return _error(404, "The resource 'projects/%s/%s' was not found" % (self.project, rest))

    def _create(self, scope, where, disk, body):
        if disk in self.missing_disks:
            return _error(404, "The resource 'projects/%s/%s/%s/disks/%s' was not found" % (
                self.project, scope, where, disk))
        name = body["name"]
        source = "%s%s/%s/%s/disks/%s" % (BASE, self.project, scope, where, disk)
        snapshot = {"kind": "compute#snapshot", "id": str(1000 + len(self.snapshots)), "name": name,
                    "status": "CREATING", "sourceDisk": source, "diskSizeGb": str(self.disk_size_gb),
                    "storageBytes": "0", "labels": body.get("labels", {}),
                    "snapshotType": body.get("snapshotType", "STANDARD"),
                    "storageLocations": body.get("storageLocations", ["us"]), "description": body.get("description"),
                    "selfLink": BASE + self.project + "/global/snapshots/" + name,
                    "creationTimestamp": "2024-05-01T00:00:03.000-07:00"}
        if body.get("chainName"):
            snapshot["chainName"] = body["chainName"]
        if disk not in self.failing_disks:
            self.snapshots[name] = snapshot
        return 200, self._start("createSnapshot", scope, where, disk, source)

    def _zonal(self, method, zone, kind, name, attach, body):
        if kind == "disks" and method == "POST" and name is None:
            if (zone, body["name"]) in self.disks:
                return _error(409, "The resource 'projects/%s/zones/%s/disks/%s' already exists" % (
                    self.project, zone, body["name"]))
            snapshot = self.snapshots.get(last_part(body.get("sourceSnapshot")))
            if snapshot is None:
                return _error(404, "The resource '%s' was not found" % body.get("sourceSnapshot"))
            self.disks[(zone, body["name"])] = dict(self._disk(zone, body["name"], snapshot["selfLink"]),
                                                    labels=body.get("labels", {}), status="CREATING",
                                                    type=body.get("type"))
            return 200, self._start("insert", "zones", zone, body["name"], self.disks[(zone, body["name"])]["selfLink"])
        found = (self.disks if kind == "disks" else self.instances).get((zone, name))
        if found is None:
            return _error(404, "The resource 'projects/%s/zones/%s/%s/%s' was not found"
                          % (self.project, zone, kind, name))
        if method == "GET" and not attach:
            return 200, found
        if kind == "instances" and attach and method == "POST":
            if any(d["deviceName"] == body["deviceName"] for d in found["disks"]):
                return _error(400, "Invalid value for field 'resource.deviceName': '%s'. Device name is already in "
                                   "use" % body["deviceName"])
            if name not in self.failing_disks:  # a failed attach leaves the instance as it was
                found["disks"].append({"kind": "compute#attachedDisk", "deviceName": body["deviceName"],
                                       "source": body["source"], "mode": body.get("mode", "READ_WRITE"),
                                       "autoDelete": body.get("autoDelete", False), "boot": False})
            return 200, self._start("attachDisk", "zones", zone, name, found["selfLink"])
        return _error(400, "%s %s is not answered by the test endpoint" % (method, kind))

    def _start(self, kind, scope, where, subject, target):
        self._counter += 1
        name = "operation-%d-%s" % (self._counter, kind)
        operation = {"kind": "compute#operation", "id": str(self._counter), "name": name, "operationType": kind,
                     "targetLink": target, "status": "PENDING", "progress": 0, "user": "backup@shop-prod",
                     "insertTime": "2024-05-01T00:00:03.000-07:00",
                     "selfLink": "%s%s/%s/operations/%s" % (BASE, self.project, "%s/%s" % (scope, where)
                                                            if scope else "global", name)}
        if scope:
            operation[scope[:-1]] = "%s%s/%s/%s" % (BASE, self.project, scope, where)
        self.operations[name] = {"document": operation, "polls": self.pending_polls, "subject": subject}
        return dict(operation)

    def _operation(self, name):
        state = self.operations.get(name)
        if state is None:
            return _error(404, "The resource 'operations/%s' was not found" % name)
        operation = state["document"]
        if state["polls"] > 0:
            state["polls"] -= 1
            operation["status"] = "RUNNING" if operation["status"] == "PENDING" else operation["status"]
            return 200, dict(operation)
        operation.update(status="DONE", progress=100, endTime="2024-05-01T00:00:09.000-07:00")
        message = self.failing_disks.get(state["subject"])
        if message:
            operation["error"] = {"errors": [{"code": "RESOURCE_OPERATION_RATE_EXCEEDED", "message": message}]}
            operation.update(httpErrorStatusCode=403, httpErrorMessage="FORBIDDEN")
        for disk in self.disks.values():
            disk["status"] = "READY"
        for snapshot in self.snapshots.values():
            if snapshot["status"] == "CREATING":
                snapshot.update(status="READY", storageBytes=str(12 * 1024 ** 3))
        return 200, dict(operation)


def last_part(link):
    return (link or "").rstrip("/").rsplit("/", 1)[-1]


def _matches(snapshot, expression):
    if not expression:
        return True
    match = re.match(r'^labels\.([a-z0-9_-]+)\s*=\s*"([^"]*)"$', expression.strip())
    assert match, "filter not understood by the test endpoint: %r" % expression
    return snapshot.get("labels", {}).get(match.group(1)) == match.group(2)


def _error(code, message):
    return code, {"error": {"code": code, "message": message,
                            "errors": [{"message": message, "domain": "global", "reason": "notFound"}]}}
