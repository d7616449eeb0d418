"""The worker side: provisioning, monitoring to ready, stopping, failures, guarded claims."""

import json
from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from instances.models import Instance, WebhookDelivery
from instances.services import health_probe, monitor, provisioning, readiness
from instances.status import Desired, Status
from tests.instances.upstream import remote_instance

pytestmark = pytest.mark.django_db


@pytest.fixture
def ports_answer(monkeypatch):
    """Record which ports were probed and how; every probe succeeds."""
    seen = []

    def http(url, timeout):
        seen.append(("http", url))
        return True, "HTTP 200"

    def tcp(host, port, timeout):
        seen.append(("tcp", f"{host}:{port}"))
        return True, "connected"

    monkeypatch.setattr(health_probe, "_probe_http", http)
    monkeypatch.setattr(health_probe, "_probe_tcp", tcp)
    return seen


def creating(make_instance, **fields):
    defaults = {
        "status": Status.CREATING,
        "novita_instance_id": None,
        "next_poll_at": timezone.now(),
        "webhook_url": "https://hooks.example.com/h",
        "readiness_deadline": timezone.now() + timedelta(minutes=10),
    }
    defaults.update(fields)
    return make_instance(**defaults)


def step(instance_id):
    """One monitor step, as the worker runs it (claim first)."""
    Instance.objects.filter(pk=instance_id).update(next_poll_at=timezone.now())
    claimed = monitor.claim(instance_id)
    assert claimed is not None
    monitor.advance(claimed)
    return Instance.objects.get(pk=instance_id)


def webhook_statuses(instance):
    return [json.loads(d.body)["status"] for d in instance.webhook_deliveries.order_by("id")]


def test_provision_picks_cheapest_available_offer_and_template(make_instance, novita):
    novita.catalogue()
    novita.create_returns("nov-new")
    instance = step(creating(make_instance).id)
    (body,) = novita.bodies("/gpu/instance/create")
    assert body["productId"] == "p-4090-cheap"
    assert body["imageUrl"] == "pytorch/pytorch:latest"
    assert body["ports"] == "8888/http,22/tcp"
    assert body["name"] == instance.name and body["kind"] == "gpu"
    assert instance.novita_instance_id == "nov-new"
    assert instance.status == Status.CREATING


def test_create_sends_the_templates_min_cuda_version(make_instance, novita):
    from tests.instances.upstream import TEMPLATE, V1

    novita.mock.get(f"{V1}/template", json={"template": {**TEMPLATE, "minCudaVersion": "12.4"}})
    novita.catalogue()
    novita.create_returns("nov-new")
    step(creating(make_instance).id)
    (body,) = novita.bodies("/gpu/instance/create")
    assert body["minCudaVersion"] == "12.4"


OPTIONAL_CREATE_FIELDS = ("ports", "envs", "command", "entrypoint", "imageAuthId", "minCudaVersion")


def test_create_sends_every_optional_field_the_template_has(make_instance, novita):
    from tests.instances.upstream import TEMPLATE, V1

    template = {**TEMPLATE, "entrypoint": "/init", "imageAuth": "auth-1", "minCudaVersion": "12.4"}
    novita.mock.get(f"{V1}/template", json={"template": template})
    novita.catalogue()
    novita.create_returns("nov-new")
    step(creating(make_instance).id)
    (body,) = novita.bodies("/gpu/instance/create")
    assert {key: body[key] for key in OPTIONAL_CREATE_FIELDS} == {
        "ports": "8888/http,22/tcp",
        "envs": [{"key": "A", "value": "1"}],
        "command": "jupyter lab",
        "entrypoint": "/init",
        "imageAuthId": "auth-1",
        "minCudaVersion": "12.4",
    }


def test_create_leaves_out_the_optional_fields_the_template_lacks(make_instance, novita):
    from tests.instances.upstream import V1

    bare = {"Id": "bare", "name": "Bare", "image": "busybox", "envs": [], "ports": []}
    novita.mock.get(f"{V1}/template", json={"template": bare})
    novita.catalogue()
    novita.create_returns("nov-new")
    step(creating(make_instance).id)
    (body,) = novita.bodies("/gpu/instance/create")
    assert body["imageUrl"] == "busybox"
    assert set(OPTIONAL_CREATE_FIELDS).isdisjoint(body) and "billingMode" not in body


