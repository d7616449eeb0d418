"""Auto-stop service: who is idle, who gets stopped (once), who is warned, and what is recorded.

The clock is controlled: sweeps get `now=`, heartbeats see a patched timezone.now.
"""

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.admin.utils import quote
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from instances import selectors, tasks
from instances.models import Instance, InstanceEvent, SweepRun, WebhookDelivery
from instances.services import autostop, health_probe, readiness
from instances.status import Desired, Status
from ops import counters
from tests.instances.upstream import V1, remote_instance

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
HOOK = "https://hooks.example.com/h"
STOP_URL = f"{V1}/gpu/instance/stop"


def minutes(n):
    return timedelta(minutes=n)


@pytest.fixture
def clock(monkeypatch):
    """Set the time seen by timezone.now (heartbeats, the stats endpoint)."""

    def set_to(when):
        monkeypatch.setattr(timezone, "now", lambda: when)

    return set_to


@pytest.fixture
def stops(novita):
    """Upstream accepts every stop; returns the instance ids it was asked to stop."""
    novita.action_returns("stop")

    def asked():
        return [
            json.loads(c.request.body)["instanceId"] for c in novita.calls("/gpu/instance/stop")
        ]

    return asked


def ready(make_instance, *, ready_at=T0, last_used_at=None, **fields):
    """A ready instance with its deadline stored as the lifecycle stores it."""
    instance = make_instance(
        status=fields.pop("status", Status.READY),
        ready_at=ready_at,
        last_used_at=last_used_at,
        **fields,
    )
    instance.auto_stop_at = instance.auto_stop_deadline()
    if instance.auto_stop_at is not None:
        instance.save(update_fields=["auto_stop_at"])
    return instance


def reload(instance):
    return Instance.objects.get(pk=instance.pk)


# --- the idle rule --------------------------------------------------------------------------


def test_idle_instance_is_stopped_with_reason_event_and_webhook(make_instance, stops):
    instance = ready(make_instance, last_used_at=T0 + minutes(5), webhook_url=HOOK)
    result = autostop.sweep(now=T0 + minutes(28))
    instance = reload(instance)
    assert result.stopped == [instance.id]
    assert instance.status == Status.STOPPING
    assert instance.desired_status == Desired.STOPPED
    assert instance.auto_stop_at is None
    assert stops() == [instance.novita_instance_id]
    event = instance.events.get(source="auto-stop")
    assert (event.from_status, event.to_status) == (Status.READY, Status.STOPPING)
    assert event.reason == ("idle 23 min > 20 min threshold, last used 2026-11-27T10:05:00.000Z")
    (delivery,) = WebhookDelivery.objects.filter(instance=instance)
    payload = json.loads(delivery.body)
    assert payload["status"] == "stopping"
    assert payload["data"]["reason"] == event.reason


def test_active_instance_is_left_running(make_instance, stops):
    instance = ready(make_instance, last_used_at=T0 + minutes(10))
    result = autostop.sweep(now=T0 + minutes(29))
    assert result.stopped == [] and result.candidates == []
    assert reload(instance).status == Status.READY
    assert stops() == []


def test_heartbeat_postpones_the_stop(make_instance, stops, clock):
    instance = ready(make_instance)
    clock(T0 + minutes(15))
    autostop.record_heartbeat(instance_id=instance.id)
    assert reload(instance).auto_stop_at == T0 + minutes(35)
    # Without the heartbeat it would be stopped at 10:20; now it is not idle until 10:35.
    assert autostop.sweep(now=T0 + minutes(25)).stopped == []
    assert reload(instance).status == Status.READY
    assert autostop.sweep(now=T0 + minutes(36)).stopped == [instance.id]
    assert stops() == [instance.novita_instance_id]


def test_heartbeat_never_moves_last_used_backwards(make_instance, clock):
    instance = ready(make_instance)
    clock(T0 + minutes(15))
    autostop.record_heartbeat(instance_id=instance.id)
    _, stored = autostop.record_heartbeat(instance_id=instance.id, used_at=T0 + minutes(5))
    instance = reload(instance)
    assert stored == instance.last_used_at == T0 + minutes(15)
    assert instance.auto_stop_at == T0 + minutes(35)


