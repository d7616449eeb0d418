"""SSRF-safe outbound HTTP: validation, pinning to the checked address, bounded exchanges.

Blocked destinations are exercised through patched name resolution and a patched adapter, so
nothing is ever sent to them; real traffic goes only to local servers on 127.0.0.1.
"""

import shutil
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from django.core.exceptions import ValidationError

from ops import netsafety
from ops.netsafety import BlockedDestination, SafeResponse, post_json, validate_webhook_url

PUBLIC = "93.184.216.34"
BLOCKED = [
    "10.0.0.5",
    "127.0.0.1",
    "169.254.169.254",
    "::1",
    "fe80::1",
    "224.0.0.1",
    "0.0.0.0",
    "100.64.0.1",
    "::ffff:10.0.0.1",
]


@pytest.fixture(autouse=True)
def _no_allowed_hosts(settings):
    settings.WEBHOOK_ALLOWED_HOSTS = []


@pytest.fixture
def dns(monkeypatch):
    """Patch name resolution: dns["host"] = ["ip", ...] or a list of such lists (one per call)."""
    table: dict = {}
    calls: list[str] = []
    fallback = socket.getaddrinfo  # conftest's: literals only, never a real DNS server

    def fake(host, port, *args, **kwargs):
        if host not in table:
            return fallback(host, port, *args, **kwargs)
        calls.append(host)
        answers = table[host]
        if answers and isinstance(answers[0], list):
            answers = answers[min(calls.count(host), len(answers)) - 1]
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out = []
        for address in answers:
            if ":" in address:
                out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
            else:
                out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
        return out

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    table["_calls"] = calls
    return table


class Captured(Exception):
    pass


@pytest.fixture
def no_send(monkeypatch):
    """Fail loudly if anything tries to send; record what would have been sent."""
    attempts = []

    def send(self, request, **kwargs):
        attempts.append((self, request, kwargs))
        raise Captured()

    monkeypatch.setattr(netsafety._PinnedAdapter, "send", send)
    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
    return attempts


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize("address", BLOCKED)
def test_each_non_public_address_class_is_refused(dns, no_send, address):
    dns["hooks.example.com"] = [address]
    with pytest.raises(ValidationError) as info:
        validate_webhook_url("https://hooks.example.com/hook")
    assert "private or otherwise non-public" in info.value.messages[0]
    # The client is not told what the name resolved to.
    assert address not in info.value.messages[0]
    with pytest.raises(BlockedDestination):
        post_json("https://hooks.example.com/hook", b"{}", {}, timeout=1)
    assert no_send == []


def test_a_public_address_is_accepted(dns):
    dns["hooks.example.com"] = [PUBLIC]
    validate_webhook_url("https://hooks.example.com/hook")
    validate_webhook_url("http://hooks.example.com:8080/a/b?c=d")


def test_one_private_address_among_public_ones_is_enough_to_refuse(dns):
    dns["hooks.example.com"] = [PUBLIC, "10.0.0.5"]
    with pytest.raises(ValidationError):
        validate_webhook_url("https://hooks.example.com/hook")


@pytest.mark.parametrize(
    "address",
    ["172.16.0.1", "192.168.1.1", "fc00::1", "ff02::1", "255.255.255.255", "64:ff9b::a00:1"],
)
def test_more_non_public_ranges(dns, address):
    dns["hooks.example.com"] = [address]
    with pytest.raises(ValidationError):
        validate_webhook_url("https://hooks.example.com/hook")


def test_ip_literals_are_checked_too():
    for url in ("http://10.0.0.5/", "http://127.0.0.1:8000/", "http://[::1]/"):
        with pytest.raises(ValidationError):
            validate_webhook_url(url)


