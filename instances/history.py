"""Reads of an instance's audit trail (InstanceEvent): its history page, why it has its current
status, and how long it has been billed.

Billed time is counted from the trail, so every path that changes a status (API, monitor,
auto-stop sweep, reconciler, admin) is counted the same way, with nothing extra to keep in step:
it is the time spent in a BILLED status (starting, running, health_checking, ready), from each
change into one of them to the next change out of them, up to now while the instance is still in
one. A status change is an event whose from_status differs from its to_status (the create event
counts: "" -> creating); events that only record a decision are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from . import lookups
from .models import Instance, InstanceEvent
from .status import BILLED


@dataclass(frozen=True)
class Billing:
    """What the detail shape adds from the trail (keyword values for InstanceDetailOut)."""

    status_reason: str
    billed_seconds: int
    cost_so_far: float | None

    def as_values(self) -> dict:
        return {
            "status_reason": self.status_reason,
            "billed_seconds": self.billed_seconds,
            "cost_so_far": self.cost_so_far,
        }


def status_changes(instance_id: str) -> list[tuple[datetime, str, str]]:
    """(when, new status, reason) of each of the instance's status changes, oldest first."""
    # Every poll reads this: its SQL is written once (instances/lookups.py).
    return lookups.status_changes(instance_id)


def billed_seconds(changes: list[tuple[datetime, str]], now: datetime) -> float:
    """Seconds spent in BILLED statuses, given (when, new status) changes oldest first."""
    total, since = 0.0, None
    for at, to_status in changes:
        if to_status in BILLED and since is None:
            since = at
        elif to_status not in BILLED and since is not None:
            total += max((at - since).total_seconds(), 0.0)
            since = None
    if since is not None:
        total += max((now - since).total_seconds(), 0.0)
    return total


@dataclass(frozen=True)
class _Trail:
    """What billing needs from the trail: billed seconds of closed stretches, the start of the
    stretch still open (None when not in a BILLED status) and the last change's reason."""

    closed_seconds: float
    open_since: datetime | None
    status_reason: str


# Every status change goes through services/transitions.py, which sets updated_at in the same
# transaction as the event, so (updated_at, status) names one state of an instance's trail: a
# poll of an unchanged instance reuses what it read last time instead of reading the whole
# history again (a second query per poll, growing with the instance's age). A write changes
# the key, so the very next poll reads the trail afresh.
_TRAILS: dict[str, tuple[tuple, _Trail]] = {}
_TRAILS_MAX = 10_000


def _trail(instance: Instance) -> _Trail:
    key = (instance.updated_at, instance.status)
    found = _TRAILS.get(instance.id)
    if found is not None and found[0] == key:
        return found[1]
    rows = status_changes(instance.id)
    changes = [(at, to) for at, to, _reason in rows]
    open_since = None
    for at, to_status in changes:
        if to_status in BILLED and open_since is None:
            open_since = at
        elif to_status not in BILLED:
            open_since = None
    # Counted up to the open stretch's start, where that stretch adds nothing: closed ones only.
    closed = billed_seconds(changes, open_since or timezone.now())
    trail = _Trail(closed, open_since, rows[-1][2] if rows else "")
    if len(_TRAILS) >= _TRAILS_MAX:
        _TRAILS.clear()
    _TRAILS[instance.id] = (key, trail)
    return trail


def billing(instance: Instance, *, now: datetime | None = None) -> Billing:
    """Status reason, billed time and estimated cost of one instance (at most one query)."""
    now = now or timezone.now()
    trail = _trail(instance)
    seconds = trail.closed_seconds
    if trail.open_since is not None:
        seconds += max((now - trail.open_since).total_seconds(), 0.0)
    price = instance.price_per_hour_usd
    return Billing(
        status_reason=trail.status_reason,
        billed_seconds=int(seconds),
        cost_so_far=None if price is None else round(seconds / 3600 * price, 6),
    )


def events_page(instance_id: str, *, page: int, page_size: int) -> tuple[list, int]:
    """One page of the instance's events, newest first, and how many there are in all."""
    events = InstanceEvent.objects.filter(instance_id=instance_id).order_by("-created_at", "-id")
    start = (page - 1) * page_size
    return list(events[start : start + page_size]), events.count()