def test_heartbeat_clears_the_warning_so_a_later_one_can_fire(make_instance, clock):
    instance = ready(make_instance, auto_stop_warned_at=T0 + minutes(17))
    clock(T0 + minutes(18))
    autostop.record_heartbeat(instance_id=instance.id)
    assert reload(instance).auto_stop_warned_at is None


def test_heartbeat_slightly_ahead_of_our_clock_is_clamped_to_now(make_instance, clock):
    instance = ready(make_instance)
    clock(T0 + minutes(10))
    _, stored = autostop.record_heartbeat(
        instance_id=instance.id, used_at=T0 + minutes(10) + timedelta(seconds=30)
    )
    assert stored == reload(instance).last_used_at == T0 + minutes(10)


def test_heartbeat_is_two_queries(make_instance, clock):
    instance = ready(make_instance)
    clock(T0 + minutes(10))
    with CaptureQueriesContext(connection) as ctx:
        autostop.record_heartbeat(instance_id=instance.id)
    assert len(ctx.captured_queries) == 2


def test_heartbeat_on_a_stopped_instance_sets_no_deadline(make_instance, clock):
    instance = make_instance(status=Status.STOPPED, ready_at=T0, auto_stop_at=None)
    clock(T0 + minutes(30))
    autostop.record_heartbeat(instance_id=instance.id)
    instance = reload(instance)
    assert instance.last_used_at == T0 + minutes(30)
    assert instance.auto_stop_at is None


def test_threshold_override_is_respected(make_instance, stops):
    patient = ready(make_instance, auto_stop_minutes=60)
    eager = ready(make_instance, auto_stop_minutes=5)
    default = ready(make_instance)
    result = autostop.sweep(now=T0 + minutes(30))
    assert sorted(result.stopped) == sorted([eager.id, default.id])
    assert reload(patient).status == Status.READY
    reasons = {c.instance_id: c.reason for c in result.candidates}
    assert reasons[eager.id].startswith("idle 30 min > 5 min threshold")
    assert autostop.sweep(now=T0 + minutes(61)).stopped == [patient.id]


def test_exempt_instance_is_never_stopped(make_instance, stops):
    exempt = ready(make_instance, auto_stop_enabled=False)
    # Even a deadline written before the exemption must not stop it.
    Instance.objects.filter(pk=exempt.pk).update(auto_stop_at=T0)
    assert autostop.sweep(now=T0 + minutes(600)).stopped == []
    assert reload(exempt).status == Status.READY
    assert stops() == []


@pytest.mark.parametrize(
    "status,stopped",
    [
        (Status.READY, True),
        (Status.RUNNING, True),
        (Status.HEALTH_CHECKING, True),
        (Status.CREATING, False),
        (Status.STARTING, False),
        (Status.STOPPING, False),
        (Status.STOPPED, False),
        (Status.EXITED, False),
        (Status.FAILED, False),
        (Status.TERMINATED, False),
    ],
)
def test_only_ready_running_and_health_checking_instances_are_stopped(
    make_instance, stops, status, stopped
):
    instance = make_instance(status=status, ready_at=T0, auto_stop_at=T0 + minutes(20))
    result = autostop.sweep(now=T0 + minutes(60))
    assert (result.stopped == [instance.id]) is stopped
    assert (reload(instance).status == Status.STOPPING) is (stopped or status == Status.STOPPING)
    assert len(stops()) == (1 if stopped else 0)


def test_instance_without_ready_time_is_never_a_candidate(make_instance, stops):
    # Running upstream but never ready here: no idle signal, so it counts as active.
    instance = make_instance(status=Status.RUNNING, ready_at=None, auto_stop_at=T0)
    result = autostop.sweep(now=T0 + minutes(600))
    assert result.stopped == [] and result.candidates == []
    assert reload(instance).status == Status.RUNNING


def test_stale_deadline_is_checked_and_repaired_not_obeyed(make_instance, stops):
    # The stored deadline says 10:20 but a heartbeat at 10:30 (e.g. the default threshold was
    # raised meanwhile, or a deadline from before the heartbeat): the row is verified first.
    instance = make_instance(
        status=Status.READY, ready_at=T0, last_used_at=T0 + minutes(30), auto_stop_at=T0
    )
    assert autostop.sweep(now=T0 + minutes(40)).stopped == []
    instance = reload(instance)
    assert instance.status == Status.READY
    assert instance.auto_stop_at == T0 + minutes(50)


