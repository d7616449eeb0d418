"""Operational routes: health, Prometheus metrics, cache management, JSON metrics."""

from django.urls import path

from . import views

urlpatterns = [
    path("health", views.HealthView.as_view(), name="health"),
    path("metrics", views.PrometheusMetricsView.as_view(), name="prometheus-metrics"),
    path("api/cache/stats", views.CacheStatsView.as_view(), name="cache-stats"),
    path("api/cache/clear", views.CacheClearView.as_view(), name="cache-clear"),
    path("api/metrics", views.MetricsView.as_view(), name="metrics"),
    path("api/metrics/summary", views.MetricsSummaryView.as_view(), name="metrics-summary"),
]
