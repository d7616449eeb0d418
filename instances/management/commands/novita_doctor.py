"""Check the gateway's assumptions about Novita's API against the configured account.

Read-only by default. `--smoke REGION` also creates the cheapest instance in that region, waits
for it to run, probes its ports, stops it and deletes it; what it created is deleted even on
Ctrl-C, SIGTERM or an error. Exit status: 0 when nothing is contradicted, 1 when an assumption
is contradicted (or the key is refused), 3 when the smoke test could not delete its instance,
130 when interrupted. See docs/upstream.md.
"""

from __future__ import annotations

import signal
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from instances.novita.doctor import CONFIRMED, CONTRADICTED, NOT_CHECKED, Doctor


def _interrupt(signum, frame):
    # SIGTERM (a process manager, a closed terminal) ends the run like Ctrl-C does, so the
    # smoke test's cleanup runs either way.
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = "Check the gateway's assumptions about Novita's API against the configured account."
    # A diagnostic should run even while the rest of the project fails system checks.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument(
            "--smoke",
            metavar="REGION",
            help="also create, run, probe, stop and delete the cheapest instance in REGION "
            "(costs a few minutes of GPU time)",
        )
        parser.add_argument("--image", default="nginx:alpine", help="smoke test image")
        parser.add_argument("--ports", default="80/http", help='smoke test ports, "80/http,..."')
        parser.add_argument(
            "--base-url",
            default=None,
            help="Novita API base (default: NOVITA_API_BASE_URL); the key is NOVITA_API_KEY",
        )
        parser.add_argument(
            "--time-limit",
            type=float,
            default=None,
            help="seconds for the whole run (default 120, or 1200 with --smoke)",
        )
        parser.add_argument(
            "--call-timeout", type=float, default=15.0, help="seconds for any one call"
        )
        parser.add_argument(
            "--poll-seconds", type=float, default=5.0, help="pause between status polls"
        )
        parser.add_argument(
            "--smoke-wait",
            type=float,
            default=900.0,
            help="seconds the smoke instance may take to run, answer and stop",
        )

    def handle(self, *args, **options):
        base_url = options["base_url"] or getattr(settings, "NOVITA_API_BASE_URL", "")
        api_key = getattr(settings, "NOVITA_API_KEY", "") or ""
        if not base_url:
            raise CommandError("NOVITA_API_BASE_URL is not set")
        if not api_key:
            raise CommandError("NOVITA_API_KEY is not set: the doctor checks a real account")
        for name in ("call_timeout", "poll_seconds", "smoke_wait"):
            if options[name] < 0:
                raise CommandError(f"--{name.replace('_', '-')} must be >= 0")
        time_limit = options["time_limit"]
        if time_limit is None:
            time_limit = 1200.0 if options["smoke"] else 120.0

        def out(line: str) -> None:
            self.stdout.write(line)
            self.stdout.flush()

        doctor = Doctor(
            base_url,
            api_key,
            call_timeout=options["call_timeout"],
            time_limit=time_limit,
            poll_seconds=options["poll_seconds"],
            out=out,
        )
        out(
            f"novita_doctor: {doctor.v1} with a key of {len(api_key)} characters (masked); "
            f"time limit {time_limit:g}s"
        )
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            doctor.run(
                options["smoke"],
                image=options["image"],
                ports=options["ports"],
                wait_seconds=options["smoke_wait"],
            )
        except KeyboardInterrupt:
            out("interrupted" + ("; what the smoke test created was deleted" * doctor.deleted))
            sys.exit(3 if doctor.cleanup_failed else 130)
        finally:
            signal.signal(signal.SIGTERM, previous)

        results = [f.result for f in doctor.findings]
        counts = {r: results.count(r) for r in (CONFIRMED, CONTRADICTED, NOT_CHECKED)}
        out(
            f"summary: {counts[CONFIRMED]} confirmed, {counts[CONTRADICTED]} contradicted, "
            f"{counts[NOT_CHECKED]} not checked"
        )
        if doctor.cleanup_failed:
            sys.exit(3)
        key_ok = bool(doctor.findings) and doctor.findings[0].result == CONFIRMED
        if counts[CONTRADICTED] or not key_ok:
            sys.exit(1)
