"""Shared fixtures: clean caches and counters per test, an API client."""

import pytest
from django.conf import settings
from django.core.cache import caches
from rest_framework.test import APIClient

from ops import counters


@pytest.fixture(autouse=True)
def _clean_shared_state():
    for alias in settings.CACHES:
        caches[alias].clear()
    counters.reset_all()
    yield


@pytest.fixture
def api():
    return APIClient()
