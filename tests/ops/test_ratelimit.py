"""Rate limiting on /api/: headers on every response, 429 in the envelope, one limit shared by
every process."""

import os
import subprocess
import sys
import textwrap
import time
from unittest import mock

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from ops import auth, counters, ratelimit
from ops.models import ApiKey
from tests.ops.test_metrics import private_state  # noqa: F401 - fixture

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("private_state")]

PATH = "/api/cache/stats"
KEY = "ratelimit-key-0123456789abcdef"


def fresh_window(margin: float = 8.0) -> None:
    """Wait for the next minute when this one is about to end, so a test's hits share a window."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.05)


@pytest.fixture
def limit(settings):
    def set_limit(value: int) -> int:
        settings.RATE_LIMIT_PER_MINUTE = value
        fresh_window()
        return value

    return set_limit


def test_every_api_response_carries_rate_limit_headers(client, limit):
    limit(5)
    before = time.time()
    for path, status in ((PATH, 200), ("/api/unknown-route", 404)):
        response = client.get(path)
        assert response.status_code == status
        assert response["X-RateLimit-Limit"] == "5"
    assert response["X-RateLimit-Remaining"] == "3"
    reset = int(response["X-RateLimit-Reset"])
    assert before < reset <= before + 61


def test_headers_are_on_error_responses_too(client, limit, settings):
    limit(5)
    bad = client.post("/api/cache/clear", {"cacheName": "nope"}, content_type="application/json")
    assert bad.status_code == 400
    assert bad["X-RateLimit-Remaining"] == "4"
    settings.GATEWAY_API_KEYS = [KEY]
    unauthorized = client.get(PATH)
    assert unauthorized.status_code == 401
    assert unauthorized["X-RateLimit-Limit"] == "5"


def test_requests_beyond_the_limit_get_429_in_the_envelope_with_retry_after(client, limit):
    limit(3)
    for remaining in ("2", "1", "0"):
        response = client.get(PATH)
        assert response.status_code == 200
        assert response["X-RateLimit-Remaining"] == remaining
    refused = client.get(PATH, HTTP_X_REQUEST_ID="rl-test-1")
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "RATE_LIMIT_EXCEEDED"
    assert error["requestId"] == "rl-test-1" == refused["X-Request-ID"]
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert refused["X-RateLimit-Remaining"] == "0"
    assert refused["X-RateLimit-Limit"] == "3"
    # Refusals are counted for monitoring.
    from ops import metrics

    assert metrics.totals()["ratelimit:rejected"] == 1


def test_health_metrics_and_docs_are_exempt(client, limit):
    limit(1)
    client.get(PATH)
    assert client.get(PATH).status_code == 429
    for path in ("/health", "/metrics", "/api/schema/", "/api/docs/"):
        response = client.get(path)
        assert response.status_code in (200, 503), path
        assert "X-RateLimit-Limit" not in response, path


def test_zero_turns_rate_limiting_off(client, limit):
    limit(0)
    for _ in range(5):
        response = client.get(PATH)
        assert response.status_code == 200
        assert "X-RateLimit-Limit" not in response


def test_clients_are_counted_separately_by_ip(client, limit):
    limit(1)
    assert client.get(PATH, REMOTE_ADDR="192.0.2.10").status_code == 200
    assert client.get(PATH, REMOTE_ADDR="192.0.2.10").status_code == 429
    assert client.get(PATH, REMOTE_ADDR="192.0.2.11").status_code == 200


def test_forwarded_for_is_believed_only_from_trusted_proxies(client, limit, settings):
    limit(1)
    settings.TRUSTED_PROXIES = ["10.0.0.1"]
    via_proxy = {"REMOTE_ADDR": "10.0.0.1"}
    assert client.get(PATH, HTTP_X_FORWARDED_FOR="203.0.113.5", **via_proxy).status_code == 200
    assert client.get(PATH, HTTP_X_FORWARDED_FOR="203.0.113.5", **via_proxy).status_code == 429
    assert client.get(PATH, HTTP_X_FORWARDED_FOR="203.0.113.6", **via_proxy).status_code == 200
    # From anyone else the header is ignored: changing it buys no fresh allowance.
    direct = {"REMOTE_ADDR": "198.51.100.7"}
    assert client.get(PATH, HTTP_X_FORWARDED_FOR="203.0.113.8", **direct).status_code == 200
    assert client.get(PATH, HTTP_X_FORWARDED_FOR="203.0.113.9", **direct).status_code == 429


def test_a_valid_api_key_has_its_own_allowance_and_invalid_keys_count_against_the_ip(
    client, limit, settings
):
    limit(2)
    settings.GATEWAY_API_KEYS = [KEY]
    assert client.get(PATH).status_code == 401
    assert client.get(PATH).status_code == 401
    # Made-up keys do not open fresh buckets.
    assert client.get(PATH, HTTP_AUTHORIZATION="Bearer made-up-1").status_code == 429
    assert client.get(PATH, HTTP_X_API_KEY="made-up-2").status_code == 429
    # The valid key is its own client, wherever it comes from.
    assert client.get(PATH, HTTP_AUTHORIZATION=f"Bearer {KEY}").status_code == 200
    other_ip = {"REMOTE_ADDR": "192.0.2.99", "HTTP_X_API_KEY": KEY}
    assert client.get(PATH, **other_ip).status_code == 200
    assert client.get(PATH, **other_ip).status_code == 429


def test_an_admin_issued_key_has_its_own_allowance(client, limit):
    limit(1)
    _key, raw = ApiKey.issue("rate-limited client")
    assert client.get(PATH).status_code == 401
    assert client.get(PATH).status_code == 429
    assert client.get(PATH, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    assert client.get(PATH, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 429


def test_rate_limit_and_authentication_look_the_key_up_once(client, limit):
    limit(100)
    _key, raw = ApiKey.issue("poller")
    auth.forget_cached_keys()
    with CaptureQueriesContext(connection) as queries:
        assert client.get(PATH, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    lookups = [
        q["sql"] for q in queries if q["sql"].startswith("SELECT") and "ops_apikey" in q["sql"]
    ]
    assert len(lookups) == 1


def test_buckets_are_named_by_a_hash_never_by_the_key_or_address():
    for identity in (f"key:{KEY}", "ip:203.0.113.5"):
        bucket = ratelimit.bucket_for(identity)
        assert identity.split(":", 1)[1] not in bucket
        assert bucket == ratelimit.bucket_for(identity)
    assert ratelimit.bucket_for("ip:203.0.113.5") != ratelimit.bucket_for("ip:203.0.113.6")


def test_a_broken_counter_store_lets_requests_through(client, limit):
    limit(1)
    with mock.patch.object(counters, "hit_window", side_effect=OSError("disk gone")):
        for _ in range(3):
            response = client.get(PATH)
            assert response.status_code == 200
            assert "X-RateLimit-Limit" not in response


def test_two_processes_share_the_limit(client, settings):
    settings.RATE_LIMIT_PER_MINUTE = 5
    # The other process takes a second or two to start: keep everything in one window.
    fresh_window(margin=20.0)
    assert client.get(PATH).status_code == 200
    assert client.get(PATH).status_code == 200
    bucket = ratelimit.bucket_for("ip:127.0.0.1")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "novita_gateway.settings",
        "DJANGO_SECRET_KEY": "subprocess-test-key-0123456789",
        "VAR_DIR": str(settings.VAR_DIR),
        "REDIS_URL": settings.REDIS_URL,
        "LOG_LEVEL": "ERROR",
    }
    script = textwrap.dedent(
        f"""
        import django
        django.setup()
        from ops import counters
        for _ in range(3):
            count, _end = counters.hit_window({bucket!r}, 60)
        print(count)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    # The other process saw this one's two hits...
    assert done.stdout.strip().splitlines()[-1] == "5"
    # ...and this one sees its three: the limit of 5 is used up.
    refused = client.get(PATH)
    assert refused.status_code == 429
    assert refused["X-RateLimit-Remaining"] == "0"


