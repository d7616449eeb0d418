"""The operator admin: list, instance page, actions through the services, dashboard, outbox."""

import re
from datetime import timedelta

import pytest
from django.contrib.admin.utils import quote
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.html import strip_tags

from instances import selectors
from instances.models import Instance, InstanceEvent, SweepRun, WebhookDelivery
from instances.services import admin_ops
from instances.status import Desired, Status
from tests.instances.upstream import remote_instance

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:instances_instance_changelist")
DASHBOARD = reverse("admin-dashboard")


def change_url(instance):
    # As the admin writes its own links: an id holding "_23" must not be read back as "#".
    return reverse("admin:instances_instance_change", args=[quote(instance.pk)])


def run_action(client, action, instances, **extra):
    data = {"action": action, "_selected_action": [i.pk for i in instances], "index": 0}
    data.update(extra)
    return client.post(CHANGELIST, data, follow=True)


def texts(response):
    return [strip_tags(str(m)) for m in get_messages(response.wsgi_request)]


def events_of(instance, source="admin"):
    return list(InstanceEvent.objects.filter(instance=instance, source=source).order_by("id"))


# --- the list -------------------------------------------------------------------------------


def test_list_shows_badge_region_product_deadline_and_exempt(admin_client, make_instance):
    now = timezone.now()
    make_instance(
        name="busy",
        region="US-WEST-01",
        gpu_num=2,
        last_used_at=now - timedelta(minutes=3),
        auto_stop_at=now + timedelta(minutes=17),
    )
    make_instance(name="pinned", auto_stop_enabled=False)
    response = admin_client.get(CHANGELIST)
    assert response.status_code == 200
    page = response.content.decode()
    assert 'class="status-badge" data-status="ready"' in page
    assert "US-WEST-01" in page and "RTX 4090 24GB" in page
    assert "3\xa0minutes ago" in page
    assert "in 16\xa0minutes" in page or "in 17\xa0minutes" in page
    assert "exempt" in page
    assert "nov-1" in page


def test_list_newest_first_filters_and_search(admin_client, make_instance):
    old = make_instance(name="old-one", created_at=timezone.now() - timedelta(days=2))
    new = make_instance(name="new-one", status=Status.STOPPED, desired_status=Desired.STOPPED)
    rows = list(admin_client.get(CHANGELIST).context["cl"].result_list)
    assert [i.pk for i in rows] == [new.pk, old.pk]

    for query, expected in [
        ("status__exact=stopped", [new]),
        ("desired_status__exact=running", [old]),
        ("region=CN-HK-01", [new, old]),
        ("last_change_source=api", [new, old]),
        ("product_name=RTX+4090+24GB", [new, old]),
        (f"q={old.id}", [old]),
        (f"q={new.novita_instance_id}", [new]),
        ("q=old-o", [old]),
    ]:
        response = admin_client.get(f"{CHANGELIST}?{query}")
        assert response.status_code == 200, query
        assert [i.pk for i in response.context["cl"].result_list] == [i.pk for i in expected], query


def _bulk(n, start=0):
    now = timezone.now()
    statuses = list(Status)
    Instance.objects.bulk_create(
        Instance(
            name=f"bulk-{start + i}",
            novita_instance_id=f"nov-bulk-{start + i}",
            product_name=["RTX 4090 24GB", "H100 80GB"][i % 2],
            template_id="pytorch-jupyter",
            region=["CN-HK-01", "US-WEST-01"][i % 2],
            status=statuses[i % len(statuses)],
            last_used_at=now - timedelta(minutes=i),
            auto_stop_at=now + timedelta(minutes=i),
            auto_stop_enabled=bool(i % 3),
            created_at=now - timedelta(seconds=start + i),
        )
        for i in range(n)
    )


def _list_queries(client, query=""):
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(CHANGELIST + query)
    assert response.status_code == 200
    return len(ctx.captured_queries)


