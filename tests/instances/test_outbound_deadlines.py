"""A peer that trickles its answer (one header byte at a time) cannot stretch a webhook delivery
or a readiness probe past its wall-clock deadline, and the attempt counts as a timeout: never as
a success. Real sockets on loopback; nothing is mocked between the service and the peer."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from instances.models import WebhookDelivery
from instances.services import health_probe, webhooks

pytestmark = pytest.mark.django_db


@pytest.fixture
def trickler():
    """An HTTP server answering every request one header byte per 0.1 s (~40 s in all)."""

    class Handler(BaseHTTPRequestHandler):
        def _trickle(self):
            if self.command == "POST":
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
            for byte in b"HTTP/1.1 200 OK\r\n" + b"X-Pad: y\r\n" * 40:
                try:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.1)

        do_GET = do_POST = _trickle

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_trickling_webhook_receiver_is_recorded_as_a_timed_out_attempt(
    make_instance, trickler, settings
):
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.7
    instance = make_instance(webhook_url=f"{trickler}/hook")
    delivery = webhooks.enqueue_status_change(instance, reason="test")
    started = time.monotonic()
    state = webhooks.deliver(delivery.pk)
    assert time.monotonic() - started < 2.0
    assert state == WebhookDelivery.State.PENDING  # to be retried, not delivered
    delivery.refresh_from_db()
    (attempt,) = delivery.attempt_log
    assert attempt["statusCode"] is None
    assert attempt["error"].startswith("DeadlineExceeded: timed out")
    assert attempt["durationMs"] < 2000
    assert delivery.delivered_at is None


def test_a_trickling_port_is_down_for_the_probe_after_its_timeout(trickler):
    config = {"timeoutMs": 1000, "retryAttempts": 0}
    mapping = {"port": 8888, "endpoint": f"{trickler}/", "type": "http"}
    started = time.monotonic()
    (result,) = health_probe.probe([mapping], config, None)
    assert time.monotonic() - started < 2.5
    assert (result.up, result.detail) == (False, "timeout")


def test_a_delivery_cut_by_its_soft_time_limit_is_still_recorded(make_instance, monkeypatch):
    from celery.exceptions import SoftTimeLimitExceeded

    from ops import netsafety

    def stuck(*args, **kwargs):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(netsafety, "post_json", stuck)
    instance = make_instance(webhook_url="https://hooks.example.com/h")
    delivery = webhooks.enqueue_status_change(instance, reason="test")
    assert webhooks.deliver(delivery.pk) == WebhookDelivery.State.PENDING
    delivery.refresh_from_db()
    (attempt,) = delivery.attempt_log
    assert attempt["error"].startswith("SoftTimeLimitExceeded")


def test_the_health_checks_upstream_call_ends_within_its_own_timeout(trickler, settings):
    from instances import facts
    from instances.novita.errors import NovitaTimeoutError

    # Connect and read timeouts alone would allow 0.6 + 0.6 s; /health promises 0.6 in all.
    settings.NOVITA_API_BASE_URL = trickler
    settings.HEALTH_UPSTREAM_TIMEOUT_SECONDS = 0.6
    started = time.monotonic()
    with pytest.raises(NovitaTimeoutError, match=r"0\.6s in all"):
        facts.probe_upstream()
    assert time.monotonic() - started < 1.0


def test_a_webhook_whose_host_never_resolves_is_recorded_as_a_timed_out_attempt(
    make_instance, hanging_dns, settings
):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.5
    hanging_dns.add("slow-dns.example.com")
    instance = make_instance(webhook_url="https://slow-dns.example.com/hook")
    delivery = webhooks.enqueue_status_change(instance, reason="test")
    started = time.monotonic()
    state = webhooks.deliver(delivery.pk)
    assert time.monotonic() - started < 1.5
    assert state == WebhookDelivery.State.PENDING  # to be retried, not given up
    delivery.refresh_from_db()
    (attempt,) = delivery.attempt_log
    assert attempt["statusCode"] is None
    assert attempt["error"].startswith("DeadlineExceeded: timed out")


@pytest.mark.parametrize("kind", ["http", "tcp"])
def test_a_port_whose_host_never_resolves_is_down_for_the_probe_after_its_timeout(
    hanging_dns, kind
):
    hanging_dns.add("slow-dns.example.com")
    config = {"timeoutMs": 500, "retryAttempts": 0}
    mapping = {"port": 8888, "endpoint": "slow-dns.example.com:8888", "type": kind}
    started = time.monotonic()
    (result,) = health_probe.probe([mapping], config, None)
    assert time.monotonic() - started < 1.5
    assert (result.up, result.detail) == (False, "timeout")


def test_a_novita_call_whose_host_never_resolves_ends_within_its_timeout(hanging_dns, settings):
    from instances import facts
    from instances.novita.errors import NovitaTimeoutError

    hanging_dns.add("slow-dns.example.com")
    settings.NOVITA_API_BASE_URL = "https://slow-dns.example.com"
    settings.HEALTH_UPSTREAM_TIMEOUT_SECONDS = 0.5
    started = time.monotonic()
    with pytest.raises(NovitaTimeoutError):
        facts.probe_upstream()
    assert time.monotonic() - started < 1.3
