"""GET /health: every dependency really checked, 503 and the short shape only for critical parts."""

import json
import time
import uuid
from unittest import mock

import pytest
import responses
from django.conf import settings
from django.db import OperationalError

from instances import facts
from ops import caching, counters, health, metrics
from tests.ops.test_metrics import private_state  # noqa: F401 - fixture

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("private_state")]

SERVICES = {"novitaApi", "jobQueue", "cache", "migrationService", "redis", "database"}


@pytest.fixture(autouse=True)
def _fresh_redis_state():
    caching.note_redis_up()
    yield
    caching.note_redis_up()


@pytest.fixture
def upstream():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(f"{settings.NOVITA_API_BASE_URL}/v1/clusters", json={"data": []})
        yield rsps


WORKER_KEYS = ("worker:cost_control", "worker:probes", "worker:webhooks")


@pytest.fixture
def beats_alive():
    now = str(time.time())
    for key in ("auto-stop", "reconcile", "migration", *WORKER_KEYS):
        counters.set_value(f"heartbeat:{key}", now)


def _clusters_calls(rsps) -> int:
    return sum(1 for call in rsps.calls if call.request.url.endswith("/v1/clusters"))


def test_health_is_healthy_with_the_full_contract_shape_when_everything_answers(
    client, upstream, beats_alive
):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert set(body) >= {"status", "timestamp", "services", "uptime", "performance", "system"}
    assert set(body) >= {"redis", "dependencies"}
    assert body["timestamp"].endswith("Z")
    assert isinstance(body["uptime"], int)
    assert set(body["services"]) == SERVICES
    expected_redis = "up" if settings.REDIS_URL else "not_configured"
    assert body["services"] == {
        "novitaApi": "up",
        "jobQueue": "up",
        "cache": "up",
        "migrationService": "up",
        "redis": expected_redis,
        "database": "up",
    }
    assert set(body["performance"]) == {
        "requestsPerMinute",
        "averageResponseTime",
        "errorRate",
        "jobProcessingRate",
    }
    assert set(body["system"]["memory"]) == {"usedMB", "totalMB", "externalMB", "rss"}
    assert body["system"]["memory"]["totalMB"] > 0
    assert len(body["system"]["cpu"]["loadAverage"]) == 3
    assert isinstance(body["system"]["cpu"]["usage"], float)

    redis_block = body["redis"]
    assert set(redis_block) == {"available", "healthy", "cacheManager"}
    assert redis_block["available"] is bool(settings.REDIS_URL)
    configuration = redis_block["cacheManager"]["configuration"]
    assert configuration == {
        "defaultBackend": "redis" if settings.REDIS_URL else "file",
        "enableFallback": True,
        "cacheCount": len(settings.CACHE_NAMES),
        "redisConnected": bool(settings.REDIS_URL),
    }

    deps = body["dependencies"]
    assert set(deps) >= {"redis", "novitaApi", "jobQueue", "cache", "database"}
    assert set(deps["redis"]) >= {"status", "responseTime", "pingResult", "isHealthy"}
    if settings.REDIS_URL:
        assert deps["redis"]["pingResult"] == "PONG"
    assert set(deps["novitaApi"]) >= {"status", "responseTime", "lastChecked"}
    assert set(deps["jobQueue"]) >= {
        "status",
        "queueSize",
        "processing",
        "completed",
        "failed",
        "lastChecked",
    }
    assert set(deps["cache"]) >= {
        "status",
        "instanceCache",
        "instanceStatesCache",
        "totalStates",
        "lastChecked",
    }
    assert set(deps["cache"]["instanceCache"]) == {"size", "hitRatio"}
    assert deps["database"]["status"] == "up"
    assert deps["scheduler"]["status"] == "up"


