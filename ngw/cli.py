"""`ngw`: the gateway from a terminal. Configured by NGW_URL and NGW_API_KEY.

Exit codes: 0 ok, 1 other error, 2 bad command line, 3 not found, 4 conflict (impossible in
the current state, name taken), 5 rejected request (validation), 6 API key missing or wrong,
7 rate limited, 8 gateway or upstream failure (5xx, unhealthy), 9 gateway unreachable,
10 --wait timed out, 11 the instance failed (or was terminated) while waiting, 130 Ctrl-C
during --wait (the instance carries on).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from datetime import UTC, datetime

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__
from .client import ApiError, ExitCode, Gateway

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

# Where each action ends, and the states it passes through on the way.
READY = {"ready"}
STOPPED = {"stopped"}
TERMINATED = {"terminated"}
FINAL_BAD = {"failed", "terminated"}
STATUS_STYLE = {
    "ready": "green",
    "running": "green",
    "stopped": "dim",
    "exited": "yellow",
    "failed": "red",
    "terminated": "dim",
}
# Reads come from the gateway's database (no upstream call), so polling twice a second is cheap.
POLL_SECONDS = 0.5


class WaitProblem(Exception):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class Ngw(click.Group):
    """Turns every failure into a plain message and an exit code by class, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            report_api_error(exc)
            ctx.exit(exc.exit_code)
        except WaitProblem as exc:
            err.print(f"[red]Error:[/red] {escape(str(exc))}")
            ctx.exit(exc.exit_code)


def report_api_error(exc: ApiError) -> None:
    where = f" (HTTP {exc.status}{', ' + exc.code if exc.code else ''})" if exc.status else ""
    # Text from the gateway is shown as is: never read as Rich markup.
    err.print(f"[red]Error:[/red] {escape(exc.message + where)}")
    for line in detail_lines(exc.details):
        err.print(f"  {line}", markup=False)
    if exc.retry_after:
        err.print(f"  retry after {exc.retry_after} s", markup=False)
    if exc.request_id:
        err.print(f"  request id: {exc.request_id}", markup=False, style="dim")


def detail_lines(details) -> list[str]:
    if details in (None, "", [], {}):
        return []
    if isinstance(details, dict):
        lines = []
        for key, value in details.items():
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                value = "; ".join(value)
            elif not isinstance(value, str):
                value = json.dumps(value)
            lines.append(f"{key}: {value}")
        return lines
    if isinstance(details, list):
        return [detail_line(d) for d in details]
    return [str(details)]


def detail_line(detail) -> str:
    # Validation errors come as {field, message, value}: "name: <why> (got 'bad name!')".
    if isinstance(detail, dict) and "message" in detail:
        line = f"{detail.get('field') or 'request'}: {detail['message']}"
        if detail.get("value") is not None:
            line += f" (got {json.dumps(detail['value'])})"
        return line
    return detail if isinstance(detail, str) else json.dumps(detail)


def gateway(ctx: click.Context) -> Gateway:
    return ctx.obj["gateway"]


def print_json(data) -> None:
    click.echo(json.dumps(data, indent=2))


def styled(status: str | None) -> str:
    status = status or "?"
    style = STATUS_STYLE.get(status, "yellow")
    return f"[{style}]{escape(status)}[/{style}]"


def seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


def money(value) -> str:
    if value in (None, ""):
        return ""
    try:
        return f"${float(value):,.2f}"
    except (TypeError, ValueError):
        return str(value)


def items(payload, key: str) -> list:
    """The list inside an answer, whether the list is bare or under `key` (or a page)."""
    if isinstance(payload, list):
        return payload
    if isinstance(payload, dict):
        for name in (key, "items", "results", "data"):
            if isinstance(payload.get(name), list):
                return payload[name]
    return []


