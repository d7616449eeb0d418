"""The monitor: follow each instance until it reaches its desired state.

Beat's monitor sweep claims every instance whose `next_poll_at` has passed (a guarded update
that also pushes it out, so one worker at a time follows an instance); each step asks Novita,
maps its answer (status.py), re-drives upstream when it disagrees with what we want, probes the
ports of a running instance until it is ready, and fails one whose readiness deadline passed.
Instances not yet created upstream are handed to provisioning.py.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.utils import timezone

from ..models import Instance
from ..novita import errors as upstream
from ..novita.client import get_client
from ..novita.schemas import UpstreamInstance
from ..status import TRANSITIONAL, Desired, Status, redrive
from . import readiness
from .polling import CLAIM_LEASE, FIRST_POLL_DELAY, POLL_BACKOFF, POLL_CAP
from .provisioning import provision
from .transitions import (
    NOT_FOUND_FOR_ID,
    fail,
    fail_if_overdue,
    mark_gone,
    note,
    transition,
    update_fields,
)

logger = logging.getLogger(__name__)

MAX_DRIVE_ATTEMPTS = 5


def _now():
    return timezone.now()


def claim(instance_id: str, *, lease_until=None) -> Instance | None:
    """Take an instance for one monitor step; None when it is not due or someone else has it.

    With `lease_until`, the caller is the monitor sweep that already pushed next_poll_at to that
    exact value for us.
    """
    now = _now()
    query = Instance.objects.filter(pk=instance_id)
    if lease_until is not None:
        query = query.filter(next_poll_at=lease_until)
    else:
        query = query.filter(next_poll_at__lte=now)
    if not query.update(next_poll_at=now + CLAIM_LEASE):
        return None
    return Instance.objects.get(pk=instance_id)


def claim_due(limit: int = 200) -> list[tuple[str, object]]:
    """Monitor sweep: claim every due instance with one UPDATE; return (id, lease) pairs."""
    now = _now()
    due = list(
        Instance.objects.filter(next_poll_at__lte=now)
        .order_by("next_poll_at")
        .values_list("pk", flat=True)[:limit]
    )
    if not due:
        return []
    lease = now + CLAIM_LEASE
    Instance.objects.filter(pk__in=due, next_poll_at__lte=now).update(next_poll_at=lease)
    mine = Instance.objects.filter(pk__in=due, next_poll_at=lease).values_list("pk", flat=True)
    return [(pk, lease) for pk in mine]


def _schedule_next(instance: Instance, *, status: str, reset: bool = False) -> None:
    interval = FIRST_POLL_DELAY if reset else min(instance.poll_interval * POLL_BACKOFF, POLL_CAP)
    update_fields(
        instance.id,
        expected_status=status,
        next_poll_at=_now() + timedelta(seconds=interval),
        poll_interval=interval,
    )


def _release(instance_id: str, status: str) -> None:
    update_fields(instance_id, expected_status=status, next_poll_at=None)


def advance(instance: Instance) -> None:
    """One monitor step for a claimed instance: look upstream, move status, schedule next."""
    if instance.status == Status.TERMINATED:
        _release(instance.id, instance.status)
        return
    if not instance.novita_instance_id:
        if instance.desired_status == Desired.RUNNING and instance.status == Status.CREATING:
            provision(instance)
        else:
            _release(instance.id, instance.status)
        return
    try:
        remote = get_client().get_instance(instance.novita_instance_id)
    except upstream.NovitaNotFoundError:
        _gone_upstream(instance)
        return
    except upstream.NovitaError as exc:
        logger.info("monitor: upstream unavailable for %s: %s", instance.id, exc.details())
        fail_if_overdue(instance) or _schedule_next(instance, status=instance.status)
        return
    apply_upstream(instance, remote, source="monitor")


def _gone_upstream(instance: Instance) -> None:
    mark_gone(instance, source="monitor", evidence=NOT_FOUND_FOR_ID)


def _connection_details(remote: UpstreamInstance) -> dict:
    details = {
        "ssh": remote.ssh_command,
        "jupyter": remote.jupyter_address,
        "webTerminal": remote.web_terminal_address,
    }
    if not details["jupyter"]:
        for mapping in remote.port_mappings:
            if mapping.port == 8888 and mapping.endpoint:
                details["jupyter"] = mapping.endpoint
    return {k: v for k, v in details.items() if v}


def _observed_fields(remote: UpstreamInstance) -> dict:
    fields = {
        "upstream_status": (remote.status or "")[:40],
        "last_synced_at": _now(),
        "spot_status": (remote.spot_status or "")[:20],
    }
    if remote.port_mappings:
        fields["port_mappings"] = [
            {"port": m.port, "endpoint": m.endpoint, "type": m.type} for m in remote.port_mappings
        ]
    connection = _connection_details(remote)
    if connection:
        fields["connection_details"] = connection
    if remote.cluster_id:
        fields["cluster_id"] = remote.cluster_id[:100]
    if remote.cluster_name:
        fields["cluster_name"] = remote.cluster_name[:200]
    if remote.image_url:
        fields["image_url"] = remote.image_url[:500]
    return fields


def apply_upstream(instance: Instance, remote: UpstreamInstance, *, source: str) -> None:
    """Fold what upstream says into our record, then take the next step toward desired."""
    observed = _observed_fields(remote)
    target = instance.status_from_upstream(remote.status, has_error=bool(remote.status_error))
    if target == Status.FAILED:
        fail(
            instance,
            f"upstream reported an error: {remote.status_error}",
            source=source,
            **observed,
        )
        return

    # Upstream disagrees with what we want: drive it again (bounded), e.g. a stop that failed.
    action = redrive(remote.status, current=instance.status, desired=instance.desired_status)
    if action is not None:
        _drive_again(instance, action, source, observed)
        return

    if (
        target in (Status.RUNNING, Status.HEALTH_CHECKING)
        and instance.desired_status == Desired.RUNNING
    ):
        _check_readiness(instance, observed, source)
        return

    if target != instance.status:
        extra = {}
        if target in (Status.STOPPED, Status.EXITED):
            extra = {"stopped_at": _now(), "auto_stop_at": None}
        if target == Status.TERMINATED:
            extra = {"stopped_at": _now(), "auto_stop_at": None}
        moved = transition(
            instance.id,
            expected={instance.status},
            to_status=target,
            source=source,
            reason=f"upstream status {remote.status}",
            **observed,
            **extra,
        )
        if moved is None:
            return
        instance = moved
    else:
        update_fields(instance.id, expected_status=instance.status, **observed)
    if target in TRANSITIONAL and not fail_if_overdue(instance):
        _schedule_next(instance, status=target)
    elif target not in TRANSITIONAL:
        _release(instance.id, target)


def _check_readiness(instance: Instance, observed: dict, source: str) -> None:
    if instance.status != Status.HEALTH_CHECKING:
        moved = transition(
            instance.id,
            expected={instance.status},
            to_status=Status.HEALTH_CHECKING,
            source=source,
            reason="upstream reports running; probing ports",
            probe_due_at=_now(),
            **observed,
        )
        if moved is None:
            return
        instance = moved
    else:
        update_fields(instance.id, expected_status=instance.status, **observed)
        instance.refresh_from_db()
    if fail_if_overdue(instance):
        return
    # The ports are probed on the probes queue, not here (readiness.py says why); this step
    # keeps watching upstream and the readiness deadline on the usual backoff meanwhile.
    _schedule_next(instance, status=Status.HEALTH_CHECKING)
    readiness.request_probe(instance)


def _drive_again(instance: Instance, action: str, source: str, observed: dict) -> None:
    if instance.drive_attempts >= MAX_DRIVE_ATTEMPTS:
        fail(
            instance,
            f"upstream still {observed.get('upstream_status')} after "
            f"{instance.drive_attempts} {action} attempts",
            source=source,
            **observed,
        )
        return
    update_fields(
        instance.id,
        expected_status=instance.status,
        drive_attempts=instance.drive_attempts + 1,
        **observed,
    )
    note(
        instance,
        source=source,
        reason=f"upstream is {observed.get('upstream_status')}; sending {action} again "
        f"(attempt {instance.drive_attempts + 1} of {MAX_DRIVE_ATTEMPTS})",
    )
    client = get_client()
    try:
        getattr(client, f"{action}_instance")(instance.novita_instance_id)
    except upstream.NovitaError as exc:
        logger.info("re-drive %s of %s failed: %s", action, instance.id, exc.details())
    _schedule_next(instance, status=instance.status)
