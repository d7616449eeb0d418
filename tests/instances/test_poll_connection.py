"""On PostgreSQL a poll sends one statement, not Django's SELECT 1 health check before it, and
still answers on a connection the server dropped (the guarantee CONN_HEALTH_CHECKS gives)."""

import os
import time
from unittest import mock

import psycopg
import pytest
from django.db import OperationalError, close_old_connections, connection

from ops.models import ApiKey

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # CI runs the suite on PostgreSQL; SQLite has no health check to save.
    pytest.mark.skipif(
        connection.vendor != "postgresql" and not os.environ.get("CI"),
        reason="PostgreSQL only (CI runs the suite on it)",
    ),
]


@pytest.fixture
def keyed(api):
    _key, raw = ApiKey.issue(f"poller-{time.monotonic_ns()}")
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return api


def poll(client, instance):
    # A server's request_started runs close_old_connections, which asks for a health check of
    # a reused connection; Django's test client leaves it out, so it is run here.
    close_old_connections()
    return client.get(f"/api/instances/{instance.id}")


def terminate_this_connections_backend() -> None:
    pid = connection.connection.info.backend_pid
    params = connection.get_connection_params()
    with psycopg.connect(**params, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_poll_on_a_reused_connection_sends_no_separate_health_check(keyed, make_instance):
    assert connection.vendor == "postgresql"
    assert connection.settings_dict["CONN_HEALTH_CHECKS"] is True
    instance = make_instance()
    poll(keyed, instance)  # opens the connection, reads the key and trail

    with mock.patch.object(connection, "is_usable", wraps=connection.is_usable) as checks:
        response = poll(keyed, instance)

    assert response.status_code == 200
    assert checks.call_count == 0


def test_a_poll_on_a_connection_the_server_dropped_is_answered(keyed, make_instance):
    instance = make_instance(name="still-here")
    poll(keyed, instance)
    terminate_this_connections_backend()

    response = poll(keyed, instance)

    assert response.status_code == 200
    assert response.json()["name"] == "still-here"


def test_a_failed_poll_statement_on_a_sound_connection_is_not_run_twice(keyed, make_instance):
    # The retry is for a dead connection only: an error the statement itself caused (here,
    # a timeout) is reported, once, as the database error it is.
    instance = make_instance()
    poll(keyed, instance)
    with (
        mock.patch("instances.lookups.Statement._fetch", autospec=True) as fetch,
        mock.patch.object(connection, "is_usable", return_value=True),
    ):
        fetch.side_effect = OperationalError("canceling statement due to statement timeout")
        response = poll(keyed, instance)

    assert fetch.call_count == 1
    assert response.status_code == 503
