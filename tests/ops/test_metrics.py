"""Metrics: JSON endpoints and Prometheus text, moved by real requests, tasks and upstream calls,
aggregated across processes."""

import json
import os
import subprocess
import sys
import textwrap
import time
from urllib.parse import urlsplit, urlunsplit

import pytest
import responses
from django.conf import settings
from django.core.cache import caches
from prometheus_client.parser import text_string_to_metric_families

from instances.novita.client import get_client, reset_client
from instances.novita.errors import NovitaTransientError
from novita_gateway.celery import app as celery_app
from ops import caching, counters, metrics
from ops.tasks import worker_heartbeat


@celery_app.task(name="tests.ops.failing_task")
def failing_task():
    raise RuntimeError("boom")


def _private_redis_url(url: str) -> str:
    parts = urlsplit(url)
    db = parts.path.strip("/") or "0"
    return urlunsplit(parts._replace(path="/14" if db == "15" else "/15"))


@pytest.fixture
def private_state(settings, tmp_path_factory):
    """Shared counters and named caches in stores of the test's own (a spare Redis database,
    else a fresh VAR_DIR), so other test runs on this machine, which share var/ and Redis
    database 0 and wipe counters and caches per test, cannot move these figures. Subprocesses
    started with these settings share the same stores."""
    saved = dict(counters._state)
    private_var = tmp_path_factory.mktemp("var")
    caches_config = {}
    if settings.REDIS_URL:
        settings.REDIS_URL = _private_redis_url(settings.REDIS_URL)
    else:
        settings.VAR_DIR = private_var
    for alias, config in settings.CACHES.items():
        config = dict(config)
        if "redis" in config["BACKEND"]:
            config["LOCATION"] = settings.REDIS_URL
        elif "filebased" in config["BACKEND"]:
            config["LOCATION"] = str(private_var / "cache" / alias)
        caches_config[alias] = config
    settings.CACHES = caches_config
    counters._state.update(redis=None, sqlite=None, redis_down_until=0.0)
    counters.reset_all()
    for alias in settings.CACHES:
        caches[alias].clear()
    metrics.forget_buffered()
    reset_client()
    if settings.REDIS_URL:
        get_client().reset_breaker()
    yield
    if counters._state["sqlite"] is not None and counters._state["sqlite"] is not saved["sqlite"]:
        counters._state["sqlite"].close()
    counters._state.update(saved)
    reset_client()


pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("private_state")]


