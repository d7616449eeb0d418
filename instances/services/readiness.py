"""Readiness probing off the cost-control path: probe every instance that waits for it at once.

Why not inside the monitor step any more: a probe talks to a service on the client's own
instance, so the client decides how long it takes (a port that trickles, a healthCheckConfig
asking for long timeouts and many retries). Run inside the monitor it held a cost-control
worker, and twenty such instances could hold them all while idle GPUs kept billing. Now the
monitor (cost-control queue) only asks for a probe by setting `probe_due_at`, and keeps polling
upstream and watching the readiness deadline on its usual backoff; the probe sweep (probes
queue) claims every due instance with one guarded UPDATE and probes them side by side on a
thread pool, so one slow instance delays no other: a sweep lasts about one probe round
(health_probe.ROUND_SECONDS) however many instances it holds. Threads only do network I/O;
the database work happens before and after, in the task's own thread.

A claim pushes `probe_due_at` out by PROBE_LEASE (longer than a round plus the task's time
limit): a probe worker that dies holds nothing for longer, and two sweeps never probe the same
instance at once. Every outcome is a guarded update on status health_checking, so a stop or a
failure decided meanwhile by the monitor or an API call always wins.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import timedelta

from django.utils import timezone

from ..models import Instance
from ..status import Status
from . import health_probe, queue
from .transitions import transition, update_fields

logger = logging.getLogger(__name__)

PROBE_LEASE = timedelta(seconds=health_probe.ROUND_SECONDS + 60)
BATCH = 64
THREADS = 32


def request_probe(instance: Instance) -> None:
    """Ask for a probe round now unless one is already planned or under way (monitor side),
    and nudge the probe sweep when one is due."""
    now = timezone.now()
    asked = Instance.objects.filter(
        pk=instance.pk, status=Status.HEALTH_CHECKING, probe_due_at__isnull=True
    ).update(probe_due_at=now)
    if asked or (instance.probe_due_at is not None and instance.probe_due_at <= now):
        from .. import tasks

        # A shortcut only: beat's probe sweep finds every due instance anyway.
        queue.send(tasks.probe_instances)


def _claim_due(now) -> list[Instance]:
    due = list(
        Instance.objects.filter(status=Status.HEALTH_CHECKING, probe_due_at__lte=now)
        .order_by("probe_due_at")
        .values_list("pk", flat=True)[:BATCH]
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


def probe_due() -> int:
    """Probe every instance whose probe is due (side by side); returns how many were probed."""
    claimed = _claim_due(timezone.now())
    if not claimed:
        return 0
    with ThreadPoolExecutor(max_workers=min(THREADS, len(claimed))) as pool:
        rounds = {pool.submit(_round, instance): instance for instance in claimed}
        # Each outcome is applied as its round ends: a quick instance is ready at once, not
        # when the slowest one of the batch gives up.
        for done in as_completed(rounds):
            instance = rounds[done]
            try:
                results = done.result()
            except Exception:  # noqa: BLE001 - a bug in one probe must not sink the batch
                logger.exception("readiness: probing %s failed", instance.id)
                _probe_again_later(instance)
                continue
            _apply(instance, results)
    return len(claimed)


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
            from . import autostop

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
