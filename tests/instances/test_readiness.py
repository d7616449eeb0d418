"""Readiness probes run on the probes queue, side by side, within a capped round: a client's
slow or hanging ports can neither hold the cost-control worker nor delay other instances."""

import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from instances import tasks
from instances.models import Instance
from instances.services import health_probe, monitor, queue, readiness
from instances.status import Desired, Status
from tests.instances.upstream import remote_instance

pytestmark = pytest.mark.django_db

PORTS = [{"port": 8888, "endpoint": "http://127.0.0.1:9/", "type": "http"}]


@pytest.fixture
def sent(monkeypatch):
    """Messages the services hand to Celery, kept instead of run."""
    calls = []
    monkeypatch.setattr(queue, "send", lambda task, *a, countdown=None: calls.append(task) or True)
    return calls


def health_checking(make_instance, **fields):
    defaults = {
        "status": Status.HEALTH_CHECKING,
        "port_mappings": PORTS,
        "probe_due_at": timezone.now(),
        "readiness_deadline": timezone.now() + timedelta(minutes=10),
        "health_check_config": {"retryAttempts": 0, "retryDelayMs": 1000},
    }
    defaults.update(fields)
    return make_instance(**defaults)


def test_the_monitor_step_asks_for_a_probe_and_never_probes_itself(
    make_instance, novita, sent, monkeypatch
):
    def no_probing_here(*args, **kwargs):
        raise AssertionError("the monitor step must not probe ports")

    monkeypatch.setattr(health_probe, "probe", no_probing_here)
    instance = make_instance(
        status=Status.STARTING,
        readiness_deadline=timezone.now() + timedelta(minutes=5),
        next_poll_at=timezone.now(),
    )
    novita.get_returns(remote_instance(instance.novita_instance_id, instance.name))
    monitor.advance(monitor.claim(instance.id))
    instance.refresh_from_db()
    assert instance.status == Status.HEALTH_CHECKING
    assert instance.probe_due_at <= timezone.now()
    assert sent == ["instances.tasks.probe_instances"]
    # The monitor keeps watching upstream on its own backoff meanwhile.
    assert instance.next_poll_at > timezone.now()


def test_probes_of_many_instances_run_side_by_side(make_instance, monkeypatch):
    def slow_up(url, timeout):
        time.sleep(0.5)
        return True, "HTTP 200"

    monkeypatch.setattr(health_probe, "_probe_http", slow_up)
    ids = [health_checking(make_instance, name=f"side-{i}").id for i in range(12)]
    started = time.monotonic()
    assert readiness.probe_due() == 12
    # Twelve half-second probes one after another would take six seconds.
    assert time.monotonic() - started < 2.5
    assert set(Instance.objects.filter(pk__in=ids).values_list("status", flat=True)) == {
        Status.READY
    }


def test_a_hanging_instance_does_not_delay_another_ones_readiness(make_instance, monkeypatch):
    def probe_http(url, timeout):
        if "hang" in url:
            time.sleep(2)
            return False, "timeout"
        return True, "HTTP 200"

    monkeypatch.setattr(health_probe, "_probe_http", probe_http)
    slow_ports = [{"port": 8888, "endpoint": "http://127.0.0.1:9/hang", "type": "http"}]
    health_checking(
        make_instance,
        name="attacker",
        port_mappings=slow_ports,
        health_check_config={"timeoutMs": 300000, "retryAttempts": 0},
    )
    quick = health_checking(make_instance, name="quick")
    started = timezone.now()
    assert readiness.probe_due() == 2
    quick.refresh_from_db()
    assert quick.status == Status.READY
    # Ready as soon as its own round ended, not when the hanging one's did (2 s later).
    assert (quick.ready_at - started).total_seconds() < 1


def test_a_probe_round_is_capped_whatever_the_config_asks(monkeypatch):
    calls = []

    def hanging(url, timeout):
        calls.append(timeout)
        time.sleep(timeout)
        return False, "timeout"

    monkeypatch.setattr(health_probe, "_probe_http", hanging)
    config = {"timeoutMs": 300000, "retryAttempts": 10, "retryDelayMs": 30000}
    started = time.monotonic()
    (result,) = health_probe.probe(PORTS, config, None, round_seconds=1.0)
    assert time.monotonic() - started < 1.5
    assert not result.up
    assert max(calls) <= health_probe.MAX_ATTEMPT_SECONDS


def test_the_round_cap_and_probe_lease_stay_below_the_monitor_lease():
    assert health_probe.ROUND_SECONDS < settings.MONITOR_LEASE_SECONDS
    task = tasks.probe_instances
    assert health_probe.ROUND_SECONDS < task.soft_time_limit < task.time_limit
    assert task.time_limit < readiness.PROBE_LEASE.total_seconds()


def test_an_instance_is_probed_by_one_sweep_at_a_time(make_instance):
    health_checking(make_instance)
    now = timezone.now()
    assert len(readiness._claim_due(now)) == 1
    assert readiness._claim_due(now) == []


def test_ports_still_down_are_probed_again_after_retry_delay(make_instance, monkeypatch):
    monkeypatch.setattr(health_probe, "_probe_http", lambda url, timeout: (False, "refused"))
    instance = health_checking(make_instance)
    readiness.probe_due()
    instance.refresh_from_db()
    assert instance.status == Status.HEALTH_CHECKING
    wait = (instance.probe_due_at - timezone.now()).total_seconds()
    assert 0.5 < wait <= 1.0


def test_a_stop_decided_while_probing_wins_over_ready(make_instance):
    instance = health_checking(make_instance)
    claimed = readiness._claim_due(timezone.now())
    Instance.objects.filter(pk=instance.pk).update(
        status=Status.STOPPING, desired_status=Desired.STOPPED
    )
    readiness._apply(claimed[0], [health_probe.ProbeResult(8888, "http", True, "HTTP 200")])
    instance.refresh_from_db()
    assert instance.status == Status.STOPPING
    assert instance.ready_at is None


def test_the_api_schema_says_what_health_check_config_is_clamped_to(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    components = schema["components"]["schemas"]
    config = next(v for k, v in components.items() if k.startswith("HealthCheckConfig"))
    fields = config["properties"]
    assert "Clamped to 10000 ms" in fields["timeoutMs"]["description"]
    assert (
        f"ends after {int(health_probe.ROUND_SECONDS)} s" in fields["retryAttempts"]["description"]
    )
    assert "500 ms" in fields["retryDelayMs"]["description"]


def test_a_second_probe_sweep_leaves_while_one_runs(make_instance):
    from django.core.cache import caches

    health_checking(make_instance)
    caches["default"].add(readiness._LOCK_KEY, "another-sweep", timeout=60)
    assert readiness.probe_due() == 0
    caches["default"].delete(readiness._LOCK_KEY)
    assert readiness.probe_due() == 1
