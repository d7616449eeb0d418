"""Request, job, upstream and cache metrics, aggregated across processes through ops/counters.

Hot paths only add numbers to a small in-process buffer; a background thread in each process
writes the buffer to the shared counters once a second (one counters call for everything that
happened meanwhile), and readers flush their own process's buffer before reading. So a request
pays no counters round trip for its metrics, and figures from other processes lag by at most
about a second. Everything derived is computed by whoever reads: rates and the process's
figures here, the JSON bodies in metrics_payloads.py, the Prometheus families in prometheus.py.

Rates ("per minute") come from snapshots of the cumulative totals, at most one a minute, kept as
one small shared value: rate = (total now - total at the oldest snapshot of the last five minutes)
/ elapsed. Unlike a counter per minute, this never grows, and counters has no delete.

Other code uses: record_request, record_job, record_job_started, record_job_failed,
observe_upstream (NovitaClient's `on_call`, wired where the client is built), record_cache,
record_rate_limited, flush, totals.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import threading
import time

import psutil
from django.conf import settings

from . import counters

logger = logging.getLogger(__name__)

# Seconds; the last bucket of each histogram is +Inf.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UPSTREAM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RATE_WINDOW_SECONDS = 300
FLUSH_INTERVAL_SECONDS = 1.0
_SNAPSHOTS_KEY = "metrics:snapshots"
_SNAPSHOT_CHECK_SECONDS = 5.0
# Without the flusher thread (under pytest), a buffer older than this is written by the next add.
_FLUSH_AFTER_SECONDS = 2.0
_SAFE_LABEL = re.compile(r"[^A-Za-z0-9_.\-]")

_lock = threading.Lock()
_pending: dict[str, float] = {}
_local = {
    "pending_since": 0.0,
    "snapshot_checked": -1e9,
    "process": None,
    "pid": None,
    "flusher_pid": None,
}
_hooked: dict = {"client": None}

PROCESS_STARTED_AT = psutil.Process().create_time()
# psutil measures CPU between two calls; the first one only sets the starting point.
psutil.cpu_percent(interval=None)


def enabled() -> bool:
    return getattr(settings, "METRICS_ENABLED", True)


# --- writing ------------------------------------------------------------------------------


def _bucket(seconds: float, bounds: tuple[float, ...]) -> str:
    for bound in bounds:
        if seconds <= bound:
            return str(bound)
    return "inf"


def _add(target: dict[str, float], amounts: dict[str, float]) -> None:
    for key, amount in amounts.items():
        target[key] = target.get(key, 0) + amount


def _take_pending() -> dict[str, float]:
    with _lock:
        taken = dict(_pending)
        _pending.clear()
    return taken


def forget_buffered() -> None:
    """Drop what this process has buffered but not yet written, and let it take a rate snapshot
    at once. With counters.reset_all this starts every figure from zero (tests): otherwise what
    an earlier test buffered lands in the next one's counters at its first flush."""
    _take_pending()
    _local["snapshot_checked"] = -1e9


def _flusher_loop() -> None:
    while True:
        time.sleep(FLUSH_INTERVAL_SECONDS)
        try:
            # Snapshot first, so a snapshot never contains what this process still holds.
            maybe_snapshot()
            flush()
        except Exception:  # noqa: BLE001 - keep flushing; counters degrade on their own
            logger.warning("metrics flush failed", exc_info=True)


def _ensure_flusher() -> None:
    pid = os.getpid()
    if _local["flusher_pid"] == pid:
        return
    with _lock:
        if _local["flusher_pid"] == pid:
            return
        _local["flusher_pid"] = pid
    # Tests flush when they read instead: a thread writing at random moments would race the
    # per-test counter reset.
    if not getattr(settings, "TESTING", False):
        threading.Thread(target=_flusher_loop, name="metrics-flusher", daemon=True).start()


def buffer(amounts: dict[str, float]) -> None:
    """Add to the shared counters with this process's next flush (within about a second)."""
    if not enabled():
        return
    _ensure_flusher()
    now = time.monotonic()
    with _lock:
        if not _pending:
            _local["pending_since"] = now
        _add(_pending, amounts)
        stale = now - _local["pending_since"] > _FLUSH_AFTER_SECONDS
    if stale:
        flush()


