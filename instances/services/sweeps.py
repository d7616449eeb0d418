"""What the sweeps share: a tally of one run, recording it, and dropping old runs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from ops import counters

from ..models import SweepRun

SUMMARY_LIMIT = 200


@dataclass
class Outcome:
    """A sweep run's tally; the summary is bounded so a huge fleet cannot bloat one row."""

    examined: int = 0
    acted: int = 0
    failures: int = 0
    summary: list = field(default_factory=list)

    def note(self, instance_id: str, action: str, **details) -> None:
        self.acted += 1
        if len(self.summary) < SUMMARY_LIMIT:
            self.summary.append({"instanceId": instance_id, "action": action, **details})

    def record(self, kind: str, *, started_at, start: float, heartbeat: str) -> SweepRun:
        """Keep the run (admin, dashboard) and write the heartbeat /health reads."""
        run = SweepRun.objects.create(
            kind=kind,
            started_at=started_at,
            duration_ms=(time.perf_counter() - start) * 1000,
            examined=self.examined,
            acted=self.acted,
            failures=self.failures,
            summary=self.summary,
        )
        prune_old_runs(kind)
        counters.set_value(heartbeat, str(time.time()))
        return run


def prune_old_runs(kind: str) -> int:
    """Drop this kind's runs older than SWEEP_RUN_RETENTION_DAYS; returns how many.

    Run after each recorded run: one indexed DELETE, so the table stays a few weeks deep
    instead of growing by thousands of rows a day for ever.
    """
    days = settings.SWEEP_RUN_RETENTION_DAYS
    if days <= 0:
        return 0
    cutoff = timezone.now() - timedelta(days=days)
    deleted, _ = SweepRun.objects.filter(kind=kind, started_at__lt=cutoff).delete()
    return deleted
