"""The instance's own route is tried first (every poll resolves through it) without shadowing
the fixed paths that share its prefix."""

import pytest
from django.urls import get_resolver, resolve

from instances.api import urls as api_urls


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/api/instances/start", "instance-start-by-name"),
        ("/api/instances/stop", "instance-stop-by-name"),
        ("/api/instances/comprehensive", "instance-comprehensive"),
        ("/api/instances/last-used", "instance-last-used-by-name"),
        ("/api/instances/auto-stop/stats", "auto-stop-stats"),
        ("/api/instances/auto-stop/trigger", "auto-stop-trigger"),
        ("/api/instances/inst_0123abcd", "instance-detail"),
        ("/api/instances/started", "instance-detail"),
        ("/api/instances/stop-me", "instance-detail"),
        ("/api/instances/inst_1/stop", "instance-stop"),
        ("/api/instances/start/events", "instance-events"),
    ],
)
def test_each_path_reaches_its_own_view(path, route):
    assert resolve(path).url_name == route


def test_a_poll_matches_the_first_route_it_is_tried_against():
    # The project's first route is api/, and the instance's own route is the first inside it.
    assert get_resolver().url_patterns[0].pattern.describe().startswith("'api/'")
    assert api_urls.urlpatterns[0].name == "instance-detail"
