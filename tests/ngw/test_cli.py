"""`ngw` against a mocked gateway: what it prints and exits with when the gateway is older, down,
slow, refuses or fails. (tests/e2e/test_cli_e2e.py drives it against a live one.)"""

import json

import pytest
import requests
import responses
from click.testing import CliRunner

from ngw import cli
from ngw.client import ExitCode

URL = "http://gateway.test"


def envelope(code, message, details=None, request_id="req_1"):
    return {
        "error": {
            "code": code,
            "message": message,
            "details": details,
            "timestamp": "2026-11-30T00:00:00.000Z",
            "requestId": request_id,
        }
    }


NO_ROUTE = envelope("NOT_FOUND", "Resource not found", "No route for /api/x")


@pytest.fixture
def gateway():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    monkeypatch.setattr(cli, "POLL_SECONDS", 0.01)


def run(*args):
    result = CliRunner().invoke(cli.main, ["--url", URL, *args], catch_exceptions=False)
    return result


def instance(status, **extra):
    return {"id": "inst_1", "name": "demo", "status": status, **extra}


def test_catalog_on_a_gateway_without_catalog_endpoints_says_so(gateway):
    gateway.get(f"{URL}/api/regions", status=404, json=NO_ROUTE)
    result = run("catalog")
    assert result.exit_code == ExitCode.NOT_FOUND
    assert "has no catalog endpoints (a gateway older than this ngw)" in result.output
    assert "Traceback" not in result.output


def test_events_on_a_gateway_without_events_says_so(gateway):
    gateway.get(f"{URL}/api/instances", json={"instances": [instance("ready")], "total": 1})
    gateway.get(f"{URL}/api/instances/inst_1", json=instance("ready"))
    gateway.get(f"{URL}/api/instances/inst_1/events", status=404, json=NO_ROUTE)
    result = run("events", "demo")
    assert result.exit_code == ExitCode.NOT_FOUND
    assert "does not list events" in result.output


def test_wait_without_events_shows_the_polled_statuses(gateway):
    gateway.get(f"{URL}/api/instances", json={"instances": [instance("stopped")], "total": 1})
    gateway.post(
        f"{URL}/api/instances/inst_1/start",
        status=202,
        json={"instanceId": "inst_1", "status": "starting", "message": "Start initiated"},
    )
    gateway.get(f"{URL}/api/instances/inst_1/events", status=404, json=NO_ROUTE)
    for status in ("stopped", "starting", "starting", "health_checking", "ready"):
        gateway.get(f"{URL}/api/instances/inst_1", json=instance(status))
    result = run("start", "demo", "--wait")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("demo: ")]
    assert [line.split()[1] for line in lines] == ["Start", "starting", "health_checking", "ready"]


def test_a_gateway_blip_during_wait_does_not_end_it(gateway):
    gateway.get(f"{URL}/api/instances", json={"instances": [instance("ready")], "total": 1})
    gateway.post(
        f"{URL}/api/instances/inst_1/stop",
        status=202,
        json={"instanceId": "inst_1", "status": "stopping", "message": "Stop initiated"},
    )
    gateway.get(f"{URL}/api/instances/inst_1/events", json={"events": [], "total": 0})
    gateway.get(f"{URL}/api/instances/inst_1", json=instance("ready"))
    gateway.get(f"{URL}/api/instances/inst_1", json=instance("stopping"))
    gateway.get(
        f"{URL}/api/instances/inst_1", status=503, json=envelope("SERVICE_UNAVAILABLE", "x")
    )
    gateway.get(f"{URL}/api/instances/inst_1", json=instance("stopped"))
    result = run("stop", "demo", "--wait")
    assert result.exit_code == 0, result.output
    assert "demo is stopped after" in result.output


def test_wait_ends_with_exit_11_and_the_reason_when_the_instance_fails(gateway):
    gateway.post(
        f"{URL}/api/instances",
        status=201,
        json={"instanceId": "inst_1", "status": "creating", "message": "ok"},
    )
    gateway.get(f"{URL}/api/instances/inst_1/events", json={"events": [], "total": 0})
    gateway.get(f"{URL}/api/instances/inst_1", json=instance("creating"))
    gateway.get(
        f"{URL}/api/instances/inst_1",
        json=instance("failed", statusReason="no capacity for RTX 4090 24GB in CN-HK-01"),
    )
    result = run("create", "demo", "--product", "RTX 4090 24GB", "--template", "t", "--wait")
    assert result.exit_code == ExitCode.INSTANCE_FAILED
    assert "demo is failed: no capacity for RTX 4090 24GB in CN-HK-01" in result.output


