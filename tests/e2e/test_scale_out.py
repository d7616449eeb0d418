"""Scale-out: two web processes and two workers (one beat) against one database and one Redis.

What must hold when the service runs as several processes: the rate limit, the circuit breaker,
the caches and the metrics are one per deployment, not one per process, and two workers never
act twice on one instance. Needs REDIS_URL (without Redis, shared state is per machine by
design); skipped without it locally, a failure in CI.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import time

import pytest

from tests.e2e.stack import Stack, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

RATE_LIMIT = 20

if not os.environ.get("REDIS_URL"):
    if os.environ.get("CI"):
        pytest.fail("tests/e2e/test_scale_out.py needs REDIS_URL in CI", pytrace=False)
    pytest.skip("scale-out needs a shared Redis: set REDIS_URL", allow_module_level=True)


class ProxiedStack(Stack):
    """Every test request arrives through a trusted proxy with a client address of its own, so
    the tests' own traffic never uses up the small rate limit the rate-limit test measures."""

    _clients = itertools.cycle(
        f"{net}.{host}" for net in ("192.0.2", "198.51.100") for host in range(1, 255)
    )

    def api(self, method, path, web=0, **kwargs):
        headers = dict(kwargs.pop("headers", None) or {})
        headers.setdefault("X-Forwarded-For", next(self._clients))
        return super().api(method, path, web=web, headers=headers, **kwargs)


@pytest.fixture(scope="module")
def stack():
    with ProxiedStack(
        webs=2,
        workers=2,
        step_seconds=0.1,
        extra_env={
            "RATE_LIMIT_PER_MINUTE": RATE_LIMIT,
            "TRUSTED_PROXIES": "127.0.0.1",
            "NOVITA_CIRCUIT_FAILURE_THRESHOLD": 3,
            "NOVITA_CIRCUIT_RESET_SECONDS": 3,
        },
    ).running() as s:
        yield s


def error_code(response) -> str | None:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def test_rate_limit_is_one_limit_across_web_processes(stack):
    """One client alternating between the two web processes gets RATE_LIMIT_PER_MINUTE requests
    in a minute in total, not that many per process: the window lives in Redis."""
    # Fixed one-minute windows: start well inside one so the count is not split.
    left = 60 - time.time() % 60
    if left < 10:
        time.sleep(left + 0.2)
    client = {"X-Forwarded-For": "203.0.113.77"}
    answers = [
        stack.api("GET", "/api/instances", web=i % 2, headers=client) for i in range(2 * RATE_LIMIT)
    ]
    codes = [r.status_code for r in answers]
    assert codes == [200] * RATE_LIMIT + [429] * RATE_LIMIT, codes
    assert {error_code(r) for r in answers[RATE_LIMIT:]} == {"RATE_LIMIT_EXCEEDED"}
    assert answers[-1].headers["X-RateLimit-Remaining"] == "0"


def test_breaker_opened_through_one_web_is_open_in_the_other(stack):
    """Upstream down, the breaker opened through web 0: web 1's very first upstream-backed
    request answers 503 CIRCUIT_BREAKER_OPEN at once, without trying upstream itself (its own
    breaker would first have to fail, answering 502); both recover once upstream is back."""

    def from_upstream(web):
        return stack.api("GET", "/api/instances?source=novita&syncLocalState=true", web=web)

    stack.fault(down=True)
    try:
        wait_until(
            lambda: error_code(from_upstream(0)) == "CIRCUIT_BREAKER_OPEN",
            20,
            interval=0.1,
            message="the breaker to open through web 0",
        )
        started = time.perf_counter()
        response = from_upstream(1)
        elapsed = time.perf_counter() - started
        assert response.status_code == 503, response.text
        assert error_code(response) == "CIRCUIT_BREAKER_OPEN"
        assert elapsed < 1.0
    finally:
        stack.clear_faults()
    for web in (0, 1):
        wait_until(
            lambda w=web: from_upstream(w).status_code == 200, 20, message=f"web {web} recovers"
        )


def test_metrics_and_caches_are_shared_across_web_processes(stack):
    """Requests served by web 1 show up in the metrics web 0 reports, and an upstream listing
    cached by web 0 is served to web 1 from the shared cache without another upstream pass."""

    def served():
        body = stack.api("GET", "/api/metrics", web=0).json()
        return body["data"]["requests"]["total"]["count"]

    before = served()
    for _ in range(30):
        assert stack.api("GET", "/api/instances", web=1).status_code == 200
    # Each process may reuse its last reading for a moment; the figure must catch up.
    wait_until(lambda: served() - before >= 31, 15, interval=0.5, message="web 1's requests")

    first = stack.api("GET", "/api/instances/comprehensive", web=0)
    assert first.status_code == 200, first.text
    listings = stack.upstream_calls()["byPath"].get("/gpu/instances", 0)
    second = stack.api("GET", "/api/instances/comprehensive", web=1).json()
    assert second["performance"]["cacheHit"] is True
    assert second["performance"]["upstreamPages"] == 0
    # Reconciliation may list upstream meanwhile; web 1's read must not add a pass of its own.
    assert stack.upstream_calls()["byPath"].get("/gpu/instances", 0) - listings <= 1


def test_two_workers_never_act_twice_on_one_instance(stack):
    """Six instances created through both webs and driven by two workers to ready: one upstream
    create per name, every status change recorded and notified exactly once per instance, in
    order."""
    creates_before = stack.upstream_calls()["byPath"].get("/gpu/instance/create", 0)
    names = [f"scaled-{i}" for i in range(6)]
    ids = []
    for index, name in enumerate(names):
        response = stack.api(
            "POST",
            "/api/instances",
            web=index % 2,
            json={
                "name": name,
                "productName": "RTX 4090 24GB",
                "templateId": "pytorch-jupyter",
                "webhookUrl": stack.webhooks.url,
            },
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["instanceId"])
    for instance_id in ids:
        stack.wait_status(instance_id, "ready", timeout=90)
    wait_until(
        lambda: all("ready" in stack.webhooks.statuses(i) for i in ids),
        30,
        message="ready webhooks",
    )

    assert stack.upstream_calls()["byPath"]["/gpu/instance/create"] - creates_before == 6
    for name in names:
        assert len(stack.upstream_named(name)) == 1
    for instance_id in ids:
        notified = collections.Counter(stack.webhooks.statuses(instance_id))
        assert set(notified.values()) == {1}, (instance_id, notified)
        # Two workers deliver, yet each instance's notifications arrive in sequence order.
        payloads = [p for p in stack.webhooks.payloads() if p["instanceId"] == instance_id]
        assert [p["sequence"] for p in payloads] == list(range(1, len(payloads) + 1))

    events = json.loads(
        stack.shell(
            "import json; from instances.models import InstanceEvent as E; "
            f"print(json.dumps([[e.instance_id, e.from_status, e.to_status] for e in "
            f"E.objects.filter(instance_id__in={ids!r}).exclude(from_status='')]))"
        ).strip()
    )
    moves = collections.Counter(tuple(e) for e in events if e[1] != e[2])
    assert moves and set(moves.values()) == {1}, moves
