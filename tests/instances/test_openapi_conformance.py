"""The OpenAPI schema documents the whole contract, and what the gateway answers matches it.

Every response the suite gets is checked against the schema (tests/openapi_conformance.py,
wired in tests/conftest.py); the tests here make sure that check covers every endpoint, and that
the schema lists every status code each endpoint can answer.
"""

import json

import pytest

from instances.status import Status
from tests import openapi_conformance
from tests.instances.upstream import remote_instance

pytestmark = pytest.mark.django_db

# The contract's endpoints (spec/gateway-api.md) and a few of ours, with the statuses the gateway
# can answer from the view itself; the ones every layer adds are checked below. Endpoints not
# listed here are still checked whenever a test calls them.
CONTRACT = {
    ("get", "/health"): {200, 503},
    ("post", "/api/instances"): {201, 400, 409},
    ("get", "/api/instances"): {200, 400, 502, 503},  # 5xx only when upstream is asked
    ("get", "/api/instances/{instance_id}"): {200, 404},
    ("get", "/api/instances/{instance_id}/events"): {200, 400, 404},  # beyond the contract
    ("delete", "/api/instances/{instance_id}"): {200, 202, 404, 409, 502},
    ("get", "/api/instances/comprehensive"): {200, 400, 502, 503},
    ("post", "/api/instances/{instance_id}/start"): {202, 400, 404, 409, 502, 503},
    ("post", "/api/instances/start"): {202, 400, 404, 409, 502, 503},
    ("post", "/api/instances/{instance_id}/stop"): {200, 400, 404, 409, 502, 503},
    ("post", "/api/instances/stop"): {200, 400, 404, 409, 502, 503},
    ("put", "/api/instances/{instance_id}/last-used"): {200, 400, 404},
    ("put", "/api/instances/last-used"): {200, 400, 404},
    ("get", "/api/instances/auto-stop/stats"): {200, 404},
    ("post", "/api/instances/auto-stop/trigger"): {200, 400, 404},
    ("get", "/api/cache/stats"): {200},
    ("post", "/api/cache/clear"): {200, 400},
    ("get", "/api/metrics"): {200},
    ("get", "/api/metrics/summary"): {200},
    ("get", "/metrics"): {200},
}


def _operation(method, path):
    return openapi_conformance.schema()["paths"][path][method]


def test_the_schema_documents_every_endpoint_of_the_contract():
    documented = {
        (method, path)
        for path, item in openapi_conformance.schema()["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert set(CONTRACT) <= documented, sorted(set(CONTRACT) - documented)


@pytest.mark.parametrize(("method", "path"), sorted(CONTRACT))
def test_every_status_an_endpoint_can_answer_is_documented(method, path):
    statuses = {int(code) for code in _operation(method, path)["responses"]}
    expected = set(CONTRACT[(method, path)]) | {400}  # control characters in path or query
    if path.startswith("/api/"):
        expected |= {401, 429, 503}  # no key, rate limit, database unreachable
    if path == "/metrics":
        expected |= {401, 503}
    if 502 in expected:  # a view that calls upstream answers every upstream failure
        expected |= {408, 503}
    assert expected <= statuses, f"undocumented: {sorted(expected - statuses)}"


@pytest.mark.parametrize(("method", "path"), sorted(CONTRACT))
def test_every_error_is_documented_as_the_envelope(method, path):
    for code, response in _operation(method, path)["responses"].items():
        if int(code) >= 400 and (path, code) != ("/health", "503"):  # the contract's own body
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorOut"}, code


def test_one_request_to_every_endpoint_is_checked_against_the_schema(
    api, make_instance, novita, settings
):
    settings.AUTO_STOP_ENABLED = True
    ready = make_instance(name="ready-one")
    stopped = make_instance(name="stopped-one", status=Status.STOPPED, novita_instance_id="nov-2")
    novita.list_returns([remote_instance("nov-1", "ready-one")])
    novita.action_returns("start")
    novita.action_returns("stop")
    novita.action_returns("delete")
    requests = [
        ("get", "/health", None),
        ("post", "/api/instances", {"name": "new-one", "productName": "x", "templateId": "t"}),
        ("get", "/api/instances", None),
        ("get", f"/api/instances/{ready.id}", None),
        ("get", f"/api/instances/{ready.id}/events", None),
        ("get", "/api/instances/comprehensive", None),
        ("post", f"/api/instances/{stopped.id}/start", {}),
        ("post", "/api/instances/start", {"instanceName": "stopped-one"}),
        ("post", f"/api/instances/{ready.id}/stop", {}),
        ("post", "/api/instances/stop", {"instanceName": "ready-one"}),
        ("put", f"/api/instances/{ready.id}/last-used", {}),
        ("put", "/api/instances/last-used", {"instanceName": "ready-one"}),
        ("get", "/api/instances/auto-stop/stats", None),
        ("post", "/api/instances/auto-stop/trigger", {"dryRun": True}),
        ("get", "/api/cache/stats", None),
        ("post", "/api/cache/clear", {"cacheName": "no-such-cache"}),
        ("post", "/api/cache/clear", {}),
        ("get", "/api/metrics", None),
        ("get", "/api/metrics/summary", None),
        ("get", "/metrics", None),
        ("delete", f"/api/instances/{ready.id}", None),
    ]
    checked = set()
    for method, url, body in requests:
        response = (
            getattr(api, method)(url, body, format="json")
            if body is not None
            else (getattr(api, method)(url))
        )
        key = openapi_conformance.check(method, url, response)
        assert key is not None, f"{method.upper()} {url} was not checked"
        checked.add(tuple(key.split()[:2]))
    assert {(m.upper(), p) for m, p in CONTRACT} == checked


def test_a_field_the_schema_does_not_list_fails_the_check(api, make_instance, monkeypatch):
    instance = make_instance()
    response = api.get(f"/api/instances/{instance.id}")
    body = response.json()
    body["surprise"] = 1
    monkeypatch.setattr(response, "content", json.dumps(body).encode())
    with pytest.raises(AssertionError, match="surprise"):
        openapi_conformance.check("get", f"/api/instances/{instance.id}", response)


def test_an_undocumented_status_fails_the_check(api, make_instance):
    instance = make_instance()
    response = api.get(f"/api/instances/{instance.id}")
    response.status_code = 418
    with pytest.raises(AssertionError, match="418 not documented"):
        openapi_conformance.check("get", f"/api/instances/{instance.id}", response)
