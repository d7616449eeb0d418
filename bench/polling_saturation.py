"""Polling at saturation, beside the static floor (issue 18).

Starts the whole service on loopback (sandbox upstream, Celery worker and beat, and the web
server with the Procfile's web line: the same gunicorn workers, threads, keep-alive and logging),
creates 5 ready instances through the API and 95 more rows, issues an API key, and then drives
it with wrk (2 threads, 20 keep-alive connections, 10 s a run) against:

  - GET /api/instances/{id} for the 5 ready instances (auth, rate limit and metrics on; the limit
    counts every request but is set too high to refuse any),
  - a static WSGI app (bench/static_wsgi.py) returning the same poll body, under the same gunicorn
    settings and under 2 sync workers (the floor the target is measured against),
  - GET /api/instances (local records, 100 instances) and GET /health.

Every target runs once per round, several rounds, and the medians are printed with p50/p99,
errors (socket errors and non-2xx answers), the CPU time the serving processes spent per request,
the poll/static ratios and the upstream calls made per 1,000 polls. On a machine busy with other
work the req/s figures move a lot from run to run; CPU per request hardly does.

Uses DATABASE_URL / REDIS_URL from the environment when set (each run gets its own database and
Redis database number, see tests/e2e/stack.py), else SQLite and no Redis.
wrk comes from Debian; it is installed with apt-get when missing. Loopback only.

    .venv/bin/python bench/polling_saturation.py [--rounds 3] [--seconds 10] [--connections 20]

Targets (2-core machine, same run, medians): poll >= 0.25 of the static floor with 2 sync
workers, p99 < 50 ms at 20 connections, zero errors, <= 10 upstream calls per 1,000 polls.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT))

from tests.e2e.stack import BIN, Stack, free_port, procfile_web_args, wait_until  # noqa: E402

READY = 5
LISTED = 100
# wrk prints this line from the Lua `done` hook; everything else it prints is ignored.
WRK_LUA = """
local paths = {%(paths)s}
local counter = 0
%(headers)s
request = function()
  counter = counter + 1
  return wrk.format("GET", paths[(counter %% #paths) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %%d, "duration_us": %%d, "socket_errors": %%d, "status_errors": %%d,'
    .. ' "p50_us": %%d, "p99_us": %%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk not found: installing it from Debian (apt-get install -y wrk)", flush=True)
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if os.geteuid() != 0:
        install = ["sudo", "-n", *install]
    if subprocess.run(install, capture_output=True, check=False).returncode != 0:
        subprocess.run([*install[:-4], "apt-get", "update", "-q"], capture_output=True, check=False)
        subprocess.run(install, capture_output=True, check=False)
    found = shutil.which("wrk")
    if not found:
        sys.exit("wrk is not installed and apt-get could not install it: apt-get install wrk")
    return found


class Wrk:
    def __init__(self, binary: str, tmp: Path, threads: int, connections: int, seconds: float):
        self.binary, self.tmp = binary, tmp
        self.threads, self.connections, self.seconds = threads, connections, seconds

    def run(self, base_url: str, paths: list[str], headers: dict[str, str]) -> dict:
        script = self.tmp / f"wrk-{time.monotonic_ns()}.lua"
        script.write_text(
            WRK_LUA
            % {
                "paths": ", ".join(json.dumps(p) for p in paths),
                "headers": "\n".join(
                    f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()
                ),
            }
        )
        result = subprocess.run(
            [
                self.binary,
                f"-t{self.threads}",
                f"-c{self.connections}",
                f"-d{self.seconds:g}s",
                "--timeout",
                "5s",
                "-s",
                str(script),
                base_url,
            ],
            capture_output=True,
            text=True,
            timeout=self.seconds + 60,
            check=False,
        )
        for line in result.stdout.splitlines():
            if line.startswith("WRKJSON "):
                data = json.loads(line[len("WRKJSON ") :])
                seconds = data["duration_us"] / 1e6
                return {
                    "rps": data["requests"] / seconds,
                    "requests": data["requests"],
                    "p50": data["p50_us"] / 1000,
                    "p99": data["p99_us"] / 1000,
                    "errors": data["socket_errors"] + data["status_errors"],
                }
        raise RuntimeError(f"wrk printed no summary:\n{result.stdout}\n{result.stderr}")


# Where a poll's CPU goes: each sampled stack is charged to the first of these parts that any
# of its frames matches (so a query made by the rate limiter counts as rate limiting). Frames
# look like "function (package/module.py:line)".
PROFILE_PARTS = [
    ("open a database connection (+ pragmas)", ("get_new_connection", "init_connection_state")),
    ("close the connection at request end", ("close_old_connections",)),
    ("logging (ours and gunicorn's access log)", ("(logging/", "(gunicorn/glogging.py")),
    ("rate limit (shared counter)", ("hit_window (",)),
    ("API key check", ("identify (", "client_of (", "keys_configured (", "authenticate (")),
    ("metrics", ("(ops/metrics.py", "incr_many (")),
    ("Redis client (other)", ("(redis/", "(django_redis/")),
    ("cache (other)", ("(django/core/cache/",)),
    ("ORM: query, SQL and model building", ("(django/db/",)),
    ("body (representation, JSON render)", ("representations.py", "renderers.py")),
    ("DRF request/view machinery", ("(rest_framework/",)),
    ("Django handler and middleware", ("(django/", "(whitenoise/", "(axes/", "(ops/")),
    ("gunicorn (HTTP parsing, sockets, event loop)", ("(gunicorn/",)),
]


def profile_summary(raw: str, top: int = 12) -> list[str]:
    """Shares of worker samples from py-spy's raw (collapsed) output."""
    parts: dict[str, int] = {}
    own: dict[str, int] = {}
    total = in_django = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        if any("django/core/handlers/base.py" in f for f in frames):
            in_django += n
        part = next(
            (label for label, marks in PROFILE_PARTS if any(m in f for f in frames for m in marks)),
            "other",
        )
        parts[part] = parts.get(part, 0) + n
        leaf = frames[-1]
        own[leaf] = own.get(leaf, 0) + n
    if not total:
        return ["  (no samples)"]
    out = [f"  {total} samples of the web workers; {in_django / total:.0%} inside Django's handler"]
    out.append("  by part (each sample charged once, first matching part):")
    for label, n in sorted(parts.items(), key=lambda kv: -kv[1]):
        out.append(f"    {n / total:6.1%}  {label}")
    out.append(f"  top {top} functions by own samples:")
    for leaf, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        out.append(f"    {n / total:6.1%}  {leaf[:110]}")
    return out


def pyspy() -> str | None:
    return os.environ.get("PYSPY") or shutil.which("py-spy")


def profile_polls(
    stack: Stack, wrk: Wrk, base: str, paths, headers, tmp: Path, keep: str | None
) -> list[str]:
    binary = pyspy()
    if not binary:
        return ["  py-spy not found (pip install py-spy, or set PYSPY): no profile"]
    out = tmp / "profile.txt"
    sampler = subprocess.Popen(
        [
            binary,
            "record",
            "--pid",
            str(stack.procs["web0"].pid),
            "--subprocesses",
            "--nonblocking",
            # Only the thread holding the GIL: where Python CPU goes, not who waits for it.
            "--gil",
            "--rate",
            "200",
            "--format",
            "raw",
            "--duration",
            str(int(wrk.seconds)),
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    result = wrk.run(base, paths, headers)
    _, err = sampler.communicate(timeout=wrk.seconds + 60)
    if not out.exists():
        return [f"  py-spy failed: {err.strip()[-300:]}"]
    if keep:
        shutil.copyfile(out, keep)
    lines = [f"  (this run: {result['rps']:,.0f} req/s with the sampler attached)"]
    return lines + profile_summary(out.read_text())


def server_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by a server process and all its workers."""
    process = psutil.Process(pid)
    total = 0.0
    for proc in [process, *process.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def start_server(args: list[str], env: dict, log: Path, port: int) -> subprocess.Popen:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_until(lambda: Stack._answers(f"http://127.0.0.1:{port}/"), 30, message=f"port {port}")
    return proc


def stop_server(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def add_listed_rows(stack: Stack, count: int) -> None:
    # Stopped local records with no upstream id: the listing reads them, nothing drives them.
    stack.shell(
        "from instances.models import Instance\n"
        "Instance.objects.bulk_create([Instance(name=f'listed-{i}', product_name='RTX 4090 24GB',"
        " template_id='comfyui', status='stopped', desired_status='stopped')"
        f" for i in range({count})])"
    )


def describe(stack: Stack) -> str:
    database = "PostgreSQL" if stack.env["DATABASE_URL"].startswith("postgres") else "SQLite"
    shared = "Redis" if stack.env["REDIS_URL"] else "no Redis (SQLite counters, file caches)"
    return f"{database}, {shared}"


def row(label: str, runs: list[dict]) -> tuple[str, dict]:
    med = {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50", "p99", "cpu_us")}
    med["errors"] = sum(r["errors"] for r in runs)
    med["requests"] = sum(r["requests"] for r in runs)
    return label, med


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--profile-raw", help="also keep py-spy's raw stacks in this file")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the rounds, sample the web workers with py-spy (PYSPY or on PATH) "
        "during one more poll run and print where the time goes",
    )
    args = parser.parse_args()

    wrk_binary = ensure_wrk()
    tmp = Path(tempfile.mkdtemp(prefix="ngw-saturation-"))
    wrk = Wrk(wrk_binary, tmp, args.threads, args.connections, args.seconds)
    stack = Stack(
        step_seconds=0.05,
        web_procfile=True,
        # Deployed defaults for what a poll touches: INFO access log, metrics on; a rate
        # limit that counts every request and is too high to refuse one.
        extra_env={
            "LOG_LEVEL": "INFO",
            "METRICS_ENABLED": "true",
            "RATE_LIMIT_PER_MINUTE": str(10**9),
        },
    )
    servers: list[subprocess.Popen] = []
    try:
        stack.start()
        ids = stack.create_ready(READY, prefix="sat", timeout=240)
        add_listed_rows(stack, LISTED - READY)
        key = stack.manage("issue_api_key", "saturation-bench").strip().splitlines()[-1]
        auth = {"Authorization": f"Bearer {key}"}
        body = stack.api("GET", f"/api/instances/{ids[0]}", headers=auth)
        body.raise_for_status()
        (tmp / "body.json").write_bytes(body.content)
        listing = stack.api("GET", "/api/instances?source=local", headers=auth).json()
        assert listing["total"] == LISTED, listing["total"]

        web_args = procfile_web_args(0, stack.env)
        settings = " ".join(a for a in web_args[1:-2] if not a.endswith(":application"))
        static_env = {**stack.env, "STATIC_BODY_FILE": str(tmp / "body.json")}
        same_port, sync_port = free_port(), free_port()
        same = [
            *procfile_web_args(same_port, stack.env, app="static_wsgi:application"),
            "--pythonpath",
            str(BENCH),
        ]
        sync = [
            str(BIN / "gunicorn"),
            "static_wsgi:application",
            "--pythonpath",
            str(BENCH),
            "--workers",
            "2",
            "--worker-class",
            "sync",
            "--log-level",
            "warning",
            "--bind",
            f"127.0.0.1:{sync_port}",
        ]
        servers.append(start_server(same, static_env, tmp / "static-same.log", same_port))
        servers.append(start_server(sync, static_env, tmp / "static-sync.log", sync_port))
        time.sleep(2)

        gateway = stack.url
        poll_paths = [f"/api/instances/{i}" for i in ids]
        web_pid = stack.procs["web0"].pid
        same_pid, sync_pid = servers[0].pid, servers[1].pid
        plan = [
            ("poll", gateway, poll_paths, auth, web_pid),
            ("static_same", f"http://127.0.0.1:{same_port}", poll_paths, {}, same_pid),
            ("static_sync", f"http://127.0.0.1:{sync_port}", poll_paths, {}, sync_pid),
            ("list", gateway, ["/api/instances?source=local"], auth, web_pid),
            ("health", gateway, ["/health"], {}, web_pid),
        ]
        results: dict[str, list[dict]] = {name: [] for name, *_ in plan}
        upstream_calls = 0
        print(
            f"polling saturation: wrk {args.threads} threads, {args.connections} keep-alive "
            f"connections, {args.seconds:g} s a run, {args.rounds} rounds (medians); "
            f"{describe(stack)}"
        )
        print(f"  gateway web server (Procfile): gunicorn {settings}")
        print(f"  poll body: {len(body.content)} bytes; {READY} ready instances, {LISTED} listed")
        for round_no in range(1, args.rounds + 1):
            shown = []
            for name, base, paths, headers, pid in plan:
                before = stack.upstream_calls()["total"] if name == "poll" else 0
                cpu = server_cpu_seconds(pid)
                result = wrk.run(base, paths, headers)
                result["cpu_us"] = (server_cpu_seconds(pid) - cpu) / result["requests"] * 1e6
                if name == "poll":
                    upstream_calls += stack.upstream_calls()["total"] - before
                results[name].append(result)
                shown.append(f"{name} {result['rps']:,.0f}")
            print(f"  round {round_no}: " + ", ".join(shown) + " req/s", flush=True)

        labels = {
            "poll": f"GET /api/instances/{{id}} ({READY} ready)",
            "static_same": "static app, same gunicorn settings",
            "static_sync": "static app, 2 sync workers",
            "list": f"GET /api/instances (local, {LISTED})",
            "health": "GET /health",
        }
        medians = dict(row(name, runs) for name, runs in results.items())
        print()
        print(
            f"  {'target':<40} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}"
            f" {'server CPU/req':>15}"
        )
        for name, label in labels.items():
            m = medians[name]
            print(
                f"  {label:<40} {m['rps']:>8,.0f} {m['p50']:>8.2f} {m['p99']:>8.2f} "
                f"{m['errors']:>7} {m['cpu_us']:>12,.0f} us"
            )
        poll = medians["poll"]
        same_ratio = poll["rps"] / medians["static_same"]["rps"]
        sync_ratio = poll["rps"] / medians["static_sync"]["rps"]
        per_thousand = upstream_calls * 1000 / max(poll["requests"], 1)
        print()
        print(f"  poll / static floor, same gunicorn settings  {same_ratio:.3f}")
        cpu_ratio = medians["static_same"]["cpu_us"] / poll["cpu_us"]
        # CPU seconds the servers' processes used per request: unlike req/s, hardly moved by
        # whatever else the machine is running.
        print(f"  static / poll server CPU per request         {cpu_ratio:.3f}")
        print(f"  poll / static floor, 2 sync workers          {sync_ratio:.3f}  (target >= 0.25)")
        print(f"  poll p99                                     {poll['p99']:.2f} ms  (target < 50)")
        print(f"  poll errors                                  {poll['errors']}  (target 0)")
        print(
            f"  upstream calls during polling                {upstream_calls} = "
            f"{per_thousand:.2f} per 1,000 polls  (target <= 10)"
        )
        if args.profile:
            print()
            print("  profile of the web workers during one more poll run (py-spy):")
            lines = profile_polls(stack, wrk, gateway, poll_paths, auth, tmp, args.profile_raw)
            for line in lines:
                print(line)
        met = sync_ratio >= 0.25 and poll["p99"] < 50 and poll["errors"] == 0 and per_thousand <= 10
        print(f"  targets {'met' if met else 'NOT MET'}")
        return 0 if met else 1
    finally:
        for proc in servers:
            stop_server(proc)
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
