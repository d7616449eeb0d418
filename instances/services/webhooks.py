"""Webhook outbox: rows are written with the status change and delivered after commit.

Delivery is at-least-once: every attempt is recorded, transient failures are retried with
capped exponential backoff, 4xx answers other than 408/429 are final.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ops import counters, netsafety
from ops.timeutil import iso, iso_now

from ..models import Instance, WebhookDelivery
from ..representations import WebhookInstanceOut
from . import queue

logger = logging.getLogger(__name__)

# A claimed delivery is invisible to other senders for this long (then retried if we died).
_LEASE = timedelta(seconds=60)
_BACKOFF_BASE_SECONDS = 5
_BACKOFF_CAP_SECONDS = 600
_RETRYABLE_4XX = {408, 429}


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _payload(instance: Instance, *, event: str, reason: str = "", extra: dict | None = None):
    data = WebhookInstanceOut.render(instance)
    if reason:
        data["reason"] = reason
    if extra:
        data.update(extra)
    payload = {
        "instanceId": instance.id,
        "status": instance.status,
        "timestamp": iso_now(),
        "data": data,
    }
    if event != "status_change":
        payload["event"] = event
    return payload


def enqueue(instance: Instance, *, event: str, reason: str = "", extra: dict | None = None):
    """Write an outbox row (inside the caller's transaction) and send it after commit."""
    if not instance.webhook_url:
        return None
    body = json.dumps(_payload(instance, event=event, reason=reason, extra=extra))
    delivery = WebhookDelivery.objects.create(
        instance=instance, url=instance.webhook_url, event=event, body=body
    )
    from .. import tasks

    queue.send_after_commit(tasks.deliver_webhook, delivery.pk)
    return delivery


def enqueue_status_change(instance: Instance, *, reason: str = ""):
    return enqueue(instance, event="status_change", reason=reason)


def enqueue_auto_stop_warning(instance: Instance, *, deadline, reason: str):
    return enqueue(
        instance,
        event="auto_stop_warning",
        reason=reason,
        extra={"autoStopAt": iso(deadline)},
    )


def enqueue_many(items, *, event: str) -> list[WebhookDelivery]:
    """`enqueue` for a batch of (instance, reason, extra): one INSERT, not one per instance.

    Sweeps that act on hundreds of instances use it; instances without a URL are skipped.
    """
    rows = [
        WebhookDelivery(
            instance=instance,
            url=instance.webhook_url,
            event=event,
            body=json.dumps(_payload(instance, event=event, reason=reason, extra=extra)),
        )
        for instance, reason, extra in items
        if instance.webhook_url
    ]
    if not rows:
        return []
    created = WebhookDelivery.objects.bulk_create(rows)
    ids = [d.pk for d in created]
    from .. import tasks

    def send():
        for pk in ids:
            queue.send(tasks.deliver_webhook, pk)

    transaction.on_commit(send)
    return created


def _claim(delivery_id: int) -> WebhookDelivery | None:
    now = timezone.now()
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id, state=WebhookDelivery.State.PENDING, next_attempt_at__lte=now
    ).update(next_attempt_at=now + _LEASE)
    if not claimed:
        return None
    return WebhookDelivery.objects.get(pk=delivery_id)


def deliver(delivery_id: int) -> str | None:
    """Make one attempt at a due delivery; returns its state afterwards (None if not ours)."""
    delivery = _claim(delivery_id)
    if delivery is None:
        return None
    body = delivery.body.encode()
    headers = {"Content-Type": "application/json", "User-Agent": "novita-gateway-webhooks/1"}
    if settings.WEBHOOK_SECRET:
        headers["X-Signature-SHA256"] = sign(body, settings.WEBHOOK_SECRET)
    started = timezone.now()
    status_code, error = None, ""
    try:
        response = netsafety.post_json(
            delivery.url, body, headers, timeout=settings.WEBHOOK_TIMEOUT_SECONDS
        )
        status_code = response.status_code
    except netsafety.BlockedDestination as exc:
        error = f"blocked: {exc}"
    except Exception as exc:  # noqa: BLE001 - any network failure is a failed attempt
        error = f"{type(exc).__name__}: {exc}"[:500]
    return _record_attempt(delivery, started, status_code, error)


def _record_attempt(delivery, started, status_code, error) -> str:
    now = timezone.now()
    attempts = delivery.attempts + 1
    log = list(delivery.attempt_log)[-19:] + [
        {
            "at": iso(started),
            "statusCode": status_code,
            "error": error,
            "durationMs": round((now - started).total_seconds() * 1000, 1),
        }
    ]
    fields = {
        "attempts": attempts,
        "attempt_log": log,
        "last_status_code": status_code,
        "last_error": error,
    }
    blocked = error.startswith("blocked:")
    if status_code is not None and 200 <= status_code < 300:
        fields.update(state=WebhookDelivery.State.DELIVERED, delivered_at=now, last_error="")
        counters.incr("webhooks:delivered")
    elif (
        blocked
        or (
            status_code is not None
            and 400 <= status_code < 500
            and status_code not in _RETRYABLE_4XX
        )
        or attempts >= settings.WEBHOOK_MAX_ATTEMPTS
    ):
        fields["state"] = WebhookDelivery.State.FAILED
        counters.incr("webhooks:failed")
        logger.warning(
            "webhook delivery %s failed for good after %s attempts", delivery.pk, attempts
        )
    else:
        delay = min(_BACKOFF_BASE_SECONDS * 2 ** (attempts - 1), _BACKOFF_CAP_SECONDS)
        fields["next_attempt_at"] = now + timedelta(seconds=delay)
        counters.incr("webhooks:retried")
    WebhookDelivery.objects.filter(pk=delivery.pk).update(**fields)
    return fields.get("state", WebhookDelivery.State.PENDING)


def due_delivery_ids(limit: int = 500) -> list[int]:
    return list(
        WebhookDelivery.objects.filter(
            state=WebhookDelivery.State.PENDING, next_attempt_at__lte=timezone.now()
        )
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
