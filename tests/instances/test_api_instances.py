"""Endpoints 2-4 and 6-9 of the contract: status codes, validation rules, response shapes."""

import re
import time
from unittest import mock

import pytest
from django.utils import timezone

from instances import history
from instances.api.views import InstanceDetailView
from instances.models import Instance, InstanceEvent
from instances.representations import InstanceDetailOut
from instances.services import transitions
from instances.status import Desired, Status
from ops import metrics
from ops.models import ApiKey
from tests.instances.upstream import remote_instance
from tests.ops.test_metrics import private_state  # noqa: F401 - fixture
from tests.ops.test_ratelimit import fresh_window

pytestmark = pytest.mark.django_db

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
VALID = {"name": "my-gpu-instance", "productName": "RTX 4090 24GB", "templateId": "pytorch-jupyter"}


def post(api, path, body):
    return api.post(path, body, format="json")


def details_for(response, field):
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    return [d for d in error["details"] if d["field"] == field]


# --- create -----------------------------------------------------------------------------------


def test_create_answers_201_with_contract_shape(api):
    response = post(api, "/api/instances", VALID)
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"instanceId", "status", "message", "estimatedReadyTime"}
    assert body["instanceId"].startswith("inst_")
    assert body["status"] == "creating"
    assert body["message"] == "Instance creation initiated successfully"
    assert ISO.match(body["estimatedReadyTime"])


def test_create_applies_contract_defaults(api):
    instance_id = post(api, "/api/instances", VALID).json()["instanceId"]
    instance = Instance.objects.get(pk=instance_id)
    assert (instance.gpu_num, instance.rootfs_size, instance.region) == (1, 60, "CN-HK-01")
    assert instance.desired_status == Desired.RUNNING
    assert instance.events.filter(source="api", to_status="creating").exists()


def test_create_with_taken_name_is_409(api):
    assert post(api, "/api/instances", VALID).status_code == 201
    response = post(api, "/api/instances", VALID)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "INSTANCE_ALREADY_EXISTS"
    assert Instance.objects.count() == 1


@pytest.mark.parametrize(
    "field,value",
    [
        ("name", "invalid@name"),
        ("name", ""),
        ("name", "x" * 101),
        ("name", 42),
        ("productName", ""),
        ("productName", "p" * 201),
        ("templateId", ""),
        ("gpuNum", 0),
        ("gpuNum", 9),
        ("gpuNum", "2"),
        ("gpuNum", 1.5),
        ("rootfsSize", 19),
        ("rootfsSize", 1001),
        ("region", "MARS-01"),
        ("webhookUrl", "ftp://hooks.example.com/x"),
        ("webhookUrl", "not a url"),
        ("autoStopMinutes", 0),
        ("autoStopEnabled", "yes"),
    ],
)
def test_create_rejects_each_invalid_field(api, field, value):
    response = post(api, "/api/instances", {**VALID, field: value})
    assert response.status_code == 400
    details = details_for(response, field)
    assert details, response.json()
    assert details[0]["message"]
    assert Instance.objects.count() == 0


def test_create_reports_name_pattern_message_and_value(api):
    response = post(api, "/api/instances", {**VALID, "name": "invalid@name"})
    (detail,) = details_for(response, "name")
    assert detail == {
        "field": "name",
        "message": "Name must contain only alphanumeric characters, hyphens, and underscores",
        "value": "invalid@name",
    }


@pytest.mark.parametrize("field", ["name", "productName", "templateId"])
def test_create_requires_field(api, field):
    body = {k: v for k, v in VALID.items() if k != field}
    response = post(api, "/api/instances", body)
    assert response.status_code == 400
    assert details_for(response, field)


def test_create_accepts_every_region(api):
    for index, region in enumerate(["CN-HK-01", "US-WEST-01", "EU-WEST-01", "AS-SGP-02"]):
        body = {**VALID, "name": f"r{index}", "region": region}
        assert post(api, "/api/instances", body).status_code == 201


