"""Auto-stop sweep at fleet scale, against the loopback sandbox upstream.

For 1,000 and 10,000 tracked instances (10% idle), rows are bulk-created directly, the sandbox
is seeded with as many running instances (our rows carry their upstream ids), and one sweep
runs. Printed per fleet size:
  - decision time: selecting + verifying + claiming (with the audit events), database only,
    measured separately from the upstream calls;
  - database queries of the whole sweep (CaptureQueriesContext): must not grow with the fleet;
  - upstream stop calls the sandbox received: must equal the idle count;
  - worst-case idle overshoot: every sweep books one extra sweep for the next deadline (at most
    every autostop.WAKEUP_MIN_GAP), so an instance waits at most that gap plus 1 s, then as long
    as the sweep takes to reach its stop call (beat's interval only if that message is lost).
A second sweep right after must stop nothing (no instance is stopped twice).

Run:  .venv/bin/python bench/autostop_sweep.py [-v]                 (SQLite, a temporary file)
      DATABASE_URL=postgres://postgres@127.0.0.1:5432/novita_gateway_bench \\
          .venv/bin/python bench/autostop_sweep.py                  (PostgreSQL)
The PostgreSQL database is created for the run and dropped afterwards; its name must end in
"_bench" so that a real database is never touched.
Targets: decision time < 1 s on both; queries equal for 1,000 and 10,000 tracked; stop calls
equal to the idle count; overshoot within one check interval.
"""

from __future__ import annotations

import random
import shutil
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchutil import django_in_scratch, postgres_bench_database  # noqa: E402

FLEETS = (1_000, 10_000)
IDLE_FRACTION = 0.10
DECISION_TARGET_SECONDS = 1.0
VERBOSE = "-v" in sys.argv[1:]  # also list the sweep's queries with their durations

# Runtime files (counters, file broker) go to a scratch directory, not the developer's var/.
SCRATCH, IS_POSTGRES = django_in_scratch("autostop-bench-")

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

from instances.models import Instance, InstanceEvent, SweepRun  # noqa: E402
from instances.novita.client import reset_client  # noqa: E402
from instances.novita.sandbox import Sandbox  # noqa: E402
from instances.services import autostop  # noqa: E402
from instances.status import Desired, Status  # noqa: E402

STOP_PATH = "/gpu/instance/stop"


def build_fleet(upstream_ids: list[str], idle: int, now) -> None:
    """Bulk-create tracked rows: the first `idle` are past their deadline, the rest are not."""
    interval = timedelta(minutes=float(settings.AUTO_STOP_CHECK_INTERVAL_MINUTES))
    threshold = timedelta(minutes=float(settings.AUTO_STOP_INACTIVITY_THRESHOLD_MINUTES))
    rng = random.Random(42)
    statuses = (Status.READY, Status.READY, Status.READY, Status.RUNNING, Status.HEALTH_CHECKING)
    rows = []
    for n, upstream_id in enumerate(upstream_ids):
        if n < idle:
            # Became due at some point since the previous tick (as in steady operation).
            deadline = now - interval * rng.random()
        else:
            deadline = now + threshold * rng.random() + timedelta(seconds=1)
        last_used = deadline - threshold
        rows.append(
            Instance(
                name=f"bench-{n}",
                novita_instance_id=upstream_id,
                product_name="RTX 4090 24GB",
                template_id="pytorch-jupyter",
                status=statuses[n % len(statuses)],
                desired_status=Desired.RUNNING,
                ready_at=now - timedelta(hours=2),
                last_used_at=last_used,
                auto_stop_at=deadline,
            )
        )
    Instance.objects.bulk_create(rows, batch_size=2000)


def clear_tables() -> None:
    InstanceEvent.objects.all().delete()
    SweepRun.objects.all().delete()
    Instance.objects.all().delete()


