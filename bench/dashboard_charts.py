"""The operator dashboard's charts at fleet scale (database only, no upstream).

For 1,000 and 10,000 instances, each with a month of history (8 status changes: created, ready,
auto-stopped, stopped, started, ready, stopped by the API, and a few failed webhooks), prints:
  - the time to compute the chart figures (selectors.charts) and to draw the three SVGs;
  - the database queries it takes: must not grow with the fleet;
  - the size of the SVG the page inlines.

Run:  .venv/bin/python bench/dashboard_charts.py          (SQLite, a temporary file)
      DATABASE_URL=postgres://postgres@127.0.0.1:5432/novita_gateway_bench \\
          .venv/bin/python bench/dashboard_charts.py      (PostgreSQL, created and dropped)
Target: figures and drawing under 2 s for 10,000 instances; the same query count for both.
The dashboard keeps the figures for a minute (selectors.dashboard_charts), so this is the cost
of at most one page load a minute; most of it is the database layer reading the month's events.
"""

from __future__ import annotations

import os
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
TARGET_SECONDS = 2.0

SCRATCH, IS_POSTGRES = django_in_scratch("charts-bench-")

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

from instances import charts, selectors  # noqa: E402
from instances.models import Instance, InstanceEvent, WebhookDelivery  # noqa: E402
from instances.status import Status  # noqa: E402

HISTORY = [  # (hours after creation, from, to, source)
    (0, "", Status.CREATING, "api"),
    (0.1, Status.CREATING, Status.READY, "monitor"),
    (5, Status.READY, Status.STOPPING, "auto-stop"),
    (5.1, Status.STOPPING, Status.STOPPED, "monitor"),
    (30, Status.STOPPED, Status.STARTING, "api"),
    (30.1, Status.STARTING, Status.READY, "monitor"),
    (40, Status.READY, Status.STOPPING, "api"),
    (40.1, Status.STOPPING, Status.STOPPED, "monitor"),
]


def seed(count: int, rng: random.Random) -> None:
    Instance.objects.all().delete()
    now = timezone.now()
    instances, events, deliveries = [], [], []
    for index in range(count):
        created = now - timedelta(hours=rng.uniform(45, 29 * 24))
        instance = Instance(
            name=f"bench-{index}",
            product_name="RTX 4090 24GB",
            template_id="pytorch-jupyter",
            status=Status.STOPPED,
            price_per_hour=rng.choice([21000, 35000, 86000]),
            created_at=created,
        )
        instances.append(instance)
        for hours, before, after, source in HISTORY:
            events.append(
                InstanceEvent(
                    instance=instance,
                    created_at=created + timedelta(hours=hours),
                    from_status=before,
                    to_status=after,
                    source=source,
                    reason="bench",
                )
            )
        if index % 10 == 0:
            deliveries.append(
                WebhookDelivery(
                    instance=instance,
                    url="https://hooks.example.com/h",
                    body="{}",
                    state=WebhookDelivery.State.FAILED,
                    created_at=created + timedelta(hours=1),
                )
            )
    Instance.objects.bulk_create(instances, batch_size=2000)
    InstanceEvent.objects.bulk_create(events, batch_size=5000)
    WebhookDelivery.objects.bulk_create(deliveries, batch_size=2000)


def measure(count: int) -> dict:
    seed(count, random.Random(count))
    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        data = selectors.charts()
        figures = time.perf_counter() - started
    started = time.perf_counter()
    svgs = charts.render_all(data)
    drawing = time.perf_counter() - started
    return {
        "fleet": count,
        "figures_s": figures,
        "drawing_s": drawing,
        "queries": len(queries),
        "svg_kib": sum(len(s) for s in svgs) / 1024,
        "spend_usd": sum(data.spend_usd),
    }


def main() -> int:
    try:
        call_command("migrate", verbosity=0)
        results = [measure(count) for count in FLEETS]
    finally:
        connection.close()
        if IS_POSTGRES:
            postgres_bench_database("drop")
        shutil.rmtree(SCRATCH, ignore_errors=True)
    engine = "PostgreSQL" if IS_POSTGRES else "SQLite"
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"Dashboard charts ({engine}, 8 status changes per instance over the month)")
    print(f"machine: {os.cpu_count()} cores, load average {load} (figures scale with it)")
    print(f"{'instances':>10} {'figures':>9} {'drawing':>9} {'queries':>8} {'svg KiB':>8}")
    for r in results:
        print(
            f"{r['fleet']:>10,} {r['figures_s']:>8.3f}s {r['drawing_s']:>8.3f}s "
            f"{r['queries']:>8} {r['svg_kib']:>8.1f}"
        )
    worst = max(r["figures_s"] + r["drawing_s"] for r in results)
    same_queries = len({r["queries"] for r in results}) == 1
    met = worst < TARGET_SECONDS and same_queries
    print(
        f"target: figures + drawing < {TARGET_SECONDS:g} s at {FLEETS[-1]:,} instances "
        f"({worst:.2f} s), same query count for every fleet ({same_queries}): "
        f"{'met' if met else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