def test_a_host_that_does_not_resolve_is_refused(dns):
    dns["nowhere.example.com"] = []
    with pytest.raises(ValidationError) as info:
        validate_webhook_url("https://nowhere.example.com/hook")
    assert info.value.messages == ["The URL's host could not be resolved"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://hooks.example.com/x", "http or https"),
        ("javascript:alert(1)", "http or https"),
        ("hooks.example.com/x", "http or https"),
        ("http:///path-only", "must include a host"),
        ("https://user:secret@hooks.example.com/x", "credentials"),
        ("https://token@hooks.example.com/x", "credentials"),
        ("https://hooks.example.com/" + "a" * 2000, "longer than 2000"),
        ("https://hooks.example.com/a b", "spaces or control"),
        ("https://hooks.example.com/\r\nX-Injected: 1", "spaces or control"),
        ("https://hooks.example.com:0/", "port"),
        ("https://hooks.example.com:99999/", "malformed"),
        ("http://[::1/", "malformed"),
        ("", "empty"),
    ],
)
def test_malformed_urls_are_refused_with_a_clear_message(dns, url, message):
    dns["hooks.example.com"] = [PUBLIC]
    with pytest.raises(ValidationError) as info:
        validate_webhook_url(url)
    assert message in info.value.messages[0]


def test_url_of_exactly_2000_characters_is_fine(dns):
    dns["hooks.example.com"] = [PUBLIC]
    url = "https://hooks.example.com/"
    validate_webhook_url(url + "a" * (2000 - len(url)))


