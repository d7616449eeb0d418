"""Per-client rate limit on /api/: RATE_LIMIT_PER_MINUTE requests per fixed minute window.

The count lives in the shared counters (ops/counters.hit_window), so every web process enforces
one limit. A client is its API key when it presents a valid one (a configured or admin-issued
key; an invalid key must not buy a fresh allowance, so it counts against the IP), else its IP.
X-Forwarded-For is believed only from a proxy listed in TRUSTED_PROXIES. Buckets are named by a
hash of the identity: neither keys nor addresses are stored.

Every /api/ response carries X-RateLimit-Limit, X-RateLimit-Remaining and X-RateLimit-Reset (unix
seconds when the window ends); beyond the limit the answer is 429 RATE_LIMIT_EXCEEDED with
Retry-After. Exempt: /api/docs/ and /api/schema/ (static documentation), and everything outside
/api/ (/health and /metrics are polled by monitoring; the admin has django-axes).
RATE_LIMIT_PER_MINUTE=0 turns the limit off.

Each request gets its number in the client's window from the shared count, but a process claims
numbers in blocks (Numbering below), so a busy client costs one shared write per block, not one
per request. Numbers a process claimed and did not use count as used: the limit is never
exceeded, and a client may be refused a little early: by about one request per web process
when every process is serving it, by at most one block (Numbering.BLOCK_MAX) per process.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time

from django.conf import settings

from novita_gateway.errors import error_response

from . import counters, metrics
from .auth import client_ip, client_of
from .middleware import json_api_path

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60


def client_identity(request) -> str:
    client = client_of(request)
    if client is not None:
        return client[0].ident
    return f"ip:{client_ip(request) or 'unknown'}"


def bucket_for(identity: str) -> str:
    """The counters key of an identity (hashed: no key or address is stored)."""
    return "api:" + hashlib.sha256(identity.encode()).hexdigest()[:32]


class Numbering:
    """This process's numbering of each client's requests within the current window.

    One write to the shared count (SQLite or Redis) per request was, on SQLite, a quarter of a
    web worker's throughput under load. So a process claims a block of numbers at once and
    hands them out: at most BLOCK_MAX, and at most 1/BLOCK_SHARE of what the window had left at
    the last claim, so near the limit every request is counted on its own. A client that sends
    a handful of requests a minute still makes one write per request."""

    BLOCK_MAX = 32
    BLOCK_SHARE = 64
    KEEP = 10_000  # clients remembered before windows that ended are forgotten

    def __init__(self):
        self._lock = threading.Lock()
        # bucket -> [window end, next number to hand out, last number claimed]
        self._blocks: dict[str, list] = {}

    def next(self, bucket: str, limit: int) -> tuple[int, float]:
        """(this request's number in its window, the window's end)."""
        now = time.time()
        with self._lock:
            block = self._blocks.get(bucket)
            if block is not None and block[0] > now:
                if block[1] <= block[2]:
                    block[1] += 1
                    return block[1] - 1, block[0]
                claimed = block[2]
            else:
                claimed = 0
        size = max(1, min(self.BLOCK_MAX, (limit - claimed) // self.BLOCK_SHARE))
        # No lock held across the store's round trip. Two threads claiming at once each get a
        # block; the one whose block is kept hands out its numbers, the other's go unused
        # (counted, so the limit still holds).
        last, window_end = counters.hit_window(bucket, WINDOW_SECONDS, size)
        first = last - size + 1
        with self._lock:
            if len(self._blocks) >= self.KEEP:
                self._blocks = {b: v for b, v in self._blocks.items() if v[0] > now}
            self._blocks[bucket] = [window_end, first + 1, last]
        return first, window_end

    def forget(self) -> None:
        with self._lock:
            self._blocks.clear()


numbering = Numbering()


def applies_to(path: str) -> bool:
    return json_api_path(path)


class RateLimitMiddleware:
    """Counts each /api/ request against its client's window; see the module docstring."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.RATE_LIMIT_PER_MINUTE
        if limit <= 0 or not applies_to(request.path):
            return self.get_response(request)
        try:
            count, window_end = numbering.next(bucket_for(client_identity(request)), limit)
        except Exception:  # noqa: BLE001 - a broken counter store must not take the API down
            logger.warning("rate limit unavailable; request let through", exc_info=True)
            return self.get_response(request)
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(0, limit - count)),
            "X-RateLimit-Reset": str(int(window_end)),
        }
        if count > limit:
            metrics.record_rate_limited()
            retry_after = max(1, math.ceil(window_end - time.time()))
            response = error_response(
                429,
                "RATE_LIMIT_EXCEEDED",
                "Rate limit exceeded",
                f"At most {limit} requests per minute; retry after {retry_after} seconds",
                headers={"Retry-After": str(retry_after)},
            )
        else:
            response = self.get_response(request)
        for name, value in headers.items():
            response[name] = value
        return response
