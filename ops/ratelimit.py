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
"""

from __future__ import annotations

import hashlib
import logging
import math
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
            count, window_end = counters.hit_window(
                bucket_for(client_identity(request)), WINDOW_SECONDS
            )
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
