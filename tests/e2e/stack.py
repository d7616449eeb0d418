"""Real processes on loopback for end-to-end tests: sandbox upstream, gunicorn, Celery worker and
beat, plus a webhook receiver in the test process. Each stack gets its own database (a temp
SQLite file, or a fresh PostgreSQL database when DATABASE_URL points at PostgreSQL), its own
Redis database number and its own runtime folder, so it never sees the unit tests' data."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.2, message: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message} (last: {last!r})")


class WebhookReceiver:
    """Records every POST (raw body and headers); answers with a status tests can change."""

    def __init__(self):
        self.received: list[dict] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                receiver.received.append({"raw": raw, "headers": dict(self.headers)})
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def payloads(self) -> list[dict]:
        return [json.loads(r["raw"]) for r in self.received]

    def statuses(self, instance_id: str) -> list[str]:
        return [p["status"] for p in self.payloads() if p.get("instanceId") == instance_id]

    def close(self):
        self.server.shutdown()


class Stack:
    """The whole service as separate processes, configured through the environment."""

    def __init__(
        self,
        *,
        workers: int = 1,
        webs: int = 1,
        extra_env: dict | None = None,
        step_seconds: float = 0.3,
        web_workers: int = 1,
    ):
        self.web_workers = web_workers
        self.tmp = Path(tempfile.mkdtemp(prefix="ngw-e2e-"))
        self.procs: dict[str, subprocess.Popen] = {}
        self.sandbox_port = free_port()
        self.web_ports = [free_port() for _ in range(webs)]
        self.workers = workers
        self.webhooks = WebhookReceiver()
        self.env = self._environment(step_seconds, extra_env or {})

    # --- set-up ---------------------------------------------------------------------------

    def _database_url(self) -> str:
        base = os.environ.get("DATABASE_URL", "")
        if base.startswith("postgres"):
            parts = urlsplit(base)
            name = f"ngw_e2e_{uuid.uuid4().hex[:10]}"
            self._pg_admin = urlunsplit(parts._replace(path="/postgres"))
            self._pg_name = name
            return urlunsplit(parts._replace(path=f"/{name}"))
        self._pg_name = None
        return f"sqlite:///{self.tmp / 'db.sqlite3'}"

    def _redis_url(self) -> str:
        base = os.environ.get("REDIS_URL", "")
        if not base:
            return ""
        parts = urlsplit(base)
        # Unit tests use the configured database number; e2e stacks use another one.
        return urlunsplit(parts._replace(path="/7"))

    def _environment(self, step_seconds: float, extra: dict) -> dict:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PYTEST", "DJANGO_SETTINGS"))
            and k not in ("DATABASE_URL", "REDIS_URL")
        }
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "novita_gateway.settings",
                "DJANGO_SECRET_KEY": "e2e-" + uuid.uuid4().hex * 2,
                "DEBUG": "false",
                "SECURE_COOKIES": "false",
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                "VAR_DIR": str(self.tmp / "var"),
                "DATABASE_URL": self._database_url(),
                "REDIS_URL": self._redis_url(),
                "NOVITA_API_KEY": "sandbox-key",
                "NOVITA_API_BASE_URL": f"http://127.0.0.1:{self.sandbox_port}/gpu-instance/openapi",
                "NOVITA_READ_TIMEOUT": "5",
                "WEBHOOK_SECRET": "e2e-webhook-secret",
                "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1,localhost",
                "MONITOR_INTERVAL_SECONDS": "0.5",
                "RECONCILE_INTERVAL_SECONDS": "5",
                "AUTO_STOP_CHECK_INTERVAL_MINUTES": "5",
                "CATALOG_CACHE_SECONDS": "60",
                "RATE_LIMIT_PER_MINUTE": "100000",
                "LOG_LEVEL": "WARNING",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update({k: str(v) for k, v in extra.items()})
        self.step_seconds = step_seconds
        return env

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def manage(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr[-3000:]}")
        return result.stdout

    def start(self) -> Stack:
        if self._pg_name:
            import psycopg

            with psycopg.connect(self._pg_admin, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self._pg_name}"')
        if self.env["REDIS_URL"]:
            import redis

            redis.Redis.from_url(self.env["REDIS_URL"]).flushdb()
        self.manage("migrate", "--noinput")
        self.start_sandbox()
        for index in range(len(self.web_ports)):
            self.start_web(index)
        for index in range(self.workers):
            self.start_worker(index)
        self.start_beat()
        for port in self.web_ports:
            wait_until(
                lambda p=port: self._answers(f"http://127.0.0.1:{p}/health"),
                60,
                message=f"web on {port}",
            )
        return self

    def start_sandbox(self):
        self._spawn(
            "sandbox",
            [
                sys.executable,
                "manage.py",
                "novita_sandbox",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.sandbox_port),
                "--api-key",
                "sandbox-key",
                "--step-seconds",
                str(self.step_seconds),
            ],
        )
        wait_until(
            lambda: self._answers(f"http://127.0.0.1:{self.sandbox_port}/_sandbox/health"),
            60,
            message="sandbox",
        )

    def start_web(self, index: int = 0):
        self._spawn(
            f"web{index}",
            [
                str(BIN / "gunicorn"),
                "novita_gateway.wsgi:application",
                "--bind",
                f"127.0.0.1:{self.web_ports[index]}",
                "--workers",
                str(self.web_workers),
                "--threads",
                "4",
                "--timeout",
                "30",
            ],
        )

    def start_worker(self, index: int = 0):
        self._spawn(
            f"worker{index}",
            [
                str(BIN / "celery"),
                "-A",
                "novita_gateway",
                "worker",
                "--loglevel",
                "WARNING",
                "--concurrency",
                "2",
                "-n",
                f"w{index}-{uuid.uuid4().hex[:6]}@%h",
            ],
        )

    def start_beat(self):
        self._spawn(
            "beat",
            [
                str(BIN / "celery"),
                "-A",
                "novita_gateway",
                "beat",
                "--loglevel",
                "WARNING",
                "--schedule",
                str(self.tmp / "beat-schedule"),
            ],
        )

    @staticmethod
    def _answers(url: str) -> bool:
        try:
            return requests.get(url, timeout=2).status_code < 500
        except requests.RequestException:
            return False

    # --- use ----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_ports[0]}"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.sandbox_port}"

    def api(self, method: str, path: str, web: int = 0, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 15)
        return requests.request(method, f"http://127.0.0.1:{self.web_ports[web]}{path}", **kwargs)

    def instance(self, instance_id: str) -> dict:
        return self.api("GET", f"/api/instances/{instance_id}").json()

    def wait_status(self, instance_id: str, wanted: str | set, timeout: float = 60) -> dict:
        wanted = {wanted} if isinstance(wanted, str) else wanted
        return wait_until(
            lambda: (body := self.instance(instance_id)).get("status") in wanted and body,
            timeout,
            interval=0.3,
            message=f"{instance_id} to reach {wanted}",
        )

    def sandbox(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, f"{self.sandbox_url}{path}", timeout=10, **kwargs)

    def upstream_calls(self) -> dict:
        return self.sandbox("GET", "/_sandbox/calls").json()

    def kill(self, name: str, sig=signal.SIGKILL):
        proc = self.procs.pop(name)
        os.killpg(proc.pid, sig)
        proc.wait(timeout=20)

    def logs(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self):
        for name in list(self.procs):
            proc = self.procs.pop(name)
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        self.webhooks.close()
        if self._pg_name:
            import psycopg

            with psycopg.connect(self._pg_admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self._pg_name}" WITH (FORCE)')