def table(
    rows: list[dict], columns: list[tuple[str, str]], title: str = "", relative: bool = False
) -> Table:
    """A table of the columns the rows actually carry (older gateways have fewer fields)."""
    present = [(key, label) for key, label in columns if any(key in row for row in rows)]
    t = Table(title=title or None, title_justify="left", header_style="bold")
    for key, label in present:
        if key in ("id", "name"):
            # Ids and names are what a user copies into the next command: never cut them.
            widest = max([len(label), *(len(str(row.get(key) or "")) for row in rows)])
            t.add_column(label, no_wrap=True, min_width=min(widest, 40), overflow="fold")
        elif key in WRAPPED:
            t.add_column(label, ratio=1, overflow="fold")
        else:
            t.add_column(label, no_wrap=True, overflow="ellipsis")
    for row in rows:
        t.add_row(*(cell(key, row.get(key), relative) for key, _ in present))
    return t


# Long free text takes the room left and wraps; every other column keeps its width.
WRAPPED = {"reason", "regions", "image", "note", "ports"}
TIME_FIELDS = {"createdAt", "lastUsedAt", "autoStopAt", "readyAt", "stoppedAt", "timestamp"}


def when(value: str) -> str:
    """An ISO time as a short distance from now ("3m ago", "in 17m"), else as given."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return str(value)
    delta = (moment - datetime.now(UTC)).total_seconds()
    size = abs(delta)
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if size >= span:
            amount = f"{size // span:.0f}{unit}"
            break
    else:
        amount = f"{size:.0f}s"
    return f"in {amount}" if delta > 0 else f"{amount} ago"


def list_item(value) -> str:
    if not isinstance(value, dict):
        return str(value)
    if "port" in value:  # a template's or instance's port: "8888/http"
        return f"{value['port']}/{value.get('type') or 'tcp'}"
    return str(value.get("name") or value.get("id") or value)


def cell(key: str, value, relative: bool = False) -> str:
    if value is None:
        return ""
    if relative and key in TIME_FIELDS:
        return when(value)
    if key == "status":
        return styled(value)
    if key in ("pricePerHour", "spotPricePerHour", "costSoFar", "price"):
        return money(value)
    if key == "billedSeconds" and isinstance(value, int | float):
        return f"{value / 3600:.2f} h"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return escape(", ".join(list_item(v) for v in value))
    if isinstance(value, dict):
        return escape(", ".join(f"{k}={v}" for k, v in value.items()))
    return escape(str(value))


def resolve(gw: Gateway, ref: str) -> dict:
    """An instance by id, else by name (the live one, else the newest terminated one)."""
    if ref.startswith("inst_"):
        try:
            return gw.get(ref)
        except ApiError as exc:
            if exc.status != 404:
                raise
    named = [i for i in gw.list() if i.get("name") == ref]
    if not named:
        raise ApiError(
            f"no instance named or with id {ref!r}", status=404, exit_code=ExitCode.NOT_FOUND
        )
    live = [i for i in named if i.get("status") != "terminated"]
    chosen = max(live or named, key=lambda i: i.get("createdAt") or "")
    return gw.get(chosen["id"])


TRANSIENT = (ExitCode.GATEWAY, ExitCode.UNREACHABLE, ExitCode.RATE_LIMITED)


class Transitions:
    """An instance's status changes read from its events, so that a status that came and went
    between two polls (health_checking often lasts under a second) is still shown."""

    def __init__(self, gw: Gateway, instance_id: str, *, include_past: bool):
        self.gw, self.instance_id = gw, instance_id
        self.available = True
        # After a start or stop the history before it is old news; after a create it is not.
        self.seen: set = set() if include_past else set(self._fetch())

    def _fetch(self) -> dict:
        if not self.available:
            return {}
        try:
            answer = self.gw.events(self.instance_id)
        except ApiError as exc:
            if exc.missing_route:  # an older gateway: the polled status is all we know
                self.available = False
                return {}
            if exc.exit_code in TRANSIENT:
                return {}
            raise
        return {e["id"]: e for e in items(answer, "events") if isinstance(e, dict) and "id" in e}

    def entered(self) -> list[str]:
        """Statuses entered since the last call, oldest first."""
        events = self._fetch()
        fresh = sorted(
            (e for key, e in events.items() if key not in self.seen), key=lambda e: e["id"]
        )
        self.seen.update(events)
        return [
            e["toStatus"]
            for e in fresh
            if e.get("toStatus") and e["toStatus"] != e.get("fromStatus")
        ]


def wait_for(
    gw: Gateway, instance: dict, wanted: set, timeout: float, verb: str, *, created: bool = False
) -> dict:
    """Follow an instance until it reaches `wanted`: a live line, and one line per status."""
    started = time.monotonic()
    deadline = started + timeout
    name = instance.get("name") or instance.get("id")
    status = instance.get("status")
    out.print(f"{escape(name)}: {styled(status)}")
    shown = [status]
    transitions = Transitions(gw, instance["id"], include_past=created)

    def show(new_status: str) -> None:
        if new_status != shown[-1]:
            shown.append(new_status)
            elapsed = seconds(time.monotonic() - started)
            out.print(f"{escape(name)}: {styled(new_status)} ({elapsed})")

    try:
        with out.status(f"{verb} {name}: {status}", spinner="dots") as live:
            while status not in wanted:
                if status in FINAL_BAD:
                    reason = instance.get("statusReason") or instance.get("failureReason") or ""
                    raise WaitProblem(
                        f"{name} is {status}" + (f": {reason}" if reason else ""),
                        ExitCode.INSTANCE_FAILED,
                    )
                if time.monotonic() >= deadline:
                    raise WaitProblem(
                        f"gave up after {timeout:g} s: {name} is still {status} "
                        f"(it carries on; follow it with `ngw show {name}`)",
                        ExitCode.WAIT_TIMEOUT,
                    )
                live.update(f"{verb} {name}: {status} · {seconds(time.monotonic() - started)}")
                time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
                try:
                    current = gw.get(instance["id"])
                except ApiError as exc:
                    # A blip (restart, 5xx, rate limit) must not end a wait; a 404 or 401 does.
                    if exc.exit_code in TRANSIENT:
                        continue
                    raise
                if current.get("status") != status:
                    status = current.get("status")
                    # The events are read after the instance, so they cover its status and
                    # maybe a later one: shown in order, never the polled status after them.
                    entered = transitions.entered()
                    for passed in entered or [status]:
                        show(passed)
                instance = current
    except KeyboardInterrupt:
        raise WaitProblem(
            f"stopped following {name} ({status}); it carries on: `ngw show {name}`",
            ExitCode.INTERRUPTED,
        ) from None
    out.print(f"{escape(name)} is {styled(status)} after {seconds(time.monotonic() - started)}")
    return instance


def print_endpoints(instance: dict) -> None:
    ports = instance.get("portMappings") or []
    if ports:
        out.print(
            table(ports, [("port", "Port"), ("type", "Type"), ("endpoint", "Endpoint")], "Ports")
        )
    ssh = (instance.get("connectionDetails") or {}).get("ssh")
    if ssh:
        out.print(f"ssh: {ssh}   (or: ngw ssh {instance.get('name')})", markup=False)


# --- the commands --------------------------------------------------------------------------------


def wait_options(target: str, default_timeout: float):
    """--wait (follow the instance to `target`) and --wait-timeout, for every action."""

    def decorate(command):
        command = click.option(
            "--wait-timeout",
            type=click.FloatRange(min=0),
            default=default_timeout,
            show_default=True,
            help="Seconds --wait waits before giving up (exit code 10).",
        )(command)
        return click.option("--wait", is_flag=True, help=f"Follow it to {target}.")(command)

    return decorate


@click.group(cls=Ngw, context_settings={"help_option_names": ["-h", "--help"]}, help=__doc__)
@click.option(
    "--url",
    envvar="NGW_URL",
    default="http://127.0.0.1:3000",
    show_default=True,
    help="The gateway (env NGW_URL).",
)
@click.option(
    "--api-key", envvar="NGW_API_KEY", default="", help="Client API key (env NGW_API_KEY)."
)
@click.option(
    "--timeout",
    envvar="NGW_TIMEOUT",
    type=click.FloatRange(min=0.5),
    default=15.0,
    show_default=True,
    help="Seconds to wait for each HTTP answer (env NGW_TIMEOUT).",
)
@click.version_option(__version__, prog_name="ngw")
@click.pass_context
def main(ctx, url, api_key, timeout):
    ctx.obj = {"gateway": Gateway(url, api_key, timeout)}


@main.command()
@click.option("--region", help="Only products offered in this region.")
@click.option("--gpus", type=click.IntRange(1, 8), help="Only products offering this many GPUs.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
@click.pass_context
def catalog(ctx, region, gpus, as_json):
    """Regions, GPU products with prices, and templates to create instances from."""
    gw = gateway(ctx)
    try:
        regions, products, templates = gw.regions(), gw.products(region, gpus), gw.templates()
    except ApiError as exc:
        if exc.missing_route:
            raise ApiError(
                f"{gw.url} has no catalog endpoints (a gateway older than this ngw); "
                "ask its operator for product and template names",
                status=404,
                code=exc.code,
                exit_code=ExitCode.NOT_FOUND,
            ) from None
        raise
    if as_json:
        print_json({"regions": regions, "products": products, "templates": templates})
        return
    region_rows = [r if isinstance(r, dict) else {"id": r} for r in items(regions, "regions")]
    out.print(
        table(
            region_rows,
            [("id", "Region"), ("name", "Name"), ("clusterId", "Cluster"), ("available", "Up")],
            "Regions",
        )
    )
    out.print(
        table(
            items(products, "products"),
            [
                ("name", "Product"),
                ("gpuNum", "GPUs"),
                ("pricePerHour", "On-demand $/h"),
                ("spotPricePerHour", "Spot $/h"),
                ("available", "Available"),
                ("regions", "Regions"),
            ],
            "Products (--product)",
        )
    )
    out.print(
        table(
            items(templates, "templates"),
            [("id", "Template"), ("ports", "Ports"), ("name", "Name"), ("image", "Image")],
            "Templates (--template)",
        )
    )


@main.command()
@click.argument("name")
@click.option("--product", required=True, help="Product name, as `ngw catalog` lists it.")
@click.option("--template", required=True, help="Template id, as `ngw catalog` lists it.")
@click.option("--region", help="Region (the gateway's default when omitted).")
@click.option("--gpus", type=click.IntRange(1, 8), help="Number of GPUs.")
@click.option("--auto-stop", type=click.IntRange(1, 10080), help="Idle minutes before auto-stop.")
@click.option("--no-auto-stop", is_flag=True, help="Exempt this instance from auto-stop.")
@click.option("--spot", is_flag=True, help="Spot billing (cheaper, may be reclaimed).")
@wait_options("ready and print its endpoints", 900)
@click.pass_context
def create(ctx, name, product, template, region, gpus, auto_stop, no_auto_stop, spot, wait,
           wait_timeout):  # fmt: skip
    """Create an instance NAME."""
    body = {"name": name, "productName": product, "templateId": template}
    optional = {
        "region": region,
        "gpuNum": gpus,
        "autoStopMinutes": auto_stop,
        "billingMode": "spot" if spot else None,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if no_auto_stop:
        body["autoStopEnabled"] = False
    gw = gateway(ctx)
    created = gw.create(body)
    what = escape(f"created {name} ({created.get('instanceId')})")
    out.print(f"{what}: {styled(created.get('status'))}")
    if wait:
        instance = gw.get(created["instanceId"])
        instance = wait_for(gw, instance, READY, wait_timeout, "creating", created=True)
        print_endpoints(instance)
    else:
        out.print(f"follow it with `ngw show {escape(name)}` (or create with --wait)")


@main.command(name="ls")
@click.option("--all", "show_all", is_flag=True, help="Include terminated instances.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
@click.pass_context
def list_instances(ctx, show_all, as_json):
    """List instances (terminated ones only with --all)."""
    rows = gateway(ctx).list()
    if not show_all:
        rows = [r for r in rows if r.get("status") != "terminated"]
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print("no instances")
        return
    for row in rows:
        row["ports"] = ", ".join(str(p.get("port")) for p in row.get("portMappings") or [])
    out.print(
        table(
            rows,
            [
                ("name", "Name"),
                ("id", "Id"),
                ("status", "Status"),
                ("region", "Region"),
                ("gpuNum", "GPUs"),
                ("pricePerHour", "$/h"),
                ("costSoFar", "Cost so far"),
                ("ports", "Ports"),
                ("lastUsedAt", "Last used"),
                ("autoStopAt", "Auto-stop"),
            ],
            relative=True,
        )
    )


@main.command()
@click.argument("ref", metavar="NAME|ID")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
@click.pass_context
def show(ctx, ref, as_json):
    """Show one instance: status, why, cost, auto-stop, endpoints."""
    instance = resolve(gateway(ctx), ref)
    if as_json:
        print_json(instance)
        return
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    skip = {"portMappings", "connectionDetails"}
    for key, value in instance.items():
        if key not in skip and value not in (None, "", [], {}):
            t.add_row(key, cell(key, value))
    out.print(t)
    print_endpoints(instance)


def _action(ctx, ref: str, call, wanted: set, verb: str, wait: bool, wait_timeout: float):
    gw = gateway(ctx)
    instance = resolve(gw, ref)
    answer = call(gw, instance["id"])
    message = escape(f"{instance.get('name')}: {answer.get('message') or verb}")
    out.print(f"{message} ({styled(answer.get('status'))})")
    if wait:
        instance = wait_for(gw, gw.get(instance["id"]), wanted, wait_timeout, verb)
        if wanted == READY:
            print_endpoints(instance)


@main.command()
@click.argument("ref", metavar="NAME|ID")
@wait_options("ready", 900)
@click.pass_context
def start(ctx, ref, wait, wait_timeout):
    """Start a stopped instance."""
    _action(ctx, ref, Gateway.start, READY, "starting", wait, wait_timeout)


@main.command()
@click.argument("ref", metavar="NAME|ID")
@wait_options("stopped", 600)
@click.pass_context
def stop(ctx, ref, wait, wait_timeout):
    """Stop an instance (its disk is kept; the GPU stops being billed)."""
    _action(ctx, ref, Gateway.stop, STOPPED, "stopping", wait, wait_timeout)


@main.command()
@click.argument("ref", metavar="NAME|ID")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@wait_options("terminated", 600)
@click.pass_context
def rm(ctx, ref, yes, wait, wait_timeout):
    """Terminate an instance: deletes it upstream, disks included."""
    if not yes and sys.stdin.isatty():
        click.confirm(f"Terminate {ref} and delete its disks?", abort=True)
    _action(ctx, ref, Gateway.delete, TERMINATED, "terminating", wait, wait_timeout)


@main.command()
@click.argument("ref", metavar="NAME|ID")
@click.pass_context
def touch(ctx, ref):
    """Send a heartbeat: the instance counts as used now (postpones auto-stop)."""
    gw = gateway(ctx)
    instance = resolve(gw, ref)
    answer = gw.touch(instance["id"])
    line = f"{instance.get('name')}: last used {answer.get('lastUsedAt')}"
    auto_stop_at = answer.get("autoStopAt") or gw.get(instance["id"]).get("autoStopAt")
    if auto_stop_at:
        line += f", auto-stop at {auto_stop_at}"
    out.print(line, markup=False)


@main.command()
@click.argument("ref", metavar="NAME|ID")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
@click.pass_context
def events(ctx, ref, as_json):
    """An instance's history: every status change, who made it and why (newest first)."""
    gw = gateway(ctx)
    instance = resolve(gw, ref)
    try:
        answer = gw.events(instance["id"])
    except ApiError as exc:
        if exc.missing_route:
            raise ApiError(
                f"{gw.url} does not list events (a gateway older than this ngw); "
                "operators see them in the admin",
                status=404,
                code=exc.code,
                exit_code=ExitCode.NOT_FOUND,
            ) from None
        raise
    if as_json:
        print_json(answer)
        return
    rows = items(answer, "events")
    for row in rows:
        before, after = row.get("fromStatus"), row.get("toStatus")
        if before == after:  # a decision recorded without a status change
            row["change"] = after or ""
        elif before or after:
            row["change"] = f"{before or '-'} → {after or '-'}"
    out.print(
        table(
            rows,
            [
                ("createdAt", "When"),
                ("change", "Change"),
                ("kind", "Kind"),
                ("source", "Source"),
                ("actor", "Actor"),
                ("reason", "Why"),
            ],
            f"Events of {instance.get('name')}",
            relative=True,
        )
    )


