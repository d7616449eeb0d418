"""What /health and /metrics (in ops) learn about instances: registered in apps.py's ready().

ops never imports this app (see ops/registry.py); these functions are how it asks.
"""

from __future__ import annotations

import os

from django.conf import settings
from django.db.models import Count

from ops import metrics, registry

from .models import Instance
from .novita.client import NovitaClient, get_client
from .status import Status

_probe_clients: dict = {}


def _probe_client() -> NovitaClient:
    """A client just for the probe: one short timeout for the whole call, no retries, its own
    (never tripping) breaker.

    The shared client's breaker is left alone so health probes neither trip it nor are refused
    by it: the probe's job is to say whether Novita answers right now.
    """
    timeout = float(settings.HEALTH_UPSTREAM_TIMEOUT_SECONDS)
    signature = (settings.NOVITA_API_BASE_URL, settings.NOVITA_API_KEY, timeout, os.getpid())
    client = _probe_clients.get(signature)
    if client is None:
        _probe_clients.clear()
        client = NovitaClient(
            base_url=settings.NOVITA_API_BASE_URL,
            api_key=settings.NOVITA_API_KEY,
            connect_timeout=min(float(settings.NOVITA_CONNECT_TIMEOUT), timeout),
            read_timeout=timeout,
            # The whole call, not only each socket operation: /health answers within it.
            total_timeout=timeout,
            read_retries=0,
            failure_threshold=1_000_000,
            redis_url="",
            on_call=metrics.observe_upstream,
        )
        _probe_clients[signature] = client
    return client


def probe_upstream() -> None:
    _probe_client().list_clusters()


def breaker_state() -> str:
    return get_client().breaker_state


def instances_by_status() -> dict[str, int]:
    counts = {status.value: 0 for status in Status}
    for row in Instance.objects.values("status").annotate(n=Count("pk")).order_by():
        counts[row["status"]] = row["n"]
    return counts


def register() -> None:
    registry.register(
        probe_upstream=probe_upstream,
        breaker_state=breaker_state,
        instances_by_status=instances_by_status,
    )
