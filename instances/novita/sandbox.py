"""In-process simulator ("sandbox") of Novita's v1 GPU-instance API.

It follows the upstream research notes (novita-upstream.md): same paths, query params, JSON
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
- pageNum starts at 1; 0 is treated as 1. Lists are newest first.
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
import hmac
import json
import random
import selectors
import socket
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

API_PREFIX = "/gpu-instance/openapi/v1"
CONTROL_PREFIX = "/_sandbox"

# Terminal pseudo-state of a deleted instance: it stays "removed" for one step, then vanishes.
_GONE = "<gone>"

UPSTREAM_STATUSES = frozenset(
    {
        "toCreate",
        "creating",
        "pulling",
        "running",
        "toStart",
        "starting",
        "toStop",
        "stopping",
        "exited",
        "toRestart",
        "restarting",
        "toRemove",
        "removing",
        "removed",
        "toReset",
        "resetting",
        "migrating",
        "freezing",
    }
)

# One state per step; the last entry is where the instance settles.
SEQ_CREATE = ("toCreate", "creating", "pulling", "running")
SEQ_STOP = ("toStop", "stopping", "exited")
SEQ_START = ("toStart", "starting", "running")
SEQ_RESTART = ("toRestart", "restarting", "running")
SEQ_DELETE = ("toRemove", "removing", "removed", _GONE)
SEQ_MIGRATE = ("migrating", "migrating", "running")
SEQ_MIGRATE_JOB = ("pulling", "running", "success")

_DEFAULT_REASONS = {
    400: "REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    409: "CONFLICT",
    429: "RATE_LIMIT_EXCEEDED",
    500: "UNKNOWN",
    502: "BAD_GATEWAY",
    503: "SERVICE_UNAVAILABLE",
    504: "GATEWAY_TIMEOUT",
}

# --------------------------------------------------------------------------------------------
# Catalogue
# --------------------------------------------------------------------------------------------

CLUSTERS = (
    {"id": "CN-HK-01", "name": "Hong Kong 01"},
    {"id": "US-WEST-01", "name": "US West (Oregon) 01"},
    {"id": "EU-WEST-01", "name": "EU West (Frankfurt) 01"},
    {"id": "AS-SGP-02", "name": "Singapore 02"},
)


def _product(
    pid,
    name,
    regions,
    price,
    *,
    cpu=16,
    mem=62,
    disk=100,
    deploy=True,
    spot=None,
    inventory="normal",
    max_rootfs=500,
):
    methods = ["onDemand", "monthly"] + (["spot"] if spot is not None else [])
    return {
        "id": pid,
        "name": name,
        "cpuPerGpu": cpu,
        "memoryPerGpu": mem,
        "diskPerGpu": disk,
        "availableDeploy": deploy,
        "minRootFS": 10,
        "maxRootFS": max_rootfs,
        "minLocalStorage": 0,
        "maxLocalStorage": disk,
        "regions": list(regions),
        "price": price,
        "monthlyPrice": [{"price": price * 24 * 30 * 85 // 100, "month": 1}],
        "billingMethods": methods,
        # The docs type spotPrice as a string while price is an int; mirror that.
        "spotPrice": str(spot) if spot is not None else "0",
        "inventoryState": inventory if deploy else "none",
    }


PRODUCTS = (
    # Two offers with the same display name in the same region at different prices: the
    # gateway has to pick one (e.g. the cheapest deployable) rather than match by name.
    _product("4090.16c.62g-hk-a", "RTX 4090 24GB", ["CN-HK-01"], 35000, spot=18000),
    _product("4090.16c.62g-hk-b", "RTX 4090 24GB", ["CN-HK-01"], 39000, inventory="high"),
    _product("4090.16c.62g-us", "RTX 4090 24GB", ["US-WEST-01", "EU-WEST-01"], 36000, spot=19000),
    _product("a100.24c.120g", "A100 80GB", ["US-WEST-01", "AS-SGP-02"], 160000, cpu=24, mem=120),
    _product(
        "h100.24c.200g",
        "H100 80GB",
        ["EU-WEST-01"],
        250000,
        cpu=24,
        mem=200,
        deploy=False,
    ),
    _product("l40s.16c.62g", "L40S 48GB", ["AS-SGP-02"], 86000, spot=43000, inventory="low"),
    _product("3090.12c.46g", "RTX 3090 24GB", ["AS-SGP-02", "CN-HK-01"], 21000, cpu=12, mem=46),
)

TEMPLATES = (
    {
        "Id": "pytorch-jupyter",
        "name": "PyTorch + Jupyter",
        "readme": "PyTorch 2.3 with CUDA 12.1, JupyterLab on 8888 and SSH on 22.",
        "type": "instance",
        "channel": "official",
        "image": "pytorch/pytorch:2.3.1-cuda12.1-cudnn8-runtime",
        "imageAuth": "",
        "startCommand": "",
        "entrypoint": "",
        "rootfsSize": 60,
        "ports": [{"type": "http", "ports": [8888]}, {"type": "tcp", "ports": [22]}],
        "envs": [{"key": "JUPYTER_TOKEN", "value": "sandbox"}],
        "tools": [{"name": "Jupyter", "describe": "JupyterLab", "port": "8888", "type": "http"}],
        "createdAt": "1713162260",
        "recommendCards": [{"gpuSpecId": "4090.16c.62g", "cardNum": "1"}],
        "minCudaVersion": "12.1",
    },
    {
        "Id": "ubuntu-ssh",
        "name": "Ubuntu 22.04 + SSH",
        "readme": "Plain Ubuntu with an SSH server on 22.",
        "type": "instance",
        "channel": "official",
        "image": "ubuntu:22.04",
        "imageAuth": "",
        "startCommand": "",
        "entrypoint": "",
        "rootfsSize": 30,
        "ports": [{"type": "tcp", "ports": [22]}],
        "envs": [],
        "tools": [],
        "createdAt": "1713162261",
        "recommendCards": [],
        "minCudaVersion": "",
    },
    {
        "Id": "comfyui",
        "name": "ComfyUI",
        "readme": "ComfyUI web UI on 8188.",
        "type": "instance",
        "channel": "community",
        "image": "ghcr.io/ai-dock/comfyui:latest-cuda",
        "imageAuth": "",
        "startCommand": "",
        "entrypoint": "",
        "rootfsSize": 80,
        "ports": [{"type": "http", "ports": [8188]}],
        "envs": [{"key": "COMFYUI_ARGS", "value": "--listen"}],
        "tools": [],
        "createdAt": "1713162262",
        "recommendCards": [{"gpuSpecId": "4090.16c.62g", "cardNum": "1"}],
        "minCudaVersion": "12.1",
    },
)

_PRODUCTS_BY_ID = {p["id"]: p for p in PRODUCTS}
_CLUSTER_NAMES = {c["id"]: c["name"] for c in CLUSTERS}
_TEMPLATES_BY_ID = {t["Id"]: t for t in TEMPLATES}
_DEPLOYABLE = tuple(p for p in PRODUCTS if p["availableDeploy"])
_SEED_PORTS = ((8888, "http"), (22, "tcp"))


class ApiError(Exception):
    """An upstream-style error: rendered as {"code", "reason", "message"} with HTTP `status`."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message

    def body(self) -> dict:
        return {"code": self.status, "reason": self.reason, "message": self.message}


