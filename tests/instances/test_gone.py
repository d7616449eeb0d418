"""An instance is terminated because upstream lost it only on proof: upstream answering
not-found for its id, or its absence from two consecutive complete listings. A route-level 404,
an auth error or a failed listing never terminates anything."""

import pytest
from django.utils import timezone

from instances.models import Instance, InstanceEvent
from instances.services import admin_ops, monitor, reconcile
from instances.services.transitions import NOT_FOUND_FOR_ID, mark_gone
from instances.status import Desired, Status
from tests.instances.test_sync import (  # noqa: F401 - the autouse fixture applies here too
    list_items,
    private_fleet_cache,
    serve_list,
)
from tests.instances.upstream import V1, remote_instance

pytestmark = pytest.mark.django_db

NOT_FOUND = {"code": 400, "reason": "RESOURCE_NOT_FOUND", "message": "instance not found"}
ROUTE_404 = {"code": 404, "reason": "API_NOT_FOUND", "message": "api not found"}
HTML_404 = "<html><head><title>404 Not Found</title></head><body>nginx</body></html>"


def monitor_step(instance_id):
    Instance.objects.filter(pk=instance_id).update(next_poll_at=timezone.now())
    claimed = monitor.claim(instance_id)
    assert claimed is not None
    monitor.advance(claimed)
    return Instance.objects.get(pk=instance_id)


# --- the monitor ----------------------------------------------------------------------------


def test_monitor_terminates_on_not_found_for_the_id(make_instance, novita):
    instance = make_instance(status=Status.STARTING)
    novita.get_returns(status=400, body=NOT_FOUND)
    assert monitor_step(instance.id).status == Status.TERMINATED


@pytest.mark.parametrize(
    "status,body",
    [(404, ROUTE_404), (404, None), (401, {"reason": "UNAUTHORIZED"}), (403, None)],
    ids=["api-not-found", "html-404", "401", "403"],
)
def test_monitor_never_terminates_on_a_route_or_auth_error(make_instance, novita, status, body):
    instance = make_instance(status=Status.STARTING)
    if body is None:
        novita.mock.get(f"{V1}/gpu/instance", body=HTML_404, status=status)
    else:
        novita.get_returns(status=status, body=body)
    after = monitor_step(instance.id)
    assert after.status == Status.STARTING
    assert after.next_poll_at is not None  # still followed, will ask again


def test_monitor_believes_a_404_that_names_the_missing_instance(make_instance, novita):
    instance = make_instance(status=Status.STOPPING, desired_status=Desired.TERMINATED)
    novita.get_returns(status=404, body={"code": 404, "reason": "RESOURCE_NOT_FOUND"})
    after = monitor_step(instance.id)
    assert after.status == Status.TERMINATED
    assert after.events.get(to_status="terminated").reason.startswith("deleted upstream as")


# --- the operator's sync ---------------------------------------------------------------------


def test_operator_sync_on_a_route_404_changes_nothing(make_instance, novita):
    instance = make_instance(status=Status.READY)
    novita.get_returns(status=404, body=ROUTE_404)
    with pytest.raises(Exception):  # noqa: B017 - the admin shows whatever upstream error
        admin_ops.sync_now(instance, actor="ops")
    instance.refresh_from_db()
    assert instance.status == Status.READY


# --- the reconciler ---------------------------------------------------------------------------


def test_absent_from_one_listing_without_a_not_found_is_not_yet_gone(make_instance, novita):
    instance = make_instance(novita_instance_id="nov-1")
    serve_list(novita, [])
    novita.get_returns(status=404, body=ROUTE_404)

    reconcile.run()

    instance.refresh_from_db()
    assert instance.status == Status.READY
    assert instance.missing_listings == 1


def earlier_absence(instance, seconds):
    """Pretend the first listing without `instance` began `seconds` ago."""
    Instance.objects.filter(pk=instance.pk).update(
        missing_since=timezone.now() - timezone.timedelta(seconds=seconds)
    )


def test_absent_from_two_consecutive_complete_listings_is_gone(make_instance, novita):
    instance = make_instance(novita_instance_id="nov-1")
    serve_list(novita, [])
    novita.get_returns(status=404, body=ROUTE_404)  # an upstream that cannot say "not found"

    reconcile.run()
    earlier_absence(instance, 31)
    reconcile.run()

    instance.refresh_from_db()
    assert instance.status == Status.TERMINATED
    assert (instance.missing_listings, instance.missing_since) == (0, None)
    assert instance.events.get(to_status="terminated").reason == (
        "instance no longer exists upstream: absent from two consecutive complete upstream listings"
    )


def test_two_listings_in_quick_succession_are_not_two_looks(make_instance, novita):
    instance = make_instance(novita_instance_id="nov-1")
    serve_list(novita, [])
    novita.get_returns(status=404, body=ROUTE_404)

    for _ in range(3):
        reconcile.run()

    instance.refresh_from_db()
    assert instance.status == Status.READY
    assert instance.missing_listings == 3 and instance.missing_since is not None


def test_seen_again_between_two_absences_starts_the_count_over(make_instance, novita):
    instance = make_instance(novita_instance_id="nov-1")
    items = serve_list(novita, [])
    novita.get_returns(status=404, body=ROUTE_404)

    reconcile.run()
    earlier_absence(instance, 31)
    items.extend(list_items(remote_instance("nov-1", instance.name)))
    reconcile.run()
    instance.refresh_from_db()
    assert (instance.missing_listings, instance.missing_since) == (0, None)
    items.clear()
    reconcile.run()

    instance.refresh_from_db()
    assert instance.status == Status.READY
    assert instance.missing_listings == 1