def test_spot_create_asks_for_spot_offers_and_records_the_spot_price(make_instance, novita):
    from urllib.parse import parse_qs, urlsplit

    from tests.instances.upstream import V1

    novita.mock.get(f"{V1}/clusters", json={"data": [{"id": "cn-hongkong-1", "name": "CN-HK-01"}]})
    novita.mock.get(
        f"{V1}/products",
        json={
            "data": [
                {
                    "id": "p-spot",
                    "name": "RTX 4090 24GB",
                    "availableDeploy": True,
                    "price": 35000,
                    "spotPrice": "17500",
                    "billingMethods": ["onDemand", "spot"],
                    "regions": ["CN-HK-01"],
                }
            ]
        },
    )
    novita.catalogue()
    novita.create_returns("nov-spot")
    instance = step(creating(make_instance, billing_mode="spot", gpu_num=2).id)
    query = parse_qs(urlsplit(novita.calls("/products")[0].request.url).query)
    assert query["billingMethod"] == ["spot"] and query["clusterId"] == ["cn-hongkong-1"]
    (body,) = novita.bodies("/gpu/instance/create")
    assert (body["productId"], body["billingMode"]) == ("p-spot", "spot")
    assert instance.price_per_hour == 17500 * 2


def test_misconfigured_upstream_keeps_a_create_waiting_instead_of_failing(make_instance, novita):
    import re

    novita.mock.get(re.compile(r"https://novita\.test/.*"), status=404, body="<html>404</html>")
    instance = creating(make_instance)
    for _ in range(provisioning.MAX_CREATE_ATTEMPTS + 1):
        instance = step(instance.id)
    assert instance.status == Status.CREATING, list(instance.events.values_list("reason"))
    assert novita.calls("/gpu/instance/create") == []


def test_rejected_create_ends_failed_with_reason_and_webhook(make_instance, novita):
    novita.catalogue()
    novita.create_returns(
        status=400,
        body={"code": 400, "reason": "INSUFFICIENT_RESOURCE", "message": "no capacity"},
    )
    instance = step(creating(make_instance).id)
    assert instance.status == Status.FAILED
    assert "INSUFFICIENT_RESOURCE" in instance.failure_reason
    assert webhook_statuses(instance) == ["failed"]
    payload = json.loads(instance.webhook_deliveries.get().body)
    assert "INSUFFICIENT_RESOURCE" in payload["data"]["reason"]


def test_unknown_product_fails_without_create_call(make_instance, novita):
    novita.catalogue()
    instance = step(creating(make_instance, product_name="Imaginary GPU").id)
    assert instance.status == Status.FAILED
    assert novita.calls("/gpu/instance/create") == []


def test_ambiguous_create_is_looked_up_before_retrying(make_instance, novita):
    novita.catalogue()
    novita.mock.post(
        "https://novita.test/gpu-instance/openapi/v1/gpu/instance/create",
        body=requests.exceptions.ReadTimeout("read timed out"),
    )
    instance = step(creating(make_instance, name="ambiguous").id)
    assert instance.status == Status.CREATING and instance.novita_instance_id is None
    # Upstream did create it despite the timeout: the retry must adopt it, not create again.
    novita.list_returns([remote_instance("nov-made", "ambiguous", status="creating")])
    instance = step(instance.id)
    assert instance.novita_instance_id == "nov-made"
    assert len(novita.calls("/gpu/instance/create")) == 1


def test_ambiguous_create_never_adopts_a_terminated_namesakes_upstream_instance(
    make_instance, novita
):
    make_instance(name="reused", status=Status.TERMINATED, novita_instance_id="nov-old")
    novita.catalogue()
    novita.mock.post(
        "https://novita.test/gpu-instance/openapi/v1/gpu/instance/create",
        body=requests.exceptions.ReadTimeout("read timed out"),
    )
    instance = step(creating(make_instance, name="reused", novita_instance_id=None).id)
    # Upstream still lists the old instance (being removed) and the one our timed-out call made.
    novita.list_returns(
        [
            remote_instance("nov-old", "reused", status="removing"),
            remote_instance("nov-new", "reused", status="creating"),
        ]
    )
    instance = step(instance.id)
    assert instance.novita_instance_id == "nov-new"


