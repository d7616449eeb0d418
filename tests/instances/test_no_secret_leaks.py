"""Secrets never leak: across a whole create -> ready -> stop flow, no Novita key, webhook
secret, client API key or instance SSH password appears in any log line, API response,
webhook body, metrics output or the OpenAPI schema."""

import json
import logging

import pytest
from django.utils import timezone

from instances import tasks
from instances.models import Instance, WebhookDelivery
from instances.services import health_probe
from ops import netsafety
from tests.instances.upstream import remote_instance

pytestmark = pytest.mark.django_db

NOVITA_KEY = "nvk-SECRET-7f3a9c1e5b"
WEBHOOK_SECRET = "whs-SECRET-2d8e4f6a0c"
CLIENT_KEY = "ck-SECRET-9b1d3f5e7a"
SSH_PASSWORD = "hunter2-ssh"  # what the fake upstream returns in connectComponentSSH


@pytest.fixture
def secrets_configured(settings):
    settings.NOVITA_API_KEY = NOVITA_KEY
    settings.WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.GATEWAY_API_KEYS = [CLIENT_KEY]
    from instances.novita.client import reset_client

    reset_client()


def test_full_flow_leaks_no_secret(
    api, novita, secrets_configured, caplog, monkeypatch, django_capture_on_commit_callbacks
):
    caplog.set_level(logging.DEBUG)
    sent = []
    monkeypatch.setattr(
        netsafety,
        "post_json",
        lambda url, body, headers, timeout: (
            sent.append((body, headers)) or netsafety.SafeResponse(200, "")
        ),
    )
    monkeypatch.setattr(health_probe, "_probe_http", lambda url, timeout: (True, "HTTP 200"))
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {CLIENT_KEY}")
    novita.catalogue()
    novita.create_returns("nov-secret")
    novita.get_returns(remote_instance("nov-secret", "leak-check", status="running"))
    novita.action_returns("stop")
    seen = []

    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            "/api/instances",
            {
                "name": "leak-check",
                "productName": "RTX 4090 24GB",
                "templateId": "pytorch-jupyter",
                "webhookUrl": "https://hooks.example.com/h",
            },
            format="json",
        )
    assert response.status_code == 201
    seen.append(response.content)
    instance_id = response.json()["instanceId"]
    # The monitor's next steps, as beat would schedule them.
    for _ in range(2):
        Instance.objects.filter(pk=instance_id).update(next_poll_at=timezone.now())
        with django_capture_on_commit_callbacks(execute=True):
            tasks.poll_instance(instance_id)
    assert Instance.objects.get(pk=instance_id).status == "ready"

    seen.append(api.get(f"/api/instances/{instance_id}").content)
    seen.append(api.get("/api/instances").content)
    with django_capture_on_commit_callbacks(execute=True):
        stop = api.post(f"/api/instances/{instance_id}/stop", {}, format="json")
    assert stop.status_code == 200
    seen.append(stop.content)
    # An upstream error must not echo our key back either.
    seen.append(api.post(f"/api/instances/{instance_id}/stop", {}, format="json").content)
    seen.append(api.get("/api/metrics").content)
    seen.append(api.get("/metrics").content)
    seen.append(api.get("/health").content)
    seen.append(api.get("/api/schema/").content)

    assert sent, "webhooks were delivered"
    assert all("X-Signature-SHA256" in headers for _, headers in sent)
    everything = "\n".join(
        [caplog.text]
        + [c.decode(errors="replace") for c in seen]
        + [body.decode() for body, _ in sent]
        + [d.body for d in WebhookDelivery.objects.all()]
        + [json.dumps(list(Instance.objects.values()), default=str)]
    )
    for secret in (NOVITA_KEY, WEBHOOK_SECRET, CLIENT_KEY, SSH_PASSWORD):
        assert secret not in everything, f"{secret} leaked"
    # The upstream really was called with our key: the assertion above is not vacuous.
    assert any(
        c.request.headers.get("Authorization") == f"Bearer {NOVITA_KEY}" for c in novita.mock.calls
    )
