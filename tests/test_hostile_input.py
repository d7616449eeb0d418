"""Inputs that used to reach a 500: deep nesting, numbers overflowing to infinity, NUL and other
control characters in the path, the query or the body. Each is a 400 in the envelope, on SQLite
and on PostgreSQL alike (CI runs this file with DATABASE_URL pointing at PostgreSQL)."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from instances.models import Instance
from instances.status import Status

pytestmark = pytest.mark.django_db


@pytest.fixture
def known(db):
    return Instance.objects.create(
        name="hostile-known",
        product_name="RTX 4090 24GB",
        template_id="pytorch-jupyter",
        status=Status.READY,
        novita_instance_id="nov-hostile",
        ready_at=timezone.now(),
    )


def assert_400(response):
    assert response.status_code == 400, response.content[:300]
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert set(error) == {"code", "message", "details", "timestamp", "requestId"}
    return error


def send(client, method, path, raw: str | bytes, **extra):
    data = raw.encode() if isinstance(raw, str) else raw
    return client.generic(method, path, data=data, content_type="application/json", **extra)


@pytest.mark.parametrize("depth", [40, 5000, 30000])
def test_deeply_nested_json_is_400(client, depth):
    body = '{"name": ' + "[" * depth + "]" * depth + "}"
    error = assert_400(send(client, "POST", "/api/instances", body))
    assert "nested" in json.dumps(error)


def test_moderately_nested_json_still_reaches_validation(client):
    body = json.dumps({"name": "ok", "healthCheckConfig": {"timeoutMs": [[[1]]]}})
    error = assert_400(send(client, "POST", "/api/instances", body))
    assert error["message"] == "Validation failed"


@pytest.mark.parametrize(
    "raw",
    [
        '{"name": "a", "productName": "p", "templateId": "t", "autoStopMinutes": 1e400}',
        '{"name": "a", "productName": "p", "templateId": "t", "autoStopMinutes": -1e400}',
        '{"name": "a", "productName": "p", "templateId": "t", "gpuNum": 1e999}',
        '{"name": "a", "productName": "p", "templateId": "t", "healthCheckConfig": '
        '{"timeoutMs": 1e400}}',
    ],
)
def test_numbers_overflowing_to_infinity_are_400_on_create(client, raw):
    error = assert_400(send(client, "POST", "/api/instances", raw))
    assert "out of range" in json.dumps(error)
    assert not Instance.objects.filter(name="a").exists()


def test_last_used_overflowing_to_infinity_is_400(client, known):
    assert_400(send(client, "PUT", f"/api/instances/{known.id}/last-used", '{"lastUsedAt": 1e400}'))
    assert_400(
        send(
            client,
            "PUT",
            "/api/instances/last-used",
            '{"instanceName": "hostile-known", "lastUsedAt": -1e400}',
        )
    )


@pytest.mark.parametrize(
    "path",
    [
        "/api/instances/%00",
        "/api/instances/inst_%00abc",
        "/api/instances/%01/start",
        "/api/instances/%7F/last-used",
        "/api/instances/a%0Ab",
        "/api/instances/%C2%85",
        "/admin/instances/instance/%00/change/",
    ],
)
def test_control_characters_in_the_path_are_400(client, known, path):
    for method in ("GET", "POST", "PUT", "DELETE"):
        error = assert_400(send(client, method, path, ""))
        assert "path" in error["message"]
    known.refresh_from_db()
    assert known.status == Status.READY


@pytest.mark.parametrize("query", ["source=%00", "source=all&x=%1B[31m", "%00=1", "a=b%7F"])
def test_control_characters_in_the_query_are_400(client, query):
    error = assert_400(client.get("/api/instances", QUERY_STRING=query))
    assert "query" in error["message"]


@pytest.mark.parametrize("char", ["\\u0000", "\\u0001", "\\u001b", "\\u007f", "\\u0085", "\\n"])
@pytest.mark.parametrize(
    "template",
    [
        '{"name": "x%s", "productName": "p", "templateId": "t"}',
        '{"name": "x", "productName": "p%s", "templateId": "t"}',
        '{"name": "x", "productName": "p", "templateId": "t", "region": "CN-HK-01%s"}',
        '{"name": "x", "productName": "p", "templateId": "t", "unknownField%s": 1}',
        '{"name": "x", "productName": "p", "templateId": "t", "extra": [["%s"]]}',
    ],
)
def test_control_characters_anywhere_in_the_body_are_400(client, template, char):
    error = assert_400(send(client, "POST", "/api/instances", template % char))
    assert "control characters" in json.dumps(error)
    assert not Instance.objects.exists()


def test_nul_in_a_name_lookup_is_400_not_a_database_error(client, known):
    for path, method in (
        ("/api/instances/start", "POST"),
        ("/api/instances/stop", "POST"),
        ("/api/instances/last-used", "PUT"),
    ):
        assert_400(send(client, method, path, '{"instanceName": "hostile\\u0000known"}'))


def test_last_used_before_2000_is_400(client, known):
    error = assert_400(
        send(
            client,
            "PUT",
            f"/api/instances/{known.id}/last-used",
            '{"lastUsedAt": "1999-12-31T23:59:59Z"}',
        )
    )
    assert "2000" in error["details"][0]["message"]
    known.refresh_from_db()
    assert known.last_used_at is None


def test_last_used_beyond_the_clock_skew_is_400_and_within_it_is_accepted(client, known):
    future = (timezone.now() + timedelta(hours=1)).isoformat()
    assert_400(
        send(
            client,
            "PUT",
            f"/api/instances/{known.id}/last-used",
            json.dumps({"lastUsedAt": future}),
        )
    )
    ok = send(
        client,
        "PUT",
        f"/api/instances/{known.id}/last-used",
        json.dumps({"lastUsedAt": "2000-01-01T00:00:00Z"}),
    )
    assert ok.status_code == 200


def test_ordinary_text_outside_ascii_is_still_accepted(client):
    # Only control characters are refused; accents and emoji in free text are fine.
    body = '{"name": "x", "productName": "RTX é 🚀", "templateId": "t"}'
    response = send(client, "POST", "/api/instances", body)
    assert response.status_code == 201, response.content
    assert Instance.objects.get(name="x").product_name == "RTX é 🚀"
