"""Spot migration: a spot instance upstream reclaimed while we want it running is migrated.

Detection needs upstream's list items (only they carry spotStatus / spotReclaimTime). The
reconciler passes its items here; this sweep also looks its spot instances up itself, so a
reclaim is acted on within MIGRATION_SWEEP seconds rather than a full reconcile interval.

A migration then moves the instance to `starting` and hands it to the normal monitor (which
takes it through readiness probing to `ready`); this sweep follows the upstream job
(instanceMigrate / autoInstanceMigrate, matched on instanceId) to catch a failed migration, and
reports one that takes longer than MIGRATION_TIMEOUT_MINUTES. Both end in `failed` with the
reason recorded and a webhook, never in silence.

A migration starts only when upstream allows it: not while the reclaim is only announced
(spotStatus `notified`), while the instance is between states, or while upstream runs a job on
it (the cases Novita's console hides the action for). A migrate call upstream refuses (4xx) is
asked again with backoff until MIGRATION_TIMEOUT_MINUTES have passed since the first refusal,
and only then ends in `failed`: a refusal often just means "not yet".
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from ..models import Instance, SweepRun
from ..novita import errors as upstream
from ..novita.client import get_client
from ..novita.schemas import Job, UpstreamInstance
from ..status import (
    NO_MIGRATION,
    TRANSITIONAL,
    Desired,
    Status,
    migration_allowed,
    spot_reclaimed,
    upstream_migrating,
)
from .snapshot import get_snapshot
from .sweeps import Outcome
from .transitions import fail, note, record_event, transition, update_fields

logger = logging.getLogger(__name__)

JOB_TYPES = ("instanceMigrate", "autoInstanceMigrate")
JOB_FAILED = frozenset({"fail", "failed", "break", "error"})
# Up to this many spot instances are looked up by name; more, and one full listing is cheaper.
NAME_LOOKUP_LIMIT = 10
# Upstream's job clock and ours differ; a job this much older than our migrate call still counts.
JOB_CLOCK_SLACK = timedelta(minutes=2)
FIRST_POLL_DELAY = 2.0
# A refused migrate is asked again after 30 s, 60 s, ... at most every 5 minutes.
REFUSAL_BACKOFF = timedelta(seconds=30)
REFUSAL_BACKOFF_CAP = timedelta(minutes=5)


def _timeout() -> timedelta:
    return timedelta(minutes=float(settings.MIGRATION_TIMEOUT_MINUTES))


def should_migrate(instance: Instance, remote: UpstreamInstance) -> bool:
    return (
        settings.MIGRATION_ENABLED
        and instance.desired_status == Desired.RUNNING
        and instance.migration_started_at is None
        and (instance.migration_retry_at is None or instance.migration_retry_at <= timezone.now())
        and instance.status not in NO_MIGRATION
        and bool(instance.novita_instance_id)
        and spot_reclaimed(remote.status, remote.spot_status, bool(remote.spot_reclaim_time))
        and migration_allowed(
            remote.status, remote.spot_status, jobs_running=bool(remote.running_jobs)
        )
    )


def _refused(instance: Instance, claimed_at, exc: upstream.NovitaError) -> None:
    """Upstream said no to the migrate call: ask again later, fail once the timeout passed."""
    first, refusals = instance.migration_refused_since, instance.migration_refusals + 1
    stale = instance.migration_retry_at and claimed_at - instance.migration_retry_at > _timeout()
    if first is None or stale:
        # The first refusal of this reclaim (one long past belonged to an earlier one).
        first, refusals = claimed_at, 1
    if claimed_at - first >= _timeout():
        _fail(
            instance,
            f"spot instance reclaimed; upstream refused the migration {refusals} times over "
            f"{settings.MIGRATION_TIMEOUT_MINUTES:g} minutes: {exc.details()}",
        )
        return
    wait = min(REFUSAL_BACKOFF * 2 ** (refusals - 1), REFUSAL_BACKOFF_CAP)
    Instance.objects.filter(pk=instance.pk, migration_started_at=claimed_at).update(
        migration_started_at=None,
        migration_refused_since=first,
        migration_refusals=refusals,
        migration_retry_at=claimed_at + wait,
    )
    note(
        instance,
        source="migration",
        reason=f"spot instance reclaimed; upstream refused the migration "
        f"({exc.details()}), asking again in {int(wait.total_seconds())} s",
    )


def _fail(instance: Instance, reason: str, **fields) -> Instance | None:
    return fail(
        instance,
        reason,
        source="migration",
        migration_started_at=None,
        migration_refused_since=None,
        migration_refusals=0,
        migration_retry_at=None,
        **fields,
    )


def start(instance: Instance, remote: UpstreamInstance) -> bool:
    """Migrate one reclaimed spot instance; True when a migration is now under way."""
    now = timezone.now()
    # The claim: of all the sweeps and reconcile passes that see this reclaim, one migrates.
    claimed = Instance.objects.filter(
        pk=instance.pk,
        status=instance.status,
        desired_status=Desired.RUNNING,
        migration_started_at__isnull=True,
    ).update(migration_started_at=now, migration_job_id="")
    if not claimed:
        return False
    spot = remote.spot_status or "reclaimed"
    fields: dict = {}
    if upstream_migrating(remote.status):
        reason = f"spot instance reclaimed upstream (spotStatus {spot}); upstream is migrating it"
    else:
        try:
            result = get_client().migrate_instance(instance.novita_instance_id)
        except upstream.NovitaPermanentError as exc:
            _refused(instance, now, exc)
            return False
        except upstream.NovitaError as exc:
            # Not refused, just not reached: release the claim so a later sweep tries again.
            Instance.objects.filter(pk=instance.pk, migration_started_at=now).update(
                migration_started_at=None
            )
            note(
                instance,
                source="migration",
                reason=f"spot instance reclaimed; migrate call failed, will retry: {exc.details()}",
            )
            return False
        if result.job_id:
            fields["migration_job_id"] = result.job_id[:100]
        if result.instance_id and result.instance_id != instance.novita_instance_id:
            # Undocumented whether migrate keeps the id; follow a new one if upstream names it.
            fields["novita_instance_id"] = result.instance_id[:100]
        reason = f"spot instance reclaimed upstream (spotStatus {spot}); migration requested"
    fields.update(migration_refused_since=None, migration_refusals=0, migration_retry_at=None)
    moved = transition(
        instance.id,
        expected={instance.status},
        to_status=Status.STARTING,
        source="migration",
        reason=reason,
        started_at=now,
        ready_at=None,
        failure_reason="",
        auto_stop_at=None,
        auto_stop_warned_at=None,
        drive_attempts=0,
        upstream_status=(remote.status or "")[:40],
        spot_status=(remote.spot_status or "")[:20],
        # The migration timeout below is the clearer report; the readiness deadline only backs
        # it up.
        readiness_deadline=now + _timeout() + instance.readiness_wait,
        # The normal monitor follows the instance from here (migrating -> running -> ready).
        next_poll_at=now + timedelta(seconds=FIRST_POLL_DELAY),
        poll_interval=FIRST_POLL_DELAY,
        **fields,
    )
    if moved is None:
        if fields:
            update_fields(instance.id, **fields)
        record_event(
            instance.id,
            source="migration",
            reason=f"{reason}; the instance changed meanwhile, its monitor will follow",
        )
    return True


# --- following migrations -------------------------------------------------------------------


def _latest_jobs(jobs: list[Job]) -> dict[str, list[Job]]:
    by_instance: dict[str, list[Job]] = {}
    for job in jobs:
        if job.instance_id:
            by_instance.setdefault(job.instance_id, []).append(job)
    for candidates in by_instance.values():
        candidates.sort(key=lambda j: j.created_at.timestamp() if j.created_at else 0, reverse=True)
    return by_instance


def _job_for(instance: Instance, by_instance: dict[str, list[Job]]) -> Job | None:
    candidates = by_instance.get(instance.novita_instance_id or "", [])
    if instance.migration_job_id:
        return next((j for j in candidates if j.id == instance.migration_job_id), None)
    since = instance.migration_started_at - JOB_CLOCK_SLACK
    # An older migration of the same instance must not be mistaken for this one.
    return next((j for j in candidates if j.created_at is None or j.created_at >= since), None)


def follow(instance: Instance, jobs: dict[str, list[Job]] | None, outcome: Outcome) -> None:
    """One look at a migration under way: done, failed, stuck, or still going."""
    now = timezone.now()
    if instance.status == Status.READY:
        if update_fields(instance.id, expected_status=Status.READY, migration_started_at=None):
            record_event(
                instance.id,
                source="migration",
                reason=f"migration completed; instance ready "
                f"(job {instance.migration_job_id or 'not reported'})",
                from_status=Status.READY,
                to_status=Status.READY,
            )
            outcome.note(instance.id, "migration completed")
        return
    if instance.status in NO_MIGRATION or (instance.desired_status != Desired.RUNNING):
        # Someone stopped or deleted it, or it failed on another path (reason recorded there).
        update_fields(instance.id, expected_status=instance.status, migration_started_at=None)
        record_event(
            instance.id,
            source="migration",
            reason=f"stopped following the migration: instance is {instance.status}, "
            f"desired {instance.desired_status}",
        )
        return
    job = _job_for(instance, jobs) if jobs is not None else None
    if job is not None and (job.state or "").lower() in JOB_FAILED:
        detail = f": {job.error}" if job.error else ""
        reason = f"migration job {job.id} ended {job.state}{detail}"
        if _fail(instance, reason, migration_job_id=(job.id or "")[:100]):
            outcome.note(instance.id, "migration failed", job=job.id, state=job.state)
        return
    if now - instance.migration_started_at > _timeout():
        where = f"job {job.id} {job.state}" if job else "no migration job found upstream"
        reason = (
            f"migration not finished after {settings.MIGRATION_TIMEOUT_MINUTES:g} minutes "
            f"({where}; upstream status {instance.upstream_status or 'unknown'})"
        )
        if _fail(instance, reason):
            outcome.note(instance.id, "migration timed out", job=job.id if job else None)
        return
    if job is not None and job.id and job.id != instance.migration_job_id:
        update_fields(instance.id, migration_job_id=job.id[:100])
    if instance.status in TRANSITIONAL and instance.next_poll_at is None:
        # The monitor is what takes it to ready; make sure one is following it.
        update_fields(instance.id, expected_status=instance.status, next_poll_at=now)


# --- the sweep ------------------------------------------------------------------------------


def _spot_views(candidates: list[Instance], outcome: Outcome) -> dict[str, UpstreamInstance]:
    """Fresh list items for these instances (keyed by upstream id).

    Fresh, not the listing cache: right after a migration finishes, a cached item can still
    say "reclaimed" and would start a second one.
    """
    client = get_client()
    if len(candidates) > NAME_LOOKUP_LIMIT:
        try:
            snapshot, _ = get_snapshot(fresh=True)
        except upstream.NovitaError as exc:
            outcome.failures += 1
            logger.info("migration: upstream listing failed: %s", exc.details())
            return {}
        return snapshot.by_id
    views = {}
    for instance in candidates:
        try:
            matches = client.list_instances(name=instance.name)
        except upstream.NovitaError as exc:
            outcome.failures += 1
            logger.info("migration: lookup of %s failed: %s", instance.id, exc.details())
            continue
        for remote in matches:
            if remote.id == instance.novita_instance_id:
                views[remote.id] = remote
    return views


def detect(outcome: Outcome) -> None:
    candidates = list(
        Instance.objects.filter(
            Q(billing_mode="spot") | ~Q(spot_status=""),
            desired_status=Desired.RUNNING,
            migration_started_at__isnull=True,
            novita_instance_id__isnull=False,
        )
        .filter(Q(migration_retry_at__isnull=True) | Q(migration_retry_at__lte=timezone.now()))
        .exclude(status__in=NO_MIGRATION)
    )
    if not candidates:
        return
    views = _spot_views(candidates, outcome)
    for instance in candidates:
        outcome.examined += 1
        remote = views.get(instance.novita_instance_id)
        if remote is not None and should_migrate(instance, remote) and start(instance, remote):
            outcome.note(instance.id, "migration started", upstreamStatus=remote.status)


def follow_all(outcome: Outcome) -> None:
    tracking = list(Instance.objects.filter(migration_started_at__isnull=False))
    if not tracking:
        return
    jobs: list[Job] | None = []
    try:
        for job_type in JOB_TYPES:
            jobs.extend(get_client().list_jobs(type=job_type))
    except upstream.NovitaError as exc:
        # Without jobs we can still see ready instances and report stuck ones.
        outcome.failures += 1
        logger.info("migration: job listing failed: %s", exc.details())
        jobs = None
    by_instance = _latest_jobs(jobs) if jobs is not None else None
    for instance in tracking:
        outcome.examined += 1
        follow(instance, by_instance, outcome)


def sweep() -> SweepRun | None:
    """The beat task: start migrations for reclaimed spot instances, follow those under way."""
    if not settings.MIGRATION_ENABLED:
        return None
    started_at = timezone.now()
    start_time = time.perf_counter()
    outcome = Outcome()
    detect(outcome)
    follow_all(outcome)
    return outcome.record(
        SweepRun.Kind.MIGRATION,
        started_at=started_at,
        start=start_time,
        heartbeat="heartbeat:migration",
    )
