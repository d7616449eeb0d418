"""The reconciler: one paginated pass over upstream, folded into every local record it concerns.

It catches what happened outside the gateway (an instance stopped or deleted in Novita's console,
a crash, a spot reclaim), drives instances whose desired state upstream does not match (bounded,
through lifecycle.apply_upstream, ending in a visible failure) and restarts monitors that died.

What it never does: conclude anything from a listing that failed or stopped early, or overrule a
monitor that is following an instance right now (the monitor's get-instance view is fresher and
carries the port endpoints that list items lack).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from ops.timeutil import iso

from ..models import Instance, SweepRun
from ..novita import errors as upstream
from ..novita.client import get_client
from ..novita.schemas import UpstreamInstance
from ..status import TRANSITIONAL, Desired, Status
from . import lifecycle, migration, sync
from .sweeps import Outcome
from .transitions import record_event, transition

logger = logging.getLogger(__name__)

# A transitional instance whose next poll is this overdue (or unset) has lost its monitor.
STALE_MONITOR = timedelta(minutes=5)
# Instances missing from a listing are confirmed one get-instance call each; bound the cost.
MISSING_CONFIRM_LIMIT = 20
_TOUCH_CHUNK = 500


def _list_item_view(remote: UpstreamInstance) -> UpstreamInstance:
    # List items carry ports without their public addresses; apply_upstream stores whatever
    # mappings it is given, which would wipe the endpoints get-instance gave us.
    if any(not m.endpoint for m in remote.port_mappings):
        return dataclasses.replace(remote, port_mappings=[])
    return remote


def apply_remote(instance: Instance, remote: UpstreamInstance, *, source: str) -> bool:
    """Write upstream's view into one record when it changes the record's status; True if so.

    A failed instance stays failed (its reason is the record of what went wrong; re-driving it
    would undo the bounded retries that led there) unless upstream removed it.
    """
    remote = _list_item_view(remote)
    implied = sync.implied_status(instance, remote.status, bool(remote.status_error))
    sticky = instance.status == Status.FAILED and implied != Status.TERMINATED
    if sticky or implied == instance.status:
        upstream_status = (remote.status or "")[:40]
        spot_status = (remote.spot_status or "")[:20]
        if (upstream_status, spot_status) != (instance.upstream_status, instance.spot_status):
            Instance.objects.filter(pk=instance.pk, status=instance.status).update(
                upstream_status=upstream_status, spot_status=spot_status
            )
        return False
    lifecycle.apply_upstream(instance, remote, source=source)
    return True


def _monitored(instance: Instance, now) -> bool:
    return instance.next_poll_at is not None and instance.next_poll_at >= now - STALE_MONITOR


def reconcile_rows(
    rows: list[Instance],
    snapshot: sync.Snapshot,
    *,
    source: str = "reconcile",
    migrate: bool = False,
    outcome: Outcome | None = None,
) -> Outcome:
    """Fold one upstream snapshot into these local records (see the module docstring)."""
    outcome = outcome or Outcome()
    now = timezone.now()
    unchanged: list[str] = []
    missing: list[Instance] = []
    for instance in rows:
        if instance.status == Status.TERMINATED or not instance.novita_instance_id:
            continue
        outcome.examined += 1
        if instance.updated_at > snapshot.started_at:
            continue  # changed while we were listing: what we saw may already be out of date
        remote = snapshot.by_id.get(instance.novita_instance_id)
        if migrate and remote is not None and migration.should_migrate(instance, remote):
            if migration.start(instance, remote):
                outcome.note(instance.id, "migration started", upstreamStatus=remote.status)
            continue
        if _monitored(instance, now):
            continue
        if remote is None:
            if snapshot.complete:
                missing.append(instance)
            continue
        before = instance.status
        if apply_remote(instance, remote, source=source):
            outcome.note(instance.id, "updated", was=before, upstreamStatus=remote.status)
        else:
            unchanged.append(instance.pk)
    # One UPDATE per chunk for the (usual) unchanged majority, not one per instance. A plain
    # update() leaves updated_at alone, so these rows still count as unchanged next time.
    for i in range(0, len(unchanged), _TOUCH_CHUNK):
        Instance.objects.filter(pk__in=unchanged[i : i + _TOUCH_CHUNK]).update(
            last_synced_at=snapshot.started_at
        )
    for instance in missing[:MISSING_CONFIRM_LIMIT]:
        _confirm_gone(instance, source=source, outcome=outcome)
    return outcome


def _confirm_gone(instance: Instance, *, source: str, outcome: Outcome) -> None:
    """An instance missing from a complete listing is asked for directly before it is declared
    terminated: pages shift when instances are deleted while we read, so one can slip through."""
    try:
        remote = get_client().get_instance(instance.novita_instance_id)
    except upstream.NovitaNotFoundError:
        reason = (
            "deleted upstream as requested"
            if instance.desired_status == Desired.TERMINATED
            else "instance no longer exists upstream (deleted outside the gateway)"
        )
        moved = transition(
            instance.id,
            expected={instance.status},
            to_status=Status.TERMINATED,
            source=source,
            reason=reason,
            next_poll_at=None,
            stopped_at=timezone.now(),
            auto_stop_at=None,
            upstream_status="removed",
        )
        if moved is not None:
            outcome.note(instance.id, "terminated", was=instance.status)
        return
    except upstream.NovitaError as exc:
        outcome.failures += 1
        logger.info("reconcile: could not confirm %s: %s", instance.id, exc.details())
        return
    before = instance.status
    if apply_remote(instance, remote, source=source):
        outcome.note(instance.id, "updated", was=before, upstreamStatus=remote.status)


def resume_dead_monitors(outcome: Outcome) -> None:
    """Transitional instances nobody is polling get due now, so the monitor sweep takes them."""
    now = timezone.now()
    stale = (
        Instance.objects.filter(status__in=TRANSITIONAL)
        .filter(Q(next_poll_at__isnull=True) | Q(next_poll_at__lt=now - STALE_MONITOR))
        .values_list("pk", "status", "next_poll_at")[:500]
    )
    for pk, status, due in list(stale):
        query = Instance.objects.filter(pk=pk, status=status)
        if due is None:
            query = query.filter(next_poll_at__isnull=True)
        else:
            query = query.filter(next_poll_at=due)
        if not query.update(next_poll_at=now):
            continue
        why = "no poll was scheduled" if due is None else f"its poll was due at {iso(due)}"
        record_event(
            pk,
            source="reconcile",
            reason=f"monitor resumed: {why}",
            from_status=status,
            to_status=status,
        )
        outcome.note(pk, "monitor resumed", status=status)


def run() -> SweepRun:
    """The beat task's pass: every local record against one full upstream listing."""
    started_at = timezone.now()
    start = time.perf_counter()
    outcome = Outcome()
    try:
        snapshot, _ = sync.get_snapshot(fresh=True)
    except upstream.NovitaError as exc:
        # A failed pass proves nothing, least of all that instances are gone.
        snapshot = None
        outcome.failures += 1
        outcome.summary.append({"error": f"upstream listing failed: {exc.details()}"})
        logger.warning("reconcile: upstream listing failed: %s", exc.details())
    if snapshot is not None:
        rows = list(
            Instance.objects.exclude(status=Status.TERMINATED).filter(
                novita_instance_id__isnull=False
            )
        )
        reconcile_rows(
            rows,
            snapshot,
            source="reconcile",
            migrate=settings.MIGRATION_ENABLED,
            outcome=outcome,
        )
        if not snapshot.complete:
            outcome.summary.append({"warning": "listing incomplete; nothing was terminated"})
    resume_dead_monitors(outcome)
    return outcome.record(
        SweepRun.Kind.RECONCILE, started_at=started_at, start=start, heartbeat="heartbeat:reconcile"
    )
