"""The one way an instance's status is set: a guarded update, an event and a webhook, atomically.

A guarded update (`UPDATE ... WHERE pk = ? AND status IN (...)`) makes overlapping workers,
sweeps and API calls harmless: exactly one of them wins each transition, the rest see 0 rows.
`transition` moves one instance, `transition_many` a sweep's worth in a fixed number of
statements, `create` writes a new instance in its first status; `fail`, `fail_if_overdue` and
`mark_gone` are the named transitions several services share. Nothing else writes `status`.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from novita_gateway.context import current_request_id
from ops import counters

from ..models import Instance, InstanceEvent
from ..status import BOOTING, Desired, Status
from . import webhooks


def record_event(
    instance_id: str,
    *,
    source: str,
    reason: str,
    from_status: str = "",
    to_status: str = "",
    desired_status: str = "",
    actor: str = "",
) -> InstanceEvent:
    return InstanceEvent.objects.create(
        instance_id=instance_id,
        source=source,
        reason=reason[:2000],
        from_status=from_status,
        to_status=to_status,
        desired_status=desired_status,
        request_id=current_request_id() or "",
        actor=actor[:150],
    )


def record_events(rows: list[tuple], *, source: str, actor: str = "") -> None:
    """Audit events (instance_id, from, to, desired, reason) in one executemany.

    Not bulk_create: on SQLite Django splits that into batches of 999 parameters (111 events),
    which would make a sweep's statement count grow with the number of instances it moves.
    """
    if not rows:
        return
    opts = InstanceEvent._meta
    names = (
        "instance",
        "created_at",
        "from_status",
        "to_status",
        "desired_status",
        "source",
        "reason",
        "request_id",
        "actor",
    )
    quote = connection.ops.quote_name
    columns = ", ".join(quote(opts.get_field(n).column) for n in names)
    placeholders = ", ".join(["%s"] * len(names))
    # Only model metadata is interpolated; every value is a bound parameter.
    sql = f"INSERT INTO {quote(opts.db_table)} ({columns}) VALUES ({placeholders})"  # noqa: S608
    created_at = connection.ops.adapt_datetimefield_value(timezone.now())
    request_id = (current_request_id() or "")[:140]
    params = [
        (pk, created_at, from_s, to_s, desired, source, reason[:2000], request_id, actor[:150])
        for pk, from_s, to_s, desired, reason in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def create(*, to_status: str, source: str, reason: str, actor: str = "", **fields) -> Instance:
    """A new instance in its first status, with the event that says why.

    The caller holds the transaction (and turns a duplicate name into its own error).
    """
    instance = Instance.objects.create(status=to_status, last_change_source=source, **fields)
    record_event(
        instance.id,
        source=source,
        reason=reason,
        to_status=instance.status,
        desired_status=instance.desired_status,
        actor=actor,
    )
    return instance


def note(instance: Instance, *, source: str, reason: str, actor: str = "") -> InstanceEvent:
    """Record a decision or attempt that did not change the instance's status."""
    return record_event(
        instance.id,
        source=source,
        reason=reason,
        from_status=instance.status,
        to_status=instance.status,
        desired_status=instance.desired_status,
        actor=actor,
    )


def transition(
    instance_id: str,
    *,
    expected: Iterable[str] | None,
    to_status: str,
    source: str,
    reason: str,
    actor: str = "",
    notify: bool = True,
    **fields,
) -> Instance | None:
    """Move an instance to `to_status` if its status is one of `expected` (None: any).

    Returns the updated instance, or None when another actor got there first. `fields` are
    written in the same UPDATE (e.g. desired_status, ready_at, next_poll_at).
    """
    with transaction.atomic():
        current = Instance.objects.filter(pk=instance_id).values_list("status", flat=True).first()
        if current is None:
            return None
        query = Instance.objects.filter(pk=instance_id, status=current)
        if expected is not None and current not in set(expected):
            return None
        updated = query.update(
            status=to_status, last_change_source=source, updated_at=timezone.now(), **fields
        )
        if not updated:
            return None
        instance = Instance.objects.get(pk=instance_id)
        record_event(
            instance_id,
            source=source,
            reason=reason,
            from_status=current,
            to_status=to_status,
            desired_status=instance.desired_status,
            actor=actor,
        )
        if notify and current != to_status:
            webhooks.enqueue_status_change(instance, reason=reason)
        return instance


# SQLite accepts 32766 bound parameters per statement; stay well below it.
_ID_CHUNK = 5000


