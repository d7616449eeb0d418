"""`ngw`, the command line, end to end: the real CLI in a subprocess against a live gateway (web,
worker, beat) on the sandbox upstream, as a user at a terminal would run it."""

import json
import os
import stat
import subprocess
import sys

import pytest

from tests.e2e.stack import ROOT, Stack, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

PRODUCT = "RTX 4090 24GB"


@pytest.fixture(scope="module")
def stack():
    with Stack(step_seconds=0.2).running() as s:
        s.api_key = s.manage("issue_api_key", "cli-e2e").strip()
        yield s


def ngw(stack, *args, timeout=180, **env_overrides) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NGW_", "PYTEST", "DJANGO"))}
    env.update(NGW_URL=stack.url, NGW_API_KEY=stack.api_key, COLUMNS="200", NGW_TIMEOUT="10")
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "-m", "ngw", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_create_wait_follows_the_instance_to_ready_and_prints_its_endpoints(stack):
    out = ok(
        ngw(
            stack,
            "create",
            "cli-demo",
            "--product",
            PRODUCT,
            "--template",
            "ubuntu-ssh",
            "--auto-stop",
            "45",
            "--wait",
            "--wait-timeout",
            "120",
        )
    )
    lines = out.splitlines()
    # One line per status on the way, in order.
    seen = [line.split(": ", 1)[1].split(" ")[0] for line in lines if line.startswith("cli-demo: ")]
    assert seen[0] == "creating" and seen[-1] == "ready", out
    # Statuses that lasted less than a poll still show: they come from the instance's events.
    assert seen[0] == "creating" and seen[-1] == "ready", out
    assert "health_checking" in seen, out
    lifecycle = ["creating", "created", "starting", "running", "health_checking", "ready"]
    assert seen == [s for s in lifecycle if s in seen], out
    assert "cli-demo is ready after" in out
    detail = json.loads(ok(ngw(stack, "show", "cli-demo", "--json")))
    for mapping in detail["portMappings"]:
        assert mapping["endpoint"] in out
    assert detail["connectionDetails"]["ssh"] in out
    assert detail["autoStopMinutes"] == 45


def test_ls_and_show_list_the_instance_by_name_and_by_id(stack):
    shown = json.loads(ok(ngw(stack, "show", "cli-demo", "--json")))
    assert shown["status"] == "ready"
    listing = ok(ngw(stack, "ls"))
    assert "cli-demo" in listing and shown["id"] in listing and "ready" in listing
    by_id = ok(ngw(stack, "show", shown["id"]))
    assert "cli-demo" in by_id and "ready" in by_id and "Ports" in by_id


def test_touch_sends_a_heartbeat_that_moves_last_used(stack):
    before = json.loads(ok(ngw(stack, "show", "cli-demo", "--json"))).get("lastUsedAt")
    out = ok(ngw(stack, "touch", "cli-demo"))
    after = json.loads(ok(ngw(stack, "show", "cli-demo", "--json")))
    assert after["lastUsedAt"] and after["lastUsedAt"] != before
    assert f"last used {after['lastUsedAt']}" in out
    assert "auto-stop at" in out


def test_ssh_runs_the_instances_ssh_command(stack, tmp_path):
    fake_ssh = tmp_path / "ssh"
    fake_ssh.write_text('#!/bin/sh\necho "fake ssh got: $*"\n')
    fake_ssh.chmod(fake_ssh.stat().st_mode | stat.S_IEXEC)
    detail = json.loads(ok(ngw(stack, "show", "cli-demo", "--json")))
    command = detail["connectionDetails"]["ssh"]
    assert ok(ngw(stack, "ssh", "cli-demo", "--print")).strip() == command
    out = ok(ngw(stack, "ssh", "cli-demo", "--", "uptime", PATH=f"{tmp_path}:{os.environ['PATH']}"))
    assert out.strip() == f"fake ssh got: {command.removeprefix('ssh ')} uptime"


