"""Real processes on loopback for end-to-end tests: sandbox upstream, gunicorn, Celery worker and
beat, plus a webhook receiver in the test process. Each stack gets its own database (a temp
SQLite file, or a fresh PostgreSQL database when DATABASE_URL points at PostgreSQL), its own
Redis database number and its own runtime folder, so it never sees the unit tests' data."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
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
# Redis database numbers e2e stacks may use; unit tests use the configured one.
E2E_REDIS_DBS = range(7, 16)
SANDBOX_KEY = "sandbox-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def terminate(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM a child process; SIGKILL it if it has not exited within `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def wait_until(predicate, timeout: float, interval: float = 0.2, message: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message} (last: {last!r})")


def procfile_web_args(
    port: int, env: dict, *, procfile: Path = ROOT / "Procfile", app: str | None = None
) -> list[str]:
    """The Procfile's web command (gunicorn with its settings) bound to 127.0.0.1:`port`.

    `${NAME:-default}` is expanded from `env` as the shell would; `app` replaces the WSGI app."""
    line = next(
        line.split(":", 1)[1]
        for line in procfile.read_text().splitlines()
        if line.startswith("web:")
    )

    def expand(match: re.Match) -> str:
        name, default = match.group(1), match.group(2) or ""
        return env.get(name) or default

    args = shlex.split(re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", expand, line))
    if args[0] == "gunicorn":
        args[0] = str(BIN / "gunicorn")
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in ("--bind", "-b"):
            skip = True
            continue
        if arg.startswith("--bind="):
            continue
        if app and arg.endswith(":application"):
            arg = app
        out.append(arg)
    return [*out, "--bind", f"127.0.0.1:{port}"]


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
                status = receiver.status
                receiver.received.append(
                    {"raw": raw, "headers": dict(self.headers), "status": status}
                )
                self.send_response(status)
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
        outbound_concurrency: int = 2,
        web_procfile: bool = False,
    ):
        # web_procfile: serve with the Procfile's web line (workers, threads, keep-alive, logs)
        # instead of the small fixed settings most tests use.
        self.web_workers = web_workers
        self.outbound_concurrency = outbound_concurrency
        self.web_procfile = web_procfile
        self.tmp = Path(tempfile.mkdtemp(prefix="ngw-e2e-"))
        self.procs: dict[str, subprocess.Popen] = {}
        self.sandbox_port = free_port()
        self.web_ports = [free_port() for _ in range(webs)]
        self.workers = workers
        self._redis_lock = None
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
        # Unit tests use the configured database number; e2e stacks use another one. Stacks
        # started at the same time on one machine (several engineers, or a bench next to a test
        # run) must not share one: start() flushes it and the Celery queue lives there, so each
        # stack holds an exclusive lock on its number until stop().
        for db in E2E_REDIS_DBS:
            lock_path = (
                Path(tempfile.gettempdir()) / f"ngw-e2e.redis-{parts.port or 6379}-{db}.lock"
            )
            handle = open(lock_path, "w")  # noqa: SIM115 - held until stop()
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            self._redis_lock = handle
            return urlunsplit(parts._replace(path=f"/{db}"))
        raise RuntimeError(f"every e2e Redis database {list(E2E_REDIS_DBS)} is in use")

    def _environment(self, step_seconds: float, extra: dict) -> dict:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PYTEST", "DJANGO_SETTINGS"))
            and k not in ("DATABASE_URL", "REDIS_URL")
        }
        # A stack given its own Redis (extra_env) needs no shared database number.
        redis_url = extra["REDIS_URL"] if "REDIS_URL" in extra else self._redis_url()
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "novita_gateway.settings",
                "DJANGO_SECRET_KEY": "e2e-" + uuid.uuid4().hex * 2,
                "DEBUG": "false",
                "SECURE_COOKIES": "false",
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                "VAR_DIR": str(self.tmp / "var"),
                "DATABASE_URL": self._database_url(),
                "REDIS_URL": redis_url,
                "NOVITA_API_KEY": SANDBOX_KEY,
                "NOVITA_API_BASE_URL": f"http://127.0.0.1:{self.sandbox_port}/gpu-instance/openapi",
                "NOVITA_READ_TIMEOUT": "5",
                # No client keys in these stacks: the open API is asked for explicitly.
                "ALLOW_OPEN_API": "true",
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
            self.start_outbound_worker(index)
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
                SANDBOX_KEY,
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
        if self.web_procfile:
            self._spawn(f"web{index}", procfile_web_args(self.web_ports[index], self.env))
            return
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
        """The cost-control worker (monitor, auto-stop, reconcile, migration), as in Procfile."""
        self._celery_worker(f"worker{index}", "cost_control,celery", 2, f"cost{index}")

    def start_outbound_worker(self, index: int = 0):
        """The worker for webhook deliveries and readiness probes, as in the Procfile."""
        self._celery_worker(
            f"outbound{index}", "probes,webhooks", self.outbound_concurrency, f"out{index}"
        )

    def _celery_worker(self, name: str, queues: str, concurrency: int, prefix: str):
        self._spawn(
            name,
            [
                str(BIN / "celery"),
                "-A",
                "novita_gateway",
                "worker",
                "--loglevel",
                "WARNING",
                "--concurrency",
                str(concurrency),
                "-Q",
                queues,
                "-n",
                f"{prefix}-{uuid.uuid4().hex[:6]}@%h",
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

    def create_ready(
        self, count: int, *, prefix: str, template: str = "comfyui", timeout: float = 240
    ) -> list[str]:
        """Create `count` instances through the API and wait until every one is ready."""
        ids = []
        for index in range(count):
            response = self.api(
                "POST",
                "/api/instances",
                json={
                    "name": f"{prefix}-{index}",
                    "productName": "RTX 4090 24GB",
                    "templateId": template,
                },
            )
            response.raise_for_status()
            ids.append(response.json()["instanceId"])
        wait_until(
            lambda: all(self.instance(i)["status"] == "ready" for i in ids),
            timeout,
            interval=1,
            message=f"{count} instances ready",
        )
        return ids

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

    def crashed(self) -> list[str]:
        """Processes whose log shows Celery giving up (it exits instead of carrying on)."""
        return [name for name in self.procs if "Unrecoverable error" in self.logs(name)]

    def shell(self, code: str, timeout: float = 120) -> str:
        """Run Python in a Django shell against this stack's database; returns its stdout."""
        return self.manage("shell", "--no-imports", "-c", code, timeout=timeout)

    def upstream_named(self, name: str) -> list[dict]:
        """What the sandbox upstream lists under exactly this name (its filter is a substring)."""
        response = self.sandbox(
            "GET",
            "/gpu-instance/openapi/v1/gpu/instances",
            params={"name": name, "pageSize": 1000},
            headers={"Authorization": f"Bearer {SANDBOX_KEY}"},
        )
        response.raise_for_status()
        return [i for i in response.json().get("instances") or [] if i.get("name") == name]

    def fault(self, **fault) -> dict:
        """Inject a sandbox fault (see Sandbox.set_fault); `clear_faults()` removes them all."""
        response = self.sandbox("POST", "/_sandbox/faults", json=fault)
        response.raise_for_status()
        return response.json()["fault"]

    def faults(self) -> list[dict]:
        return self.sandbox("GET", "/_sandbox/faults").json()["faults"]

    def clear_faults(self) -> None:
        self.sandbox("DELETE", "/_sandbox/faults").raise_for_status()

    @contextlib.contextmanager
    def running(self):
        """Start the stack, yield it, check no process gave up, and always stop it."""
        try:
            self.start()
            yield self
            assert not self.crashed(), f"processes gave up: {self.crashed()}"
        finally:
            self.stop()

    def stop(self, grace: float = 3):
        # Signal everything first and wait once: a Celery worker on the file broker takes
        # ~10 s to finish a warm shutdown, and nothing here needs a graceful one.
        procs = [self.procs.pop(name) for name in list(self.procs)]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.webhooks.close()
        if self._redis_lock is not None:
            self._redis_lock.close()
            self._redis_lock = None
        if self._pg_name:
            import psycopg

            with psycopg.connect(self._pg_admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self._pg_name}" WITH (FORCE)')