def test_old_heartbeat_from_before_a_restart_does_not_make_it_idle(make_instance, stops):
    instance = make_instance(
        status=Status.READY, ready_at=T0, last_used_at=T0 - timedelta(days=1), auto_stop_at=None
    )
    assert autostop.sweep(now=T0 + minutes(10)).stopped == []
    assert reload(instance).auto_stop_at == T0 + minutes(20)
    assert autostop.sweep(now=T0 + minutes(21)).stopped == [instance.id]


def test_ready_transition_ignores_a_heartbeat_from_before_the_restart(
    make_instance, novita, monkeypatch
):
    monkeypatch.setattr(health_probe, "_probe_http", lambda url, timeout: (True, "HTTP 200"))
    from instances.services import monitor

    instance = make_instance(
        status=Status.STARTING,
        last_used_at=timezone.now() - timedelta(days=1),
        next_poll_at=timezone.now(),
        readiness_deadline=timezone.now() + minutes(5),
    )
    novita.get_returns(remote_instance(instance.novita_instance_id, instance.name))
    monitor.advance(monitor.claim(instance.id))
    instance = reload(instance)
    assert instance.status == Status.READY
    assert instance.auto_stop_at >= timezone.now() + minutes(19)


def test_auto_stop_disabled_never_stops(make_instance, stops, settings):
    settings.AUTO_STOP_ENABLED = False
    instance = ready(make_instance)
    result = autostop.sweep(now=T0 + minutes(600))
    assert result.enabled is False and result.stopped == []
    assert reload(instance).status == Status.READY
    assert stops() == []
    assert not SweepRun.objects.exists()


# --- dry run, overlap, failures -----------------------------------------------------------------


def test_dry_run_stops_nothing_and_makes_no_upstream_call(make_instance, novita):
    idle = ready(make_instance, webhook_url=HOOK)
    result = autostop.sweep(dry_run=True, now=T0 + minutes(45))
    assert [c.instance_id for c in result.candidates] == [idle.id]
    assert result.candidates[0].idle_minutes == pytest.approx(45)
    assert result.stopped == []
    assert reload(idle).status == Status.READY
    assert novita.calls("/gpu/instance/stop") == []
    assert not InstanceEvent.objects.filter(source="auto-stop").exists()
    assert not WebhookDelivery.objects.exists()
    run = SweepRun.objects.get()
    assert run.dry_run and run.acted == 0
    assert counters.get_value(autostop.HEARTBEAT_KEY) is None


def test_overlapping_sweeps_stop_each_instance_once(make_instance, stops, monkeypatch):
    instance = ready(make_instance)
    select = autostop._select_due
    inner = []

    def select_then_let_another_sweep_run(now):
        rows = select(now)
        if not inner:
            # A second sweep starts after ours selected, and finishes before ours claims.
            inner.append(None)
            inner[0] = autostop.sweep(now=now)
        return rows

    monkeypatch.setattr(autostop, "_select_due", select_then_let_another_sweep_run)
    outer = autostop.sweep(now=T0 + minutes(30))
    assert inner[0].stopped == [instance.id]
    assert outer.stopped == []
    assert [c.action for c in outer.candidates] == ["skipped"]
    assert stops() == [instance.novita_instance_id]
    assert InstanceEvent.objects.filter(instance=instance, source="auto-stop").count() == 1


def test_heartbeat_between_selection_and_claim_prevents_the_stop(
    make_instance, stops, monkeypatch, clock
):
    instance = ready(make_instance)
    select = autostop._select_due

    def select_then_heartbeat(now):
        rows = select(now)
        clock(now)
        autostop.record_heartbeat(instance_id=instance.id)
        return rows

    monkeypatch.setattr(autostop, "_select_due", select_then_heartbeat)
    result = autostop.sweep(now=T0 + minutes(30))
    assert result.stopped == [] and [c.action for c in result.candidates] == ["skipped"]
    assert reload(instance).status == Status.READY
    assert stops() == []


