"""How upstream (Novita) errors reach API clients: the contract's codes, in the one envelope.

Registered with novita_gateway.errors.translate in apps.py, so the envelope module needs no
import of this app.
"""

from __future__ import annotations

import logging

from novita_gateway.errors import documented_error

from ..novita import errors as upstream

logger = logging.getLogger("novita_gateway.errors")


def _status_code_message(exc: upstream.NovitaError):
    if isinstance(exc, upstream.NovitaCircuitOpenError):
        return 503, "CIRCUIT_BREAKER_OPEN", "Novita API is temporarily unavailable", {}
    if isinstance(exc, upstream.NovitaTimeoutError):
        return 408, "REQUEST_TIMEOUT", "Novita API did not answer in time", {}
    if isinstance(exc, upstream.NovitaRateLimitedError):
        headers = {"Retry-After": str(int(exc.retry_after or 1))}
        return 502, "NOVITA_API_ERROR", "Novita API is rate limiting requests", headers
    if isinstance(exc, upstream.ResolutionError):
        return 400, "VALIDATION_ERROR", exc.message, {}
    if isinstance(exc, upstream.NovitaMisconfiguredError):
        # Not the client's fault and not an outage: the operator has a setting to fix.
        message = "Novita API refused the gateway's configuration (base URL or API key)"
        return 502, "NOVITA_API_ERROR", message, {}
    return 502, "NOVITA_API_ERROR", "Novita API error", {}


# The schema's side of the mapping below, for every view that calls upstream while answering.
UPSTREAM_RESPONSES = {
    408: documented_error("REQUEST_TIMEOUT: Novita did not answer in time"),
    502: documented_error("NOVITA_API_ERROR"),
    503: documented_error("CIRCUIT_BREAKER_OPEN"),
}


def upstream_error(exc: upstream.NovitaError) -> tuple:
    """(status, code, message, details, headers) for the envelope."""
    status, code, message, headers = _status_code_message(exc)
    logger.warning("upstream error: %s", exc.details())
    return status, code, message, exc.details(), headers
