"""Spot migration: a reclaimed spot instance we want running is migrated, followed through the
upstream job list and the normal monitor, and ends ready or visibly failed."""

import json
import time
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

from instances.models import Instance, SweepRun
from instances.novita.client import get_client
from instances.services import migration, monitor
from instances.services.snapshot import novita_row
from instances.status import Desired, Status
from ops import counters
from tests.instances.test_sync import (  # noqa: F401 - the autouse fixture applies here too
    list_items,
    private_fleet_cache,
)
from tests.instances.upstream import V1, remote_instance
from tests.sandbox import gateway_on_sandbox

pytestmark = pytest.mark.django_db

HOOK = "https://hooks.example.com/h"
RECLAIMED = {"spotStatus": "terminated", "spotReclaimTime": "1700000000"}


def spot(make_instance, **fields):
    defaults = {
        "novita_instance_id": "nov-1",
        "billing_mode": "spot",
        "webhook_url": HOOK,
        "port_mappings": [
            {"port": 8888, "endpoint": "https://abc.novita.test:8888", "type": "http"}
        ],
    }
    defaults.update(fields)
    return make_instance(**defaults)


def upstream_lists(novita, instance, status="exited", **extra):
    novita.mock.get(
        f"{V1}/gpu/instances",
        json={
            "instances": list_items(
                remote_instance("nov-1", instance.name, status=status), **extra
            ),
            "total": 1,
        },
    )


def upstream_jobs(novita, *jobs):
    def callback(request):
        wanted = parse_qs(urlsplit(request.url).query).get("type", [None])[0]
        matched = [j for j in jobs if wanted is None or j["type"] == wanted]
        return 200, {}, json.dumps({"jobs": matched, "total": len(matched)})

    novita.mock.add_callback("GET", f"{V1}/jobs", callback=callback)


def job(state, *, job_id="job-1", instance_id="nov-1", created=None, error="", kind=None):
    created = created or timezone.now()
    return {
        "Id": job_id,
        "type": kind or "instanceMigrate",
        "state": {"state": state, "error": "", "errorMessage": error},
        "instanceId": instance_id,
        "createdAt": str(int(created.timestamp())),
    }


def migrating(make_instance, started_ago=timedelta(seconds=30), **fields):
    """An instance whose migration we started a while ago."""
    defaults = {
        "status": Status.STARTING,
        "migration_started_at": timezone.now() - started_ago,
        "next_poll_at": timezone.now() + timedelta(seconds=5),
    }
    return spot(make_instance, **{**defaults, **fields})


def webhook_statuses(instance):
    return [json.loads(d.body)["status"] for d in instance.webhook_deliveries.order_by("id")]


# --- detection and start ----------------------------------------------------------------------


def test_reclaimed_spot_instance_is_migrated_and_handed_to_the_monitor(make_instance, novita):
    instance = spot(make_instance)
    upstream_lists(novita, instance, **RECLAIMED)
    novita.action_returns("migrate")

    run = migration.sweep()

    instance.refresh_from_db()
    assert instance.status == Status.STARTING
    assert instance.migration_started_at is not None
    assert instance.next_poll_at is not None and instance.ready_at is None
    event = instance.events.get(to_status="starting")
    assert event.source == "migration" and "reclaimed" in event.reason
    assert novita.bodies("/gpu/instance/migrate") == [{"instanceId": "nov-1"}]
    assert webhook_statuses(instance) == ["starting"]
    assert (run.kind, run.acted) == ("migration", 1)
    # Looked up by name, not by listing the whole fleet.
    assert parse_qs(urlsplit(novita.calls("/gpu/instances")[0].request.url).query)["name"] == [
        instance.name
    ]


@pytest.mark.parametrize(
    "spot_status, reclaim_time, reclaimed",
    [
        ("terminated", "0", True),
        ("reclaiming", "0", True),
        ("", "1700000000", True),
        ("running", "1700000000", True),
        ("running", "0", False),
        ("", "0", False),
    ],
)
def test_an_exited_spot_instance_is_reclaimed_alike_for_listings_and_migration(
    make_instance, novita, spot_status, reclaim_time, reclaimed
):
    extra = {"spotStatus": spot_status, "spotReclaimTime": reclaim_time}
    # An instance nobody asked us to manage is listed as exited (stopped on its own)...
    item = list_items(remote_instance("nov-x", "theirs", status="exited"), **extra)[0]
    row, _ = novita_row(item, "2026-11-30T00:00:00.000Z")
    assert row["status"] == ("exited" if reclaimed else "stopped")
    # ... exactly when one of ours would be migrated.
    instance = spot(make_instance)
    upstream_lists(novita, instance, status="exited", **extra)
    novita.action_returns("migrate")
    migration.sweep()
    assert len(novita.calls("/gpu/instance/migrate")) == (1 if reclaimed else 0)


