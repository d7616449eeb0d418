"""Timestamps on the wire: ISO 8601, UTC, milliseconds, trailing Z (as in the contract)."""

from datetime import UTC, datetime

from django.utils import timezone


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    value = value.astimezone(UTC) if value.tzinfo else value
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def iso_now() -> str:
    return iso(timezone.now())