def test_incomplete_listings_never_count_as_absences(make_instance, novita, monkeypatch):
    from instances.novita import client as client_module

    monkeypatch.setattr(client_module, "MAX_PAGES", 1)
    instance = make_instance(novita_instance_id="nov-1")
    serve_list(novita, list_items(*[remote_instance(f"other-{i}") for i in range(150)]))
    novita.get_returns(status=404, body=ROUTE_404)

    reconcile.run()
    reconcile.run()

    instance.refresh_from_db()
    assert instance.status == Status.READY
    assert instance.missing_listings == 0


def test_a_listing_missing_most_of_a_large_fleet_is_not_believed(make_instance, novita):
    fleet = [make_instance(novita_instance_id=f"nov-{i}") for i in range(12)]
    serve_list(novita, list_items(remote_instance("nov-0", fleet[0].name)))
    novita.get_returns(status=404, body=ROUTE_404)

    run = reconcile.run()
    reconcile.run()

    assert not Instance.objects.filter(status=Status.TERMINATED).exists()
    assert not Instance.objects.filter(missing_listings__gt=0).exists()
    assert any("nothing was counted" in str(line) for line in run.summary)


def test_not_found_for_the_id_after_one_absence_is_gone(make_instance, novita):
    instance = make_instance(novita_instance_id="nov-1")
    serve_list(novita, [])
    novita.get_returns(status=400, body=NOT_FOUND)

    reconcile.run()

    instance.refresh_from_db()
    assert instance.status == Status.TERMINATED


def test_mark_gone_accepts_only_proof(make_instance):
    instance = make_instance()
    with pytest.raises(ValueError):
        mark_gone(instance, source="reconcile", evidence="HTTP 404")
    assert mark_gone(instance, source="reconcile", evidence=NOT_FOUND_FOR_ID).status == (
        Status.TERMINATED
    )
    assert InstanceEvent.objects.filter(instance=instance, to_status="terminated").count() == 1


# --- a gateway pointed at the wrong place ----------------------------------------------------

FLEET = [
    # (status, desired, upstream id?, extra fields)
    (Status.CREATING, Desired.RUNNING, False, {}),
    (Status.CREATING, Desired.RUNNING, True, {}),
    (Status.STARTING, Desired.RUNNING, True, {}),
    (Status.RUNNING, Desired.RUNNING, True, {}),
    (Status.HEALTH_CHECKING, Desired.RUNNING, True, {}),
    (Status.READY, Desired.RUNNING, True, {}),
    (Status.READY, Desired.RUNNING, True, {"billing_mode": "spot", "spot_status": "running"}),
    (Status.STOPPING, Desired.STOPPED, True, {}),
    (Status.STOPPING, Desired.TERMINATED, True, {}),
    (Status.STOPPED, Desired.STOPPED, True, {}),
    (Status.EXITED, Desired.RUNNING, True, {"billing_mode": "spot", "spot_status": "terminated"}),
    (Status.FAILED, Desired.RUNNING, True, {}),
    (Status.CREATED, Desired.STOPPED, True, {}),
    (Status.TERMINATED, Desired.TERMINATED, True, {}),
]


@pytest.mark.parametrize(
    "status,body",
    [(404, HTML_404), (404, '{"code": 404, "reason": "API_NOT_FOUND"}'), (401, "{}")],
    ids=["proxy-page", "api-not-found", "bad-key"],
)
def test_a_wrong_base_path_changes_the_state_of_nothing(make_instance, status, body, settings):
    import re

    import responses

    from instances.novita.client import reset_client
    from instances.services import autostop, migration

    settings.NOVITA_API_BASE_URL = "https://novita.test/wrong/prefix"
    settings.MIGRATION_ENABLED = True
    # The breaker would soon stop the calls (these errors count for it); every path should
    # meet the misconfigured answer itself here.
    settings.NOVITA_CIRCUIT_FAILURE_THRESHOLD = 100_000
    reset_client()
    now = timezone.now()
    fleet = [
        make_instance(
            status=s,
            desired_status=d,
            novita_instance_id=None if not has_id else f"nov-{i}",
            ready_at=now,
            last_used_at=now,
            readiness_deadline=now + timezone.timedelta(hours=1),
            **extra,
        )
        for i, (s, d, has_id, extra) in enumerate(FLEET)
    ]
    before = {i.pk: (i.status, i.desired_status) for i in fleet}

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        for method in ("GET", "POST"):
            mock.add(method, re.compile(r"https://novita\.test/.*"), body=body, status=status)
        for _ in range(3):
            Instance.objects.exclude(status=Status.TERMINATED).update(next_poll_at=timezone.now())
            for instance_id, lease in monitor.claim_due():
                claimed = monitor.claim(instance_id, lease_until=lease)
                if claimed is not None:
                    monitor.advance(claimed)
            reconcile.run()
            migration.sweep()
            autostop.sweep()
            for instance in Instance.objects.exclude(novita_instance_id=None):
                try:
                    admin_ops.sync_now(instance, actor="ops")
                except Exception:  # noqa: BLE001, S112 - the error is what the operator sees
                    continue
        assert len(mock.calls) > len(fleet)  # it really asked upstream, again and again

    after = {i.pk: (i.status, i.desired_status) for i in Instance.objects.all()}
    assert after == before
    assert not InstanceEvent.objects.filter(to_status=Status.TERMINATED).exists()
    assert not Instance.objects.filter(missing_listings__gt=0).exists()


def test_api_reports_a_misconfigured_upstream_as_such(api, make_instance, novita):
    make_instance(name="mine", novita_instance_id="nov-1")
    novita.mock.get(f"{V1}/gpu/instances", status=404, body=HTML_404)
    response = api.get("/api/instances/comprehensive")
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "NOVITA_API_ERROR"
    assert "configuration" in error["message"]
