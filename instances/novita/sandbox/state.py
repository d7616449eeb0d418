"""In-process simulator ("sandbox") of Novita's v1 GPU-instance API.

It follows the upstream research notes (docs/upstream.md): same paths, query params, JSON
shapes and error envelope as the real API, so the gateway's client runs unchanged against it in
tests, e2e runs and benchmarks. Plain Python (stdlib only, no Django) so it imports anywhere.

Design notes:
- Instance state is computed lazily from timestamps: every operation stores a sequence of
  upstream states and the time it started, and a read picks the state by elapsed steps. No
  thread or timer per instance, so 10,000 idle instances cost only their memory (~4 MB).
- TCP ports get real loopback sockets. A socket is *bound* for the whole life of the instance
  (so the endpoint is stable) but only *listening* while the instance is running, which makes
  connections succeed exactly while running and be refused otherwise. One background thread
  accepts on all listeners and flips them when an instance's state sequence moves on.
- Only 127.0.0.1 (or the loopback host given to serve()) is ever bound.

Choices where the upstream is undocumented or ambiguous:
- pageNum starts at 0 by default (page_numbering selects 0, 1 or 0-as-1). Lists are newest first.
- List items carry productId/productName/rootfsSize/spotStatus/spotReclaimTime; get-instance
  (like the current upstream doc) does not carry the spot fields.
- Migrate keeps the instance id and answers {}; progress is a job of type instanceMigrate.
  `GET /jobs` also accepts an `instanceId` filter (not in the upstream doc).
- A failed instance (see fail_instance) is "exited" with statusError {state, message}.

Usage:
    with Sandbox(api_key="sandbox-key", step_seconds=0.05).serve() as sb:
        ...  # point the Novita client at sb.api_base_url; it appends /v1/...
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import random
import selectors
import socket
import threading
import time
import zlib
from http.server import ThreadingHTTPServer
from urllib.parse import urlsplit

from .base import (
    _DEFAULT_REASONS,
    _GONE,
    _UNSET,
    API_PREFIX,
    DEFAULT_PAGE_NUMBERING,
    NOT_FOUND_MODES,
    PAGE_NUMBERINGS,
    ROUTE_404_MODES,
    SEQ_CREATE,
    SEQ_DELETE,
    SEQ_MIGRATE,
    SEQ_MIGRATE_JOB,
    SEQ_RESTART,
    SEQ_START,
    SEQ_STOP,
    UPSTREAM_STATUSES,
    ApiError,
    RouteNotFound,
    _bad_param,
    _int_param,
    _is_int,
    _not_found,
    _page_bounds,
    _parse_envs,
    _parse_ports,
    _rel_path,
)
from .catalog import (
    _CLUSTER_NAMES,
    _DEPLOYABLE,
    _PRODUCTS_BY_ID,
    _SEED_PORTS,
    _TEMPLATES_BY_ID,
    CLUSTERS,
    PRODUCTS,
    TEMPLATES,
    home_cluster,
    offered_in,
)
from .ports import PortListeners
from .server import _Handler, _QuietServer


class _Instance:
    __slots__ = (
        "id",
        "name",
        "product",
        "cluster_id",
        "image_url",
        "image_auth_id",
        "command",
        "entrypoint",
        "gpu_num",
        "rootfs",
        "ports",
        "envs",
        "kind",
        "billing_mode",
        "month",
        "created_at",
        "last_started_at",
        "last_stopped_at",
        "seq",
        "seq_start",
        "seq_step",
        "spot_reclaim_time",
        "spot_notified",
        "failure",
        "tcp",
    )

    def state(self, now: float) -> str:
        seq = self.seq
        if len(seq) == 1 or self.seq_step <= 0:
            return seq[-1]
        idx = int((now - self.seq_start) / self.seq_step)
        return seq[min(max(idx, 0), len(seq) - 1)]

    def settled_at(self) -> float:
        return self.seq_start + (len(self.seq) - 1) * max(self.seq_step, 0)

    def begin(self, seq: tuple, now: float, step: float) -> None:
        self.seq = seq
        self.seq_start = now
        self.seq_step = step


class _Job:
    __slots__ = ("id", "type", "instance_id", "created_at", "seq", "seq_start", "seq_step")

    def state(self, now: float) -> str:
        if self.seq_step <= 0:
            return self.seq[-1]
        idx = int((now - self.seq_start) / self.seq_step)
        return self.seq[min(max(idx, 0), len(self.seq) - 1)]


class _Fault:
    __slots__ = ("path", "status", "reason", "rate", "latency_ms", "remaining", "down")

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "status": self.status,
            "reason": self.reason,
            "error_rate": self.rate,
            "latency_ms": self.latency_ms,
            "count": self.remaining,
            "down": self.down,
        }


# --------------------------------------------------------------------------------------------
# The sandbox
# --------------------------------------------------------------------------------------------


class Sandbox(PortListeners):
    """Simulated upstream: state, config, fault injection and call recording in one object."""

    def __init__(
        self,
        api_key: str | None = "sandbox-key",
        step_seconds: float = 0.05,
        *,
        seed: int | None = None,
        max_tcp_listeners: int = 256,
        calls_maxlen: int = 10000,
        page_numbering: str = DEFAULT_PAGE_NUMBERING,
        not_found: str = "400",
        route_404: str = "json",
    ):
        self.api_key = api_key
        self.step_seconds = float(step_seconds)
        self.page_numbering = page_numbering
        self.not_found = not_found
        self.route_404 = route_404
        self.configure(page_numbering=page_numbering, not_found=not_found, route_404=route_404)
        self.max_tcp_listeners = max_tcp_listeners
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._instances: dict[str, _Instance] = {}
        self._jobs: dict[str, _Job] = {}
        self._faults: list[_Fault] = []
        # (instance name, port) -> endpoint reported instead of the sandbox's own.
        self._endpoint_overrides: dict[tuple[str, int], str] = {}
        self._calls: collections.deque = collections.deque(maxlen=calls_maxlen)
        self._call_counts: collections.Counter = collections.Counter()
        self._call_total = 0
        # Instances whose listeners may still need flipping (state sequence not settled yet).
        self._watch: set[str] = set()
        self._tcp_open = 0
        self._selector = selectors.DefaultSelector()
        # Lets other threads interrupt the accept loop's select() (new watch entry, shutdown).
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self.host = "127.0.0.1"
        self.port: int | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> Sandbox:
        """Start serving in daemon threads and return self (port 0 picks a free port)."""
        if self._server is not None:
            return self
        handler = type("SandboxHandler", (_Handler,), {"sandbox": self})
        server = _QuietServer((host, port), handler)
        self._server = server
        self.host = host
        self.port = server.server_address[1]
        self._stopping.clear()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        http_thread = threading.Thread(
            target=server.serve_forever,
            # shutdown() waits up to one poll interval; keep it short so tests stop quickly.
            kwargs={"poll_interval": 0.05},
            name="novita-sandbox-http",
            daemon=True,
        )
        net_thread = threading.Thread(target=self._net_loop, name="novita-sandbox-tcp", daemon=True)
        self._threads = [http_thread, net_thread]
        for t in self._threads:
            t.start()
        return self

    def shutdown(self) -> None:
        self._stopping.set()
        self._wake()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self._threads = []
        with self._lock:
            for inst in self._instances.values():
                self._release_tcp(inst)
        with contextlib.suppress(Exception):
            self._selector.close()
        self._selector = selectors.DefaultSelector()
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._wake_r = self._wake_w = None

    def __enter__(self) -> Sandbox:
        return self.serve()

    def __exit__(self, *exc) -> None:
        self.shutdown()

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("Sandbox is not serving; call serve() first")
        return f"http://{self.host}:{self.port}"

    @property
    def api_base_url(self) -> str:
        """What a client uses as its base: it appends /v1/... itself."""
        return f"{self.base_url}/gpu-instance/openapi"

    def reset(self) -> None:
        """Forget instances, jobs, faults and calls; keep config (api key, step)."""
        with self._lock:
            for inst in self._instances.values():
                self._release_tcp(inst)
            self._instances.clear()
            self._jobs.clear()
            self._watch.clear()
            self._faults.clear()
            self._endpoint_overrides.clear()
            self._reset_calls_locked()

    def configure(
        self,
        *,
        step_seconds: float | None = None,
        page_numbering: str | None = None,
        not_found: str | None = None,
        route_404: str | None = None,
    ) -> None:
        """Change the step for operations started from now on (running ones keep theirs) and
        the emulation modes (see base.PAGE_NUMBERINGS, NOT_FOUND_MODES, ROUTE_404_MODES)."""
        for value, allowed, what in (
            (page_numbering, PAGE_NUMBERINGS, "page_numbering"),
            (not_found, NOT_FOUND_MODES, "not_found"),
            (route_404, ROUTE_404_MODES, "route_404"),
        ):
            if value is not None and value not in allowed:
                raise ValueError(f"{what} must be one of {', '.join(allowed)}")
        if step_seconds is not None:
            if step_seconds < 0:
                raise ValueError("step_seconds must be >= 0")
            self.step_seconds = float(step_seconds)
        if page_numbering is not None:
            self.page_numbering = page_numbering
        if not_found is not None:
            self.not_found = not_found
        if route_404 is not None:
            self.route_404 = route_404

    def modes(self) -> dict:
        return {
            "pageNumbering": self.page_numbering,
            "notFound": self.not_found,
            "route404": self.route_404,
        }

    def not_found_error(self, instance_id) -> ApiError:
        """An unknown instance id, answered the way the not_found mode says."""
        if self.not_found == "404-route":
            return RouteNotFound(f"{API_PREFIX}/gpu/instance")
        error = _not_found(instance_id)
        if self.not_found == "404-json":
            error.status = 404
            error.metadata = {"instanceId": str(instance_id)}
        return error

    # -- faults ---------------------------------------------------------------------------

    def set_fault(
        self,
        path: str | None = None,
        status: int | None = _UNSET,  # type: ignore[assignment]
        reason: str | None = None,
        error_rate: float = 1.0,
        latency_ms: int = 0,
        count: int | None = None,
        down: bool = False,
    ) -> dict:
        """Inject a fault on one v1 path ("/gpu/instance/create", "*" suffix = prefix) or all.

        `error_rate` is the probability a call is affected; `count` limits how many affected
        calls the fault lasts. An affected call first sleeps `latency_ms`, then either drops the
        connection (`down`) or answers `status` with the upstream error body (429 adds
        `Retry-After: 1`). Given only `latency_ms`, the call is delayed and then served
        normally; otherwise `status` defaults to 500.
        """
        if status is _UNSET:
            status = None if (latency_ms and not down and reason is None) else 500
        if count is not None and count <= 0:
            raise ValueError("count must be positive or None")
        fault = _Fault()
        fault.path = _rel_path(path) if path not in (None, "", "*") else None
        fault.status = int(status) if status else None
        fault.reason = reason or _DEFAULT_REASONS.get(fault.status or 500, "UNKNOWN")
        fault.rate = float(error_rate)
        fault.latency_ms = int(latency_ms or 0)
        fault.remaining = count
        fault.down = bool(down)
        with self._lock:
            self._faults.append(fault)
        return fault.as_dict()

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def faults(self) -> list[dict]:
        with self._lock:
            return [f.as_dict() for f in self._faults]

    def _take_faults(self, rel_path: str) -> tuple[float, _Fault | None]:
        """Decide which faults hit this call: total latency and the first failing fault."""
        latency = 0.0
        failing = None
        with self._lock:
            for fault in list(self._faults):
                if fault.path is not None:
                    if fault.path.endswith("*"):
                        if not rel_path.startswith(fault.path[:-1]):
                            continue
                    elif fault.path != rel_path:
                        continue
                if fault.rate < 1.0 and self._rng.random() >= fault.rate:
                    continue
                latency += fault.latency_ms / 1000.0
                if failing is None and (fault.down or fault.status):
                    failing = fault
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
        return latency, failing

    # -- call recording -------------------------------------------------------------------

    def _record(self, method: str, rel_path: str, query: str, status: int) -> None:
        entry = {"method": method, "path": rel_path, "query": query, "ts": time.time()}
        entry["status"] = status
        with self._lock:
            self._calls.append(entry)
            self._call_counts[(method, rel_path)] += 1
            self._call_total += 1

    def calls(self, path: str | None = None) -> list[dict]:
        """Recent API calls (bounded), oldest first: {method, path, query, ts, status}."""
        rel = _rel_path(path)
        with self._lock:
            return [dict(c) for c in self._calls if rel is None or c["path"] == rel]

    def call_count(self, path: str | None = None, method: str | None = None) -> int:
        """Exact count since the last reset (not limited by the recent-calls buffer)."""
        rel = _rel_path(path)
        method = method.upper() if method else None
        with self._lock:
            return sum(
                n
                for (m, p), n in self._call_counts.items()
                if (rel is None or p == rel) and (method is None or m == method)
            )

    def reset_calls(self) -> None:
        with self._lock:
            self._reset_calls_locked()

    def _reset_calls_locked(self) -> None:
        self._calls.clear()
        self._call_counts.clear()
        self._call_total = 0

    def calls_summary(self, limit: int = 200) -> dict:
        with self._lock:
            by_path: collections.Counter = collections.Counter()
            for (_m, p), n in self._call_counts.items():
                by_path[p] += n
            recent = list(self._calls)[-limit:] if limit > 0 else []
            return {"total": self._call_total, "byPath": dict(by_path), "recent": recent}

    # -- ids ------------------------------------------------------------------------------

    def _new_id(self, existing) -> str:
        while True:
            candidate = f"{self._rng.getrandbits(64):016x}"
            if candidate not in existing:
                return candidate

    # -- instance lookup --------------------------------------------------------------------

    def _live(self, instance_id, now: float) -> _Instance | None:
        """The instance unless unknown or fully removed (then it is purged)."""
        inst = self._instances.get(instance_id) if isinstance(instance_id, str) else None
        if inst is None:
            return None
        if inst.state(now) == _GONE:
            self._drop(inst)
            return None
        return inst

    def _drop(self, inst: _Instance) -> None:
        self._release_tcp(inst)
        self._instances.pop(inst.id, None)
        self._watch.discard(inst.id)

    def _require(self, instance_id, now: float) -> _Instance:
        if not isinstance(instance_id, str) or not instance_id:
            raise _bad_param("instanceId is required")
        inst = self._live(instance_id, now)
        if inst is None:
            raise self.not_found_error(instance_id)
        return inst

    # -- Python API for tests -----------------------------------------------------------------

    def get(self, instance_id: str) -> dict | None:
        """The upstream get-instance view of an instance, or None once unknown/removed."""
        with self._lock:
            now = time.time()
            inst = self._live(instance_id, now)
            if inst is None:
                return None
            self._sync_tcp(inst, now)
            return self._detail_view(inst, now)

    def status(self, instance_id: str) -> str | None:
        with self._lock:
            inst = self._live(instance_id, time.time())
            return inst.state(time.time()) if inst else None

    def instance_ids(self) -> list[str]:
        with self._lock:
            now = time.time()
            return [i.id for i in list(self._instances.values()) if self._live(i.id, now)]

    def seed_instances(
        self, n: int, status: str = "running", name_prefix: str = "seed"
    ) -> list[str]:
        """Bulk-create `n` instances already settled in `status` (no TCP listeners)."""
        if status not in UPSTREAM_STATUSES:
            raise ValueError(f"unknown upstream status {status!r}")
        seq = (status,)
        ids = []
        with self._lock:
            now = time.time()
            start = len(self._instances)
            for i in range(n):
                product = _DEPLOYABLE[i % len(_DEPLOYABLE)]
                inst = _Instance()
                inst.id = self._new_id(self._instances)
                inst.name = f"{name_prefix}-{start + i}"
                inst.product = product
                inst.cluster_id = home_cluster(product)
                inst.image_url = TEMPLATES[0]["image"]
                inst.image_auth_id = ""
                inst.command = ""
                inst.entrypoint = ""
                inst.gpu_num = 1
                inst.rootfs = 60
                inst.ports = _SEED_PORTS
                inst.envs = ()
                inst.kind = "gpu"
                inst.billing_mode = "onDemand"
                inst.month = 0
                inst.created_at = now
                inst.last_started_at = now if status == "running" else 0.0
                inst.last_stopped_at = 0.0
                inst.begin(seq, now, 0.0)
                inst.spot_reclaim_time = 0
                inst.spot_notified = False
                inst.failure = None
                inst.tcp = None
                self._instances[inst.id] = inst
                ids.append(inst.id)
        return ids

    def notify_spot(self, instance_id: str) -> None:
        """Simulate a reclaim notice: the spot instance still runs, spotStatus `notified`."""
        with self._lock:
            now = time.time()
            inst = self._require(instance_id, now)
            if inst.billing_mode != "spot":
                raise ApiError(400, "UNSUPPORTED_BILLING_MODE", "instance is not a spot instance")
            inst.spot_notified = True

    def reclaim_spot(self, instance_id: str) -> None:
        """Simulate the provider reclaiming a running spot instance: it becomes exited."""
        with self._lock:
            now = time.time()
            inst = self._require(instance_id, now)
            if inst.billing_mode != "spot":
                raise ApiError(400, "UNSUPPORTED_BILLING_MODE", "instance is not a spot instance")
            if inst.state(now) != "running":
                raise ApiError(400, "DEPENDENT_RESOURCE_STATE", "instance is not running")
            inst.begin(("exited",), now, 0.0)
            inst.spot_reclaim_time = int(now)
            inst.last_stopped_at = now
            self._after_transition(inst, now)

    def fail_instance(self, instance_id: str, message: str = "failed to pull image") -> None:
        """Make an instance fail: it becomes exited and carries statusError."""
        with self._lock:
            now = time.time()
            inst = self._require(instance_id, now)
            inst.begin(("exited",), now, 0.0)
            inst.failure = message
            inst.last_stopped_at = now
            self._after_transition(inst, now)

    def override_endpoint(self, name: str, port: int, endpoint: str) -> None:
        """Report `endpoint` for port `port` of the instance named `name` (now or created later)
        instead of the sandbox's own: lets a test point a port at a server of its choosing (a
        hanging one, say). Loopback only, like everything the sandbox hands out."""
        host = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}").hostname or ""
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("endpoint overrides must point at loopback")
        with self._lock:
            self._endpoint_overrides[(name, int(port))] = endpoint

    # -- TCP listeners ----------------------------------------------------------------------
    # -- views ------------------------------------------------------------------------------

    def _password(self, inst: _Instance) -> str:
        # Derived, not stored, to keep instances small; stable per instance.
        return hashlib.sha256(f"sandbox-ssh:{inst.id}".encode()).hexdigest()[:16]

    def _tcp_endpoint(self, inst: _Instance, port: int) -> str:
        for ep in inst.tcp or ():
            if ep.port == port and ep.kind == "tcp":
                return f"{self.host}:{ep.bound_port}"
        return f"{self.host}:{self.port or 0}"

    def _http_endpoint(self, inst: _Instance, port: int) -> str:
        """Novita writes http endpoints as `https://<id>-<port>.<cluster>...` (no port) or
        without a scheme; on loopback the sandbox varies between the forms that can still point
        here, stable per instance and port: `http://host:p`, `host:p` and `http://host:p/`."""
        for ep in inst.tcp or ():
            if ep.port == port and ep.kind == "http":
                form = zlib.crc32(f"{inst.id}:{port}".encode()) % 3
                address = f"{self.host}:{ep.bound_port}"
                return (f"http://{address}", address, f"http://{address}/")[form]
        return f"{self.base_url}/_sandbox/ports/{inst.id}/{port}/"

    def _spot_status(self, inst: _Instance) -> str:
        if inst.billing_mode != "spot":
            return ""
        if inst.spot_reclaim_time:
            return "terminated"
        return "notified" if inst.spot_notified else "running"

    def _base_view(self, inst: _Instance, state: str) -> dict:
        product = inst.product
        view = {
            "id": inst.id,
            "name": inst.name,
            "clusterId": inst.cluster_id,
            "clusterName": _CLUSTER_NAMES.get(inst.cluster_id, inst.cluster_id),
            "status": state,
            "imageUrl": inst.image_url,
            "imageAuthId": inst.image_auth_id,
            "command": inst.command,
            "entrypoint": inst.entrypoint,
            # Upstream sends these three as strings.
            "cpuNum": str(product["cpuPerGpu"] * inst.gpu_num),
            "memory": str(product["memoryPerGpu"] * inst.gpu_num),
            "gpuNum": str(inst.gpu_num),
            "network": {"id": "", "ip": ""},
            "envs": [{"key": k, "value": v} for k, v in inst.envs],
            "kind": inst.kind,
            "billingMode": inst.billing_mode,
            "endTime": (
                str(int(inst.created_at) + inst.month * 30 * 86400) if inst.month else "-1"
            ),
            "freeStorageSize": 0,
            "keepDataDay": 7,
            "node": [{"maxRootfsSize": product["maxRootFS"]}],
            "jobs": [],
            "createdAt": str(int(inst.created_at)),
            "lastStartedAt": str(int(inst.last_started_at)),
            "lastStoppedAt": str(int(inst.last_stopped_at)),
        }
        # Upstream sends statusError empty on a healthy instance, filled on a failed one.
        view["statusError"] = {"state": "", "message": ""}
        if inst.failure and state == "exited":
            view["statusError"] = {"state": "failed", "message": inst.failure}
        return view

    # List items carry fewer fields than get-instance (tests/fixtures/novita/list_instances.json).
    _NOT_IN_LIST = ("entrypoint", "network", "freeStorageSize", "keepDataDay", "node", "jobs")
    _NOT_IN_LIST += ("createdAt", "lastStartedAt", "lastStoppedAt")

    def _list_view(self, inst: _Instance, state: str) -> dict:
        view = self._base_view(inst, state)
        for key in self._NOT_IN_LIST:
            del view[key]
        view["portMappings"] = [{"port": p, "type": t} for p, t in inst.ports]
        view["volumeMounts"] = [
            {"type": "local", "size": str(inst.rootfs), "id": "", "mountPath": "/"}
        ]
        view["productId"] = inst.product["id"]
        view["productName"] = inst.product["name"]
        view["rootfsSize"] = inst.rootfs
        view["spotStatus"] = self._spot_status(inst)
        view["spotReclaimTime"] = str(inst.spot_reclaim_time)
        return view

    def _detail_view(self, inst: _Instance, now: float) -> dict:
        state = inst.state(now)
        running = state == "running"
        view = self._base_view(inst, state)
        mappings = []
        for port, kind in inst.ports:
            endpoint = self._endpoint_overrides.get((inst.name, port)) or (
                self._http_endpoint(inst, port)
                if kind == "http"
                else self._tcp_endpoint(inst, port)
            )
            mappings.append({"port": port, "endpoint": endpoint, "type": kind})
        view["portMappings"] = mappings
        view["volumeMounts"] = [{"type": "local", "size": inst.rootfs, "id": "", "mountPath": "/"}]
        # Running tasks of this instance (a migration while it runs), as get-instance lists them.
        view["jobs"] = [
            {"id": job.id, "type": job.type}
            for job in self._jobs.values()
            if job.instance_id == inst.id and job.state(now) in ("pulling", "running")
        ]
        password = self._password(inst)
        ssh = next((m for m in mappings if m["port"] == 22 and m["type"] == "tcp"), None)
        if ssh is not None:
            host, _, port = ssh["endpoint"].rpartition(":")
            view["connectComponentSSH"] = {
                "sshCommand": f"ssh root@{host} -p {port}",
                "password": password,
                "isRunning": running,
            }
        else:
            view["connectComponentSSH"] = {"sshCommand": "", "password": "", "isRunning": False}
        view["connectComponentWebTerminal"] = {
            "address": f"{self.base_url}/_sandbox/terminal/{inst.id}/",
            "username": "root",
            "password": password,
            "isRunning": running,
        }
        jupyter = next((m for m in mappings if m["port"] == 8888 and m["type"] == "http"), None)
        if jupyter is not None:
            view["connectComponentJupyter"] = {
                "port": 8888,
                "address": jupyter["endpoint"],
                "isRunning": running,
            }
        view["connectComponentLog"] = {
            "systemLogAddress": f"{self.base_url}/_sandbox/logs/{inst.id}/system",
            "instanceLogAddress": f"{self.base_url}/_sandbox/logs/{inst.id}/instance",
            "isRunning": running,
        }
        return view

    def _job_view(self, job: _Job, now: float) -> dict:
        return {
            "Id": job.id,
            "user": "sandbox-user",
            "type": job.type,
            "envs": [],
            "state": {"state": job.state(now), "error": "", "errorMessage": ""},
            "logAddress": "",
            "createdAt": str(int(job.created_at)),
            "instanceId": job.instance_id,
        }

    # -- API operations ---------------------------------------------------------------------

    def api_clusters(self, q: dict) -> dict:
        data = []
        for c in CLUSTERS:
            gpus = sorted({p["name"] for p in PRODUCTS if offered_in(p, c["id"])})
            data.append(
                {
                    "id": c["id"],
                    "name": c["name"],
                    "availableGpuType": gpus,
                    "supportNetworkStorage": c["id"] != "as-sgp-2",
                    "supportInstanceNetwork": c["id"] == "us-west-1",
                }
            )
        return {"data": data}

    def api_products(self, q: dict) -> dict:
        cluster = q.get("clusterId") or ""
        name = (q.get("productName") or "").strip().lower()
        # Novita documents onDemand as the default offer type.
        billing = q.get("billingMethod") or "onDemand"
        gpu_num = _int_param(q, "gpuNum", 0, 0, 8)
        min_cpu = _int_param(q, "minCpuPerGpu", 0, 0)
        min_mem = _int_param(q, "minMemoryPerGpu", 0, 0)
        min_rootfs = _int_param(q, "minRootFSSize", 0, 0)
        if billing and billing not in ("onDemand", "monthly", "spot"):
            raise _bad_param("billingMethod must be onDemand, monthly or spot")
        del gpu_num  # accepted and validated; every product scales to 8 GPUs
        out = []
        for p in PRODUCTS:
            if cluster and not offered_in(p, cluster):
                continue
            if name and name not in p["name"].lower():
                continue
            if billing and billing not in p["billingMethods"]:
                continue
            if p["cpuPerGpu"] < min_cpu or p["memoryPerGpu"] < min_mem:
                continue
            if p["maxRootFS"] < min_rootfs:
                continue
            out.append(json.loads(json.dumps(p)))
        return {"data": out}

    def api_templates(self, q: dict) -> dict:
        size = _int_param(q, "pageSize", 10, 0)
        start, end = _page_bounds(self.page_numbering, q, size)
        name = (q.get("name") or "").lower()
        channel = q.get("channel") or ""
        ttype = q.get("type") or ""
        items = [
            t
            for t in TEMPLATES
            if (not name or name in t["name"].lower() or name in t["Id"])
            and (not channel or t["channel"] == channel)
            and (not ttype or t["type"] == ttype)
        ]
        page_items = items[start:end]
        # Older upstream versions echo the paging parameters (Novita's docs show pageNum 0).
        return {
            "template": json.loads(json.dumps(page_items)),
            "pageSize": size,
            "pageNum": _int_param(q, "pageNum", 0, 0),
            "total": len(items),
        }

    def api_template(self, q: dict) -> dict:
        tid = q.get("templateId") or ""
        if not tid:
            raise _bad_param("templateId is required")
        template = _TEMPLATES_BY_ID.get(tid)
        if template is None:
            raise ApiError(400, "TEMPLATE_NOT_FOUND", f"template {tid} not found")
        return {"template": json.loads(json.dumps(template))}

    def api_create(self, body) -> dict:
        if not isinstance(body, dict):
            raise _bad_param("request body must be a JSON object")
        product_id = body.get("productId")
        if not isinstance(product_id, str) or not product_id:
            raise _bad_param("productId is required")
        gpu_num = body.get("gpuNum")
        if not _is_int(gpu_num) or not 1 <= gpu_num <= 8:
            raise _bad_param("gpuNum must be an integer between 1 and 8")
        image_url = body.get("imageUrl")
        if not isinstance(image_url, str) or not 1 <= len(image_url) <= 500:
            raise _bad_param("imageUrl is required (1-500 characters)")
        kind = body.get("kind")
        if kind not in ("gpu", "cpu"):
            raise _bad_param("kind is required and must be gpu or cpu")
        name = body.get("name", "") or ""
        if not isinstance(name, str) or len(name) > 255:
            raise _bad_param("name must be a string of at most 255 characters")
        ports = _parse_ports(body.get("ports"))
        envs = _parse_envs(body.get("envs"))
        for field in ("command", "entrypoint", "imageAuthId", "clusterId", "billingMode"):
            if body.get(field) is not None and not isinstance(body.get(field), str):
                raise _bad_param(f"{field} must be a string")
        command = body.get("command") or ""
        entrypoint = body.get("entrypoint") or ""
        if len(command) > 2047 or len(entrypoint) > 2047:
            raise _bad_param("command and entrypoint are limited to 2047 characters")
        month = body.get("month", 0) or 0
        if not _is_int(month) or month < 0:
            raise _bad_param("month must be a non-negative integer")
        billing = body.get("billingMode") or ("monthly" if month else "onDemand")
        if billing not in ("onDemand", "monthly", "spot"):
            raise _bad_param("billingMode must be onDemand, monthly or spot")

        product = _PRODUCTS_BY_ID.get(product_id)
        if product is None:
            raise ApiError(400, "INSUFFICIENT_RESOURCE", f"product {product_id} is not available")
        if not product["availableDeploy"]:
            raise ApiError(
                400, "INSUFFICIENT_RESOURCE", f"not enough {product['name']} capacity right now"
            )
        if billing not in product["billingMethods"]:
            raise ApiError(
                400, "UNSUPPORTED_BILLING_MODE", f"{product['name']} does not support {billing}"
            )
        rootfs = body.get("rootfsSize", product["minRootFS"])
        if not _is_int(rootfs) or rootfs < 0:
            raise _bad_param("rootfsSize must be a non-negative integer (GB)")
        rootfs = max(rootfs, 10)
        if rootfs > product["maxRootFS"]:
            raise _bad_param(f"rootfsSize exceeds the product maximum of {product['maxRootFS']}")
        cluster = body.get("clusterId") or ""
        if cluster:
            if cluster not in _CLUSTER_NAMES:
                raise _bad_param(f"unknown clusterId {cluster}")
            if not offered_in(product, cluster):
                raise ApiError(
                    400, "INSUFFICIENT_RESOURCE", f"{product['name']} is not offered in {cluster}"
                )
        else:
            cluster = home_cluster(product)

        with self._lock:
            now = time.time()
            inst = _Instance()
            inst.id = self._new_id(self._instances)
            inst.name = name
            inst.product = product
            inst.cluster_id = cluster
            inst.image_url = image_url
            inst.image_auth_id = body.get("imageAuthId") or ""
            inst.command = command
            inst.entrypoint = entrypoint
            inst.gpu_num = gpu_num
            inst.rootfs = rootfs
            inst.ports = ports
            inst.envs = envs
            inst.kind = kind
            inst.billing_mode = billing
            inst.month = month
            inst.created_at = now
            inst.last_started_at = now
            inst.last_stopped_at = 0.0
            inst.begin(SEQ_CREATE, now, self.step_seconds)
            inst.spot_reclaim_time = 0
            inst.spot_notified = False
            inst.failure = None
            inst.tcp = self._alloc_tcp(ports, inst.id)
            self._instances[inst.id] = inst
            self._after_transition(inst, now)
        return {"id": inst.id}

    def api_list_instances(self, q: dict) -> dict:
        size = _int_param(q, "pageSize", 10, 0, 10000)
        start, end = _page_bounds(self.page_numbering, q, size)
        name = (q.get("name") or "").lower()
        product_name = (q.get("productName") or "").lower()
        status = q.get("status") or ""
        if len(status) > 63:
            raise _bad_param("status is limited to 63 characters")
        with self._lock:
            now = time.time()
            matched = []
            # Newest first, as consoles usually show.
            for inst in reversed(list(self._instances.values())):
                state = inst.state(now)
                if state == _GONE:
                    self._drop(inst)
                    continue
                if status and state != status:
                    continue
                if name and name not in inst.name.lower():
                    continue
                if product_name and product_name not in inst.product["name"].lower():
                    continue
                matched.append((inst, state))
            items = []
            for inst, state in matched[start:end]:
                self._sync_tcp(inst, now)
                items.append(self._list_view(inst, state))
            return {"instances": items, "total": len(matched)}

    def api_get_instance(self, q: dict) -> dict:
        with self._lock:
            now = time.time()
            inst = self._require(q.get("instanceId"), now)
            self._sync_tcp(inst, now)
            return self._detail_view(inst, now)

    def api_action(self, action: str, body) -> dict:
        if not isinstance(body, dict):
            raise _bad_param("request body must be a JSON object")
        with self._lock:
            now = time.time()
            inst = self._require(body.get("instanceId"), now)
            state = inst.state(now)

            def refuse(verb):
                return ApiError(
                    400,
                    "DEPENDENT_RESOURCE_STATE",
                    f"cannot {verb} instance {inst.id} in status {state}",
                )

            step = self.step_seconds
            if action == "start":
                if state != "exited":
                    raise refuse("start")
                inst.begin(SEQ_START, now, step)
                inst.last_started_at = now
                inst.failure = None
                inst.spot_reclaim_time = 0
                inst.spot_notified = False
            elif action == "stop":
                if state != "running":
                    raise refuse("stop")
                inst.begin(SEQ_STOP, now, step)
                inst.last_stopped_at = now
            elif action == "restart":
                if state != "running":
                    raise refuse("restart")
                inst.begin(SEQ_RESTART, now, step)
                inst.last_started_at = now
            elif action == "delete":
                if state in ("toRemove", "removing", "removed"):
                    raise refuse("delete")
                inst.begin(SEQ_DELETE, now, step)
            elif action == "migrate":
                if state not in ("running", "exited"):
                    raise refuse("migrate")
                inst.begin(SEQ_MIGRATE, now, step)
                inst.failure = None
                inst.spot_reclaim_time = 0
                inst.spot_notified = False
                inst.last_started_at = now
                job = _Job()
                job.id = self._new_id(self._jobs)
                job.type = "instanceMigrate"
                job.instance_id = inst.id
                job.created_at = now
                job.seq = SEQ_MIGRATE_JOB
                job.seq_start = now
                job.seq_step = step
                self._jobs[job.id] = job
            else:  # pragma: no cover - routing only passes known actions
                raise RouteNotFound(action)
            self._after_transition(inst, now)
        return {}

    def api_jobs(self, q: dict) -> dict:
        size = _int_param(q, "pageSize", 10, 0, 10000)
        start, end = _page_bounds(self.page_numbering, q, size)
        start_time = _int_param(q, "startTime", 0, 0)
        end_time = _int_param(q, "endTime", 0, 0)
        with self._lock:
            now = time.time()
            matched = []
            for job in reversed(list(self._jobs.values())):
                if q.get("jobId") and job.id != q["jobId"]:
                    continue
                if q.get("type") and job.type != q["type"]:
                    continue
                if q.get("instanceId") and job.instance_id != q["instanceId"]:
                    continue
                if q.get("state") and job.state(now) != q["state"]:
                    continue
                if start_time and job.created_at < start_time:
                    continue
                if end_time and job.created_at > end_time:
                    continue
                matched.append(job)
            jobs = [self._job_view(j, now) for j in matched[start:end]]
            return {"jobs": jobs, "total": len(matched)}

    # -- sandbox-served instance surfaces ----------------------------------------------------

    def port_probe(self, instance_id: str, port: int) -> tuple[int, dict]:
        """What an instance's public http endpoint answers: 200 running, 503 otherwise."""
        with self._lock:
            now = time.time()
            inst = self._live(instance_id, now)
            if inst is None or (port, "http") not in inst.ports:
                return 404, {"error": "no such endpoint"}
            state = inst.state(now)
        if state == "running":
            return 200, {"instanceId": instance_id, "port": port, "status": state}
        return 503, {"instanceId": instance_id, "port": port, "status": state}


# --------------------------------------------------------------------------------------------
# Parsing helpers
# --------------------------------------------------------------------------------------------
