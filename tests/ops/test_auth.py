"""Client API keys: every path through authentication, the admin and the command."""

import hmac
import logging
import re
from io import StringIO
from unittest import mock

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import RequestFactory
from django.urls import URLResolver, get_resolver
from django.utils import timezone

from ops import auth
from ops.models import ApiKey, hash_key

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.security_urls")]

PING = "/api/t/ping"
ENV_KEY = "env-key-0123456789abcdef"


@pytest.fixture(autouse=True)
def _no_keys(settings):
    # A private cache: the shared one under var/ is also used by other test runs on this machine.
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "t"}
    }
    settings.GATEWAY_API_KEYS = []
    auth.forget_cached_keys()
    yield
    auth.forget_cached_keys()


@pytest.fixture
def env_key(settings):
    settings.GATEWAY_API_KEYS = ["another-key-abcdefghijkl", ENV_KEY]
    return ENV_KEY


def assert_unauthorized(response):
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "UNAUTHORIZED"
    assert error["message"] == "A valid API key is required"
    assert error["requestId"] == response["X-Request-ID"]
    return error


def test_open_when_no_key_is_configured(client, caplog):
    with caplog.at_level(logging.WARNING, logger="novita_gateway.auth"):
        auth._warned_open = False
        assert client.get(PING).status_code == 200
        assert client.get(PING, HTTP_X_API_KEY="anything").status_code == 200
    assert "API is OPEN" in caplog.text


@pytest.fixture
def production_without_keys(settings):
    settings.DEBUG = False
    settings.ALLOW_OPEN_API = False


def test_without_keys_a_production_api_fails_closed_saying_how_to_configure(
    client, production_without_keys
):
    for method in ("get", "post"):
        response = getattr(client, method)(PING, content_type="application/json")
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["code"] == "UNAUTHORIZED"
        assert "GATEWAY_API_KEYS" in error["message"]
        assert "issue_api_key" in error["message"]
        assert "ALLOW_OPEN_API" in error["message"]
        assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    # Any key is refused too: none is valid.
    assert client.get(PING, HTTP_X_API_KEY="anything").status_code == 401


def test_without_keys_prometheus_metrics_fail_closed(client, production_without_keys):
    response = client.get("/metrics")
    assert response.status_code == 401
    assert "GATEWAY_API_KEYS" in response.json()["error"]["message"]


def test_every_api_route_fails_closed_without_keys(client, production_without_keys):
    paths = [
        _sample_path(route)
        for route in _routes(get_resolver().url_patterns)
        if route.startswith("api/") and not route.startswith(("api/schema", "api/docs"))
    ]
    answers = {path: client.get(path).status_code for path in paths}
    assert {path: code for path, code in answers.items() if code != 401} == {}


def test_allow_open_api_opts_in_to_serving_without_keys(client, production_without_keys, settings):
    settings.ALLOW_OPEN_API = True
    assert client.get(PING).status_code == 200
    assert client.get("/metrics").status_code == 200


def test_debug_serves_without_keys(client, production_without_keys, settings):
    settings.DEBUG = True
    assert client.get(PING).status_code == 200


def test_an_issued_key_opens_a_closed_api_to_its_holder(client, production_without_keys):
    _key, raw = ApiKey.issue("first")
    auth.forget_cached_keys()
    assert client.get(PING, HTTP_X_API_KEY=raw).status_code == 200
    assert_unauthorized(client.get(PING))


def test_health_and_docs_stay_open_when_the_api_is_closed(client, production_without_keys):
    assert client.get("/health").status_code in (200, 503)
    assert client.get("/api/docs/").status_code == 200


def test_empty_env_entries_do_not_count_as_keys(client, settings):
    settings.GATEWAY_API_KEYS = ["", " "]
    assert client.get(PING).status_code == 200


def test_missing_key_is_401_in_the_envelope(client, env_key):
    assert_unauthorized(client.get(PING))
    assert_unauthorized(client.post(PING, {}, content_type="application/json"))


def test_wrong_key_answers_exactly_like_a_missing_key(client, env_key):
    missing = assert_unauthorized(client.get(PING))
    wrong = assert_unauthorized(client.get(PING, HTTP_AUTHORIZATION="Bearer nope"))
    for error in (missing, wrong):
        error.pop("timestamp"), error.pop("requestId")
    assert missing == wrong


