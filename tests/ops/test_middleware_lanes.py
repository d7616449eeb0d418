"""The admin's middleware for the logged-in user and messages (and the pages' Content-Security-
Policy) runs for the admin and the API documentation, not for the JSON API, whose clients
present a key; sessions and CSRF protection stay where Django's deploy checks look for them."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils.functional import SimpleLazyObject

from ops.middleware import json_api_path

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("path", "is_api"),
    [
        ("/api/instances", True),
        ("/api/instances/inst_1", True),
        ("/api/cache/stats", True),
        ("/api/docs/", False),
        ("/api/schema/", False),
        ("/admin/", False),
        ("/health", False),
        ("/apidocs", False),
    ],
)
def test_only_the_json_api_counts_as_the_api(path, is_api):
    assert json_api_path(path) is is_api


@pytest.mark.parametrize("path", ["/api/instances", "/api/no-such-route"])
def test_an_api_request_builds_no_lazy_user_or_message_store(api, path):
    response = api.get(path)
    assert response.status_code in (200, 404)
    request = response.wsgi_request
    assert not hasattr(request, "_messages")
    # DRF sets the user it authenticated; before that, or without a DRF view, there is none.
    assert not isinstance(request.__dict__.get("user"), SimpleLazyObject)
    assert "csrftoken" not in response.cookies
    assert "Content-Security-Policy" not in response


def test_an_api_answer_keeps_the_security_headers(api, settings):
    settings.RATE_LIMIT_PER_MINUTE = 100
    response = api.get("/api/instances")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Request-ID"]
    assert response["X-RateLimit-Limit"]


def test_admin_pages_still_have_sessions_csrf_and_the_page_policy():
    browser = Client(enforce_csrf_checks=True)
    page = browser.get("/admin/login/")
    assert page.status_code == 200
    assert hasattr(page.wsgi_request, "session")
    assert "csrftoken" in page.cookies
    assert "Content-Security-Policy" in page
    # A login POST without the form's CSRF token is refused, as before.
    refused = browser.post("/admin/login/", {"username": "x", "password": "y"})
    assert refused.status_code == 403


def test_a_staff_member_still_logs_in_to_the_admin():
    get_user_model().objects.create_superuser("ops", "ops@example.com", "a-long-passphrase")
    browser = Client()
    assert browser.login(username="ops", password="a-long-passphrase")
    page = browser.get("/admin/")
    assert page.status_code == 200
    assert page.wsgi_request.user.username == "ops"


def test_the_api_documentation_pages_keep_their_content_security_policy(client):
    page = client.get("/api/docs/")
    assert page.status_code == 200
    assert "Content-Security-Policy" in page