def test_list_makes_the_same_number_of_queries_for_5_and_500_instances(admin_client):
    _bulk(5)
    InstanceEvent.objects.bulk_create(
        InstanceEvent(instance_id=i.pk, source="api", reason="x") for i in Instance.objects.all()
    )
    admin_client.get(CHANGELIST)  # warm the session/user caches once
    small = _list_queries(admin_client)
    small_filtered = _list_queries(admin_client, "?status__exact=ready&q=bulk")
    _bulk(495, start=5)
    assert Instance.objects.count() == 500
    assert _list_queries(admin_client) == small
    assert _list_queries(admin_client, "?status__exact=ready&q=bulk") == small_filtered


# --- permissions and the instance page ------------------------------------------------------


def test_no_add_no_delete_only_terminate(admin_client, make_instance):
    instance = make_instance()
    assert admin_client.get(reverse("admin:instances_instance_add")).status_code == 403
    delete = reverse("admin:instances_instance_delete", args=[instance.pk])
    assert admin_client.get(delete).status_code == 403
    actions = dict(admin_client.get(CHANGELIST).context["action_form"].fields["action"].choices)
    assert "delete_selected" not in actions
    assert {"start", "stop", "mark_used", "sync", "terminate"} <= set(actions)


def test_status_fields_are_read_only(admin_client, make_instance):
    instance = make_instance(status=Status.READY)
    response = admin_client.get(change_url(instance))
    assert response.status_code == 200
    assert set(response.context["adminform"].form.fields) == {
        "auto_stop_enabled",
        "auto_stop_minutes",
    }
    # A crafted POST cannot change status or timestamps either.
    response = admin_client.post(
        change_url(instance),
        {
            **_management_form(),
            "auto_stop_enabled": "on",
            "auto_stop_minutes": "",
            "status": "stopped",
            "desired_status": "terminated",
            "upstream_status": "exited",
            "ready_at": "2020-01-01 00:00:00",
        },
    )
    assert response.status_code == 302
    instance.refresh_from_db()
    assert instance.status == Status.READY
    assert instance.desired_status == Desired.RUNNING
    assert instance.upstream_status == "" and instance.ready_at is None


def test_instance_page_shows_timeline_deliveries_and_connection(admin_client, make_instance):
    instance = make_instance(
        connection_details={"ssh": "ssh root@abc.novita.test -p 22"},
        port_mappings=[{"port": 8888, "endpoint": "https://abc.novita.test:8888", "type": "http"}],
        price_per_hour=35000,
    )
    InstanceEvent.objects.create(
        instance=instance,
        source="api",
        from_status="starting",
        to_status="ready",
        reason="all probed ports answer",
        actor="client-a",
    )
    WebhookDelivery.objects.create(
        instance=instance,
        url="https://hooks.example.com/h",
        body="{}",
        state=WebhookDelivery.State.FAILED,
        attempts=8,
        last_status_code=503,
        last_error="HTTP 503",
    )
    page = admin_client.get(change_url(instance)).content.decode()
    assert "starting → ready" in page and "all probed ports answer" in page
    assert "client-a" in page
    assert "ssh root@abc.novita.test -p 22" in page
    assert "https://abc.novita.test:8888" in page
    assert "HTTP 503" in page and "failed" in page
    assert "$0.3500 / hour" in page


def test_timeline_is_bounded_and_newest_first(admin_client, make_instance):
    instance = make_instance()
    base = timezone.now() - timedelta(hours=1)
    InstanceEvent.objects.bulk_create(
        InstanceEvent(
            instance=instance,
            source="monitor",
            reason=f"event-{n:03d}",
            created_at=base + timedelta(seconds=n),
        )
        for n in range(250)
    )
    page = admin_client.get(change_url(instance)).content.decode()
    assert page.count('class="event"') == 200
    assert page.index("event-249") < page.index("event-248")
    assert "event-049" not in page


def _management_form(prefix="webhook_deliveries", total=0):
    return {
        f"{prefix}-TOTAL_FORMS": str(total),
        f"{prefix}-INITIAL_FORMS": str(total),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }


