"""Shared fixtures: clean caches, counters and upstream client per test; an API client;
Celery tasks run inline (eagerly) so a test sees their effects."""

import ipaddress
import socket
import threading

import pytest
from django.conf import settings
from django.core.cache import caches
from django.test import Client as DjangoClient
from rest_framework.test import APIClient

from instances.novita.client import reset_client
from instances.services import snapshot
from novita_gateway.celery import app as celery_app
from ops import counters, metrics, ratelimit
from tests import openapi_conformance

celery_app.conf.task_always_eager = True
celery_app.conf.task_eager_propagates = True

UPSTREAM = "https://novita.test/gpu-instance/openapi"


def _forget_shared_breaker():
    # The breaker's state lives in Redis when configured: one test's open circuit must not
    # leak into the next.
    if settings.REDIS_URL:
        from instances.novita.client import get_client

        get_client().reset_breaker()


@pytest.fixture(autouse=True)
def _clean_shared_state(settings):
    snapshot.wait_for_store()  # a listing's snapshot must not land in the next test's cache
    for alias in settings.CACHES:
        caches[alias].clear()
    counters.reset_all()
    ratelimit.numbering.forget()
    # Figures buffered in this process by the previous test would be flushed into this one's.
    metrics.forget_buffered()
    # Unit tests talk to a fake upstream host that only `responses` answers.
    settings.NOVITA_API_BASE_URL = UPSTREAM
    settings.NOVITA_API_KEY = "test-novita-key"
    settings.NOVITA_READ_RETRIES = 0
    # Most tests call the API without keys; the fail-closed default has its own tests.
    settings.ALLOW_OPEN_API = True
    reset_client()
    _forget_shared_breaker()
    yield
    snapshot.wait_for_store()
    reset_client()


@pytest.fixture
def api():
    return APIClient()


_real_getaddrinfo = socket.getaddrinfo
# Names tests may use; anything else resolves to a public documentation-range address, so no
# test ever asks a real DNS server (or reaches a real host).
FAKE_DNS = {}


def _fake_getaddrinfo(host, port, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else host
    try:
        ipaddress.ip_address((name or "").strip("[]"))
        literal = True
    except ValueError:
        literal = False
    if literal or name in (None, "localhost"):
        return _real_getaddrinfo(host, port, *args, **kwargs)
    address = FAKE_DNS.get(name, "93.184.216.34")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return [(family, socket.SOCK_STREAM, 6, "", (address, port or 0))]


_real_connect = socket.socket.connect


def _loopback_only_connect(sock, address):
    # A safety net for the network rule: a test can never open a connection off this machine.
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        if not ipaddress.ip_address(host.split("%")[0]).is_loopback:
            raise ConnectionRefusedError(f"tests may only connect to loopback, not {host}")
    return _real_connect(sock, address)


@pytest.fixture(autouse=True)
def _no_real_dns(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", _fake_getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", _loopback_only_connect)
    yield


@pytest.fixture
def hanging_dns(monkeypatch):
    """Names added to the returned set get no answer from the resolver (for 5 s, then a failure)."""
    names: set[str] = set()
    release = threading.Event()

    def hang(host, port, *args, **kwargs):
        if host in names:
            release.wait(5)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return _fake_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hang)
    yield names
    release.set()  # frees the lookups still waiting in resolver threads


_real_client_request = DjangoClient.request


def _conforming_request(self, **request):
    response = _real_client_request(self, **request)
    # A test may ask for a response the schema does not describe on purpose (see
    # openapi_conformance: it skips test-only routes); everything else must conform.
    openapi_conformance.check(request.get("REQUEST_METHOD", "GET"), request["PATH_INFO"], response)
    return response


@pytest.fixture(autouse=True)
def _responses_conform_to_openapi(monkeypatch):
    monkeypatch.setattr(DjangoClient, "request", _conforming_request)
    yield
