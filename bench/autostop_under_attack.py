"""Auto-stop overshoot under attack vs quiet, with the real processes on loopback.

Two runs of the whole service (sandbox upstream, gunicorn, the cost-control and outbound Celery
workers as in the Procfile, beat; tests/e2e/stack.py), each measuring IDLE instances that go idle
20 s after they are ready:
  - quiet: nothing else happens;
  - attack: first 20 instances whose only port trickles its answer (one header byte a second,
    never finishing) with the greediest healthCheckConfig the API accepts, each reporting to a
    webhook receiver that trickles the same way (tests/e2e/attack.py).
Printed per run: create-to-ready seconds and the auto-stop overshoot (from the instance's
autoStopAt to the auto-stop's stop event), and, under attack, what /health reports for the
cost-control queue. Target: the overshoot under attack stays within the usual bound (one
booked wake-up gap plus 5 s, 15 s) and within 5 s of the quiet run's.

Run:  .venv/bin/python bench/autostop_under_attack.py [--idle N]
Uses REDIS_URL / DATABASE_URL from the environment when set (else SQLite, file broker).
Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.attack import ATTACK_ENV, ATTACKERS, idle_overshoots, start_attack  # noqa: E402
from tests.e2e.stack import Stack, wait_until  # noqa: E402

WAKEUP_GAP_SECONDS = 10  # instances.services.autostop.WAKEUP_MIN_GAP
BOUND = WAKEUP_GAP_SECONDS + 5


def run(idle: int, attack: bool) -> dict:
    stack = Stack(
        step_seconds=0.3,
        outbound_concurrency=4,
        extra_env={**ATTACK_ENV, "LOG_LEVEL": "ERROR"},
    )
    servers = []
    figures = {}
    with stack.running():
        try:
            if attack:
                servers, attackers = start_attack(stack)
                wait_until(
                    lambda: all(
                        stack.instance(i)["status"] == "health_checking" for i in attackers
                    ),
                    90,
                    interval=1,
                    message="attackers probing",
                )
            results = idle_overshoots(stack, [f"idle-{i}" for i in range(idle)], timeout=120)
            figures["ready"] = [r["ready_seconds"] for r in results]
            figures["overshoot"] = [r["overshoot_seconds"] for r in results]
            started = time.monotonic()
            body = stack.api("GET", "/health").json()
            figures["health_ms"] = (time.monotonic() - started) * 1000
            queues = body["dependencies"]["jobQueue"]["queues"]
            figures["queues"] = {
                name: (q.get("depth"), q.get("oldestTaskAgeSeconds")) for name, q in queues.items()
            }
        finally:
            for server in servers:
                server.close()
    return figures


def show(label: str, figures: dict) -> None:
    ready, overshoot = figures["ready"], figures["overshoot"]
    print(f"{label}:")
    print(f"  create to ready: {', '.join(f'{v:.1f}' for v in ready)} s (max {max(ready):.1f} s)")
    print(
        f"  auto-stop overshoot: {', '.join(f'{v:.1f}' for v in overshoot)} s "
        f"(max {max(overshoot):.1f} s)"
    )
    print(f"  /health answered in {figures['health_ms']:.0f} ms; queues (depth, oldest s):")
    for name, (depth, age) in sorted(figures["queues"].items()):
        print(f"    {name:<13} {depth!s:>4}  {'-' if age is None else f'{age:.1f}'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=3, help="idle instances measured per run")
    args = parser.parse_args()
    quiet = run(args.idle, attack=False)
    show("quiet", quiet)
    attacked = run(args.idle, attack=True)
    show(f"attack ({ATTACKERS} trickling receivers, {ATTACKERS} trickling ports)", attacked)
    worst_quiet, worst_attack = max(quiet["overshoot"]), max(attacked["overshoot"])
    ok = worst_attack <= BOUND and worst_attack <= worst_quiet + 5
    print(
        f"overshoot under attack vs quiet: max {worst_attack:.1f} s vs {worst_quiet:.1f} s "
        f"(target: <= {BOUND} s and within 5 s of quiet)  {'met' if ok else 'NOT MET'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