def _not_found(instance_id) -> ApiError:
    return ApiError(400, "RESOURCE_NOT_FOUND", f"instance {instance_id} not found")


def _bad_param(message: str) -> ApiError:
    return ApiError(400, "VALIDATOR_PARAM", message)


# --------------------------------------------------------------------------------------------
# State records (compact: __slots__, shared tuples for ports/envs/sequences)
# --------------------------------------------------------------------------------------------


class _TcpEndpoint:
    """A loopback socket standing in for one tcp port of one instance."""

    __slots__ = ("port", "sock", "bound_port", "listening")

    def __init__(self, port: int, sock: socket.socket | None, bound_port: int):
        self.port = port
        self.sock = sock
        self.bound_port = bound_port
        self.listening = False


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


_UNSET = object()


def _rel_path(path: str | None) -> str | None:
    """Paths are recorded and matched relative to the v1 prefix ("/gpu/instance/create")."""
    if path is None:
        return None
    path = urlsplit(path).path
    if path.startswith(API_PREFIX):
        path = path[len(API_PREFIX) :] or "/"
    return path


# --------------------------------------------------------------------------------------------
# The sandbox
# --------------------------------------------------------------------------------------------


class Sandbox:
    """Simulated upstream: state, config, fault injection and call recording in one object."""

    def __init__(
        self,
        api_key: str | None = "sandbox-key",
        step_seconds: float = 0.05,
        *,
        seed: int | None = None,
        max_tcp_listeners: int = 256,
        calls_maxlen: int = 10000,
    ):
        self.api_key = api_key
        self.step_seconds = float(step_seconds)
        self.max_tcp_listeners = max_tcp_listeners
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._instances: dict[str, _Instance] = {}
        self._jobs: dict[str, _Job] = {}
        self._faults: list[_Fault] = []
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
            self._reset_calls_locked()

    def configure(self, *, step_seconds: float | None = None) -> None:
        """Change the step for operations started from now on (running ones keep theirs)."""
        if step_seconds is not None:
            if step_seconds < 0:
                raise ValueError("step_seconds must be >= 0")
            self.step_seconds = float(step_seconds)

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
            raise _not_found(instance_id)
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
                inst.cluster_id = product["regions"][0]
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
                inst.failure = None
                inst.tcp = None
                self._instances[inst.id] = inst
                ids.append(inst.id)
        return ids

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

    # -- TCP listeners ----------------------------------------------------------------------

    def _bind(self, port: int = 0) -> socket.socket | None:
        for candidate in dict.fromkeys((port, 0)):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                # Rebinding the same port right after closing needs this (TIME_WAIT).
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self.host, candidate))
                return sock
            except OSError:
                sock.close()
        return None

    def _alloc_tcp(self, ports) -> list[_TcpEndpoint] | None:
        endpoints = []
        for port, kind in ports:
            if kind != "tcp":
                continue
            sock = self._bind() if self._tcp_open < self.max_tcp_listeners else None
            if sock is None:
                # Over the cap: point at the sandbox's own HTTP port, which always accepts.
                endpoints.append(_TcpEndpoint(port, None, self.port or 0))
            else:
                self._tcp_open += 1
                endpoints.append(_TcpEndpoint(port, sock, sock.getsockname()[1]))
        return endpoints or None

    def _release_tcp(self, inst: _Instance) -> None:
        for ep in inst.tcp or ():
            if ep.sock is None:
                continue
            if ep.listening:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._selector.unregister(ep.sock)
            ep.sock.close()
            ep.sock = None
            ep.listening = False
            self._tcp_open -= 1

    def _sync_tcp(self, inst: _Instance, now: float) -> None:
        """Make each listener accept exactly while the instance is running."""
        if not inst.tcp:
            return
        state = inst.state(now)
        if state == _GONE:
            self._release_tcp(inst)
            return
        want = state == "running"
        for ep in inst.tcp:
            if ep.sock is None or ep.listening == want:
                continue
            if want:
                ep.sock.listen(16)
                ep.sock.setblocking(False)
                self._selector.register(ep.sock, selectors.EVENT_READ)
                ep.listening = True
            else:
                # A socket cannot stop listening; close it and keep the port reserved by
                # binding a fresh, non-listening socket to it (connections are then refused).
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._selector.unregister(ep.sock)
                ep.sock.close()
                ep.listening = False
                ep.sock = self._bind(ep.bound_port)
                if ep.sock is None:
                    self._tcp_open -= 1
                    ep.bound_port = self.port or 0
                else:
                    ep.bound_port = ep.sock.getsockname()[1]

    def _after_transition(self, inst: _Instance, now: float) -> None:
        self._sync_tcp(inst, now)
        if inst.tcp:
            self._watch.add(inst.id)
            self._wake()

    def _wake(self) -> None:
        if self._wake_w is not None:
            with contextlib.suppress(OSError):  # full buffer: a wake-up is already pending
                self._wake_w.send(b"\0")

    def _net_loop(self) -> None:
        while not self._stopping.is_set():
            # Poll finely only while some instance's listeners may still have to flip.
            timeout = 0.01 if self._watch else 1.0
            try:
                events = self._selector.select(timeout)
            except (OSError, ValueError):
                events = []
                time.sleep(timeout)
            for key, _mask in events:
                if key.data == "wake":
                    with contextlib.suppress(OSError):
                        key.fileobj.recv(4096)  # type: ignore[union-attr]
                    continue
                try:
                    conn, _addr = key.fileobj.accept()  # type: ignore[union-attr]
                except OSError:
                    continue  # closed under us by a state change: nothing to accept
                conn.close()
            if self._watch:
                with self._lock:
                    now = time.time()
                    for iid in list(self._watch):
                        inst = self._instances.get(iid)
                        if inst is None:
                            self._watch.discard(iid)
                            continue
                        self._sync_tcp(inst, now)
                        if inst.state(now) == _GONE:
                            self._drop(inst)
                        elif now >= inst.settled_at():
                            self._watch.discard(iid)

    # -- views ------------------------------------------------------------------------------

    def _password(self, inst: _Instance) -> str:
        # Derived, not stored, to keep instances small; stable per instance.
        return hashlib.sha256(f"sandbox-ssh:{inst.id}".encode()).hexdigest()[:16]

    def _tcp_endpoint(self, inst: _Instance, port: int) -> str:
        for ep in inst.tcp or ():
            if ep.port == port:
                return f"{self.host}:{ep.bound_port}"
        return f"{self.host}:{self.port or 0}"

    def _http_endpoint(self, inst: _Instance, port: int) -> str:
        return f"{self.base_url}/_sandbox/ports/{inst.id}/{port}/"

    def _spot_status(self, inst: _Instance) -> str:
        if inst.billing_mode != "spot":
            return ""
        return "terminated" if inst.spot_reclaim_time else "running"

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
        if inst.failure and state == "exited":
            view["statusError"] = {"state": "failed", "message": inst.failure}
        return view

    def _list_view(self, inst: _Instance, state: str) -> dict:
        view = self._base_view(inst, state)
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
            endpoint = (
                self._http_endpoint(inst, port)
                if kind == "http"
                else self._tcp_endpoint(inst, port)
            )
            mappings.append({"port": port, "endpoint": endpoint, "type": kind})
        view["portMappings"] = mappings
        view["volumeMounts"] = [{"type": "local", "size": inst.rootfs, "id": "", "mountPath": "/"}]
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
            gpus = sorted({p["name"] for p in PRODUCTS if c["id"] in p["regions"]})
            data.append(
                {
                    "id": c["id"],
                    "name": c["name"],
                    "availableGpuType": gpus,
                    "supportNetworkStorage": c["id"] != "AS-SGP-02",
                    "supportInstanceNetwork": c["id"] == "US-WEST-01",
                }
            )
        return {"data": data}

    def api_products(self, q: dict) -> dict:
        cluster = q.get("clusterId") or ""
        name = (q.get("productName") or "").strip().lower()
        billing = q.get("billingMethod") or ""
        gpu_num = _int_param(q, "gpuNum", 0, 0, 8)
        min_cpu = _int_param(q, "minCpuPerGpu", 0, 0)
        min_mem = _int_param(q, "minMemoryPerGpu", 0, 0)
        min_rootfs = _int_param(q, "minRootFSSize", 0, 0)
        if billing and billing not in ("onDemand", "monthly", "spot"):
            raise _bad_param("billingMethod must be onDemand, monthly or spot")
        del gpu_num  # accepted and validated; every product scales to 8 GPUs
        out = []
        for p in PRODUCTS:
            if cluster and p["regions"] and cluster not in p["regions"]:
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
        page = max(_int_param(q, "pageNum", 1, 0), 1)
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
        start = (page - 1) * size
        page_items = items[start : start + size] if size else []
        return {"template": json.loads(json.dumps(page_items)), "total": len(items)}

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
            if product["regions"] and cluster not in product["regions"]:
                raise ApiError(
                    400, "INSUFFICIENT_RESOURCE", f"{product['name']} is not offered in {cluster}"
                )
        else:
            cluster = (product["regions"] or [CLUSTERS[0]["id"]])[0]

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
            inst.failure = None
            inst.tcp = self._alloc_tcp(ports)
            self._instances[inst.id] = inst
            self._after_transition(inst, now)
        return {"id": inst.id}

    def api_list_instances(self, q: dict) -> dict:
        size = _int_param(q, "pageSize", 10, 0, 10000)
        page = max(_int_param(q, "pageNum", 1, 0), 1)
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
            start = (page - 1) * size
            items = []
            for inst, state in matched[start : start + size]:
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
                raise ApiError(404, "NOT_FOUND", f"unknown action {action}")
            self._after_transition(inst, now)
        return {}

    def api_jobs(self, q: dict) -> dict:
        size = _int_param(q, "pageSize", 10, 0, 10000)
        page = max(_int_param(q, "pageNum", 1, 0), 1)
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
            start = (page - 1) * size
            jobs = [self._job_view(j, now) for j in matched[start : start + size]]
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


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_param(q: dict, key: str, default: int, lo: int | None = None, hi: int | None = None):
    raw = q.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad_param(f"{key} must be an integer") from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise _bad_param(f"{key} is out of range")
    return value