def test_create_rejects_webhook_resolving_to_private_address(api, monkeypatch):
    from tests import conftest

    monkeypatch.setitem(conftest.FAKE_DNS, "hooks.internal.test", "10.1.2.3")
    response = post(api, "/api/instances", {**VALID, "webhookUrl": "http://hooks.internal.test/x"})
    assert response.status_code == 400
    assert details_for(response, "webhookUrl")


# --- read -----------------------------------------------------------------------------------


def test_get_returns_detail_shape(api, make_instance, novita):
    instance = make_instance(
        name="my-gpu-instance",
        port_mappings=[{"port": 8888, "endpoint": "https://abc.novita.test:8888", "type": "http"}],
        connection_details={"ssh": "ssh root@abc -p 22", "jupyter": "https://abc:8888"},
    )
    response = api.get(f"/api/instances/{instance.id}")
    assert response.status_code == 200
    body = response.json()
    for key in (
        "id",
        "name",
        "status",
        "gpuNum",
        "region",
        "portMappings",
        "connectionDetails",
        "createdAt",
    ):
        assert key in body
    assert body["portMappings"] == [
        {"port": 8888, "endpoint": "https://abc.novita.test:8888", "type": "http"}
    ]
    assert body["connectionDetails"]["ssh"] == "ssh root@abc -p 22"
    assert ISO.match(body["createdAt"])
    assert len(novita.mock.calls) == 0, "a read must not call upstream"


@pytest.fixture(params=["open", "keyed"])
def poller(request, api):
    """A polling client without a key (an open API: DRF answers) or with a valid one (the poll's
    direct path answers): every guarantee of a poll must hold on both."""
    if request.param == "keyed":
        _key, raw = ApiKey.issue(f"poller-{time.monotonic_ns()}")
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return api


@pytest.fixture
def described(make_instance):
    """An instance with every optional field of the poll's body set."""
    now = timezone.now()
    return make_instance(
        port_mappings=[
            {"port": 8888, "endpoint": "https://abc.novita.test:8888", "type": "http"},
            {"port": 22, "endpoint": "abc.novita.test:22", "type": "tcp"},
        ],
        connection_details={"ssh": "ssh root@abc -p 22"},
        ready_at=now,
        last_used_at=now,
        auto_stop_at=now,
        auto_stop_minutes=7,
        stopped_at=now,
        failure_reason="readiness deadline passed",
        price_per_hour=35000,
    )


def test_a_keyed_poll_answers_exactly_what_the_full_api_path_answers(api, described):
    _key, raw = ApiKey.issue("poller")
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    instance = described
    # (finalize_response: DRF calls it on every answer, the schema generator never does.)
    drf = mock.patch.object(InstanceDetailView, "finalize_response", side_effect=AssertionError)
    with drf:
        direct = api.get(f"/api/instances/{instance.id}")
    # A format override is something to negotiate: this one goes through DRF whatever the key.
    through_drf = api.get(f"/api/instances/{instance.id}?format=json")
    assert direct.status_code == through_drf.status_code == 200
    for header in ("Content-Type", "Allow", "X-RateLimit-Limit"):
        assert direct.get(header) == through_drf.get(header), header
    body, other = direct.json(), through_drf.json()
    assert body == {**other, "billedSeconds": body["billedSeconds"], "costSoFar": body["costSoFar"]}


def test_a_poll_reads_one_row_and_nothing_else(poller, described, django_assert_num_queries):
    # Every field the body shows is in the poll's one read: a field left out of it would cost a
    # second query, on every poll, the first time the body touched it.
    instance = described
    poller.get(f"/api/instances/{instance.id}")  # the key, the trail and the schema, once
    with django_assert_num_queries(1):
        body = poller.get(f"/api/instances/{instance.id}").json()
    assert body["readyAt"] and body["stoppedAt"] and body["pricePerHour"] == 0.35