def run_fleet(tracked: int) -> dict:
    idle = int(tracked * IDLE_FRACTION)
    clear_tables()
    sb = Sandbox(api_key="k", step_seconds=0.05).serve(host="127.0.0.1", port=0)
    try:
        settings.NOVITA_API_BASE_URL = sb.api_base_url
        settings.NOVITA_API_KEY = "k"
        reset_client()
        ids = sb.seed_instances(tracked, status="running")
        now = timezone.now()
        build_fleet(ids, idle, now)
        # Fresh planner statistics, as a long-running database has them.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        sb.reset_calls()

        wall_start = time.time()
        with CaptureQueriesContext(connection) as ctx:
            result = autostop.sweep(now=now)
        stop_calls = sb.call_count(path=STOP_PATH)
        call_times = [c["ts"] for c in sb.calls(path=STOP_PATH)]

        with CaptureQueriesContext(connection) as again_ctx:
            again = autostop.sweep(now=now)
        stopping = Instance.objects.filter(status=Status.STOPPING).count()
    finally:
        sb.shutdown()
        reset_client()

    interval_s = float(settings.AUTO_STOP_CHECK_INTERVAL_MINUTES) * 60
    to_last_call = (max(call_times) - wall_start) if call_times else 0.0
    return {
        "tracked": tracked,
        "idle": idle,
        "examined": result.examined,
        "stopped": len(result.stopped),
        "failures": len(result.failures),
        "decision_ms": result.decision_seconds * 1000,
        "upstream_s": result.upstream_seconds,
        "sweep_s": result.duration_seconds,
        "queries": len(ctx.captured_queries),
        "query_log": [(q["time"], q["sql"]) for q in ctx.captured_queries],
        "stop_calls": stop_calls,
        "to_last_call_s": max(to_last_call, result.last_stop_call_seconds),
        "interval_s": interval_s,
        "again_stopped": len(again.stopped),
        "again_queries": len(again_ctx.captured_queries),
        "again_calls": sb.call_count(path=STOP_PATH) - stop_calls,
        "stopping_rows": stopping,
    }


def report(r: dict) -> list[str]:
    problems = []
    # Each sweep books an extra sweep for the next deadline (at most every WAKEUP_MIN_GAP, plus
    # the 1 s it waits past the deadline); beat's interval is only the fallback if that message
    # is lost.
    wait_s = autostop.WAKEUP_MIN_GAP.total_seconds() + 1
    overshoot = wait_s + r["to_last_call_s"]
    print(f"\n{r['tracked']:,} tracked instances, {r['idle']:,} idle")
    print(
        f"  decision (select + verify + claim + events): {r['decision_ms']:8.1f} ms"
        f"   [target < {DECISION_TARGET_SECONDS * 1000:.0f} ms]"
    )
    print(
        f"  upstream stop calls:   {r['stop_calls']:,} (idle: {r['idle']:,}) in "
        f"{r['upstream_s']:.2f} s on {autostop.UPSTREAM_WORKERS} threads, "
        f"{r['failures']} failed"
    )
    print(f"  whole sweep:           {r['sweep_s']:.2f} s, examined {r['examined']:,} rows")
    print(f"  database queries:      {r['queries']} for the whole sweep")
    print(
        f"  worst-case overshoot:  wake-up {wait_s:.0f} s + {r['to_last_call_s']:.2f} s to the "
        f"last stop call = {overshoot:.1f} s ({overshoot / r['interval_s']:.3f} intervals of "
        f"{r['interval_s']:.0f} s)"
    )
    print(
        f"  second sweep:          stopped {r['again_stopped']}, {r['again_calls']} upstream "
        f"calls, {r['again_queries']} queries"
    )
    if VERBOSE:
        for seconds, sql in r["query_log"]:
            print(f"    {float(seconds) * 1000:7.1f} ms  {sql[:110]}")
    if r["decision_ms"] >= DECISION_TARGET_SECONDS * 1000:
        problems.append(f"decision time {r['decision_ms']:.0f} ms >= 1 s at {r['tracked']}")
    if r["stop_calls"] != r["idle"] or r["stopped"] != r["idle"]:
        problems.append(f"{r['stop_calls']} stop calls for {r['idle']} idle at {r['tracked']}")
    if r["again_stopped"] or r["again_calls"]:
        problems.append("the second sweep stopped something again")
    if r["stopping_rows"] != r["idle"]:
        problems.append(f"{r['stopping_rows']} rows stopping, expected {r['idle']}")
    return problems


def main() -> int:
    vendor = connection.vendor
    print(f"auto-stop sweep bench on {vendor} ({connection.settings_dict['NAME']})")
    call_command("migrate", verbosity=0, interactive=False)
    problems: list[str] = []
    results = []
    try:
        for tracked in FLEETS:
            result = run_fleet(tracked)
            results.append(result)
            problems += report(result)
    finally:
        connections.close_all()
        if IS_POSTGRES:
            postgres_bench_database("drop")
        shutil.rmtree(SCRATCH, ignore_errors=True)
    counts = {r["tracked"]: r["queries"] for r in results}
    print(
        "\nqueries per sweep by fleet size: "
        + ", ".join(f"{n:,} tracked -> {q}" for n, q in counts.items())
    )
    if len(set(counts.values())) != 1:
        problems.append("the number of queries grows with the fleet")
    if problems:
        print("\nTARGETS MISSED:\n  " + "\n  ".join(problems))
        return 1
    print("all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
