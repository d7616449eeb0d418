"""CPU a poll costs inside the application, without a server or a network in the way.

Calls the WSGI application in this process (URLconf, all middleware, auth with a valid admin-
issued key, the rate limit, metrics, the INFO access log written to /dev/null) for
GET /api/instances/{id} over 5 ready instances, and prints the process's CPU time per poll for
several rounds of N polls. gunicorn's own share (HTTP parsing, sockets, threads) is not in it.

It complements bench/polling_saturation.py: on a machine shared with other work, req/s under wrk
moves by half from run to run, while this figure moves by a tenth, so a change to the poll's code
shows here first.

    .venv/bin/python bench/poll_cpu.py [--polls 2000] [--rounds 7]

SQLite in a scratch folder, or the PostgreSQL database named by DATABASE_URL (it must end in
_bench; it is created and dropped), with Redis for the counters when REDIS_URL is set.
Loopback only. No target of its own: it is reported.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchutil import django_in_scratch, postgres_bench_database  # noqa: E402

READY = 5


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--polls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    # What a deployed web worker runs with; the limit counts every poll and refuses none.
    os.environ["LOG_LEVEL"] = "INFO"
    os.environ["METRICS_ENABLED"] = "true"
    os.environ["RATE_LIMIT_PER_MINUTE"] = str(10**9)
    redis_url = os.environ.get("REDIS_URL", "")
    _scratch, is_postgres = django_in_scratch("ngw-poll-cpu-", keep_redis=True)
    try:
        return run(args, is_postgres, redis_url)
    finally:
        if is_postgres:
            from django.db import connections

            connections.close_all()
            postgres_bench_database("drop")


def run(args, is_postgres: bool, redis_url: str) -> int:
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    from instances.models import Instance
    from novita_gateway.wsgi import application
    from ops.models import ApiKey

    ids = [
        Instance.objects.create(
            name=f"poll-{i}",
            product_name="RTX 4090 24GB",
            template_id="pytorch-jupyter",
            status="ready",
            desired_status="running",
            novita_instance_id=f"nov-poll-{i}",
        ).id
        for i in range(READY)
    ]
    _key, raw = ApiKey.issue("poll-cpu-bench")
    # The access log is written as a server writes it, into a sink instead of a terminal.
    sink = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    for handler in logging.getLogger().handlers:
        handler.stream = sink

    statuses: list[str] = []

    def start_response(status, headers, exc_info=None):
        statuses.append(status)

    def poll(instance_id: str) -> bytes:
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": f"/api/instances/{instance_id}",
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "3000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "127.0.0.1:3000",
            "HTTP_AUTHORIZATION": f"Bearer {raw}",
            "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": sys.stderr,
            "wsgi.url_scheme": "http",
        }
        result = application(environ, start_response)
        try:
            return b"".join(result)
        finally:
            result.close()

    for instance_id in ids * 20:  # warm-up: connections, caches, prepared statements
        poll(instance_id)
    bad = [s for s in statuses if not s.startswith("200")]
    if bad:
        print(f"polls failed during warm-up: {bad[:3]}")
        return 1
    per_poll = []
    for _ in range(args.rounds):
        started = time.process_time()
        for i in range(args.polls):
            poll(ids[i % READY])
        per_poll.append((time.process_time() - started) / args.polls * 1e6)
    failed = sum(1 for s in statuses if not s.startswith("200"))
    database = "PostgreSQL" if is_postgres else "SQLite"
    counters = "Redis" if redis_url else ("SQLite counters" if not is_postgres else "no Redis")
    print(
        f"poll CPU in process: {database}, {counters}; {args.rounds} rounds of {args.polls:,} "
        f"polls over {READY} instances, valid key, rate limit, metrics and access log on"
    )
    print("  rounds (us per poll):  " + "  ".join(f"{v:,.0f}" for v in per_poll))
    print(
        f"  CPU per poll           median {statistics.median(per_poll):,.0f} us, "
        f"best {min(per_poll):,.0f} us"
    )
    print(f"  failed polls           {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