def test_failing_upstream_stop_does_not_prevent_the_others(make_instance, novita):
    instances = [ready(make_instance) for _ in range(3)]
    broken = instances[1].novita_instance_id

    def answer(request):
        if json.loads(request.body)["instanceId"] == broken:
            return 500, {}, json.dumps({"code": 500, "reason": "INTERNAL", "message": "boom"})
        return 200, {}, "{}"

    novita.mock.add_callback("POST", STOP_URL, callback=answer)
    result = autostop.sweep(now=T0 + minutes(30))
    assert sorted(result.stopped) == sorted(i.id for i in instances)
    assert [f["instanceId"] for f in result.failures] == [instances[1].id]
    assert len(novita.calls("/gpu/instance/stop")) == 3
    # Desired state is recorded, so the monitor re-sends the failed stop soon.
    failed = reload(instances[1])
    assert failed.status == Status.STOPPING and failed.desired_status == Desired.STOPPED
    assert failed.next_poll_at <= timezone.now() + timedelta(seconds=5)
    assert failed.events.filter(reason__startswith="upstream stop failed").exists()
    run = SweepRun.objects.get()
    assert (run.acted, run.failures) == (3, 1)
    actions = {e["instanceId"]: e["action"] for e in run.summary}
    assert actions[instances[1].id] == "stopFailed"


# --- warnings -------------------------------------------------------------------------------


def test_warning_fires_once_before_the_deadline(make_instance, stops, settings, clock):
    settings.AUTO_STOP_WARNING_MINUTES = 2
    settings.AUTO_STOP_CHECK_INTERVAL_MINUTES = 5
    instance = ready(make_instance, webhook_url=HOOK)  # deadline 10:20
    assert autostop.sweep(now=T0 + minutes(12)).warned == []  # 8 min ahead: next sweep will do
    assert autostop.sweep(now=T0 + minutes(14)).warned == [instance.id]
    assert autostop.sweep(now=T0 + minutes(16)).warned == []
    (warning,) = WebhookDelivery.objects.filter(event="instance.auto_stop_warning")
    payload = json.loads(warning.body)
    assert payload["event"] == "instance.auto_stop_warning"
    assert payload["data"]["autoStopAt"] == "2026-11-27T10:20:00.000Z"
    assert "last-used" in payload["data"]["reason"]
    assert reload(instance).status == Status.READY
    # Used again, then idle again: a new warning for the new deadline.
    clock(T0 + minutes(17))
    autostop.record_heartbeat(instance_id=instance.id)
    assert autostop.sweep(now=T0 + minutes(31)).warned == [instance.id]
    assert WebhookDelivery.objects.filter(event="instance.auto_stop_warning").count() == 2


def _warnings():
    return [
        json.loads(d.body)["data"]["autoStopAt"]
        for d in WebhookDelivery.objects.filter(event="instance.auto_stop_warning").order_by("pk")
    ]


def test_operator_saving_settings_after_a_restart_keeps_deadline_and_warning_right(
    admin_client, make_instance, stops, settings, clock
):
    # Issue 15: last heartbeat at 09:45, restarted and ready at 10:00, so idle since 10:00. An
    # operator then changes its threshold in the admin from 30 to 20 minutes: due at 10:20.
    settings.AUTO_STOP_WARNING_MINUTES = 2
    settings.AUTO_STOP_CHECK_INTERVAL_MINUTES = 5
    instance = ready(
        make_instance,
        ready_at=T0,
        last_used_at=T0 - minutes(15),
        auto_stop_minutes=30,
        webhook_url=HOOK,
    )
    clock(T0 + minutes(1))
    response = admin_client.post(
        reverse("admin:instances_instance_change", args=[quote(instance.pk)]),
        {
            "webhook_deliveries-TOTAL_FORMS": "0",
            "webhook_deliveries-INITIAL_FORMS": "0",
            "webhook_deliveries-MIN_NUM_FORMS": "0",
            "webhook_deliveries-MAX_NUM_FORMS": "1000",
            "auto_stop_enabled": "on",
            "auto_stop_minutes": "20",
        },
    )
    assert response.status_code == 302
    assert reload(instance).auto_stop_at == T0 + minutes(20)

    # Beat's sweeps, every 5 minutes: one warning naming 10:20, then the stop after 10:20.
    for at in (1, 6, 11, 16):
        assert autostop.sweep(now=T0 + minutes(at)).stopped == []
    assert _warnings() == ["2026-11-27T10:20:00.000Z"]
    assert autostop.sweep(now=T0 + minutes(21)).stopped == [instance.id]
    assert _warnings() == ["2026-11-27T10:20:00.000Z"]