def test_rate_limit_is_exit_7_with_retry_after(gateway):
    gateway.get(
        f"{URL}/api/instances",
        status=429,
        json=envelope("RATE_LIMIT_EXCEEDED", "Too many requests"),
        headers={"Retry-After": "12"},
    )
    result = run("ls")
    assert result.exit_code == ExitCode.RATE_LIMITED
    assert "Too many requests (HTTP 429, RATE_LIMIT_EXCEEDED)" in result.output
    assert "retry after 12 s" in result.output


def test_an_unhealthy_gateway_is_exit_8(gateway):
    gateway.get(
        f"{URL}/health",
        status=503,
        json={"status": "unhealthy", "services": {"database": "down", "redis": "up"}},
    )
    result = run("health")
    assert result.exit_code == ExitCode.GATEWAY
    assert "unhealthy" in result.output and "database" in result.output


def test_every_call_has_a_bounded_timeout_and_a_slow_gateway_is_exit_9(monkeypatch):
    seen = []

    def slow(self, method, url, **kwargs):
        seen.append(kwargs.get("timeout"))
        raise requests.Timeout("read timed out")

    monkeypatch.setattr(requests.Session, "request", slow)
    result = run("--timeout", "2", "ls")
    assert result.exit_code == ExitCode.UNREACHABLE
    assert f"{URL} did not answer within 2 s" in result.output
    assert seen == [(3.05, 2.0)]


def test_a_page_that_is_not_the_gateway_is_a_plain_error(gateway):
    gateway.get(f"{URL}/api/instances", body="<html>hello</html>", content_type="text/html")
    result = run("ls")
    assert result.exit_code == ExitCode.ERROR
    assert "is NGW_URL the gateway?" in result.output


