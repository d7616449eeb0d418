"""Production settings: safe defaults, `check --deploy` clean, admin logins throttled."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.core.management import call_command

BASE_DIR = Path(__file__).resolve().parents[2]

# What the README asks of a production deployment, nothing more.
PRODUCTION_ENV = {
    "ALLOWED_HOSTS": "gateway.example.com",
    "SECURE_SSL_REDIRECT": "true",
}
# Variables that would change the defaults under test if the developer's shell had them.
_SCRUBBED = (
    "DEBUG",
    "SECURE_COOKIES",
    "SECURE_HSTS_SECONDS",
    "SILENCED_SYSTEM_CHECKS",
    "BEHIND_TLS_PROXY",
    "AXES_ENABLED",
    "ADMIN_LOGIN_FAILURE_LIMIT",
    "DJANGO_SETTINGS_MODULE",
)


def run_django(tmp_path, args, **env_overrides):
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env.update(PRODUCTION_ENV)
    env.update(DJANGO_SECRET_KEY=secrets.token_urlsafe(50), VAR_DIR=str(tmp_path))
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_the_production_environment(tmp_path):
    result = run_django(tmp_path, ["manage.py", "check", "--deploy", "--fail-level", "WARNING"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_catches_an_insecure_override(tmp_path):
    # Proves the check above has teeth: turning secure cookies off must fail it.
    result = run_django(
        tmp_path,
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        SECURE_COOKIES="false",
    )
    assert result.returncode != 0
    assert "SESSION_COOKIE_SECURE" in result.stderr + result.stdout


def test_secret_key_is_required_when_not_debugging(tmp_path):
    result = run_django(tmp_path, ["manage.py", "check"], DJANGO_SECRET_KEY="")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


_DUMP = """
import json, django
django.setup()
from django.conf import settings as s
print(json.dumps({
    "DEBUG": s.DEBUG,
    "SESSION_COOKIE_SECURE": s.SESSION_COOKIE_SECURE,
    "CSRF_COOKIE_SECURE": s.CSRF_COOKIE_SECURE,
    "SESSION_COOKIE_HTTPONLY": s.SESSION_COOKIE_HTTPONLY,
    "SECURE_HSTS_SECONDS": s.SECURE_HSTS_SECONDS,
    "SECURE_CONTENT_TYPE_NOSNIFF": s.SECURE_CONTENT_TYPE_NOSNIFF,
    "X_FRAME_OPTIONS": s.X_FRAME_OPTIONS,
    "AXES_ENABLED": s.AXES_ENABLED,
    "AXES_FAILURE_LIMIT": s.AXES_FAILURE_LIMIT,
    "last_middleware": s.MIDDLEWARE[-1],
    "first_backend": s.AUTHENTICATION_BACKENDS[0],
}))
"""


def test_production_defaults(tmp_path):
    result = run_django(tmp_path, ["-c", _DUMP], DJANGO_SETTINGS_MODULE="novita_gateway.settings")
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert values == {
        "DEBUG": False,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SESSION_COOKIE_HTTPONLY": True,
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_CONTENT_TYPE_NOSNIFF": True,
        "X_FRAME_OPTIONS": "DENY",
        "AXES_ENABLED": True,
        "AXES_FAILURE_LIMIT": 5,
        "last_middleware": "axes.middleware.AxesMiddleware",
        "first_backend": "axes.backends.AxesStandaloneBackend",
    }


def test_check_deploy_in_process_with_production_like_settings(settings):
    settings.DEBUG = False
    settings.SECRET_KEY = secrets.token_urlsafe(50)
    settings.ALLOWED_HOSTS = ["gateway.example.com"]
    settings.SECURE_SSL_REDIRECT = True
    settings.SESSION_COOKIE_SECURE = True
    settings.CSRF_COOKIE_SECURE = True
    call_command("check", deploy=True, fail_level="WARNING")


def test_security_headers(client, settings):
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_HSTS_PRELOAD = True
    response = client.get("/health", secure=True)
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"


@pytest.mark.django_db
def test_ssl_redirect_spares_health_probes(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/health").status_code in (200, 503)  # answered, not redirected
    redirect = client.get("/admin/login/")
    assert redirect.status_code == 301
    assert redirect["Location"].startswith("https://")


# --- admin login throttling (django-axes) ------------------------------------------------------


@pytest.fixture
def axes_on(settings):
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = 5
    settings.TRUSTED_PROXIES = []
    return settings


@pytest.fixture
def operator(db):
    return get_user_model().objects.create_superuser("op", "op@example.com", "right-pass-1234")


def login(client, username, password, **extra):
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": username, "password": password},
        **extra,
    )


def test_admin_login_locks_out_after_repeated_failures(client, axes_on, operator):
    for _ in range(4):
        assert login(client, "op", "wrong").status_code == 200  # the form again, with an error
    assert login(client, "op", "wrong").status_code == 429  # the 5th failure locks
    # Now even the right password is refused, and no session is opened.
    locked = login(client, "op", "right-pass-1234")
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session
    assert AccessAttempt.objects.filter(username="op", failures_since_start__gte=5).exists()


def test_admin_login_works_below_the_limit(client, axes_on, operator):
    for _ in range(3):
        login(client, "op", "wrong")
    response = login(client, "op", "right-pass-1234")
    assert response.status_code == 302
    assert response["Location"] == "/admin/"


def test_lockout_behind_a_trusted_proxy_uses_the_forwarded_client(client, axes_on, operator):
    # Behind a proxy every request comes from the proxy: locking its address would lock out
    # every operator at once.
    axes_on.TRUSTED_PROXIES = ["10.0.0.1"]
    attacker = {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "198.51.100.7"}
    for _ in range(5):
        login(client, "someone", "wrong", **attacker)
    assert login(client, "someone-else", "wrong", **attacker).status_code == 429
    attempt = AccessAttempt.objects.filter(ip_address="198.51.100.7").first()
    assert attempt is not None and attempt.failures_since_start >= 5
    colleague = {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.20"}
    assert login(client, "op", "right-pass-1234", **colleague).status_code == 302
