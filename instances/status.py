"""Gateway statuses, the upstream -> gateway mapping, named status sets and the re-drive rule: one
place."""

from __future__ import annotations

import logging

from django.db import models

logger = logging.getLogger(__name__)


class Status(models.TextChoices):
    CREATING = "creating"
    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    HEALTH_CHECKING = "health_checking"
    READY = "ready"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
    TERMINATED = "terminated"
    EXITED = "exited"


class Desired(models.TextChoices):
    RUNNING = "running"
    STOPPED = "stopped"
    TERMINATED = "terminated"


# States where something is still happening and the monitor sweep must keep polling.
TRANSITIONAL = frozenset(
    {
        Status.CREATING,
        Status.STARTING,
        Status.RUNNING,
        Status.HEALTH_CHECKING,
        Status.STOPPING,
    }
)
# On the way to ready: the readiness deadline (maxWaitTimeMs) applies.
BOOTING = frozenset({Status.CREATING, Status.STARTING, Status.RUNNING, Status.HEALTH_CHECKING})
AUTO_STOP_CANDIDATES = frozenset({Status.READY, Status.RUNNING, Status.HEALTH_CHECKING})
# Statuses in which the GPU is billed (held for us, booting or running): billed time and spend
# estimates count these.
BILLED = frozenset({Status.STARTING, Status.RUNNING, Status.HEALTH_CHECKING, Status.READY})

# What a client may ask for, by current status.
STARTABLE = frozenset({Status.STOPPED, Status.EXITED, Status.CREATED, Status.FAILED})
STOPPABLE = frozenset(
    {Status.STARTING, Status.RUNNING, Status.HEALTH_CHECKING, Status.READY, Status.FAILED}
)
DELETABLE = frozenset(set(Status) - {Status.TERMINATED})

_CREATING_UPSTREAM = {"pending", "tocreate", "creating", "pulling"}
_STARTING_UPSTREAM = {
    "tostart",
    "starting",
    "torestart",
    "restarting",
    "toreset",
    "resetting",
    "migrating",
}
_STOPPING_UPSTREAM = {"tostop", "stopping", "freezing"}
_REMOVING_UPSTREAM = {"toremove", "removing"}
# Where upstream settles: up, or stopped.
_UP_UPSTREAM = {"running"}
_DOWN_UPSTREAM = {"exited"}


def _value(upstream_status: str | None) -> str:
    return (upstream_status or "").strip().lower()


def redrive(upstream_status: str | None, *, current: str, desired: str) -> str | None:
    """The command to send upstream again ("start", "stop" or "delete") when upstream settled
    somewhere other than where we asked it to go; None when it did not (or is still moving).

    A stop that did not take (still running), a delete that did not (running or stopped), a
    start that ended stopped while we were starting it.
    """
    value = _value(upstream_status)
    if desired == Desired.STOPPED and value in _UP_UPSTREAM:
        return "stop"
    if desired == Desired.TERMINATED and value in _UP_UPSTREAM | _DOWN_UPSTREAM:
        return "delete"
    if desired == Desired.RUNNING and current == Status.STARTING and value in _DOWN_UPSTREAM:
        return "start"
    return None


def from_upstream(
    upstream_status: str | None,
    *,
    current: str,
    desired: str,
    first_boot: bool,
    has_error: bool = False,
) -> str:
    """Map what upstream says to our status. Unknown values keep the current status.

    `running` maps to `running`; readiness probing then moves it on (health_checking, ready),
    so a caller that already is health_checking/ready keeps that status.
    """
    if has_error:
        return Status.FAILED
    value = _value(upstream_status)
    if value in _CREATING_UPSTREAM:
        return Status.CREATING if first_boot else Status.STARTING
    if value in _STARTING_UPSTREAM:
        return Status.STARTING
    if value in _UP_UPSTREAM:
        if current in (Status.HEALTH_CHECKING, Status.READY):
            return current
        return Status.RUNNING
    if value in _STOPPING_UPSTREAM:
        return Status.STOPPING
    if value in _DOWN_UPSTREAM:
        # We asked for the stop: stopped. It stopped on its own (crash, spot reclaim): exited.
        return Status.STOPPED if desired != Desired.RUNNING else Status.EXITED
    if value in _REMOVING_UPSTREAM:
        return Status.STOPPING
    if value == "removed":
        return Status.TERMINATED
    logger.warning("unknown upstream status %r; keeping %s", upstream_status, current)
    return current
