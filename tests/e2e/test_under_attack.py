"""Nothing a client controls can stall auto-stop. Twenty instances whose only port trickles (one
header byte a second, never finishing) and whose webhook receivers trickle the same way, with
the greediest healthCheckConfig the API accepts: other instances still become ready, an idle
one is still auto-stopped within its usual overshoot, /health stays truthful, and every
delivery attempt ends recorded as a timeout. Real processes on loopback (tests/e2e/stack.py).
"""

import json
import time

import pytest

from instances.services.autostop import WAKEUP_MIN_GAP

from .attack import ATTACK_ENV, create, idle_overshoot, start_attack
from .stack import Stack, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

# The documented bound of an auto-stop's lateness: one booked wake-up gap plus a second, plus
# the sweep's own time (bench/autostop_sweep.py); quiet runs measure about 1-2 s.
USUAL_OVERSHOOT = WAKEUP_MIN_GAP.total_seconds() + 5
DELIVERY_DEADLINE_MS = float(ATTACK_ENV["WEBHOOK_TIMEOUT_SECONDS"]) * 1000
OUTBOUND_CONCURRENCY = 4

DELIVERIES = """
import json
from instances.models import WebhookDelivery
rows = WebhookDelivery.objects.filter(instance__name__startswith="attacker-")
print(json.dumps([
    {"state": d.state, "attempts": d.attempts, "log": d.attempt_log} for d in rows
]))
"""


def test_cost_control_and_readiness_hold_under_trickling_peers():
    stack = Stack(step_seconds=0.3, outbound_concurrency=OUTBOUND_CONCURRENCY, extra_env=ATTACK_ENV)
    with stack.running():
        servers, attackers = start_attack(stack)
        receivers = servers[: len(attackers)]
        try:
            wait_until(
                lambda: all(stack.instance(i)["status"] == "health_checking" for i in attackers),
                60,
                interval=1,
                message="attackers probing",
            )
            keepers = [create(stack, f"keeper-{i}", autoStopEnabled=False) for i in range(2)]
            idle = idle_overshoot(stack, "idle-victim")
            for keeper in keepers:
                stack.wait_status(keeper, "ready", timeout=60)
            assert idle["ready_seconds"] < 45, idle
            assert 0 <= idle["overshoot_seconds"] < USUAL_OVERSHOOT, idle

            # /health answers promptly and tells the truth: cost control is up and not
            # waiting, the outbound queues are reported with their depth and age.
            started = time.monotonic()
            health = stack.api("GET", "/health")
            assert time.monotonic() - started < 5
            job_queue = health.json()["dependencies"]["jobQueue"]
            cost = job_queue["queues"]["cost_control"]
            assert cost["status"] == "up" and cost["worker"]["status"] == "up"
            assert (cost["oldestTaskAgeSeconds"] or 0) < 10
            assert job_queue["status"] in ("up", "degraded")
            for name in ("webhooks", "probes"):
                assert isinstance(job_queue["queues"][name]["depth"], int)

            # The attackers never pass as ready, and every delivery attempt to a trickling
            # receiver is recorded, as a timeout, cut at its deadline.
            assert {stack.instance(i)["status"] for i in attackers} == {"health_checking"}
            wait_until(
                lambda: all(r.requests for r in receivers), 60, message="every receiver tried"
            )
            time.sleep(DELIVERY_DEADLINE_MS / 1000 + 1)
            # Receivers keep being tried while the log is read (a shell takes a second or two):
            # count what they received before and after that read.
            received_before = sum(r.requests for r in receivers)
            deliveries = json.loads(stack.shell(DELIVERIES))
            received_after = sum(r.requests for r in receivers)
            attempts = [entry for d in deliveries for entry in d["log"]]
            assert deliveries and all(d["state"] != "delivered" for d in deliveries)
            assert attempts
            for entry in attempts:
                assert entry["statusCode"] is None, entry
                assert entry["error"].startswith("DeadlineExceeded"), entry
                assert entry["durationMs"] < DELIVERY_DEADLINE_MS + 1500, entry
            # Attempts still in flight (at most one per outbound worker slot) are not logged yet.
            assert received_before - OUTBOUND_CONCURRENCY <= len(attempts) <= received_after
        finally:
            for server in servers:
                server.close()
