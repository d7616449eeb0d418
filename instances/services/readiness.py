"""Readiness probing off the cost-control path: probe every instance that waits for it at once.

Why not inside the monitor step any more: a probe talks to a service on the client's own
instance, so the client decides how long it takes (a port that trickles, a healthCheckConfig
asking for long timeouts and many retries). Run inside the monitor it held a cost-control
worker, and twenty such instances could hold them all while idle GPUs kept billing. Now the
monitor (cost-control queue) only asks for a probe by setting `probe_due_at`, and keeps polling
upstream and watching the readiness deadline on its usual backoff; the probe sweep (probes
queue) claims due instances with guarded UPDATEs and probes them side by side on a thread pool,
claiming newcomers while earlier rounds still run, so one slow instance delays no other. One
sweep runs at a time (a cache lock), so probing holds one probes-queue worker however many
instances wait, and each sweep ends within two rounds (health_probe.ROUND_SECONDS). Threads only
do network I/O; the database work happens in the task's own thread.

A claim pushes `probe_due_at` out by PROBE_LEASE (longer than a round plus the task's time
limit): a probe worker that dies holds nothing for longer, and two sweeps never probe the same
instance at once. Every outcome is a guarded update on status health_checking, so a stop or a
failure decided meanwhile by the monitor or an API call always wins.
"""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from datetime import timedelta

from django.core.cache import caches
from django.utils import timezone

from ..models import Instance
from ..status import Status
from . import autostop, health_probe, queue
from .transitions import transition, update_fields

logger = logging.getLogger(__name__)

THREADS = 32
# A sweep claims for one round's time and then lets its last rounds finish.
SWEEP_SECONDS = 2 * health_probe.ROUND_SECONDS
# Longer than a sweep and its task's hard time limit: a claim outlives the worker holding it.
PROBE_LEASE = timedelta(seconds=SWEEP_SECONDS + 60)
_LOCK_KEY = "readiness:probe-sweep"
_LOCK_SECONDS = SWEEP_SECONDS + 45


def request_probe(instance: Instance) -> None:
    """Ask for a probe round now unless one is already planned or under way (monitor side),
    and nudge the probe sweep when one is due."""
    now = timezone.now()
    asked = Instance.objects.filter(
        pk=instance.pk, status=Status.HEALTH_CHECKING, probe_due_at__isnull=True
    ).update(probe_due_at=now)
    if asked or (instance.probe_due_at is not None and instance.probe_due_at <= now):
        # A shortcut only: beat's probe sweep finds every due instance anyway.
        queue.send(queue.PROBE_INSTANCES)


def _claim_due(now, limit: int = 64) -> list[Instance]:
    due = list(
        Instance.objects.filter(status=Status.HEALTH_CHECKING, probe_due_at__lte=now)
        .order_by("probe_due_at")
        .values_list("pk", flat=True)[:limit]
    )
    if not due:
        return []
    lease = now + PROBE_LEASE
    Instance.objects.filter(
        pk__in=due, status=Status.HEALTH_CHECKING, probe_due_at__lte=now
    ).update(probe_due_at=lease)
    return list(
        Instance.objects.filter(pk__in=due, probe_due_at=lease).only(
            "id", "status", "port_mappings", "health_check_config", "target_port", "probe_due_at"
        )
    )


def _round(instance: Instance) -> list[health_probe.ProbeResult]:
    return health_probe.probe(
        instance.port_mappings, instance.health_check_config, instance.target_port
    )


def probe_due(*, window: float = health_probe.ROUND_SECONDS) -> int:
    """Probe every instance whose probe is due, side by side; returns how many were probed.

    Keeps claiming newly due instances for `window` seconds while earlier rounds run, so one
    sweep serves every instance: a quick one is picked up within a fraction of a second even
    while slow rounds hold threads, and only one probes-queue worker is busy with probing.
    Sweeps that find another one running leave at once.
    """
    token = uuid.uuid4().hex
    lock = caches["default"]
    if not lock.add(_LOCK_KEY, token, timeout=int(_LOCK_SECONDS)):
        return 0
    probed = 0
    ends = time.monotonic() + window
    try:
        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            running: dict = {}
            while True:
                if time.monotonic() < ends and len(running) < THREADS:
                    for instance in _claim_due(timezone.now(), THREADS - len(running)):
                        running[pool.submit(_round, instance)] = instance
                        probed += 1
                if not running:
                    break
                done, _ = wait(running, timeout=0.25, return_when=FIRST_COMPLETED)
                # Each outcome is applied as its round ends: a quick instance is ready at
                # once, not when the slowest one of the batch gives up.
                for future in done:
                    _finish(running.pop(future), future)
    finally:
        if lock.get(_LOCK_KEY) == token:
            lock.delete(_LOCK_KEY)
    return probed


def _finish(instance: Instance, future) -> None:
    try:
        results = future.result()
    except Exception:  # noqa: BLE001 - a bug in one probe must not sink the others
        logger.exception("readiness: probing %s failed", instance.id)
        _probe_again_later(instance)
        return
    _apply(instance, results)


def _apply(instance: Instance, results: list[health_probe.ProbeResult]) -> None:
    now = timezone.now()
    if all(r.up for r in results):
        ports = ", ".join(f"{r.port}/{r.kind} {r.detail}" for r in results) or "no ports"
        ready = transition(
            instance.id,
            expected={Status.HEALTH_CHECKING},
            to_status=Status.READY,
            source="monitor",
            reason=f"all probed ports answer ({ports})",
            ready_at=now,
            next_poll_at=None,
            probe_due_at=None,
            auto_stop_warned_at=None,
        )
        if ready is not None:
            deadline = ready.auto_stop_deadline()
            update_fields(ready.id, expected_status=Status.READY, auto_stop_at=deadline)
            autostop.schedule_wakeup(deadline)
        return
    down = ", ".join(f"{r.port}/{r.kind} {r.detail}" for r in results if not r.up)
    logger.info("readiness: %s not ready yet (%s)", instance.id, down)
    _probe_again_later(instance)


def _probe_again_later(instance: Instance) -> None:
    now = timezone.now()
    delay = (instance.health_check_config or {}).get(
        "retryDelayMs", health_probe.DEFAULT_CONFIG["retryDelayMs"]
    )
    update_fields(
        instance.id,
        expected_status=Status.HEALTH_CHECKING,
        probe_due_at=now + timedelta(milliseconds=delay),
    )
