"""Operational endpoints: /health (always open), /metrics, cache management and JSON metrics."""

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_safe
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from novita_gateway.errors import ApiError
from novita_gateway.validation import unknown_fields

from . import caching, metrics
from . import health as health_checks
from .auth import api_key_required
from .timeutil import iso_now


@require_safe
def health(request):
    """200 healthy/degraded, or 503 unhealthy when a critical part is down (see ops/health.py)."""
    status, body = health_checks.report()
    response = JsonResponse(body, status=status)
    response["Cache-Control"] = "no-store"
    return response


@require_safe
@api_key_required
def prometheus_metrics(request):
    """Prometheus text, built at scrape time from the counters every process shares.

    Like the JSON metrics it needs an API key once keys exist (Prometheus: `authorization`).
    """
    return HttpResponse(generate_latest(metrics.REGISTRY), content_type=CONTENT_TYPE_LATEST)


class CacheStatsView(APIView):
    @extend_schema(
        summary="Cache statistics",
        description="Size, hits and misses of every named cache, counted across processes.",
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request):
        return Response(caching.stats_payload())


class CacheClearView(APIView):
    @extend_schema(
        summary="Clear caches",
        description=(
            "Clear one named cache (`cacheName`) or all of them. Instance state lives in the "
            "database, so nothing but speed is lost."
        ),
        request=inline_serializer(
            "CacheClearRequest",
            {"cacheName": serializers.ChoiceField(choices=settings.CACHE_NAMES, required=False)},
        ),
        responses=OpenApiTypes.OBJECT,
    )
    def post(self, request):
        extra = unknown_fields(request.data, ["cacheName"])
        if extra:
            raise serializers.ValidationError(extra)
        name = request.data.get("cacheName")
        valid = caching.cache_names()
        if name is not None and name not in valid:
            shown = name if isinstance(name, str | int | float | bool) else None
            raise ApiError(
                "Unknown cache name",
                [
                    {
                        "field": "cacheName",
                        "message": f"Must be one of: {', '.join(valid)}",
                        "value": shown,
                        "validNames": valid,
                    }
                ],
            )
        caching.clear(name)
        if name:
            message = f"Cache '{name}' cleared successfully"
        else:
            message = "All caches cleared successfully"
        return Response({"message": message, "timestamp": iso_now()})


class MetricsView(APIView):
    @extend_schema(summary="Application metrics", responses=OpenApiTypes.OBJECT)
    def get(self, request):
        data = metrics.metrics_payload()
        return Response({"status": "success", "timestamp": iso_now(), "data": data})


class MetricsSummaryView(APIView):
    @extend_schema(summary="Summarized metrics", responses=OpenApiTypes.OBJECT)
    def get(self, request):
        data = metrics.summary_payload()
        return Response({"status": "success", "timestamp": iso_now(), "data": data})
