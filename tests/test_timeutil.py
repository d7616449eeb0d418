"""Timestamps on the wire: UTC, milliseconds (truncated, never rounded up), trailing Z."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from novita_gateway.timeutil import iso


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (datetime(2026, 1, 2, 3, 4, 5, 999999, tzinfo=UTC), "2026-01-02T03:04:05.999Z"),
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02T03:04:05.000Z"),
        (datetime(2026, 1, 2, 3, 4, 5, 1500), "2026-01-02T03:04:05.001Z"),
        (
            datetime(2026, 1, 2, 1, 0, 0, 250000, tzinfo=timezone(timedelta(hours=5))),
            "2026-01-01T20:00:00.250Z",
        ),
        (None, None),
    ],
)
def test_times_are_written_in_utc_with_milliseconds_and_z(value, wire):
    assert iso(value) == wire