def test_monitor_takes_instance_to_ready_after_ports_answer(make_instance, novita, ports_answer):
    instance = creating(make_instance, novita_instance_id="nov-1")
    novita.get_returns(remote_instance("nov-1", instance.name, status="pulling"))
    instance = step(instance.id)
    assert instance.status == Status.CREATING
    novita.mock.replace(
        "GET",
        "https://novita.test/gpu-instance/openapi/v1/gpu/instance",
        json=remote_instance("nov-1", instance.name, status="running"),
    )
    instance = step(instance.id)
    assert instance.status == Status.READY
    assert instance.ready_at is not None and instance.auto_stop_at is not None
    assert instance.next_poll_at is None
    assert instance.connection_details["ssh"] == "ssh root@abc.novita.test -p 22"
    assert "hunter2" not in json.dumps(instance.connection_details)
    assert webhook_statuses(instance) == ["health_checking", "ready"]
    # Only the HTTP port is probed by default, and with an HTTP GET.
    assert ports_answer == [("http", "https://abc.novita.test:8888")]


def test_ssh_target_port_gets_tcp_connect_not_http(make_instance, novita, ports_answer):
    instance = make_instance(
        status=Status.STARTING,
        target_port=22,
        readiness_deadline=timezone.now() + timedelta(minutes=5),
    )
    novita.get_returns(remote_instance(instance.novita_instance_id, instance.name))
    instance = step(instance.id)
    assert instance.status == Status.READY
    assert ports_answer == [("tcp", "abc.novita.test:22")]


def test_ports_not_answering_keep_health_checking_until_deadline(
    make_instance, novita, monkeypatch
):
    monkeypatch.setattr(health_probe, "_probe_http", lambda url, timeout: (False, "refused"))
    instance = make_instance(
        status=Status.STARTING,
        health_check_config={"retryAttempts": 0, "retryDelayMs": 100},
        readiness_deadline=timezone.now() + timedelta(minutes=5),
    )
    novita.get_returns(remote_instance(instance.novita_instance_id, instance.name))
    instance = step(instance.id)
    assert instance.status == Status.HEALTH_CHECKING
    Instance.objects.filter(pk=instance.pk).update(
        readiness_deadline=timezone.now() - timedelta(seconds=1)
    )
    instance = step(instance.id)
    assert instance.status == Status.FAILED
    assert "maxWaitTimeMs" in instance.failure_reason


def test_ports_answering_in_a_later_round_make_instance_ready(make_instance, novita, monkeypatch):
    answers = iter([(False, "refused"), (True, "HTTP 200")])
    monkeypatch.setattr(health_probe, "_probe_http", lambda url, timeout: next(answers))
    instance = make_instance(
        status=Status.STARTING,
        health_check_config={"retryAttempts": 0, "retryDelayMs": 100},
        readiness_deadline=timezone.now() + timedelta(minutes=5),
    )
    novita.get_returns(remote_instance(instance.novita_instance_id, instance.name))
    instance = step(instance.id)
    assert instance.status == Status.HEALTH_CHECKING
    # The next round is due retryDelayMs later, on the probe sweep's clock.
    assert instance.probe_due_at - timezone.now() < timedelta(milliseconds=150)
    Instance.objects.filter(pk=instance.pk).update(probe_due_at=timezone.now())
    assert readiness.probe_due() == 1
    assert Instance.objects.get(pk=instance.pk).status == Status.READY


def test_upstream_status_error_fails_instance(make_instance, novita):
    instance = creating(make_instance, novita_instance_id="nov-1")
    novita.get_returns(
        remote_instance(
            "nov-1",
            instance.name,
            status="exited",
            statusError={"state": "failed", "message": "OOM"},
        )
    )
    instance = step(instance.id)
    assert instance.status == Status.FAILED
    assert "OOM" in instance.failure_reason


def test_stop_monitor_ends_stopped_when_upstream_exited(make_instance, novita):
    instance = make_instance(status=Status.STOPPING, desired_status=Desired.STOPPED)
    novita.get_returns(remote_instance(instance.novita_instance_id, instance.name, status="exited"))
    instance = step(instance.id)
    assert instance.status == Status.STOPPED
    assert instance.stopped_at is not None and instance.next_poll_at is None