def transition_many(
    seen: dict[str, tuple[str, str]],
    *,
    expected: Iterable[str],
    to_status: str,
    source: str,
    operation_id: str,
    guard: Q | None = None,
    actor: str = "",
    **fields,
) -> list[Instance]:
    """`transition` for a sweep: move every instance of `seen` ({id: (status seen, reason)})
    whose status is still one of `expected` and that still matches `guard`.

    A fixed number of statements however many instances move: one guarded UPDATE per 5000 ids,
    one SELECT of the winners (tagged with `operation_id`, which must be new, so exactly this
    call's rows are read back), one INSERT of their events and one of their webhooks, all in
    one transaction. Returns the instances moved.
    """
    now = timezone.now()
    ids = list(seen)
    with transaction.atomic():
        for start in range(0, len(ids), _ID_CHUNK):
            query = Instance.objects.filter(pk__in=ids[start : start + _ID_CHUNK])
            query = query.filter(status__in=list(expected))
            if guard is not None:
                query = query.filter(guard)
            query.update(
                status=to_status,
                operation_id=operation_id,
                last_change_source=source,
                updated_at=now,
                **fields,
            )
        moved = list(
            Instance.objects.filter(status=to_status, operation_id=operation_id).order_by()
        )
        record_events(
            [(i.id, seen[i.id][0], to_status, i.desired_status, seen[i.id][1]) for i in moved],
            source=source,
            actor=actor,
        )
        webhooks.enqueue_many(
            [(i, seen[i.id][1], None) for i in moved if seen[i.id][0] != to_status],
            event=webhooks.Event.STATUS_CHANGED,
        )
    return moved


def update_fields(instance_id: str, *, expected_status: str | None = None, **fields) -> bool:
    """Write non-status fields, guarded by the status the caller based its decision on."""
    query = Instance.objects.filter(pk=instance_id)
    if expected_status is not None:
        query = query.filter(status=expected_status)
    return bool(query.update(updated_at=timezone.now(), **fields))


# Evidence mark_gone accepts, and nothing else: an instance-level not-found for the instance's
# id, or its absence from two consecutive complete listings.
NOT_FOUND_FOR_ID = "upstream answered not found for its id"
ABSENT_FROM_LISTINGS = "absent from two consecutive complete upstream listings"
GONE_EVIDENCE = frozenset({NOT_FOUND_FOR_ID, ABSENT_FROM_LISTINGS})


def mark_gone(
    instance: Instance, *, source: str, evidence: str, actor: str = ""
) -> Instance | None:
    """The one way an instance becomes terminated because upstream lost it.

    Only on proof (GONE_EVIDENCE): a route-level 404, an auth error or a failed listing says
    something about the gateway's configuration, never about an instance, and marking a live
    instance terminated would leave it running and billed with nobody watching. Guarded on the
    status the caller saw. Returns the terminated instance, or None when nothing changed.
    """
    if evidence not in GONE_EVIDENCE:
        raise ValueError(f"not evidence that an instance is gone: {evidence!r}")
    if instance.status == Status.TERMINATED:
        return None
    if instance.desired_status == Desired.TERMINATED:
        reason = f"deleted upstream as requested ({evidence})"
    else:
        reason = f"instance no longer exists upstream: {evidence}"
    return transition(
        instance.id,
        expected={instance.status},
        to_status=Status.TERMINATED,
        source=source,
        reason=reason,
        actor=actor,
        next_poll_at=None,
        stopped_at=timezone.now(),
        auto_stop_at=None,
        upstream_status="removed",
        missing_listings=0,
        missing_since=None,
    )


def fail_if_overdue(instance: Instance) -> bool:
    """Fail an instance whose readiness deadline passed; True when it did."""
    if (
        instance.desired_status == Desired.RUNNING
        and instance.status in BOOTING
        and instance.readiness_deadline
        and timezone.now() > instance.readiness_deadline
    ):
        fail(instance, "not ready before maxWaitTimeMs passed", source="monitor")
        return True
    return False


def fail(instance: Instance, reason: str, *, source: str, **fields) -> Instance | None:
    """Move an instance to failed from the status the caller saw, keeping why; `fields` are
    written in the same UPDATE. Returns the failed instance, or None when another actor moved it
    first (then nothing is counted)."""
    failed = transition(
        instance.id,
        expected={instance.status},
        to_status=Status.FAILED,
        source=source,
        reason=reason,
        failure_reason=reason[:2000],
        next_poll_at=None,
        auto_stop_at=None,
        **fields,
    )
    if failed is not None:
        counters.incr("instances:failed")
    return failed