def test_auto_stop_edit_recomputes_deadline_and_records_event(admin_client, make_instance):
    used = timezone.now() - timedelta(minutes=5)
    instance = make_instance(
        ready_at=used - timedelta(minutes=10),
        last_used_at=used,
        auto_stop_at=used + timedelta(minutes=20),
        auto_stop_warned_at=timezone.now(),
    )
    response = admin_client.post(
        change_url(instance),
        {**_management_form(), "auto_stop_enabled": "on", "auto_stop_minutes": "45"},
    )
    assert response.status_code == 302
    instance.refresh_from_db()
    assert instance.auto_stop_minutes == 45
    assert instance.auto_stop_at == used + timedelta(minutes=45)
    assert instance.auto_stop_warned_at is None
    assert instance.status == Status.READY
    (event,) = events_of(instance)
    assert event.actor == "admin" and "45 min" in event.reason

    admin_client.post(change_url(instance), {**_management_form(), "auto_stop_minutes": "45"})
    instance.refresh_from_db()
    assert instance.auto_stop_enabled is False and instance.auto_stop_at is None
    assert "exempt" in events_of(instance)[-1].reason

    # Saving without changes records nothing.
    admin_client.post(change_url(instance), {**_management_form(), "auto_stop_minutes": "45"})
    assert len(events_of(instance)) == 2


def test_auto_stop_edit_on_stopped_instance_keeps_no_deadline(make_instance):
    instance = make_instance(status=Status.STOPPED, last_used_at=timezone.now())
    updated = admin_ops.set_auto_stop(instance, enabled=True, minutes=10, actor="op")
    assert updated.auto_stop_minutes == 10 and updated.auto_stop_at is None


# --- actions --------------------------------------------------------------------------------


def test_stop_action_calls_service_and_upstream(admin_client, make_instance, novita):
    novita.action_returns("stop")
    instance = make_instance(status=Status.READY)
    response = run_action(admin_client, "stop", [instance])
    assert response.status_code == 200
    instance.refresh_from_db()
    assert instance.status == Status.STOPPING
    assert instance.desired_status == Desired.STOPPED
    assert instance.last_change_source == "admin"
    assert novita.bodies("/gpu/instance/stop") == [{"instanceId": "nov-1"}]
    (event,) = events_of(instance)
    assert (event.from_status, event.to_status, event.actor) == ("ready", "stopping", "admin")
    assert texts(response) == [f"{instance.id}: stop requested"]


def test_stop_action_reports_each_instance(admin_client, make_instance, novita):
    novita.action_returns("stop")
    ready = make_instance(status=Status.READY)
    stopped = make_instance(status=Status.STOPPED, desired_status=Desired.STOPPED)
    response = run_action(admin_client, "stop", [ready, stopped])
    assert set(texts(response)) == {
        f"{ready.id}: stop requested",
        f"{stopped.id}: cannot be stopped while stopped",
    }
    stopped.refresh_from_db()
    assert stopped.status == Status.STOPPED
    assert len(novita.calls("/gpu/instance/stop")) == 1


def test_stop_action_says_when_upstream_did_not_take_it(admin_client, make_instance, novita):
    novita.action_returns(
        "stop", status=503, body={"code": 503, "reason": "UNAVAILABLE", "message": "busy"}
    )
    instance = make_instance(status=Status.READY)
    response = run_action(admin_client, "stop", [instance])
    (message,) = get_messages(response.wsgi_request)
    assert message.level_tag == "warning"
    assert strip_tags(str(message)).startswith(
        f"{instance.id}: stop recorded; Novita did not take it yet"
    )
    instance.refresh_from_db()
    assert instance.status == Status.STOPPING  # the desired state stands; the monitor retries


def test_start_action(admin_client, make_instance, novita):
    novita.action_returns("start")
    instance = make_instance(status=Status.STOPPED, desired_status=Desired.STOPPED)
    response = run_action(admin_client, "start", [instance])
    instance.refresh_from_db()
    assert instance.status == Status.STARTING
    assert instance.desired_status == Desired.RUNNING
    assert len(novita.calls("/gpu/instance/start")) == 1
    assert texts(response) == [f"{instance.id}: start requested"]
    assert events_of(instance)[0].to_status == Status.STARTING

    response = run_action(admin_client, "start", [instance])
    assert texts(response) == [f"{instance.id}: cannot be started while starting"]


