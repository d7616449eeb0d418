"""The operator dashboard's charts: SVG drawn on the server with pygal, inlined in the page.

No JavaScript (pygal's tooltip script is turned off) and no colours of the page's own: text and
guide lines take the admin theme's colours through CSS (templates/admin/dashboard.html), so the
charts read the same in the light and the dark theme. Series colours are mid-tone, readable on
both backgrounds.
"""

from __future__ import annotations

from xml.etree import ElementTree

import pygal
from django.utils.safestring import SafeString, mark_safe
from pygal.style import Style

from .selectors import Charts

# Mid-tone colours that keep their contrast on white and on the dark theme's near-black.
SPEND, SAVED, STOPS, FAILURES = "#3b82f6", "#22a06b", "#8b5cf6", "#e5484d"
STATUS_COLOURS = {
    "ready": "#22a06b",
    "running": "#16a34a",
    "health_checking": "#0ea5e9",
    "starting": "#3b82f6",
    "creating": "#6366f1",
    "created": "#8b5cf6",
    "stopping": "#f59e0b",
    "stopped": "#94a3b8",
    "exited": "#d97706",
    "failed": "#e5484d",
}


def _style(*colours: str) -> Style:
    return Style(
        background="transparent",
        plot_background="transparent",
        foreground="#888",
        foreground_strong="#888",
        foreground_subtle="#8884",
        opacity=".85",
        opacity_hover="1",
        colors=colours,
        font_family="inherit",
        label_font_size=12,
        major_label_font_size=12,
        legend_font_size=13,
        title_font_size=15,
        value_font_size=11,
    )


def _config(**overrides) -> dict:
    config = {
        "js": [],  # no script: the page stays JavaScript-free
        "disable_xml_declaration": True,  # inlined in HTML
        "width": 760,
        "height": 320,
        "legend_at_bottom": True,
        "legend_at_bottom_columns": 2,
        "margin": 8,
        "spacing": 8,
        "print_zeroes": False,
        "show_y_guides": True,
        "show_x_guides": False,
    }
    config.update(overrides)
    return config


def _day_labels(data: Charts) -> dict:
    return {
        "x_labels": [d.strftime("%b %d") for d in data.days],
        "x_labels_major_every": 7,
        "show_minor_x_labels": False,
        "truncate_label": -1,
    }


def _render(chart, chart_id: str) -> SafeString:
    svg = chart.render_tree()
    # pygal always embeds a small config script (for its tooltips, which we do not load).
    for parent in svg.iter():
        for child in [c for c in parent if c.tag == "script"]:
            parent.remove(child)
    svg.set("data-chart", chart_id)
    svg.set("role", "img")
    text = ElementTree.tostring(svg, encoding="unicode")
    # Only our figures, dates and status names are in it: nothing a user typed.
    return mark_safe(text)  # noqa: S308


def spend_and_savings(data: Charts) -> SafeString:
    chart = pygal.Bar(
        style=_style(SPEND, SAVED),
        title="Spend and auto-stop savings per day (USD, estimated)",
        value_formatter=lambda v: f"${v:,.2f}",
        **_config(**_day_labels(data)),
    )
    chart.add("Spend", [round(v, 2) for v in data.spend_usd])
    chart.add("Saved by auto-stop", [round(v, 2) for v in data.saved_usd])
    return _render(chart, "spend")


def hours_by_status(data: Charts) -> SafeString:
    # pygal stacks horizontal bars bottom-up: reversed, the lifecycle reads top-down.
    statuses = list(reversed(data.hours_by_status))
    chart = pygal.HorizontalBar(
        style=_style("#888"),
        title=f"Instance-hours by status (last {len(data.days)} days)",
        value_formatter=lambda v: f"{v:,.1f} h",
        print_values=True,
        show_legend=False,
        x_labels=statuses,
        **_config(),
    )
    chart.add(
        "Instance-hours",
        [
            {"value": data.hours_by_status[s], "color": STATUS_COLOURS.get(s, "#888")}
            for s in statuses
        ],
    )
    chart.no_data_text = "No instance-hours yet"
    return _render(chart, "hours")


def stops_and_failures(data: Charts) -> SafeString:
    top = max([*data.auto_stops, *data.webhook_failures, 1])
    step = max(1, -(-top // 6))
    chart = pygal.Bar(
        style=_style(STOPS, FAILURES),
        title="Auto-stop stops and webhook failures per day",
        value_formatter=lambda v: f"{v:.0f}",
        # Counts: whole-number guides only.
        y_labels=list(range(0, top + step, step)),
        **_config(**_day_labels(data)),
    )
    chart.add("Auto-stop stops", data.auto_stops)
    chart.add("Webhook failures", data.webhook_failures)
    return _render(chart, "events")


def render_all(data: Charts) -> list[SafeString]:
    return [spend_and_savings(data), hours_by_status(data), stops_and_failures(data)]
