"""Readiness probing: does each port upstream gave us for an instance answer?

HTTP ports get a GET (2xx-4xx means something is serving); TCP ports such as SSH get a plain
TCP connect, because an HTTP request to an SSH daemon never succeeds. Only endpoints upstream
returned for this instance are ever contacted, and redirects are not followed.

Endpoints come as Novita gives them: an HTTP port as `https://<instance>-<port>.<cluster>.
gpu-instance.novita.ai` (port 443, behind Novita's edge, which answers 502 while the service
inside is down), a TCP port as `host:port`, and either may come with or without a scheme or a
port (see probe_target). A 5xx (the edge's 502/503/504 in particular) means "not ready yet".
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
# What a client's healthCheckConfig may ask for is clamped here (the API schema says so): one
# attempt at one port lasts at most MAX_ATTEMPT_SECONDS (timeoutMs above it counts as this),
# retries inside a round pause at most MAX_IN_ROUND_PAUSE, and a whole round (every port, every
# retry) ends after ROUND_SECONDS, well below the monitor lease (MONITOR_LEASE_SECONDS, 90 s),
# whatever retryAttempts says; ports it had no time left for count as down for that round.
MAX_ATTEMPT_SECONDS = 10.0
MAX_IN_ROUND_PAUSE = 0.5
ROUND_SECONDS = 30.0
# What Novita's edge answers for an HTTP port whose service is not listening (yet).
EDGE_NOT_READY = frozenset({502, 503, 504})


@dataclass
class ProbeResult:
    port: int
    kind: str  # "http" or "tcp"
    up: bool
    detail: str


@dataclass(frozen=True)
class Target:
    """Where one port is probed: an HTTP(S) URL, or a host and port for a TCP connect."""

    kind: str  # "http" or "tcp"
    host: str
    port: int
    url: str | None = None


def probe_target(endpoint: str, kind: str, port: int) -> Target:
    """Read an endpoint in any form upstream may give it.

    With a scheme: http(s) URLs are probed as given (443 / 80 when they name no port); any
    other scheme (tcp://) is a TCP connect. Without one, an HTTP port is HTTPS on 443 when no
    port is named (Novita's edge form), plain HTTP on a named port other than 443; a TCP port is
    a connect to `host:port`. A TCP endpoint that names no port is tried on the instance's port.
    """
    text = endpoint.strip()
    kind = (kind or "http").lower()
    if "://" in text:
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        host = parts.hostname or ""
        if scheme in ("http", "https"):
            real_port = parts.port or (443 if scheme == "https" else 80)
            return Target("http", host, real_port, text)
        return Target("tcp", host, parts.port or port)
    parts = urlsplit("//" + text)
    host = parts.hostname or ""
    if kind != "http":
        return Target("tcp", host, parts.port or port)
    netloc = f"[{host}]" if ":" in host else host
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    if parts.port is None or parts.port == 443:
        return Target("http", host, 443, f"https://{netloc}{path}")
    return Target("http", host, parts.port, f"http://{netloc}:{parts.port}{path}")


def _probe_http(url: str, timeout: float) -> tuple[bool, str]:
    # `timeout` bounds the whole attempt (connect, status line and headers), so a service that
    # trickles its answer counts as down for this attempt instead of holding the worker.
    try:
        status = netsafety.http_status(url, timeout)
    except netsafety.DeadlineExceeded:
        return False, "timeout"
    except requests.RequestException as exc:
        return False, type(exc).__name__
    if status in EDGE_NOT_READY:
        return False, f"HTTP {status} (not ready yet)"
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
    target = probe_target(mapping["endpoint"], mapping.get("type") or "http", port)
    if target.kind == "http":
        up, detail = _probe_http(target.url, timeout)
    else:
        up, detail = _probe_tcp(target.host, target.port, timeout)
    return ProbeResult(port, target.kind, up, detail)


def probe(
    port_mappings: list[dict],
    config: dict,
    target_port: int | None,
    *,
    round_seconds: float = ROUND_SECONDS,
) -> list[ProbeResult]:
    """One round: every selected port, each retried `retryAttempts` times before it counts
    as down for this round, all within `round_seconds`. An empty list means there was nothing
    to probe."""
    config = {**DEFAULT_CONFIG, **(config or {})}
    timeout = min(config["timeoutMs"] / 1000, MAX_ATTEMPT_SECONDS)
    pause = min(config["retryDelayMs"] / 1000, MAX_IN_ROUND_PAUSE)
    ends = time.monotonic() + round_seconds
    results = []
    for mapping in ports_to_probe(port_mappings, target_port or config.get("targetPort")):
        result = None
        for attempt in range(1 + int(config["retryAttempts"])):
            left = ends - time.monotonic()
            if left <= 0.05 or (attempt and result.up):
                break
            if attempt:
                time.sleep(min(pause, left))
                left = ends - time.monotonic()
                if left <= 0.05:
                    break
            result = probe_once(mapping, min(timeout, left))
        if result is None:
            port = int(mapping.get("port") or 0)
            result = ProbeResult(
                port, (mapping.get("type") or "http").lower(), False, "no time left"
            )
        results.append(result)
    return results
