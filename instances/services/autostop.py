"""Auto-stop: stop every idle GPU on time, never an active one, and record why.

An instance is idle when it is ready, running or health_checking and its threshold
(`auto_stop_minutes`, else AUTO_STOP_INACTIVITY_THRESHOLD_MINUTES) has passed since the later of its
last heartbeat and the moment it became ready (the rule lives on the model: Instance.idle_since and
auto_stop_deadline(), with twins in models.py for the plain rows read here). Without a ready time
the signal is unknown, and unknown counts as active. The deadline (`auto_stop_at`) is stored
whenever one of those inputs changes, so the sweep finds due instances with one indexed query
instead of computing idle times for the whole fleet; each row is still re-checked in Python before
it is stopped.

The sweep's database work is a fixed number of statements however many instances it examines or
stops: one SELECT, then transitions.transition_many: one guarded UPDATE that claims every idle
instance at once (two overlapping sweeps cannot both win a row), one statement for the audit events,
and a bulk insert of webhooks for the instances that have a URL. Upstream stop calls are necessarily
one per instance; they run on a small thread pool after the claim has committed, so no transaction
is held open while Novita answers.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Case, DateTimeField, F, Q, Value, When
from django.utils import timezone

from novita_gateway.errors import InstanceNotFound
from novita_gateway.timeutil import iso
from ops import counters

from ..models import (
    Instance,
    InstanceEvent,
    SweepRun,
    auto_stop_threshold,
    idle_deadline,
    idle_since,
    new_operation_id,
)
from ..novita import errors as upstream
from ..novita.client import get_client
from ..status import AUTO_STOP_CANDIDATES, Desired, Status
from . import queue, webhooks
from .polling import CLAIM_LEASE, FIRST_POLL_DELAY
from .sweeps import prune_old_runs
from .transitions import record_events, transition_many

logger = logging.getLogger(__name__)

# Names other parts read (/health, /metrics, the stats endpoint): keep them stable.
HEARTBEAT_KEY = "heartbeat:auto-stop"
STOPPED_COUNTER = "autostop:stopped"
FAILED_COUNTER = "autostop:failed"
WARNED_COUNTER = "autostop:warned"

# A client clock slightly ahead of ours is tolerated (and clamped to now); further is an error.
CLOCK_SKEW_ALLOWANCE = timedelta(seconds=60)
UPSTREAM_WORKERS = 8
SOURCE = InstanceEvent.Source.AUTO_STOP
# SQLite accepts 32766 bound parameters per statement; stay well below it.
_ID_CHUNK = 5000
_EARLIEST_DEADLINE = datetime(2000, 1, 1, tzinfo=UTC)
_SUMMARY_LIMIT = 1000
# Beat's sweep runs every check interval; on its own an instance could run idle for up to that
# long past its deadline. So each sweep also books one extra sweep for the next deadline, at
# most this often, and the worst case becomes this gap plus the sweep's own time.
WAKEUP_MIN_GAP = timedelta(seconds=10)
WAKEUP_KEY = "autostop:wakeup-at"


def _minutes(value: float) -> str:
    return f"{value:.0f}" if abs(value - round(value)) < 0.05 else f"{value:.1f}"


def _number(value: float):
    return int(value) if float(value).is_integer() else value


# --- heartbeats -------------------------------------------------------------------------------


def record_heartbeat(
    *, instance_id: str | None = None, name: str | None = None, used_at: datetime | None = None
) -> tuple[str, datetime]:
    """Note that an instance was used at `used_at` (default now) and postpone its stop.

    Two queries: a read, and an UPDATE guarded on "newer than what is stored", so heartbeats
    arriving out of order never move last_used_at backwards. Returns (instance id, the stored
    last-used time).
    """
    now = timezone.now()
    # A client clock a little ahead of ours must not buy extra idle time.
    used_at = min(used_at or now, now)
    rows = (
        Instance.objects.filter(pk=instance_id)
        if instance_id is not None
        else Instance.objects.named(name or "")
    )
    row = rows.values(
        "id", "status", "last_used_at", "ready_at", "auto_stop_enabled", "auto_stop_minutes"
    ).first()
    if row is None:
        if instance_id is not None:
            details = f"Instance with ID '{instance_id[:100]}' does not exist"
        else:
            details = f"Instance with name '{(name or '')[:100]}' does not exist"
        raise InstanceNotFound(details=details)
    if row["last_used_at"] is not None and row["last_used_at"] >= used_at:
        return row["id"], row["last_used_at"]

    # Cleared so that, if the instance goes idle again later, it gets a fresh warning.
    fields = {"last_used_at": used_at, "auto_stop_warned_at": None, "updated_at": now}
    deadline = idle_deadline(used_at, row["ready_at"], row["auto_stop_minutes"])
    if row["auto_stop_enabled"] and deadline is not None:
        # Decided inside the UPDATE: an instance stopped since our read keeps no deadline.
        fields["auto_stop_at"] = Case(
            When(status__in=AUTO_STOP_CANDIDATES, then=Value(deadline)),
            default=F("auto_stop_at"),
            output_field=DateTimeField(),
        )
    updated = (
        Instance.objects.filter(pk=row["id"])
        .filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=used_at))
        .update(**fields)
    )
    if not updated:
        # A newer heartbeat landed between our read and write; it stands.
        stored = (
            Instance.objects.filter(pk=row["id"]).values_list("last_used_at", flat=True).first()
        )
        return row["id"], stored or used_at
    return row["id"], used_at


# --- the sweep --------------------------------------------------------------------------------


@dataclass
class Candidate:
    instance_id: str
    name: str
    status: str
    idle_minutes: float
    threshold_minutes: float
    last_used_at: datetime | None
    ready_at: datetime
    reason: str
    action: str = "wouldStop"

    def as_api(self) -> dict:
        return {
            "instanceId": self.instance_id,
            "name": self.name,
            "idleMinutes": round(self.idle_minutes, 1),
            "thresholdMinutes": _number(self.threshold_minutes),
            "reason": self.reason,
            "action": self.action,
        }


@dataclass
class SweepResult:
    now: datetime
    dry_run: bool
    enabled: bool = True
    examined: int = 0
    candidates: list[Candidate] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    warned: list[str] = field(default_factory=list)
    # Selecting + verifying + claiming (database only), the upstream phase, the whole run.
    decision_seconds: float = 0.0
    upstream_seconds: float = 0.0
    duration_seconds: float = 0.0
    # From the start of the sweep until the last upstream stop call returned.
    last_stop_call_seconds: float = 0.0
    run_id: int | None = None


_DUE_FIELDS = (
    "id",
    "name",
    "status",
    "last_used_at",
    "ready_at",
    "auto_stop_minutes",
    "auto_stop_at",
)


def _select_due(now) -> list[dict]:
    """The candidate query: one statement, each half served by the (status, auto_stop_at) index.

    The second half takes ready rows with no stored deadline (written before one was computed)
    so they are judged too, and repaired if they are not idle.
    """
    base = Instance.objects.auto_stop_applies().order_by().values(*_DUE_FIELDS)
    # The lower bound changes no result; it keeps SQLite's planner on the index once ANALYZE
    # has seen that nearly every row shares one status (a one-sided range then looks wide).
    due = base.filter(auto_stop_at__gt=_EARLIEST_DEADLINE, auto_stop_at__lte=now)
    unset = base.filter(auto_stop_at__isnull=True, ready_at__isnull=False)
    return list(due.union(unset, all=True))


def _judge(rows: list[dict], now) -> tuple[list[Candidate], list[tuple]]:
    """Split due rows into idle candidates and stale deadlines (not idle after all)."""
    idle, stale = [], []
    for row in rows:
        since = idle_since(row["last_used_at"], row["ready_at"])
        if since is None:
            continue
        threshold = auto_stop_threshold(row["auto_stop_minutes"])
        idle_minutes = (now - since).total_seconds() / 60
        if idle_minutes < threshold:
            # E.g. the default threshold was raised after the deadline was stored.
            stale.append((row["id"], row["auto_stop_at"], since + timedelta(minutes=threshold)))
            continue
        if row["last_used_at"] is not None:
            last = f"last used {iso(row['last_used_at'])}"
        else:
            last = f"never used since ready at {iso(row['ready_at'])}"
        reason = f"idle {_minutes(idle_minutes)} min > {_minutes(threshold)} min threshold, {last}"
        idle.append(
            Candidate(
                instance_id=row["id"],
                name=row["name"],
                status=row["status"],
                idle_minutes=idle_minutes,
                threshold_minutes=threshold,
                last_used_at=row["last_used_at"],
                ready_at=row["ready_at"],
                reason=reason,
            )
        )
    return idle, stale


def _repair(stale: list[tuple]) -> None:
    # Rare (a changed default threshold, rows from before deadlines existed): one guarded
    # UPDATE each, so a heartbeat that moved the deadline meanwhile is not overwritten. A warning
    # sent for the old deadline named the wrong time: cleared, so the new one is warned of too.
    for pk, stored, deadline in stale:
        query = Instance.objects.filter(pk=pk, status__in=AUTO_STOP_CANDIDATES)
        if stored is None:
            query = query.filter(auto_stop_at__isnull=True)
        else:
            query = query.filter(auto_stop_at=stored)
        query.update(auto_stop_at=deadline, auto_stop_warned_at=None)


def _chunks(items: list, size: int = _ID_CHUNK):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _claim(candidates: list[Candidate], now, *, actor: str) -> tuple[str, list[Instance]]:
    """Take every idle candidate with one guarded UPDATE; return the rows this sweep won.

    The guard repeats the selection's conditions: a heartbeat (which moves auto_stop_at into
    the future), a stop or a concurrent sweep since our SELECT makes the row not match, so it
    is not ours.
    """
    token = new_operation_id("autostop")
    real_now = timezone.now()
    claimed = transition_many(
        {c.instance_id: (c.status, c.reason) for c in candidates},
        expected=AUTO_STOP_CANDIDATES,
        guard=Q(auto_stop_enabled=True) & (Q(auto_stop_at__lte=now) | Q(auto_stop_at__isnull=True)),
        to_status=Status.STOPPING,
        source=SOURCE,
        actor=actor,
        operation_id=token,
        desired_status=Desired.STOPPED,
        auto_stop_at=None,
        # A lease: the monitor leaves these alone until our stop calls are sent.
        next_poll_at=real_now + CLAIM_LEASE,
        poll_interval=FIRST_POLL_DELAY,
        drive_attempts=0,
    )
    return token, claimed


def _stop_upstream(claimed: list[Instance], started: float) -> tuple[list[dict], float]:
    """Send the stop calls (no transaction open); return failures and when the last returned."""
    todo = [i for i in claimed if i.novita_instance_id]
    if not todo:
        return [], 0.0
    client = get_client()

    def call(instance: Instance):
        try:
            client.stop_instance(instance.novita_instance_id)
            error = None
        except upstream.NovitaError as exc:
            error = exc.details() or type(exc).__name__
        except Exception as exc:  # noqa: BLE001 - one bad instance must not end the sweep
            logger.exception("auto-stop: stop call for %s crashed", instance.id)
            error = f"{type(exc).__name__}: {exc}"
        return instance, error, time.perf_counter() - started

    failures, last = [], 0.0
    workers = min(UPSTREAM_WORKERS, len(todo))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="autostop") as pool:
        for instance, error, finished in pool.map(call, todo):
            last = max(last, finished)
            if error is not None:
                failures.append({"instanceId": instance.id, "name": instance.name, "error": error})
    return failures, last


def _release(token: str) -> None:
    # Hand the claimed instances to the monitor, which follows them to stopped and re-sends a
    # stop that failed.
    Instance.objects.filter(status=Status.STOPPING, operation_id=token).update(
        next_poll_at=timezone.now() + timedelta(seconds=FIRST_POLL_DELAY)
    )


def _warn(now) -> list[tuple[str, str]]:
    """Send one auto_stop_warning to each instance approaching its deadline; (id, reason).

    Sweeps only look every interval, so "AUTO_STOP_WARNING_MINUTES before the stop" is served
    by warning at the last sweep before that point: the horizon adds one interval.
    """
    minutes = float(settings.AUTO_STOP_WARNING_MINUTES)
    if minutes <= 0:
        return []
    horizon = now + timedelta(minutes=minutes + float(settings.AUTO_STOP_CHECK_INTERVAL_MINUTES))
    with transaction.atomic():
        # Row locks (PostgreSQL) or the write lock (SQLite) make the claim below exactly ours.
        due = list(
            Instance.objects.select_for_update(skip_locked=True)
            .auto_stop_applies()
            .filter(
                auto_stop_warned_at__isnull=True,
                auto_stop_at__gt=now,
                auto_stop_at__lte=horizon,
            )
            .exclude(webhook_url="")
            .order_by()
        )
        if not due:
            return []
        for chunk in _chunks([i.pk for i in due]):
            Instance.objects.filter(pk__in=chunk, auto_stop_warned_at__isnull=True).update(
                auto_stop_warned_at=now
            )
        items, warned = [], []
        for instance in due:
            since = instance.idle_since or now
            idle_minutes = max(0.0, (now - since).total_seconds() / 60)
            reason = (
                f"idle {_minutes(idle_minutes)} min; auto-stop at {iso(instance.auto_stop_at)} "
                f"unless the instance is used (PUT /api/instances/{instance.id}/last-used)"
            )
            items.append((instance, reason, {"autoStopAt": iso(instance.auto_stop_at)}))
            warned.append((instance.id, reason))
        webhooks.enqueue_many(items, event=webhooks.Event.AUTO_STOP_WARNING)
    return warned


def sweep(
    *, dry_run: bool = False, now: datetime | None = None, trigger: str = "schedule", actor=""
) -> SweepResult:
    """Find idle instances and (unless dry_run) stop them; warn those about to be stopped.

    `trigger` is "schedule" for beat's run or "api" for a manual one. Only beat's run writes
    the heartbeat that /health and the stats endpoint read: a manual check proves nothing
    about the scheduler.
    """
    started = time.perf_counter()
    now = now or timezone.now()
    result = SweepResult(now=now, dry_run=dry_run)
    if not settings.AUTO_STOP_ENABLED:
        result.enabled = False
        return result

    rows = _select_due(now)
    result.examined = len(rows)
    result.candidates, stale = _judge(rows, now)
    if dry_run:
        result.decision_seconds = time.perf_counter() - started
    else:
        _repair(stale)
        _stop_idle(result, now, started, actor=actor)
        warned = _warn(now)
        result.warned = [pk for pk, _reason in warned]
        _count(result)
    result.duration_seconds = time.perf_counter() - started
    if not dry_run:
        schedule_wakeup(next_deadline(), now=timezone.now())

    failed = {f["instanceId"]: f["error"] for f in result.failures}
    summary = [
        {"instanceId": c.instance_id, "action": c.action, "reason": c.reason}
        | ({"error": failed[c.instance_id]} if c.instance_id in failed else {})
        for c in result.candidates
    ]
    if not dry_run:
        summary += [{"instanceId": pk, "action": "warned", "reason": r} for pk, r in warned]
    if len(summary) > _SUMMARY_LIMIT:
        summary = summary[:_SUMMARY_LIMIT] + [{"omitted": len(summary) - _SUMMARY_LIMIT}]
    run = SweepRun.objects.create(
        kind=SweepRun.Kind.AUTO_STOP,
        started_at=now,
        duration_ms=round(result.duration_seconds * 1000, 3),
        dry_run=dry_run,
        examined=result.examined,
        acted=len(result.stopped),
        failures=len(result.failures),
        summary=summary,
    )
    prune_old_runs(SweepRun.Kind.AUTO_STOP)
    result.run_id = run.pk
    if trigger == "schedule" and not dry_run:
        counters.set_value(HEARTBEAT_KEY, str(timezone.now().timestamp()))
    if result.stopped or result.failures:
        logger.info(
            "auto-stop: stopped %d, %d upstream failures, warned %d (examined %d)",
            len(result.stopped),
            len(result.failures),
            len(result.warned),
            result.examined,
        )
    return result


def _stop_idle(result: SweepResult, now, started: float, *, actor: str) -> None:
    """Claim the candidates, then call upstream for the ones this sweep won."""
    candidates = result.candidates
    token, claimed = _claim(candidates, now, actor=actor) if candidates else ("", [])
    result.decision_seconds = time.perf_counter() - started
    won = {i.id for i in claimed}
    for candidate in candidates:
        # Not won: a heartbeat, a stop or another sweep got there between SELECT and UPDATE.
        candidate.action = "stopped" if candidate.instance_id in won else "skipped"
    result.stopped = [c.instance_id for c in candidates if c.instance_id in won]

    upstream_started = time.perf_counter()
    result.failures, result.last_stop_call_seconds = _stop_upstream(claimed, started)
    result.upstream_seconds = time.perf_counter() - upstream_started
    if claimed:
        _release(token)
    failed = {f["instanceId"]: f["error"] for f in result.failures}
    for candidate in candidates:
        if candidate.instance_id in failed:
            candidate.action = "stopFailed"
    retry = "upstream stop failed, the monitor will retry: "
    record_events(
        [
            (pk, Status.STOPPING, Status.STOPPING, Desired.STOPPED, retry + error)
            for pk, error in failed.items()
        ],
        source=SOURCE,
        actor=actor,
    )


def _count(result: SweepResult) -> None:
    amounts = {}
    if result.stopped:
        amounts[STOPPED_COUNTER] = len(result.stopped)
    if result.failures:
        amounts[FAILED_COUNTER] = len(result.failures)
    if result.warned:
        amounts[WARNED_COUNTER] = len(result.warned)
    if amounts:
        counters.incr_many(amounts)


# --- precise wake-ups -------------------------------------------------------------------------


def next_deadline():
    """The earliest auto-stop deadline of any instance auto-stop applies to (or None)."""
    return (
        Instance.objects.auto_stop_applies()
        .filter(auto_stop_at__isnull=False)
        .order_by("auto_stop_at")
        .values_list("auto_stop_at", flat=True)
        .first()
    )


def schedule_wakeup(deadline, *, now=None) -> bool:
    """Book one extra sweep for `deadline` when it comes before beat's next run.

    At most one wake-up is pending (shared across processes): a later one is not booked while
    an earlier one waits, an earlier one replaces it. Overlapping sweeps are harmless anyway.
    Returns whether a wake-up was booked.
    """
    if deadline is None or not settings.AUTO_STOP_ENABLED:
        return False
    now = now or timezone.now()
    interval = timedelta(minutes=float(settings.AUTO_STOP_CHECK_INTERVAL_MINUTES))
    at = max(deadline, now + WAKEUP_MIN_GAP)
    if at >= now + interval:
        return False  # beat's own run comes first
    try:
        pending = float(counters.get_value(WAKEUP_KEY) or 0)
    except ValueError:
        pending = 0
    if now.timestamp() < pending <= at.timestamp():
        return False
    counters.set_value(WAKEUP_KEY, str(at.timestamp()))
    # A second past the deadline, so the sweep's own re-check finds the instance due.
    return queue.send(queue.AUTO_STOP_SWEEP, countdown=(at - now).total_seconds() + 1)


# --- reading ----------------------------------------------------------------------------------


def scheduler_running(now_ts: float | None = None) -> bool:
    """True when beat's sweep really ran within the last two intervals (its heartbeat)."""
    raw = counters.get_value(HEARTBEAT_KEY)
    try:
        beat = float(raw) if raw else None
    except ValueError:
        beat = None
    if beat is None:
        return False
    now_ts = timezone.now().timestamp() if now_ts is None else now_ts
    return now_ts - beat <= 2 * float(settings.AUTO_STOP_CHECK_INTERVAL_MINUTES) * 60


def stats() -> dict:
    """The stats endpoint's body: configuration, whether the scheduler runs, the last run."""
    last = (
        SweepRun.objects.filter(kind=SweepRun.Kind.AUTO_STOP, dry_run=False)
        .order_by("-started_at")
        .first()
    )
    upcoming = next_deadline()
    return {
        "schedulerRunning": scheduler_running(),
        "checkIntervalMinutes": _number(float(settings.AUTO_STOP_CHECK_INTERVAL_MINUTES)),
        "defaultInactivityThresholdMinutes": _number(
            float(settings.AUTO_STOP_INACTIVITY_THRESHOLD_MINUTES)
        ),
        "warningMinutes": _number(float(settings.AUTO_STOP_WARNING_MINUTES)),
        "lastRunAt": iso(last.started_at) if last else None,
        "lastRunDurationMs": round(last.duration_ms, 1) if last else None,
        "lastRunStopped": last.acted if last else None,
        "totalStopped": int(counters.get_all().get(STOPPED_COUNTER, 0)),
        "nextDeadlineAt": iso(upcoming),
    }
