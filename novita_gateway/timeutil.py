"""Timestamps on the wire: ISO 8601, UTC, milliseconds, trailing Z (as in the contract)."""

from datetime import UTC, datetime

from django.utils import timezone


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    # isoformat (C) rather than strftime: a poll's body formats half a dozen of these.
    return value.isoformat(timespec="milliseconds") + "Z"


def iso_now() -> str:
    return iso(timezone.now())
