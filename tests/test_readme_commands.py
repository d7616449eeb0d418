"""Every command the README shows works from a fresh checkout after `make install`, with nothing
exported: no DJANGO_SECRET_KEY, no DEBUG, no DATABASE_URL (runtime files in a temp VAR_DIR)."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.e2e.stack import free_port

ROOT = Path(__file__).resolve().parents[1]
PYTHON = str(Path(sys.executable))
# The manage.py commands this file runs; the README may show no other.
COVERED = {
    "check",
    "createsuperuser",
    "issue_api_key",
    "novita_sandbox",
    "novita_doctor",
    "api_docs",
}


def clean_env(var_dir: Path, **extra) -> dict:
    # What a new user's shell has: no project variable at all.
    keep = ("PATH", "HOME", "LANG", "PYENV_ROOT", "PYENV_VERSION")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(VAR_DIR=str(var_dir), **extra)
    return env


def make(target: str, env: dict) -> subprocess.CompletedProcess:
    # The virtualenv is already installed by the run that started these tests; "-o" keeps make
    # from reinstalling it (no registry traffic from a test).
    checksum = subprocess.run(
        ["cksum", "requirements.txt"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()[0]
    return subprocess.run(
        ["make", "--no-print-directory", "-o", f".venv/.installed-{checksum}", target],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def manage(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("fresh-clone-var")
    env = clean_env(var_dir)
    result = make("install", env)
    assert result.returncode == 0, result.stdout + result.stderr
    return env, var_dir


def test_make_install_generates_a_private_secret_key_once(installed):
    env, var_dir = installed
    key_file = var_dir / "secret_key"
    key = key_file.read_text().strip()
    assert len(key) >= 50
    assert key_file.stat().st_mode & 0o077 == 0
    assert make("install", env).returncode == 0
    assert key_file.read_text().strip() == key


def test_manage_py_check_works_without_exporting_a_secret_key(installed):
    env, _ = installed
    result = manage("check", env=env)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_make_superuser_is_unattended_with_django_superuser_variables(installed):
    env, _ = installed
    result = make(
        "superuser",
        {
            **env,
            "DJANGO_SUPERUSER_USERNAME": "ops",
            "DJANGO_SUPERUSER_PASSWORD": "a-long-operator-passphrase",
            "DJANGO_SUPERUSER_EMAIL": "ops@example.com",
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Superuser created successfully" in result.stdout
    check = manage(
        "shell",
        "--no-imports",
        "-c",
        "from django.contrib.auth import get_user_model as g; "
        "u = g().objects.get(username='ops'); "
        "print(u.is_superuser, u.check_password('a-long-operator-passphrase'))",
        env=env,
    )
    assert check.stdout.strip() == "True True", check.stderr


def test_createsuperuser_works_without_exporting_a_secret_key(installed):
    env, _ = installed
    result = manage(
        "createsuperuser",
        "--noinput",
        "--username",
        "second",
        "--email",
        "second@example.com",
        env={**env, "DJANGO_SUPERUSER_PASSWORD": "another-long-passphrase"},
    )
    assert result.returncode == 0, result.stderr


def test_issue_api_key_prints_a_key_the_api_accepts(installed):
    env, _ = installed
    result = manage("issue_api_key", "ci-runner", env=env)
    assert result.returncode == 0, result.stderr
    raw = result.stdout.strip()
    check = manage(
        "shell",
        "--no-imports",
        "-c",
        "from ops.models import ApiKey; print(ApiKey.objects.filter(name='ci-runner').count())",
        env=env,
    )
    assert len(raw) > 20
    assert check.stdout.strip() == "1", check.stderr


def test_api_docs_finds_the_reference_in_docs_current(installed):
    env, _ = installed
    result = manage("api_docs", "--check", env=env)
    assert result.returncode == 0, result.stderr
    assert "are current" in result.stdout


def test_novita_sandbox_starts_answers_and_passes_the_doctor(installed):
    env, _ = installed
    port = free_port()
    proc = subprocess.Popen(
        [PYTHON, "manage.py", "novita_sandbox", "--port", str(port), "--api-key", "sandbox-key"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        answered = False
        while time.monotonic() < deadline and proc.poll() is None and not answered:
            try:
                answered = (
                    requests.get(f"http://127.0.0.1:{port}/_sandbox/health", timeout=2).status_code
                    == 200
                )
            except requests.RequestException:
                time.sleep(0.3)
        assert answered, proc.stderr.read().decode() if proc.poll() is not None else "no answer"
        # The doctor's read-only checks, pointed at the sandbox like a user would at Novita.
        doctor = manage(
            "novita_doctor",
            "--base-url",
            f"http://127.0.0.1:{port}/gpu-instance/openapi",
            env={**env, "NOVITA_API_KEY": "sandbox-key"},
            timeout=180,
        )
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def test_the_readme_shows_no_manage_py_command_left_untested():
    readme = (ROOT / "README.md").read_text()
    shown = set(re.findall(r"manage\.py ([a-z_]+)", readme))
    assert shown, "the README shows no manage.py command"
    assert shown <= COVERED, f"README commands without a test here: {shown - COVERED}"
