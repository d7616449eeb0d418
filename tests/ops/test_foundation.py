"""The service runs on the databases and broker it is configured for."""

import os

import pytest
from django.conf import settings
from django.core.cache import caches
from django.db import connection


@pytest.mark.django_db
def test_health_answers_status_timestamp_and_uptime(client):
    # Full checks live in test_health.py; here no worker or upstream answers: 200, degraded.
    body = client.get("/health").json()
    assert body["status"] in ("healthy", "degraded")
    assert isinstance(body["uptime"], int)
    assert body["timestamp"].endswith("Z")


@pytest.mark.django_db
def test_api_docs_and_schema_are_served(client):
    assert client.get("/api/docs/").status_code == 200
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"openapi" in schema.content


@pytest.mark.django_db
def test_admin_login_page_is_served(client):
    assert client.get("/admin/login/").status_code == 200


@pytest.mark.skipif(not os.environ.get("CI"), reason="CI proves the real PostgreSQL and Redis")
@pytest.mark.django_db
def test_ci_runs_against_postgresql_and_redis():
    assert connection.vendor == "postgresql"
    assert settings.REDIS_URL.startswith("redis://")
    cache = caches["instances"]
    cache.set("ci-roundtrip", {"ok": 1}, 30)
    assert cache.get("ci-roundtrip") == {"ok": 1}
    from django_redis import get_redis_connection

    assert get_redis_connection("instances").ping() is True