def test_instance_exiting_on_its_own_is_exited_not_stopped(make_instance, novita):
    instance = make_instance(status=Status.STARTING, drive_attempts=0)
    novita.get_returns(
        remote_instance(instance.novita_instance_id, instance.name, status="stopping")
    )
    instance = step(instance.id)
    assert instance.status == Status.STOPPING
    novita.mock.replace(
        "GET",
        "https://novita.test/gpu-instance/openapi/v1/gpu/instance",
        json=remote_instance(instance.novita_instance_id, instance.name, status="exited"),
    )
    instance = step(instance.id)
    assert instance.status == Status.EXITED


def test_failed_stop_is_driven_again_then_fails_visibly(make_instance, novita):
    instance = make_instance(status=Status.STOPPING, desired_status=Desired.STOPPED)
    novita.get_returns(remote_instance(instance.novita_instance_id, instance.name))
    novita.action_returns("stop")
    for _ in range(monitor.MAX_DRIVE_ATTEMPTS):
        instance = step(instance.id)
        assert instance.status == Status.STOPPING
    assert len(novita.calls("/gpu/instance/stop")) == monitor.MAX_DRIVE_ATTEMPTS
    instance = step(instance.id)
    assert instance.status == Status.FAILED
    assert "stop attempts" in instance.failure_reason


def test_instance_gone_upstream_becomes_terminated(make_instance, novita):
    instance = make_instance(status=Status.STOPPING, desired_status=Desired.TERMINATED)
    novita.get_returns(
        status=400, body={"code": 400, "reason": "RESOURCE_NOT_FOUND", "message": "gone"}
    )
    instance = step(instance.id)
    assert instance.status == Status.TERMINATED
    assert instance.events.filter(to_status="terminated", reason__contains="deleted").exists()


def test_unknown_upstream_status_keeps_current_status(make_instance, novita):
    instance = make_instance(status=Status.STARTING)
    novita.get_returns(
        remote_instance(instance.novita_instance_id, instance.name, status="teleporting")
    )
    instance = step(instance.id)
    assert instance.status == Status.STARTING
    assert instance.upstream_status == "teleporting"
    assert instance.next_poll_at is not None


def test_upstream_outage_keeps_polling_with_backoff(make_instance, novita):
    instance = make_instance(
        status=Status.STARTING,
        poll_interval=2.0,
        readiness_deadline=timezone.now() + timedelta(minutes=5),
    )
    novita.get_returns(status=503, body={"code": 503, "reason": "UNKNOWN", "message": "down"})
    instance = step(instance.id)
    assert instance.status == Status.STARTING
    assert instance.poll_interval == pytest.approx(3.0)


def test_only_one_of_two_overlapping_claims_wins(make_instance):
    instance = make_instance(status=Status.STARTING, next_poll_at=timezone.now())
    assert monitor.claim(instance.id) is not None
    assert monitor.claim(instance.id) is None


def test_monitor_sweep_claims_each_due_instance_once(make_instance):
    due = [make_instance(status=Status.STARTING, next_poll_at=timezone.now()) for _ in range(3)]
    make_instance(status=Status.STARTING, next_poll_at=timezone.now() + timedelta(minutes=1))
    first = monitor.claim_due()
    second = monitor.claim_due()
    assert {pk for pk, _ in first} == {i.pk for i in due}
    assert second == []


def test_worker_that_died_mid_monitor_is_picked_up_after_lease(make_instance):
    instance = make_instance(status=Status.STARTING, next_poll_at=timezone.now())
    assert monitor.claim(instance.id) is not None
    # The worker died: nobody rescheduled. Once the lease passes, the sweep claims it again.
    Instance.objects.filter(pk=instance.pk).update(
        next_poll_at=timezone.now() - timedelta(seconds=1)
    )
    assert [pk for pk, _ in monitor.claim_due()] == [instance.pk]


def test_status_change_writes_outbox_row_only_with_webhook_url(make_instance, novita):
    with_hook = make_instance(
        status=Status.STOPPING,
        desired_status=Desired.STOPPED,
        webhook_url="https://hooks.example.com/x",
    )
    without = make_instance(status=Status.STOPPING, desired_status=Desired.STOPPED)
    novita.mock.get(
        "https://novita.test/gpu-instance/openapi/v1/gpu/instance",
        json=remote_instance(status="exited"),
    )
    step(with_hook.id)
    step(without.id)
    assert WebhookDelivery.objects.filter(instance=with_hook).count() == 1
    assert WebhookDelivery.objects.filter(instance=without).count() == 0


