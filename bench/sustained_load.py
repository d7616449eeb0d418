"""Sustained load: 200 requests per second for 60 s against the real service on loopback.

An open-loop generator: requests are scheduled at a fixed rate whatever the server does, spread
over several processes (each with a few threads holding keep-alive http.client connections).
Latency is measured from each request's *scheduled* time, so a server that falls behind shows
up as latency instead of silently lowering the offered rate (no coordinated omission). The mix
is 80% GET /api/instances/{id} (20 ready instances) and 20% GET /health.

    .venv/bin/python bench/sustained_load.py [--rate 200] [--seconds 60] [--processes 4]
                                             [--quick]

--quick runs 50 requests per second for 5 s (a smoke run). Target (issue 10): 200 requests per
second sustained, i.e. achieved within 2.5% of the offered rate with under 1% errors. Uses
REDIS_URL / DATABASE_URL from the environment when set. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import multiprocessing
import random
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchutil import percentile  # noqa: E402

from tests.e2e.stack import Stack  # noqa: E402

THREADS_PER_PROCESS = 8
HEALTH_SHARE = 0.2
RATE_TOLERANCE = 0.025
ERROR_TARGET = 0.01


def _generator(port, ids, rate, offset, start_at, seconds, queue):
    """One process's share: requests at start_at + offset + k / rate, k = 0, 1, ..."""
    slots = itertools.count()
    lock = threading.Lock()
    end = start_at + seconds
    results: list[tuple[str, float, bool]] = []

    def worker(seed):
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while True:
            with lock:
                slot = next(slots)
            scheduled = start_at + offset + slot / rate
            if scheduled >= end:
                break
            pause = scheduled - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            kind = "health" if rng.random() < HEALTH_SHARE else "instance"
            path = "/health" if kind == "health" else f"/api/instances/{rng.choice(ids)}"
            ok = False
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            results.append((kind, time.perf_counter() - scheduled, ok))
        conn.close()

    threads = [
        threading.Thread(target=worker, args=(offset * 1e6 + i,))
        for i in range(THREADS_PER_PROCESS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.put(results)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=200, help="offered requests per second")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="50 req/s for 5 s (smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.rate, args.seconds = 50.0, 5.0

    stack = Stack(step_seconds=0.05, web_workers=2, extra_env={"LOG_LEVEL": "ERROR"})
    try:
        stack.start()
        ids = stack.create_ready(args.instances, prefix="load", timeout=180)
        upstream_before = stack.upstream_calls()["total"]

        per_process = args.rate / args.processes
        queue = multiprocessing.Queue()
        # Start together a moment from now; each process takes every processes-th slot.
        start_at = time.perf_counter() + 1.0
        procs = [
            multiprocessing.Process(
                target=_generator,
                args=(
                    stack.web_ports[0],
                    ids,
                    per_process,
                    index / args.rate,
                    start_at,
                    args.seconds,
                    queue,
                ),
            )
            for index in range(args.processes)
        ]
        for proc in procs:
            proc.start()
        results = [r for _ in procs for r in queue.get(timeout=args.seconds + 120)]
        finished = time.perf_counter()
        for proc in procs:
            proc.join(timeout=30)
        upstream = stack.upstream_calls()["total"] - upstream_before

        offered = int(args.rate * args.seconds)
        elapsed = max(finished - start_at, args.seconds)
        ok = [r for r in results if r[2]]
        errors = len(results) - len(ok)
        achieved = len(ok) / elapsed
        latencies = [r[1] for r in results]
        print(
            f"sustained load: offered {args.rate:.0f} req/s for {args.seconds:.0f} s "
            f"(open loop, {args.processes} processes x {THREADS_PER_PROCESS} keep-alive "
            f"connections), 80% GET /api/instances/{{id}}, 20% GET /health, "
            f"gunicorn 2 workers x 4 threads"
        )
        print(f"  requests sent    {len(results):,} of {offered:,} scheduled")
        print(f"  achieved rate    {achieved:.1f} req/s (successful responses / elapsed)")
        print(f"  error rate       {errors / max(len(results), 1) * 100:.2f}% ({errors} errors)")
        print(
            f"  latency p50      {statistics.median(latencies) * 1000:.2f} ms   "
            f"p99 {percentile(latencies, 0.99) * 1000:.2f} ms   (from the scheduled time)"
        )
        for kind in ("instance", "health"):
            lat = [r[1] for r in results if r[0] == kind]
            if lat:
                print(
                    f"    {kind:<9} n={len(lat):<6} p50 {statistics.median(lat) * 1000:.2f} ms   "
                    f"p99 {percentile(lat, 0.99) * 1000:.2f} ms"
                )
        print(f"  upstream calls   {upstream} during the run")
        met = (
            achieved >= args.rate * (1 - RATE_TOLERANCE)
            and errors / max(len(results), 1) < ERROR_TARGET
        )
        print(
            f"  target {args.rate:.0f} req/s sustained (>= {1 - RATE_TOLERANCE:.1%} of offered, "
            f"< {ERROR_TARGET:.0%} errors): {'met' if met else 'NOT MET'}"
        )
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
