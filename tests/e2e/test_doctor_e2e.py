"""`manage.py novita_doctor` run as a user would, against a real sandbox process on loopback, in
every emulation mode, with and without --smoke."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
KEY = "sandbox-key"
SMOKE = ["--smoke", "CN-HK-01", "--image", "ubuntu:22.04", "--ports", "8888/http,22/tcp"]
FAST = ["--poll-seconds", "0.05", "--smoke-wait", "30", "--time-limit", "90"]


def django_env(**extra):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NOVITA_", "DATABASE_URL", "REDIS_URL"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "novita_gateway.settings",
            "DEBUG": "true",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


class SandboxProcess:
    """`manage.py novita_sandbox` in a child process, in the given emulation modes."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "novita_sandbox", "--port", "0", *args],
            cwd=ROOT,
            env=django_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self.base_url = self.proc.stdout.readline().strip()
        assert self.base_url.startswith("http://127.0.0.1:"), self.base_url

    def api(self, path, **params):
        return requests.get(
            f"{self.base_url}/gpu-instance/openapi/v1{path}",
            params=params,
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=5,
        )

    def calls(self, path):
        summary = requests.get(f"{self.base_url}/_sandbox/calls", timeout=5).json()
        return summary["byPath"].get(path, 0)

    def close(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def sandbox_process():
    started = []

    def start(*args):
        sb = SandboxProcess("--step-seconds", "0.05", *args)
        started.append(sb)
        return sb

    yield start
    for sb in started:
        sb.close()


def doctor(sb, *args, key=KEY):
    env = django_env(NOVITA_API_KEY=key, NOVITA_API_BASE_URL=f"{sb.base_url}/gpu-instance/openapi")
    return subprocess.run(
        [sys.executable, "manage.py", "novita_doctor", *FAST, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def instances_left(sb):
    """Instances the sandbox still lists that are not on their way out."""
    body = sb.api("/gpu/instances", pageSize=100, pageNum=0).json()
    body1 = sb.api("/gpu/instances", pageSize=100, pageNum=1).json()
    items = {i["id"]: i for i in body["instances"] + body1["instances"]}
    return [i for i in items.values() if i["status"] not in ("toRemove", "removing", "removed")]


@pytest.mark.parametrize(
    "modes",
    [
        ("--page-numbering", "zero", "--not-found", "400"),
        ("--page-numbering", "one", "--not-found", "404-json"),
        ("--page-numbering", "zero-as-one", "--not-found", "400", "--route-404", "html"),
    ],
    ids=["zero", "one", "zero-as-one"],
)
def test_doctor_passes_against_the_sandbox_in_every_mode_with_smoke(sandbox_process, modes):
    sb = sandbox_process(*modes)
    result = doctor(sb, *SMOKE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CONTRADICTED" not in result.stdout
    assert "0 contradicted" in result.stdout
    assert KEY not in result.stdout
    for key in ("pagination.instances", "not_found.instance", "smoke.endpoints", "smoke.delete"):
        # The last word on each: an empty account's pagination is checked again after create.
        line = [line for line in result.stdout.splitlines() if f" {key} " in line][-1]
        assert line.startswith("CONFIRMED"), line
    assert sb.calls("/gpu/instance/delete") == 1
    assert instances_left(sb) == []


def test_read_only_doctor_creates_nothing(sandbox_process):
    sb = sandbox_process()
    result = doctor(sb)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sb.calls("/gpu/instance/create") == 0


def test_unknown_ids_answered_404_make_the_doctor_exit_non_zero(sandbox_process):
    sb = sandbox_process("--not-found", "404-route")
    result = doctor(sb)
    assert result.returncode == 1
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("CONTRADICTED")]
    assert "not_found.instance" in line and "API_NOT_FOUND" in line


def test_a_wrong_key_exits_non_zero_without_echoing_it(sandbox_process):
    sb = sandbox_process()
    result = doctor(sb, key="not-the-sandbox-key")
    assert result.returncode == 1
    assert "auth.key" in result.stdout and "not-the-sandbox-key" not in result.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_smoke_still_deletes_its_instance(sandbox_process, sig):
    # Slow states: the doctor is still waiting for `running` when the signal arrives.
    sb = sandbox_process()
    requests.post(f"{sb.base_url}/_sandbox/config", json={"stepSeconds": 30}, timeout=5)
    env = django_env(NOVITA_API_KEY=KEY, NOVITA_API_BASE_URL=f"{sb.base_url}/gpu-instance/openapi")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "novita_doctor", *FAST, *SMOKE],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while sb.calls("/gpu/instance/create") == 0:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "cleanup: deleted instance" in out
    assert sb.calls("/gpu/instance/delete") == 1
    assert instances_left(sb) == []
