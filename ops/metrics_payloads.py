"""The JSON figures: `GET /api/metrics` and `/api/metrics/summary` bodies' `data`, and the
`performance` and `system` blocks of /health, all derived from the shared counters
(ops/metrics.py). Their schema is ops/serializers.py.
"""

from __future__ import annotations

from . import caching
from .metrics import (
    by_status,
    jobs_by_type,
    maybe_snapshot,
    system,
    totals,
    uptime_seconds,
    window,
)


def _mb(value: float) -> int:
    return round(value / (1024 * 1024))


def performance(all_totals: dict[str, float]) -> dict:
    """The /health `performance` block."""
    rates = window(all_totals)
    return {
        "requestsPerMinute": rates["requestsPerMinute"],
        "averageResponseTime": rates["averageResponseTimeMs"],
        "errorRate": rates["errorRate"],
        "jobProcessingRate": rates["jobsPerMinute"],
    }


def system_block() -> dict:
    """The /health `system` block: machine memory in MB, this process's shared and RSS."""
    sysinfo = system()
    return {
        "memory": {
            "usedMB": _mb(sysinfo["system_used"]),
            "totalMB": _mb(sysinfo["system_total"]),
            "externalMB": _mb(sysinfo["shared"]),
            "rss": _mb(sysinfo["rss"]),
        },
        "cpu": {"usage": sysinfo["cpu_percent"], "loadAverage": sysinfo["load_average"]},
    }


def _figures() -> tuple[dict, dict, dict, dict]:
    """(totals, rates, this process's system figures, cache summary), read once per body."""
    all_totals = totals()
    rates = window(all_totals)
    maybe_snapshot(all_totals)
    return all_totals, rates, system(), caching.summary(all_totals)


def metrics_payload() -> dict:
    """`GET /api/metrics`'s `data`."""
    all_totals, rates, sysinfo, cache = _figures()
    return {
        "requests": {
            "total": {
                "count": int(all_totals.get("requests:total", 0)),
                "rate": rates["requestsPerMinute"],
            },
            "byStatus": by_status(all_totals),
        },
        "jobs": {
            "total": {
                "processed": int(all_totals.get("jobs:total", 0)),
                "rate": rates["jobsPerMinute"],
            },
            "byType": jobs_by_type(all_totals),
        },
        "system": {
            # Node's process.memoryUsage() names, mapped onto this Python process.
            "memory": {
                "heapUsed": sysinfo["private"],
                "heapTotal": sysinfo["rss"],
                "external": sysinfo["shared"],
                "rss": sysinfo["rss"],
            },
            "cpu": {"usage": sysinfo["cpu_percent"], "loadAverage": sysinfo["load_average"]},
            "uptime": uptime_seconds(),
        },
        "cache": {"hitRatio": cache["overallHitRatio"], "totalSize": cache["totalEntries"]},
    }


def summary_payload() -> dict:
    """`GET /api/metrics/summary`'s `data`."""
    all_totals, rates, sysinfo, cache = _figures()
    return {
        "performance": {
            "requestsPerMinute": rates["requestsPerMinute"],
            "averageResponseTimeMs": rates["averageResponseTimeMs"],
            "errorRatePercent": round(rates["errorRate"] * 100, 2),
        },
        "jobs": {"processingRatePerMinute": rates["jobsPerMinute"]},
        "system": {
            "memoryUsageMB": _mb(sysinfo["rss"]),
            "cpuUsagePercent": sysinfo["cpu_percent"],
            "uptimeSeconds": uptime_seconds(),
        },
        "cache": {
            "hitRatePercent": round(cache["overallHitRatio"] * 100, 2),
            "totalSize": cache["totalEntries"],
        },
    }
