"""Operational Celery tasks."""

import time

from celery import shared_task

from . import counters


@shared_task(name="ops.tasks.worker_heartbeat", ignore_result=True)
def worker_heartbeat():
    # Run by a worker on beat's schedule: proves broker, beat and a worker are all alive.
    counters.set_value("heartbeat:worker", str(time.time()))
