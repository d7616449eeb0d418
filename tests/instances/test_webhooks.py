"""Webhook outbox delivery: signature, retries with backoff, final failures, attempt log."""

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from instances.models import WebhookDelivery
from instances.services import webhooks
from ops import counters, netsafety

pytestmark = pytest.mark.django_db


@pytest.fixture
def receiver(monkeypatch):
    """Stands in for netsafety.post_json; answers with the next queued status or error."""
    sent = []
    answers = []

    def post_json(url, body, headers, timeout):
        sent.append({"url": url, "body": body, "headers": headers, "timeout": timeout})
        answer = answers.pop(0) if answers else 200
        if isinstance(answer, Exception):
            raise answer
        return netsafety.SafeResponse(answer, "")

    monkeypatch.setattr(netsafety, "post_json", post_json)
    return sent, answers


@pytest.fixture
def delivery(make_instance):
    instance = make_instance(webhook_url="https://hooks.example.com/h")
    return webhooks.enqueue_status_change(instance, reason="because")


def make_due(delivery):
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())


def test_payload_has_the_contract_shape_plus_event_id_and_sequence(delivery):
    payload = json.loads(delivery.body)
    assert set(payload) == {
        "instanceId",
        "status",
        "timestamp",
        "data",
        "event",
        "deliveryId",
        "sequence",
    }
    assert set(payload["data"]) >= {"id", "name", "status", "portMappings", "connectionDetails"}
    assert payload["data"]["reason"] == "because"
    assert payload["event"] == "instance.status_changed"
    assert payload["deliveryId"] == delivery.delivery_id
    assert payload["deliveryId"].startswith("msg_")
    assert payload["sequence"] == 1


def test_sequence_counts_each_instances_deliveries_separately(make_instance):
    one = make_instance(webhook_url="https://hooks.example.com/1")
    two = make_instance(webhook_url="https://hooks.example.com/2")
    first = webhooks.enqueue_status_change(one)
    webhooks.enqueue_status_change(two)
    warning = webhooks.enqueue(one, event="auto_stop_warning", reason="idle")
    batch = webhooks.enqueue_many([(one, "r", None), (two, "r", None)], event="status_change")
    sequences = [json.loads(d.body)["sequence"] for d in (first, warning, *batch)]
    assert sequences == [1, 2, 3, 2]
    assert json.loads(warning.body)["event"] == "instance.auto_stop_warning"
    ids = set(WebhookDelivery.objects.values_list("delivery_id", flat=True))
    assert len(ids) == WebhookDelivery.objects.count() == 5


def test_standard_webhooks_headers_verify_with_the_reference_library(delivery, receiver, settings):
    settings.WEBHOOK_SECRET = "s3cret"
    sent, _ = receiver
    webhooks.deliver(delivery.pk)
    (request,) = sent
    headers = request["headers"]
    assert headers["webhook-id"] == delivery.delivery_id
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
    payload = Webhook(b"s3cret").verify(request["body"], headers)
    assert payload["deliveryId"] == delivery.delivery_id
    with pytest.raises(WebhookVerificationError):
        Webhook(b"another").verify(request["body"], headers)


def test_a_whsec_secret_is_used_as_the_standard_says(delivery, receiver, settings):
    key = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    settings.WEBHOOK_SECRET = f"whsec_{key}"
    sent, _ = receiver
    webhooks.deliver(delivery.pk)
    (request,) = sent
    Webhook(f"whsec_{key}").verify(request["body"], request["headers"])
    expected = hmac.new(f"whsec_{key}".encode(), request["body"], hashlib.sha256).hexdigest()
    assert request["headers"]["X-Signature-SHA256"] == f"sha256={expected}"


def test_a_replayed_delivery_is_rejected_once_its_timestamp_is_stale(delivery, settings):
    settings.WEBHOOK_SECRET = "s3cret"
    body = delivery.body.encode()
    captured = webhooks.signed_headers(
        delivery.delivery_id, body, at=datetime.now(UTC) - timedelta(minutes=6)
    )
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(b"s3cret").verify(body, captured)


