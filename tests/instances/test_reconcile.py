"""The reconciler: upstream changes made outside the gateway, deletions, failed listings,
desired/actual disagreement, and monitors that died."""

import json
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

from instances.models import Instance, SweepRun, WebhookDelivery
from instances.services import monitor, reconcile
from instances.status import Desired, Status
from ops import counters
from tests.instances.test_sync import (  # noqa: F401 - the autouse fixture applies here too
    list_items,
    private_fleet_cache,
    serve_list,
)
from tests.instances.upstream import V1, remote_instance

pytestmark = pytest.mark.django_db

HOOK = "https://hooks.example.com/h"
NOT_FOUND = {"code": 400, "reason": "RESOURCE_NOT_FOUND", "message": "instance not found"}


def monitor_step(instance_id):
    """One monitor step, as the worker runs it."""
    Instance.objects.filter(pk=instance_id).update(next_poll_at=timezone.now())
    claimed = monitor.claim(instance_id)
    assert claimed is not None
    monitor.advance(claimed)
    return Instance.objects.get(pk=instance_id)


def test_instance_stopped_outside_the_gateway_is_updated_with_event_and_webhook(
    make_instance, novita
):
    instance = make_instance(novita_instance_id="nov-1", webhook_url=HOOK)
    serve_list(novita, list_items(remote_instance("nov-1", instance.name, status="exited")))

    run = reconcile.run()

    instance.refresh_from_db()
    assert instance.status == Status.EXITED
    assert instance.upstream_status == "exited" and instance.stopped_at is not None
    event = instance.events.get(to_status="exited")
    assert event.source == "reconcile" and event.from_status == "ready"
    delivery = WebhookDelivery.objects.get(instance=instance)
    assert json.loads(delivery.body)["status"] == "exited"
    assert (run.kind, run.examined, run.acted, run.failures) == ("reconcile", 1, 1, 0)


def test_instance_deleted_outside_the_gateway_becomes_terminated(make_instance, novita):
    instance = make_instance(novita_instance_id="nov-1", webhook_url=HOOK)
    serve_list(novita, [])
    novita.get_returns(status=400, body=NOT_FOUND)

    reconcile.run()

    instance.refresh_from_db()
    assert instance.status == Status.TERMINATED
    assert instance.upstream_status == "removed"
    assert "no longer exists upstream" in instance.events.get(to_status="terminated").reason
    assert json.loads(WebhookDelivery.objects.get(instance=instance).body)["status"] == (
        "terminated"
    )


def test_failed_listing_terminates_nothing(make_instance, novita):
    instance = make_instance(novita_instance_id="nov-1")
    novita.mock.get(
        f"{V1}/gpu/instances",
        json={"code": 503, "reason": "UNKNOWN", "message": "down"},
        status=503,
    )

    run = reconcile.run()

    instance.refresh_from_db()
    assert instance.status == Status.READY and not instance.events.exists()
    assert run.failures == 1 and "listing failed" in run.summary[0]["error"]
    assert novita.calls("/gpu/instance") == []


def test_listing_that_breaks_after_the_first_page_terminates_nothing(make_instance, novita):
    on_page_two = make_instance(novita_instance_id="nov-150")
    items = list_items(*[remote_instance(f"nov-{i}", f"n-{i}") for i in range(200)])

    def callback(request):
        num = int(parse_qs(urlsplit(request.url).query)["pageNum"][0])
        if num > 1:
            return 502, {}, json.dumps({"code": 502, "reason": "UNKNOWN", "message": "bad"})
        return 200, {}, json.dumps({"instances": items[:100], "total": 200})

    novita.mock.add_callback("GET", f"{V1}/gpu/instances", callback=callback)

    reconcile.run()

    on_page_two.refresh_from_db()
    assert on_page_two.status == Status.READY


def test_instance_missing_from_listing_but_still_there_is_not_terminated(make_instance, novita):
    # A deletion elsewhere shifted the pages while we read, and this one slipped through.
    instance = make_instance(novita_instance_id="nov-1")
    serve_list(novita, [])
    novita.get_returns(remote_instance("nov-1", instance.name, status="running"))

    reconcile.run()

    instance.refresh_from_db()
    assert instance.status == Status.READY
    assert not instance.events.filter(to_status="terminated").exists()


def test_unchanged_fleet_gets_no_events_only_a_sync_time(make_instance, novita):
    instances = [make_instance(novita_instance_id=f"nov-{i}") for i in range(3)]
    before = {i.pk: i.updated_at for i in instances}
    serve_list(
        novita, list_items(*[remote_instance(i.novita_instance_id, i.name) for i in instances])
    )

    run = reconcile.run()

    assert run.acted == 0 and run.examined == 3
    for instance in Instance.objects.all():
        assert instance.status == Status.READY
        assert instance.last_synced_at is not None
        assert instance.updated_at == before[instance.pk]
        assert not instance.events.exists()


