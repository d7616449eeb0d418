"""Serve the Novita upstream simulator on loopback until interrupted.

The first stdout line is the base URL (e2e harnesses read it); point the gateway at
`<base URL>/gpu-instance/openapi`.
"""

from __future__ import annotations

import os
import signal
import threading

from django.core.management.base import BaseCommand, CommandError

from instances.novita.sandbox import (
    DEFAULT_PAGE_NUMBERING,
    NOT_FOUND_MODES,
    PAGE_NUMBERINGS,
    ROUTE_404_MODES,
    Sandbox,
)


class Command(BaseCommand):
    help = "Run the simulated Novita GPU-instance API (the sandbox) on loopback."
    # A test double should start even while the rest of the project fails system checks.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
        parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
        parser.add_argument(
            "--step-seconds",
            type=float,
            default=1.0,
            help="seconds each upstream state lasts (toCreate -> creating -> ...)",
        )
        parser.add_argument(
            "--api-key",
            default="sandbox-key",
            help='Bearer key the sandbox expects; "" disables auth',
        )
        parser.add_argument("--seed", type=int, default=None, help="random seed for ids")
        parser.add_argument(
            "--seed-instances",
            type=int,
            default=0,
            help="pre-create this many running instances (benchmarks)",
        )
        # Emulation modes where public sources disagree about Novita (docs/upstream.md).
        parser.add_argument(
            "--page-numbering",
            choices=PAGE_NUMBERINGS,
            default=os.environ.get("NOVITA_SANDBOX_PAGE_NUMBERING") or DEFAULT_PAGE_NUMBERING,
            help="which pageNum is the first page (env NOVITA_SANDBOX_PAGE_NUMBERING)",
        )
        parser.add_argument(
            "--not-found",
            choices=NOT_FOUND_MODES,
            default=os.environ.get("NOVITA_SANDBOX_NOT_FOUND") or "400",
            help="how an unknown instance id is answered (env NOVITA_SANDBOX_NOT_FOUND)",
        )
        parser.add_argument(
            "--route-404",
            choices=ROUTE_404_MODES,
            default=os.environ.get("NOVITA_SANDBOX_ROUTE_404") or "json",
            help="body of a 404 for an unknown path (env NOVITA_SANDBOX_ROUTE_404)",
        )

    def handle(self, *args, **options):
        if not options["host"].startswith("127."):
            raise CommandError("the sandbox only binds loopback addresses (127.x.x.x)")
        if options["step_seconds"] < 0:
            raise CommandError("--step-seconds must be >= 0")
        sandbox = Sandbox(
            api_key=options["api_key"] or None,
            step_seconds=options["step_seconds"],
            seed=options["seed"],
            page_numbering=options["page_numbering"],
            not_found=options["not_found"],
            route_404=options["route_404"],
        )
        if options["seed_instances"]:
            sandbox.seed_instances(options["seed_instances"])
        sandbox.serve(host=options["host"], port=options["port"])

        stop = threading.Event()
        # SIGTERM (from process managers and e2e teardown) should shut down as cleanly as ^C.
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        self.stdout.write(sandbox.base_url)
        self.stdout.flush()
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            sandbox.shutdown()
