"""The database going away mid-request: a clear 503, and nothing half-written.

Promises checked (any database; the PostgreSQL e2e check in tests/e2e/test_faults.py takes the
real database away):
- every statement failing (database unreachable): reads and writes answer 503
  SERVICE_UNAVAILABLE in the error envelope with Retry-After, never a 500;
- the database failing part-way through a state change (the audit event cannot be written after
  the guarded UPDATE ran): the whole change is rolled back, upstream is not called, and the
  client gets the same clear 503, so retrying later is safe;
- a create that fails part-way leaves no row behind: the name stays free for the retry.
"""

import pytest
import responses
from django.db import OperationalError
from django.db.backends.utils import CursorWrapper

from instances.models import Instance, InstanceEvent
from instances.status import Desired, Status

pytestmark = pytest.mark.django_db

CREATE = {"name": "db-outage", "productName": "RTX 4090 24GB", "templateId": "pytorch-jupyter"}


def ready_instance(name: str) -> Instance:
    return Instance.objects.create(
        name=name,
        product_name="RTX 4090 24GB",
        template_id="pytorch-jupyter",
        status=Status.READY,
        desired_status=Desired.RUNNING,
        novita_instance_id=f"nov-{name}",
    )


@pytest.fixture
def database_fails(monkeypatch):
    """Make statements matching a predicate fail as a lost connection would."""
    real_execute = CursorWrapper.execute

    def install(predicate):
        def execute(self, sql, params=None):
            if predicate(sql):
                raise OperationalError("server closed the connection unexpectedly")
            return real_execute(self, sql, params)

        monkeypatch.setattr(CursorWrapper, "execute", execute)

    yield install
    monkeypatch.setattr(CursorWrapper, "execute", real_execute)


def event_insert(sql: str) -> bool:
    return sql.lstrip().upper().startswith("INSERT") and "instances_instanceevent" in sql


def assert_unavailable(response):
    assert response.status_code == 503, response.content
    error = response.json()["error"]
    assert error["code"] == "SERVICE_UNAVAILABLE"
    assert error["requestId"]
    assert response["Retry-After"]
    # Driver text (host names, SQL) stays in the logs.
    assert "closed the connection" not in response.content.decode()


def test_unreachable_database_answers_503_for_reads_and_writes(api, database_fails):
    instance = ready_instance("steady")
    database_fails(lambda sql: True)
    assert_unavailable(api.get(f"/api/instances/{instance.id}"))
    assert_unavailable(api.get("/api/instances"))
    assert_unavailable(api.post("/api/instances", CREATE, format="json"))
    assert_unavailable(api.post(f"/api/instances/{instance.id}/stop", {}, format="json"))


def test_stop_failing_mid_transition_changes_nothing_and_calls_no_upstream(api, database_fails):
    instance = ready_instance("half-stopped")
    database_fails(event_insert)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as upstream:
        response = api.post(f"/api/instances/{instance.id}/stop", {}, format="json")
    assert_unavailable(response)
    assert len(upstream.calls) == 0
    instance.refresh_from_db()
    # The guarded UPDATE ran before the failing INSERT; the transaction took it back.
    assert (instance.status, instance.desired_status) == (Status.READY, Desired.RUNNING)
    assert not InstanceEvent.objects.filter(instance=instance, to_status="stopping").exists()


def test_create_failing_mid_way_leaves_no_row_and_the_name_free(api, database_fails):
    database_fails(event_insert)
    assert_unavailable(api.post("/api/instances", CREATE, format="json"))
    assert not Instance.objects.filter(name=CREATE["name"]).exists()

    database_fails(lambda sql: False)
    assert api.post("/api/instances", CREATE, format="json").status_code == 201
