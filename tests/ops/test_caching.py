"""Named caches: counted hits and misses, sizes, clearing, and life without Redis."""

import pytest
from django.conf import settings
from django.core.cache import caches

from ops import caching, counters
from tests.ops.test_metrics import private_state  # noqa: F401 - fixture

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("private_state")]


@pytest.fixture(autouse=True)
def _fresh_redis_state():
    caching.note_redis_up()
    yield
    caching.note_redis_up()


def _stats(api):
    response = api.get("/api/cache/stats")
    assert response.status_code == 200
    return response.json()


def test_cache_stats_count_hits_misses_and_sets(api):
    cache = caching.named_cache("instances")
    cache.set("a", {"id": 1})
    assert cache.get("a") == {"id": 1}
    assert cache.get("a") == {"id": 1}
    assert cache.get("missing") is None
    stats = _stats(api)["cacheManager"]["stats"]["instances"]
    assert stats == {"size": 1, "hitRatio": 0.6667, "hits": 2, "misses": 1, "sets": 1}


def test_cache_stats_have_the_contract_shape(api):
    caching.named_cache("products").set("p", [1])
    caching.named_cache("products").get("p")
    caching.named_cache("templates").get("nope")
    body = _stats(api)
    assert set(body) == {"timestamp", "cacheManager", "services", "summary"}
    assert body["cacheManager"]["cacheNames"] == settings.CACHE_NAMES
    assert set(body["cacheManager"]["stats"]) == set(settings.CACHE_NAMES)
    for entry in body["cacheManager"]["stats"].values():
        assert set(entry) >= {"size", "hitRatio", "hits", "misses"}
    assert set(body["services"]["instance"]["instanceDetailsCache"]) == {"size", "hitRatio"}
    assert body["summary"] == {
        "totalCaches": len(settings.CACHE_NAMES),
        "totalEntries": 1,
        "totalHits": 1,
        "totalMisses": 1,
        "overallHitRatio": 0.5,
    }


def test_get_or_set_computes_only_on_a_miss():
    calls = []

    def fetch():
        calls.append(1)
        return ["cluster"]

    cache = caching.named_cache("clusters")
    assert cache.get_or_set("all", fetch, timeout=60) == ["cluster"]
    assert cache.get_or_set("all", fetch, timeout=60) == ["cluster"]
    assert calls == [1]
    stats = caching.stats()["clusters"]
    assert (stats["hits"], stats["misses"], stats["sets"]) == (1, 1, 1)


def test_delete_removes_one_entry():
    cache = caching.named_cache("templates")
    cache.set("x", 1)
    cache.set("y", 2)
    assert cache.delete("x") is True
    assert cache.get("x") is None
    assert cache.get("y") == 2


def test_size_counts_entries_of_that_cache_only():
    for index in range(3):
        caching.named_cache("products").set(f"p{index}", index)
    caching.named_cache("templates").set("t", 1)
    assert caching.named_cache("products").size() == 3
    assert caching.named_cache("templates").size() == 1


def test_unknown_cache_name_is_refused():
    with pytest.raises(ValueError):
        caching.named_cache("sessions")


