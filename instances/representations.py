"""Instances on the wire: the contract's camelCase shapes, built in one place for the API and
for webhook payloads."""

from __future__ import annotations

from django.conf import settings

from ops.timeutil import iso

from .models import Instance
from .status import AUTO_STOP_CANDIDATES


def port_mappings(instance: Instance) -> list[dict]:
    return [
        {"port": m.get("port"), "endpoint": m.get("endpoint"), "type": m.get("type")}
        for m in instance.port_mappings or []
    ]


def connection_details(instance: Instance) -> dict:
    # Only addresses and commands; upstream passwords are never stored, so never shown.
    return {k: v for k, v in (instance.connection_details or {}).items() if v}


def auto_stop_minutes(instance: Instance) -> float:
    if instance.auto_stop_minutes:
        return float(instance.auto_stop_minutes)
    return float(settings.AUTO_STOP_INACTIVITY_THRESHOLD_MINUTES)


def instance_summary(instance: Instance) -> dict:
    """The list shape (contract endpoint 4)."""
    data = {
        "id": instance.id,
        "name": instance.name,
        "status": instance.status,
        "gpuNum": instance.gpu_num,
        "region": instance.region,
        "portMappings": port_mappings(instance),
        "createdAt": iso(instance.created_at),
    }
    _optional_times(instance, data)
    return data


def instance_detail(instance: Instance) -> dict:
    """The detail shape (contract endpoint 3), plus a few fields the contract leaves open."""
    data = {
        "id": instance.id,
        "name": instance.name,
        "status": instance.status,
        "desiredStatus": instance.desired_status,
        "gpuNum": instance.gpu_num,
        "region": instance.region,
        "productName": instance.product_name,
        "templateId": instance.template_id,
        "rootfsSize": instance.rootfs_size,
        "novitaInstanceId": instance.novita_instance_id,
        "portMappings": port_mappings(instance),
        "connectionDetails": connection_details(instance),
        "createdAt": iso(instance.created_at),
        "autoStopEnabled": instance.auto_stop_enabled,
        "autoStopMinutes": auto_stop_minutes(instance),
    }
    _optional_times(instance, data)
    if instance.failure_reason:
        data["failureReason"] = instance.failure_reason
    return data


def _optional_times(instance: Instance, data: dict) -> None:
    if instance.ready_at:
        data["readyAt"] = iso(instance.ready_at)
    if instance.last_used_at:
        data["lastUsedAt"] = iso(instance.last_used_at)
    if (
        instance.auto_stop_at
        and instance.auto_stop_enabled
        and instance.status in AUTO_STOP_CANDIDATES
        and settings.AUTO_STOP_ENABLED
    ):
        data["autoStopAt"] = iso(instance.auto_stop_at)
    if instance.stopped_at:
        data["stoppedAt"] = iso(instance.stopped_at)
