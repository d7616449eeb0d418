"""A client that polls every couple of seconds over one pooled connection, with a heartbeat each
time, keeps that connection: the web server's keep-alive outlasts the poll interval, so no
request races an idle close."""

from __future__ import annotations

import re
import shlex
import time
from unittest import mock

import pytest
import requests
import urllib3

from tests.e2e.stack import ROOT, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

# A client polling every 2 s, with the jitter real clients have: a minute in all.
GAPS = [2.0, 3.0] * 12


def web_args(procfile) -> list[str]:
    line = next(li for li in procfile.read_text().splitlines() if li.startswith("web:"))
    return shlex.split(re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", line))


def keep_alive_seconds(procfile) -> int:
    args = web_args(procfile)
    return int(args[args.index("--keep-alive") + 1])


@pytest.mark.parametrize("name", ["Procfile", "Procfile.sandbox"])
def test_the_web_line_keeps_idle_connections_longer_than_load_balancers_do(name):
    # AWS ALB closes idle connections after 60 s, nginx after 75 s: the proxy must close first.
    assert keep_alive_seconds(ROOT / name) >= 75


@pytest.mark.parametrize("name", ["Procfile", "Procfile.sandbox"])
def test_each_request_is_logged_once_by_the_gateway_not_again_by_gunicorn(name):
    assert not any(
        arg.startswith(("--access-logfile", "--access-log")) for arg in web_args(ROOT / name)
    )


def test_polling_every_few_seconds_for_a_minute_over_one_session_never_loses_the_connection():
    with Stack(step_seconds=0.05, web_procfile=True).running() as stack:
        [instance_id] = stack.create_ready(1, prefix="keepalive")
        session = requests.Session()
        url = f"{stack.url}/api/instances/{instance_id}"
        failures, connects = [], []
        real_connect = urllib3.connection.HTTPConnection.connect

        def counted_connect(conn):
            connects.append(conn)
            return real_connect(conn)

        with mock.patch.object(urllib3.connection.HTTPConnection, "connect", counted_connect):
            for gap in GAPS:
                poll_and_beat(session, url, failures)
                time.sleep(gap)
        assert failures == []
        # urllib3 quietly reconnects when it finds the connection closed before sending, so a
        # single connect for the whole minute shows the server never closed it between polls.
        assert len(connects) == 1


def poll_and_beat(session: requests.Session, url: str, failures: list) -> None:
    try:
        poll = session.get(url, timeout=10)
        # The heartbeat (PUT last-used): a write a client cannot safely resend.
        beat = session.put(f"{url}/last-used", json={}, timeout=10)
        if poll.status_code != 200 or beat.status_code != 200:
            failures.append((poll.status_code, beat.status_code))
    except requests.ConnectionError as exc:
        failures.append(repr(exc))