@pytest.mark.parametrize(
    "headers",
    [
        {"HTTP_AUTHORIZATION": f"Bearer {ENV_KEY}"},
        {"HTTP_AUTHORIZATION": f"bearer   {ENV_KEY}  "},
        {"HTTP_X_API_KEY": ENV_KEY},
    ],
    ids=["bearer", "bearer-lowercase-padded", "x-api-key"],
)
def test_env_key_in_either_header(client, env_key, headers):
    response = client.get(PING, **headers)
    assert response.status_code == 200
    assert response.json() == {"pong": True, "client": "env:1"}


def test_other_authorization_schemes_are_not_keys(client, env_key):
    assert_unauthorized(client.get(PING, HTTP_AUTHORIZATION=f"Basic {ENV_KEY}"))
    assert_unauthorized(client.get(PING, HTTP_AUTHORIZATION=f"Token {ENV_KEY}"))


def test_non_ascii_key_is_rejected_cleanly(client, env_key):
    assert_unauthorized(client.get(PING, HTTP_X_API_KEY="ключ-ñ"))


def test_admin_key_in_either_header_and_last_used_is_recorded(client):
    key, raw = ApiKey.issue("ci")
    assert key.last_used_at is None
    assert client.get(PING, HTTP_AUTHORIZATION=f"Bearer {raw}").json()["client"] == f"key:{key.pk}"
    assert client.get(PING, HTTP_X_API_KEY=raw).status_code == 200
    key.refresh_from_db()
    assert key.last_used_at is not None
    assert_unauthorized(client.get(PING))


