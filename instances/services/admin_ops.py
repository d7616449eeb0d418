"""What operators do in the admin that the API does not: change auto-stop settings, mark an
instance used, sync it with Novita on demand; and the figures of the operator dashboard.

Writes follow the same rules as lifecycle.py: guarded updates, an event for every decision,
no transaction open while Novita is asked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Count, Q, Sum
from django.utils import timezone

from ..models import PRICE_UNIT, Instance, InstanceEvent, SweepRun, WebhookDelivery
from ..novita import errors as upstream
from ..novita.client import get_client
from ..status import AUTO_STOP_CANDIDATES, BILLED, Desired, Status
from . import autostop, lifecycle
from .transitions import NOT_FOUND_FOR_ID, mark_gone, note, update_fields

logger = logging.getLogger(__name__)

SOURCE = InstanceEvent.Source.ADMIN
# A concurrent status change makes a guarded write miss; re-read and try again a few times.
_WRITE_ATTEMPTS = 3

SAVINGS_WINDOW = timedelta(days=30)


class AdminOpError(Exception):
    """An operator request that could not be done; the message says why."""


def _deadline(instance: Instance):
    # Only instances that can be auto-stopped carry a deadline (lifecycle clears it otherwise).
    if instance.status not in AUTO_STOP_CANDIDATES:
        return None
    return lifecycle.auto_stop_deadline(instance)


def set_auto_stop(
    instance: Instance, *, enabled: bool, minutes: int | None, actor: str
) -> Instance:
    """Change an instance's auto-stop settings and move its deadline accordingly."""
    for _ in range(_WRITE_ATTEMPTS):
        current = Instance.objects.get(pk=instance.pk)
        current.auto_stop_enabled = enabled
        current.auto_stop_minutes = minutes or None
        deadline = _deadline(current)
        moved = deadline != current.auto_stop_at
        fields = {
            "auto_stop_enabled": enabled,
            "auto_stop_minutes": minutes or None,
            "auto_stop_at": deadline,
        }
        if moved:
            # A warning sent for the old deadline says nothing about the new one.
            fields["auto_stop_warned_at"] = None
        if update_fields(current.id, expected_status=current.status, **fields):
            if moved:
                autostop.schedule_wakeup(deadline)
            break
    else:
        raise AdminOpError("its status kept changing; try again")
    if not enabled:
        reason = "auto-stop disabled (exempt)"
    else:
        threshold = f"{minutes} min" if minutes else "the default threshold"
        reason = f"auto-stop enabled after {threshold} idle"
        if deadline:
            reason += f"; next stop at {deadline:%Y-%m-%d %H:%M:%S} UTC"
    note(current, source=SOURCE, reason=reason, actor=actor)
    return Instance.objects.get(pk=instance.pk)


def mark_used(instance: Instance, *, actor: str) -> Instance:
    """An operator's heartbeat: last used now, deadline pushed out, warning cleared.

    The same guarded write as a client's heartbeat (autostop.record_heartbeat), so a slow click
    never rewinds a newer heartbeat; plus an event, since an operator did it.
    """
    used_at = timezone.now()
    _, stored = autostop.record_heartbeat(instance_id=instance.pk, used_at=used_at)
    if stored != used_at:
        raise AdminOpError("a newer heartbeat is already recorded")
    current = Instance.objects.get(pk=instance.pk)
    reason = "marked as used by an operator"
    if current.auto_stop_at and current.status in AUTO_STOP_CANDIDATES:
        reason += f"; next auto-stop at {current.auto_stop_at:%Y-%m-%d %H:%M:%S} UTC"
    note(current, source=SOURCE, reason=reason, actor=actor)
    return current


def sync_now(instance: Instance, *, actor: str) -> Instance:
    """Ask Novita about this instance now and fold the answer into our record."""
    if not instance.novita_instance_id:
        raise AdminOpError("not created upstream yet; nothing to sync")
    try:
        remote = get_client().get_instance(instance.novita_instance_id)
    except upstream.NovitaNotFoundError:
        mark_gone(instance, source=SOURCE, evidence=NOT_FOUND_FOR_ID, actor=actor)
        return Instance.objects.get(pk=instance.pk)
    note(
        instance,
        source=SOURCE,
        reason=f"operator sync: upstream says {remote.status or 'nothing'}",
        actor=actor,
    )
    lifecycle.apply_upstream(instance, remote, source=SOURCE)
    return Instance.objects.get(pk=instance.pk)


# --- dashboard figures (reads only) ---------------------------------------------------------


@dataclass
class Dashboard:
    by_status: list[tuple[str, str, int]]
    total: int
    idle_overdue: list[Instance]
    idle_overdue_count: int
    auto_stop_runs: list[SweepRun]
    webhook_failures: list[WebhookDelivery]
    webhook_failures_24h: int
    webhook_failures_total: int
    breaker_state: str
    hourly_spend_usd: float
    billed_count: int
    unpriced_count: int
    saved_usd: float
    saved_hours: float
    saved_stops: int
    saved_window_days: int


