"""What the reconcile and migration sweeps share: a tally of one run, and recording it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

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
        counters.set_value(heartbeat, str(time.time()))
        return run
