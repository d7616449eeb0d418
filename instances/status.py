"""Gateway statuses, the upstream -> gateway mapping, named status sets, the re-drive rule and
the spot-migration rules (reclaimed? may it be migrated now?): one place."""

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

# A spot migration neither starts from these nor keeps following them: gone, or failed (the
# reason is recorded there).
NO_MIGRATION = frozenset({Status.TERMINATED, Status.FAILED})

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
_REMOVED_UPSTREAM = "removed"
# Where upstream settles: up, or stopped.
_UP_UPSTREAM = {"running"}
_DOWN_UPSTREAM = {"exited"}
_MIGRATING_UPSTREAM = "migrating"
# Between states (every known value but the settled ones and migrating): upstream refuses a
# migrate then, and Novita's console hides the action.
_BETWEEN_STATES_UPSTREAM = frozenset(
    _CREATING_UPSTREAM
    | _STARTING_UPSTREAM
    | _STOPPING_UPSTREAM
    | _REMOVING_UPSTREAM
    | {_REMOVED_UPSTREAM}
) - {_MIGRATING_UPSTREAM}
# spotStatus (docs/upstream.md): a reclaim only announced, and one under way or over.
_SPOT_NOTIFIED = "notified"
_SPOT_RECLAIMING = "reclaiming"
_SPOT_TERMINATED = "terminated"


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


def spot_reclaimed(
    upstream_status: str | None, spot_status: str | None, reclaim_started: bool
) -> bool:
    """Upstream took the spot capacity back, or is doing so. `reclaim_started`: a non-zero
    spotReclaimTime.

    spotStatus `reclaiming`, or `terminated` unless the instance runs again (a spot status left
    stale by a migration: migrating it again would loop). Undocumented but what a reclaim looks
    like once it is over (docs/upstream.md): `exited` with a reclaim time.
    """
    spot = _value(spot_status)
    if spot == _SPOT_RECLAIMING:
        return True
    status = _value(upstream_status)
    if spot == _SPOT_TERMINATED:
        return status not in _UP_UPSTREAM
    return status in _DOWN_UPSTREAM and reclaim_started


def upstream_migrating(upstream_status: str | None) -> bool:
    """Upstream is migrating the instance already (its own spot recovery, or our call)."""
    return _value(upstream_status) == _MIGRATING_UPSTREAM


def migration_allowed(
    upstream_status: str | None, spot_status: str | None, *, jobs_running: bool
) -> bool:
    """Whether upstream would take a migrate call now (or already migrates the instance): not
    while the reclaim is only announced, while upstream runs a job on it, or while it is between
    states (the cases Novita's console hides the action for)."""
    if upstream_migrating(upstream_status):
        return True
    if _value(spot_status) == _SPOT_NOTIFIED or jobs_running:
        return False
    return _value(upstream_status) not in _BETWEEN_STATES_UPSTREAM


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
    if value == _REMOVED_UPSTREAM:
        return Status.TERMINATED
    logger.warning("unknown upstream status %r; keeping %s", upstream_status, current)
    return current