def test_mark_used_action(admin_client, make_instance):
    before = timezone.now() - timedelta(minutes=15)
    instance = make_instance(
        ready_at=before - timedelta(hours=1),
        last_used_at=before,
        auto_stop_at=before + timedelta(minutes=20),
        auto_stop_warned_at=timezone.now(),
    )
    (message,) = texts(run_action(admin_client, "mark_used", [instance]))
    assert message.startswith(f"{instance.id}: marked used; auto-stop in ")
    instance.refresh_from_db()
    assert instance.last_used_at > before
    assert instance.auto_stop_at == instance.last_used_at + timedelta(minutes=20)
    assert instance.auto_stop_warned_at is None
    (event,) = events_of(instance)
    assert event.actor == "admin" and "marked as used" in event.reason


def test_mark_used_never_rewinds_a_newer_heartbeat(make_instance):
    future = timezone.now() + timedelta(minutes=1)
    instance = make_instance(last_used_at=future)
    with pytest.raises(admin_ops.AdminOpError):
        admin_ops.mark_used(instance, actor="op")
    instance.refresh_from_db()
    assert instance.last_used_at == future
    assert events_of(instance) == []


def test_sync_action_folds_upstream_view(admin_client, make_instance, novita):
    novita.get_returns(remote_instance("nov-1", status="exited"))
    instance = make_instance(status=Status.STOPPING, desired_status=Desired.STOPPED)
    (message,) = texts(run_action(admin_client, "sync", [instance]))
    assert message == f"{instance.id}: synced: upstream exited, status stopped"
    instance.refresh_from_db()
    assert instance.status == Status.STOPPED and instance.upstream_status == "exited"
    sources = [(e.source, e.to_status) for e in events_of(instance)]
    assert sources == [("admin", "stopping"), ("admin", "stopped")]


def test_sync_action_marks_instance_gone_upstream_terminated(admin_client, make_instance, novita):
    novita.get_returns(
        status=400, body={"code": 400, "reason": "RESOURCE_NOT_FOUND", "message": "gone"}
    )
    instance = make_instance(status=Status.READY)
    run_action(admin_client, "sync", [instance])
    instance.refresh_from_db()
    assert instance.status == Status.TERMINATED
    assert events_of(instance)[-1].reason == (
        "instance no longer exists upstream: upstream answered not found for its id"
    )
    assert events_of(instance)[-1].actor


def test_sync_action_reports_upstream_errors(admin_client, make_instance, novita):
    novita.get_returns(status=500, body={"code": 500, "reason": "UNKNOWN", "message": "boom"})
    instance = make_instance(status=Status.READY)
    never_created = make_instance(status=Status.CREATING, novita_instance_id=None)
    messages = set(texts(run_action(admin_client, "sync", [instance, never_created])))
    assert f"{never_created.id}: not created upstream yet; nothing to sync" in messages
    assert any(m.startswith(f"{instance.id}: sync failed upstream:") for m in messages)
    instance.refresh_from_db()
    assert instance.status == Status.READY


def test_terminate_asks_for_confirmation_then_calls_the_service(
    admin_client, make_instance, novita
):
    novita.action_returns("delete")
    instance = make_instance(status=Status.READY)
    response = run_action(admin_client, "terminate", [instance])
    assert response.status_code == 200
    assert response.templates[0].name == "admin/instances/instance/terminate_confirmation.html"
    page = response.content.decode()
    assert instance.name in page and "disks included" in page
    assert novita.calls("/gpu/instance/delete") == []
    instance.refresh_from_db()
    assert instance.status == Status.READY

    # The confirmation page posts back without "index", like Django's delete confirmation.
    response = admin_client.post(
        CHANGELIST,
        {"action": "terminate", "_selected_action": [instance.pk], "post": "yes"},
        follow=True,
    )
    assert texts(response) == [f"{instance.id}: terminate requested"]
    instance.refresh_from_db()
    assert instance.status == Status.STOPPING
    assert instance.desired_status == Desired.TERMINATED
    assert len(novita.calls("/gpu/instance/delete")) == 1
    assert events_of(instance)[-1].actor == "admin"