@main.command()
@click.argument("ref", metavar="NAME|ID")
@click.option("--print", "print_only", is_flag=True, help="Print the ssh command, do not run it.")
@click.argument("ssh_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def ssh(ctx, ref, print_only, ssh_args):
    """Open an SSH session on a ready instance (extra arguments go to ssh)."""
    instance = resolve(gateway(ctx), ref)
    command = (instance.get("connectionDetails") or {}).get("ssh")
    if not command:
        raise WaitProblem(
            f"{instance.get('name')} has no SSH endpoint (status {instance.get('status')}; "
            "its template may expose no SSH port)",
            ExitCode.CONFLICT if instance.get("status") != "ready" else ExitCode.NOT_FOUND,
        )
    argv = shlex.split(command) + list(ssh_args)
    if print_only:
        click.echo(shlex.join(argv))
        return
    sys.stdout.flush()
    try:
        # The user's own ssh replaces us, as typing the command would (its exit code is ours).
        os.execvp(argv[0], argv)  # noqa: S606
    except OSError as exc:
        raise WaitProblem(f"cannot run {argv[0]}: {exc.strerror}", ExitCode.ERROR) from None


@main.command()
@click.option("--run", is_flag=True, help="Stop the idle instances now (default: only list them).")
@click.pass_context
def autostop(ctx, run):
    """Auto-stop: its state, and the instances idle past their threshold."""
    gw = gateway(ctx)
    stats = gw.autostop_stats()
    out.print(
        f"scheduler {'running' if stats.get('schedulerRunning') else '[yellow]not running[/]'}"
        f", checks every {stats.get('checkIntervalMinutes')} min"
        f", default threshold {stats.get('defaultInactivityThresholdMinutes')} min"
        f", stopped so far {stats.get('totalStopped', 0)}"
    )
    answer = gw.autostop_trigger(dry_run=not run)
    candidates = answer.get("candidates") or []
    if not candidates:
        out.print("no idle instance")
        return
    out.print(
        table(
            candidates,
            [
                ("name", "Name"),
                ("instanceName", "Name"),
                ("instanceId", "Id"),
                ("idleMinutes", "Idle min"),
                ("thresholdMinutes", "Threshold"),
                ("reason", "Why"),
            ],
            "Stopped" if run else "Would stop (run with --run to stop them)",
        )
    )


@main.command()
@click.pass_context
def health(ctx):
    """The gateway's health and each dependency's (exit code 8 when unhealthy)."""
    answer = gateway(ctx).health()
    status = answer.get("status")
    style = {"healthy": "green", "degraded": "yellow"}.get(status, "red")
    out.print(f"gateway: [{style}]{escape(str(status))}[/{style}]")
    dependencies = answer.get("dependencies") or {}
    rows = []
    for name, state in (answer.get("services") or {}).items():
        detail = dependencies.get(name) or {}
        note = (
            detail.get("error") or detail.get("message") or "" if isinstance(detail, dict) else ""
        )
        rows.append({"service": name, "state": state, "note": note})
    if rows:
        out.print(table(rows, [("service", "Service"), ("state", "State"), ("note", "Note")]))
    if status not in ("healthy", "degraded"):
        ctx.exit(ExitCode.GATEWAY)
