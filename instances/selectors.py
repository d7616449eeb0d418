"""Reads for the operator dashboard (HackSoft style: selectors read, services write).

Nothing here changes state; every figure is a bounded number of queries however large the fleet.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Count, Q, Sum
from django.utils import timezone

from .models import PRICE_UNIT, Instance, InstanceEvent, SweepRun, WebhookDelivery
from .novita.client import get_client
from .status import BILLED, Desired, Status

logger = logging.getLogger(__name__)

SAVINGS_WINDOW = timedelta(days=30)


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
