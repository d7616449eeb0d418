"""What operators do in the admin that the API does not: change auto-stop settings, mark an
instance used, sync it with Novita on demand. (The dashboard's figures are reads: selectors.py.)

Writes follow the same rules as every service: guarded updates, an event for every decision,
no transaction open while Novita is asked.
"""

from __future__ import annotations

import logging

from django.utils import timezone

from ..models import Instance, InstanceEvent
from ..novita import errors as upstream
from ..novita.client import get_client
from . import autostop, monitor
from .transitions import NOT_FOUND_FOR_ID, mark_gone, note, update_fields

logger = logging.getLogger(__name__)

SOURCE = InstanceEvent.Source.ADMIN
# A concurrent status change makes a guarded write miss; re-read and try again a few times.
_WRITE_ATTEMPTS = 3


class AdminOpError(Exception):
    """An operator request that could not be done; the message says why."""


def set_auto_stop(
    instance: Instance, *, enabled: bool, minutes: int | None, actor: str
) -> Instance:
    """Change an instance's auto-stop settings and move its deadline accordingly."""
    for _ in range(_WRITE_ATTEMPTS):
        current = Instance.objects.get(pk=instance.pk)
        current.auto_stop_enabled = enabled
        current.auto_stop_minutes = minutes or None
        deadline = current.auto_stop_deadline()
        moved = deadline != current.auto_stop_at
        fields = {
            "auto_stop_enabled": enabled,
            "auto_stop_minutes": minutes or None,
            "auto_stop_at": deadline,
        }
        if moved:
            # A warning sent for the old deadline says nothing about the new one.
            fields["auto_stop_warned_at"] = None
        if update_fields(current.id, expected_status=current.status, **fields):
            if moved:
                autostop.schedule_wakeup(deadline)
            break
    else:
        raise AdminOpError("its status kept changing; try again")
    if not enabled:
        reason = "auto-stop disabled (exempt)"
    else:
        threshold = f"{minutes} min" if minutes else "the default threshold"
        reason = f"auto-stop enabled after {threshold} idle"
        if deadline:
            reason += f"; next stop at {deadline:%Y-%m-%d %H:%M:%S} UTC"
    note(current, source=SOURCE, reason=reason, actor=actor)
    return Instance.objects.get(pk=instance.pk)


def mark_used(instance: Instance, *, actor: str) -> Instance:
    """An operator's heartbeat: last used now, deadline pushed out, warning cleared.

    The same guarded write as a client's heartbeat (autostop.record_heartbeat), so a slow click
    never rewinds a newer heartbeat; plus an event, since an operator did it.
    """
    used_at = timezone.now()
    _, stored = autostop.record_heartbeat(instance_id=instance.pk, used_at=used_at)
    if stored != used_at:
        raise AdminOpError("a newer heartbeat is already recorded")
    current = Instance.objects.get(pk=instance.pk)
    reason = "marked as used by an operator"
    if current.auto_stop_at and current.auto_stop_applies:
        reason += f"; next auto-stop at {current.auto_stop_at:%Y-%m-%d %H:%M:%S} UTC"
    note(current, source=SOURCE, reason=reason, actor=actor)
    return current


def sync_now(instance: Instance, *, actor: str) -> Instance:
    """Ask Novita about this instance now and fold the answer into our record."""
    if not instance.novita_instance_id:
        raise AdminOpError("not created upstream yet; nothing to sync")
    try:
        remote = get_client().get_instance(instance.novita_instance_id)
    except upstream.NovitaNotFoundError:
        mark_gone(instance, source=SOURCE, evidence=NOT_FOUND_FOR_ID, actor=actor)
        return Instance.objects.get(pk=instance.pk)
    note(
        instance,
        source=SOURCE,
        reason=f"operator sync: upstream says {remote.status or 'nothing'}",
        actor=actor,
    )
    monitor.apply_upstream(instance, remote, source=SOURCE)
    return Instance.objects.get(pk=instance.pk)
