"""The checks behind GET /health, and which of them decide 200 or 503.

Critical, a failure answers 503 "unhealthy" with the short shape (status, timestamp, services,
uptime): the database (the source of truth), and Redis when REDIS_URL is set (broker, caches,
shared counters and breaker state live there). Without REDIS_URL, Redis is "not_configured" and
the file broker, file caches and SQLite counters stand in; that is not a failure.

Everything else is reported and, when down, turns the status into "degraded" while keeping 200:
the Novita API (an upstream outage is not fixed by restarting the gateway, and a load balancer
that pulled every gateway for it would turn a partial outage into a full one; reads keep working
from the database), the job queue (broker reachable and a worker heartbeat seen recently), the
caches (an in-memory fallback keeps requests working), and the beat sweeps including the
migration service. A sweep whose heartbeat was never seen is "unknown", not down: it may simply
not have run yet. The Novita API is "misconfigured" rather than down when it answers like a wrong
base URL or key would (a route-level 404, 401/403, a page that is not the API).

Every check really touches its dependency: SELECT 1, Redis PING, a cheap upstream call (list
clusters, short timeout, no retries, its result cached HEALTH_UPSTREAM_CACHE_SECONDS in the
"health" cache so /health never hammers Novita), LLEN of the Celery queue or the broker folder's
files, and heartbeats in the shared counters. Nothing secret is reported: no URLs, no keys, only
exception class names.
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connections

from novita_gateway.timeutil import iso, iso_now

from . import caching, counters, metrics, metrics_payloads, registry

logger = logging.getLogger(__name__)

NON_CRITICAL = ("novitaApi", "jobQueue", "cache", "migrationService")
_UPSTREAM_CACHE_KEY = "novita-api"
# Beat sweeps: (name in the report, heartbeat key, beat schedule entry, enabling setting).
_SWEEPS = (
    ("autoStop", "heartbeat:auto-stop", "auto-stop-sweep", "AUTO_STOP_ENABLED"),
    ("reconcile", "heartbeat:reconcile", "reconcile", None),
    ("migration", "heartbeat:migration", "migration-sweep", "MIGRATION_ENABLED"),
)
_redis_clients: dict = {}


def _ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


def _heartbeat_at(raw: str | None) -> float | None:
    """A heartbeat value as epoch seconds: writers store time.time(), ISO text is accepted too."""
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _heartbeat(key: str, max_age: float) -> dict:
    at = _heartbeat_at(counters.get_value(key))
    if at is None:
        return {"status": "unknown", "lastSeen": None, "ageSeconds": None}
    age = max(0.0, time.time() - at)
    return {
        "status": "up" if age <= max_age else "down",
        "lastSeen": iso(datetime.fromtimestamp(at, UTC)),
        "ageSeconds": round(age, 1),
    }


# --- database -----------------------------------------------------------------------------


def _db_ping() -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_database() -> dict:
    started = time.perf_counter()
    try:
        _db_ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "down"
        logger.warning("health: database check failed (%s)", type(exc).__name__)
        return {
            "status": "down",
            "responseTime": _ms(started),
            "error": type(exc).__name__,
            "lastChecked": iso_now(),
        }
    return {
        "status": "up",
        "responseTime": _ms(started),
        "vendor": connections["default"].vendor,
        "lastChecked": iso_now(),
    }


# --- redis --------------------------------------------------------------------------------


def _redis_url() -> str:
    return settings.REDIS_URL


def _redis_client():
    import redis

    url = _redis_url()
    client = _redis_clients.get(url)
    if client is None:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        _redis_clients[url] = client
    return client


def check_redis() -> dict:
    if not _redis_url():
        # The single-machine setup: file broker, file caches, SQLite counters. Nothing is down.
        return {
            "status": "not_configured",
            "responseTime": None,
            "pingResult": None,
            "isHealthy": True,
            "lastChecked": iso_now(),
        }
    started = time.perf_counter()
    try:
        pong = _redis_client().ping()
    except Exception as exc:  # noqa: BLE001
        caching.note_redis_down(exc)
        logger.warning("health: redis ping failed (%s)", type(exc).__name__)
        return {
            "status": "down",
            "responseTime": _ms(started),
            "pingResult": None,
            "isHealthy": False,
            "error": type(exc).__name__,
            "lastChecked": iso_now(),
        }
    return {
        "status": "up" if pong else "down",
        "responseTime": _ms(started),
        "pingResult": "PONG" if pong else str(pong),
        "isHealthy": bool(pong),
        "lastChecked": iso_now(),
    }


# --- upstream -----------------------------------------------------------------------------


def _probe_novita() -> dict:
    if not settings.NOVITA_API_BASE_URL or not settings.NOVITA_API_KEY:
        return {
            "status": "down",
            "responseTime": None,
            "error": "not_configured",
            "lastChecked": iso_now(),
        }
    probe = registry.facts.probe_upstream
    if probe is None:
        return {"status": "unknown", "responseTime": None, "lastChecked": iso_now()}
    started = time.perf_counter()
    try:
        probe()
    except Exception as exc:  # noqa: BLE001
        logger.warning("health: novita probe failed (%s)", type(exc).__name__)
        # A wrong base URL or key (route-level 404, 401/403, a page that is not the API) is
        # fixed by the operator, not by waiting: say so apart from an outage.
        misconfigured = getattr(exc, "misconfigured", False)
        result = {
            "status": "misconfigured" if misconfigured else "down",
            "responseTime": _ms(started),
            "error": type(exc).__name__,
            "lastChecked": iso_now(),
        }
        status_code = getattr(exc, "status_code", None)
        if status_code:
            result["httpStatus"] = status_code
        return result
    return {"status": "up", "responseTime": _ms(started), "lastChecked": iso_now()}


def check_novita() -> dict:
    cache = caching.named_cache("health")
    result = cache.get(_UPSTREAM_CACHE_KEY)
    if result is None:
        result = _probe_novita()
        cache.set(_UPSTREAM_CACHE_KEY, result, timeout=settings.HEALTH_UPSTREAM_CACHE_SECONDS)
    breaker = registry.read("breaker_state")
    return {**result, "circuitBreaker": breaker} if breaker else dict(result)


# --- job queue and beat -------------------------------------------------------------------


def _queue_names() -> list[str]:
    """Every queue a worker consumes: cost control, the outbound ones, and the default."""
    names = list(getattr(settings, "WORKER_QUEUES", ()))
    default = getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "celery")
    return names + ([default] if default not in names else [])


def _enqueued_at(raw: bytes | str) -> float | None:
    # The `enqueued_at` header every publish carries (ops.signals); None if unreadable.
    try:
        value = json.loads(raw).get("headers", {}).get("enqueued_at")
        return float(value) if value is not None else None
    except (ValueError, TypeError, AttributeError):
        return None


def _queue_stats(queue: str) -> tuple[int, float | None]:
    """(messages waiting, seconds the oldest of them has waited) for one queue.

    Only messages ready to run are in the broker's queue (a countdown task waits inside a
    worker), so the age is how long work has been waiting for a free worker.
    """
    if _redis_url():
        # kombu keeps priorities 3, 6 and 9 in sibling lists: "<queue>\x06\x16<priority>";
        # it pushes on the left and takes from the right, so the right end is the oldest.
        names = [queue] + [f"{queue}\x06\x16{p}" for p in (3, 6, 9)]
        pipe = _redis_client().pipeline(transaction=False)
        for name in names:
            pipe.llen(name)
            pipe.lindex(name, -1)
        answers = pipe.execute()
        depth = int(sum(answers[0::2]))
        stamps = [_enqueued_at(raw) for raw in answers[1::2] if raw]
        stamps = [s for s in stamps if s is not None]
        age = max(0.0, time.time() - min(stamps)) if stamps else None
        return depth, age
    folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"]
    wanted = f"{queue}.msg"
    depth, oldest_ms = 0, None
    with os.scandir(folder) as entries:
        for entry in entries:
            # kombu's file names: "<ms>_<uuid>.<queue>.msg", ms from the (machine-wide)
            # monotonic clock at publish time.
            head, _, tail = entry.name.partition(".")
            if tail != wanted:
                continue
            depth += 1
            try:
                ms = int(head.partition("_")[0])
            except ValueError:
                continue
            oldest_ms = ms if oldest_ms is None else min(oldest_ms, ms)
    age = max(0.0, time.monotonic() - oldest_ms / 1000) if oldest_ms is not None else None
    return depth, age


def _queue_size() -> int:
    return sum(_queue_stats(queue)[0] for queue in _queue_names())


def check_job_queue(redis_up: bool = True, all_totals: dict[str, float] | None = None) -> dict:
    """The broker, and per queue its depth, the age of its oldest task and its worker.

    Down when the broker fails or the cost-control worker is silent (idle GPUs would keep
    billing); degraded when only an outbound worker (webhooks, probes) is silent or missing.
    """
    broker = "redis" if _redis_url() else "filesystem"
    broker_error = None
    max_age = float(settings.HEALTH_WORKER_MAX_AGE_SECONDS)
    cost_queue = getattr(settings, "COST_CONTROL_QUEUE", "cost_control")
    queues = {}
    for queue in _queue_names():
        entry = {"depth": None, "oldestTaskAgeSeconds": None}
        if queue in getattr(settings, "WORKER_QUEUES", ()):
            entry["worker"] = _heartbeat(f"heartbeat:worker:{queue}", max_age)
        queues[queue] = entry
    if redis_up or broker == "filesystem":
        try:
            for queue, entry in queues.items():
                depth, age = _queue_stats(queue)
                entry["depth"] = depth
                entry["oldestTaskAgeSeconds"] = round(age, 1) if age is not None else None
        except Exception as exc:  # noqa: BLE001
            broker_error = type(exc).__name__
            logger.warning("health: broker check failed (%s)", broker_error)
    else:
        broker_error = "redis_down"
    for entry in queues.values():
        if "worker" in entry:
            up = broker_error is None and entry["worker"]["status"] == "up"
            entry["status"] = "up" if up else "down"
    worker = _heartbeat(f"heartbeat:worker:{cost_queue}", max_age)
    if broker_error is not None or worker["status"] != "up":
        status = "down"
    elif any(e.get("status") == "down" for e in queues.values()):
        status = "degraded"
    else:
        status = "up"
    all_totals = metrics.totals() if all_totals is None else all_totals
    finished = all_totals.get("jobs:total", 0)
    depths = [e["depth"] for e in queues.values() if e["depth"] is not None]
    result = {
        "status": status,
        "queueSize": sum(depths) if broker_error is None else None,
        # Started minus finished, from task signals; a worker killed mid-task leaves one behind.
        "processing": int(max(0, all_totals.get("jobs:started", 0) - finished)),
        "completed": int(all_totals.get("jobs:succeeded", 0)),
        "failed": int(all_totals.get("jobs:failed", 0)),
        "broker": broker,
        "worker": worker,
        "queues": queues,
        "lastChecked": iso_now(),
    }
    if broker_error:
        result["error"] = broker_error
    return result


def _interval_seconds(entry: str, default: float) -> float:
    schedule = settings.CELERY_BEAT_SCHEDULE.get(entry, {}).get("schedule", default)
    if isinstance(schedule, int | float):
        return float(schedule)
    if isinstance(schedule, timedelta):
        return schedule.total_seconds()
    return default


def check_scheduler() -> dict:
    sweeps = {}
    for name, key, entry, switch in _SWEEPS:
        if switch and not getattr(settings, switch, True):
            sweeps[name] = {"status": "disabled", "lastSeen": None, "ageSeconds": None}
            continue
        # Three missed runs (at least a minute) before a sweep counts as stuck.
        max_age = max(3 * _interval_seconds(entry, 300.0), 60.0)
        sweeps[name] = _heartbeat(key, max_age)
    states = {s["status"] for s in sweeps.values()} - {"disabled"}
    if "down" in states:
        status = "down"
    elif states <= {"up"}:
        status = "up"
    else:
        status = "unknown"
    return {"status": status, "sweeps": sweeps, "lastChecked": iso_now()}


# --- caches -------------------------------------------------------------------------------


def _instance_count() -> int | None:
    by_status = registry.read("instances_by_status")
    return sum(by_status.values()) if by_status is not None else None


def check_cache(all_totals: dict[str, float]) -> dict:
    works, backend = caching.probe("health")
    if not works:
        status = "down"
    elif backend == "fallback":
        status = "degraded"
    else:
        status = "up"
    hits = all_totals.get("cache:instances:hits", 0)
    misses = all_totals.get("cache:instances:misses", 0)
    states = _instance_count()
    return {
        "status": status,
        "backend": backend,
        "instanceCache": {
            "size": caching.named_cache("instances").size(),
            "hitRatio": round(hits * 100 / (hits + misses), 2) if hits + misses else 0,
        },
        # Instance states are rows in the database, which holds every one of them: nothing to
        # evict, so every lookup finds its state.
        "instanceStatesCache": {"size": states or 0, "hitRatio": 100},
        "totalStates": states or 0,
        "lastChecked": iso_now(),
    }


# --- the report ---------------------------------------------------------------------------


def _safely(check, *args, **kwargs) -> dict:
    # A bug or an unexpected failure inside one check reports that part down; /health answers.
    try:
        return check(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001
        logger.exception("health: %s failed", getattr(check, "__name__", check))
        return {"status": "down", "error": type(exc).__name__, "lastChecked": iso_now()}


def report() -> tuple[int, dict]:
    """(HTTP status, body) for GET /health."""
    database = _safely(check_database)
    redis_info = _safely(check_redis)
    redis_up = redis_info["status"] != "down"
    novita = _safely(check_novita)
    try:
        all_totals = metrics.totals(write=False)
    except Exception:  # noqa: BLE001
        logger.exception("health: counters unavailable")
        all_totals = {}
    job_queue = _safely(check_job_queue, redis_up=redis_up, all_totals=all_totals)
    scheduler = _safely(check_scheduler)
    cache = _safely(check_cache, all_totals)

    services = {
        "novitaApi": novita["status"],
        "jobQueue": job_queue["status"],
        "cache": cache["status"],
        "migrationService": scheduler.get("sweeps", {}).get("migration", {}).get("status", "down"),
        "redis": redis_info["status"],
        "database": database["status"],
    }
    now = iso_now()
    uptime = metrics.uptime_seconds()
    if database["status"] != "up" or not redis_up:
        short = {"status": "unhealthy", "timestamp": now, "services": services, "uptime": uptime}
        return 503, short

    degraded = (
        any(services[name] in ("down", "degraded", "misconfigured") for name in NON_CRITICAL)
        or scheduler["status"] == "down"
    )
    body = {
        "status": "degraded" if degraded else "healthy",
        "timestamp": now,
        "services": services,
        "uptime": uptime,
        "performance": metrics_payloads.performance(all_totals),
        "system": metrics_payloads.system_block(),
        "redis": {
            "available": redis_info["status"] == "up",
            "healthy": redis_info.get("isHealthy", False),
            "cacheManager": {
                "available": cache["status"] != "down",
                "configuration": caching.configuration(),
            },
        },
        "dependencies": {
            "redis": redis_info,
            "novitaApi": novita,
            "jobQueue": job_queue,
            "cache": cache,
            "database": database,
            "scheduler": scheduler,
        },
    }
    return 200, body
