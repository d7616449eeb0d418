"""Client polling benchmark: 100 ready instances, 20 concurrent pollers of GET /api/instances/{id}.

Runs the real service (gunicorn with 2 workers, Celery worker and beat) against the sandbox on
loopback, creates 100 instances through the API and waits until they are ready, then polls.
Prints p50/p99 latency, requests per second and upstream calls per 1,000 client polls.

    .venv/bin/python bench/client_polling.py [--seconds 20] [--pollers 20] [--instances 100]

Targets (issue 4, 2-core machine): p50 <= 10 ms, p99 <= 50 ms, upstream calls per 1,000 polls
<= 10. Uses REDIS_URL / DATABASE_URL from the environment when set (else SQLite, no Redis).
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchutil import percentile  # noqa: E402

from tests.e2e.stack import Stack  # noqa: E402


def _poller(port: int, ids: list[str], seconds: float, interval: float, queue):
    # One keep-alive connection per poller, like a real client library. With an interval the
    # poller is open-loop (a client polling every `interval` seconds); 0 means as fast as it can.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    latencies, errors = [], 0
    end = time.perf_counter() + seconds
    rng = random.Random()
    next_at = time.perf_counter() + rng.random() * interval
    while time.perf_counter() < end:
        if interval:
            pause = next_at - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            next_at += interval
        path = f"/api/instances/{rng.choice(ids)}"
        started = time.perf_counter()
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                errors += 1
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            continue
        latencies.append(time.perf_counter() - started)
    queue.put((latencies, errors))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--pollers", type=int, default=20)
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument(
        "--interval",
        type=float,
        default=0.1,
        help="seconds between one poller's polls (0: closed loop, as fast as possible)",
    )
    args = parser.parse_args()

    stack = Stack(step_seconds=0.05, web_workers=2, extra_env={"LOG_LEVEL": "ERROR"})
    try:
        stack.start()

        ids = stack.create_ready(args.instances, prefix="poll", timeout=240)
        time.sleep(1)

        before = stack.upstream_calls()["total"]
        queue = multiprocessing.Queue()
        procs = [
            multiprocessing.Process(
                target=_poller,
                args=(stack.web_ports[0], ids, args.seconds, args.interval, queue),
            )
            for _ in range(args.pollers)
        ]
        started = time.perf_counter()
        for proc in procs:
            proc.start()
        results = [queue.get() for _ in procs]
        for proc in procs:
            proc.join()
        elapsed = time.perf_counter() - started
        upstream = stack.upstream_calls()["total"] - before

        latencies = [lat for chunk, _ in results for lat in chunk]
        errors = sum(err for _, err in results)
        polls = len(latencies)
        mode = f"each every {args.interval * 1000:.0f} ms" if args.interval else "closed loop"
        print(
            f"client polling: {args.instances} ready instances, {args.pollers} concurrent "
            f"pollers ({mode}), {args.seconds:.0f} s, gunicorn 2 workers x 4 threads"
        )
        print(f"  polls            {polls} ({errors} errors)")
        print(f"  requests/second  {polls / elapsed:.0f}")
        print(f"  p50 latency      {statistics.median(latencies) * 1000:.2f} ms  (target <= 10)")
        print(f"  p99 latency      {percentile(latencies, 0.99) * 1000:.2f} ms  (target <= 50)")
        print(
            f"  upstream calls   {upstream} during polling = "
            f"{upstream * 1000 / max(polls, 1):.2f} per 1,000 polls  (target <= 10)"
        )
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