def test_actions_need_staff(client, make_instance):
    instance = make_instance()
    response = client.post(CHANGELIST, {"action": "stop", "_selected_action": [instance.pk]})
    assert response.status_code == 302 and "/login/" in response["Location"]
    instance.refresh_from_db()
    assert instance.status == Status.READY


# --- dashboard ------------------------------------------------------------------------------


def test_dashboard_is_staff_only_and_linked_from_index(client, admin_client):
    response = client.get(DASHBOARD)
    assert response.status_code == 302 and "/login/" in response["Location"]
    assert DASHBOARD in admin_client.get(reverse("admin:index")).content.decode()


def test_dashboard_figures(admin_client, make_instance):
    now = timezone.now()
    overdue = make_instance(
        name="idle-one", price_per_hour=50000, auto_stop_at=now - timedelta(minutes=7)
    )
    make_instance(status=Status.RUNNING, price_per_hour=70000)
    make_instance(status=Status.STARTING)  # no price known yet
    make_instance(status=Status.READY, price_per_hour=30000, auto_stop_enabled=False)
    saved = make_instance(status=Status.STOPPED, price_per_hour=40000)
    make_instance(status=Status.STOPPED, price_per_hour=999999)  # not billed
    InstanceEvent.objects.create(
        instance=saved,
        source="auto-stop",
        from_status="ready",
        to_status="stopping",
        reason="idle for 20 minutes",
        created_at=now - timedelta(hours=2),
    )
    SweepRun.objects.create(
        kind=SweepRun.Kind.AUTO_STOP,
        examined=4,
        acted=1,
        summary=[
            {"instanceId": saved.id, "action": "stopped", "reason": "idle for 20 minutes"},
            {"omitted": 3},
        ],
    )
    WebhookDelivery.objects.create(
        instance=overdue,
        url="https://hooks.example.com/h",
        body="{}",
        state=WebhookDelivery.State.FAILED,
        attempts=8,
        last_status_code=500,
        last_error="server error",
    )
    response = admin_client.get(DASHBOARD)
    assert response.status_code == 200
    d = response.context["d"]
    assert dict((v, n) for v, _, n in d.by_status)["ready"] == 2
    assert d.total == 6
    assert [i.pk for i in d.idle_overdue] == [overdue.pk]
    assert d.hourly_spend_usd == pytest.approx(1.5)
    assert (d.billed_count, d.unpriced_count) == (4, 1)
    assert d.saved_usd == pytest.approx(0.8, abs=0.001)
    assert d.saved_stops == 1
    assert d.webhook_failures_24h == 1 and d.breaker_state == "closed"
    page = response.content.decode()
    assert "$1.50/h" in page and "$0.80" in page
    assert f"{saved.id} stopped: idle for 20 minutes" in page and "… and 3 more" in page
    assert "idle-one" in page and "server error" in page
    assert "closed" in page


def test_savings_end_when_started_again_or_terminated(make_instance):
    now = timezone.now()
    restarted = make_instance(price_per_hour=100000)  # $1/h
    terminated = make_instance(price_per_hour=200000)  # $2/h
    unpriced = make_instance(price_per_hour=None)
    for instance, hours_ago in [(restarted, 10), (terminated, 6), (unpriced, 3)]:
        InstanceEvent.objects.create(
            instance=instance,
            source="auto-stop",
            to_status="stopping",
            reason="idle",
            created_at=now - timedelta(hours=hours_ago),
        )
    # Started again 7 h ago: saved 3 h. Terminated 5 h ago: saved 1 h.
    InstanceEvent.objects.create(
        instance=restarted,
        source="api",
        to_status="starting",
        reason="start",
        created_at=now - timedelta(hours=7),
    )
    InstanceEvent.objects.create(
        instance=terminated,
        source="api",
        to_status="stopping",
        desired_status="terminated",
        reason="terminate",
        created_at=now - timedelta(hours=5),
    )
    usd, hours, stops = selectors.auto_stop_savings(now)
    assert stops == 3
    assert usd == pytest.approx(3 * 1 + 1 * 2)
    assert hours == pytest.approx(3 + 1 + 3)


