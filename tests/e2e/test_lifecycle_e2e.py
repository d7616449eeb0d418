"""The whole product over real processes: web, worker, beat and the sandbox upstream.

Promise checked: a client that creates, stops, starts and deletes an instance sees it reach
each state, and receives signed webhooks that verify with the contract's snippet logic.
"""

import hashlib
import hmac
import importlib.util
import json

import pytest

from tests.e2e.stack import ROOT, Stack, WebhookReceiver, wait_until

# The README's receiver, loaded from its file so the example is what is tested.
_spec = importlib.util.spec_from_file_location(
    "webhook_receiver", ROOT / "docs/webhook_receiver.py"
)
webhook_receiver = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(webhook_receiver)
Receiver, Rejected, verify = (
    webhook_receiver.Receiver,
    webhook_receiver.Rejected,
    webhook_receiver.verify,
)

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


def test_scheduler_reports_running_within_a_minute_of_start(stack):
    # First in the module, so the stack started moments ago; beat's own first auto-stop run
    # would only come after AUTO_STOP_CHECK_INTERVAL_MINUTES (5).
    wait_until(
        lambda: stack.api("GET", "/api/instances/auto-stop/stats").json()["schedulerRunning"],
        60,
        interval=1,
        message="schedulerRunning",
    )


def test_webhooks_arrive_in_order_with_event_id_sequence_and_both_signatures(stack):
    """The receiver refuses the first delivery (503): the later ones wait for its retry, so
    what it accepts comes in sequence order, each verified the way the README's receiver does."""
    hooks = WebhookReceiver()
    try:
        hooks.status = 503
        instance_id = create(stack, "e2e-ordered", webhookUrl=hooks.url)
        wait_until(lambda: hooks.received, 60, message="first delivery")
        hooks.status = 200
        stack.wait_status(instance_id, "ready", timeout=90)
        stack.api("POST", f"/api/instances/{instance_id}/stop", json={}).raise_for_status()
        stack.wait_status(instance_id, "stopped", timeout=60)
        wait_until(
            lambda: "stopped" in [p["status"] for p in accepted(hooks)], 60, message="stopped"
        )

        refused, retried = hooks.received[0], accepted_requests(hooks)[0]
        assert refused["status"] == 503
        assert retried["headers"]["webhook-id"] == refused["headers"]["webhook-id"]
        receiver, secret = Receiver(), "e2e-webhook-secret"
        payloads = [verify(r["raw"], r["headers"], secret) for r in accepted_requests(hooks)]
        assert [p["sequence"] for p in payloads] == list(range(1, len(payloads) + 1))
        assert len({p["deliveryId"] for p in payloads}) == len(payloads)
        assert all(
            p["deliveryId"] == r["headers"]["webhook-id"]
            for p, r in zip(payloads, accepted_requests(hooks), strict=True)
        )
        assert {p["event"] for p in payloads} == {"instance.status_changed"}
        statuses = [p["status"] for p in payloads]
        assert (
            statuses.index("health_checking") < statuses.index("ready") < statuses.index("stopped")
        )
        assert all(receiver.accept(p) for p in payloads)
        assert receiver.latest[instance_id][1] == "stopped"
        with pytest.raises(Rejected):
            verify(retried["raw"] + b" ", retried["headers"], secret)  # altered body
        with pytest.raises(Rejected):
            verify(retried["raw"], {}, secret)  # unsigned
    finally:
        hooks.close()


def accepted_requests(hooks) -> list[dict]:
    return [r for r in hooks.received if r["status"] == 200]


def accepted(hooks) -> list[dict]:
    return [json.loads(r["raw"]) for r in accepted_requests(hooks)]


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

    # Deleting again is idempotent, and the name is free for a new instance.
    again = stack.api("DELETE", f"/api/instances/{instance_id}")
    assert (again.status_code, again.json()["status"]) == (200, "terminated")
    reborn = create(stack, "e2e-cycle")
    assert reborn != instance_id
    # The new instance of the reused name really comes up (and its create is over before the
    # next test injects a one-shot create fault that it would otherwise take).
    stack.wait_status(reborn, "ready", timeout=90)
    events = stack.api("GET", f"/api/instances/{instance_id}/events").json()["events"]
    last_change = next(e for e in events if e.get("fromStatus") != e.get("toStatus"))
    assert last_change["toStatus"] == "terminated"
    assert stack.instance(instance_id)["statusReason"] == last_change["reason"]


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