class Clock:
    """Stands in for time.monotonic in ops.auth, moved by hand."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now


@pytest.fixture
def clock():
    fake = Clock()
    with mock.patch.object(auth, "time", fake):
        yield fake


def test_last_used_is_written_at_most_once_a_minute(client, clock, django_assert_num_queries):
    key, raw = ApiKey.issue("ci")
    client.get(PING, HTTP_X_API_KEY=raw)
    clock.now += auth.KEY_LOOKUP_SECONDS + 0.01
    with django_assert_num_queries(1):  # the lookup, no UPDATE
        assert client.get(PING, HTTP_X_API_KEY=raw).status_code == 200


def test_a_client_polling_fast_costs_no_query_per_poll(client, clock, django_assert_num_queries):
    _key, raw = ApiKey.issue("poller")
    client.get(PING, HTTP_X_API_KEY=raw)
    with django_assert_num_queries(0):
        for _ in range(5):
            clock.now += auth.KEY_LOOKUP_SECONDS / 10
            assert client.get(PING, HTTP_X_API_KEY=raw).status_code == 200


def test_a_key_revoked_by_another_process_is_refused_within_a_second(client, clock):
    key, raw = ApiKey.issue("leaked")
    assert client.get(PING, HTTP_X_API_KEY=raw).status_code == 200
    # Another process revokes it: nothing in this process hears about it.
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    clock.now += 1.0
    assert_unauthorized(client.get(PING, HTTP_X_API_KEY=raw))


def test_a_key_revoked_in_this_process_is_refused_at_once(client, clock):
    key, raw = ApiKey.issue("leaked")
    assert client.get(PING, HTTP_X_API_KEY=raw).status_code == 200
    ApiKey.revoke_all(ApiKey.objects.filter(pk=key.pk))
    assert_unauthorized(client.get(PING, HTTP_X_API_KEY=raw))


def test_a_new_key_is_accepted_at_once_after_a_refused_try(client, clock):
    _first, _raw = ApiKey.issue("first")
    unknown = "ngw_not-issued-yet"
    assert_unauthorized(client.get(PING, HTTP_X_API_KEY=unknown))
    key = ApiKey(name="late")
    key.prefix, key.key_hash = unknown[:12], hash_key(unknown)
    key.save()
    assert client.get(PING, HTTP_X_API_KEY=unknown).status_code == 200


def test_env_key_needs_no_database_query(client, env_key, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert client.get(PING, HTTP_X_API_KEY=env_key).status_code == 200


def test_revoked_admin_key_is_refused(client):
    key, raw = ApiKey.issue("leaked")
    _other, other_raw = ApiKey.issue("still-good")
    ApiKey.revoke_all(ApiKey.objects.filter(pk=key.pk))
    assert_unauthorized(client.get(PING, HTTP_X_API_KEY=raw))
    assert client.get(PING, HTTP_X_API_KEY=other_raw).status_code == 200


def test_revoking_the_last_key_keeps_the_api_locked(client):
    key, raw = ApiKey.issue("only")
    ApiKey.revoke_all(ApiKey.objects.all())
    assert_unauthorized(client.get(PING))
    assert_unauthorized(client.get(PING, HTTP_X_API_KEY=raw))


def test_first_issued_key_locks_the_api_at_once(client):
    assert client.get(PING).status_code == 200  # caches "no keys"
    _key, raw = ApiKey.issue("first")
    assert_unauthorized(client.get(PING))
    assert client.get(PING, HTTP_X_API_KEY=raw).status_code == 200
    ApiKey.objects.all().delete()
    assert client.get(PING).status_code == 200


def test_keys_are_compared_in_constant_time(client, env_key):
    _key, raw = ApiKey.issue("ci")
    with mock.patch.object(auth.hmac, "compare_digest", wraps=hmac.compare_digest) as spy:
        assert client.get(PING, HTTP_X_API_KEY=env_key).status_code == 200
        # Every env key is compared, not just up to the first match.
        assert spy.call_count == 2
        spy.reset_mock()
        assert client.get(PING, HTTP_X_API_KEY=raw).status_code == 200
        assert spy.call_count == 3  # two env keys, then the stored hash
        spy.reset_mock()
        client.get(PING, HTTP_X_API_KEY="wrong")
        assert spy.called


def test_only_the_hash_is_stored():
    key, raw = ApiKey.issue("ci")
    stored = ApiKey.objects.values().get(pk=key.pk)
    assert raw not in str(stored)
    assert stored["key_hash"] == hash_key(raw)
    assert raw.startswith(stored["prefix"]) and len(stored["prefix"]) == 12
    assert len(raw) >= 40


def test_health_stays_open_when_keys_are_configured(client, env_key):
    response = client.get("/health")
    # Healthy or not is another test's business; it must answer without a key.
    assert response.status_code in (200, 503)
    assert "status" in response.json()


def _routes(patterns, prefix=""):
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, route)
        else:
            yield route


def _sample_path(route: str) -> str:
    return "/" + re.sub(
        r"<(?:(\w+):)?\w+>", lambda m: "1" if m.group(1) == "int" else "inst_x", route
    )


def test_every_api_route_requires_the_key(client, env_key):
    # A guard over the real URL map: a new /api/ view that forgets the key shows up here.
    paths = [
        _sample_path(route)
        for route in _routes(get_resolver().url_patterns)
        if route.startswith("api/") and not route.startswith(("api/schema", "api/docs"))
    ]
    assert PING in paths
    for method in ("get", "post"):
        answers = {path: getattr(client, method)(path).status_code for path in paths}
        assert {path: code for path, code in answers.items() if code != 401} == {}, method


def test_api_docs_and_schema_stay_open(client, env_key):
    assert client.get("/api/schema/").status_code == 200
    assert client.get("/api/docs/").status_code == 200


def test_prometheus_metrics_require_a_key_once_one_exists(client, env_key):
    denied = client.get("/metrics")
    assert_unauthorized(denied)
    assert denied["WWW-Authenticate"] == 'Bearer realm="api"'
    assert_unauthorized(client.get("/metrics", HTTP_X_API_KEY="wrong"))
    ok = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {env_key}")
    assert ok.status_code == 200
    assert b"ngw_http_requests" in ok.content


def test_prometheus_metrics_are_open_without_keys(client):
    assert client.get("/metrics").status_code == 200


def test_presented_key_never_reaches_the_logs(client, env_key, caplog):
    with caplog.at_level(logging.DEBUG):
        client.get(PING, HTTP_X_API_KEY=env_key)
        client.get(PING, HTTP_AUTHORIZATION="Bearer wrong-but-secret-value")
    assert env_key not in caplog.text
    assert "wrong-but-secret-value" not in caplog.text


# --- issuing keys -------------------------------------------------------------------------


def test_issue_api_key_command_prints_the_key_once(client):
    out, err = StringIO(), StringIO()
    call_command("issue_api_key", "ci-runner", stdout=out, stderr=err)
    raw = out.getvalue().strip()
    assert raw.startswith("ngw_") and "\n" not in raw
    assert raw not in err.getvalue() and "cannot be shown again" in err.getvalue()
    key = ApiKey.objects.get(name="ci-runner")
    assert key.key_hash == hash_key(raw)
    assert client.get(PING, HTTP_X_API_KEY=raw).status_code == 200


def test_issue_api_key_command_rejects_an_empty_name():
    with pytest.raises(CommandError):
        call_command("issue_api_key", "  ", stdout=StringIO(), stderr=StringIO())


@pytest.fixture
def operator(client):
    user = get_user_model().objects.create_superuser("op", "op@example.com", "pw-unused-123!")
    client.force_login(user)
    return client


def test_admin_creates_a_key_and_shows_it_once(operator):
    response = operator.post("/admin/ops/apikey/add/", {"name": "team-a"}, follow=True)
    assert response.status_code == 200
    key = ApiKey.objects.get(name="team-a")
    shown = [str(m) for m in response.context["messages"] if "copy it now" in str(m)]
    assert len(shown) == 1
    raw = next(word for word in shown[0].split() if word.startswith("ngw_"))
    assert hash_key(raw) == key.key_hash
    # Never again: not on the change page, not in the list; the hash is never displayed.
    for url in (f"/admin/ops/apikey/{key.pk}/change/", "/admin/ops/apikey/"):
        page = operator.get(url).content.decode()
        assert raw not in page
        assert key.key_hash not in page
        assert key.prefix in page


def test_an_issued_key_never_travels_in_a_cookie(operator):
    response = operator.post("/admin/ops/apikey/add/", {"name": "team-b"})
    assert response.status_code == 302
    # The key waits server-side (in the session) for the next page, not in the messages cookie.
    assert "messages" not in response.cookies
    assert all("ngw_" not in morsel.value for morsel in response.cookies.values())
    page = operator.get(response["Location"])
    assert "messages" not in page.cookies
    shown = [str(m) for m in page.context["messages"] if "copy it now" in str(m)]
    assert len(shown) == 1 and "ngw_" in shown[0]
    assert not [m for m in operator.get("/admin/").context["messages"] if "ngw_" in str(m)]


def test_admin_add_form_asks_only_for_a_name(operator):
    form = operator.get("/admin/ops/apikey/add/").context["adminform"].form
    assert list(form.fields) == ["name"]


def test_admin_list_shows_name_prefix_dates_and_state(operator):
    ApiKey.issue("listed")
    page = operator.get("/admin/ops/apikey/").content.decode()
    for column in ("column-name", "column-prefix", "column-created_at", "column-last_used_at"):
        assert column in page
    assert "column-active" in page


def test_admin_revoke_action(operator, client):
    key, raw = ApiKey.issue("to-revoke")
    response = operator.post(
        "/admin/ops/apikey/",
        {"action": "revoke", "_selected_action": [key.pk]},
        follow=True,
    )
    assert "Revoked 1 API key(s)." in response.content.decode()
    key.refresh_from_db()
    assert key.revoked_at is not None
    client.logout()
    assert_unauthorized(client.get(PING, HTTP_X_API_KEY=raw))


def test_admin_cannot_unrevoke_through_the_change_form(operator):
    key, _raw = ApiKey.issue("revoked")
    ApiKey.revoke_all(ApiKey.objects.filter(pk=key.pk))
    operator.post(f"/admin/ops/apikey/{key.pk}/change/", {"name": "renamed", "revoked_at": ""})
    key.refresh_from_db()
    assert key.name == "renamed"
    assert key.revoked_at is not None


# --- client IP for the admin lock-out --------------------------------------------------------


def test_client_ip_ignores_forwarded_for_from_untrusted_peers(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    request = RequestFactory().get(
        "/", REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR="198.51.100.1"
    )
    assert auth.client_ip(request) == "203.0.113.9"


def test_client_ip_from_a_trusted_proxy_is_the_nearest_untrusted_hop(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8", "192.0.2.7"]
    request = RequestFactory().get(
        "/",
        REMOTE_ADDR="10.1.2.3",
        HTTP_X_FORWARDED_FOR="1.1.1.1, 198.51.100.23, 192.0.2.7",
    )
    assert auth.client_ip(request) == "198.51.100.23"


def test_client_ip_without_trusted_proxies_is_the_peer(settings):
    settings.TRUSTED_PROXIES = []
    request = RequestFactory().get("/", REMOTE_ADDR="10.1.2.3", HTTP_X_FORWARDED_FOR="1.1.1.1")
    assert auth.client_ip(request) == "10.1.2.3"


@pytest.mark.django_db
def test_a_key_added_to_or_removed_from_the_environment_takes_effect_at_once(api, settings):
    settings.GATEWAY_API_KEYS = ["first-key-0123456789abcdef"]
    api.credentials(HTTP_AUTHORIZATION="Bearer second-key-0123456789abcdef")
    assert api.get("/api/instances").status_code == 401
    settings.GATEWAY_API_KEYS.append("second-key-0123456789abcdef")
    assert api.get("/api/instances").status_code == 200
    settings.GATEWAY_API_KEYS = ["first-key-0123456789abcdef"]
    assert api.get("/api/instances").status_code == 401