def test_a_poll_with_a_revoked_key_is_refused_at_once(api, make_instance):
    instance = make_instance()
    key, raw = ApiKey.issue("leaked-poller")
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.get(f"/api/instances/{instance.id}").status_code == 200
    ApiKey.revoke_all(ApiKey.objects.filter(pk=key.pk))
    response = api.get(f"/api/instances/{instance.id}")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHORIZED"
    assert "id" not in response.json()


def test_a_status_change_is_visible_to_the_very_next_poll(poller, make_instance):
    api = poller
    instance = make_instance(status=Status.READY)
    assert api.get(f"/api/instances/{instance.id}").json()["status"] == "ready"
    transitions.transition(
        instance.id,
        expected=[Status.READY],
        to_status=Status.STOPPING,
        source="api",
        reason="stop requested",
        notify=False,
    )
    body = api.get(f"/api/instances/{instance.id}").json()
    assert body["status"] == "stopping"
    assert body["statusReason"] == "stop requested"


def test_billed_time_stops_at_a_stop_seen_by_the_very_next_poll(poller, make_instance):
    api = poller
    instance = make_instance(status=Status.READY)
    api.get(f"/api/instances/{instance.id}")  # the poll before the stop reads the trail
    transitions.transition(
        instance.id, expected=None, to_status=Status.STOPPED, source="api", reason="stopped"
    )
    body = api.get(f"/api/instances/{instance.id}").json()
    changes = [(at, to) for at, to, _reason in history.status_changes(instance.id)]
    # Not in a billed status any more: the count no longer depends on when it is read.
    exact = int(history.billed_seconds(changes, timezone.now()))
    assert (body["status"], body["billedSeconds"]) == ("stopped", exact)
    assert body["statusReason"] == "stopped"


def test_a_poll_shows_the_row_as_the_orm_reads_it(poller, described):
    api = poller
    instance = described
    body = api.get(f"/api/instances/{instance.id}").json()
    instance = Instance.objects.get(pk=instance.id)
    expected = InstanceDetailOut.render(instance, **history.billing(instance).as_values())
    assert body == {**expected, "billedSeconds": body["billedSeconds"]}


@pytest.mark.usefixtures("private_state")
def test_polls_count_toward_the_rate_limit_and_the_metrics(poller, make_instance, settings):
    api = poller
    instance = make_instance()
    settings.RATE_LIMIT_PER_MINUTE = 3
    fresh_window()
    metrics.flush()
    before = metrics.totals().get("requests:total", 0)
    codes = [api.get(f"/api/instances/{instance.id}").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    metrics.flush()
    assert metrics.totals()["requests:total"] - before == 4


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "text/html, */*;q=0.8"])
def test_a_poll_answers_json_to_clients_that_take_it(poller, make_instance, accept):
    api = poller
    instance = make_instance()
    headers = {"HTTP_ACCEPT": accept} if accept else {}
    response = api.get(f"/api/instances/{instance.id}", **headers)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json()["id"] == instance.id


@pytest.mark.parametrize(
    ("query", "accept", "status"),
    [("", "text/html", 406), ("?format=xml", "*/*", 404), ("?format=xml", "text/html", 404)],
)
def test_a_poll_in_a_format_we_do_not_serve_is_refused_in_the_envelope(
    poller, make_instance, query, accept, status
):
    api = poller
    instance = make_instance()
    response = api.get(f"/api/instances/{instance.id}{query}", HTTP_ACCEPT=accept)
    assert response.status_code == status
    assert "error" in response.json()


def test_get_unknown_instance_is_404_envelope(poller):
    api = poller
    response = api.get("/api/instances/inst_invalid")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "INSTANCE_NOT_FOUND"
    assert error["details"] == "Instance with ID 'inst_invalid' does not exist"


