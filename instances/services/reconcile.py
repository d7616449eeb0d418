"""The reconciler: one paginated pass over upstream, folded into every local record it concerns.

It catches what happened outside the gateway (an instance stopped or deleted in Novita's console,
a crash, a spot reclaim), drives instances whose desired state upstream does not match (bounded,
through monitor.apply_upstream, ending in a visible failure) and restarts monitors that died.

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
from django.db.models import F, Q
from django.utils import timezone

from novita_gateway.timeutil import iso

from ..models import Instance, SweepRun
from ..novita import errors as upstream
from ..novita.client import get_client
from ..novita.schemas import UpstreamInstance
from ..status import TRANSITIONAL, Status
from . import migration, monitor
from .snapshot import Snapshot, get_snapshot
from .sweeps import Outcome
from .transitions import ABSENT_FROM_LISTINGS, NOT_FOUND_FOR_ID, mark_gone, record_event

logger = logging.getLogger(__name__)

# A transitional instance whose next poll is this overdue (or unset) has lost its monitor.
STALE_MONITOR = timedelta(minutes=5)
# Instances missing from a listing are confirmed one get-instance call each; bound the cost.
MISSING_CONFIRM_LIMIT = 20
# More instances than this (and over half the fleet) missing from one listing is not believed.
SUSPICIOUS_ABSENCES = 10
# Two listings without an instance prove it gone only this far apart: a burst of listings
# (syncLocalState calls a second apart) must not stand in for two looks at upstream.
ABSENCE_SPAN = timedelta(seconds=30)
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
    implied = instance.status_from_upstream(remote.status, has_error=bool(remote.status_error))
    sticky = instance.status == Status.FAILED and implied != Status.TERMINATED
    if sticky or implied == instance.status:
        upstream_status = (remote.status or "")[:40]
        spot_status = (remote.spot_status or "")[:20]
        if (upstream_status, spot_status) != (instance.upstream_status, instance.spot_status):
            Instance.objects.filter(pk=instance.pk, status=instance.status).update(
                upstream_status=upstream_status, spot_status=spot_status
            )
        return False
    monitor.apply_upstream(instance, remote, source=source)
    return True


def _monitored(instance: Instance, now) -> bool:
    return instance.next_poll_at is not None and instance.next_poll_at >= now - STALE_MONITOR


def reconcile_rows(
    rows: list[Instance],
    snapshot: Snapshot,
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
    seen_again: list[str] = []
    for instance in rows:
        if instance.status == Status.TERMINATED or not instance.novita_instance_id:
            continue
        outcome.examined += 1
        if instance.updated_at > snapshot.started_at:
            continue  # changed while we were listing: what we saw may already be out of date
        remote = snapshot.by_id.get(instance.novita_instance_id)
        if remote is not None and instance.missing_listings:
            seen_again.append(instance.pk)
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
    for i in range(0, len(seen_again), _TOUCH_CHUNK):
        Instance.objects.filter(pk__in=seen_again[i : i + _TOUCH_CHUNK]).update(
            missing_listings=0, missing_since=None
        )
    if missing:
        _count_absences(missing, snapshot.started_at, outcome=outcome, source=source)
    return outcome


def _count_absences(missing: list[Instance], listed_at, *, outcome: Outcome, source: str) -> None:
    """Instances a complete listing did not show: one more absence each, then a direct look.

    Gone needs proof (transitions.mark_gone): upstream saying not-found for the id, or a second
    complete listing in a row without it. A listing that lacks most of a sizeable fleet proves
    nothing (an upstream answering with a filtered or foreign list looks complete too).
    """
    if len(missing) > SUSPICIOUS_ABSENCES and len(missing) * 2 > outcome.examined:
        logger.warning(
            "reconcile: %d of %d instances missing from one listing; not counting it",
            len(missing),
            outcome.examined,
        )
        outcome.summary.append(
            {"warning": f"{len(missing)} instances missing from the listing; nothing was counted"}
        )
        return
    pks = [instance.pk for instance in missing]
    for i in range(0, len(pks), _TOUCH_CHUNK):
        # A plain update(): updated_at stays, so the next pass still trusts its listing here.
        chunk = Instance.objects.filter(pk__in=pks[i : i + _TOUCH_CHUNK])
        chunk.update(missing_listings=F("missing_listings") + 1)
        chunk.filter(missing_since__isnull=True).update(missing_since=listed_at)
    for instance in missing[:MISSING_CONFIRM_LIMIT]:
        since = instance.missing_since or listed_at
        proven = instance.missing_listings + 1 >= 2 and listed_at - since >= ABSENCE_SPAN
        _confirm_gone(instance, absent_long_enough=proven, source=source, outcome=outcome)


def _confirm_gone(
    instance: Instance, *, absent_long_enough: bool, source: str, outcome: Outcome
) -> None:
    """Ask upstream about one instance a complete listing did not show (pages shift when
    instances are deleted while we read, so one can slip through)."""
    try:
        remote = get_client().get_instance(instance.novita_instance_id)
    except upstream.NovitaNotFoundError:
        evidence = NOT_FOUND_FOR_ID
    except upstream.NovitaError as exc:
        if not absent_long_enough:
            outcome.failures += 1
            logger.info("reconcile: could not confirm %s: %s", instance.id, exc.details())
            return
        # No instance-level answer (some upstreams answer an unknown id like an unknown route),
        # but two complete listings in a row, ABSENCE_SPAN apart, without it are proof enough.
        evidence = ABSENT_FROM_LISTINGS
    else:
        Instance.objects.filter(pk=instance.pk).update(missing_listings=0, missing_since=None)
        before = instance.status
        if apply_remote(instance, remote, source=source):
            outcome.note(instance.id, "updated", was=before, upstreamStatus=remote.status)
        return
    if mark_gone(instance, source=source, evidence=evidence) is not None:
        outcome.note(instance.id, "terminated", was=instance.status, evidence=evidence)


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
        snapshot, _ = get_snapshot(fresh=True)
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