def test_stop_and_start_wait_for_the_target_state(stack):
    out = ok(ngw(stack, "stop", "cli-demo", "--wait", "--wait-timeout", "90"))
    assert "cli-demo is stopped after" in out
    assert json.loads(ok(ngw(stack, "show", "cli-demo", "--json")))["status"] == "stopped"
    out = ok(ngw(stack, "start", "cli-demo", "--wait", "--wait-timeout", "120"))
    assert "cli-demo is ready after" in out and "Ports" in out


def test_autostop_lists_idle_instances_without_stopping_them(stack):
    out = ok(ngw(stack, "autostop"))
    assert "checks every" in out and "default threshold" in out
    assert "no idle instance" in out
    assert json.loads(ok(ngw(stack, "show", "cli-demo", "--json")))["status"] == "ready"


def test_health_reports_each_dependency(stack):
    out = ok(ngw(stack, "health"))
    assert "gateway: " in out
    for service in ("database", "novitaApi", "jobQueue"):
        assert service in out


def test_events_list_the_history_with_reasons(stack):
    out = ok(ngw(stack, "events", "cli-demo"))
    assert "Events of cli-demo" in out
    for change in ("creating → health_checking", "health_checking → ready"):
        assert change in out, out
    assert "stopping → stopped" in out and "api" in out and "monitor" in out


def test_catalog_lists_regions_products_with_prices_and_templates(stack):
    out = ok(ngw(stack, "catalog"))
    for text in ("CN-HK-01", PRODUCT, "RTX 3090 24GB", "pytorch-jupyter", "ubuntu-ssh", "comfyui"):
        assert text in out, out
    assert "$0.35" in out  # the cheapest RTX 4090 offer, per hour
    assert "8888/http" in out
    products = json.loads(ok(ngw(stack, "catalog", "--region", "CN-HK-01", "--json")))["products"]
    assert PRODUCT in {p["name"] for p in products["products"]}


def test_rm_waits_until_terminated_and_a_start_afterwards_is_a_conflict(stack):
    out = ok(ngw(stack, "rm", "cli-demo", "--yes", "--wait", "--wait-timeout", "90"))
    assert "cli-demo is terminated after" in out
    assert "cli-demo" not in ok(ngw(stack, "ls"))
    assert "cli-demo" in ok(ngw(stack, "ls", "--all"))
    result = ngw(stack, "start", "cli-demo")
    assert result.returncode == 4, result.stderr
    assert "Error:" in result.stderr and "HTTP 409" in result.stderr


def test_wait_gives_up_after_its_timeout_with_its_own_exit_code(stack):
    result = ngw(
        stack,
        "create",
        "cli-slow",
        "--product",
        PRODUCT,
        "--template",
        "pytorch-jupyter",
        "--wait",
        "--wait-timeout",
        "0.5",
    )
    assert result.returncode == 10, result.stdout + result.stderr
    assert "gave up after 0.5 s" in result.stderr
    ok(ngw(stack, "rm", "cli-slow", "--yes"))


def test_a_rejected_create_prints_the_envelopes_message_and_details(stack):
    result = ngw(stack, "create", "bad name!", "--product", PRODUCT, "--template", "ubuntu-ssh")
    assert result.returncode == 5
    assert "Error:" in result.stderr and "HTTP 400, VALIDATION_ERROR" in result.stderr
    assert (
        "name: Name must contain only alphanumeric characters, hyphens, and underscores "
        '(got "bad name!")'
    ) in result.stderr
    assert "request id:" in result.stderr


def test_unknown_instance_is_exit_code_3(stack):
    result = ngw(stack, "show", "no-such-instance")
    assert result.returncode == 3
    assert "no instance named or with id 'no-such-instance'" in result.stderr


def test_a_wrong_api_key_is_exit_code_6(stack):
    result = ngw(stack, "ls", NGW_API_KEY="not-a-key")
    assert result.returncode == 6
    assert "HTTP 401, UNAUTHORIZED" in result.stderr


def test_an_unreachable_gateway_is_exit_code_9(stack):
    result = ngw(stack, "ls", NGW_URL=f"http://127.0.0.1:{free_port()}", timeout=30)
    assert result.returncode == 9
    assert "cannot reach the gateway" in result.stderr
    assert "Traceback" not in result.stderr