@pytest.mark.parametrize(
    "fields",
    [
        {"desired_status": Desired.STOPPED, "status": Status.STOPPED},
        {"status": Status.FAILED},
        {"status": Status.TERMINATED},
    ],
)
def test_reclaimed_instance_we_do_not_want_running_is_not_migrated(make_instance, novita, fields):
    instance = spot(make_instance, **fields)
    upstream_lists(novita, instance, **RECLAIMED)
    novita.action_returns("migrate")
    migration.sweep()
    assert novita.calls("/gpu/instance/migrate") == []


def test_on_demand_instances_cost_no_upstream_call(make_instance, novita):
    make_instance(novita_instance_id="nov-1")
    migration.sweep()
    assert len(novita.mock.calls) == 0


def test_disabled_migration_does_nothing(make_instance, novita, settings):
    settings.MIGRATION_ENABLED = False
    instance = spot(make_instance)
    upstream_lists(novita, instance, **RECLAIMED)
    assert migration.sweep() is None
    assert len(novita.mock.calls) == 0


REFUSED = {"code": 400, "reason": "MIGRATE_INSUFFICIENT_RESOURCE", "message": "no capacity"}


def test_refused_migration_is_asked_again_with_backoff_not_failed(make_instance, novita):
    instance = spot(make_instance)
    upstream_lists(novita, instance, **RECLAIMED)
    novita.action_returns("migrate", status=400, body=REFUSED)

    migration.sweep()

    instance.refresh_from_db()
    assert instance.status == Status.READY and instance.migration_started_at is None
    assert instance.migration_refusals == 1
    assert instance.migration_retry_at > timezone.now() + timedelta(seconds=20)
    assert "refused the migration" in instance.events.get().reason
    assert webhook_statuses(instance) == []
    migration.sweep()  # not due yet: no second call
    assert len(novita.calls("/gpu/instance/migrate")) == 1

    Instance.objects.filter(pk=instance.pk).update(migration_retry_at=timezone.now())
    novita.mock.replace("POST", f"{V1}/gpu/instance/migrate", json={})
    migration.sweep()

    instance.refresh_from_db()
    assert instance.status == Status.STARTING
    assert (instance.migration_refusals, instance.migration_retry_at) == (0, None)


def test_refusals_back_off_longer_each_time(make_instance, novita):
    instance = spot(make_instance)
    upstream_lists(novita, instance, **RECLAIMED)
    novita.action_returns("migrate", status=400, body=REFUSED)
    waits = []
    for _ in range(3):
        Instance.objects.filter(pk=instance.pk).update(migration_retry_at=timezone.now())
        before = timezone.now()
        migration.sweep()
        instance.refresh_from_db()
        waits.append(round((instance.migration_retry_at - before).total_seconds()))
    assert waits == [30, 60, 120]


def test_migration_refused_until_the_timeout_ends_failed_with_reason_and_webhook(
    make_instance, novita, settings
):
    settings.MIGRATION_TIMEOUT_MINUTES = 30
    instance = spot(
        make_instance,
        migration_refused_since=timezone.now() - timedelta(minutes=31),
        migration_refusals=6,
        migration_retry_at=timezone.now() - timedelta(seconds=1),
    )
    upstream_lists(novita, instance, **RECLAIMED)
    novita.action_returns("migrate", status=400, body=REFUSED)

    migration.sweep()

    instance.refresh_from_db()
    assert instance.status == Status.FAILED
    assert "MIGRATE_INSUFFICIENT_RESOURCE" in instance.failure_reason
    assert "refused the migration 7 times over 30 minutes" in instance.failure_reason
    assert instance.events.get(to_status="failed").source == "migration"
    assert webhook_statuses(instance) == ["failed"]
    migration.sweep()  # failed stays failed: no further attempt
    assert len(novita.calls("/gpu/instance/migrate")) == 1


@pytest.mark.parametrize(
    "status,extra",
    [
        ("running", {"spotStatus": "notified"}),
        ("stopping", {"spotStatus": "reclaiming"}),
        ("exited", {**RECLAIMED, "jobs": [{"id": "j-1", "type": "saveImage"}]}),
    ],
    ids=["reclaim-only-announced", "between-states", "job-running"],
)
def test_migration_starts_only_when_upstream_allows_it(make_instance, novita, status, extra):
    instance = spot(make_instance)
    upstream_lists(novita, instance, status=status, **extra)
    novita.action_returns("migrate")

    migration.sweep()

    assert novita.calls("/gpu/instance/migrate") == []
    instance.refresh_from_db()
    assert instance.status == Status.READY and instance.migration_started_at is None


