"""Regressions in how workers use the broker (novita_gateway/celery.py, settings).

- A Celery worker must survive the Redis broker going away mid-task. Celery 5.7 / kombu 5.7
  detach a lost connection's channels; touching one afterwards (restoring unacked messages on
  close, acking a task that finished meanwhile) raised AttributeError, which Celery treats as
  unrecoverable, so the worker exited for good. novita_gateway/celery.py makes such a channel
  fail with the connection error it is. tests/e2e/test_faults.py::
  test_redis_stopped_and_restarted_loses_nothing covers the real thing.
- Without Redis, the file broker must be polled often: at kombu's default of once a second a
  worker took about `concurrency` tasks a second, so a burst of 50 creates queued for 25 s.
- The file broker must never hand a worker a half-written message: kombu created the file under
  its final name before writing it, and a worker that read it in between died with an
  unrecoverable JSONDecodeError (seen in tests/e2e/test_faults.py once polling got faster).
"""

import json
import os
import queue
import subprocess
import sys
from types import SimpleNamespace

import pytest
from kombu import Connection
from kombu.transport import redis as kombu_redis

import novita_gateway.celery  # noqa: F401 - installs the workaround
from tests.e2e.stack import ROOT


def detached_channel():
    channel = kombu_redis.Channel.__new__(kombu_redis.Channel)
    channel.connection = SimpleNamespace(client=None)
    return channel


def test_detached_redis_channel_fails_with_a_connection_error_celery_recovers_from():
    with pytest.raises(kombu_redis.redis.exceptions.ConnectionError):
        detached_channel()._connparams()
    # Celery and kombu catch exactly the transport's connection errors (and reconnect).
    transport = Connection("redis://127.0.0.1:6379/0").transport
    assert issubclass(kombu_redis.redis.exceptions.ConnectionError, transport.connection_errors)


def test_file_broker_is_polled_several_times_a_second(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(DJANGO_SECRET_KEY="broker-settings-test", VAR_DIR=str(tmp_path))
    code = (
        "import json; from novita_gateway import settings as s; "
        "print(json.dumps([s.CELERY_BROKER_URL, s.CELERY_BROKER_TRANSPORT_OPTIONS]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    url, options = json.loads(out.strip().splitlines()[-1])
    assert url == "filesystem://"
    assert options["polling_interval"] <= 0.2


def test_file_broker_message_is_invisible_until_completely_written(tmp_path, monkeypatch):
    folder = str(tmp_path)
    options = {"data_folder_in": folder, "data_folder_out": folder, "store_processed": False}
    connection = Connection("filesystem://", transport_options=options)
    channel = connection.default_channel
    real_replace = os.replace
    seen_while_writing = []

    def replace(src, dst):
        # The bytes are written, the message not yet published: a consumer must not see it.
        try:
            seen_while_writing.append(channel._get("celery"))
        except queue.Empty:
            seen_while_writing.append(None)
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    channel._put("celery", {"task": "x", "body": "y" * 1000})
    assert seen_while_writing == [None]
    assert channel._get("celery") == {"task": "x", "body": "y" * 1000}
    assert os.listdir(folder) == []
    connection.release()