def _parse_ports(raw) -> tuple:
    """Upstream takes ports as a comma string: "8888/http, 22/tcp"."""
    if raw is None or raw == "":
        return ()
    if not isinstance(raw, str):
        raise _bad_param('ports must be a comma-separated string such as "8888/http,22/tcp"')
    out = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        port_s, sep, kind = item.partition("/")
        kind = kind.strip().lower()
        if not sep or kind not in ("tcp", "http") or not port_s.strip().isdigit():
            raise _bad_param(f"invalid port spec {item!r}; expected <port>/<tcp|http>")
        port = int(port_s)
        if not 1 <= port <= 65535:
            raise _bad_param(f"port {port} is out of range")
        if port in (2222, 2223, 2224):
            raise _bad_param(f"port {port} is reserved")
        if (port, kind) not in out:
            out.append((port, kind))
    if len(out) > 15:
        raise _bad_param("at most 15 ports are allowed")
    return tuple(out)


def _parse_envs(raw) -> tuple:
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > 100:
        raise _bad_param("envs must be a list of at most 100 {key, value} objects")
    out = []
    for env in raw:
        if not isinstance(env, dict) or not isinstance(env.get("key"), str) or not env["key"]:
            raise _bad_param("each env needs a non-empty string key")
        value = env.get("value", "")
        if not isinstance(value, str) or len(env["key"]) > 511 or len(value) > 4095:
            raise _bad_param("env key/value too long or not a string")
        out.append((env["key"], value))
    return tuple(out)


