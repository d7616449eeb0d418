"""Handing work to Celery without letting a broker outage fail the caller.

Every background step also has a sweep that finds it later (monitor: next_poll_at; webhooks:
next_attempt_at), so a message that could not be published is delayed, never lost. A client's
request must therefore not fail just because Redis is briefly away.
"""

from __future__ import annotations

import logging

from celery import current_app
from django.db import transaction

logger = logging.getLogger(__name__)

# Tasks are named, not imported: tasks.py imports the services, so services importing tasks
# would make a cycle.
POLL_INSTANCE = "instances.tasks.poll_instance"
AUTO_STOP_SWEEP = "instances.tasks.auto_stop_sweep"
DELIVER_WEBHOOK = "instances.tasks.deliver_webhook"
PROBE_INSTANCES = "instances.tasks.probe_instances"

_QUICK_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


def send(task_name: str, *args, countdown: float | None = None) -> bool:
    task = current_app.tasks[task_name]
    if countdown and task.app.conf.task_always_eager:
        # Eager mode (tests, one-off scripts) would run a "later" task right now, before its
        # time; the periodic sweeps do that work when it is due instead.
        return False
    try:
        task.apply_async(args, countdown=countdown, retry=True, retry_policy=_QUICK_RETRY)
        return True
    except Exception as exc:  # noqa: BLE001 - any broker failure; the sweep covers for it
        logger.warning(
            "could not enqueue %s (%s); the periodic sweep will pick it up",
            task.name,
            type(exc).__name__,
        )
        return False


def send_after_commit(task_name: str, *args) -> None:
    transaction.on_commit(lambda: send(task_name, *args))
