"""API routes for instances.

The instance's own route comes first: it is what every client poll asks for, and each route
tried before it cost the poll (a tenth of its URL resolution each). Its id never matches the
fixed words routed beside it (instances/start, /stop, /comprehensive, /last-used), so those
still reach their views; every other route lists its fixed paths before `<str:instance_id>`.
"""

from django.urls import path, register_converter
from django.urls.converters import StringConverter

from . import autostop_views, catalog_views, views
from .fleet_views import ComprehensiveInstanceListView


class InstanceIdConverter(StringConverter):
    """One path segment that is not one of the fixed words under instances/."""

    FIXED = ("start", "stop", "comprehensive", "last-used")
    regex = rf"(?!(?:{'|'.join(FIXED)})\Z)[^/]+"


register_converter(InstanceIdConverter, "instance_id")

urlpatterns = [
    path(
        "instances/<instance_id:instance_id>",
        views.InstanceDetailView.as_view(),
        name="instance-detail",
    ),
    path("regions", catalog_views.RegionListView.as_view(), name="catalog-regions"),
    path("products", catalog_views.ProductListView.as_view(), name="catalog-products"),
    path("templates", catalog_views.TemplateListView.as_view(), name="catalog-templates"),
    path("instances", views.InstanceListCreateView.as_view(), name="instance-list"),
    path("instances/start", views.StartByNameView.as_view(), name="instance-start-by-name"),
    path("instances/stop", views.StopByNameView.as_view(), name="instance-stop-by-name"),
    path(
        "instances/comprehensive",
        ComprehensiveInstanceListView.as_view(),
        name="instance-comprehensive",
    ),
    path(
        "instances/last-used",
        autostop_views.LastUsedByNameView.as_view(),
        name="instance-last-used-by-name",
    ),
    path(
        "instances/auto-stop/stats",
        autostop_views.AutoStopStatsView.as_view(),
        name="auto-stop-stats",
    ),
    path(
        "instances/auto-stop/trigger",
        autostop_views.AutoStopTriggerView.as_view(),
        name="auto-stop-trigger",
    ),
    path(
        "instances/<str:instance_id>/events",
        views.InstanceEventsView.as_view(),
        name="instance-events",
    ),
    path(
        "instances/<str:instance_id>/last-used",
        autostop_views.LastUsedView.as_view(),
        name="instance-last-used",
    ),
    path(
        "instances/<str:instance_id>/start",
        views.StartInstanceView.as_view(),
        name="instance-start",
    ),
    path(
        "instances/<str:instance_id>/stop", views.StopInstanceView.as_view(), name="instance-stop"
    ),
]