def test_migrate_call_that_did_not_get_through_is_retried_next_sweep(make_instance, novita):
    instance = spot(make_instance)
    upstream_lists(novita, instance, **RECLAIMED)
    novita.action_returns("migrate", status=503, body={"code": 503, "message": "busy"})

    migration.sweep()

    instance.refresh_from_db()
    assert instance.status == Status.READY and instance.migration_started_at is None
    assert "will retry" in instance.events.get().reason
    novita.mock.replace("POST", f"{V1}/gpu/instance/migrate", json={})
    migration.sweep()
    instance.refresh_from_db()
    assert instance.status == Status.STARTING


def test_instance_upstream_already_migrates_is_followed_without_a_second_migrate(
    make_instance, novita
):
    instance = spot(make_instance)
    upstream_lists(novita, instance, status="migrating", spotStatus="reclaiming")

    migration.sweep()

    instance.refresh_from_db()
    assert instance.status == Status.STARTING and instance.migration_started_at is not None
    assert novita.calls("/gpu/instance/migrate") == []


# --- following ------------------------------------------------------------------------------


def test_failed_migration_job_ends_failed_with_reason_and_webhook(make_instance, novita):
    instance = migrating(make_instance)
    upstream_jobs(novita, job("fail", error="no spot capacity in cluster"))

    migration.sweep()

    instance.refresh_from_db()
    assert instance.status == Status.FAILED
    assert "job-1" in instance.failure_reason
    assert "no spot capacity in cluster" in instance.failure_reason
    assert instance.migration_job_id == "job-1" and instance.migration_started_at is None
    assert instance.next_poll_at is None
    assert webhook_statuses(instance) == ["failed"]


def test_failed_job_error_is_read_from_state_message_too(make_instance, novita):
    instance = migrating(make_instance)
    failed = job("fail")
    failed["state"] = {"state": "fail", "message": "node lost during migration"}
    upstream_jobs(novita, failed)

    migration.sweep()

    instance.refresh_from_db()
    assert instance.status == Status.FAILED
    assert "node lost during migration" in instance.failure_reason


def test_auto_migration_jobs_are_followed_too(make_instance, novita):
    instance = migrating(make_instance)
    upstream_jobs(novita, job("break", kind="autoInstanceMigrate"))
    migration.sweep()
    instance.refresh_from_db()
    assert instance.status == Status.FAILED


def test_job_of_an_earlier_migration_is_not_taken_for_this_one(make_instance, novita):
    instance = migrating(make_instance)
    upstream_jobs(
        novita,
        job("fail", job_id="old", created=timezone.now() - timedelta(days=1)),
        job("running", job_id="new"),
    )

    migration.sweep()

    instance.refresh_from_db()
    assert instance.status == Status.STARTING
    assert instance.migration_job_id == "new"


def test_migration_still_running_is_left_to_the_monitor(make_instance, novita):
    instance = migrating(make_instance, next_poll_at=None)
    upstream_jobs(novita, job("running"))

    migration.sweep()

    instance.refresh_from_db()
    assert instance.status == Status.STARTING
    # Nobody was polling it: the sweep makes sure the monitor picks it up.
    assert instance.next_poll_at is not None


def test_migration_stuck_past_the_timeout_is_reported_failed(make_instance, novita, settings):
    settings.MIGRATION_TIMEOUT_MINUTES = 30
    instance = migrating(make_instance, started_ago=timedelta(minutes=31))
    upstream_jobs(novita, job("running", created=timezone.now() - timedelta(minutes=31)))

    migration.sweep()

    instance.refresh_from_db()
    assert instance.status == Status.FAILED
    assert "not finished after 30 minutes" in instance.failure_reason
    assert "job-1 running" in instance.failure_reason
    assert webhook_statuses(instance) == ["failed"]


def test_stuck_migration_is_reported_even_when_jobs_cannot_be_listed(make_instance, novita):
    instance = migrating(make_instance, started_ago=timedelta(hours=2))
    novita.mock.get(f"{V1}/jobs", json={}, status=503)
    run = migration.sweep()
    instance.refresh_from_db()
    assert instance.status == Status.FAILED and run.failures == 1


def test_ready_after_migration_is_recorded_and_no_longer_followed(make_instance, novita):
    instance = migrating(make_instance, status=Status.READY, next_poll_at=None)
    upstream_jobs(novita, job("success"))

    migration.sweep()

    instance.refresh_from_db()
    assert instance.status == Status.READY and instance.migration_started_at is None
    assert "migration completed" in instance.events.get().reason
    upstream_lists(novita, instance, status="running", spotStatus="running")
    migration.sweep()
    # The first sweep only: one page of instanceMigrate jobs, pages 0 and 1 of the empty
    # autoInstanceMigrate listing.
    assert len(novita.calls("/jobs")) == 3
    assert novita.calls("/gpu/instance/migrate") == []