def test_a_deadline_the_sweep_moves_later_is_warned_of_again(make_instance, stops, settings):
    settings.AUTO_STOP_WARNING_MINUTES = 2
    settings.AUTO_STOP_CHECK_INTERVAL_MINUTES = 5
    instance = ready(make_instance, webhook_url=HOOK)  # deadline 10:20
    assert autostop.sweep(now=T0 + minutes(14)).warned == [instance.id]
    # The default threshold is raised after the warning: the stored deadline is stale.
    settings.AUTO_STOP_INACTIVITY_THRESHOLD_MINUTES = 30
    assert autostop.sweep(now=T0 + minutes(21)).stopped == []
    assert reload(instance).auto_stop_at == T0 + minutes(30)
    assert autostop.sweep(now=T0 + minutes(24)).warned == [instance.id]
    assert _warnings() == ["2026-11-27T10:20:00.000Z", "2026-11-27T10:30:00.000Z"]
    assert autostop.sweep(now=T0 + minutes(31)).stopped == [instance.id]


def test_warning_needs_a_webhook_url(make_instance, stops):
    instance = ready(make_instance)
    assert autostop.sweep(now=T0 + minutes(18)).warned == []
    assert reload(instance).auto_stop_warned_at is None


# --- bookkeeping: run rows, heartbeat, counters, query count ------------------------------------


def test_sweep_records_its_run_heartbeat_and_counter(make_instance, stops):
    idle = ready(make_instance)
    ready(make_instance, last_used_at=T0 + minutes(25))
    autostop.sweep(now=T0 + minutes(30))
    run = SweepRun.objects.get()
    assert run.kind == "auto-stop" and not run.dry_run
    assert (run.examined, run.acted, run.failures) == (1, 1, 0)
    assert run.summary == [
        {
            "instanceId": idle.id,
            "action": "stopped",
            "reason": "idle 30 min > 20 min threshold, never used since ready at "
            "2026-11-27T10:00:00.000Z",
        }
    ]
    assert counters.get_all()[autostop.STOPPED_COUNTER] == 1
    beat = float(counters.get_value(autostop.HEARTBEAT_KEY))
    assert abs(beat - timezone.now().timestamp()) < 60


def test_manual_sweep_does_not_beat_the_scheduler_heartbeat(make_instance, stops):
    ready(make_instance)
    autostop.sweep(now=T0 + minutes(30), trigger="api")
    assert counters.get_value(autostop.HEARTBEAT_KEY) is None


def test_scheduler_running_follows_the_heartbeat(settings):
    settings.AUTO_STOP_CHECK_INTERVAL_MINUTES = 5
    now = timezone.now().timestamp()
    assert autostop.scheduler_running() is False
    counters.set_value(autostop.HEARTBEAT_KEY, str(now - 9 * 60))
    assert autostop.scheduler_running() is True
    counters.set_value(autostop.HEARTBEAT_KEY, str(now - 11 * 60))
    assert autostop.scheduler_running() is False
    counters.set_value(autostop.HEARTBEAT_KEY, "garbage")
    assert autostop.scheduler_running() is False


def _sweep_queries(make_instance, idle, active):
    for _ in range(idle):
        ready(make_instance, webhook_url=HOOK)
    for _ in range(active):
        ready(make_instance, last_used_at=T0 + minutes(100))
    with CaptureQueriesContext(connection) as ctx:
        result = autostop.sweep(now=T0 + minutes(30))
    assert len(result.stopped) == idle
    return len(ctx.captured_queries)


def test_sweep_query_count_does_not_grow_with_the_fleet(make_instance, stops):
    small = _sweep_queries(make_instance, idle=2, active=3)
    Instance.objects.all().delete()
    SweepRun.objects.all().delete()
    large = _sweep_queries(make_instance, idle=40, active=60)
    assert large == small


def test_celery_task_runs_the_sweep(make_instance, stops):
    instance = ready(make_instance, ready_at=timezone.now() - minutes(30))
    tasks.auto_stop_sweep.delay()
    assert reload(instance).status == Status.STOPPING


# --- precise wake-ups -------------------------------------------------------------------------


