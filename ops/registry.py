"""Facts about instances that /health and /metrics report, supplied by the instances app.

Layers point down (novita_gateway <- ops <- instances): ops never imports instances. The
instances app registers one function per fact in its AppConfig.ready(). A fact nobody
registered, or whose function fails, reads as None (unknown): reporting on the gateway must
never fail because one part of it cannot answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, fields

logger = logging.getLogger(__name__)


@dataclass
class InstanceFacts:
    """How to learn each fact; None until registered."""

    # Ask Novita one cheap question (short timeout, no retries, not through the shared
    # breaker); raises what the client raises when Novita does not answer as it should.
    probe_upstream: Callable[[], None] | None = None
    # The shared upstream client's circuit breaker: "closed", "open" or "half-open".
    breaker_state: Callable[[], str] | None = None
    # Instances per gateway status, every status present (0 when none).
    instances_by_status: Callable[[], dict[str, int]] | None = None


facts = InstanceFacts()
_NAMES = {f.name for f in fields(InstanceFacts)}


def register(**providers: Callable) -> None:
    unknown = set(providers) - _NAMES
    if unknown:
        raise TypeError(f"unknown instance facts: {', '.join(sorted(unknown))}")
    for name, provider in providers.items():
        setattr(facts, name, provider)


def read(name: str, *, failure_level: int = logging.DEBUG):
    """The fact's current value, or None when unknown."""
    provider = getattr(facts, name)
    if provider is None:
        return None
    try:
        return provider()
    except Exception:  # noqa: BLE001 - see the module docstring
        logger.log(failure_level, "instance fact %s unavailable", name, exc_info=True)
        return None