def test_dashboard_renders_when_breaker_state_is_unavailable(admin_client, monkeypatch):
    def broken():
        raise RuntimeError("redis down")

    monkeypatch.setattr(selectors, "get_client", broken)
    response = admin_client.get(DASHBOARD)
    assert response.status_code == 200
    assert response.context["d"].breaker_state == "unknown"


# --- the outbox and the event log ------------------------------------------------------------


def test_webhook_deliveries_are_listed_read_only(admin_client, make_instance):
    instance = make_instance(name="hooked")
    other = make_instance(name="other")
    failed = WebhookDelivery.objects.create(
        instance=instance,
        url="https://hooks.example.com/h",
        body="{}",
        state=WebhookDelivery.State.FAILED,
        attempts=2,
        attempt_log=[{"at": "2026-01-01T00:00:00.000Z", "statusCode": 500, "error": "HTTP 500"}],
    )
    WebhookDelivery.objects.create(
        instance=other, url="https://hooks.example.com/h", body="{}", state="delivered"
    )
    url = reverse("admin:instances_webhookdelivery_changelist")
    for query in [
        "?state__exact=failed",
        "?event=instance.status_changed&q=hooked",
        f"?q={instance.id}",
    ]:
        rows = admin_client.get(url + query).context["cl"].result_list
        assert [r.pk for r in rows] == [failed.pk], query
    assert admin_client.get(reverse("admin:instances_webhookdelivery_add")).status_code == 403
    detail = reverse("admin:instances_webhookdelivery_change", args=[failed.pk])
    response = admin_client.get(detail)
    assert response.status_code == 200 and "HTTP 500" in response.content.decode()
    assert admin_client.post(detail, {"state": "delivered"}).status_code == 403


def test_event_log_lists_events(admin_client, make_instance):
    instance = make_instance()
    InstanceEvent.objects.create(instance=instance, source="admin", reason="hello", actor="op")
    url = reverse("admin:instances_instanceevent_changelist")
    response = admin_client.get(url + "?source__exact=admin")
    assert response.status_code == 200 and "hello" in response.content.decode()


def test_dashboard_counts_what_a_real_auto_stop_sweep_did(admin_client, make_instance, novita):
    from instances.services import autostop

    novita.action_returns("stop")
    now = timezone.now()
    idle = make_instance(
        price_per_hour=50000,
        ready_at=now - timedelta(hours=2),
        last_used_at=now - timedelta(hours=1),
        auto_stop_at=now - timedelta(minutes=40),
    )
    autostop.sweep(now=now)
    idle.refresh_from_db()
    assert idle.status == Status.STOPPING
    d = admin_client.get(DASHBOARD).context["d"]
    assert d.saved_stops == 1
    (run,) = d.auto_stop_runs
    assert run.lines[0].startswith(f"{idle.id} stopped")


def test_links_to_an_instance_whose_id_looks_escaped_open_its_page(admin_client, make_instance):
    # The admin reads "_23" in a URL as "#": one id in twelve starts with such a pair, and its
    # dashboard and delivery links used to land on "does not exist" instead of the instance.
    instance = make_instance(
        id="inst_23ab5f2c9d0e1f3a", auto_stop_at=timezone.now() - timedelta(minutes=5)
    )
    delivery = WebhookDelivery.objects.create(
        instance=instance,
        url="https://hooks.example.com/h",
        body="{}",
        state=WebhookDelivery.State.FAILED,
        last_error="HTTP 503",
    )
    pages = [
        admin_client.get(DASHBOARD).content.decode(),
        admin_client.get(
            reverse("admin:instances_webhookdelivery_change", args=[delivery.pk])
        ).content.decode(),
    ]
    for page in pages:
        links = set(re.findall(r'href="(/admin/instances/instance/[^"]+/change/)"', page))
        assert links, "the page links to the instance"
        for link in links:
            response = admin_client.get(link)
            assert response.status_code == 200, link
            assert "inst_23ab5f2c9d0e1f3a" in response.content.decode()