def test_catalog_prints_products_with_prices_and_templates_with_ports(gateway):
    gateway.get(
        f"{URL}/api/regions",
        json={"regions": [{"id": "CN-HK-01", "clusterId": "hk-1", "available": True}], "total": 1},
    )
    gateway.get(
        f"{URL}/api/products",
        json={
            "products": [
                {
                    "name": "RTX 4090 24GB",
                    "gpu": "RTX 4090",
                    "gpuMemoryGb": 24,
                    "gpuNum": 2,
                    "pricePerHour": 0.7,
                    "spotPricePerHour": 0.36,
                    "available": True,
                    "regions": ["CN-HK-01", "US-WEST-01"],
                }
            ],
            "total": 1,
        },
    )
    gateway.get(
        f"{URL}/api/templates",
        json={
            "templates": [
                {
                    "id": "pytorch-jupyter",
                    "name": "PyTorch + Jupyter",
                    "image": "pytorch/pytorch:2.3.1",
                    "ports": [{"port": 8888, "type": "http"}, {"port": 22, "type": "tcp"}],
                }
            ],
            "total": 1,
        },
    )
    result = CliRunner().invoke(
        cli.main, ["--url", URL, "catalog", "--gpus", "2"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert gateway.calls[1].request.url == f"{URL}/api/products?gpuNum=2"
    for text in ("CN-HK-01", "RTX 4090 24GB", "$0.70", "$0.36", "CN-HK-01, US-WEST-01"):
        assert text in result.output
    assert "pytorch-jupyter" in result.output and "8888/http, 22/tcp" in result.output


def test_autostop_run_asks_for_a_real_run_and_lists_what_it_stopped(gateway):
    gateway.get(
        f"{URL}/api/instances/auto-stop/stats",
        json={
            "schedulerRunning": True,
            "checkIntervalMinutes": 5,
            "defaultInactivityThresholdMinutes": 20,
            "totalStopped": 3,
        },
    )
    trigger = gateway.post(
        f"{URL}/api/instances/auto-stop/trigger",
        json={
            "dryRun": False,
            "candidates": [
                {
                    "instanceId": "inst_1",
                    "name": "demo",
                    "idleMinutes": 23.5,
                    "thresholdMinutes": 20,
                    "reason": "idle 23 min > 20 min threshold",
                    "action": "stopped",
                }
            ],
        },
    )
    result = CliRunner().invoke(
        cli.main, ["--url", URL, "autostop", "--run"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert json.loads(trigger.calls[0].request.body) == {"dryRun": False}
    assert "scheduler running, checks every 5 min" in result.output
    assert "Stopped" in result.output and "idle 23 min > 20 min threshold" in result.output


def test_autostop_without_run_is_a_dry_run(gateway):
    gateway.get(f"{URL}/api/instances/auto-stop/stats", json={"schedulerRunning": False})
    trigger = gateway.post(
        f"{URL}/api/instances/auto-stop/trigger", json={"dryRun": True, "candidates": []}
    )
    result = run("autostop")
    assert result.exit_code == 0, result.output
    assert json.loads(trigger.calls[0].request.body) == {"dryRun": True}
    assert "not running" in result.output and "no idle instance" in result.output


def test_the_installed_ngw_command_is_this_cli():
    import importlib
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    module, _, attr = pyproject["project"]["scripts"]["ngw"].partition(":")
    assert getattr(importlib.import_module(module), attr) is cli.main
    result = CliRunner().invoke(cli.main, ["--help"])
    assert result.exit_code == 0 and "Exit codes:" in result.output


def test_ctrl_c_during_wait_stops_following_and_says_the_instance_carries_on(gateway, monkeypatch):
    gateway.get(f"{URL}/api/instances", json={"instances": [instance("stopped")], "total": 1})
    gateway.post(
        f"{URL}/api/instances/inst_1/start",
        status=202,
        json={"instanceId": "inst_1", "status": "starting", "message": "Start initiated"},
    )
    gateway.get(f"{URL}/api/instances/inst_1/events", json={"events": [], "total": 0})
    gateway.get(f"{URL}/api/instances/inst_1", json=instance("starting"))

    def interrupted(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.time, "sleep", interrupted)
    result = run("start", "demo", "--wait")
    assert result.exit_code == ExitCode.INTERRUPTED == 130
    assert "stopped following demo (starting); it carries on" in result.output


def test_ssh_to_an_instance_that_is_not_ready_is_a_conflict(gateway):
    gateway.get(f"{URL}/api/instances", json={"instances": [instance("stopped")], "total": 1})
    gateway.get(f"{URL}/api/instances/inst_1", json=instance("stopped", connectionDetails={}))
    result = run("ssh", "demo")
    assert result.exit_code == ExitCode.CONFLICT
    assert "demo has no SSH endpoint (status stopped" in result.output


def test_text_from_the_gateway_is_printed_literally_never_as_markup(gateway):
    gateway.get(
        f"{URL}/api/instances",
        status=400,
        json=envelope("VALIDATION_ERROR", "bad [red]value[/red] in [1]", ["field [x] is [b]wrong"]),
    )
    result = run("ls")
    assert result.exit_code == ExitCode.INVALID
    assert "bad [red]value[/red] in [1]" in result.output
    assert "field [x] is [b]wrong" in result.output


def test_a_status_the_events_already_passed_is_not_shown_again(gateway):
    # The instance read says health_checking; the events read a moment later already hold ready.
    gateway.post(
        f"{URL}/api/instances",
        status=201,
        json={"instanceId": "inst_1", "status": "creating", "message": "ok"},
    )
    events = [
        {"id": 1, "toStatus": "creating"},
        {"id": 2, "fromStatus": "creating", "toStatus": "creating"},
        {"id": 3, "fromStatus": "creating", "toStatus": "health_checking"},
        {"id": 4, "fromStatus": "health_checking", "toStatus": "ready"},
    ]
    gateway.get(f"{URL}/api/instances/inst_1/events", json={"events": events[::-1]})
    for status in ("creating", "health_checking", "ready"):
        gateway.get(f"{URL}/api/instances/inst_1", json=instance(status))
    result = run("create", "demo", "--product", "RTX 4090 24GB", "--template", "t", "--wait")
    assert result.exit_code == 0, result.output
    lines = [line.split()[1] for line in result.output.splitlines() if line.startswith("demo: ")]
    assert lines == ["creating", "health_checking", "ready"]