def test_each_sweep_is_recorded_with_a_heartbeat(novita):
    run = migration.sweep()
    assert SweepRun.objects.get() == run and run.kind == SweepRun.Kind.MIGRATION
    assert float(counters.get_value("heartbeat:migration")) > 0


def test_migration_task_runs_the_sweep(novita):
    from instances import tasks

    tasks.migration_sweep.delay()
    assert SweepRun.objects.filter(kind="migration").count() == 1


# --- against the sandbox ----------------------------------------------------------------------

SANDBOX_KEY = "sandbox-key"
STEP = 0.05


@pytest.fixture
def sandbox(settings):
    with gateway_on_sandbox(settings, api_key=SANDBOX_KEY, step_seconds=STEP, seed=11) as sb:
        yield sb


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(STEP / 2)
    raise AssertionError("condition not met in time")


def running_spot_instance(sandbox, make_instance, name="spot-box"):
    upstream_id = get_client().create_instance(
        name=name,
        product_id="4090.16c.62g-hk-a",
        gpu_num=1,
        rootfs_size=60,
        image_url="pytorch/pytorch:latest",
        ports="8888/http,22/tcp",
        billing_mode="spot",
        cluster_id="cn-hongkong-1",
    )
    wait_for(lambda: sandbox.status(upstream_id) == "running")
    detail = sandbox.get(upstream_id)
    return make_instance(
        name=name,
        novita_instance_id=upstream_id,
        billing_mode="spot",
        webhook_url=HOOK,
        port_mappings=detail["portMappings"],
        health_check_config={"retryAttempts": 0, "retryDelayMs": 100},
        ready_at=timezone.now(),
    )


def drive(instance_id, until, timeout=8.0):
    """Run what beat runs (monitor steps, migration sweeps) until the instance is `until`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        instance = Instance.objects.get(pk=instance_id)
        if instance.status in until:
            return instance
        if instance.next_poll_at is not None:
            Instance.objects.filter(pk=instance_id).update(next_poll_at=timezone.now())
            claimed = monitor.claim(instance_id)
            if claimed is not None:
                monitor.advance(claimed)
        migration.sweep()
        time.sleep(STEP)
    raise AssertionError(f"still {Instance.objects.get(pk=instance_id).status}")


def test_sandbox_reclaimed_spot_instance_migrates_back_to_ready(sandbox, make_instance):
    instance = running_spot_instance(sandbox, make_instance)
    sandbox.reclaim_spot(instance.novita_instance_id)

    migration.sweep()

    assert Instance.objects.get(pk=instance.pk).status == Status.STARTING
    assert sandbox.call_count("/gpu/instance/migrate") == 1
    instance = drive(instance.pk, until={Status.READY, Status.FAILED})
    assert instance.status == Status.READY
    migration.sweep()
    instance.refresh_from_db()
    assert instance.migration_started_at is None
    assert instance.migration_job_id  # the sandbox's instanceMigrate job, found in the job list
    assert sandbox.status(instance.novita_instance_id) == "running"
    assert webhook_statuses(instance) == ["starting", "health_checking", "ready"]
    reasons = list(instance.events.order_by("id").values_list("source", "reason"))
    assert reasons[0][0] == "migration" and "reclaimed" in reasons[0][1]
    assert reasons[-1][0] == "migration" and "migration completed" in reasons[-1][1]
    # Back to normal: later sweeps leave it alone.
    migration.sweep()
    assert sandbox.call_count("/gpu/instance/migrate") == 1


def test_sandbox_migration_refused_until_the_timeout_ends_failed(sandbox, make_instance, settings):
    settings.MIGRATION_TIMEOUT_MINUTES = 0  # the first refusal is already past the timeout
    instance = running_spot_instance(sandbox, make_instance)
    sandbox.reclaim_spot(instance.novita_instance_id)
    sandbox.set_fault(
        path="/gpu/instance/migrate", status=400, reason="MIGRATE_INSUFFICIENT_RESOURCE"
    )

    migration.sweep()

    instance.refresh_from_db()
    assert instance.status == Status.FAILED
    assert "MIGRATE_INSUFFICIENT_RESOURCE" in instance.failure_reason
    assert webhook_statuses(instance) == ["failed"]


def test_sandbox_instance_failing_during_migration_ends_failed(sandbox, make_instance):
    instance = running_spot_instance(sandbox, make_instance)
    sandbox.reclaim_spot(instance.novita_instance_id)
    migration.sweep()
    sandbox.fail_instance(instance.novita_instance_id, "no capacity on the new node")

    instance = drive(instance.pk, until={Status.READY, Status.FAILED})

    assert instance.status == Status.FAILED
    assert "no capacity on the new node" in instance.failure_reason
    assert webhook_statuses(instance)[-1] == "failed"
    migration.sweep()
    instance.refresh_from_db()
    assert instance.migration_started_at is None
