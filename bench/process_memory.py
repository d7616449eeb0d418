"""Resident memory of every process (web, worker, beat, sandbox) once 10,000 instances exist.

Starts the real service against the loopback sandbox, reads each process's RSS (with its
children: gunicorn's workers, Celery's pool), then seeds the sandbox with 10,000 running
instances and bulk-creates 10,000 matching local rows, exercises what touches all of them (the
local listing, the upstream listing, the comprehensive listing, and the worker's reconcile of the
whole fleet) and reads RSS again.

    .venv/bin/python bench/process_memory.py [--instances 10000] [--quick]

--quick uses 1,000 instances (a smoke run). No target is named for this figure; it is reported
so growth with the fleet is visible. Uses REDIS_URL / DATABASE_URL from the environment when
set (else SQLite, no Redis). Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.stack import Stack, wait_until  # noqa: E402

ROLES = ("web0", "worker0", "outbound0", "beat", "sandbox")

SEED_ROWS = """
import json
from datetime import timedelta
from django.utils import timezone
from instances.models import Instance
ids = json.loads(open({path!r}).read())
now = timezone.now()
Instance.objects.bulk_create(
    [
        Instance(
            name=f"mem-{{i}}", product_name="RTX 4090 24GB", template_id="pytorch-jupyter",
            status="ready", desired_status="running", novita_instance_id=upstream_id,
            ready_at=now, last_used_at=now, auto_stop_at=now + timedelta(days=1),
        )
        for i, upstream_id in enumerate(ids)
    ],
    batch_size=1000,
)
print(Instance.objects.count())
"""

# Bounded wait, inside one shell, for a reconcile pass that saw the whole fleet.
WAIT_RECONCILE = """
import time
from instances.models import SweepRun
deadline = time.monotonic() + {timeout}
run = None
while time.monotonic() < deadline:
    run = SweepRun.objects.filter(kind="reconcile", examined__gte={n}).order_by("-pk").first()
    if run:
        break
    time.sleep(1)
print(f"{{run.examined}} {{run.duration_ms:.0f}}" if run else "none")
"""


def rss_of(pid: int) -> tuple[int, int]:
    """(process count, RSS bytes) of a process and all its descendants."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return len(procs), total


def snapshot(stack: Stack) -> dict[str, tuple[int, int]]:
    return {role: rss_of(stack.procs[role].pid) for role in ROLES}


def mb(value: int) -> str:
    return f"{value / 1024 / 1024:8.1f} MB"


def timed_get(stack: Stack, path: str) -> tuple[int, float, int]:
    started = time.perf_counter()
    response = stack.api("GET", path, timeout=300)
    elapsed = time.perf_counter() - started
    total = response.json().get("total", -1) if response.status_code == 200 else -1
    return response.status_code, elapsed, total


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="1,000 instances (smoke run)")
    args = parser.parse_args()
    n = 1_000 if args.quick else args.instances

    stack = Stack(
        step_seconds=0.05,
        web_workers=2,
        extra_env={"LOG_LEVEL": "ERROR", "RECONCILE_INTERVAL_SECONDS": 10},
    )
    try:
        stack.start()
        # Let every process finish importing and warm up before the baseline.
        wait_until(lambda: stack.api("GET", "/api/instances").status_code == 200, 30)
        time.sleep(3)
        before = snapshot(stack)

        seeded = stack.sandbox(
            "POST", "/_sandbox/seed", json={"count": n, "status": "running", "namePrefix": "mem"}
        ).json()["ids"]
        ids_file = stack.tmp / "seeded-ids.json"
        ids_file.write_text(json.dumps(seeded))
        rows = int(stack.shell(SEED_ROWS.format(path=str(ids_file)), timeout=600).split()[-1])

        exercised = []
        for path in (
            "/api/instances",
            "/api/instances?source=novita",
            "/api/instances/comprehensive",
            "/api/instances/comprehensive",
        ):
            status, elapsed, total = timed_get(stack, path)
            exercised.append((path, status, elapsed, total))
        reconcile = stack.shell(WAIT_RECONCILE.format(n=n, timeout=300), timeout=400).split()
        time.sleep(2)
        after = snapshot(stack)

        print(
            f"process memory: {n:,} upstream instances and {rows:,} local rows, "
            "gunicorn 2 workers x 4 threads, Celery worker concurrency 2"
        )
        for path, status, elapsed, total in exercised:
            print(f"  GET {path:<32} HTTP {status}  {elapsed * 1000:8.0f} ms  {total:,} rows")
        if reconcile and reconcile[0] != "none":
            print(
                f"  reconcile pass (worker)               examined {int(reconcile[0]):,} in "
                f"{int(reconcile[1]):,} ms"
            )
        else:
            print("  reconcile pass (worker)               did not complete in time")
        print(f"  {'process':<9} {'procs':>5} {'RSS idle':>11} {'RSS with fleet':>15}")
        total_before = total_after = 0
        for role in ROLES:
            count, rss_before = before[role]
            _count, rss_after = after[role]
            total_before += rss_before
            total_after += rss_after
            print(f"  {role:<9} {count:>5} {mb(rss_before)} {mb(rss_after):>15}")
        print(f"  {'total':<9} {'':>5} {mb(total_before)} {mb(total_after):>15}")
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
