"""Endpoints 10-12 of the contract: last-used heartbeats, auto-stop stats and trigger."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from instances.models import Instance
from instances.services import autostop
from instances.status import Status
from ops import counters

pytestmark = pytest.mark.django_db

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def put(api, path, body=None):
    return api.put(path, body, format="json") if body is not None else api.put(path)


def post(api, path, body=None):
    return api.post(path, body if body is not None else {}, format="json")


def error_of(response, status, code):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code
    return error


def field_errors(response, field):
    error = error_of(response, 400, "VALIDATION_ERROR")
    return [d for d in error["details"] if d["field"] == field]


@pytest.fixture
def idle(make_instance):
    """A ready instance idle for 30 minutes (default threshold 20)."""
    ready_at = timezone.now() - timedelta(minutes=30)
    return make_instance(
        status=Status.READY, ready_at=ready_at, auto_stop_at=ready_at + timedelta(minutes=20)
    )


# --- PUT /api/instances/{id}/last-used ------------------------------------------------------------


def test_last_used_defaults_to_now_with_contract_shape(api, idle):
    before = timezone.now()
    response = put(api, f"/api/instances/{idle.id}/last-used")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"instanceId", "lastUsedAt", "message"}
    assert body["instanceId"] == idle.id
    assert body["message"] == "Last used time updated successfully"
    assert ISO.match(body["lastUsedAt"])
    idle.refresh_from_db()
    assert idle.last_used_at >= before - timedelta(milliseconds=1)
    assert idle.auto_stop_at == idle.last_used_at + timedelta(minutes=20)


def test_last_used_accepts_an_iso_time_and_postpones_the_stop(api, idle):
    used = (timezone.now() - timedelta(minutes=5)).replace(microsecond=123000)
    stamp = used.strftime("%Y-%m-%dT%H:%M:%S.123Z")
    response = put(api, f"/api/instances/{idle.id}/last-used", {"lastUsedAt": stamp})
    assert response.status_code == 200
    assert response.json()["lastUsedAt"] == stamp
    idle.refresh_from_db()
    assert idle.last_used_at == used
    assert idle.auto_stop_at == used + timedelta(minutes=20)
    assert autostop.sweep(dry_run=True).candidates == []


def test_last_used_with_an_offset_is_stored_in_utc(api, idle):
    local = (timezone.now() - timedelta(minutes=1)).astimezone(timezone.get_fixed_timezone(120))
    response = put(api, f"/api/instances/{idle.id}/last-used", {"lastUsedAt": local.isoformat()})
    assert response.status_code == 200
    idle.refresh_from_db()
    assert idle.last_used_at == local


def test_older_last_used_does_not_move_it_backwards(api, idle):
    put(api, f"/api/instances/{idle.id}/last-used")
    idle.refresh_from_db()
    stored = idle.last_used_at
    old = (stored - timedelta(minutes=10)).isoformat()
    response = put(api, f"/api/instances/{idle.id}/last-used", {"lastUsedAt": old})
    assert response.status_code == 200
    idle.refresh_from_db()
    assert idle.last_used_at == stored
    assert response.json()["lastUsedAt"].startswith(stored.strftime("%Y-%m-%dT%H:%M:%S"))


def test_last_used_far_in_the_future_is_400(api, idle):
    future = (timezone.now() + timedelta(minutes=5)).isoformat()
    response = put(api, f"/api/instances/{idle.id}/last-used", {"lastUsedAt": future})
    (detail,) = field_errors(response, "lastUsedAt")
    assert "future" in detail["message"]
    idle.refresh_from_db()
    assert idle.last_used_at is None


def test_last_used_within_clock_skew_is_accepted_as_now(api, idle):
    ahead = (timezone.now() + timedelta(seconds=20)).isoformat()
    response = put(api, f"/api/instances/{idle.id}/last-used", {"lastUsedAt": ahead})
    assert response.status_code == 200
    idle.refresh_from_db()
    assert idle.last_used_at <= timezone.now()


@pytest.mark.parametrize(
    "value",
    ["yesterday", "", "2024-13-45T10:30:00Z", "15/01/2024 10:30", 1705314600, True, None, {}, []],
)
def test_last_used_that_is_not_an_iso_string_is_400(api, idle, value):
    response = put(api, f"/api/instances/{idle.id}/last-used", {"lastUsedAt": value})
    assert len(field_errors(response, "lastUsedAt")) == 1


def test_last_used_for_unknown_id_is_404(api, db):
    response = put(api, "/api/instances/inst_invalid/last-used")
    error = error_of(response, 404, "INSTANCE_NOT_FOUND")
    assert error["message"] == "Instance not found"
    assert error["details"] == "Instance with ID 'inst_invalid' does not exist"
    assert error["requestId"]


def test_last_used_is_put_only(api, idle):
    assert api.post(f"/api/instances/{idle.id}/last-used").status_code == 405


# --- PUT /api/instances/last-used (by name) -------------------------------------------------


def test_last_used_by_name(api, idle):
    response = put(api, "/api/instances/last-used", {"instanceName": idle.name})
    assert response.status_code == 200
    assert response.json()["instanceId"] == idle.id
    idle.refresh_from_db()
    assert idle.last_used_at is not None


def test_last_used_by_unknown_name_is_404(api, db):
    response = put(api, "/api/instances/last-used", {"instanceName": "nobody"})
    error = error_of(response, 404, "INSTANCE_NOT_FOUND")
    assert "nobody" in error["details"]


@pytest.mark.parametrize("body", [{}, {"instanceName": ""}, {"instanceName": 7}])
def test_last_used_by_name_needs_a_name(api, db, body):
    assert field_errors(put(api, "/api/instances/last-used", body), "instanceName")


# --- GET /api/instances/auto-stop/stats ---------------------------------------------------


def test_stats_have_contract_fields_and_say_not_running_before_any_sweep(api, db, settings):
    settings.AUTO_STOP_CHECK_INTERVAL_MINUTES = 5
    settings.AUTO_STOP_INACTIVITY_THRESHOLD_MINUTES = 20
    response = api.get("/api/instances/auto-stop/stats")
    assert response.status_code == 200
    body = response.json()
    assert body["schedulerRunning"] is False
    assert body["checkIntervalMinutes"] == 5
    assert body["defaultInactivityThresholdMinutes"] == 20
    assert body["lastRunAt"] is None and body["lastRunStopped"] is None
    assert body["totalStopped"] == 0
    assert body["nextDeadlineAt"] is None


def test_stats_report_the_scheduled_sweep_and_its_results(api, idle, make_instance, novita):
    novita.action_returns("stop")
    waiting = make_instance(
        status=Status.READY,
        ready_at=timezone.now(),
        auto_stop_at=timezone.now() + timedelta(minutes=20),
    )
    autostop.sweep()  # as beat runs it
    body = api.get("/api/instances/auto-stop/stats").json()
    assert body["schedulerRunning"] is True
    assert ISO.match(body["lastRunAt"])
    assert body["lastRunDurationMs"] >= 0
    assert body["lastRunStopped"] == 1
    assert body["totalStopped"] == 1
    waiting.refresh_from_db()
    assert body["nextDeadlineAt"].startswith(waiting.auto_stop_at.strftime("%Y-%m-%dT%H:%M"))


def test_stats_say_not_running_when_the_heartbeat_is_stale(api, db, settings):
    settings.AUTO_STOP_CHECK_INTERVAL_MINUTES = 5
    stale = timezone.now().timestamp() - 11 * 60
    counters.set_value(autostop.HEARTBEAT_KEY, str(stale))
    assert api.get("/api/instances/auto-stop/stats").json()["schedulerRunning"] is False


def test_scheduler_is_running_as_soon_as_beat_starts(api, db, settings):
    """Beat's own first run would come one check interval (5 min) after start; starting beat
    sends every periodic job once, so the stats say running right away."""
    from celery.signals import beat_init

    settings.AUTO_STOP_CHECK_INTERVAL_MINUTES = 5
    schedule = {"auto-stop-sweep": settings.CELERY_BEAT_SCHEDULE["auto-stop-sweep"]}
    settings.CELERY_BEAT_SCHEDULE = schedule
    assert api.get("/api/instances/auto-stop/stats").json()["schedulerRunning"] is False

    beat_init.send(sender=None)  # as `celery beat` does on start (tasks run inline here)

    assert api.get("/api/instances/auto-stop/stats").json()["schedulerRunning"] is True


# --- POST /api/instances/auto-stop/trigger ------------------------------------------------


def test_trigger_defaults_to_a_dry_run_that_stops_nothing(api, idle, novita):
    response = post(api, "/api/instances/auto-stop/trigger")
    assert response.status_code == 200
    body = response.json()
    assert body["message"] == "Auto-stop check completed successfully"
    assert body["dryRun"] is True
    assert ISO.match(body["timestamp"])
    (candidate,) = body["candidates"]
    assert candidate["instanceId"] == idle.id
    assert candidate["name"] == idle.name
    assert candidate["idleMinutes"] == pytest.approx(30, abs=0.2)
    assert candidate["thresholdMinutes"] == 20
    assert candidate["action"] == "wouldStop"
    assert body["stopped"] == 0
    idle.refresh_from_db()
    assert idle.status == Status.READY
    assert novita.calls("/gpu/instance/stop") == []


def test_trigger_without_dry_run_stops_the_idle(api, idle, make_instance, novita):
    novita.action_returns("stop")
    busy = make_instance(
        status=Status.READY,
        ready_at=timezone.now(),
        auto_stop_at=timezone.now() + timedelta(minutes=20),
    )
    response = post(api, "/api/instances/auto-stop/trigger", {"dryRun": False})
    assert response.status_code == 200
    body = response.json()
    assert body["dryRun"] is False
    assert [c["instanceId"] for c in body["candidates"]] == [idle.id]
    assert body["candidates"][0]["action"] == "stopped"
    assert body["stopped"] == 1 and body["failed"] == 0
    assert Instance.objects.get(pk=idle.pk).status == Status.STOPPING
    assert Instance.objects.get(pk=busy.pk).status == Status.READY
    assert len(novita.calls("/gpu/instance/stop")) == 1
    event = idle.events.get(source="auto-stop")
    assert event.request_id == response["X-Request-ID"]


@pytest.mark.parametrize("value", ["false", 0, 1, None, "yes"])
def test_trigger_with_non_boolean_dry_run_is_400(api, idle, novita, value):
    response = post(api, "/api/instances/auto-stop/trigger", {"dryRun": value})
    assert len(field_errors(response, "dryRun")) == 1
    assert Instance.objects.get(pk=idle.pk).status == Status.READY


def test_trigger_is_post_only(api, db):
    assert api.get("/api/instances/auto-stop/trigger").status_code == 405


# --- feature switch and routing -------------------------------------------------------------


@pytest.mark.parametrize(
    "method,path",
    [("get", "/api/instances/auto-stop/stats"), ("post", "/api/instances/auto-stop/trigger")],
)
def test_auto_stop_endpoints_are_404_feature_disabled_when_off(api, idle, settings, method, path):
    settings.AUTO_STOP_ENABLED = False
    response = getattr(api, method)(path, {"dryRun": False}, format="json")
    error_of(response, 404, "FEATURE_DISABLED")
    assert Instance.objects.get(pk=idle.pk).status == Status.READY


def test_heartbeats_still_work_when_auto_stop_is_off(api, idle, settings):
    settings.AUTO_STOP_ENABLED = False
    assert put(api, f"/api/instances/{idle.id}/last-used").status_code == 200


def test_fixed_paths_are_not_taken_for_instance_ids(api, db):
    # GET on the by-name route must be "method not allowed", not "instance last-used not found".
    assert api.get("/api/instances/last-used").status_code == 405
    assert api.get("/api/instances/auto-stop/stats").status_code == 200


def test_endpoints_are_in_the_openapi_schema(api, db):
    response = api.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "put" in paths["/api/instances/{instance_id}/last-used"]
    assert "put" in paths["/api/instances/last-used"]
    assert "get" in paths["/api/instances/auto-stop/stats"]
    assert "post" in paths["/api/instances/auto-stop/trigger"]