def test_create_succeeds_when_the_broker_is_down(
    api, monkeypatch, django_capture_on_commit_callbacks
):
    """A broker outage delays work (the monitor sweep finds the instance) but never fails the
    client's request."""
    from instances import tasks

    def broker_down(*args, **kwargs):
        raise ConnectionError("redis: connection refused")

    monkeypatch.setattr(tasks.poll_instance, "apply_async", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            "/api/instances",
            {"name": "no-broker", "productName": "RTX 4090 24GB", "templateId": "t"},
            format="json",
        )
    assert response.status_code == 201
    instance = Instance.objects.get(name="no-broker")
    assert instance.next_poll_at <= timezone.now(), "due for the monitor sweep"
    assert [pk for pk, _ in monitor.claim_due()] == [instance.pk]


def test_misconfigured_upstream_fails_a_create_only_at_its_deadline(make_instance, novita):
    import re

    novita.mock.get(re.compile(r"https://novita\.test/.*"), status=401, body="{}")
    instance = creating(make_instance, readiness_deadline=timezone.now() - timedelta(seconds=1))
    instance = step(instance.id)
    assert instance.status == Status.FAILED
    assert instance.failure_reason == "not ready before maxWaitTimeMs passed"


@pytest.mark.parametrize(
    "command, status, desired",
    [
        ("start", Status.STOPPED, Desired.RUNNING),
        ("stop", Status.READY, Desired.STOPPED),
        ("delete", Status.READY, Desired.TERMINATED),
    ],
)
def test_each_command_starts_a_fresh_drive_under_a_new_operation(
    make_instance, novita, command, status, desired
):
    from instances.services import commands
    from instances.services.polling import FIRST_POLL_DELAY

    instance = make_instance(
        status=status,
        drive_attempts=4,
        operation_id="op_old",
        auto_stop_at=timezone.now(),
        webhook_url="https://hooks.example.com/old",
    )
    novita.action_returns(command)
    named = {} if command == "delete" else {"webhook_url": "https://hooks.example.com/new"}
    before = timezone.now()

    getattr(commands, f"{command}_instance")(instance, **named)

    instance.refresh_from_db()
    assert instance.desired_status == desired
    assert instance.operation_id.startswith(f"op_{command}_")
    assert (instance.drive_attempts, instance.auto_stop_at) == (0, None)
    assert instance.next_poll_at - before >= timedelta(seconds=FIRST_POLL_DELAY)
    assert instance.next_poll_at - timezone.now() <= timedelta(seconds=FIRST_POLL_DELAY)
    expected_hook = "https://hooks.example.com/" + ("old" if command == "delete" else "new")
    assert instance.webhook_url == expected_hook


def test_readiness_wait_is_max_wait_time_ms_else_ten_minutes():
    assert Instance(health_check_config={}).readiness_wait == timedelta(minutes=10)
    assert Instance(health_check_config=None).readiness_wait == timedelta(minutes=10)
    assert Instance(health_check_config={"maxWaitTimeMs": 90_000}).readiness_wait == timedelta(
        seconds=90
    )


@pytest.mark.parametrize(
    "config, wait",
    [({}, timedelta(minutes=10)), ({"maxWaitTimeMs": 90_000}, timedelta(seconds=90))],
)
def test_create_and_start_give_readiness_the_configured_max_wait(
    make_instance, novita, config, wait
):
    from instances.services import commands

    before = timezone.now()
    created = commands.create_instance(
        {
            "name": "waits",
            "product_name": "RTX 4090 24GB",
            "template_id": "pytorch-jupyter",
            "health_check_config": config,
        }
    )
    after = timezone.now()
    boot = commands.ESTIMATED_BOOT
    assert before + boot + wait <= created.readiness_deadline <= after + boot + wait

    stopped = make_instance(status=Status.STOPPED)
    novita.action_returns("start")
    before = timezone.now()
    commands.start_instance(stopped, health_check_config=config)
    after = timezone.now()
    stopped.refresh_from_db()
    assert before + wait <= stopped.readiness_deadline <= after + wait
