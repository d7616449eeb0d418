"""The monitor's poll schedule, shared by everything that hands an instance to it (client
commands, provisioning, the auto-stop claim) and by the monitor itself.

An instance is followed by its `next_poll_at`: the monitor sweep claims rows whose time has come,
so a poll enqueued here only makes the next look sooner; losing it loses nothing.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings

from . import queue

# How long a claimed instance is left alone by other workers (then assumed abandoned).
CLAIM_LEASE = timedelta(seconds=getattr(settings, "MONITOR_LEASE_SECONDS", 90))
FIRST_POLL_DELAY = 2.0
POLL_BACKOFF = 1.5
POLL_CAP = 30.0


def poll_after_commit(instance_id: str) -> None:
    queue.send_after_commit(queue.POLL_INSTANCE, instance_id)


def poll_soon(instance_id: str) -> None:
    queue.send(queue.POLL_INSTANCE, instance_id, countdown=FIRST_POLL_DELAY)