def flush() -> None:
    """Write this process's buffered figures now (readers call it to see their own)."""
    taken = _take_pending()
    if taken:
        counters.incr_many(taken)


atexit.register(flush)


def record_request(request, status: int, duration_ms: float) -> None:
    if not enabled():
        return
    buffer(
        {
            "requests:total": 1,
            f"requests:{status // 100}xx": 1,
            "requests:duration_ms_total": int(duration_ms * 1000) / 1000,
            f"requests:le:{_bucket(duration_ms / 1000, REQUEST_BUCKETS)}": 1,
        }
    )


def _job_type(task_name: str) -> str:
    # "instances.tasks.create_instance" -> "create_instance", as in the contract's byType.
    return _SAFE_LABEL.sub("_", task_name.rsplit(".", 1)[-1])[:100] or "unknown"


def record_job(task_name: str, state: str = "SUCCESS") -> None:
    """One task finished (any outcome); `state` is Celery's final state of this run."""
    amounts = {"jobs:total": 1, f"jobs:type:{_job_type(task_name)}": 1}
    if state == "SUCCESS":
        amounts["jobs:succeeded"] = 1
    buffer(amounts)


def record_job_started(task_name: str) -> None:
    # "processing" is started minus finished.
    buffer({"jobs:started": 1})


def record_job_failed(task_name: str) -> None:
    buffer({"jobs:failed": 1, f"jobs:failed:{_job_type(task_name)}": 1})


def observe_upstream(operation: str, seconds: float, outcome: str) -> None:
    """NovitaClient's `on_call` hook: one upstream HTTP attempt, its latency and outcome."""
    op = _SAFE_LABEL.sub("_", operation)[:64] or "unknown"
    result = _SAFE_LABEL.sub("_", outcome)[:32] or "unknown"
    buffer(
        {
            f"upstream:{op}:count": 1,
            f"upstream:{op}:sum": round(seconds, 6),
            f"upstream:{op}:le:{_bucket(seconds, UPSTREAM_BUCKETS)}": 1,
            f"upstream:{op}:outcome:{result}": 1,
        }
    )


def record_cache(name: str, hits: int = 0, misses: int = 0, sets: int = 0) -> None:
    amounts = {}
    if hits:
        amounts[f"cache:{name}:hits"] = hits
    if misses:
        amounts[f"cache:{name}:misses"] = misses
    if sets:
        amounts[f"cache:{name}:sets"] = sets
    if amounts:
        buffer(amounts)


def record_rate_limited() -> None:
    buffer({"ratelimit:rejected": 1})


# --- reading ------------------------------------------------------------------------------


def totals(*, write: bool = True) -> dict[str, float]:
    """Every shared counter, this process's buffered figures included.

    By default the buffer is written first, so what is returned is what every process reads
    (a rate snapshot must never count figures the counters do not hold yet). With write=False
    it is added in memory instead: /health, which load balancers poll every few seconds, then
    writes nothing (a counters write was the most of what metrics cost a /health request). A
    flush running at that moment may leave its figures out of that one answer, never count
    them twice."""
    if write:
        flush()
        return counters.get_all()
    all_totals = counters.get_all()
    with _lock:
        _add(all_totals, _pending)
    return all_totals


def _point(all_totals: dict[str, float], at: float) -> dict[str, float]:
    return {
        "t": at,
        "requests": all_totals.get("requests:total", 0),
        "duration": all_totals.get("requests:duration_ms_total", 0),
        "errors": all_totals.get("requests:4xx", 0) + all_totals.get("requests:5xx", 0),
        "jobs": all_totals.get("jobs:total", 0),
    }


def _load_snapshots() -> list[dict]:
    try:
        raw = counters.get_value(_SNAPSHOTS_KEY)
        snaps = json.loads(raw) if raw else []
        return [s for s in snaps if isinstance(s, dict) and "t" in s]
    except (ValueError, TypeError):
        return []