def test_clear_by_name_empties_only_that_cache(api):
    caching.named_cache("instances").set("i", 1)
    caching.named_cache("products").set("p", 1)
    response = api.post("/api/cache/clear", {"cacheName": "instances"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["message"] == "Cache 'instances' cleared successfully"
    assert body["timestamp"].endswith("Z")
    assert caching.named_cache("instances").get("i") is None
    assert caching.named_cache("products").get("p") == 1


@pytest.mark.parametrize(
    "payload", [{}, None, {"cacheName": None}], ids=["empty", "no-body", "null"]
)
def test_clear_without_a_name_empties_every_cache(api, payload):
    for name in settings.CACHE_NAMES:
        caching.named_cache(name).set("k", name)
    if payload is None:
        response = api.post("/api/cache/clear")
    else:
        response = api.post("/api/cache/clear", payload, format="json")
    assert response.status_code == 200
    assert response.json()["message"] == "All caches cleared successfully"
    assert all(caching.named_cache(name).size() == 0 for name in settings.CACHE_NAMES)


@pytest.mark.parametrize("name", ["sessions", "", 7, ["instances"]])
def test_clear_with_an_unknown_name_is_400_listing_the_valid_names(api, name):
    caching.named_cache("instances").set("i", 1)
    response = api.post("/api/cache/clear", {"cacheName": name}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["requestId"] == response["X-Request-ID"]
    (detail,) = error["details"]
    assert detail["field"] == "cacheName"
    assert detail["validNames"] == settings.CACHE_NAMES
    for valid in settings.CACHE_NAMES:
        assert valid in detail["message"]
    assert caching.named_cache("instances").get("i") == 1


def test_clearing_caches_keeps_instances_in_the_database(api):
    from instances.models import Instance

    instance = Instance.objects.create(name="keep-me", product_name="RTX 4090", template_id="t")
    caching.named_cache("instances").set(instance.id, {"status": "ready"})
    assert api.post("/api/cache/clear", {}, format="json").status_code == 200
    assert Instance.objects.filter(pk=instance.pk, name="keep-me").exists()


@pytest.mark.skipif(not settings.REDIS_URL, reason="the FLUSHDB hazard exists only with Redis")
def test_clearing_a_redis_cache_never_flushes_the_rest_of_redis():
    from django_redis import get_redis_connection

    conn = get_redis_connection("instances")
    conn.rpush("ngw-test-sentinel-queue", "queued task")
    counters.set_value("clear-test", "kept")
    caching.named_cache("products").set("p", 1)
    try:
        caching.named_cache("instances").clear()
        # Django's own API goes through the same prefix-scoped client.
        caches["templates"].clear()
        assert conn.llen("ngw-test-sentinel-queue") == 1
        assert counters.get_value("clear-test") == "kept"
        assert caching.named_cache("products").get("p") == 1
    finally:
        conn.delete("ngw-test-sentinel-queue")


@pytest.fixture
def dead_redis_cache(settings):
    # The "instances" cache pointed at a loopback port where nothing listens.
    settings.CACHES = {
        **settings.CACHES,
        "instances": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "KEY_PREFIX": "ngw:instances",
            "OPTIONS": {
                "SOCKET_CONNECT_TIMEOUT": 0.5,
                "SOCKET_TIMEOUT": 0.5,
                "IGNORE_EXCEPTIONS": True,
                "CLIENT_CLASS": "ops.caching.PrefixScopedRedisClient",
            },
        },
    }
    yield
    caches["instances"].close()


def test_cache_falls_back_to_memory_when_redis_is_down(api, dead_redis_cache, settings):
    cache = caching.named_cache("instances")
    cache.set("k", {"v": 1})
    assert cache.get("k") == {"v": 1}
    assert cache.get_or_set("other", lambda: 5) == 5
    assert cache.size() == 2
    assert caching.redis_connected() is False
    assert caching.configuration()["redisConnected"] is False
    if settings.REDIS_URL:
        assert caching.configuration()["defaultBackend"] == "fallback"
    # Requests keep working, stats included.
    stats = _stats(api)["cacheManager"]["stats"]["instances"]
    assert (stats["hits"], stats["misses"], stats["size"]) == (1, 1, 2)
    cleared = api.post("/api/cache/clear", {"cacheName": "instances"}, format="json")
    assert cleared.status_code == 200
    assert cache.get("k") is None


def test_in_memory_copies_are_dropped_when_redis_comes_back(dead_redis_cache):
    cache = caching.named_cache("instances")
    cache.set("k", "stale")
    assert cache.get("k") == "stale"
    caching.note_redis_up()
    assert caching._fallbacks["instances"].get("k") is None


def test_cache_works_when_a_settings_override_drops_the_named_alias(settings):
    settings.CACHES = {"default": settings.CACHES["default"]}
    cache = caching.named_cache("health")
    cache.set("k", 1)
    assert cache.get("k") == 1


def test_cache_endpoints_require_an_api_key_once_keys_exist(api, settings):
    settings.GATEWAY_API_KEYS = ["cache-key-0123456789abcdef"]
    assert api.get("/api/cache/stats").status_code == 401
    assert api.post("/api/cache/clear", {}, format="json").status_code == 401
    api.credentials(HTTP_AUTHORIZATION="Bearer cache-key-0123456789abcdef")
    assert api.get("/api/cache/stats").status_code == 200


def test_file_cache_without_redis_reads_back_what_it_wrote(tmp_path):
    cache = caching.FileCache(str(tmp_path), {"TIMEOUT": 60})
    rows = {
        f"id-{i}": {"id": f"id-{i}", "name": f"box-{i}", "ports": [8888, 22]} for i in range(500)
    }

    cache.set("snapshot", rows, 5)

    assert cache.get("snapshot") == rows
    cache.set("gone", 1, -1)
    assert cache.get("gone") is None


REDIS = "django_redis.cache.RedisCache"


@pytest.mark.parametrize(
    ("config", "no_op"),
    [
        ({"BACKEND": "ops.caching.FileCache"}, True),
        ({"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}, True),
        ({"BACKEND": REDIS}, True),
        ({"BACKEND": REDIS, "OPTIONS": {"CLOSE_CONNECTION": True}}, False),
        # Memcached clients close their sockets: Django's close after each request matters.
        ({"BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache"}, False),
    ],
)
def test_closing_is_skipped_only_for_backends_whose_close_does_nothing(config, no_op):
    assert caching.closing_is_a_no_op(config) is no_op


def test_a_redis_cache_asked_to_close_its_connections_keeps_being_closed(settings):
    settings.DJANGO_REDIS_CLOSE_CONNECTION = True
    assert not caching.closing_is_a_no_op({"BACKEND": REDIS})


@pytest.mark.django_db
def test_a_request_does_not_close_every_cache_when_none_needs_it(api, monkeypatch):
    closed = []
    monkeypatch.setattr(caching.FileCache, "close", lambda self, **kw: closed.append(self))
    for name in settings.CACHES:
        caches[name].get("warm")  # opened in this thread: Django would close each after a request
    assert api.get("/api/instances").status_code == 200
    assert closed == []
