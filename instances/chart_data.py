"""Figures over time for the dashboard's charts (reads only)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.db.models import Count, Q
from django.db.models.functions import TruncDate
from django.utils import timezone

from .models import PRICE_UNIT, Instance, InstanceEvent, WebhookDelivery
from .status import BILLED, Desired, Status

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


def _day_start(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=timezone.get_current_timezone())


def _spread(start: datetime, end: datetime, first_day: date, per_day: list[float], scale=1.0):
    """Add the hours of [start, end) to the days they fall on (times `scale`)."""
    while start < end:
        day = timezone.localtime(start).date()
        next_midnight = _day_start(day + timedelta(days=1))
        chunk_end = min(end, next_midnight)
        index = (day - first_day).days
        if 0 <= index < len(per_day):
            per_day[index] += (chunk_end - start).total_seconds() / 3600 * scale
        start = chunk_end


def saving_spans(since: datetime, now: datetime) -> list[tuple[datetime, datetime, int | None]]:
    """(stopped at, end, price) for each auto-stop since `since`: the time the instance would
    otherwise have kept running, until it was next started or terminated, or until now."""
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
    ends: dict[str, list] = defaultdict(list)
    for instance_id, at in (
        InstanceEvent.objects.filter(
            instance_id__in={s[0] for s in stops}, created_at__gt=stops[0][1]
        )
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
    """(status, start, end, price) for every instance's time in each status within the window.

    Built from the audit trail: each status change is an event, so an instance's status at any
    moment is the target of its last change before it. Two queries whatever the fleet size.
    """
    timelines: dict[str, list] = defaultdict(list)
    for instance_id, at, from_status, to_status in (
        InstanceEvent.objects.filter(created_at__gte=since, created_at__lt=now)
        .exclude(to_status="")
        .order_by("instance_id", "created_at", "pk")
        .values_list("instance_id", "created_at", "from_status", "to_status")
        .iterator(chunk_size=2000)
    ):
        timelines[instance_id].append((at, from_status, to_status))
    instances = (
        Instance.objects.filter(created_at__lt=now)
        .filter(Q(pk__in=list(timelines)) | ~Q(status=Status.TERMINATED))
        .values_list("pk", "status", "created_at", "price_per_hour")
        .iterator(chunk_size=2000)
    )
    for pk, status, created_at, price in instances:
        changes = timelines.get(pk, [])
        start = max(since, created_at)
        # Before its first change in the window the instance was in that change's origin state
        # (none when the change is its creation); with no change, in its current state all along.
        current = changes[0][1] if changes else status
        for at, _from, to in changes:
            if current and at > start:
                yield current, start, at, price
            start, current = max(start, at), to
        if current and now > start:
            yield current, start, now, price


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
            hours_by_status[status] += (end - start).total_seconds() / 3600
        if status in BILLED and price:
            _spread(start, end, first_day, spend, price / PRICE_UNIT)

    saved = [0.0] * days
    for start, end, price in saving_spans(since, now):
        if price:
            _spread(start, end, first_day, saved, price / PRICE_UNIT)

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