def maybe_snapshot(all_totals: dict[str, float] | None = None) -> None:
    """Remember the totals once a minute (checked at most every few seconds per process)."""
    mono = time.monotonic()
    if mono - _local["snapshot_checked"] < _SNAPSHOT_CHECK_SECONDS:
        return
    _local["snapshot_checked"] = mono
    try:
        now = time.time()
        snaps = _load_snapshots()
        if snaps and int(snaps[-1]["t"] // 60) == int(now // 60):
            return
        point = _point(all_totals if all_totals is not None else counters.get_all(), now)
        snaps = [*snaps, point][-(RATE_WINDOW_SECONDS // 60 + 3) :]
        # Two processes may write the same minute at once; one snapshot is lost, no harm.
        counters.set_value(_SNAPSHOTS_KEY, json.dumps(snaps))
    except Exception:  # noqa: BLE001
        logger.debug("metrics snapshot failed", exc_info=True)


def window(all_totals: dict[str, float], now: float | None = None) -> dict[str, float]:
    """Rates over the last few minutes: requests and jobs per minute, mean latency, error share.

    Errors are responses with status >= 400 (every response that carries the error envelope).
    """
    now = time.time() if now is None else now
    snaps = [s for s in _load_snapshots() if s["t"] <= now]
    recent = [s for s in snaps if now - s["t"] <= RATE_WINDOW_SECONDS]
    if recent:
        base = recent[0]
    elif snaps:
        base = snaps[-1]
    else:
        # No snapshot yet (fresh counters): count everything since this process started.
        base = {"t": PROCESS_STARTED_AT, "requests": 0, "duration": 0, "errors": 0, "jobs": 0}
    current = _point(all_totals, now)
    delta = {k: max(0.0, current[k] - base.get(k, 0)) for k in ("requests", "duration", "errors")}
    delta["jobs"] = max(0.0, current["jobs"] - base.get("jobs", 0))
    # At least a minute, so one request a second ago reads as 1/min, not 60/min.
    minutes = max(now - base["t"], 60.0) / 60.0
    if delta["requests"]:
        avg_ms = delta["duration"] / delta["requests"]
        error_rate = delta["errors"] / delta["requests"]
    elif current["requests"]:
        avg_ms = current["duration"] / current["requests"]
        error_rate = current["errors"] / current["requests"]
    else:
        avg_ms = error_rate = 0.0
    return {
        "requestsPerMinute": round(delta["requests"] / minutes, 2),
        "averageResponseTimeMs": round(avg_ms, 2),
        "errorRate": round(error_rate, 4),
        "jobsPerMinute": round(delta["jobs"] / minutes, 2),
    }


def _process() -> psutil.Process:
    if _local["pid"] != os.getpid():
        _local["process"] = psutil.Process()
        _local["pid"] = os.getpid()
    return _local["process"]


def system() -> dict:
    """Memory and CPU of this process and its machine, in bytes and percent.

    rss/shared/private are this process's (private = rss - shared, the nearest thing to Node's
    heapUsed); system_total/system_used are the machine's; cpu is the machine's busy percent
    since the previous reading.
    """
    mem = _process().memory_info()
    shared = getattr(mem, "shared", 0)
    vm = psutil.virtual_memory()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = [0.0, 0.0, 0.0]
    return {
        "rss": mem.rss,
        "shared": shared,
        "private": max(0, mem.rss - shared),
        "system_total": vm.total,
        "system_used": vm.total - vm.available,
        "cpu_percent": round(psutil.cpu_percent(interval=None), 1),
        "load_average": load,
    }


def uptime_seconds() -> int:
    return int(time.time() - PROCESS_STARTED_AT)


def by_status(all_totals: dict[str, float]) -> dict[str, int]:
    # The contract's three classes always; redirects and the like only once they happen.
    out = {klass: int(all_totals.get(f"requests:{klass}", 0)) for klass in ("2xx", "4xx", "5xx")}
    for klass in ("1xx", "3xx"):
        if all_totals.get(f"requests:{klass}"):
            out[klass] = int(all_totals[f"requests:{klass}"])
    return dict(sorted(out.items()))


def jobs_by_type(all_totals: dict[str, float]) -> dict[str, int]:
    prefix = "jobs:type:"
    return {
        key[len(prefix) :]: int(value)
        for key, value in sorted(all_totals.items())
        if key.startswith(prefix)
    }