def breaker_state() -> str:
    try:
        return str(get_client().breaker_state)
    except Exception as exc:  # the dashboard must render even when Redis or config is broken
        logger.warning("dashboard: breaker state unavailable: %s", exc)
        return "unknown"


def auto_stop_savings(now=None, window: timedelta = SAVINGS_WINDOW) -> tuple[float, float, int]:
    """Estimated spend auto-stop saved within `window`: (USD, GPU-instance hours, stops).

    Estimate: without the stop, the instance would have kept running at its price until it was
    next started or terminated (whichever came first), or until now. Only the part inside the
    window counts; instances without a known price count zero.
    """
    now = now or timezone.now()
    since = now - window
    stops = list(
        InstanceEvent.objects.filter(
            source=InstanceEvent.Source.AUTO_STOP,
            to_status=Status.STOPPING,
            created_at__gte=since,
        )
        .order_by("created_at")
        .values_list("instance_id", "created_at", "instance__price_per_hour")
    )
    if not stops:
        return 0.0, 0.0, 0
    ids = {s[0] for s in stops}
    # What ends a saving: the instance was started again, or terminated (no longer billable).
    ends: dict[str, list] = {}
    for instance_id, at in (
        InstanceEvent.objects.filter(instance_id__in=ids, created_at__gt=stops[0][1])
        .filter(
            Q(to_status__in=[Status.STARTING, Status.TERMINATED])
            | Q(desired_status=Desired.TERMINATED)
        )
        .order_by("created_at")
        .values_list("instance_id", "created_at")
    ):
        ends.setdefault(instance_id, []).append(at)
    usd = hours = 0.0
    for instance_id, stopped_at, price in stops:
        end = next((at for at in ends.get(instance_id, []) if at > stopped_at), now)
        span = max((end - stopped_at).total_seconds(), 0.0) / 3600
        hours += span
        usd += span * (price or 0) / PRICE_UNIT
    return usd, hours, len(stops)


def summary_lines(summary) -> list[str]:
    """A sweep run's summary as short lines ("inst_x (name): reason"), whatever its shape."""
    items = summary
    if isinstance(summary, dict):
        items = summary.get("stopped") or summary.get("instances") or [summary]
    if not isinstance(items, list):
        items = [items]
    lines = []
    omitted = 0
    for item in items:
        if isinstance(item, dict) and "omitted" in item:
            omitted += int(item["omitted"] or 0)
            continue
        if len(lines) == 20:
            omitted += 1
            continue
        if isinstance(item, dict):
            # autostop.sweep writes {"instanceId", "action", "reason"[, "error"]}.
            ident = item.get("instanceId") or item.get("instance_id") or item.get("id") or ""
            head = " ".join(str(p) for p in (ident, item.get("action")) if p)
            tail = "; ".join(str(item[k]) for k in ("reason", "error") if item.get(k))
            lines.append(": ".join(p for p in (head, tail) if p) or str(item))
        else:
            lines.append(str(item))
    if omitted:
        lines.append(f"… and {omitted} more")
    return lines


def dashboard(now=None) -> Dashboard:
    now = now or timezone.now()
    counts = {
        row["status"]: row["n"]
        for row in Instance.objects.order_by().values("status").annotate(n=Count("pk"))
    }
    by_status = [(value, label, counts.get(value, 0)) for value, label in Status.choices]

    overdue = Instance.objects.filter(
        status__in=[Status.READY, Status.RUNNING], auto_stop_enabled=True, auto_stop_at__lt=now
    ).order_by("auto_stop_at")

    failed = WebhookDelivery.objects.filter(state=WebhookDelivery.State.FAILED)
    failure_counts = failed.aggregate(
        total=Count("pk"), recent=Count("pk", filter=Q(created_at__gte=now - timedelta(hours=24)))
    )

    billed = Instance.objects.filter(status__in=BILLED).aggregate(
        spend=Sum("price_per_hour"),
        n=Count("pk"),
        unpriced=Count("pk", filter=Q(price_per_hour__isnull=True)),
    )
    saved_usd, saved_hours, saved_stops = auto_stop_savings(now)
    runs = list(SweepRun.objects.filter(kind=SweepRun.Kind.AUTO_STOP).order_by("-started_at")[:10])
    for run in runs:
        run.lines = summary_lines(run.summary)

    return Dashboard(
        by_status=by_status,
        total=sum(counts.values()),
        idle_overdue=list(overdue[:50]),
        idle_overdue_count=overdue.count(),
        auto_stop_runs=runs,
        webhook_failures=list(failed.select_related("instance").order_by("-created_at")[:20]),
        webhook_failures_24h=failure_counts["recent"],
        webhook_failures_total=failure_counts["total"],
        breaker_state=breaker_state(),
        hourly_spend_usd=(billed["spend"] or 0) / PRICE_UNIT,
        billed_count=billed["n"],
        unpriced_count=billed["unpriced"],
        saved_usd=saved_usd,
        saved_hours=saved_hours,
        saved_stops=saved_stops,
        saved_window_days=SAVINGS_WINDOW.days,
    )
