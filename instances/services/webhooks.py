"""Webhook outbox: rows are written with the status change and delivered after commit.

Delivery is at-least-once: every attempt is recorded, transient failures are retried with
capped exponential backoff, 4xx answers other than 408/429 are final.

What a receiver can rely on:
- every body names its `event` (`instance.status_changed`, `instance.auto_stop_warning`), a
  `deliveryId` (also the `webhook-id` header, the same on every retry, so duplicates can be
  dropped) and the instance's `sequence` number (1, 2, 3... in the order the events happened);
- deliveries of one instance are sent in sequence order: a later one is held while an earlier
  one is still pending (in flight or waiting for a retry), and released the moment the earlier
  one is delivered or given up. The wait is bounded by WEBHOOK_ORDER_WAIT_SECONDS (default 90)
  from the moment the later one was written: long enough to ride out a receiver restart (the
  first four retries come 5, 10, 20 and 40 s apart), short enough that one delivery a receiver
  keeps refusing cannot silence an instance, and that an auto-stop warning (sent 2 minutes
  before the stop by default) still arrives before the stop. Past the bound it is sent anyway;
  `sequence` still lets the receiver put it in place;
- with WEBHOOK_SECRET set, two signatures: the contract's `X-Signature-SHA256` (HMAC of the raw
  body) and Standard Webhooks' `webhook-signature` over `{webhook-id}.{webhook-timestamp}.{body}`,
  whose timestamp lets a receiver reject replays.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from standardwebhooks import Webhook

from novita_gateway.timeutil import iso, iso_now
from ops import counters, netsafety

from ..models import Instance, WebhookDelivery, new_delivery_id
from ..representations import WebhookInstanceOut
from . import queue

logger = logging.getLogger(__name__)

Event = WebhookDelivery.Event
# Names used before events were namespaced; callers may still pass them.
_LEGACY_EVENTS = {
    "status_change": Event.STATUS_CHANGED,
    "auto_stop_warning": Event.AUTO_STOP_WARNING,
}

# A claimed delivery is invisible to other senders for this long (then retried if we died).
_LEASE = timedelta(seconds=60)
_BACKOFF_BASE_SECONDS = 5
_BACKOFF_CAP_SECONDS = 600
_RETRYABLE_4XX = {408, 429}
# A held delivery looks again at least this often, should its release message be lost.
_HOLD_RECHECK = timedelta(seconds=15)


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def standard_key(secret: str) -> bytes:
    """The Standard Webhooks signing key: a `whsec_<base64>` secret is decoded as the standard
    says; any other WEBHOOK_SECRET is used as its UTF-8 bytes."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_") + "==")
    return secret.encode()


def signed_headers(delivery_id: str, body: bytes, *, at: datetime | None = None) -> dict:
    """The headers of one attempt: Standard Webhooks id and timestamp, and both signatures
    when WEBHOOK_SECRET is set. The timestamp is the attempt's, so every retry is fresh."""
    at = at or datetime.now(UTC)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "novita-gateway-webhooks/1",
        "webhook-id": delivery_id,
        "webhook-timestamp": str(int(at.timestamp())),
    }
    secret = settings.WEBHOOK_SECRET
    if secret:
        headers["X-Signature-SHA256"] = sign(body, secret)
        headers["webhook-signature"] = Webhook(standard_key(secret)).sign(
            delivery_id, at, body.decode()
        )
    return headers


def _payload(
    instance: Instance,
    *,
    event: str,
    delivery_id: str,
    sequence: int,
    reason: str = "",
    extra: dict | None = None,
):
    data = WebhookInstanceOut.render(instance)
    if reason:
        data["reason"] = reason
    if extra:
        data.update(extra)
    # The contract's four fields, plus what lets a receiver trust and order deliveries.
    return {
        "event": event,
        "deliveryId": delivery_id,
        "sequence": sequence,
        "instanceId": instance.id,
        "status": instance.status,
        "timestamp": iso_now(),
        "data": data,
    }


def _next_sequences(instance_ids: list[str]) -> dict[str, int]:
    """Take the next sequence number of each instance (inside the caller's transaction).

    The increment and the read back are one atomic block: the UPDATE's row lock (PostgreSQL)
    or the write lock (SQLite) keeps any other writer out until our transaction ends.
    """
    with transaction.atomic():
        Instance.objects.filter(pk__in=instance_ids).update(
            webhook_sequence=F("webhook_sequence") + 1
        )
        return dict(
            Instance.objects.filter(pk__in=instance_ids).values_list("pk", "webhook_sequence")
        )


def _row(instance: Instance, sequence: int, *, event: str, reason: str, extra) -> WebhookDelivery:
    delivery_id = new_delivery_id()
    body = _payload(
        instance,
        event=event,
        delivery_id=delivery_id,
        sequence=sequence,
        reason=reason,
        extra=extra,
    )
    return WebhookDelivery(
        instance=instance,
        url=instance.webhook_url,
        event=event,
        delivery_id=delivery_id,
        sequence=sequence,
        body=json.dumps(body),
    )