def test_desired_stopped_but_running_is_driven_again_then_fails_visibly(make_instance, novita):
    instance = make_instance(
        novita_instance_id="nov-1",
        status=Status.STOPPED,
        desired_status=Desired.STOPPED,
        webhook_url=HOOK,
    )
    serve_list(novita, list_items(remote_instance("nov-1", instance.name, status="running")))
    novita.get_returns(remote_instance("nov-1", instance.name, status="running"))
    novita.action_returns("stop")

    reconcile.run()

    instance.refresh_from_db()
    assert instance.drive_attempts == 1 and instance.next_poll_at is not None
    assert len(novita.calls("/gpu/instance/stop")) == 1
    assert instance.events.filter(source="reconcile", reason__contains="sending stop").exists()
    # The monitor now follows it; upstream keeps ignoring the stop.
    for _ in range(monitor.MAX_DRIVE_ATTEMPTS - 1):
        instance = monitor_step(instance.id)
        assert instance.status == Status.STOPPED
    instance = monitor_step(instance.id)
    assert instance.status == Status.FAILED
    assert "stop attempts" in instance.failure_reason
    assert len(novita.calls("/gpu/instance/stop")) == monitor.MAX_DRIVE_ATTEMPTS
    assert json.loads(WebhookDelivery.objects.get(instance=instance).body)["status"] == "failed"
    # A failed instance stays failed: the next pass does not start the retries over.
    reconcile.run()
    instance.refresh_from_db()
    assert instance.status == Status.FAILED
    assert len(novita.calls("/gpu/instance/stop")) == monitor.MAX_DRIVE_ATTEMPTS


def test_instance_a_monitor_follows_is_left_to_it(make_instance, novita):
    instance = make_instance(
        novita_instance_id="nov-1",
        status=Status.STARTING,
        next_poll_at=timezone.now() + timedelta(seconds=3),
    )
    serve_list(novita, list_items(remote_instance("nov-1", instance.name, status="exited")))

    reconcile.run()

    instance.refresh_from_db()
    assert instance.status == Status.STARTING and not instance.events.exists()


def test_instance_changed_while_listing_is_left_for_the_next_pass(make_instance, novita):
    instance = make_instance(novita_instance_id="nov-1")
    serve_list(novita, list_items(remote_instance("nov-1", instance.name, status="exited")))
    Instance.objects.filter(pk=instance.pk).update(updated_at=timezone.now() + timedelta(seconds=5))

    reconcile.run()

    instance.refresh_from_db()
    assert instance.status == Status.READY


def test_dead_monitors_are_resumed(make_instance, novita):
    orphan = make_instance(novita_instance_id="nov-1", status=Status.STARTING, next_poll_at=None)
    overdue = make_instance(
        novita_instance_id="nov-2",
        status=Status.HEALTH_CHECKING,
        next_poll_at=timezone.now() - timedelta(hours=1),
    )
    settled = make_instance(novita_instance_id="nov-3", status=Status.STOPPED, next_poll_at=None)
    serve_list(
        novita,
        list_items(
            remote_instance("nov-1", orphan.name, status="starting"),
            remote_instance("nov-2", overdue.name),
            remote_instance("nov-3", settled.name, status="exited"),
        ),
    )

    before = timezone.now()
    reconcile.run()

    for instance in (orphan, overdue):
        instance.refresh_from_db()
        assert instance.next_poll_at >= before
        assert instance.events.get().reason.startswith("monitor resumed")
    settled.refresh_from_db()
    assert settled.next_poll_at is None


def test_upstream_failure_still_resumes_dead_monitors(make_instance, novita):
    orphan = make_instance(novita_instance_id="nov-1", status=Status.STARTING, next_poll_at=None)
    novita.mock.get(f"{V1}/gpu/instances", json={}, status=500)
    reconcile.run()
    orphan.refresh_from_db()
    assert orphan.next_poll_at is not None


def test_each_pass_is_recorded_with_a_heartbeat(novita):
    serve_list(novita, [])
    run = reconcile.run()
    assert SweepRun.objects.get() == run
    assert run.kind == SweepRun.Kind.RECONCILE and run.duration_ms >= 0
    assert float(counters.get_value("heartbeat:reconcile")) > 0


def test_reconcile_task_runs_the_pass(novita):
    from instances import tasks

    serve_list(novita, [])
    tasks.reconcile.delay()
    assert SweepRun.objects.filter(kind="reconcile").count() == 1


def test_reclaimed_spot_instance_seen_by_the_pass_is_migrated(make_instance, novita):
    instance = make_instance(novita_instance_id="nov-1", billing_mode="spot")
    serve_list(
        novita,
        list_items(
            remote_instance("nov-1", instance.name, status="exited"),
            spotStatus="terminated",
            spotReclaimTime="1700000000",
        ),
    )
    novita.action_returns("migrate")

    reconcile.run()

    instance.refresh_from_db()
    assert instance.status == Status.STARTING
    assert instance.migration_started_at is not None
    assert instance.events.get(to_status="starting").source == "migration"
    assert len(novita.calls("/gpu/instance/migrate")) == 1


def test_sweep_runs_past_their_retention_are_dropped_when_a_run_is_recorded(novita, settings):
    settings.SWEEP_RUN_RETENTION_DAYS = 14
    now = timezone.now()
    old = SweepRun.objects.create(kind=SweepRun.Kind.RECONCILE, started_at=now - timedelta(days=15))
    recent = SweepRun.objects.create(
        kind=SweepRun.Kind.RECONCILE, started_at=now - timedelta(days=13)
    )
    other_kind = SweepRun.objects.create(
        kind=SweepRun.Kind.AUTO_STOP, started_at=now - timedelta(days=15)
    )
    serve_list(novita, [])

    run = reconcile.run()

    kept = set(SweepRun.objects.values_list("pk", flat=True))
    assert kept == {recent.pk, other_kind.pk, run.pk}
    assert old.pk not in kept


def test_a_retention_of_zero_keeps_every_sweep_run(novita, settings):
    settings.SWEEP_RUN_RETENTION_DAYS = 0
    ancient = SweepRun.objects.create(
        kind=SweepRun.Kind.RECONCILE, started_at=timezone.now() - timedelta(days=3650)
    )
    serve_list(novita, [])

    reconcile.run()

    assert SweepRun.objects.filter(pk=ancient.pk).exists()