def test_health_writes_no_counters_yet_counts_what_this_process_holds(
    client, upstream, beats_alive, monkeypatch
):
    # Load balancers poll /health every few seconds: it reads the shared counters and adds
    # this process's unwritten figures in memory instead of writing them first.
    metrics.record_job("instances.tasks.monitor_instance")
    metrics.record_job("instances.tasks.monitor_instance")
    writes = []
    monkeypatch.setattr(counters, "incr_many", lambda amounts: writes.append(amounts))

    body = client.get("/health").json()

    assert writes == []
    assert body["dependencies"]["jobQueue"]["completed"] == 2


def test_health_is_503_with_short_shape_when_database_is_down(client, upstream, beats_alive):
    with mock.patch.object(health, "_db_ping", side_effect=OperationalError("gone")):
        response = client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert set(body) == {"status", "timestamp", "services", "uptime"}
    assert body["status"] == "unhealthy"
    assert body["services"]["database"] == "down"
    assert set(body["services"]) == SERVICES


def test_health_is_503_when_configured_redis_does_not_answer(client, upstream, beats_alive):
    # Port 1 on loopback: nothing listens there, the PING is refused at once.
    with mock.patch.object(health, "_redis_url", return_value="redis://127.0.0.1:1/0"):
        response = client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert set(body) == {"status", "timestamp", "services", "uptime"}
    assert body["services"]["redis"] == "down"
    # The caches switched to their in-memory fallback when the PING failed.
    assert caching.redis_connected() is False


def test_health_reports_redis_as_not_configured_without_redis_url(client, upstream, settings):
    settings.REDIS_URL = ""
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["services"]["redis"] == "not_configured"
    assert body["dependencies"]["redis"]["status"] == "not_configured"
    assert body["dependencies"]["redis"]["isHealthy"] is True
    assert body["redis"]["cacheManager"]["configuration"]["redisConnected"] is False


def test_health_is_degraded_but_200_when_novita_is_down(client, beats_alive):
    with responses.RequestsMock() as rsps:
        rsps.get(f"{settings.NOVITA_API_BASE_URL}/v1/clusters", status=503, json={})
        response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["services"]["novitaApi"] == "down"
    assert body["dependencies"]["novitaApi"]["httpStatus"] == 503


@pytest.mark.parametrize(
    "status,body",
    [
        (404, "<html><center><h1>404 Not Found</h1></center>nginx</html>"),
        (404, '{"code": 404, "reason": "API_NOT_FOUND", "message": "api not found"}'),
        (401, '{"code": 401, "reason": "UNAUTHORIZED", "message": "bad key"}'),
        (403, '{"code": 403, "reason": "FORBIDDEN", "message": "forbidden"}'),
    ],
    ids=["proxy-page", "api-not-found", "401", "403"],
)
def test_health_says_misconfigured_not_down_for_a_wrong_base_url_or_key(
    client, beats_alive, status, body
):
    with responses.RequestsMock() as rsps:
        rsps.get(f"{settings.NOVITA_API_BASE_URL}/v1/clusters", status=status, body=body)
        response = client.get("/health")
    assert response.status_code == 200
    payload = response.json()
    assert payload["status"] == "degraded"
    assert payload["services"]["novitaApi"] == "misconfigured"
    assert payload["dependencies"]["novitaApi"]["httpStatus"] == status
    assert payload["dependencies"]["novitaApi"]["error"] == "NovitaMisconfiguredError"


def test_health_reports_novita_down_when_it_does_not_answer(client, beats_alive):
    with mock.patch.object(facts, "_probe_client") as probe:
        from instances.novita.errors import NovitaTimeoutError

        probe.return_value.list_clusters.side_effect = NovitaTimeoutError("slow", operation="x")
        body = client.get("/health").json()
    assert body["services"]["novitaApi"] == "down"
    assert body["dependencies"]["novitaApi"]["error"] == "NovitaTimeoutError"


def test_health_asks_novita_at_most_once_per_cache_period(client, upstream, beats_alive):
    for _ in range(3):
        assert client.get("/health").json()["services"]["novitaApi"] == "up"
    assert _clusters_calls(upstream) == 1