def enqueue(instance: Instance, *, event: str, reason: str = "", extra: dict | None = None):
    """Write an outbox row (inside the caller's transaction) and send it after commit."""
    created = enqueue_many([(instance, reason, extra)], event=event)
    return created[0] if created else None


def enqueue_status_change(instance: Instance, *, reason: str = ""):
    return enqueue(instance, event=Event.STATUS_CHANGED, reason=reason)


def enqueue_many(items, *, event: str) -> list[WebhookDelivery]:
    """`enqueue` for a batch of (instance, reason, extra): one INSERT, not one per instance.

    Sweeps that act on hundreds of instances use it; instances without a URL are skipped.
    """
    event = _LEGACY_EVENTS.get(event, event)
    items = [(i, reason, extra) for i, reason, extra in items if i.webhook_url]
    if not items:
        return []
    with transaction.atomic():
        sequences = _next_sequences(list({i.pk for i, _r, _e in items}))
        rows = [
            _row(i, sequences[i.pk], event=event, reason=reason, extra=extra)
            for i, reason, extra in items
            if i.pk in sequences
        ]
        created = WebhookDelivery.objects.bulk_create(rows)
    ids = [d.pk for d in created]

    def send():
        for pk in ids:
            queue.send(queue.DELIVER_WEBHOOK, pk)

    transaction.on_commit(send)
    return created


# --- delivery ---------------------------------------------------------------------------------


def _claim(delivery_id: int) -> WebhookDelivery | None:
    now = timezone.now()
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id, state=WebhookDelivery.State.PENDING, next_attempt_at__lte=now
    ).update(next_attempt_at=now + _LEASE, held=False)
    if not claimed:
        return None
    return WebhookDelivery.objects.get(pk=delivery_id)


def _earlier_pending(delivery: WebhookDelivery) -> WebhookDelivery | None:
    return (
        WebhookDelivery.objects.filter(
            instance_id=delivery.instance_id,
            state=WebhookDelivery.State.PENDING,
            sequence__lt=delivery.sequence,
        )
        .order_by("sequence")
        .first()
    )


def _order_deadline(delivery: WebhookDelivery) -> datetime:
    return delivery.created_at + timedelta(seconds=float(settings.WEBHOOK_ORDER_WAIT_SECONDS))


def _hold(delivery: WebhookDelivery, blocker: WebhookDelivery) -> None:
    """Put a claimed delivery back to wait for `blocker`, then close the race with its release.

    Guarded by our own lease, so a release that came in meanwhile is not undone. If the blocker
    finished between our look and our hold, its release found nothing held: look again.
    """
    now = timezone.now()
    until = min(
        max(blocker.next_attempt_at, now + timedelta(seconds=1)),
        now + _HOLD_RECHECK,
        _order_deadline(delivery),
    )
    WebhookDelivery.objects.filter(
        pk=delivery.pk,
        state=WebhookDelivery.State.PENDING,
        next_attempt_at=delivery.next_attempt_at,
    ).update(next_attempt_at=until, held=True)
    if _earlier_pending(delivery) is None:
        _release(delivery.pk)


def _release(pk: int) -> None:
    """Make a held delivery due now and send it (only one releaser wins the guarded update)."""
    released = WebhookDelivery.objects.filter(
        pk=pk, state=WebhookDelivery.State.PENDING, held=True
    ).update(held=False, next_attempt_at=timezone.now())
    if released:
        queue.send(queue.DELIVER_WEBHOOK, pk)


def _release_next(instance_id: str) -> None:
    """After a delivery is done (delivered or given up), send the instance's next one."""
    head = (
        WebhookDelivery.objects.filter(instance_id=instance_id, state=WebhookDelivery.State.PENDING)
        .order_by("sequence")
        .values_list("pk", "held")
        .first()
    )
    if head is not None and head[1]:
        _release(head[0])


def deliver(delivery_id: int) -> str | None:
    """Make one attempt at a due delivery; returns its state afterwards (None if not ours).

    A delivery whose instance still has an earlier one pending is held instead (not an
    attempt), until that one is done or WEBHOOK_ORDER_WAIT_SECONDS have passed.
    """
    delivery = _claim(delivery_id)
    if delivery is None:
        return None
    blocker = _earlier_pending(delivery)
    if blocker is not None and timezone.now() < _order_deadline(delivery):
        _hold(delivery, blocker)
        return WebhookDelivery.State.PENDING
    body = delivery.body.encode()
    headers = signed_headers(delivery.delivery_id, body)
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
    state = _record_attempt(delivery, started, status_code, error)
    if state != WebhookDelivery.State.PENDING:
        _release_next(delivery.instance_id)
    return state


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