def test_retries_keep_the_delivery_id_and_sign_a_fresh_timestamp(
    delivery, receiver, settings, monkeypatch
):
    settings.WEBHOOK_SECRET = "s3cret"
    sent, answers = receiver
    answers.append(500)
    webhooks.deliver(delivery.pk)
    make_due(delivery)
    later = time.time() + 30
    monkeypatch.setattr(webhooks, "datetime", _FrozenDatetime(later))
    webhooks.deliver(delivery.pk)
    first, second = (r["headers"] for r in sent)
    assert first["webhook-id"] == second["webhook-id"] == delivery.delivery_id
    assert int(second["webhook-timestamp"]) - int(first["webhook-timestamp"]) >= 29
    assert first["webhook-signature"] != second["webhook-signature"]


class _FrozenDatetime:
    def __init__(self, ts):
        self.ts = ts

    def now(self, tz=None):
        return datetime.fromtimestamp(self.ts, tz)


# --- order per instance ---------------------------------------------------------------------


@pytest.fixture
def three_changes(make_instance):
    instance = make_instance(webhook_url="https://hooks.example.com/h")
    return [webhooks.enqueue_status_change(instance, reason=f"change {i}") for i in range(3)]


def sequences(sent):
    return [json.loads(r["body"])["sequence"] for r in sent]


def test_a_later_delivery_waits_while_an_earlier_one_is_retried(three_changes, receiver):
    first, second, third = three_changes
    sent, answers = receiver
    answers.append(500)
    assert webhooks.deliver(first.pk) == WebhookDelivery.State.PENDING  # retry in 5 s
    assert webhooks.deliver(second.pk) == WebhookDelivery.State.PENDING  # held, not sent
    assert webhooks.deliver(third.pk) == WebhookDelivery.State.PENDING  # held, not sent
    assert sequences(sent) == [1]
    held = WebhookDelivery.objects.get(pk=second.pk)
    assert held.held and held.attempts == 0

    make_due(first)
    webhooks.deliver(first.pk)  # delivered: releases 2, which releases 3 (tasks run inline)

    assert sequences(sent) == [1, 1, 2, 3]
    states = set(WebhookDelivery.objects.values_list("state", flat=True))
    assert states == {WebhookDelivery.State.DELIVERED}


def test_a_delivery_given_up_releases_the_next_one(three_changes, receiver):
    first, second, third = three_changes
    sent, answers = receiver
    answers.extend([500, 410])
    webhooks.deliver(first.pk)
    webhooks.deliver(second.pk)
    webhooks.deliver(third.pk)
    make_due(first)
    assert webhooks.deliver(first.pk) == WebhookDelivery.State.FAILED
    assert sequences(sent) == [1, 1, 2, 3]


def test_the_wait_is_bounded_by_webhook_order_wait_seconds(three_changes, receiver, settings):
    settings.WEBHOOK_ORDER_WAIT_SECONDS = 90
    first, second, _ = three_changes
    sent, answers = receiver
    answers.append(500)
    webhooks.deliver(first.pk)
    WebhookDelivery.objects.filter(pk=second.pk).update(
        created_at=timezone.now() - timedelta(seconds=91)
    )
    assert webhooks.deliver(second.pk) == WebhookDelivery.State.DELIVERED
    assert sequences(sent) == [1, 2]
    assert WebhookDelivery.objects.get(pk=first.pk).state == WebhookDelivery.State.PENDING


def test_a_held_delivery_is_rechecked_by_the_sweep_if_its_release_is_lost(three_changes, receiver):
    first, second, _ = three_changes
    sent, answers = receiver
    answers.append(500)
    webhooks.deliver(first.pk)
    webhooks.deliver(second.pk)
    held = WebhookDelivery.objects.get(pk=second.pk)
    assert held.next_attempt_at <= timezone.now() + timedelta(seconds=16)
    # The earlier one ends while no release is sent (e.g. the broker was down).
    WebhookDelivery.objects.filter(pk=first.pk).update(state=WebhookDelivery.State.DELIVERED)
    make_due(second)
    assert second.pk in webhooks.due_delivery_ids()
    assert webhooks.deliver(second.pk) == WebhookDelivery.State.DELIVERED