def run_in_another_process(code: str) -> str:
    """Run Python with Django set up in a separate process sharing VAR_DIR and REDIS_URL."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "novita_gateway.settings",
        "DJANGO_SECRET_KEY": "subprocess-test-key-0123456789",
        "VAR_DIR": str(settings.VAR_DIR),
        "REDIS_URL": settings.REDIS_URL,
        "LOG_LEVEL": "ERROR",
    }
    script = "import django\ndjango.setup()\n" + textwrap.dedent(code)
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _metrics(api) -> dict:
    response = api.get("/api/metrics")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success"
    return body["data"]


def _prometheus(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(response.content.decode())}


def _sample(family, **labels) -> float:
    for sample in family.samples:
        if all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    raise AssertionError(f"no sample {labels} in {family.name}")


def test_request_counts_move_with_real_requests(api):
    api.get("/health")
    api.get("/api/cache/stats")
    api.get("/api/does-not-exist")
    data = _metrics(api)
    assert data["requests"]["total"]["count"] == 3
    assert data["requests"]["byStatus"]["4xx"] == 1
    assert data["requests"]["byStatus"]["2xx"] + data["requests"]["byStatus"]["5xx"] == 2
    assert data["requests"]["total"]["rate"] > 0
    # The metrics request itself is counted once it has answered.
    assert _metrics(api)["requests"]["total"]["count"] == 4


def test_metrics_have_the_contract_shape(api):
    data = _metrics(api)
    assert set(data) == {"requests", "jobs", "system", "cache"}
    assert set(data["requests"]["total"]) == {"count", "rate"}
    assert set(data["requests"]["byStatus"]) >= {"2xx", "4xx", "5xx"}
    assert set(data["jobs"]["total"]) == {"processed", "rate"}
    assert isinstance(data["jobs"]["byType"], dict)
    assert set(data["system"]["memory"]) == {"heapUsed", "heapTotal", "external", "rss"}
    assert data["system"]["memory"]["rss"] > 0
    assert set(data["system"]["cpu"]) == {"usage", "loadAverage"}
    assert isinstance(data["system"]["uptime"], int)
    assert set(data["cache"]) == {"hitRatio", "totalSize"}


def test_summary_has_the_contract_shape_and_error_rate_in_percent(api):
    api.get("/api/cache/stats")
    api.get("/api/nope")
    response = api.get("/api/metrics/summary")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success"
    assert body["timestamp"].endswith("Z")
    data = body["data"]
    assert set(data) == {"performance", "jobs", "system", "cache"}
    assert set(data["performance"]) == {
        "requestsPerMinute",
        "averageResponseTimeMs",
        "errorRatePercent",
    }
    assert data["performance"]["errorRatePercent"] == 50.0
    assert data["performance"]["requestsPerMinute"] > 0
    assert set(data["jobs"]) == {"processingRatePerMinute"}
    assert set(data["system"]) == {"memoryUsageMB", "cpuUsagePercent", "uptimeSeconds"}
    assert set(data["cache"]) == {"hitRatePercent", "totalSize"}


def test_average_response_time_and_error_rate_come_from_recorded_requests():
    metrics.record_request(None, 200, 100.0)
    metrics.record_request(None, 503, 300.0)
    window = metrics.window(metrics.totals())
    assert window["averageResponseTimeMs"] == 200.0
    assert window["errorRate"] == 0.5


def test_rates_count_the_last_minutes_from_snapshots():
    now = time.time()
    snapshots = [
        {"t": now - 900, "requests": 0, "duration": 0, "errors": 0, "jobs": 0},
        {"t": now - 120, "requests": 10, "duration": 1000, "errors": 1, "jobs": 4},
        {"t": now - 60, "requests": 40, "duration": 4000, "errors": 4, "jobs": 7},
    ]
    counters.set_value("metrics:snapshots", json.dumps(snapshots))
    totals = {
        "requests:total": 70,
        "requests:duration_ms_total": 7000,
        "requests:4xx": 5,
        "requests:5xx": 2,
        "jobs:total": 10,
    }
    window = metrics.window(totals, now=now)
    # Since the oldest snapshot of the last five minutes: 60 requests and 6 jobs in 2 minutes.
    assert window == {
        "requestsPerMinute": 30.0,
        "averageResponseTimeMs": 100.0,
        "errorRate": 0.1,
        "jobsPerMinute": 3.0,
    }


def test_a_snapshot_is_taken_at_most_once_a_minute():
    metrics.record_request(None, 200, 1.0)
    # As the flusher thread does: snapshot, then write what this process buffered.
    metrics.maybe_snapshot()
    metrics.flush()
    metrics._local["snapshot_checked"] = -1e9
    metrics.maybe_snapshot()
    snapshots = json.loads(counters.get_value("metrics:snapshots"))
    assert len(snapshots) == 1
    assert snapshots[0]["requests"] == 0
    assert metrics.totals()["requests:total"] == 1


def test_request_metrics_are_buffered_and_written_in_one_call(monkeypatch):
    writes = []
    monkeypatch.setattr(counters, "incr_many", lambda amounts: writes.append(amounts))
    for _ in range(5):
        metrics.record_request(None, 200, 3.0)
    metrics.observe_upstream("get_instance", 0.2, "ok")
    assert writes == []
    metrics.flush()
    assert len(writes) == 1
    assert writes[0]["requests:total"] == 5
    assert writes[0]["upstream:get_instance:count"] == 1


def test_jobs_are_counted_by_type_through_celery_signals(api):
    worker_heartbeat.delay()
    worker_heartbeat.delay()
    with pytest.raises(RuntimeError):
        failing_task.apply()
    data = _metrics(api)
    assert data["jobs"]["total"]["processed"] == 3
    assert data["jobs"]["byType"] == {"worker_heartbeat": 2, "failing_task": 1}
    totals = metrics.totals()
    assert totals["jobs:failed"] == 1
    assert totals["jobs:succeeded"] == 2
    assert totals["jobs:started"] == 3


def test_upstream_calls_are_observed_by_operation_and_outcome(client):
    upstream = get_client()
    with responses.RequestsMock() as rsps:
        rsps.get(f"{settings.NOVITA_API_BASE_URL}/v1/clusters", json={"data": []})
        rsps.get(f"{settings.NOVITA_API_BASE_URL}/v1/products", status=500, json={})
        upstream.list_clusters()
        with pytest.raises(NovitaTransientError):
            upstream.list_products()
    families = _prometheus(client)
    calls = families["ngw_upstream_calls"]
    assert _sample(calls, operation="list_clusters", outcome="ok") == 1
    assert _sample(calls, operation="list_products", outcome="transient") == 1
    assert _sample(families["ngw_upstream_errors"], operation="list_products") == 1
    assert _sample(families["ngw_upstream_errors"], operation="list_clusters") == 0
    latency = families["ngw_upstream_call_duration_seconds"]
    assert latency.type == "histogram"
    assert _sample(latency, operation="list_clusters", le="+Inf") == 1


def test_the_shared_client_reports_every_call_to_metrics():
    assert get_client().on_call is metrics.observe_upstream


def test_prometheus_endpoint_parses_and_covers_the_gateway(client):
    from instances.models import Instance

    Instance.objects.create(name="a", product_name="p", template_id="t", status="ready")
    Instance.objects.create(name="b", product_name="p", template_id="t", status="ready")
    Instance.objects.create(name="c", product_name="p", template_id="t", status="stopped")
    counters.incr("autostop:stopped", 2)
    counters.incr_many({"webhooks:delivered": 3, "webhooks:failed": 1})
    caching.named_cache("products").get("missing")
    client.get("/health")
    client.get("/api/nope")

    families = _prometheus(client)
    requests_total = families["ngw_http_requests"]
    assert requests_total.type == "counter"
    assert _sample(requests_total, status_class="4xx") == 1
    latency = families["ngw_http_request_duration_seconds"]
    assert latency.type == "histogram"
    assert _sample(latency, le="+Inf") == 2
    assert [s for s in latency.samples if s.name.endswith("_count")][0].value == 2
    assert _sample(families["ngw_instances"], status="ready") == 2
    assert _sample(families["ngw_instances"], status="stopped") == 1
    assert _sample(families["ngw_instances"], status="failed") == 0
    assert _sample(families["ngw_autostop_stopped"]) == 2
    assert _sample(families["ngw_webhook_deliveries"], outcome="delivered") == 3
    assert _sample(families["ngw_webhook_deliveries"], outcome="failed") == 1
    assert _sample(families["ngw_circuit_breaker_state"], state="closed") == 1
    assert _sample(families["ngw_cache_requests"], cache="products", result="miss") == 1
    assert "ngw_cache_entries" in families
    assert "ngw_process_resident_memory_bytes" in families


def test_prometheus_reports_an_open_breaker(client):
    upstream = get_client()
    with responses.RequestsMock() as rsps:
        rsps.get(f"{settings.NOVITA_API_BASE_URL}/v1/clusters", status=503, json={})
        for _ in range(settings.NOVITA_CIRCUIT_FAILURE_THRESHOLD):
            with pytest.raises(NovitaTransientError):
                upstream.list_clusters()
    families = _prometheus(client)
    assert _sample(families["ngw_circuit_breaker_state"], state="open") == 1
    assert _sample(families["ngw_circuit_breaker_state"], state="closed") == 0


def test_metrics_from_another_process_are_aggregated(api):
    run_in_another_process(
        """
        from ops import caching, metrics
        for _ in range(3):
            metrics.record_request(None, 200, 12.5)
        metrics.record_request(None, 503, 40.0)
        caching.named_cache("templates").get("absent")
        metrics.flush()
        """
    )
    data = _metrics(api)
    assert data["requests"]["total"]["count"] == 4
    assert data["requests"]["byStatus"]["5xx"] == 1
    assert caching.stats()["templates"]["misses"] == 1


def test_health_performance_moves_with_requests(client):
    for _ in range(3):
        client.get("/api/cache/stats")
    performance = client.get("/health").json()["performance"]
    assert performance["requestsPerMinute"] > 0
    assert performance["averageResponseTime"] > 0
    assert performance["errorRate"] == 0.0


def test_disabled_metrics_record_nothing(client, settings):
    settings.METRICS_ENABLED = False
    client.get("/api/cache/stats")
    caching.named_cache("products").get("x")
    metrics.observe_upstream("list_clusters", 0.1, "ok")
    assert metrics.totals() == {}


def test_metrics_endpoints_require_an_api_key_once_keys_exist(api, settings):
    settings.GATEWAY_API_KEYS = ["metrics-key-0123456789abcdef"]
    assert api.get("/api/metrics").status_code == 401
    assert api.get("/api/metrics/summary").status_code == 401
    assert api.get("/metrics").status_code == 401
    api.credentials(HTTP_AUTHORIZATION="Bearer metrics-key-0123456789abcdef")
    assert api.get("/api/metrics").status_code == 200
    assert api.get("/metrics").status_code == 200
