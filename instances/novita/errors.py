"""Upstream errors, split once into transient (worth retrying later) and permanent.

Everything that talks to Novita raises only these, so callers (tasks, services, the API error
envelope) decide on retries and HTTP codes by class, never by parsing messages.
"""

from __future__ import annotations


class NovitaError(Exception):
    """Base class for every failure talking to the upstream API."""

    transient = False

    def __init__(
        self,
        message: str,
        *,
        operation: str = "",
        status_code: int | None = None,
        reason: str = "",
    ):
        super().__init__(message)
        self.message = message
        self.operation = operation
        self.status_code = status_code
        # Upstream's upper-snake reason (e.g. INSUFFICIENT_RESOURCE), sanitised, for API `details`.
        self.reason = reason

    def details(self) -> str:
        parts = [p for p in (self.reason, self.message) if p]
        if self.status_code:
            parts.insert(0, f"HTTP {self.status_code}")
        if self.operation:
            parts.insert(0, self.operation)
        return ": ".join(parts)


class NovitaTransientError(NovitaError):
    """Connection errors, 5xx, 429: the same call may succeed later."""

    transient = True


class NovitaTimeoutError(NovitaTransientError):
    """The upstream did not answer within the (connect, read) timeout."""


class NovitaRateLimitedError(NovitaTransientError):
    """HTTP 429; `retry_after` is the upstream's Retry-After in seconds, when given."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class NovitaMisconfiguredError(NovitaTransientError):
    """Upstream answered as if the gateway were pointed at the wrong place or with the wrong key:
    a route-level 404 (no JSON body, API_NOT_FOUND, a proxy page) or HTTP 401/403.

    Never proof that an instance is gone. It counts for the circuit breaker like an outage and is
    not retried on the spot (it only clears once an operator fixes the configuration), but callers
    treat it as transient: keep state, try again later.
    """

    # Read by /health (ops, which does not import this package) to say "misconfigured".
    misconfigured = True


class NovitaCircuitOpenError(NovitaTransientError):
    """The circuit breaker is open: calls fail fast without touching the upstream."""


class NovitaPermanentError(NovitaError):
    """4xx other than 408/429, or a body we cannot parse: retrying will not help."""


class NovitaNotFoundError(NovitaPermanentError):
    """The resource asked about does not exist: HTTP 400 with a not-found reason such as
    RESOURCE_NOT_FOUND, or a 404 whose JSON body names the missing resource."""


class NovitaNotConfiguredError(NovitaPermanentError):
    """No upstream base URL / API key configured."""


class ResolutionError(NovitaPermanentError):
    """A productName/templateId/region could not be resolved to something upstream can create."""
