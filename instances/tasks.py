"""Celery tasks: load by id, call a service, declare retries. No logic lives here.

Every task has a soft and a hard time limit (seconds), by kind. Outbound calls already carry
wall-clock deadlines; the limits are the backstop that frees a worker whatever else hangs (a
database lock, a bug). A soft limit raises inside the task (SoftTimeLimitExceeded); the hard one
kills the worker child. Nothing is lost either way: every step is found again by its sweep.
"""

from celery import shared_task
from django.conf import settings
from django.utils.dateparse import parse_datetime

from .services import autostop, migration, monitor, readiness, webhooks
from .services import reconcile as reconciler

# One monitor step must end before its claim (MONITOR_LEASE_SECONDS, 90 s by default) runs out,
# or a second worker would take the instance while the first still works on it.
_STEP_HARD = max(10.0, float(settings.MONITOR_LEASE_SECONDS) - 10)
_STEP_SOFT = _STEP_HARD - 5
# A delivery attempt: its deadline plus the database work around it.
_DELIVERY_SOFT = float(settings.WEBHOOK_TIMEOUT_SECONDS) + 15
_DELIVERY_HARD = _DELIVERY_SOFT + 15


@shared_task(
    name="instances.tasks.poll_instance",
    ignore_result=True,
    acks_late=True,
    soft_time_limit=_STEP_SOFT,
    time_limit=_STEP_HARD,
)
def poll_instance(instance_id: str, lease: str | None = None):
    instance = monitor.claim(instance_id, lease_until=parse_datetime(lease) if lease else None)
    if instance is not None:
        monitor.advance(instance)


@shared_task(
    name="instances.tasks.monitor_sweep", ignore_result=True, soft_time_limit=30, time_limit=45
)
def monitor_sweep():
    for instance_id, lease in monitor.claim_due():
        poll_instance.delay(instance_id, lease.isoformat())


@shared_task(
    name="instances.tasks.probe_instances",
    ignore_result=True,
    # Probes of many instances run side by side: a sweep claims for one round's time and
    # lets the last rounds end (readiness.SWEEP_SECONDS).
    soft_time_limit=readiness.SWEEP_SECONDS + 15,
    time_limit=readiness.SWEEP_SECONDS + 30,
)
def probe_instances():
    # Runs on the probes queue; overlapping sweeps are harmless (each instance is claimed).
    readiness.probe_due()


@shared_task(
    name="instances.tasks.auto_stop_sweep", ignore_result=True, soft_time_limit=240, time_limit=270
)
def auto_stop_sweep():
    # Overlapping runs are harmless: each stop is a guarded claim that only one sweep wins.
    autostop.sweep()


@shared_task(
    name="instances.tasks.deliver_webhook",
    ignore_result=True,
    acks_late=True,
    soft_time_limit=_DELIVERY_SOFT,
    time_limit=_DELIVERY_HARD,
)
def deliver_webhook(delivery_id: int):
    # Retries are scheduled in the outbox row (next_attempt_at), picked up by the sweep below.
    webhooks.deliver(delivery_id)


@shared_task(
    name="instances.tasks.deliver_due_webhooks",
    ignore_result=True,
    soft_time_limit=30,
    time_limit=45,
)
def deliver_due_webhooks():
    for delivery_id in webhooks.due_delivery_ids():
        deliver_webhook.delay(delivery_id)


@shared_task(
    name="instances.tasks.reconcile", ignore_result=True, soft_time_limit=240, time_limit=270
)
def reconcile():
    reconciler.run()


@shared_task(
    name="instances.tasks.migration_sweep", ignore_result=True, soft_time_limit=120, time_limit=150
)
def migration_sweep():
    migration.sweep()