def test_health_probe_uses_a_short_timeout_and_no_retries(settings):
    settings.HEALTH_UPSTREAM_TIMEOUT_SECONDS = 1.5
    client = facts._probe_client()
    assert client.timeout[1] == 1.5
    assert client.timeout[0] <= 1.5
    assert client.read_retries == 0


def test_health_job_queue_is_down_without_a_recent_worker_heartbeat(client, upstream, beats_alive):
    counters.set_value("heartbeat:worker:cost_control", str(time.time() - 3600))
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["services"]["jobQueue"] == "down"
    assert body["dependencies"]["jobQueue"]["worker"]["status"] == "down"


def test_health_job_queue_is_down_when_the_broker_is_unreachable(client, upstream, beats_alive):
    with mock.patch.object(health, "_queue_stats", side_effect=OSError("no broker")):
        body = client.get("/health").json()
    assert body["services"]["jobQueue"] == "down"
    assert body["dependencies"]["jobQueue"]["error"] == "OSError"


def test_health_counts_messages_waiting_in_the_broker(
    client, upstream, beats_alive, tmp_path, settings
):
    # A private queue name (and folder), so no real worker ever sees these messages.
    queue = f"ngw-test-{uuid.uuid4().hex[:8]}"
    with mock.patch.object(health, "_queue_names", return_value=[queue]):
        if settings.REDIS_URL:
            conn = health._redis_client()
            conn.rpush(queue, "a", "b")
            conn.rpush(f"{queue}\x06\x163", "c")
            try:
                body = client.get("/health").json()
            finally:
                conn.delete(queue, f"{queue}\x06\x163")
        else:
            for index in range(3):
                (tmp_path / f"{index}_abc.{queue}.msg").write_text("{}")
            (tmp_path / "9_abc.other.msg").write_text("{}")
            settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
                **settings.CELERY_BROKER_TRANSPORT_OPTIONS,
                "data_folder_in": str(tmp_path),
            }
            body = client.get("/health").json()
    assert body["dependencies"]["jobQueue"]["queueSize"] == 3
    assert body["services"]["jobQueue"] == "up"


def test_health_treats_missing_sweep_heartbeats_as_unknown(client, upstream):
    for key in WORKER_KEYS:
        counters.set_value(f"heartbeat:{key}", str(time.time()))
    body = client.get("/health").json()
    assert body["status"] == "healthy"
    assert body["services"]["migrationService"] == "unknown"
    assert body["dependencies"]["scheduler"]["sweeps"]["autoStop"]["status"] == "unknown"


def test_health_is_degraded_when_a_sweep_stopped_running(client, upstream, beats_alive):
    counters.set_value("heartbeat:auto-stop", str(time.time() - 24 * 3600))
    body = client.get("/health").json()
    assert body["status"] == "degraded"
    assert body["dependencies"]["scheduler"]["sweeps"]["autoStop"]["status"] == "down"


def test_health_reports_a_stale_migration_heartbeat_as_down(client, upstream, beats_alive):
    counters.set_value("heartbeat:migration", str(time.time() - 3600))
    body = client.get("/health").json()
    assert body["services"]["migrationService"] == "down"
    assert body["status"] == "degraded"


def test_health_reports_disabled_migration_as_disabled(client, upstream, beats_alive, settings):
    settings.MIGRATION_ENABLED = False
    counters.set_value("heartbeat:migration", str(time.time() - 3600))
    body = client.get("/health").json()
    assert body["services"]["migrationService"] == "disabled"
    assert body["status"] == "healthy"


def test_health_reports_the_cache_down_when_its_round_trip_fails(client, upstream, beats_alive):
    with mock.patch.object(caching, "probe", return_value=(False, "file")):
        response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["services"]["cache"] == "down"
    assert response.json()["status"] == "degraded"


