"""The upstream -> gateway status mapping (DESIGN.md's table, row by row), the re-drive rule and
the spot-migration rules."""

import logging
from datetime import UTC, datetime

import pytest

from instances.models import Instance
from instances.status import (
    Desired,
    Status,
    from_upstream,
    migration_allowed,
    redrive,
    spot_reclaimed,
)

CREATING_UPSTREAM = ["pending", "toCreate", "creating", "pulling"]
STARTING_UPSTREAM = [
    "toStart",
    "starting",
    "toRestart",
    "restarting",
    "toReset",
    "resetting",
    "migrating",
]
STOPPING_UPSTREAM = ["toStop", "stopping", "freezing"]
REMOVING_UPSTREAM = ["toRemove", "removing"]


def mapped(value, *, current=Status.STARTING, desired=Desired.RUNNING, first_boot=False, **kw):
    return from_upstream(value, current=current, desired=desired, first_boot=first_boot, **kw)


@pytest.mark.parametrize("value", CREATING_UPSTREAM)
def test_upstream_creating_states_read_creating_on_first_boot(value):
    assert mapped(value, current=Status.CREATING, first_boot=True) == Status.CREATING


@pytest.mark.parametrize("value", CREATING_UPSTREAM)
def test_upstream_creating_states_read_starting_for_a_start_we_asked_for(value):
    assert mapped(value, current=Status.STARTING, first_boot=False) == Status.STARTING


@pytest.mark.parametrize("value", STARTING_UPSTREAM)
def test_upstream_starting_states_read_starting(value):
    assert mapped(value, current=Status.STOPPED) == Status.STARTING
    assert mapped(value, current=Status.CREATING, first_boot=True) == Status.STARTING


@pytest.mark.parametrize("current", [Status.CREATING, Status.STARTING, Status.RUNNING])
def test_upstream_running_reads_running_until_ports_are_probed(current):
    assert mapped("running", current=current) == Status.RUNNING


@pytest.mark.parametrize("current", [Status.HEALTH_CHECKING, Status.READY])
def test_upstream_running_keeps_health_checking_and_ready(current):
    assert mapped("running", current=current) == current


@pytest.mark.parametrize("value", STOPPING_UPSTREAM)
def test_upstream_stopping_states_read_stopping(value):
    assert mapped(value, current=Status.READY, desired=Desired.STOPPED) == Status.STOPPING
    # Stopped from outside the gateway (console, reclaim) while we want it running: still
    # stopping, the exited that follows says the rest.
    assert mapped(value, current=Status.READY, desired=Desired.RUNNING) == Status.STOPPING


def test_upstream_exited_reads_stopped_when_we_asked_for_the_stop():
    assert mapped("exited", current=Status.STOPPING, desired=Desired.STOPPED) == Status.STOPPED
    assert mapped("exited", current=Status.STOPPING, desired=Desired.TERMINATED) == Status.STOPPED


def test_upstream_exited_reads_exited_when_it_stopped_on_its_own():
    assert mapped("exited", current=Status.READY, desired=Desired.RUNNING) == Status.EXITED


@pytest.mark.parametrize("value", REMOVING_UPSTREAM)
def test_upstream_removing_states_read_stopping(value):
    assert mapped(value, current=Status.STOPPING, desired=Desired.TERMINATED) == Status.STOPPING


def test_upstream_removed_reads_terminated():
    assert mapped("removed", current=Status.STOPPING, desired=Desired.TERMINATED) == (
        Status.TERMINATED
    )


@pytest.mark.parametrize("value", ["running", "exited", "creating", "", None, "weird"])
def test_a_status_error_reads_failed_whatever_the_status(value):
    assert mapped(value, current=Status.STARTING, has_error=True) == Status.FAILED


@pytest.mark.parametrize("value", ["hibernating", "RUNNING_BUT_NEW", "", None, "42"])
@pytest.mark.parametrize("current", [Status.STARTING, Status.READY, Status.STOPPED])
def test_an_unknown_value_keeps_the_last_known_status_and_warns(value, current, caplog):
    with caplog.at_level(logging.WARNING, logger="instances.status"):
        assert mapped(value, current=current) == current
    assert "unknown upstream status" in caplog.text


@pytest.mark.parametrize("value", ["RUNNING", " running ", "Running"])
def test_values_are_read_whatever_their_case_and_padding(value):
    assert mapped(value, current=Status.STARTING) == Status.RUNNING


def test_mapping_covers_every_documented_upstream_value():
    documented = (
        CREATING_UPSTREAM
        + STARTING_UPSTREAM
        + STOPPING_UPSTREAM
        + REMOVING_UPSTREAM
        + ["running", "exited", "removed"]
    )
    for value in documented:
        # A known value never falls through to "keep the current status": with a current
        # status no row maps to, the answer changes.
        assert mapped(value, current=Status.FAILED, desired=Desired.STOPPED) != Status.FAILED


