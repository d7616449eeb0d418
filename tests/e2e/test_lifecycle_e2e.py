"""The whole product over real processes: web, worker, beat and the sandbox upstream.

Promise checked: a client that creates, stops, starts and deletes an instance sees it reach
each state, and receives signed webhooks that verify with the contract's snippet logic.
"""

import hashlib
import hmac

import pytest

from tests.e2e.stack import Stack, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def stack():
    with Stack().running() as s:
        yield s


def verify_webhook_signature(payload: bytes, signature: str, secret: str) -> bool:
    # The contract's JavaScript verification snippet, in Python.
    expected = hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
    return f"sha256={expected}" == signature


def create(stack, name, **extra):
    body = {
        "name": name,
        "productName": "RTX 4090 24GB",
        "templateId": "pytorch-jupyter",
        "webhookUrl": stack.webhooks.url,
        **extra,
    }
    response = stack.api("POST", "/api/instances", json=body)
    assert response.status_code == 201, response.text
    return response.json()["instanceId"]


def test_create_reaches_ready_with_signed_webhooks(stack):
    instance_id = create(stack, "e2e-ready")
    body = stack.wait_status(instance_id, "ready", timeout=90)
    assert body["readyAt"] and body["novitaInstanceId"]
    assert {m["port"] for m in body["portMappings"]} == {8888, 22}
    wait_until(lambda: "ready" in stack.webhooks.statuses(instance_id), 30, message="webhook")
    for received in stack.webhooks.received:
        assert verify_webhook_signature(
            received["raw"], received["headers"]["X-Signature-SHA256"], "e2e-webhook-secret"
        )
    ready = [p for p in stack.webhooks.payloads() if p["status"] == "ready"][0]
    assert ready["data"]["name"] == "e2e-ready"
    assert ready["data"]["portMappings"]


def test_stop_then_start_by_name_then_delete(stack):
    instance_id = create(stack, "e2e-cycle")
    stack.wait_status(instance_id, "ready", timeout=90)

    response = stack.api("POST", f"/api/instances/{instance_id}/stop", json={})
    assert response.status_code == 200, response.text
    stack.wait_status(instance_id, "stopped", timeout=60)

    response = stack.api("POST", "/api/instances/start", json={"instanceName": "e2e-cycle"})
    assert response.status_code == 202, response.text
    stack.wait_status(instance_id, "ready", timeout=90)

    response = stack.api("DELETE", f"/api/instances/{instance_id}")
    assert response.status_code == 202, response.text
    stack.wait_status(instance_id, "terminated", timeout=60)
    wait_until(
        lambda: "terminated" in stack.webhooks.statuses(instance_id),
        30,
        message="terminated webhook",
    )


def test_upstream_create_failure_ends_failed_with_webhook(stack):
    stack.sandbox(
        "POST",
        "/_sandbox/faults",
        json={
            "path": "/gpu/instance/create",
            "status": 400,
            "reason": "INSUFFICIENT_RESOURCE",
            "count": 1,
        },
    )
    instance_id = create(stack, "e2e-fails")
    body = stack.wait_status(instance_id, "failed", timeout=60)
    assert "INSUFFICIENT_RESOURCE" in body["failureReason"]
    wait_until(
        lambda: "failed" in stack.webhooks.statuses(instance_id), 30, message="failed webhook"
    )


def test_polling_does_not_call_upstream(stack):
    instance_id = create(stack, "e2e-poll")
    stack.wait_status(instance_id, "ready", timeout=90)
    before = stack.upstream_calls()["byPath"]
    for _ in range(50):
        assert stack.api("GET", f"/api/instances/{instance_id}").status_code == 200
    after = stack.upstream_calls()["byPath"]
    get_path = next((p for p in after if p.endswith("/gpu/instance")), None)
    extra = (after.get(get_path, 0) - before.get(get_path, 0)) if get_path else 0
    # Background reconciliation may poll a little; 50 client polls must not cause 50 calls.
    assert extra <= 5
