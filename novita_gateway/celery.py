"""Celery application: broker and schedule come from Django settings."""

import contextlib
import logging
import os
import uuid

from celery import Celery
from celery.signals import beat_init
from kombu.exceptions import ChannelError
from kombu.transport import filesystem as kombu_filesystem
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "novita_gateway.settings")

app = Celery("novita_gateway")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

logger = logging.getLogger(__name__)


@beat_init.connect(dispatch_uid="novita_gateway.celery.run_schedule_once_at_start")
def run_schedule_once_at_start(sender=None, **kwargs):
    """Send every periodic job once as beat starts, then let the schedule take over.

    Beat's first run of an interval entry comes one full interval after start (five minutes for
    the auto-stop sweep), so without this `schedulerRunning` and /health's sweep heartbeats say
    "not running" for that long after a healthy start. Every sweep tolerates an extra run.
    """
    from django.conf import settings

    app.loader.import_default_modules()  # registers the tasks (beat itself only sends names)
    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        try:
            app.tasks[entry["task"]].apply_async(
                args=entry.get("args", ()), **entry.get("options", {})
            )
        except Exception as exc:  # noqa: BLE001 - the regular schedule still runs it later
            logger.warning("beat start: could not send %s (%s)", name, type(exc).__name__)


def _stale_redis_channels_fail_as_connection_errors() -> None:
    """Keep a worker alive when the Redis broker goes away while it holds unacked messages.

    After a connection loss Celery 5.7 tears the old connection down, which detaches its
    channels from their connection details. Anything that later touches such a channel (handing
    unacked messages back while closing it, or acking a task that was running meanwhile) then
    fails with AttributeError, which Celery treats as unrecoverable: the worker exits and never
    reconnects. Raising the connection error it really is lets Celery's own handling apply
    (log, reconnect, carry on). An ack that cannot be sent is harmless here: Redis redelivers
    after the visibility timeout, and every step also has a periodic sweep.
    """
    original = kombu_redis.Channel._connparams
    if getattr(original, "fails_as_connection_error", False):
        return

    def _connparams(self, asynchronous=False):
        if getattr(self.connection, "client", None) is None:
            raise kombu_redis.redis.exceptions.ConnectionError(
                "broker channel belongs to a connection that was lost"
            )
        return original(self, asynchronous=asynchronous)

    _connparams.fails_as_connection_error = True
    kombu_redis.Channel._connparams = _connparams


_stale_redis_channels_fail_as_connection_errors()


def _publish_file_messages_atomically() -> None:
    """Make the file broker (no REDIS_URL) never hand a worker a half-written message.

    kombu's filesystem transport creates the message file under its final name and then writes
    it; a worker polling the folder can take the file in between, read nothing, and die with
    an unrecoverable JSONDecodeError (and a publisher killed mid-write leaves a file that
    crashes every worker that takes it). Writing under a name the consumer ignores and renaming
    it into place (atomic within one folder) means a message is either whole or not there.
    """
    channel = kombu_filesystem.Channel
    if getattr(channel._put, "atomic", False):
        return

    def _put(self, queue, payload, **kwargs):
        final = os.path.join(
            self.data_folder_out,
            f"{int(round(kombu_filesystem.monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg",
        )
        # Consumers take only names ending in ".<queue>.msg"; ".part" is invisible to them.
        partial = final + ".part"
        try:
            with open(partial, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    _put.atomic = True
    channel._put = _put


_publish_file_messages_atomically()
