"""A client stalling the gateway's outbound calls, on loopback: webhook receivers and instance
ports that answer one header byte every second and never finish. Shared by the attack test
(tests/e2e/test_under_attack.py) and its benchmark (bench/autostop_under_attack.py)."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .stack import Stack, wait_until

ATTACKERS = 20
# The largest healthCheckConfig the API accepts: before clamping, one round took ~115 s.
GREEDY_HEALTH_CHECK = {
    "timeoutMs": 300000,
    "retryAttempts": 10,
    "retryDelayMs": 100,
    "maxWaitTimeMs": 1800000,
}
# The stack's settings for these runs: auto-stop 20 s after ready (unless an instance says
# otherwise), webhook deliveries cut at 2 s, the outbound worker as wide as the Procfile's.
ATTACK_ENV = {
    "AUTO_STOP_INACTIVITY_THRESHOLD_MINUTES": "0.33",
    "WEBHOOK_TIMEOUT_SECONDS": "2",
}


class Trickler:
    """An HTTP server that reads each request, then sends one byte of a never-ending header
    block every `interval` seconds until the client hangs up (or `limit` seconds pass)."""

    def __init__(self, interval: float = 1.0, limit: float = 300.0):
        self.requests = 0
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _trickle(self):
                if self.command == "POST":
                    self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with owner._lock:
                    owner.requests += 1
                data = b"HTTP/1.1 200 OK\r\n" + b"X-Slow: y\r\n" * 10_000
                ends = time.monotonic() + limit
                for byte in data:
                    if time.monotonic() > ends:
                        return
                    try:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                    except OSError:
                        return  # the gateway hung up: its deadline passed
                    time.sleep(interval)

            do_GET = do_POST = do_HEAD = _trickle

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def create(stack: Stack, name: str, **fields) -> str:
    body = {"name": name, "productName": "RTX 4090 24GB", "templateId": "comfyui", **fields}
    response = stack.api("POST", "/api/instances", json=body)
    assert response.status_code == 201, response.text
    return response.json()["instanceId"]


def start_attack(stack: Stack) -> tuple[list[Trickler], list[str]]:
    """20 instances whose only port trickles, each reporting to a trickling webhook receiver,
    asking for the greediest health check the API accepts."""
    receivers = [Trickler() for _ in range(ATTACKERS)]
    ports = [Trickler() for _ in range(ATTACKERS)]
    ids = []
    for index in range(ATTACKERS):
        name = f"attacker-{index}"
        stack.sandbox(
            "POST",
            "/_sandbox/endpoints",
            json={"name": name, "port": 8188, "endpoint": ports[index].url},
        ).raise_for_status()
        ids.append(
            create(
                stack,
                name,
                webhookUrl=receivers[index].url,
                healthCheckConfig=GREEDY_HEALTH_CHECK,
            )
        )
    return receivers + ports, ids


def idle_overshoots(stack: Stack, names: list[str], timeout: float = 90) -> list[dict]:
    """Create instances, let them go idle, and measure how late auto-stop stopped each.

    Per instance: seconds from create to ready, and from its auto-stop deadline (autoStopAt,
    read while it was ready) to the auto-stop's stop event."""
    started = time.monotonic()
    ids = [create(stack, name) for name in names]
    results = []
    for instance_id in ids:
        ready = stack.wait_status(instance_id, "ready", timeout=timeout)
        results.append(
            {
                "instance": instance_id,
                "ready_seconds": time.monotonic() - started,
                "deadline": _parse(ready["autoStopAt"]),
            }
        )
    for result in results:
        instance_id = result["instance"]

        def stopped_event(instance_id=instance_id):
            events = stack.api("GET", f"/api/instances/{instance_id}/events").json()["events"]
            return next(
                (
                    e
                    for e in events
                    if e["source"] == "auto-stop" and e.get("toStatus") == "stopping"
                ),
                None,
            )

        event = wait_until(
            stopped_event, timeout, interval=0.5, message=f"auto-stop of {instance_id}"
        )
        result["overshoot_seconds"] = (
            _parse(event["createdAt"]) - result.pop("deadline")
        ).total_seconds()
    return results


def idle_overshoot(stack: Stack, name: str, timeout: float = 90) -> dict:
    return idle_overshoots(stack, [name], timeout)[0]