def test_body_is_signed_with_hmac_sha256_when_secret_set(delivery, receiver, settings):
    settings.WEBHOOK_SECRET = "s3cret"
    sent, _ = receiver
    assert webhooks.deliver(delivery.pk) == WebhookDelivery.State.DELIVERED
    (request,) = sent
    expected = hmac.new(b"s3cret", request["body"], hashlib.sha256).hexdigest()
    assert request["headers"]["X-Signature-SHA256"] == f"sha256={expected}"
    assert request["body"] == delivery.body.encode()
    assert request["timeout"] == settings.WEBHOOK_TIMEOUT_SECONDS


def test_no_signature_header_without_secret(delivery, receiver, settings):
    settings.WEBHOOK_SECRET = ""
    sent, _ = receiver
    webhooks.deliver(delivery.pk)
    assert "X-Signature-SHA256" not in sent[0]["headers"]


def test_server_error_is_retried_with_growing_backoff(delivery, receiver):
    sent, answers = receiver
    answers.extend([500, 503])
    assert webhooks.deliver(delivery.pk) == WebhookDelivery.State.PENDING
    first = WebhookDelivery.objects.get(pk=delivery.pk)
    make_due(delivery)
    webhooks.deliver(delivery.pk)
    second = WebhookDelivery.objects.get(pk=delivery.pk)
    assert second.attempts == 2
    assert (second.next_attempt_at - timezone.now()) > (first.next_attempt_at - timezone.now())
    make_due(delivery)
    assert webhooks.deliver(delivery.pk) == WebhookDelivery.State.DELIVERED
    final = WebhookDelivery.objects.get(pk=delivery.pk)
    assert [a["statusCode"] for a in final.attempt_log] == [500, 503, 200]
    assert len(sent) == 3


@pytest.mark.parametrize("status", [400, 401, 404, 410])
def test_client_error_is_not_retried(delivery, receiver, status):
    _, answers = receiver
    answers.append(status)
    assert webhooks.deliver(delivery.pk) == WebhookDelivery.State.FAILED
    assert counters.get_all().get("webhooks:failed") == 1


@pytest.mark.parametrize("status", [408, 429])
def test_timeout_and_rate_limit_answers_are_retried(delivery, receiver, status):
    _, answers = receiver
    answers.append(status)
    assert webhooks.deliver(delivery.pk) == WebhookDelivery.State.PENDING


def test_connection_error_is_recorded_and_retried(delivery, receiver):
    _, answers = receiver
    answers.append(ConnectionError("refused"))
    assert webhooks.deliver(delivery.pk) == WebhookDelivery.State.PENDING
    row = WebhookDelivery.objects.get(pk=delivery.pk)
    assert "refused" in row.attempt_log[0]["error"]


def test_blocked_destination_fails_without_retry(delivery, receiver):
    _, answers = receiver
    answers.append(netsafety.BlockedDestination("resolves to 10.0.0.1"))
    assert webhooks.deliver(delivery.pk) == WebhookDelivery.State.FAILED


def test_gives_up_after_max_attempts(delivery, receiver, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    _, answers = receiver
    answers.extend([500, 500, 500])
    for _ in range(3):
        make_due(delivery)
        state = webhooks.deliver(delivery.pk)
    assert state == WebhookDelivery.State.FAILED


def test_delivery_not_due_or_claimed_elsewhere_is_skipped(delivery, receiver):
    sent, _ = receiver
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() + timedelta(minutes=1)
    )
    assert webhooks.deliver(delivery.pk) is None
    assert sent == []


def test_due_sweep_lists_only_pending_due_rows(delivery, make_instance):
    other = webhooks.enqueue_status_change(make_instance(webhook_url="https://h.example.com/"))
    WebhookDelivery.objects.filter(pk=other.pk).update(state=WebhookDelivery.State.DELIVERED)
    assert webhooks.due_delivery_ids() == [delivery.pk]
