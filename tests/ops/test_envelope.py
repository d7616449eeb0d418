"""Every error a client can see uses the contract's envelope and carries the request id."""

import json
import logging
import re
import time
from datetime import UTC, datetime

import pytest

from novita_gateway.context import request_id_var
from ops.logging import JsonFormatter, RequestContextFilter, redact

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.error_urls")]


def _error(response):
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details", "timestamp", "requestId"}
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", error["timestamp"])
    assert error["requestId"] == response["X-Request-ID"]
    return error


def test_unknown_route_is_a_404_envelope(client):
    response = client.get("/api/nope")
    assert response.status_code == 404
    assert _error(response)["code"] == "NOT_FOUND"


def test_wrong_method_is_a_405_envelope(client):
    response = client.post("/health")
    assert response.status_code == 405
    assert _error(response)["code"] == "METHOD_NOT_ALLOWED"


def test_wrong_method_on_api_view_is_a_405_envelope(client):
    response = client.get("/t/echo")
    assert response.status_code == 405
    assert _error(response)["code"] == "METHOD_NOT_ALLOWED"


def test_malformed_json_is_a_validation_error(client):
    response = client.post("/t/echo", data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert _error(response)["code"] == "VALIDATION_ERROR"


@pytest.mark.parametrize(
    "raw",
    ['{"name": "a", "name": "b", "count": 1}', "[1, 2]", '"text"', '{"count": NaN}'],
    ids=["duplicate-keys", "array", "string", "nan"],
)
def test_non_strict_json_is_rejected(client, raw):
    response = client.post("/t/echo", data=raw, content_type="application/json")
    assert response.status_code == 400
    assert _error(response)["code"] == "VALIDATION_ERROR"


def test_validation_errors_list_field_message_and_value(client):
    response = client.post(
        "/t/echo", data={"name": "bad@name", "count": 9}, content_type="application/json"
    )
    assert response.status_code == 400
    error = _error(response)
    assert error["code"] == "VALIDATION_ERROR"
    assert error["message"] == "Validation failed"
    by_field = {d["field"]: d for d in error["details"]}
    assert by_field["name"]["value"] == "bad@name"
    assert by_field["count"]["value"] == 9
    assert "8" in by_field["count"]["message"]


def test_oversized_body_is_a_413(client, settings):
    settings.MAX_REQUEST_BODY_BYTES = 100
    payload = json.dumps({"name": "x" * 500, "count": 1})
    response = client.post("/t/echo", data=payload, content_type="application/json")
    assert response.status_code == 413
    assert _error(response)["code"] == "PAYLOAD_TOO_LARGE"


def test_unhandled_exception_is_a_500_without_internals(client, caplog):
    response = client.get("/t/crash", HTTP_X_REQUEST_ID="req-crash-1")
    assert response.status_code == 500
    error = _error(response)
    assert error["code"] == "INTERNAL_SERVER_ERROR"
    assert "secret internal detail" not in response.content.decode()
    assert "Traceback" not in response.content.decode()
    logged = [r for r in caplog.records if r.name == "novita_gateway.errors"]
    assert logged and logged[0].exc_info is not None


def test_upstream_timeout_is_a_408(client):
    response = client.get("/t/upstream-timeout")
    assert response.status_code == 408
    assert _error(response)["code"] == "REQUEST_TIMEOUT"


def test_open_breaker_is_a_503(client):
    response = client.get("/t/upstream-open")
    assert response.status_code == 503
    assert _error(response)["code"] == "CIRCUIT_BREAKER_OPEN"


def test_upstream_rejection_is_a_502_with_upstream_reason(client):
    response = client.get("/t/upstream-rejected")
    assert response.status_code == 502
    error = _error(response)
    assert error["code"] == "NOVITA_API_ERROR"
    assert "INSUFFICIENT_RESOURCE" in error["details"]


def test_client_request_id_is_echoed(client):
    response = client.get("/api/nope", HTTP_X_REQUEST_ID="req_client_42")
    assert response["X-Request-ID"] == "req_client_42"
    assert response.json()["error"]["requestId"] == "req_client_42"


def test_invalid_client_request_id_is_replaced(client):
    response = client.get("/api/nope", HTTP_X_REQUEST_ID="bad id\twith spaces" + "x" * 200)
    assert response["X-Request-ID"].startswith("req_")
    assert " " not in response["X-Request-ID"]


def test_generated_request_id_on_success(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert re.match(r"^req_[0-9a-f]{24}$", response["X-Request-ID"])


def test_correlation_id_is_passed_through(client):
    response = client.get("/health", HTTP_X_CORRELATION_ID="corr-7")
    assert response["X-Correlation-ID"] == "corr-7"


def test_one_access_log_line_per_request_without_secrets(client, caplog):
    caplog.set_level("INFO", logger="novita_gateway.access")
    client.get("/health", HTTP_AUTHORIZATION="Bearer supersecretkey123")
    lines = [r for r in caplog.records if r.name == "novita_gateway.access"]
    assert len(lines) == 1
    fields = lines[0].fields
    assert fields["method"] == "GET" and fields["path"] == "/health" and fields["status"] == 200
    assert "duration_ms" in fields
    assert "supersecretkey123" not in caplog.text


def test_database_outage_is_a_503_with_retry_after(client):
    response = client.get("/t/db-down")
    assert response.status_code == 503
    assert _error(response)["code"] == "SERVICE_UNAVAILABLE"
    assert response["Retry-After"] == "5"
    assert "could not connect" not in response.content.decode()


def test_log_lines_are_json_with_request_id_fields_and_masked_secrets():
    formatter = JsonFormatter()
    token = request_id_var.set("req-log-1")
    try:
        record = logging.LogRecord(
            "novita_gateway.access", logging.INFO, __file__, 1, "token=%s", ("hunter22",), None
        )
        RequestContextFilter().filter(record)
    finally:
        request_id_var.reset(token)
    record.fields = {"status": 200, "huge": 2**70, "at": datetime(2026, 1, 2, tzinfo=UTC)}
    line = formatter.format(record)
    assert "\n" not in line
    payload = json.loads(line)
    assert payload["request_id"] == "req-log-1" and payload["level"] == "INFO"
    assert payload["msg"] == "token=[REDACTED]"
    assert payload["status"] == 200 and payload["huge"] == 2**70
    assert payload["at"].startswith("2026-01-02")
    # The timestamp is the record's own second, in the log's format.
    expected = time.strftime("%Y-%m-%dT%H:%M:%S", formatter.converter(int(record.created)))
    assert payload["ts"] == expected


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("Authorization: Bearer abcdef123456", "Authorization: [REDACTED] [REDACTED]"),
        ("calling with bearer abcdef123456", "calling with bearer [REDACTED]"),
        ('{"api_key": "sk-live-123456"}', '{"api_key": "[REDACTED]"}'),
        ("X-API-Key=k1234567 and more", "X-API-Key=[REDACTED] and more"),
        ("PASSWORD: hunter22", "PASSWORD: [REDACTED]"),
        ("GET /api/instances/inst_1 200 1.2ms", "GET /api/instances/inst_1 200 1.2ms"),
    ],
)
def test_secrets_are_masked_in_any_case_and_other_lines_pass_untouched(text, shown):
    assert redact(text) == shown
