"""Client commands: create, start, stop and delete, as asked through the API or the admin.

Each records the desired state with a guarded transition (transitions.py), then calls Novita
outside any transaction; the monitor (monitor.py) follows the instance from there, so a failed
upstream call is retried, never lost. Work is enqueued only after commit.
"""

from __future__ import annotations

from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from novita_gateway.errors import InstanceAlreadyExists, InvalidInstanceState

from ..models import Instance, new_operation_id, readiness_wait
from ..novita import errors as upstream
from ..novita.client import get_client
from ..status import DELETABLE, STARTABLE, STOPPABLE, Desired, Status
from .polling import FIRST_POLL_DELAY, poll_after_commit, poll_soon
from .transitions import create, note, transition

ESTIMATED_BOOT = timedelta(minutes=5)


def _now():
    return timezone.now()


def create_instance(data: dict, *, actor: str = "") -> Instance:
    """Persist a new instance (creating) and hand it to a worker after commit."""
    health_config = data.get("health_check_config") or {}
    now = _now()
    try:
        with transaction.atomic():
            instance = create(
                source="api",
                reason="create requested",
                actor=actor,
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
                to_status=Status.CREATING,
                desired_status=Desired.RUNNING,
                operation_id=new_operation_id("create"),
                # Due now: if the task below is lost, the monitor sweep provisions it instead.
                next_poll_at=now,
                readiness_deadline=now + ESTIMATED_BOOT + readiness_wait(health_config),
            )
            poll_after_commit(instance.id)
    except IntegrityError:
        raise InstanceAlreadyExists(
            details=f"An instance named '{data['name']}' already exists"
        ) from None
    return instance


def _commanded(desired: str, kind: str, now, webhook_url: str | None = None) -> dict:
    """What every start, stop and delete records with its desired state: a new operation, a
    poll soon, a fresh count of drive attempts, no auto-stop deadline (the instance is on its
    way somewhere else), and the webhook URL the command names, if any."""
    fields = {
        "desired_status": desired,
        "operation_id": new_operation_id(kind),
        "next_poll_at": now + timedelta(seconds=FIRST_POLL_DELAY),
        "poll_interval": FIRST_POLL_DELAY,
        "auto_stop_at": None,
        "drive_attempts": 0,
    }
    if webhook_url:
        fields["webhook_url"] = webhook_url
    return fields


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
    now = _now()
    fields = {
        **_commanded(Desired.RUNNING, "start", now, webhook_url),
        "health_check_config": config,
        "target_port": config.get("targetPort"),
        "started_at": now,
        "ready_at": None,
        "failure_reason": "",
        "auto_stop_warned_at": None,
        "readiness_deadline": now + readiness_wait(config),
    }
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
        raise InvalidInstanceState.changed_meanwhile()
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
    fields = _commanded(Desired.STOPPED, "stop", _now(), webhook_url)
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
        **_commanded(Desired.TERMINATED, "delete", now),
    )
    if updated is None:
        current = Instance.objects.get(pk=instance.pk)
        if _terminating(current):
            return current  # a concurrent DELETE won; same answer as a retry
        raise InvalidInstanceState.changed_meanwhile()
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
        poll_soon(instance.id)
