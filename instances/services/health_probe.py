"""Readiness probing: does each port upstream gave us for an instance answer?

HTTP ports get a GET (2xx-4xx means something is serving); TCP ports such as SSH get a plain
TCP connect, because an HTTP request to an SSH daemon never succeeds. Only endpoints upstream
returned for this instance are ever contacted, and redirects are not followed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from ops import netsafety

DEFAULT_CONFIG = {
    "timeoutMs": 30000,
    "retryAttempts": 3,
    "retryDelayMs": 2000,
    "maxWaitTimeMs": 600000,
}
# One probe never blocks a worker longer than this, whatever timeoutMs says.
_MAX_PROBE_SECONDS = 10.0
_MAX_IN_ROUND_PAUSE = 0.5


@dataclass
class ProbeResult:
    port: int
    kind: str  # "http" or "tcp"
    up: bool
    detail: str


def _host_port(endpoint: str, default_port: int) -> tuple[str, int, str | None]:
    """Accept `scheme://host:port/path` and bare `host:port`; return host, port, scheme."""
    if "://" not in endpoint:
        endpoint = "tcp://" + endpoint
    parts = urlsplit(endpoint)
    scheme = parts.scheme.lower()
    port = parts.port or default_port
    return parts.hostname or "", port, scheme


def _probe_http(url: str, timeout: float) -> tuple[bool, str]:
    # `timeout` bounds the whole attempt (connect, status line and headers), so a service that
    # trickles its answer counts as down for this attempt instead of holding the worker.
    try:
        status = netsafety.http_status(url, timeout)
    except netsafety.DeadlineExceeded:
        return False, "timeout"
    except requests.RequestException as exc:
        return False, type(exc).__name__
    return status < 500, f"HTTP {status}"


def _probe_tcp(host: str, port: int, timeout: float) -> tuple[bool, str]:
    try:
        netsafety.tcp_connects(host, port, timeout)
    except TimeoutError:
        return False, "timeout"
    except OSError as exc:
        return False, type(exc).__name__
    return True, "connected"


def ports_to_probe(port_mappings: list[dict], target_port: int | None) -> list[dict]:
    with_endpoint = [m for m in port_mappings if m.get("endpoint")]
    if target_port:
        return [m for m in with_endpoint if m.get("port") == target_port]
    http = [m for m in with_endpoint if (m.get("type") or "http").lower() == "http"]
    return http or with_endpoint


def probe_once(mapping: dict, timeout: float) -> ProbeResult:
    port = int(mapping.get("port") or 0)
    kind = (mapping.get("type") or "http").lower()
    host, real_port, scheme = _host_port(mapping["endpoint"], port)
    if kind == "http" or scheme in ("http", "https"):
        url = mapping["endpoint"] if scheme in ("http", "https") else f"http://{host}:{real_port}"
        up, detail = _probe_http(url, timeout)
        return ProbeResult(port, "http", up, detail)
    up, detail = _probe_tcp(host, real_port, timeout)
    return ProbeResult(port, "tcp", up, detail)


def probe(port_mappings: list[dict], config: dict, target_port: int | None) -> list[ProbeResult]:
    """One round: every selected port, each retried `retryAttempts` times before it counts
    as down for this round. An empty list means there was nothing to probe."""
    config = {**DEFAULT_CONFIG, **(config or {})}
    timeout = min(config["timeoutMs"] / 1000, _MAX_PROBE_SECONDS)
    pause = min(config["retryDelayMs"] / 1000, _MAX_IN_ROUND_PAUSE)
    results = []
    for mapping in ports_to_probe(port_mappings, target_port or config.get("targetPort")):
        result = probe_once(mapping, timeout)
        for _ in range(int(config["retryAttempts"])):
            if result.up:
                break
            time.sleep(pause)
            result = probe_once(mapping, timeout)
        results.append(result)
    return results
