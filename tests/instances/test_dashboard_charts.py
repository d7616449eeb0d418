"""The dashboard's charts: per-day spend and savings, instance-hours by status, auto-stops and
webhook failures, computed from the audit trail and drawn as inline SVG without JavaScript."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from instances import selectors
from instances.models import InstanceEvent, WebhookDelivery
from instances.status import Status

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def at(days_ago: int, hour: int, minute: int = 0) -> datetime:
    return (NOW - days_ago * DAY).replace(hour=hour, minute=minute)


def event(instance, when, from_status, to_status, source="monitor", **extra):
    InstanceEvent.objects.create(
        instance=instance,
        created_at=when,
        from_status=from_status,
        to_status=to_status,
        source=source,
        reason="test",
        **extra,
    )


@pytest.fixture
def history(make_instance):
    """One $1/h instance: ready 3 days ago 10:06, auto-stopped 20:00, started again yesterday."""
    gpu = make_instance(price_per_hour=100_000, created_at=at(3, 10))
    event(gpu, at(3, 10), "", Status.CREATING, source="api")
    event(gpu, at(3, 10, 6), Status.CREATING, Status.READY)
    event(gpu, at(3, 20), Status.READY, Status.STOPPING, source="auto-stop")
    event(gpu, at(3, 20, 6), Status.STOPPING, Status.STOPPED)
    event(gpu, at(1, 8), Status.STOPPED, Status.STARTING, source="api")
    event(gpu, at(1, 8, 6), Status.STARTING, Status.READY)
    for days_ago, state in [(2, "failed"), (2, "failed"), (0, "delivered")]:
        WebhookDelivery.objects.create(
            instance=gpu,
            url="https://hooks.example.com/h",
            body="{}",
            state=state,
            created_at=at(days_ago, 9),
        )
    # Terminated long before the window: no hours at all.
    make_instance(status=Status.TERMINATED, created_at=NOW - 90 * DAY, novita_instance_id=None)
    return gpu


def by_day(data, series):
    return dict(zip([d.isoformat() for d in data.days], series, strict=True))


def test_spend_per_day_follows_billed_time_at_the_instances_price(history):
    data = selectors.charts(now=NOW)
    spend = by_day(data, data.spend_usd)
    assert len(data.days) == 30 and data.days[-1] == NOW.date()
    assert spend["2026-11-17"] == pytest.approx(9.9)  # ready 10:06 -> 20:00
    assert spend["2026-11-18"] == pytest.approx(0)  # stopped all day
    assert spend["2026-11-19"] == pytest.approx(16)  # starting 08:00, ready from 08:06
    assert spend["2026-11-20"] == pytest.approx(12)  # ready until now, 12:00
    assert sum(data.spend_usd) == pytest.approx(37.9)


def test_savings_per_day_run_from_the_auto_stop_until_the_next_start(history):
    data = selectors.charts(now=NOW)
    saved = by_day(data, data.saved_usd)
    assert saved["2026-11-17"] == pytest.approx(4)  # 20:00 -> midnight
    assert saved["2026-11-18"] == pytest.approx(24)
    assert saved["2026-11-19"] == pytest.approx(8)  # until started again at 08:00
    assert saved["2026-11-20"] == 0


def test_instance_hours_by_status_over_the_window(history):
    hours = selectors.charts(now=NOW).hours_by_status
    assert hours == {
        Status.CREATING: pytest.approx(0.1),
        Status.STARTING: pytest.approx(0.1),
        Status.READY: pytest.approx(9.9 + 15.9 + 12),
        Status.STOPPING: pytest.approx(0.1),
        Status.STOPPED: pytest.approx(35.9),
    }


def test_auto_stops_and_webhook_failures_are_counted_per_day(history):
    data = selectors.charts(now=NOW)
    assert by_day(data, data.auto_stops)["2026-11-17"] == 1
    assert sum(data.auto_stops) == 1
    assert by_day(data, data.webhook_failures)["2026-11-18"] == 2
    assert sum(data.webhook_failures) == 2


def test_an_instance_without_changes_in_the_window_counts_in_its_current_status(make_instance):
    make_instance(status=Status.STOPPED, created_at=NOW - 60 * DAY, price_per_hour=100_000)
    data = selectors.charts(now=NOW)
    assert data.hours_by_status == {Status.STOPPED: pytest.approx(29 * 24 + 12)}
    assert sum(data.spend_usd) == 0


def test_charts_are_a_fixed_number_of_queries_whatever_the_fleet(
    make_instance, django_assert_max_num_queries
):
    for index in range(30):
        gpu = make_instance(name=f"q-{index}", created_at=NOW - 2 * DAY, price_per_hour=50_000)
        event(gpu, NOW - DAY, Status.READY, Status.STOPPING, source="auto-stop")
    with django_assert_max_num_queries(6):
        selectors.charts(now=NOW)


def test_the_dashboard_shows_three_svg_charts_and_no_script(admin_client, history):
    page = admin_client.get(reverse("admin-dashboard")).content.decode()
    for chart in ("spend", "hours", "events"):
        assert re.search(f'<svg [^>]*data-chart="{chart}"', page), chart
    assert "<script" not in page.split('id="charts"')[1].split('class="dash-grid"')[0]
    assert "Spend and auto-stop savings per day" in page
    assert "Instance-hours by status" in page
    assert "Auto-stop stops and webhook failures per day" in page


def test_the_dashboard_recomputes_its_charts_at_most_once_a_minute(history, monkeypatch):
    computed = []
    real = selectors.charts
    monkeypatch.setattr(selectors, "charts", lambda: computed.append(1) or real(now=NOW))
    first = selectors.dashboard_charts()
    second = selectors.dashboard_charts()
    assert len(computed) == 1
    assert second.spend_usd == first.spend_usd and sum(first.spend_usd) > 0
