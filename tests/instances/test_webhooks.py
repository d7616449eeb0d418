"""Webhook outbox delivery: signature, retries with backoff, final failures, attempt log."""

import hashlib
import hmac
import json
from datetime import timedelta

import pytest
from django.utils import timezone

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


def test_payload_has_the_contract_shape(delivery):
    payload = json.loads(delivery.body)
    assert set(payload) == {"instanceId", "status", "timestamp", "data"}
    assert set(payload["data"]) >= {"id", "name", "status", "portMappings", "connectionDetails"}
    assert payload["data"]["reason"] == "because"


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