def test_list_returns_instances_and_total_without_upstream_calls(api, make_instance, novita):
    make_instance(name="a")
    make_instance(name="b", status=Status.CREATING, novita_instance_id=None)
    response = api.get("/api/instances")
    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 2
    assert {i["name"] for i in body["instances"]} == {"a", "b"}
    assert set(body["instances"][0]) >= {
        "id",
        "name",
        "status",
        "gpuNum",
        "region",
        "portMappings",
        "createdAt",
    }
    assert len(novita.mock.calls) == 0


@pytest.mark.parametrize(
    "query", ["source=everything", "includeNovitaOnly=maybe", "syncLocalState=2x"]
)
def test_list_rejects_invalid_query_values(api, query):
    response = api.get(f"/api/instances?{query}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


def test_list_novita_only_includes_unmanaged_upstream_instances(api, make_instance, novita):
    make_instance(name="mine", novita_instance_id="nov-mine")
    novita.list_returns([remote_instance("nov-mine", "mine"), remote_instance("nov-x", "theirs")])
    body = api.get("/api/instances?includeNovitaOnly=true").json()
    assert {i["name"] for i in body["instances"]} == {"mine", "theirs"}


# --- start ----------------------------------------------------------------------------------


def test_start_answers_202_and_calls_upstream_once(api, make_instance, novita):
    instance = make_instance(status=Status.STOPPED, desired_status=Desired.STOPPED)
    novita.action_returns("start")
    response = post(api, f"/api/instances/{instance.id}/start", {"targetPort": 8888})
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {
        "instanceId",
        "novitaInstanceId",
        "operationId",
        "status",
        "message",
        "estimatedReadyTime",
    }
    assert body["status"] == "starting"
    assert body["novitaInstanceId"] == instance.novita_instance_id
    assert body["operationId"].startswith("op_start_")
    assert novita.bodies("/gpu/instance/start") == [{"instanceId": instance.novita_instance_id}]
    instance.refresh_from_db()
    assert (instance.status, instance.desired_status) == (Status.STARTING, Desired.RUNNING)
    assert instance.target_port == 8888


@pytest.mark.parametrize("status", [Status.CREATING, Status.READY, Status.STOPPING])
def test_start_in_impossible_state_is_409_without_upstream_call(api, make_instance, novita, status):
    instance = make_instance(status=status)
    response = post(api, f"/api/instances/{instance.id}/start", {})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "INSTANCE_NOT_STARTABLE"
    assert len(novita.mock.calls) == 0


@pytest.mark.parametrize(
    "field,value",
    [
        ("timeoutMs", 999),
        ("timeoutMs", 300001),
        ("retryAttempts", -1),
        ("retryAttempts", 11),
        ("retryDelayMs", 99),
        ("retryDelayMs", 30001),
        ("maxWaitTimeMs", 29999),
        ("maxWaitTimeMs", 1800001),
        ("targetPort", 0),
        ("targetPort", 65536),
    ],
)
def test_start_rejects_each_health_check_bound(api, make_instance, field, value):
    instance = make_instance(status=Status.STOPPED)
    response = post(
        api, f"/api/instances/{instance.id}/start", {"healthCheckConfig": {field: value}}
    )
    assert response.status_code == 400
    assert details_for(response, f"healthCheckConfig.{field}")


@pytest.mark.parametrize("value", [0, 65536, "8888"])
def test_start_rejects_invalid_target_port(api, make_instance, value):
    instance = make_instance(status=Status.STOPPED)
    response = post(api, f"/api/instances/{instance.id}/start", {"targetPort": value})
    assert response.status_code == 400
    assert details_for(response, "targetPort")


def test_start_unknown_instance_is_404(api):
    response = post(api, "/api/instances/inst_nope/start", {})
    assert response.status_code == 404


def test_start_by_name(api, make_instance, novita):
    instance = make_instance(name="by-name", status=Status.EXITED)
    novita.action_returns("start")
    response = post(api, "/api/instances/start", {"instanceName": "by-name"})
    assert response.status_code == 202
    assert response.json()["instanceId"] == instance.id


def test_start_by_name_requires_instance_name(api):
    response = post(api, "/api/instances/start", {})
    assert response.status_code == 400
    assert details_for(response, "instanceName")


def test_start_by_unknown_name_is_404(api):
    response = post(api, "/api/instances/start", {"instanceName": "ghost"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "INSTANCE_NOT_FOUND"


def test_start_sets_new_webhook_url(api, make_instance, novita):
    instance = make_instance(status=Status.STOPPED)
    novita.action_returns("start")
    post(
        api, f"/api/instances/{instance.id}/start", {"webhookUrl": "https://hooks.example.com/new"}
    )
    instance.refresh_from_db()
    assert instance.webhook_url == "https://hooks.example.com/new"


# --- stop -----------------------------------------------------------------------------------


def test_stop_answers_200_and_calls_upstream(api, make_instance, novita):
    instance = make_instance(status=Status.READY)
    novita.action_returns("stop")
    response = post(api, f"/api/instances/{instance.id}/stop", {})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"instanceId", "novitaInstanceId", "operationId", "status", "message"}
    assert body["status"] == "stopping"
    assert body["operationId"].startswith("op_stop_")
    assert len(novita.calls("/gpu/instance/stop")) == 1
    instance.refresh_from_db()
    assert instance.desired_status == Desired.STOPPED
    assert InstanceEvent.objects.filter(instance=instance, to_status="stopping").exists()


@pytest.mark.parametrize(
    "status", [Status.STOPPED, Status.STOPPING, Status.CREATING, Status.TERMINATED]
)
def test_stop_in_impossible_state_is_409_without_upstream_call(api, make_instance, novita, status):
    instance = make_instance(status=status)
    response = post(api, f"/api/instances/{instance.id}/stop", {})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "INSTANCE_NOT_STOPPABLE"
    assert len(novita.mock.calls) == 0


def test_stop_by_name(api, make_instance, novita):
    instance = make_instance(name="stop-me")
    novita.action_returns("stop")
    response = post(api, "/api/instances/stop", {"instanceName": "stop-me"})
    assert response.status_code == 200
    assert response.json()["instanceId"] == instance.id


def test_stop_by_unknown_name_is_404(api):
    assert post(api, "/api/instances/stop", {"instanceName": "ghost"}).status_code == 404


def test_stop_upstream_failure_is_502_and_stop_stays_desired(api, make_instance, novita):
    instance = make_instance()
    novita.action_returns(
        "stop", status=400, body={"code": 400, "reason": "NODE_STATUS", "message": "node busy"}
    )
    response = post(api, f"/api/instances/{instance.id}/stop", {})
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "NOVITA_API_ERROR"
    assert "NODE_STATUS" in error["details"]
    instance.refresh_from_db()
    assert instance.desired_status == Desired.STOPPED
    assert instance.next_poll_at is not None, "the monitor keeps pursuing the stop"


def test_retrying_a_stop_that_answered_502_gets_the_same_operation(api, make_instance, novita):
    instance = make_instance()
    novita.action_returns("stop", status=502, body={"message": "bad gateway"})
    first = post(api, f"/api/instances/{instance.id}/stop", {})
    assert first.status_code == 502
    operation_id = Instance.objects.get(pk=instance.pk).operation_id

    retry = post(api, f"/api/instances/{instance.id}/stop", {})

    assert retry.status_code == 200
    assert retry.json()["status"] == "stopping"
    assert retry.json()["operationId"] == operation_id
    assert len(novita.calls("/gpu/instance/stop")) == 1, "the monitor, not the retry, re-sends it"


# --- delete ---------------------------------------------------------------------------------


def test_delete_terminates_upstream(api, make_instance, novita):
    instance = make_instance()
    novita.action_returns("delete")
    response = api.delete(f"/api/instances/{instance.id}")
    assert response.status_code == 202
    assert response.json()["status"] == "stopping"
    assert novita.bodies("/gpu/instance/delete") == [{"instanceId": instance.novita_instance_id}]
    instance.refresh_from_db()
    assert instance.desired_status == Desired.TERMINATED


def test_delete_of_never_created_instance_terminates_without_upstream(api, make_instance, novita):
    instance = make_instance(status=Status.FAILED, novita_instance_id=None)
    response = api.delete(f"/api/instances/{instance.id}")
    assert response.status_code == 202
    assert response.json()["status"] == "terminated"
    assert len(novita.mock.calls) == 0


def test_delete_of_a_terminated_instance_answers_200_with_its_state(api, make_instance, novita):
    instance = make_instance(status=Status.TERMINATED, operation_id="op_delete_abc")
    response = api.delete(f"/api/instances/{instance.id}")
    assert response.status_code == 200
    body = response.json()
    assert body["instanceId"] == instance.id
    assert body["status"] == "terminated"
    assert body["operationId"] == "op_delete_abc"
    assert len(novita.mock.calls) == 0


def test_retried_delete_while_terminating_gets_the_same_operation(api, make_instance, novita):
    instance = make_instance()
    novita.action_returns("delete")
    first = api.delete(f"/api/instances/{instance.id}")
    retry = api.delete(f"/api/instances/{instance.id}")
    assert (first.status_code, retry.status_code) == (202, 202)
    assert retry.json()["operationId"] == first.json()["operationId"]
    assert len(novita.calls("/gpu/instance/delete")) == 1


# --- names ----------------------------------------------------------------------------------


def test_name_of_a_terminated_instance_can_be_used_again(api, make_instance):
    old = make_instance(name="my-gpu-instance", status=Status.TERMINATED)
    response = post(api, "/api/instances", VALID)
    assert response.status_code == 201
    assert response.json()["instanceId"] != old.id
    assert Instance.objects.filter(name="my-gpu-instance").count() == 2


def test_name_held_by_a_live_instance_is_409_even_with_terminated_namesakes(api, make_instance):
    make_instance(name="my-gpu-instance", status=Status.TERMINATED)
    make_instance(name="my-gpu-instance", status=Status.STOPPED)
    response = post(api, "/api/instances", VALID)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "INSTANCE_ALREADY_EXISTS"


def test_two_live_instances_can_never_share_a_name(make_instance):
    # The database enforces it, which is what makes racing creates safe (one wins, the rest
    # get 409); the end-to-end concurrency test fires them in parallel.
    from django.db import IntegrityError, transaction

    make_instance(name="twin", status=Status.READY)
    with pytest.raises(IntegrityError), transaction.atomic():
        make_instance(name="twin", status=Status.CREATING)


def test_by_name_operations_act_on_the_live_instance_not_a_terminated_namesake(
    api, make_instance, novita
):
    make_instance(name="reused", status=Status.TERMINATED)
    live = make_instance(name="reused", status=Status.READY)
    make_instance(name="reused", status=Status.TERMINATED)
    novita.action_returns("stop")
    response = post(api, "/api/instances/stop", {"instanceName": "reused"})
    assert response.status_code == 200
    assert response.json()["instanceId"] == live.id
    response = api.put("/api/instances/last-used", {"instanceName": "reused"}, format="json")
    assert response.json()["instanceId"] == live.id


def test_by_name_of_only_terminated_instances_finds_the_newest(api, make_instance):
    make_instance(name="gone", status=Status.TERMINATED)
    newest = make_instance(name="gone", status=Status.TERMINATED)
    response = post(api, "/api/instances/stop", {"instanceName": "gone"})
    assert response.status_code == 409
    assert response.json()["error"]["details"]["instanceId"] == newest.id
