"""What a client learns from the API about an instance's history: why it has its status, what
it costs, and its audit trail (GET /api/instances/{id}/events)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from instances.models import InstanceEvent
from instances.services.transitions import record_event, transition
from instances.status import Status

pytestmark = pytest.mark.django_db

VALID = {"name": "my-gpu-instance", "productName": "RTX 4090 24GB", "templateId": "pytorch-jupyter"}


def history(instance, now, *changes):
    """Record status changes `(minutes ago, from, to, reason)` at those times."""
    for minutes, from_status, to_status, reason in changes:
        event = record_event(
            instance.id,
            source="monitor",
            reason=reason,
            from_status=from_status,
            to_status=to_status,
        )
        InstanceEvent.objects.filter(pk=event.pk).update(
            created_at=now - timedelta(minutes=minutes)
        )


def test_detail_says_why_the_instance_has_its_status(api, make_instance):
    instance = make_instance(status=Status.HEALTH_CHECKING)
    transition(
        instance.id,
        expected={Status.HEALTH_CHECKING},
        to_status=Status.READY,
        source="monitor",
        reason="all probed ports answer (8888/http 200)",
    )
    body = api.get(f"/api/instances/{instance.id}").json()
    assert body["status"] == "ready"
    assert body["statusReason"] == "all probed ports answer (8888/http 200)"


def test_a_decision_without_a_status_change_is_not_the_status_reason(api, make_instance):
    instance = make_instance(status=Status.STOPPED)
    history(instance, timezone.now(), (10, Status.STOPPING, Status.STOPPED, "upstream exited"))
    record_event(
        instance.id,
        source="admin",
        reason="marked used",
        from_status="stopped",
        to_status="stopped",
    )
    assert api.get(f"/api/instances/{instance.id}").json()["statusReason"] == "upstream exited"


def test_detail_shows_price_billed_time_and_cost_so_far(api, make_instance):
    now = timezone.now()
    # 35000 in upstream's unit (1/100000 USD) is $0.35 an hour.
    instance = make_instance(status=Status.READY, price_per_hour=35000)
    history(
        instance,
        now,
        (180, "", Status.CREATING, "create requested"),
        (150, Status.CREATING, Status.STARTING, "upstream status starting"),  # billed from here
        (120, Status.STARTING, Status.READY, "ports answer"),
        (60, Status.READY, Status.STOPPING, "idle"),  # ...to here: 90 min
        (50, Status.STOPPING, Status.STOPPED, "upstream exited"),
        (10, Status.STOPPED, Status.STARTING, "start requested"),  # billed again, still now
        (8, Status.STARTING, Status.READY, "ports answer"),
    )
    body = api.get(f"/api/instances/{instance.id}").json()
    assert body["pricePerHour"] == 0.35
    assert 100 * 60 <= body["billedSeconds"] <= 100 * 60 + 5
    assert body["costSoFar"] == pytest.approx(100 / 60 * 0.35, abs=0.001)
    assert body["statusReason"] == "ports answer"


def test_no_price_yet_means_no_price_and_no_cost_but_billed_time(api, make_instance):
    instance = make_instance(status=Status.CREATING, price_per_hour=None)
    history(instance, timezone.now(), (1, "", Status.CREATING, "create requested"))
    body = api.get(f"/api/instances/{instance.id}").json()
    assert "pricePerHour" not in body and "costSoFar" not in body
    assert body["billedSeconds"] == 0
    assert body["statusReason"] == "create requested"


def test_a_created_instance_shows_its_creation_in_the_api(api):
    instance_id = api.post("/api/instances", VALID, format="json").json()["instanceId"]
    detail = api.get(f"/api/instances/{instance_id}").json()
    assert detail["statusReason"] == "create requested"
    events = api.get(f"/api/instances/{instance_id}/events").json()
    assert events["total"] == 1
    (event,) = events["events"]
    assert event["toStatus"] == "creating" and "fromStatus" not in event
    assert event["source"] == "api" and event["reason"] == "create requested"
    assert event["createdAt"].endswith("Z")


def test_events_are_listed_newest_first_in_pages(api, make_instance):
    now = timezone.now()
    instance = make_instance(status=Status.READY)
    history(instance, now, *[(60 - i, "a", "b", f"event {i}") for i in range(7)])
    first = api.get(f"/api/instances/{instance.id}/events?pageSize=3").json()
    assert (first["total"], first["page"], first["pageSize"]) == (7, 1, 3)
    assert [e["reason"] for e in first["events"]] == ["event 6", "event 5", "event 4"]
    last = api.get(f"/api/instances/{instance.id}/events?pageSize=3&page=3").json()
    assert [e["reason"] for e in last["events"]] == ["event 0"]
    beyond = api.get(f"/api/instances/{instance.id}/events?pageSize=3&page=4").json()
    assert beyond["events"] == [] and beyond["total"] == 7


def test_events_default_to_fifty_a_page(api, make_instance):
    instance = make_instance()
    history(instance, timezone.now(), *[(i, "a", "b", "x") for i in range(60)])
    body = api.get(f"/api/instances/{instance.id}/events").json()
    assert len(body["events"]) == 50 and body["pageSize"] == 50 and body["total"] == 60


@pytest.mark.parametrize("query", ["page=0", "pageSize=0", "pageSize=201", "page=x"])
def test_events_reject_bad_paging(api, make_instance, query):
    instance = make_instance()
    response = api.get(f"/api/instances/{instance.id}/events?{query}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


def test_events_of_an_unknown_instance_are_404(api):
    response = api.get("/api/instances/inst_nope/events")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "INSTANCE_NOT_FOUND"


def test_events_of_one_instance_only(api, make_instance):
    mine, other = make_instance(), make_instance()
    history(mine, timezone.now(), (1, "a", "b", "mine"))
    history(other, timezone.now(), (1, "a", "b", "other"))
    body = api.get(f"/api/instances/{mine.id}/events").json()
    assert [e["reason"] for e in body["events"]] == ["mine"]