def test_health_counts_instance_states_from_the_database(client, upstream, beats_alive):
    from instances.models import Instance

    Instance.objects.create(name="h1", product_name="RTX 4090", template_id="t")
    Instance.objects.create(name="h2", product_name="RTX 4090", template_id="t")
    cache = client.get("/health").json()["dependencies"]["cache"]
    assert cache["totalStates"] == 2
    assert cache["instanceStatesCache"]["size"] == 2


def test_health_needs_no_api_key_and_reveals_no_secrets(client, upstream, beats_alive, settings):
    settings.GATEWAY_API_KEYS = ["client-key-abcdefghijklmnop"]
    response = client.get("/health")
    assert response.status_code == 200
    text = response.content.decode()
    for secret in ("client-key-abcdefghijklmnop", settings.NOVITA_API_KEY, "novita.test"):
        assert secret not in text
    if settings.REDIS_URL:
        assert settings.REDIS_URL not in text
    assert "redis://" not in text and "postgres://" not in text


def test_health_answers_head_and_refuses_post(client, upstream):
    assert client.head("/health").status_code in (200, 503)
    assert client.post("/health").status_code == 405


def test_health_reports_each_queue_with_its_worker(client, upstream, beats_alive):
    queues = client.get("/health").json()["dependencies"]["jobQueue"]["queues"]
    assert {"cost_control", "probes", "webhooks"} <= set(queues)
    for name in ("cost_control", "probes", "webhooks"):
        assert queues[name]["status"] == "up"
        assert queues[name]["worker"]["status"] == "up"
        assert set(queues[name]) >= {"depth", "oldestTaskAgeSeconds"}


def test_a_silent_outbound_worker_degrades_but_cost_control_stays_up(client, upstream, beats_alive):
    counters.set_value("heartbeat:worker:webhooks", str(time.time() - 3600))
    body = client.get("/health").json()
    job_queue = body["dependencies"]["jobQueue"]
    assert job_queue["status"] == "degraded"
    assert job_queue["queues"]["webhooks"]["status"] == "down"
    assert job_queue["queues"]["cost_control"]["status"] == "up"
    assert body["status"] == "degraded"


def test_health_reports_the_age_of_the_oldest_waiting_task(
    client, upstream, beats_alive, tmp_path, settings
):
    queue = f"ngw-test-{uuid.uuid4().hex[:8]}"
    settings.WORKER_QUEUES = (queue,)
    counters.set_value(f"heartbeat:worker:{queue}", str(time.time()))
    with mock.patch.object(health, "_queue_names", return_value=[queue]):
        if settings.REDIS_URL:
            conn = health._redis_client()
            old, new = time.time() - 42, time.time() - 1
            # kombu pushes on the left: the right end is the oldest message.
            conn.lpush(queue, json.dumps({"headers": {"enqueued_at": old}}))
            conn.lpush(queue, json.dumps({"headers": {"enqueued_at": new}}))
            try:
                body = client.get("/health").json()
            finally:
                conn.delete(queue)
        else:
            now_ms = int(time.monotonic() * 1000)
            (tmp_path / f"{now_ms - 42000}_a.{queue}.msg").write_text("{}")
            (tmp_path / f"{now_ms - 1000}_b.{queue}.msg").write_text("{}")
            settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
                **settings.CELERY_BROKER_TRANSPORT_OPTIONS,
                "data_folder_in": str(tmp_path),
            }
            body = client.get("/health").json()
    entry = body["dependencies"]["jobQueue"]["queues"][queue]
    assert entry["depth"] == 2
    assert 41 <= entry["oldestTaskAgeSeconds"] < 50


def test_published_tasks_carry_their_enqueue_time():
    from ops.signals import _stamp_enqueue_time

    headers = {}
    before = time.time()
    _stamp_enqueue_time(headers=headers)
    assert before <= headers["enqueued_at"] <= time.time()
