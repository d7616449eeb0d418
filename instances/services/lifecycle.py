"""Instance lifecycle: create, start, stop, delete, and the monitor that drives each instance
toward its desired state. The only code (with its sibling services) that changes state.

Rules kept everywhere here: decisions are guarded updates (see transitions.py), no database
transaction is open while we wait for Novita, and work is enqueued only after commit.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from novita_gateway.errors import InstanceAlreadyExists, InvalidInstanceState
from ops import counters

from ..models import Instance, new_operation_id
from ..novita import catalog
from ..novita import errors as upstream
from ..novita.client import get_client
from ..novita.schemas import UpstreamInstance
from ..status import (
    DELETABLE,
    STARTABLE,
    STOPPABLE,
    TRANSITIONAL,
    Desired,
    Status,
    from_upstream,
)
from . import health_probe, queue
from .transitions import (
    NOT_FOUND_FOR_ID,
    mark_gone,
    note,
    record_event,
    transition,
    update_fields,
)

logger = logging.getLogger(__name__)

# How long a claimed instance is left alone by other workers (then assumed abandoned).
CLAIM_LEASE = timedelta(seconds=getattr(settings, "MONITOR_LEASE_SECONDS", 90))
FIRST_POLL_DELAY = 2.0
POLL_BACKOFF = 1.5
POLL_CAP = 30.0
MAX_CREATE_ATTEMPTS = 5
MAX_DRIVE_ATTEMPTS = 5
ESTIMATED_BOOT = timedelta(minutes=5)


def _now():
    return timezone.now()


def _enqueue_poll(instance_id: str) -> None:
    from .. import tasks

    queue.send_after_commit(tasks.poll_instance, instance_id)


def auto_stop_deadline(instance: Instance, *, since=None):
    """When this instance becomes idle enough to stop (None when auto-stop does not apply)."""
    if not instance.auto_stop_enabled:
        return None
    base = since or instance.last_used_at or instance.ready_at
    if base is None:
        return None
    minutes = instance.auto_stop_minutes or settings.AUTO_STOP_INACTIVITY_THRESHOLD_MINUTES
    return base + timedelta(minutes=float(minutes))


# --- API-facing operations ------------------------------------------------------------------


def create_instance(data: dict, *, actor: str = "") -> Instance:
    """Persist a new instance (creating) and hand it to a worker after commit."""
    health_config = data.get("health_check_config") or {}
    max_wait = health_config.get("maxWaitTimeMs", health_probe.DEFAULT_CONFIG["maxWaitTimeMs"])
    now = _now()
    try:
        with transaction.atomic():
            instance = Instance.objects.create(
                name=data["name"],
                product_name=data["product_name"],
                template_id=data["template_id"],
                gpu_num=data.get("gpu_num", 1),
                rootfs_size=data.get("rootfs_size", 60),
                region=data.get("region", "CN-HK-01"),
                webhook_url=data.get("webhook_url") or "",
                health_check_config=health_config,
                auto_stop_enabled=data.get("auto_stop_enabled", True),
                auto_stop_minutes=data.get("auto_stop_minutes"),
                billing_mode=data.get("billing_mode") or "",
                status=Status.CREATING,
                desired_status=Desired.RUNNING,
                operation_id=new_operation_id("create"),
                # Due now: if the task below is lost, the monitor sweep provisions it instead.
                next_poll_at=now,
                readiness_deadline=now + ESTIMATED_BOOT + timedelta(milliseconds=max_wait),
                last_change_source="api",
            )
            record_event(
                instance.id,
                source="api",
                reason="create requested",
                to_status=Status.CREATING,
                desired_status=Desired.RUNNING,
                actor=actor,
            )
            _enqueue_poll(instance.id)
    except IntegrityError:
        raise InstanceAlreadyExists(
            details=f"An instance named '{data['name']}' already exists"
        ) from None
    return instance


def estimated_ready_time(instance: Instance):
    return (instance.started_at or instance.created_at or _now()) + ESTIMATED_BOOT


def start_instance(
    instance: Instance,
    *,
    health_check_config: dict | None = None,
    target_port: int | None = None,
    webhook_url: str | None = None,
    source: str = "api",
    actor: str = "",
) -> Instance:
    if instance.status not in STARTABLE:
        raise InvalidInstanceState(
            f"Instance cannot be started while {instance.status}",
            details={
                "instanceId": instance.id,
                "status": instance.status,
                "startableFrom": sorted(STARTABLE),
            },
            code="INSTANCE_NOT_STARTABLE",
        )
    if not instance.novita_instance_id:
        raise InvalidInstanceState(
            "Instance was never created upstream; create a new one",
            details={"instanceId": instance.id, "status": instance.status},
            code="INSTANCE_NOT_STARTABLE",
        )
    config = {**(health_check_config or {})}
    if target_port:
        config["targetPort"] = target_port
    max_wait = config.get("maxWaitTimeMs", health_probe.DEFAULT_CONFIG["maxWaitTimeMs"])
    now = _now()
    fields = {
        "desired_status": Desired.RUNNING,
        "operation_id": new_operation_id("start"),
        "health_check_config": config,
        "target_port": config.get("targetPort"),
        "started_at": now,
        "ready_at": None,
        "failure_reason": "",
        "auto_stop_at": None,
        "auto_stop_warned_at": None,
        "readiness_deadline": now + timedelta(milliseconds=max_wait),
        "next_poll_at": now + timedelta(seconds=FIRST_POLL_DELAY),
        "poll_interval": FIRST_POLL_DELAY,
        "drive_attempts": 0,
    }
    if webhook_url:
        fields["webhook_url"] = webhook_url
    updated = transition(
        instance.id,
        expected=STARTABLE,
        to_status=Status.STARTING,
        source=source,
        reason="start requested",
        actor=actor,
        **fields,
    )
    if updated is None:
        raise InvalidInstanceState(
            "Instance changed state meanwhile; try again", code="INSTANCE_STATE_CHANGED"
        )
    _call_upstream_action(updated, "start")
    return updated


def stop_instance(
    instance: Instance,
    *,
    webhook_url: str | None = None,
    source: str = "api",
    reason: str = "stop requested",
    actor: str = "",
    expected=STOPPABLE,
) -> Instance | None:
    """Ask for a stop. Returns None when a concurrent actor already moved the instance.

    A stop already under way (stopping, desired stopped) is returned as it is, with its
    operation id and no new upstream call: a client retrying a stop that answered 502 or
    timed out, while the gateway kept driving it, gets the same answer as the first time.
    """
    if instance.status == Status.STOPPING and instance.desired_status == Desired.STOPPED:
        return instance
    if instance.status not in expected:
        raise InvalidInstanceState(
            f"Instance cannot be stopped while {instance.status}",
            details={
                "instanceId": instance.id,
                "status": instance.status,
                "stoppableFrom": sorted(STOPPABLE),
            },
            code="INSTANCE_NOT_STOPPABLE",
        )
    now = _now()
    fields = {
        "desired_status": Desired.STOPPED,
        "operation_id": new_operation_id("stop"),
        "next_poll_at": now + timedelta(seconds=FIRST_POLL_DELAY),
        "poll_interval": FIRST_POLL_DELAY,
        "auto_stop_at": None,
        "drive_attempts": 0,
    }
    if webhook_url:
        fields["webhook_url"] = webhook_url
    updated = transition(
        instance.id,
        expected=expected,
        to_status=Status.STOPPING,
        source=source,
        reason=reason,
        actor=actor,
        **fields,
    )
    if updated is None:
        return None
    if updated.novita_instance_id:
        _call_upstream_action(updated, "stop")
    return updated


def delete_instance(instance: Instance, *, source: str = "api", actor: str = "") -> Instance:
    """Terminate: delete upstream (disks too) and end in `terminated`.

    Idempotent: an instance already terminated, or whose termination is under way, is returned
    as it is with no new upstream call, so a client may safely retry a DELETE.
    """
    if _terminating(instance):
        return instance
    now = _now()
    if not instance.novita_instance_id:
        updated = transition(
            instance.id,
            expected=DELETABLE,
            to_status=Status.TERMINATED,
            source=source,
            reason="terminated before it existed upstream",
            actor=actor,
            desired_status=Desired.TERMINATED,
            next_poll_at=None,
            stopped_at=now,
            auto_stop_at=None,
        )
        return updated or Instance.objects.get(pk=instance.pk)
    updated = transition(
        instance.id,
        expected=DELETABLE,
        to_status=Status.STOPPING,
        source=source,
        reason="terminate requested",
        actor=actor,
        desired_status=Desired.TERMINATED,
        operation_id=new_operation_id("delete"),
        next_poll_at=now + timedelta(seconds=FIRST_POLL_DELAY),
        poll_interval=FIRST_POLL_DELAY,
        auto_stop_at=None,
        drive_attempts=0,
    )
    if updated is None:
        current = Instance.objects.get(pk=instance.pk)
        if _terminating(current):
            return current  # a concurrent DELETE won; same answer as a retry
        raise InvalidInstanceState(
            "Instance changed state meanwhile; try again", code="INSTANCE_STATE_CHANGED"
        )
    _call_upstream_action(updated, "delete")
    return updated


def _terminating(instance: Instance) -> bool:
    return instance.status == Status.TERMINATED or (
        instance.status == Status.STOPPING and instance.desired_status == Desired.TERMINATED
    )


def _call_upstream_action(instance: Instance, action: str) -> None:
    """Call start/stop/delete upstream (outside any transaction).

    The desired state is already recorded, so a failure here is not lost: the monitor and the
    reconciler drive the instance again. The error still reaches the caller.
    """
    client = get_client()
    method = {
        "start": client.start_instance,
        "stop": client.stop_instance,
        "delete": client.delete_instance,
    }[action]
    try:
        method(instance.novita_instance_id)
    except upstream.NovitaNotFoundError:
        if action == "delete":
            return  # already gone upstream: the monitor will record terminated
        raise
    except upstream.NovitaError as exc:
        note(
            instance,
            source="worker",
            reason=f"upstream {action} failed, will retry: {exc.details()}",
        )
        raise
    finally:
        # Poll soon either way, so the outcome (or a retry) is not left to chance.
        from .. import tasks

        queue.send(tasks.poll_instance, instance.id, countdown=FIRST_POLL_DELAY)


# --- the monitor ----------------------------------------------------------------------------


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
        _check_deadline(instance) or _schedule_next(instance, status=instance.status)
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
    target = from_upstream(
        remote.status,
        current=instance.status,
        desired=instance.desired_status,
        first_boot=instance.ready_at is None and instance.started_at is None,
        has_error=bool(remote.status_error),
    )
    if target == Status.FAILED:
        _fail(instance, f"upstream reported an error: {remote.status_error}", source, observed)
        return

    # Upstream disagrees with what we want: drive it again (bounded), e.g. a stop that failed.
    upstream_value = (remote.status or "").lower()
    if instance.desired_status == Desired.STOPPED and upstream_value == "running":
        _drive_again(instance, "stop", source, observed)
        return
    if instance.desired_status == Desired.TERMINATED and upstream_value in ("running", "exited"):
        _drive_again(instance, "delete", source, observed)
        return
    if (
        instance.desired_status == Desired.RUNNING
        and instance.status == Status.STARTING
        and upstream_value == "exited"
    ):
        _drive_again(instance, "start", source, observed)
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
    if target in TRANSITIONAL and not _check_deadline(instance):
        _schedule_next(instance, status=target)
    elif target not in TRANSITIONAL:
        _release(instance.id, target)


def _check_readiness(instance: Instance, observed: dict, source: str) -> None:
    now = _now()
    if instance.status != Status.HEALTH_CHECKING:
        moved = transition(
            instance.id,
            expected={instance.status},
            to_status=Status.HEALTH_CHECKING,
            source=source,
            reason="upstream reports running; probing ports",
            **observed,
        )
        if moved is None:
            return
        instance = moved
    else:
        update_fields(instance.id, expected_status=instance.status, **observed)
        instance.refresh_from_db()
    results = health_probe.probe(
        instance.port_mappings, instance.health_check_config, instance.target_port
    )
    if all(r.up for r in results):
        ports = ", ".join(f"{r.port}/{r.kind} {r.detail}" for r in results) or "no ports"
        ready = transition(
            instance.id,
            expected={Status.HEALTH_CHECKING},
            to_status=Status.READY,
            source=source,
            reason=f"all probed ports answer ({ports})",
            ready_at=now,
            next_poll_at=None,
            auto_stop_warned_at=None,
        )
        if ready is not None:
            # A heartbeat from before a restart must not make a fresh instance idle at once.
            deadline = auto_stop_deadline(ready, since=max(ready.last_used_at or now, now))
            update_fields(ready.id, expected_status=Status.READY, auto_stop_at=deadline)
            from . import autostop  # autostop builds on lifecycle

            autostop.schedule_wakeup(deadline)
        return
    if _check_deadline(instance):
        return
    delay = (instance.health_check_config or {}).get(
        "retryDelayMs", health_probe.DEFAULT_CONFIG["retryDelayMs"]
    )
    update_fields(
        instance.id,
        expected_status=Status.HEALTH_CHECKING,
        next_poll_at=now + timedelta(milliseconds=delay),
    )


def _check_deadline(instance: Instance) -> bool:
    """Fail an instance whose readiness deadline passed; True when it did."""
    if (
        instance.desired_status == Desired.RUNNING
        and instance.status
        in (Status.CREATING, Status.STARTING, Status.RUNNING, Status.HEALTH_CHECKING)
        and instance.readiness_deadline
        and _now() > instance.readiness_deadline
    ):
        _fail(instance, "not ready before maxWaitTimeMs passed", "monitor", {})
        return True
    return False


def _fail(instance: Instance, reason: str, source: str, observed: dict) -> None:
    transition(
        instance.id,
        expected={instance.status},
        to_status=Status.FAILED,
        source=source,
        reason=reason,
        failure_reason=reason[:2000],
        next_poll_at=None,
        auto_stop_at=None,
        **observed,
    )
    counters.incr("instances:failed")


def _drive_again(instance: Instance, action: str, source: str, observed: dict) -> None:
    if instance.drive_attempts >= MAX_DRIVE_ATTEMPTS:
        _fail(
            instance,
            f"upstream still {observed.get('upstream_status')} after "
            f"{instance.drive_attempts} {action} attempts",
            source,
            observed,
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


def provision(instance: Instance) -> None:
    """Create the instance upstream. Never makes two paid instances for one request: after an
    ambiguous attempt (timeout, 5xx) the name is looked up upstream before creating again."""
    client = get_client()
    attempts = instance.create_attempts
    update_fields(instance.id, expected_status=Status.CREATING, create_attempts=attempts + 1)
    try:
        if attempts > 0:
            existing = client.list_instances(name=instance.name)
            match = next((r for r in existing if r.name == instance.name and r.id), None)
            if match is not None:
                _adopt(instance, match.id, reason="found upstream after an ambiguous create")
                return
        product = catalog.resolve_product(
            instance.product_name,
            instance.region,
            instance.gpu_num,
            billing_mode=instance.billing_mode or None,
        )
        template = catalog.resolve_template(instance.template_id)
        cluster = catalog.resolve_cluster(instance.region)
        rootfs = max(instance.rootfs_size, template.rootfs_size or 0)
        fields = {
            "name": instance.name,
            "productId": product.id,
            "gpuNum": instance.gpu_num,
            "rootfsSize": rootfs,
            "imageUrl": template.image_url,
            "kind": "gpu",
            "clusterId": cluster.id,
        }
        if template.ports:
            fields["ports"] = template.ports
        if template.envs:
            fields["envs"] = template.envs
        if template.command:
            fields["command"] = template.command
        if template.entrypoint:
            fields["entrypoint"] = template.entrypoint
        if template.image_auth_id:
            fields["imageAuthId"] = template.image_auth_id
        if template.min_cuda_version:
            fields["minCudaVersion"] = template.min_cuda_version
        if instance.billing_mode:
            fields["billingMode"] = instance.billing_mode
        update_fields(
            instance.id,
            expected_status=Status.CREATING,
            product_id=(product.id or "")[:100],
            price_per_hour=(catalog.offer_price(product, instance.billing_mode) or 0)
            * instance.gpu_num
            or None,
            cluster_id=(cluster.id or "")[:100],
            cluster_name=(cluster.name or "")[:200],
            image_url=(template.image_url or "")[:500],
        )
        upstream_id = client.create_instance(**fields)
    except upstream.NovitaPermanentError as exc:
        _fail(instance, f"create rejected: {exc.details()}", "worker", {})
        return
    except upstream.NovitaError as exc:
        # A misconfigured gateway (wrong base URL, bad key) created nothing and will not until
        # an operator fixes it: keep trying until the readiness deadline, not a count.
        if isinstance(exc, upstream.NovitaMisconfiguredError):
            if _check_deadline(instance):
                return
        elif attempts + 1 >= MAX_CREATE_ATTEMPTS:
            _fail(instance, f"create failed {attempts + 1} times: {exc.details()}", "worker", {})
            return
        record_event(
            instance.id,
            source="worker",
            reason=f"create attempt {attempts + 1} failed, will retry: {exc.details()}",
            from_status=Status.CREATING,
            to_status=Status.CREATING,
        )
        delay = min(FIRST_POLL_DELAY * POLL_BACKOFF ** (attempts + 1), POLL_CAP)
        update_fields(
            instance.id,
            expected_status=Status.CREATING,
            next_poll_at=_now() + timedelta(seconds=delay),
        )
        return
    _adopt(instance, upstream_id, reason="created upstream")


def _adopt(instance: Instance, upstream_id: str, *, reason: str) -> None:
    adopted = update_fields(
        instance.id,
        expected_status=Status.CREATING,
        novita_instance_id=upstream_id,
        next_poll_at=_now() + timedelta(seconds=FIRST_POLL_DELAY),
        poll_interval=FIRST_POLL_DELAY,
    )
    if not adopted:
        # Terminated (or failed) while the create call was in flight: don't leave a paid
        # instance behind that nobody tracks.
        try:
            get_client().delete_instance(upstream_id)
        except upstream.NovitaError as exc:
            logger.error("could not delete orphan upstream %s: %s", upstream_id, exc.details())
        record_event(
            instance.id,
            source="worker",
            reason=f"deleted upstream {upstream_id}: instance left creating while it was made",
        )
        return
    record_event(
        instance.id,
        source="worker",
        reason=f"{reason} as {upstream_id}",
        from_status=Status.CREATING,
        to_status=Status.CREATING,
        desired_status=instance.desired_status,
    )