def counting_store_calls(monkeypatch) -> list[int]:
    """Spy on the shared store: the size of each claim made through it."""
    claims: list[int] = []
    real = counters.hit_window

    def spy(key, window_seconds, amount=1):
        claims.append(amount)
        return real(key, window_seconds, amount)

    monkeypatch.setattr(counters, "hit_window", spy)
    return claims


def test_a_busy_client_is_counted_in_blocks_not_one_shared_write_per_request(monkeypatch):
    fresh_window()
    claims = counting_store_calls(monkeypatch)
    numbering = ratelimit.Numbering()
    numbers = [numbering.next("busy", 10**6)[0] for _ in range(200)]
    assert numbers == list(range(1, 201))
    assert len(claims) <= 200 // ratelimit.Numbering.BLOCK_MAX + 1
    # Numbers claimed and not yet used count as used: another process numbers after them.
    assert ratelimit.Numbering().next("busy", 10**6)[0] > 200


def test_near_the_limit_every_request_is_counted_on_its_own(monkeypatch):
    fresh_window()
    claims = counting_store_calls(monkeypatch)
    numbering = ratelimit.Numbering()
    numbers = [numbering.next("small", 100)[0] for _ in range(110)]
    assert numbers == list(range(1, 111))
    assert claims == [1] * 110


def test_processes_sharing_a_client_never_let_it_past_its_limit():
    # Three web processes, each with its own numbering, serve one client's requests in turn
    # (the kernel spreads its connections): the shared count still decides.
    fresh_window()
    limit = 3000
    processes = [ratelimit.Numbering() for _ in range(3)]
    numbers = [processes[i % 3].next("shared", limit)[0] for i in range(limit + 500)]
    admitted = [n for n in numbers if n <= limit]
    assert len(set(numbers)) == len(numbers)  # no number handed out twice
    assert len(admitted) <= limit
    # Busy processes waste about one number each at the end, never more than a block.
    assert len(admitted) >= limit - 3 * ratelimit.Numbering.BLOCK_MAX
    assert len(admitted) >= limit - 3


def test_a_new_window_numbers_from_one_again(monkeypatch):
    fresh_window()
    numbering = ratelimit.Numbering()
    assert [numbering.next("windowed", 10**6)[0] for _ in range(3)] == [1, 2, 3]
    later = time.time() + 60
    monkeypatch.setattr(ratelimit.time, "time", lambda: later)
    monkeypatch.setattr(counters.time, "time", lambda: later)
    assert numbering.next("windowed", 10**6)[0] == 1


def test_a_busy_clients_remaining_allowance_still_counts_down_by_one(client, limit):
    limit(10**6)
    remaining = [int(client.get(PATH)["X-RateLimit-Remaining"]) for _ in range(40)]
    assert remaining == list(range(10**6 - 1, 10**6 - 41, -1))