def test_allowed_hosts_skip_the_address_check_exactly_and_case_insensitively(dns, settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["Hooks.Internal", "127.0.0.1", "[::1]"]
    dns["hooks.internal"] = ["10.0.0.5"]
    dns["sub.hooks.internal"] = ["10.0.0.5"]
    dns["hooks.internal.evil.com"] = ["10.0.0.5"]
    validate_webhook_url("http://hooks.internal/hook")
    validate_webhook_url("http://HOOKS.internal:9000/hook")
    validate_webhook_url("http://127.0.0.1:8000/hook")
    validate_webhook_url("http://[::1]:8000/hook")
    for url in ("http://sub.hooks.internal/", "http://hooks.internal.evil.com/"):
        with pytest.raises(ValidationError):
            validate_webhook_url(url)


def test_allowed_hosts_still_need_to_resolve(dns, settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["hooks.internal"]
    dns["hooks.internal"] = []
    with pytest.raises(ValidationError):
        validate_webhook_url("http://hooks.internal/hook")


# --- delivery without sending anything ------------------------------------------------------


def test_dns_rebinding_between_validation_and_delivery_is_caught(dns, no_send):
    dns["rebind.example.com"] = [[PUBLIC], ["169.254.169.254"]]
    validate_webhook_url("https://rebind.example.com/hook")
    with pytest.raises(BlockedDestination):
        post_json("https://rebind.example.com/hook", b"{}", {}, timeout=1)
    assert no_send == []
    assert dns["_calls"] == ["rebind.example.com", "rebind.example.com"]


def test_delivery_connects_to_the_checked_address_with_the_original_host(dns, no_send, monkeypatch):
    dns["hooks.example.com"] = [PUBLIC, "2606:2800:220:1:248:1893:25c8:1946"]
    # Proxies from the environment would resolve the name again on their side.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    with pytest.raises(Captured):
        post_json(
            "https://hooks.example.com/hook?x=1#frag",
            b'{"a": 1}',
            {"X-Signature-SHA256": "sha256=abc", "Host": "evil.internal"},
            timeout=5,
        )
    assert dns["_calls"] == ["hooks.example.com"]  # resolved once, then pinned
    adapter, request, kwargs = no_send[0]
    assert request.url == f"https://{PUBLIC}:443/hook?x=1"
    assert request.headers["Host"] == "hooks.example.com"
    assert request.headers["X-Signature-SHA256"] == "sha256=abc"
    assert request.headers["Content-Type"] == "application/json"
    assert request.body == b'{"a": 1}'
    assert kwargs["timeout"] == (5.0, 5.0)
    assert kwargs["stream"] is True
    assert not kwargs["proxies"]
    # TLS presents (SNI) and verifies the certificate for the name, not the IP.
    host_params, pool_kwargs = adapter.build_connection_pool_key_attributes(
        request, kwargs["verify"]
    )
    assert host_params["host"] == PUBLIC
    assert pool_kwargs["server_hostname"] == "hooks.example.com"
    assert pool_kwargs["assert_hostname"] == "hooks.example.com"


def test_ipv6_destination_and_explicit_port(dns, no_send):
    dns["v6.example.com"] = ["2606:2800:220:1:248:1893:25c8:1946"]
    with pytest.raises(Captured):
        post_json("http://v6.example.com:8080/h", b"{}", {}, timeout=30)
    _adapter, request, kwargs = no_send[0]
    assert request.url == "http://[2606:2800:220:1:248:1893:25c8:1946]:8080/h"
    assert request.headers["Host"] == "v6.example.com:8080"
    assert kwargs["timeout"] == (netsafety.MAX_CONNECT_TIMEOUT, 30.0)


def test_delivery_to_an_unresolvable_host_is_a_retryable_connection_error(dns, no_send):
    dns["gone.example.com"] = []
    with pytest.raises(requests.ConnectionError):
        post_json("https://gone.example.com/hook", b"{}", {}, timeout=1)
    assert no_send == []


def test_delivery_refuses_malformed_urls(no_send):
    for url in ("ftp://x.example.com/", "https://u:p@x.example.com/", "http:///x"):
        with pytest.raises(BlockedDestination):
            post_json(url, b"{}", {}, timeout=1)
    assert no_send == []


# --- delivery to real local servers (127.0.0.1 only) -----------------------------------------


class Receiver:
    """A local HTTP(S) server whose behaviour each test chooses; records what it received."""

    def __init__(self, respond, tls_context=None, protocol="HTTP/1.0"):
        self.requests = []
        self.sni = []
        self.peers = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = protocol

            def do_POST(self):
                receiver.peers.append(self.client_address)
                length = int(self.headers.get("Content-Length") or 0)
                receiver.requests.append((self.path, dict(self.headers), self.rfile.read(length)))
                respond(self)

            do_GET = do_POST

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # the client hanging up early is part of several tests

        self.server = Server(("127.0.0.1", 0), Handler)
        if tls_context is not None:
            tls_context.sni_callback = lambda sock, name, ctx: self.sni.append(name)
            self.server.socket = tls_context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    started = []

    def start(respond, tls_context=None, **kwargs):
        receiver = Receiver(respond, tls_context, **kwargs)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.close()


def answer(status, body=b"", headers=None):
    def respond(handler):
        handler.send_response(status)
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return respond


def test_loopback_receiver_is_blocked_unless_allow_listed(receivers, settings):
    receiver = receivers(answer(204))
    url = f"http://127.0.0.1:{receiver.port}/hook"
    with pytest.raises(BlockedDestination):
        post_json(url, b"{}", {}, timeout=2)
    assert receiver.requests == []
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
    response = post_json(url, b'{"ok": true}', {"X-Test": "1"}, timeout=2)
    assert response == SafeResponse(status_code=204, text_snippet="")
    path, headers, body = receiver.requests[0]
    assert (path, body, headers["X-Test"]) == ("/hook", b'{"ok": true}', "1")


def test_delivery_really_goes_to_the_pinned_address(dns, receivers, settings):
    # receiver.test resolves (once) to 127.0.0.1, where the only listener is our receiver.
    settings.WEBHOOK_ALLOWED_HOSTS = ["receiver.test"]
    dns["receiver.test"] = ["127.0.0.1"]
    receiver = receivers(answer(200, b"thanks"))
    response = post_json(f"http://receiver.test:{receiver.port}/h?q=1", b"{}", {}, timeout=2)
    assert response == SafeResponse(200, "thanks")
    path, headers, _body = receiver.requests[0]
    assert path == "/h?q=1"
    assert headers["Host"] == f"receiver.test:{receiver.port}"
    assert dns["_calls"] == ["receiver.test"]


@pytest.mark.parametrize("location", ["/target", "absolute"])
def test_redirects_are_not_followed(receivers, settings, location):
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    holder = {}

    def respond(handler):
        target = "/target"
        if location == "absolute":
            target = f"http://127.0.0.1:{holder['port']}/target"
        if handler.path == "/hook":
            answer(302, b"moved", {"Location": target})(handler)
        else:
            answer(200, b"redirect target reached")(handler)

    receiver = receivers(respond)
    holder["port"] = receiver.port
    response = post_json(f"http://127.0.0.1:{receiver.port}/hook", b"{}", {}, timeout=2)
    assert response.status_code == 302
    assert [path for path, _h, _b in receiver.requests] == ["/hook"]


def test_response_body_is_capped(receivers, settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    receiver = receivers(answer(200, b"a" * (1024 * 1024)))
    response = post_json(f"http://127.0.0.1:{receiver.port}/hook", b"{}", {}, timeout=2)
    assert response.status_code == 200
    assert len(response.text_snippet) == netsafety.MAX_RESPONSE_BYTES == 64 * 1024


def test_a_slow_answer_times_out(receivers, settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]

    def slow(handler):
        time.sleep(1.5)
        answer(200)(handler)

    receiver = receivers(slow)
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        post_json(f"http://127.0.0.1:{receiver.port}/hook", b"{}", {}, timeout=0.3)
    assert time.monotonic() - started < 1.2


def test_a_trickling_body_is_cut_at_the_deadline_and_is_a_timeout(receivers, settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]

    def trickle(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        for _ in range(1000):
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(0.05)

    receiver = receivers(trickle)
    started = time.monotonic()
    # A 200 whose body never finishes is not a delivery the receiver can be said to have taken.
    with pytest.raises(netsafety.DeadlineExceeded):
        post_json(f"http://127.0.0.1:{receiver.port}/hook", b"{}", {}, timeout=0.4)
    assert time.monotonic() - started < 1.5


def trickle_headers(handler, interval=0.1, count=400):
    # One byte of the status line and headers at a time: every read gets something well
    # within any per-read timeout, so only a wall-clock deadline ends the exchange.
    data = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-Pad-%d: y\r\n" % i for i in range(count))
    for byte in data:
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()
        time.sleep(interval)


def test_trickling_headers_are_cut_at_the_deadline(receivers, settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    receiver = receivers(trickle_headers)
    started = time.monotonic()
    with pytest.raises(netsafety.DeadlineExceeded) as raised:
        post_json(f"http://127.0.0.1:{receiver.port}/hook", b"{}", {}, timeout=0.6)
    elapsed = time.monotonic() - started
    assert 0.5 < elapsed < 1.5
    assert "0.6 s" in str(raised.value)


def test_probe_of_a_trickling_http_port_is_cut_at_the_deadline(receivers):
    receiver = receivers(trickle_headers)
    started = time.monotonic()
    with pytest.raises(netsafety.DeadlineExceeded):
        netsafety.http_status(f"http://127.0.0.1:{receiver.port}/", timeout=0.5)
    assert time.monotonic() - started < 1.3


def test_probe_of_an_answering_port_returns_its_status(receivers):
    receiver = receivers(answer(404))
    assert netsafety.http_status(f"http://127.0.0.1:{receiver.port}/", timeout=2) == 404


def test_a_deadline_cuts_a_reused_keep_alive_connection(receivers):
    calls = []

    def first_quick_then_trickle(handler):
        calls.append(1)
        if len(calls) == 1:
            answer(200, b"ok")(handler)
        else:
            trickle_headers(handler)

    receiver = receivers(first_quick_then_trickle, protocol="HTTP/1.1")
    session = requests.Session()
    session.mount("http://", netsafety.DeadlineAdapter())
    url = f"http://127.0.0.1:{receiver.port}/"
    with netsafety.deadline(2):
        assert session.get(url, timeout=5).status_code == 200
    started = time.monotonic()
    with pytest.raises(netsafety.DeadlineExceeded), netsafety.deadline(0.5):
        session.get(url, timeout=5)
    assert time.monotonic() - started < 1.3
    assert len(receiver.peers) == 2 and receiver.peers[0] == receiver.peers[1]  # one connection
    session.close()


def test_tcp_probe_connects_or_fails_within_its_time():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    netsafety.tcp_connects("127.0.0.1", port, timeout=1)
    listener.close()
    with pytest.raises(OSError):
        netsafety.tcp_connects("127.0.0.1", port, timeout=1)


def test_a_webhook_host_whose_resolver_hangs_is_cut_at_the_deadline(hanging_dns):
    hanging_dns.add("slow-dns.example.com")
    started = time.monotonic()
    with pytest.raises(netsafety.DeadlineExceeded):
        post_json("https://slow-dns.example.com/hook", b"{}", {}, timeout=0.5)
    assert time.monotonic() - started < 1.3


def test_submitting_a_webhook_whose_resolver_hangs_is_refused_in_time(hanging_dns, settings):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.5
    hanging_dns.add("slow-dns.example.com")
    started = time.monotonic()
    with pytest.raises(ValidationError, match="could not be resolved in time"):
        validate_webhook_url("https://slow-dns.example.com/hook")
    assert time.monotonic() - started < 1.3


def test_http_probe_of_a_host_whose_resolver_hangs_is_cut_at_the_deadline(hanging_dns):
    hanging_dns.add("slow-dns.example.com")
    started = time.monotonic()
    with pytest.raises(netsafety.DeadlineExceeded):
        netsafety.http_status("http://slow-dns.example.com:8080/", timeout=0.5)
    assert time.monotonic() - started < 1.3


def test_tcp_probe_of_a_host_whose_resolver_hangs_times_out_in_time(hanging_dns):
    hanging_dns.add("slow-dns.example.com")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        netsafety.tcp_connects("slow-dns.example.com", 22, timeout=0.5)
    assert time.monotonic() - started < 1.3


def test_a_probe_tries_each_address_of_its_host_and_keeps_the_host_name(dns, receivers):
    # 127.0.0.2 is loopback too, with nobody listening on the port: refused, then the next one.
    receiver = receivers(answer(204))
    dns["two-addresses.test"] = ["127.0.0.2", "127.0.0.1"]
    url = f"http://two-addresses.test:{receiver.port}/ready"
    assert netsafety.http_status(url, timeout=2) == 204
    (path, headers, _body), *_ = receiver.requests
    assert (path, headers["Host"]) == ("/ready", f"two-addresses.test:{receiver.port}")


def test_non_positive_timeout_is_a_programming_error(dns):
    dns["hooks.example.com"] = [PUBLIC]
    with pytest.raises(ValueError):
        post_json("https://hooks.example.com/", b"{}", {}, timeout=0)


# --- TLS: pinned address, certificate still verified for the host name ---------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a throwaway certificate")
    out = {}
    for name in ("receiver.test", "other.test"):
        folder = tmp_path_factory.mktemp(name)
        cert, key = folder / "cert.pem", folder / "key.pem"
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
                "-addext", f"subjectAltName=DNS:{name}",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        out[name] = (str(cert), str(key))
    return out


def _tls(certificates, name):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificates[name])
    return context


def test_https_to_a_pinned_address_sends_sni_and_verifies_the_name(
    dns, receivers, settings, monkeypatch, certificates
):
    settings.WEBHOOK_ALLOWED_HOSTS = ["receiver.test"]
    dns["receiver.test"] = ["127.0.0.1"]
    monkeypatch.setattr(netsafety, "CA_BUNDLE", certificates["receiver.test"][0])
    receiver = receivers(answer(200, b"tls ok"), _tls(certificates, "receiver.test"))
    response = post_json(f"https://receiver.test:{receiver.port}/hook", b"{}", {}, timeout=3)
    assert response == SafeResponse(200, "tls ok")
    assert receiver.sni == ["receiver.test"]
    assert receiver.requests[0][1]["Host"] == f"receiver.test:{receiver.port}"


def test_https_certificate_for_another_name_is_refused(
    dns, receivers, settings, monkeypatch, certificates
):
    settings.WEBHOOK_ALLOWED_HOSTS = ["receiver.test"]
    dns["receiver.test"] = ["127.0.0.1"]
    # Trusted CA, but the certificate names other.test: the check is against the URL's host.
    monkeypatch.setattr(netsafety, "CA_BUNDLE", certificates["other.test"][0])
    receiver = receivers(answer(200), _tls(certificates, "other.test"))
    with pytest.raises(requests.exceptions.SSLError):
        post_json(f"https://receiver.test:{receiver.port}/hook", b"{}", {}, timeout=3)
    assert receiver.requests == []
