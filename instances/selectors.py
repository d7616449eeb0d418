"""Reads for the operator dashboard (HackSoft style: selectors read, services write).

Nothing here changes state; every figure is a bounded number of queries however large the fleet.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from itertools import groupby
from operator import itemgetter

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from ops.caching import named_cache

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

    Instances without a known price count zero (see saving_spans for the estimate).
    """
    now = now or timezone.now()
    spans = saving_spans(now - window, now)
    usd = hours = 0.0
    for start, end, price in spans:
        span = (end - start).total_seconds() / 3600
        hours += span
        usd += span * (price or 0) / PRICE_UNIT
    return usd, hours, len(spans)


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

    # Past their deadline among the instances the auto-stop sweep considers (its own rule).
    overdue = (
        Instance.objects.auto_stop_applies().filter(auto_stop_at__lt=now).order_by("auto_stop_at")
    )

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


# --- charts: figures per day over the last CHART_DAYS days -------------------------------

CHART_DAYS = 30


@dataclass
class Charts:
    """Per-day series (oldest day first, today last) and per-status totals over `days`."""

    days: list[date]
    spend_usd: list[float]
    saved_usd: list[float]
    auto_stops: list[int]
    webhook_failures: list[int]
    hours_by_status: dict[str, float]


DAY_SECONDS = 86400


def _day_start(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=timezone.get_current_timezone())


def _spread(start: float, end: float, per_day: list[float], scale: float) -> None:
    """Add the hours of [start, end) (seconds since the first day's midnight) to the days they
    fall on, times `scale`. Plain arithmetic: the hot loop of the charts at fleet scale."""
    start = max(start, 0.0)
    while start < end:
        index = int(start // DAY_SECONDS)
        if index >= len(per_day):
            return
        chunk_end = min(end, (index + 1) * DAY_SECONDS)
        per_day[index] += (chunk_end - start) / 3600 * scale
        start = chunk_end


def saving_spans(since: datetime, now: datetime) -> list[tuple[datetime, datetime, int | None]]:
    """(stopped at, end, price) for each auto-stop since `since`.

    Estimate: without the stop, the instance would have kept running at its price until it was
    next started or terminated (whichever came first), or until now.
    """
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
        return []
    # What ends a saving: the instance was started again, or terminated (no longer billable).
    stopped_ids = InstanceEvent.objects.filter(
        source=InstanceEvent.Source.AUTO_STOP, to_status=Status.STOPPING, created_at__gte=since
    ).values("instance_id")
    ends: dict[str, list] = defaultdict(list)
    for instance_id, at in (
        InstanceEvent.objects.filter(instance_id__in=stopped_ids, created_at__gt=stops[0][1])
        .filter(
            Q(to_status__in=[Status.STARTING, Status.TERMINATED])
            | Q(desired_status=Desired.TERMINATED)
        )
        .order_by("created_at")
        .values_list("instance_id", "created_at")
    ):
        ends[instance_id].append(at)
    spans = []
    for instance_id, stopped_at, price in stops:
        end = next((at for at in ends[instance_id] if at > stopped_at), now)
        spans.append((stopped_at, max(end, stopped_at), price))
    return spans


def _status_segments(since: datetime, now: datetime):
    """(status, start, end, price) for every instance's time in each status within the window,
    start and end in seconds since `since`.

    Built from the audit trail: each status change is an event, so an instance's status at any
    moment is the target of its last change before it. Two queries whatever the fleet size; the
    events stream by instance, so only one instance's changes are held at a time.
    """
    changed = InstanceEvent.objects.filter(created_at__gte=since, created_at__lt=now).exclude(
        to_status=""
    )
    end = (now - since).total_seconds()
    instances = {
        pk: (status, max(0.0, (created_at - since).total_seconds()), price)
        for pk, status, created_at, price in Instance.objects.filter(created_at__lt=now)
        .filter(Q(pk__in=changed.values("instance_id")) | ~Q(status=Status.TERMINATED))
        .values_list("pk", "status", "created_at", "price_per_hour")
        .iterator(chunk_size=5000)
    }
    events = (
        changed.order_by("instance_id", "created_at", "pk")
        .values_list("instance_id", "created_at", "from_status", "to_status")
        .iterator(chunk_size=5000)
    )
    for pk, changes in groupby(events, key=itemgetter(0)):
        _status, start, price = instances.pop(pk, (None, 0.0, None))
        current = None
        for index, (_pk, at, from_status, to_status) in enumerate(changes):
            at = (at - since).total_seconds()
            if index == 0:
                # Before its first change in the window the instance was in that change's
                # origin state (none when the change is its creation).
                current = from_status
            if current and at > start:
                yield current, start, at, price
            start, current = max(start, at), to_status
        if current and end > start:
            yield current, start, end, price
    # No change in the window: in its current state all along.
    for status, start, price in instances.values():
        if end > start:
            yield status, start, end, price


def charts(now: datetime | None = None, days: int = CHART_DAYS) -> Charts:
    now = now or timezone.now()
    today = timezone.localtime(now).date()
    first_day = today - timedelta(days=days - 1)
    since = _day_start(first_day)
    day_list = [first_day + timedelta(days=i) for i in range(days)]

    spend = [0.0] * days
    hours_by_status: dict[str, float] = defaultdict(float)
    for status, start, end, price in _status_segments(since, now):
        if status != Status.TERMINATED:
            hours_by_status[status] += (end - start) / 3600
        if status in BILLED and price:
            _spread(start, end, spend, price / PRICE_UNIT)

    saved = [0.0] * days
    for start, end, price in saving_spans(since, now):
        if price:
            offset = (start - since).total_seconds()
            _spread(offset, offset + (end - start).total_seconds(), saved, price / PRICE_UNIT)

    def per_day(queryset, field: str) -> list[int]:
        counts = {
            row["day"]: row["n"]
            for row in queryset.filter(**{f"{field}__gte": since})
            .annotate(day=TruncDate(field))
            .order_by()
            .values("day")
            .annotate(n=Count("pk"))
        }
        return [counts.get(day, 0) for day in day_list]

    return Charts(
        days=day_list,
        spend_usd=spend,
        saved_usd=saved,
        auto_stops=per_day(
            InstanceEvent.objects.filter(
                source=InstanceEvent.Source.AUTO_STOP, to_status=Status.STOPPING
            ),
            "created_at",
        ),
        webhook_failures=per_day(
            WebhookDelivery.objects.filter(state=WebhookDelivery.State.FAILED), "created_at"
        ),
        hours_by_status={
            value: round(hours_by_status[value], 2)
            for value, _ in Status.choices
            if hours_by_status.get(value)
        },
    )


CHARTS_CACHE_SECONDS = 60


def dashboard_charts() -> Charts:
    """charts(), recomputed at most once a minute: at fleet scale it reads a month of events."""
    return named_cache("instances").get_or_set(
        "dashboard-charts", charts, timeout=CHARTS_CACHE_SECONDS
    )
