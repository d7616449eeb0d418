"""Port endpoints as Novita gives them: the readiness probe reads every form (with or without
scheme, with or without port), HTTPS on 443 when no port is named, and an edge 502/503/504
means "not ready yet". No test here leaves loopback."""

import http.server
import threading

import pytest

from instances.services import health_probe
from instances.services.health_probe import Target, probe_target

NOVITA_HTTP = "https://07ed667185a895bb-8188.us-ca-1.gpu-instance.novita.ai"


@pytest.mark.parametrize(
    "endpoint,kind,port,expected",
    [
        # Novita's HTTP form, as published, and the same without a scheme.
        (NOVITA_HTTP, "http", 8188, Target("http", NOVITA_HTTP[8:], 443, NOVITA_HTTP)),
        (NOVITA_HTTP[8:], "http", 8188, Target("http", NOVITA_HTTP[8:], 443, NOVITA_HTTP)),
        (
            NOVITA_HTTP[8:] + ":443",
            "http",
            8188,
            Target("http", NOVITA_HTTP[8:], 443, NOVITA_HTTP),
        ),
        (NOVITA_HTTP + "/", "http", 8188, Target("http", NOVITA_HTTP[8:], 443, NOVITA_HTTP + "/")),
        # Explicit schemes and ports are kept as given.
        (
            "http://box.test:8080/health",
            "http",
            8080,
            Target("http", "box.test", 8080, "http://box.test:8080/health"),
        ),
        ("http://box.test", "http", 8080, Target("http", "box.test", 80, "http://box.test")),
        (
            "https://box.test:8443",
            "http",
            8443,
            Target("http", "box.test", 8443, "https://box.test:8443"),
        ),
        # A bare host:port for an HTTP port (not 443) is plain HTTP on that port.
        (
            "127.0.0.1:18188",
            "http",
            8188,
            Target("http", "127.0.0.1", 18188, "http://127.0.0.1:18188"),
        ),
        ("[::1]:18188", "http", 8188, Target("http", "::1", 18188, "http://[::1]:18188")),
        # TCP ports: host:port, with or without a scheme; no port means the instance's port.
        (
            "proxy.us-ca-1.gpu-instance.novita.ai:38597",
            "tcp",
            22,
            Target("tcp", "proxy.us-ca-1.gpu-instance.novita.ai", 38597),
        ),
        ("tcp://proxy.test:38597", "tcp", 22, Target("tcp", "proxy.test", 38597)),
        ("proxy.test", "tcp", 22, Target("tcp", "proxy.test", 22)),
        (" proxy.test:2222 ", "TCP", 22, Target("tcp", "proxy.test", 2222)),
        # A tcp:// endpoint on a port upstream calls http is still a TCP connect.
        ("tcp://box.test:9000", "http", 9000, Target("tcp", "box.test", 9000)),
    ],
)
def test_every_endpoint_form_is_probed_where_novita_means(endpoint, kind, port, expected):
    assert probe_target(endpoint, kind, port) == expected


@pytest.fixture
def probes(monkeypatch):
    seen = []
    monkeypatch.setattr(
        health_probe, "_probe_http", lambda url, timeout: seen.append(("http", url)) or (True, "")
    )
    monkeypatch.setattr(
        health_probe,
        "_probe_tcp",
        lambda host, port, timeout: seen.append(("tcp", host, port)) or (True, ""),
    )
    return seen


def test_probe_round_uses_https_for_the_novita_http_form_and_tcp_for_ssh(probes):
    mappings = [
        {"port": 8188, "endpoint": NOVITA_HTTP[8:], "type": "http"},
        {"port": 22, "endpoint": "proxy.us-ca-1.gpu-instance.novita.ai:38597", "type": "tcp"},
    ]
    results = health_probe.probe(mappings, {"retryAttempts": 0}, target_port=None)
    assert [r.up for r in results] == [True]  # HTTP ports only when there are any
    health_probe.probe(mappings, {"retryAttempts": 0}, target_port=22)
    assert probes == [("http", NOVITA_HTTP), ("tcp", "proxy.us-ca-1.gpu-instance.novita.ai", 38597)]


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 - the stdlib's name
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def loopback_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("status", [502, 503, 504])
def test_an_edge_5xx_means_not_ready_yet(loopback_server, status):
    loopback_server.status = status
    mapping = {"port": 8188, "endpoint": f"127.0.0.1:{loopback_server.server_port}"}
    result = health_probe.probe_once(mapping, timeout=2)
    assert (result.up, result.detail) == (False, f"HTTP {status} (not ready yet)")


@pytest.mark.parametrize("status", [200, 301, 404])
def test_any_answer_below_500_means_something_is_serving(loopback_server, status):
    loopback_server.status = status
    mapping = {"port": 8188, "endpoint": f"http://127.0.0.1:{loopback_server.server_port}"}
    assert health_probe.probe_once(mapping, timeout=2).up is True


def test_a_tcp_port_is_up_when_it_accepts_a_connection(loopback_server):
    mapping = {"port": 22, "type": "tcp", "endpoint": f"127.0.0.1:{loopback_server.server_port}"}
    result = health_probe.probe_once(mapping, timeout=2)
    assert (result.kind, result.up) == ("tcp", True)


@pytest.mark.django_db
def test_connection_details_show_the_endpoints_upstream_gave(api, make_instance, monkeypatch):
    import json
    from pathlib import Path

    from instances.novita.schemas import UpstreamInstance
    from instances.services import monitor

    monkeypatch.setattr(health_probe, "_probe_http", lambda url, timeout: (False, "HTTP 502"))
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "novita" / "get_instance.json"
    remote = UpstreamInstance.from_api(json.loads(fixture.read_text()))
    instance = make_instance(status="starting", novita_instance_id=remote.id)

    monitor.apply_upstream(instance, remote, source="monitor")

    body = api.get(f"/api/instances/{instance.id}").json()
    assert body["portMappings"] == [
        {"port": 8188, "endpoint": NOVITA_HTTP, "type": "http"},
        {"port": 22, "endpoint": "proxy.us-ca-1.gpu-instance.novita.ai:38597", "type": "tcp"},
    ]
    assert body["connectionDetails"]["ssh"] == (
        "ssh root@proxy.us-ca-1.gpu-instance.novita.ai -p 38597"
    )
    assert "FIXTURE-" not in json.dumps(body)
