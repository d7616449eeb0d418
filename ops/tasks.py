"""Operational Celery tasks."""

import time

from celery import shared_task

from . import counters


@shared_task(
    name="ops.tasks.worker_heartbeat", ignore_result=True, soft_time_limit=10, time_limit=20
)
def worker_heartbeat(queue: str | None = None):
    # Sent by beat to each queue: proves broker, beat and a worker consuming that queue are alive.
    now = str(time.time())
    counters.set_value(f"heartbeat:worker:{queue}" if queue else "heartbeat:worker", now)
