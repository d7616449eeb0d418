"""Run every benchmark under bench/ and write docs/benchmarks.md (`make bench`).

Each script runs as its own subprocess, one after another (they start real processes and would
disturb each other's figures), with its output shown live and kept verbatim for the report. The
auto-stop sweep runs twice: on SQLite, and on PostgreSQL when one answers on 127.0.0.1:5432.
Scripts that do not exist yet are listed as not run. The report ends with a table of every target
the issues name, each shown met or missing, parsed from the scripts' printed figures where that
is easy, else pointing at the output above.

    .venv/bin/python bench/run_all.py [--quick] [--only NAME ...] [--output docs/benchmarks.md]

--quick passes each script its smoke-run flags (short durations, smaller fleets); its report
says so. Every script talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
PG_BENCH_URL = "postgres://postgres@127.0.0.1:5432/novita_gateway_bench"
# The saturation bench takes its own Redis database number from this server (tests/e2e/stack.py).
REDIS_BENCH_URL = "redis://127.0.0.1:6379/0"
# bench/polling_saturation.py's output on the code before issue 18 (same machine, same session),
# shown in the report beside today's and used for the "3x today's" target: the poll's req/s over
# the static floor's under the same gunicorn settings, a ratio, so it survives a busier or
# quieter machine.
BASELINES = BENCH / "baselines"


def baseline(name: str) -> str:
    path = BASELINES / f"{name}.txt"
    return path.read_text() if path.exists() else ""


SCRIPT_TIMEOUT = 45 * 60


@dataclass
class Run:
    name: str
    script: str
    args: list[str] = field(default_factory=list)
    quick_args: list[str] = field(default_factory=list)
    env: dict[str, str | None] = field(default_factory=dict)
    label: str = ""
    # Filled in when run.
    command: str = ""
    output: str = ""
    returncode: int | None = None
    seconds: float = 0.0
    skipped: str = ""


def postgres_answers() -> bool:
    return answers(5432)


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def on_both_databases(
    name: str, *, quick_args: list[str], redis_url: str, sqlite_args: list[str] = ()
) -> tuple[Run, Run]:
    """bench/NAME.py on SQLite without Redis, then as NAME_pg on PostgreSQL + Redis."""
    sqlite = Run(
        name,
        f"{name}.py",
        args=list(sqlite_args),
        quick_args=quick_args,
        env={"DATABASE_URL": None, "REDIS_URL": None},
        label="SQLite",
    )
    postgres = Run(
        f"{name}_pg",
        f"{name}.py",
        quick_args=quick_args,
        env={"DATABASE_URL": PG_BENCH_URL, "REDIS_URL": redis_url},
        label="PostgreSQL + Redis",
    )
    if not (answers(5432) and answers(6379)):
        postgres.skipped = "no PostgreSQL and Redis answering on 127.0.0.1"
    return sqlite, postgres


def plan() -> list[Run]:
    runs = [
        Run("upstream_client", "upstream_client.py", quick_args=["1000"]),
        Run(
            "client_polling",
            "client_polling.py",
            quick_args=["--seconds", "5", "--instances", "20", "--pollers", "5"],
        ),
        # The profile needs py-spy (PYSPY=path or on PATH); without it the bench says so.
        *on_both_databases(
            "polling_saturation",
            quick_args=["--rounds", "1", "--seconds", "3"],
            redis_url=REDIS_BENCH_URL,
            sqlite_args=["--profile"],
        ),
        # Its own Redis database number, so it never touches a running gateway's.
        *on_both_databases(
            "poll_cpu",
            quick_args=["--polls", "200", "--rounds", "3"],
            redis_url="redis://127.0.0.1:6379/14",
        ),
        Run("comprehensive_listing", "comprehensive_listing.py", quick_args=["1000"]),
        Run(
            "autostop_sweep",
            "autostop_sweep.py",
            env={"DATABASE_URL": None},
            label="SQLite",
        ),
    ]
    postgres = Run(
        "autostop_sweep_pg",
        "autostop_sweep.py",
        env={"DATABASE_URL": PG_BENCH_URL},
        label="PostgreSQL",
    )
    if not postgres_answers():
        postgres.skipped = "no PostgreSQL answering on 127.0.0.1:5432"
    runs += [
        postgres,
        Run(
            "request_overhead",
            "request_overhead.py",
            quick_args=["--requests", "30", "--rounds", "2"],
        ),
        Run("dashboard_charts", "dashboard_charts.py", env={"DATABASE_URL": None}),
        Run("process_memory", "process_memory.py", quick_args=["--quick"]),
        Run("autostop_under_attack", "autostop_under_attack.py", quick_args=["--idle", "1"]),
        Run("sustained_load", "sustained_load.py", quick_args=["--quick"]),
    ]
    return runs


def machine() -> dict[str, str]:
    info = {"cpu": platform.processor() or "unknown", "cores": str(os.cpu_count())}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                kib = int(line.split()[1])
                info["memory"] = f"{kib / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        info["memory"] = "unknown"
    info["os"] = f"{platform.system()} {platform.release()}"
    info["python"] = platform.python_version()
    return info


def describe_url(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        return "unset"
    parts = urlsplit(value)
    # Never print credentials.
    return f"{parts.scheme}://{parts.hostname}:{parts.port or ''}{parts.path}"


def execute(run: Run, quick: bool) -> None:
    path = BENCH / run.script
    if run.skipped:
        return
    if not path.exists():
        run.skipped = "script not present"
        return
    args = run.quick_args if quick and run.quick_args else run.args
    env = dict(os.environ)
    for key, value in run.env.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    command = [sys.executable, str(path.relative_to(ROOT)), *args]
    python = Path(sys.executable)
    shown = [str(python.relative_to(ROOT)) if python.is_relative_to(ROOT) else str(python)]
    # The URLs set here carry no credentials; show them as they are.
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in run.env.items() if v)
    unset = " ".join(f"-u {k}" for k, v in run.env.items() if v is None)
    run.command = " ".join(
        part
        for part in (f"env {unset}" if unset else "", prefix, shlex.join(shown + command[1:]))
        if part
    )
    print(f"\n=== {run.name}{f' ({run.label})' if run.label else ''}: {run.command}", flush=True)
    started = time.monotonic()
    lines: list[str] = []
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line)
            if time.monotonic() - started > SCRIPT_TIMEOUT:
                proc.kill()
                lines.append(f"[run_all: killed after {SCRIPT_TIMEOUT} s]\n")
                break
        run.returncode = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        run.returncode = proc.wait()
    run.seconds = time.monotonic() - started
    run.output = "".join(lines)


# --- targets ------------------------------------------------------------------------------


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def _find(pattern: str, text: str, flags=0):
    return re.findall(pattern, text, flags)


def verdict(ok: bool | None, reason: str = "") -> str:
    if ok is None:
        return "see output above" + (f" ({reason})" if reason else "")
    if ok:
        return "met"
    return "missing" + (f": {reason}" if reason else "")


def targets(runs: dict[str, Run]) -> list[tuple[str, str, str, str]]:
    """(issue target, measured, status) rows; each parsed where the output makes it easy."""
    rows: list[tuple[str, str, str, str]] = []

    def unavailable(run: Run | None) -> str | None:
        if run is None:
            return "not planned"
        if run.skipped:
            return f"not run ({run.skipped})"
        if run.returncode not in (0, None) and not run.output:
            return f"script failed (exit {run.returncode})"
        return None

    def add(area, target, measured, status):
        rows.append((area, target, measured, status))

    # Upstream client overhead.
    run = runs.get("upstream_client")
    if why := unavailable(run):
        add("Upstream client", "median within 1.3x of a bare Session", "-", why)
    else:
        found = _find(r"ratio ours/bare: median ([\d.]+)x", run.output)
        if found:
            ratio = float(found[-1])
            add(
                "Upstream client",
                "median within 1.3x of a bare Session",
                f"{ratio:.2f}x",
                verdict(ratio <= 1.3, f"{ratio:.2f}x > 1.3x"),
            )
        else:
            add("Upstream client", "median within 1.3x of a bare Session", "-", verdict(None))

    # Client polling.
    run = runs.get("client_polling")
    polling = [
        ("p50 <= 10 ms", r"p50 latency\s+([\d.]+) ms", 10.0, "ms"),
        ("p99 <= 50 ms", r"p99 latency\s+([\d.]+) ms", 50.0, "ms"),
        ("<= 10 upstream calls per 1,000 polls", r"= ([\d.]+) per 1,000 polls", 10.0, ""),
    ]
    for target, pattern, limit, unit in polling:
        if why := unavailable(run):
            add("Client polling", target, "-", why)
            continue
        found = _find(pattern, run.output)
        if not found:
            add("Client polling", target, "-", verdict(None))
            continue
        value = float(found[-1])
        shown = f"{value:g} {unit}".strip()
        add("Client polling", target, shown, verdict(value <= limit, f"{shown} > {limit:g}"))

    # Polling at saturation, beside the static floor.
    for key, label in (("polling_saturation", "SQLite"), ("polling_saturation_pg", "PostgreSQL")):
        run = runs.get(key)
        area = f"Polling at saturation ({label})"
        if why := unavailable(run):
            add(area, "poll >= 0.25 of the static floor (2 sync workers)", "-", why)
            continue
        for row in saturation_rows(key, run.output):
            add(area, *row)

    # CPU of a poll in process: the steady figure beside the noisy req/s above.
    for key, label in (("poll_cpu", "SQLite"), ("poll_cpu_pg", "PostgreSQL + Redis")):
        run = runs.get(key)
        area = f"Poll CPU in process ({label})"
        if why := unavailable(run):
            add(area, "CPU per poll, no server (reported)", "-", why)
            continue
        found = _find(r"CPU per poll\s+median ([\d,]+) us, best ([\d,]+) us", run.output)
        measured = f"{found[-1][0]} us median, {found[-1][1]} us best" if found else "-"
        add(area, "CPU per poll, no server (reported)", measured, "reported")

    # Comprehensive listing: the script prints its own per-size target lines.
    run = runs.get("comprehensive_listing")
    if why := unavailable(run):
        add("Comprehensive listing", "cold within 1.25x bare; warm < 100 ms (1,000)", "-", why)
    else:
        blocks = re.split(r"\n(?=[\d,]+ upstream instances)", run.output)
        parsed = False
        for block in blocks[1:]:
            size = block.split(" ", 1)[0]
            cold = _find(r"listing, cold cache \(service\)\s+([\d.]+) ms.*?([\d.]+)x bare", block)
            warm = _find(r"listing, warm cache \(service\)\s+([\d.]+) ms", block)
            requests = _find(r"upstream requests per pass: \[([^\]]*)\]", block)
            pages = _find(r"(\d+) pages", block)
            for name, state in _find(r"target (.+?)\s{2,}(met|NOT MET)", block):
                parsed = True
                name = name.strip()
                if name.startswith("cold") and cold:
                    measured = f"{cold[-1][1]}x bare ({cold[-1][0]} ms)"
                elif name.startswith("warm") and warm:
                    measured = f"{warm[-1]} ms"
                elif name.startswith("upstream") and requests:
                    measured = f"{requests[-1]} requests, {pages[-1] if pages else '?'} pages"
                else:
                    measured = "see output"
                add(
                    "Comprehensive listing",
                    f"{name} ({size} instances)",
                    measured,
                    verdict(state == "met", f"{measured}, by the script's own check"),
                )
        if not parsed:
            add(
                "Comprehensive listing",
                "cold 1.25x, warm < 100 ms, requests == pages",
                "-",
                verdict(None),
            )

    # Auto-stop sweep, on each database.
    for key, label in (("autostop_sweep", "SQLite"), ("autostop_sweep_pg", "PostgreSQL")):
        run = runs.get(key)
        area = f"Auto-stop ({label})"
        if why := unavailable(run):
            add(area, "decision < 1 s; constant queries; overshoot <= interval", "-", why)
            continue
        blocks = re.split(r"\n(?=[\d,]+ tracked instances)", run.output)[1:]
        decisions = []
        for block in blocks:
            tracked = block.split(" ", 1)[0]
            decision = _find(r"decision[^:]*:\s+([\d.]+) ms", block)
            if decision:
                value = float(decision[0])
                decisions.append(value)
                add(
                    area,
                    f"decision < 1 s ({tracked} tracked)",
                    f"{value:.1f} ms",
                    verdict(value < 1000, f"{value:.0f} ms"),
                )
            overshoot = _find(
                r"worst-case overshoot:.*?= ([\d.]+) s \(([\d.]+) intervals of ([\d.]+) s\)",
                block,
            )
            if overshoot:
                seconds, intervals, interval = overshoot[0]
                add(
                    area,
                    f"overshoot <= one check interval ({tracked} tracked)",
                    f"{seconds} s = {float(intervals):.3f} of the {interval} s interval",
                    verdict(float(intervals) <= 1, f"{intervals} intervals"),
                )
        queries = _find(r"queries per sweep by fleet size: (.+)", run.output)
        if queries:
            counts = re.findall(r"-> (\d+)", queries[-1])
            add(
                area,
                "queries constant in fleet size",
                queries[-1].strip(),
                verdict(len(set(counts)) == 1, "grows with the fleet"),
            )
        if not decisions:
            add(area, "decision < 1 s; constant queries; overshoot", "-", verdict(None))

    # Request overhead.
    run = runs.get("request_overhead")
    if why := unavailable(run):
        add("Request overhead", "< 10% at p50", "-", why)
    else:
        found = _find(
            r"^(\S.*?)\s+p50 overhead of metrics \+ rate limiting: ([+-][\d.]+)%", run.output, re.M
        )
        for label, value in found:
            pct = float(value)
            add(
                "Request overhead",
                f"< 10% at p50 ({label.strip()})",
                f"{pct:+.1f}%",
                verdict(pct < 10, f"{pct:+.1f}%"),
            )
        if not found:
            add("Request overhead", "< 10% at p50", "-", verdict(None))

    # Sustained load.
    run = runs.get("sustained_load")
    if why := unavailable(run):
        add("Sustained load", "200 req/s sustained", "-", why)
    else:
        rate = _find(r"achieved rate\s+([\d.]+) req/s", run.output)
        errors = _find(r"error rate\s+([\d.]+)%", run.output)
        offered = _find(r"offered ([\d.]+) req/s", run.output)
        latency = _find(r"latency p50\s+([\d.]+) ms\s+p99 ([\d.]+) ms", run.output)
        if rate and errors and offered:
            achieved, err, wanted = float(rate[-1]), float(errors[-1]), float(offered[-1])
            measured = f"{achieved:.1f} req/s, {err:.2f}% errors"
            if latency:
                measured += f", p50 {latency[-1][0]} ms / p99 {latency[-1][1]} ms"
            ok = achieved >= 200 * 0.975 and err < 1.0
            reason = f"{achieved:.1f} req/s, {err:.2f}% errors"
            if wanted < 200:
                ok, reason = False, f"only {wanted:g} req/s offered (quick run)"
            add(
                "Sustained load", "200 req/s sustained (< 1% errors)", measured, verdict(ok, reason)
            )
        else:
            add("Sustained load", "200 req/s sustained", "-", verdict(None))

    # Dashboard charts: the script prints its own target line.
    run = runs.get("dashboard_charts")
    target = "chart figures + drawing < 2 s (10,000 instances), queries constant"
    if why := unavailable(run):
        add("Dashboard charts", target, "-", why)
    else:
        found = _find(
            r"target: .*?\(([\d.]+ s)\), same query count .*?\((True|False)\): (met|MISSED)",
            run.output,
        )
        if found:
            took, constant, state = found[-1]
            measured = f"{took}, queries {'constant' if constant == 'True' else 'grow'}"
            add("Dashboard charts", target, measured, verdict(state == "met", measured))
        else:
            add("Dashboard charts", target, "-", verdict(None))

    # Process memory: reported, no target.
    run = runs.get("process_memory")
    if why := unavailable(run):
        add("Process memory", "RSS per process with 10,000 instances (no target)", "-", why)
    else:
        total = _find(r"^\s+total\s+([\d.]+) MB\s+([\d.]+) MB", run.output, re.M)
        fleet = _find(r"process memory: ([\d,]+) upstream instances", run.output)
        measured = f"{total[-1][1]} MB all processes" if total else "see output above"
        add(
            "Process memory",
            f"RSS per process with {fleet[-1] if fleet else '?'} instances",
            measured,
            "reported (no target named)",
        )
    # Auto-stop under attack: trickling receivers and ports must not delay cost control.
    run = runs.get("autostop_under_attack")
    target = "overshoot under attack <= 15 s and within 5 s of quiet"
    if why := unavailable(run):
        add("Auto-stop under attack", target, "-", why)
    else:
        found = _find(r"max ([\d.]+) s vs ([\d.]+) s \(target: .*?\)\s+(met|NOT MET)", run.output)
        if found:
            attack, quiet, state = found[-1]
            add(
                "Auto-stop under attack",
                target,
                f"{attack} s under attack, {quiet} s quiet",
                verdict(state == "met", f"{attack} s vs {quiet} s"),
            )
        else:
            add("Auto-stop under attack", target, "-", verdict(None))

    return rows


def saturation_rows(key: str, output: str) -> list[tuple[str, str, str]]:
    def last(pattern: str) -> float | None:
        found = _find(pattern, output)
        return float(found[-1].replace(",", "")) if found else None

    rows = []
    sync = last(r"poll / static floor, 2 sync workers\s+([\d.]+)")
    same = last(r"poll / static floor, same gunicorn settings\s+([\d.]+)")
    rps = last(r"GET /api/instances/\{id\} \(\d+ ready\)\s+([\d,]+)")
    p99 = last(r"poll p99\s+([\d.]+) ms")
    errors = last(r"poll errors\s+(\d+)")
    upstream = last(r"= ([\d.]+) per 1,000 polls")
    if sync is not None:
        rows.append(
            (
                "poll >= 0.25 of the static floor (2 sync workers)",
                f"{sync:.3f} ({rps:,.0f} req/s)" if rps is not None else f"{sync:.3f}",
                verdict(sync >= 0.25, f"{sync:.3f} < 0.25"),
            )
        )
    before = _find(r"poll / static floor, same gunicorn settings\s+([\d.]+)", baseline(key))
    if same is not None and before:
        gain = same / float(before[-1])
        rows.append(
            (
                "poll throughput >= 3x before issue 18 (over the static floor, same settings)",
                f"{gain:.1f}x ({same:.3f} vs {float(before[-1]):.3f})",
                verdict(gain >= 3, f"{gain:.1f}x"),
            )
        )
    cpu_pattern = r"GET /api/instances/\{id\} \(\d+ ready\).*?([\d,]+) us$"
    cpu = _find(cpu_pattern, output, re.M)
    cpu_before = _find(cpu_pattern, baseline(key), re.M)
    if cpu and cpu_before:
        rows.append(
            (
                "server CPU per poll (reported; steady on a busy machine)",
                f"{cpu[-1]} us (before issue 18: {cpu_before[-1]} us)",
                "reported",
            )
        )
    if p99 is not None:
        rows.append(("poll p99 < 50 ms at 20 connections", f"{p99:g} ms", verdict(p99 < 50)))
    if errors is not None:
        rows.append(("zero errors", f"{errors:g}", verdict(errors == 0, f"{errors:g} errors")))
    if upstream is not None:
        rows.append(
            ("<= 10 upstream calls per 1,000 polls", f"{upstream:g}", verdict(upstream <= 10))
        )
    return rows or [("poll vs static floor", "-", verdict(None))]


def headline(runs: dict[str, Run]) -> list[str]:
    """The polling figure: poll throughput at saturation over the static floor."""
    parts = []
    for key, label in (("polling_saturation", "SQLite"), ("polling_saturation_pg", "PostgreSQL")):
        run = runs.get(key)
        if run is None or run.skipped or not run.output:
            continue
        sync = _find(r"poll / static floor, 2 sync workers\s+([\d.]+)", run.output)
        same = _find(r"poll / static floor, same gunicorn settings\s+([\d.]+)", run.output)
        rps = _find(r"GET /api/instances/\{id\} \(\d+ ready\)\s+([\d,]+)", run.output)
        if sync and same and rps:
            parts.append(
                f"{label}: **{float(sync[-1]):.2f} of the static floor** with 2 sync workers "
                f"({rps[-1]} req/s; {float(same[-1]):.2f} of the floor under the same gunicorn "
                "settings)"
            )
    if not parts:
        return []
    return [
        "",
        "**Polling headline** (GET /api/instances/{id} at saturation: wrk, 20 keep-alive "
        "connections, auth, rate limit and metrics on, beside a static WSGI app returning the "
        "same body, same run, medians): " + "; ".join(parts) + ". Target: >= 0.25.",
        "",
        "How the poll got there, each cut measured beside the code before it: "
        "[polling-performance.md](polling-performance.md).",
    ]


# --- report -------------------------------------------------------------------------------


def report(runs: list[Run], quick: bool, argv: list[str]) -> str:
    info = machine()
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "make bench" if not argv else f".venv/bin/python bench/run_all.py {shlex.join(argv)}"
    out = [
        "# Benchmarks",
        "",
        f"Generated by `bench/run_all.py` ({'`make bench`' if not argv else 'run by hand'}); "
        "do not edit by hand, run it again.",
        "",
        f"- Date: {now}",
        f"- Command: `{command}`",
        f"- Machine: {info['cpu']}, {info['cores']} cores, {info.get('memory', 'unknown')} "
        f"memory; {info['os']}; Python {info['python']}",
        f"- DATABASE_URL: {describe_url('DATABASE_URL')}; REDIS_URL: {describe_url('REDIS_URL')}",
        "- Every benchmark talks to 127.0.0.1 only (the sandbox upstream, our own processes).",
    ]
    out += headline({r.name: r for r in runs})
    if quick:
        out += ["", "**Quick smoke run** (`--quick`): short durations and small fleets; the"]
        out += ["figures below are not the benchmark results."]
    out += ["", "## Targets", "", "| Area | Target | Measured | Status |", "|---|---|---|---|"]
    for area, target, measured, status in targets({r.name: r for r in runs}):
        cells = [c.replace("|", "\\|") for c in (area, target, measured, status)]
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "## Output of each script", ""]
    for run in runs:
        title = run.name + (f" ({run.label})" if run.label else "")
        out += [f"### {title}", ""]
        if run.skipped:
            out += [f"Not run: {run.skipped}.", ""]
            continue
        out += [
            f"`{run.command}` - exit {run.returncode}, {run.seconds:.0f} s",
            "",
            "```",
            run.output.rstrip("\n"),
            "```",
            "",
        ]
        if before := baseline(run.name):
            out += [
                f"Before issue 18 (the same script on the code before its changes, kept in "
                f"`bench/baselines/{run.name}.txt`):",
                "",
                "```",
                before.rstrip("\n"),
                "```",
                "",
            ]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smoke-run every script")
    parser.add_argument("--only", nargs="*", default=None, help="run only these names")
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args()

    runs = plan()
    for run in runs:
        if args.only and run.name not in args.only:
            run.skipped = "not selected (--only)"
            continue
        execute(run, args.quick)
    text = report(runs, args.quick, sys.argv[1:])
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text + "\n")
    print(f"\nwrote {output}")
    failed = [r.name for r in runs if r.returncode not in (0, None)]
    if failed:
        print("scripts that missed a target or failed (exit code not 0): " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