# --- on the instance: first boot vs a start ----------------------------------------------


def test_instance_that_never_ran_reads_upstream_pending_as_creating():
    instance = Instance(status=Status.CREATING, desired_status=Desired.RUNNING)
    assert instance.first_boot
    assert instance.status_from_upstream("pending") == Status.CREATING


def test_instance_started_again_reads_upstream_pending_as_starting():
    instance = Instance(
        status=Status.STARTING,
        desired_status=Desired.RUNNING,
        started_at=datetime(2026, 11, 27, 10, 0, tzinfo=UTC),
    )
    assert not instance.first_boot
    assert instance.status_from_upstream("pending") == Status.STARTING


def test_instance_reads_a_status_error_as_failed():
    instance = Instance(status=Status.STARTING, desired_status=Desired.RUNNING)
    assert instance.status_from_upstream("running", has_error=True) == Status.FAILED


# --- re-drive: which command goes upstream again --------------------------------------------


@pytest.mark.parametrize(
    ("upstream", "current", "desired", "command"),
    [
        # A stop that did not take.
        ("running", Status.STOPPING, Desired.STOPPED, "stop"),
        # A delete that did not take, whether the instance is up or stopped.
        ("running", Status.STOPPING, Desired.TERMINATED, "delete"),
        ("exited", Status.STOPPING, Desired.TERMINATED, "delete"),
        # A start that ended stopped while we were starting it.
        ("exited", Status.STARTING, Desired.RUNNING, "start"),
        ("EXITED", Status.STARTING, Desired.RUNNING, "start"),
        # Upstream is where we asked, or still on its way: nothing to send.
        ("exited", Status.STOPPING, Desired.STOPPED, None),
        ("stopping", Status.STOPPING, Desired.STOPPED, None),
        ("removing", Status.STOPPING, Desired.TERMINATED, None),
        ("running", Status.STARTING, Desired.RUNNING, None),
        ("starting", Status.STARTING, Desired.RUNNING, None),
        # Stopped on its own while ready: recorded as exited, not restarted behind the client.
        ("exited", Status.READY, Desired.RUNNING, None),
        ("weird", Status.STOPPING, Desired.STOPPED, None),
        (None, Status.STOPPING, Desired.TERMINATED, None),
    ],
)
def test_redrive_sends_again_only_what_upstream_did_not_do(upstream, current, desired, command):
    assert redrive(upstream, current=current, desired=desired) == command


# --- spot migration: reclaimed? may upstream be asked to migrate now? ----------------------


@pytest.mark.parametrize(
    ("upstream", "spot_status", "reclaim_started", "reclaimed"),
    [
        # Documented spotStatus values (docs/upstream.md).
        ("exited", "terminated", False, True),
        ("exited", "reclaiming", False, True),
        ("running", "reclaiming", False, True),
        ("Exited", "TERMINATED", False, True),
        # The undocumented reading: exited with a non-zero spotReclaimTime, whatever spotStatus.
        ("exited", "", True, True),
        ("exited", None, True, True),
        ("exited", "running", True, True),
        # Only announced, never reclaimed, or not stopped.
        ("running", "notified", True, False),
        ("exited", "notified", False, False),
        ("exited", "running", False, False),
        ("exited", "", False, False),
        ("running", "", True, False),
        # Running again with a spot status upstream has not reset (after a migration).
        ("running", "terminated", True, False),
        (None, None, False, False),
    ],
)
def test_what_counts_as_a_reclaimed_spot_instance(
    upstream, spot_status, reclaim_started, reclaimed
):
    assert spot_reclaimed(upstream, spot_status, reclaim_started) is reclaimed


SETTLED_OR_MIGRATING = ["running", "exited", "migrating", "Migrating"]


@pytest.mark.parametrize(
    "value",
    CREATING_UPSTREAM
    + [v for v in STARTING_UPSTREAM if v != "migrating"]
    + STOPPING_UPSTREAM
    + REMOVING_UPSTREAM
    + ["removed"],
)
def test_no_migrate_call_while_upstream_is_between_states(value):
    assert migration_allowed(value, "terminated", jobs_running=False) is False


@pytest.mark.parametrize("value", SETTLED_OR_MIGRATING + ["teleporting"])
def test_a_settled_instance_may_be_migrated(value):
    assert migration_allowed(value, "terminated", jobs_running=False) is True


@pytest.mark.parametrize("value", ["running", "exited"])
def test_no_migrate_call_while_the_reclaim_is_only_announced_or_a_job_runs(value):
    assert migration_allowed(value, "notified", jobs_running=False) is False
    assert migration_allowed(value, "NOTIFIED", jobs_running=False) is False
    assert migration_allowed(value, "terminated", jobs_running=True) is False


def test_an_instance_upstream_already_migrates_counts_as_allowed():
    # Nothing is sent then; the migration is followed as if we had asked for it.
    assert migration_allowed("migrating", "notified", jobs_running=True) is True
