"""What metrics and rate limiting cost per request.

Starts two gunicorn servers (2 workers x 4 threads each) on loopback against one temporary SQLite
database: one with METRICS_ENABLED=true and a rate limit that counts every /api/ request but never
refuses, one with METRICS_ENABLED=false and RATE_LIMIT_PER_MINUTE=0. One Instance row is created
through the ORM. Then GET /health and GET /api/instances/{id} are measured on both, in short
alternating rounds so drift and other load on the machine hit both alike, and the figures and the
p50 overhead are printed (target < 10%). /health is exempt from rate limiting, so its difference
is the metrics alone.

    .venv/bin/python bench/request_overhead.py [--requests 100] [--clients 1] [--rounds 10]

REDIS_URL from the environment is used when set (counters and caches in Redis), else the SQLite
counters file and file caches under a temporary VAR_DIR. Nothing leaves 127.0.0.1; the upstream
points at a closed loopback port (/health's probe fails fast and is cached).
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchutil import percentile

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(var_dir: Path, **extra: str) -> dict:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "DEBUG", "GATEWAY_API_KEYS")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="novita_gateway.settings",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        VAR_DIR=str(var_dir),
        DATABASE_URL=f"sqlite:///{var_dir / 'bench.sqlite3'}",
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_COOKIES="false",
        NOVITA_API_KEY="bench-key-never-sent",
        NOVITA_API_BASE_URL="http://127.0.0.1:9/gpu-instance/openapi",
        LOG_LEVEL="ERROR",
        ALLOW_OPEN_API="true",
    )
    env.update(extra)
    return env


def prepare(var_dir: Path) -> str:
    env = environment(var_dir)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    created = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup()\n"
            "from instances.models import Instance\n"
            "i = Instance.objects.create(name='bench-1', product_name='RTX 4090 24GB',"
            " template_id='bench', status='ready')\n"
            "print(i.id)",
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return created.stdout.strip().splitlines()[-1]


def start_server(var_dir: Path, port: int, log: Path, **extra: str) -> subprocess.Popen:
    # Each server gets its own VAR_DIR for counters and caches, and the shared database.
    own = var_dir / f"server-{port}"
    own.mkdir()
    env = environment(own, **extra)
    env["DATABASE_URL"] = f"sqlite:///{var_dir / 'bench.sqlite3'}"
    with open(log, "wb") as out:
        return subprocess.Popen(
            [
                str(BIN / "gunicorn"),
                "novita_gateway.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--threads",
                "4",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_ready(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            conn.getresponse().read()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"server on port {port} did not start")


def _client(port: int, path: str, count: int, queue) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    latencies, bad = [], 0
    for _ in range(count):
        started = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - started)
        if response.status not in (200, 503):
            bad += 1
    conn.close()
    queue.put((latencies, bad))


def measure(port: int, path: str, requests: int, clients: int) -> tuple[list[float], float, int]:
    queue = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(target=_client, args=(port, path, requests, queue))
        for _ in range(clients)
    ]
    started = time.perf_counter()
    for proc in procs:
        proc.start()
    results = [queue.get() for _ in procs]
    elapsed = time.perf_counter() - started
    for proc in procs:
        proc.join()
    return [x for chunk, _ in results for x in chunk], elapsed, sum(b for _, b in results)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=100, help="per client per round")
    # One client by default: on a small machine, concurrent clients make the figures mostly
    # scheduler noise; the per-request cost is what is being compared.
    parser.add_argument("--clients", type=int, default=1, help="concurrent keep-alive clients")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ngw-bench-") as tmp:
        var_dir = Path(tmp)
        instance_id = prepare(var_dir)
        on_port, off_port = free_port(), free_port()
        servers = {
            "on": start_server(
                var_dir,
                on_port,
                var_dir / "on.log",
                METRICS_ENABLED="true",
                RATE_LIMIT_PER_MINUTE=str(10**9),
            ),
            "off": start_server(
                var_dir,
                off_port,
                var_dir / "off.log",
                METRICS_ENABLED="false",
                RATE_LIMIT_PER_MINUTE="0",
            ),
        }
        try:
            ports = {"on": on_port, "off": off_port}
            for port in ports.values():
                wait_ready(port)
            paths = {
                "GET /health": "/health",
                "GET /api/instances/{id}": f"/api/instances/{instance_id}",
            }
            # Warm up: imports, DB connections, the cached upstream probe.
            for port in ports.values():
                for path in paths.values():
                    measure(port, path, 20, 1)

            results = {}
            for label, path in paths.items():
                collected = {"on": ([], 0.0, 0), "off": ([], 0.0, 0)}
                for _ in range(args.rounds):
                    for mode in ("off", "on"):
                        lat, elapsed, bad = measure(ports[mode], path, args.requests, args.clients)
                        old = collected[mode]
                        collected[mode] = (old[0] + lat, old[1] + elapsed, old[2] + bad)
                results[label] = collected

            backend = "Redis" if os.environ.get("REDIS_URL") else "SQLite counters, file caches"
            total = sum(len(c[m][0]) for c in results.values() for m in c)
            print(
                f"request overhead: gunicorn 2 workers x 4 threads per server, keep-alive "
                f"clients: {args.clients}, {total} requests, {backend}"
            )
            print(
                f"{'endpoint':28} {'mode':4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"
            )
            for label, collected in results.items():
                p50 = {}
                for mode in ("off", "on"):
                    lat, elapsed, bad = collected[mode]
                    p50[mode] = statistics.median(lat)
                    print(
                        f"{label:28} {mode:4} {len(lat) / elapsed:8.0f} {p50[mode] * 1000:8.2f} "
                        f"{percentile(lat, 0.99) * 1000:8.2f} {bad:6d}"
                    )
                overhead = (p50["on"] - p50["off"]) / p50["off"] * 100
                print(
                    f"{label:28} p50 overhead of metrics + rate limiting: {overhead:+.1f}%"
                    " (target < 10%)"
                )
        finally:
            for proc in servers.values():
                # Our own gunicorn (its own session): the master stops its workers.
                os.killpg(proc.pid, signal.SIGTERM)
            for proc in servers.values():
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