@pytest.fixture
def booked(monkeypatch):
    """Wake-up sweeps booked through the queue: (task name, countdown seconds)."""
    from instances.services import queue

    calls = []
    monkeypatch.setattr(
        queue, "send", lambda task, *a, countdown=None: calls.append((task, countdown)) or True
    )
    return calls


def test_sweep_books_a_wakeup_for_a_deadline_before_beats_next_run(make_instance, booked):
    now = timezone.now()
    make_instance(auto_stop_at=now + timedelta(minutes=2), ready_at=now)
    autostop.sweep(now=now)
    ((name, countdown),) = booked
    assert name == "instances.tasks.auto_stop_sweep"
    assert 119 < countdown < 125


def test_no_wakeup_when_beats_next_run_comes_first(make_instance, booked, settings):
    settings.AUTO_STOP_CHECK_INTERVAL_MINUTES = 5
    now = timezone.now()
    make_instance(auto_stop_at=now + timedelta(minutes=7), ready_at=now)
    autostop.sweep(now=now)
    assert booked == []


def test_wakeups_are_never_closer_than_the_minimum_gap(booked):
    now = timezone.now()
    assert autostop.schedule_wakeup(now + timedelta(seconds=1), now=now)
    assert booked[0][1] == pytest.approx(autostop.WAKEUP_MIN_GAP.total_seconds() + 1, abs=0.5)


def test_a_later_wakeup_waits_behind_an_earlier_pending_one(booked):
    now = timezone.now()
    assert autostop.schedule_wakeup(now + timedelta(seconds=60), now=now)
    assert not autostop.schedule_wakeup(now + timedelta(seconds=90), now=now)
    assert autostop.schedule_wakeup(now + timedelta(seconds=30), now=now)
    assert len(booked) == 2


def test_exempt_and_stopped_instances_book_no_wakeup(make_instance, booked):
    now = timezone.now()
    make_instance(auto_stop_at=now + timedelta(minutes=1), auto_stop_enabled=False)
    make_instance(status=Status.STOPPED, auto_stop_at=now + timedelta(minutes=1))
    autostop.sweep(now=now)
    assert booked == []


def test_becoming_ready_with_a_short_threshold_books_a_wakeup(
    make_instance, novita, booked, monkeypatch
):
    from instances.services import monitor

    monkeypatch.setattr(health_probe, "_probe_http", lambda url, timeout: (True, "HTTP 200"))
    instance = make_instance(
        status=Status.STARTING,
        auto_stop_minutes=2,
        readiness_deadline=timezone.now() + timedelta(minutes=5),
        next_poll_at=timezone.now(),
    )
    novita.get_returns(remote_instance(instance.novita_instance_id, instance.name))
    monitor.advance(monitor.claim(instance.id))
    readiness.probe_due()  # the probe sweep (its message was caught by `booked` above)
    assert Instance.objects.get(pk=instance.pk).status == Status.READY
    ((_, countdown),) = [b for b in booked if b[0] == "instances.tasks.auto_stop_sweep"]
    assert 115 < countdown < 125


def test_an_auto_stop_run_drops_auto_stop_runs_past_their_retention(clock, settings):
    settings.SWEEP_RUN_RETENTION_DAYS = 14
    clock(T0)
    old = SweepRun.objects.create(kind=SweepRun.Kind.AUTO_STOP, started_at=T0 - timedelta(days=20))
    recent = SweepRun.objects.create(
        kind=SweepRun.Kind.AUTO_STOP, started_at=T0 - timedelta(days=2)
    )

    autostop.sweep(now=T0)

    assert not SweepRun.objects.filter(pk=old.pk).exists()
    assert SweepRun.objects.filter(pk=recent.pk).exists()


# --- the operator dashboard agrees with the sweep ------------------------------------------


@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("status", list(Status))
def test_dashboard_lists_as_idle_overdue_exactly_what_the_sweep_stops(
    make_instance, stops, status, enabled
):
    instance = make_instance(
        status=status, ready_at=T0, auto_stop_at=T0 + minutes(20), auto_stop_enabled=enabled
    )
    now = T0 + minutes(28)

    overdue = [i.pk for i in selectors.dashboard(now=now).idle_overdue]
    result = autostop.sweep(now=now)

    assert overdue == result.stopped
    if enabled and status == Status.HEALTH_CHECKING:
        # Probing a restarted instance's ports does not keep it from being stopped.
        assert overdue == [instance.pk]