# --------------------------------------------------------------------------------------------
# HTTP layer
# --------------------------------------------------------------------------------------------

_GET_ROUTES = {
    "/clusters": "api_clusters",
    "/products": "api_products",
    "/templates": "api_templates",
    "/template": "api_template",
    "/gpu/instances": "api_list_instances",
    "/gpu/instance": "api_get_instance",
    "/jobs": "api_jobs",
}
_ACTIONS = {f"/gpu/instance/{a}": a for a in ("start", "stop", "restart", "delete", "migrate")}


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # Clients that time out or hang up mid-response are normal here (timeout and fault
        # tests do it on purpose); anything else is a sandbox bug and should be visible.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    sandbox: Sandbox  # set on the per-server subclass
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, the client's delayed ACK
    # would add ~40 ms to every response, which distorts step timing and benchmarks.
    disable_nagle_algorithm = True
    server_version = "NovitaSandbox/1.0"
    # Idle keep-alive connections are dropped after this, so handler threads do not pile up.
    timeout = 60

    def log_message(self, format, *args):  # noqa: A002 - signature fixed by the base class
        pass  # quiet by default; the call record is the log

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # -- plumbing -----------------------------------------------------------------------

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, payload, headers: dict | None = None, head=False) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        raw_body = self._read_body()
        path = split.path
        if path.startswith(API_PREFIX + "/"):
            self._api(method, path[len(API_PREFIX) :], split.query, query, raw_body)
        elif path.startswith(CONTROL_PREFIX + "/"):
            try:
                status, payload = self._control(
                    method, path[len(CONTROL_PREFIX) :], query, raw_body
                )
            except ApiError as exc:
                status, payload = exc.status, exc.body()
            self._send(status, payload, head=method == "HEAD")
        else:
            self._send(404, ApiError(404, "NOT_FOUND", f"no route for {path}").body())

    def _api(self, method, rel, raw_query, query, raw_body) -> None:
        sb = self.sandbox
        latency, fault = sb._take_faults(rel)
        if latency:
            time.sleep(latency)
        if fault is not None and fault.down:
            sb._record(method, rel, raw_query, 0)  # 0: no answer was sent
            self.close_connection = True
            return
        headers = {}
        try:
            if fault is not None:
                if fault.status == 429:
                    headers["Retry-After"] = "1"
                raise ApiError(fault.status, fault.reason, "injected fault")
            self._check_auth()
            payload = self._route(method, rel, query, raw_body)
            status = 200
        except ApiError as exc:
            status, payload = exc.status, exc.body()
        except Exception as exc:
            # A sandbox bug: show it, but still answer like an upstream 500 would.
            traceback.print_exc()
            status, payload = 500, ApiError(500, "UNKNOWN", f"sandbox error: {exc}").body()
        sb._record(method, rel, raw_query, status)
        self._send(status, payload, headers, head=method == "HEAD")

    def _check_auth(self) -> None:
        key = self.sandbox.api_key
        if key is None:
            return
        header = self.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), key):
            raise ApiError(401, "UNAUTHORIZED", "missing or invalid API key")

    def _route(self, method, rel, query, raw_body):
        sb = self.sandbox
        if rel in _GET_ROUTES:
            if method not in ("GET", "HEAD"):
                raise ApiError(405, "METHOD_NOT_ALLOWED", f"{method} not allowed on {rel}")
            return getattr(sb, _GET_ROUTES[rel])(query)
        if rel == "/gpu/instance/create" or rel in _ACTIONS:
            if method != "POST":
                raise ApiError(405, "METHOD_NOT_ALLOWED", f"{method} not allowed on {rel}")
            body = _json_body(raw_body)
            if rel == "/gpu/instance/create":
                return sb.api_create(body)
            return sb.api_action(_ACTIONS[rel], body)
        raise ApiError(404, "NOT_FOUND", f"no route for {API_PREFIX}{rel}")

    def _control(self, method, rel, query, raw_body) -> tuple[int, dict]:
        sb = self.sandbox
        parts = [p for p in rel.split("/") if p]
        if parts[:1] in (["ports"], ["terminal"], ["logs"]) and method in ("GET", "HEAD"):
            if parts[0] == "ports" and len(parts) >= 3 and parts[2].isdigit():
                return sb.port_probe(parts[1], int(parts[2]))
            if len(parts) >= 2:
                # Web terminal / log streams behave like an http port of the instance.
                view = sb.get(parts[1])
                if view is None:
                    return 404, {"error": "no such instance"}
                return (200 if view["status"] == "running" else 503), {"status": view["status"]}
        body = _json_body(raw_body) if raw_body else {}
        route = (method, parts[0] if parts else "")
        if route == ("GET", "health"):
            return 200, {"ok": True}
        if route == ("GET", "faults"):
            return 200, {"faults": sb.faults()}
        if route == ("POST", "faults"):
            if not isinstance(body, dict):
                raise _bad_param("fault must be a JSON object")
            kwargs = {}
            for key, alias in (
                ("path", "path"),
                ("status", "status"),
                ("reason", "reason"),
                ("error_rate", "errorRate"),
                ("latency_ms", "latencyMs"),
                ("count", "count"),
                ("down", "down"),
            ):
                if key in body:
                    kwargs[key] = body[key]
                elif alias in body:
                    kwargs[key] = body[alias]
            try:
                fault = sb.set_fault(**kwargs)
            except (TypeError, ValueError) as exc:
                raise _bad_param(str(exc)) from None
            return 200, {"fault": fault}
        if route == ("DELETE", "faults"):
            sb.clear_faults()
            return 200, {}
        if route == ("GET", "calls"):
            summary = sb.calls_summary(_int_param(query, "limit", 200, 0))
            if query.get("path"):
                rel_path = _rel_path(query["path"])
                summary["recent"] = [c for c in summary["recent"] if c["path"] == rel_path]
            return 200, summary
        if route == ("DELETE", "calls"):
            sb.reset_calls()
            return 200, {}
        if route == ("POST", "reset"):
            sb.reset()
            return 200, {}
        if route == ("GET", "config"):
            return 200, {"stepSeconds": sb.step_seconds, "auth": sb.api_key is not None}
        if route == ("POST", "config"):
            step = body.get("stepSeconds", body.get("step_seconds"))
            if step is not None:
                if not isinstance(step, int | float) or step < 0:
                    raise _bad_param("stepSeconds must be a number >= 0")
                sb.configure(step_seconds=step)
            return 200, {"stepSeconds": sb.step_seconds}
        if route == ("POST", "seed"):
            count = body.get("count", 0)
            if not _is_int(count) or count < 0:
                raise _bad_param("count must be a non-negative integer")
            try:
                ids = sb.seed_instances(
                    count,
                    status=body.get("status", "running"),
                    name_prefix=body.get("namePrefix", body.get("name_prefix", "seed")),
                )
            except ValueError as exc:
                raise _bad_param(str(exc)) from None
            return 200, {"count": len(ids), "ids": ids}
        if parts[:1] == ["instances"] and len(parts) >= 2:
            iid = parts[1]
            action = parts[2] if len(parts) > 2 else ""
            if method == "GET" and not action:
                view = sb.get(iid)
                if view is None:
                    raise _not_found(iid)
                return 200, view
            if method == "POST" and action == "reclaim":
                sb.reclaim_spot(iid)
                return 200, {}
            if method == "POST" and action == "fail":
                sb.fail_instance(iid, str(body.get("message") or "failed to pull image"))
                return 200, {}
        raise ApiError(404, "NOT_FOUND", f"no sandbox control route {method} {rel}")


def _json_body(raw: bytes):
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _bad_param("request body is not valid JSON") from None
