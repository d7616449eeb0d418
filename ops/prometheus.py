"""/metrics: Prometheus families built at scrape time from the shared counters (ops/metrics.py),
so any process can answer for all of them. Instance figures come through ops/registry.py.
"""

from __future__ import annotations

import logging

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from . import caching, registry
from .metrics import (
    REQUEST_BUCKETS,
    UPSTREAM_BUCKETS,
    by_status,
    jobs_by_type,
    system,
    totals,
)


def _histogram(all_totals, prefix: str, bounds: tuple[float, ...]) -> tuple[list, float]:
    running = 0.0
    buckets = []
    for bound in bounds:
        running += all_totals.get(f"{prefix}:le:{bound}", 0)
        buckets.append((str(bound), running))
    running += all_totals.get(f"{prefix}:le:inf", 0)
    buckets.append(("+Inf", running))
    return buckets, running


class GatewayCollector:
    """Builds every family at scrape time from the shared counters, so any process can answer."""

    def collect(self):
        all_totals = totals()

        requests = CounterMetricFamily(
            "ngw_http_requests", "HTTP responses by status class", labels=["status_class"]
        )
        for klass, count in by_status(all_totals).items():
            requests.add_metric([klass], count)
        yield requests

        buckets, _count = _histogram(all_totals, "requests", REQUEST_BUCKETS)
        latency = HistogramMetricFamily(
            "ngw_http_request_duration_seconds", "HTTP request latency, seconds"
        )
        latency.add_metric([], buckets, all_totals.get("requests:duration_ms_total", 0) / 1000.0)
        yield latency

        yield from self._upstream(all_totals)

        breaker = GaugeMetricFamily(
            "ngw_circuit_breaker_state",
            "Upstream circuit breaker: 1 for the current state",
            labels=["state"],
        )
        state = registry.read("breaker_state")
        if state is not None:
            for name in ("closed", "open", "half-open"):
                breaker.add_metric([name], 1.0 if state == name else 0.0)
        yield breaker

        # Logged as a warning: a scrape without it means the database did not answer.
        instances = registry.read("instances_by_status", failure_level=logging.WARNING)
        if instances is not None:
            family = GaugeMetricFamily(
                "ngw_instances", "Instances by gateway status", labels=["status"]
            )
            for status, count in instances.items():
                family.add_metric([status], count)
            yield family

        jobs = CounterMetricFamily("ngw_jobs", "Celery tasks finished, by type", labels=["type"])
        for job_type, count in jobs_by_type(all_totals).items():
            jobs.add_metric([job_type], count)
        yield jobs
        yield CounterMetricFamily(
            "ngw_jobs_failed", "Celery tasks that failed", value=all_totals.get("jobs:failed", 0)
        )
        yield CounterMetricFamily(
            "ngw_autostop_stopped",
            "Instances stopped by auto-stop",
            value=all_totals.get("autostop:stopped", 0),
        )
        webhooks = CounterMetricFamily(
            "ngw_webhook_deliveries", "Webhook deliveries by outcome", labels=["outcome"]
        )
        for outcome in ("delivered", "failed"):
            webhooks.add_metric([outcome], all_totals.get(f"webhooks:{outcome}", 0))
        yield webhooks
        yield CounterMetricFamily(
            "ngw_rate_limited",
            "Requests refused with 429 by the rate limiter",
            value=all_totals.get("ratelimit:rejected", 0),
        )

        cache_requests = CounterMetricFamily(
            "ngw_cache_requests", "Named cache reads", labels=["cache", "result"]
        )
        cache_entries = GaugeMetricFamily(
            "ngw_cache_entries", "Entries in each named cache", labels=["cache"]
        )
        for name, stats in caching.stats(all_totals).items():
            cache_requests.add_metric([name, "hit"], stats["hits"])
            cache_requests.add_metric([name, "miss"], stats["misses"])
            cache_entries.add_metric([name], stats["size"])
        yield cache_requests
        yield cache_entries

        sysinfo = system()
        yield GaugeMetricFamily(
            "ngw_process_resident_memory_bytes",
            "Resident memory of the process that answered this scrape",
            value=sysinfo["rss"],
        )
        yield GaugeMetricFamily(
            "ngw_system_memory_used_bytes", "Machine memory in use", value=sysinfo["system_used"]
        )
        yield GaugeMetricFamily(
            "ngw_system_cpu_percent", "Machine CPU busy percent", value=sysinfo["cpu_percent"]
        )

    @staticmethod
    def _upstream(all_totals):
        ops = sorted(
            {
                key.split(":")[1]
                for key in all_totals
                if key.startswith("upstream:") and key.endswith(":count")
            }
        )
        calls = CounterMetricFamily(
            "ngw_upstream_calls",
            "Novita API calls (HTTP attempts) by operation and outcome",
            labels=["operation", "outcome"],
        )
        errors = CounterMetricFamily(
            "ngw_upstream_errors",
            "Novita API calls that did not succeed, by operation",
            labels=["operation"],
        )
        latency = HistogramMetricFamily(
            "ngw_upstream_call_duration_seconds",
            "Novita API call latency, seconds",
            labels=["operation"],
        )
        for op in ops:
            prefix = f"upstream:{op}:outcome:"
            failed = 0.0
            for key, value in sorted(all_totals.items()):
                if key.startswith(prefix):
                    outcome = key[len(prefix) :]
                    calls.add_metric([op, outcome], value)
                    if outcome != "ok":
                        failed += value
            errors.add_metric([op], failed)
            buckets, _count = _histogram(all_totals, f"upstream:{op}", UPSTREAM_BUCKETS)
            latency.add_metric([op], buckets, all_totals.get(f"upstream:{op}:sum", 0))
        yield calls
        yield errors
        yield latency


REGISTRY = CollectorRegistry()
REGISTRY.register(GatewayCollector())
