"""Celery tasks: load by id, call a service, declare retries. No logic lives here."""

from celery import shared_task

from .services import autostop, lifecycle, webhooks


@shared_task(name="instances.tasks.poll_instance", ignore_result=True, acks_late=True)
def poll_instance(instance_id: str, lease: str | None = None):
    from django.utils.dateparse import parse_datetime

    instance = lifecycle.claim(instance_id, lease_until=parse_datetime(lease) if lease else None)
    if instance is not None:
        lifecycle.advance(instance)


@shared_task(name="instances.tasks.monitor_sweep", ignore_result=True)
def monitor_sweep():
    for instance_id, lease in lifecycle.claim_due():
        poll_instance.delay(instance_id, lease.isoformat())


@shared_task(name="instances.tasks.auto_stop_sweep", ignore_result=True)
def auto_stop_sweep():
    # Overlapping runs are harmless: each stop is a guarded claim that only one sweep wins.
    autostop.sweep()


@shared_task(
    name="instances.tasks.deliver_webhook",
    ignore_result=True,
    acks_late=True,
)
def deliver_webhook(delivery_id: int):
    # Retries are scheduled in the outbox row (next_attempt_at), picked up by the sweep below.
    webhooks.deliver(delivery_id)


@shared_task(name="instances.tasks.deliver_due_webhooks", ignore_result=True)
def deliver_due_webhooks():
    for delivery_id in webhooks.due_delivery_ids():
        deliver_webhook.delay(delivery_id)


@shared_task(name="instances.tasks.reconcile", ignore_result=True)
def reconcile():
    from .services import reconcile as reconciler

    reconciler.run()


@shared_task(name="instances.tasks.migration_sweep", ignore_result=True)
def migration_sweep():
    from .services import migration

    migration.sweep()
