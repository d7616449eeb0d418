"""Operational endpoints: /health (always open), /metrics, cache management and JSON metrics."""

from django.http import HttpResponse, JsonResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from rest_framework import serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from novita_gateway.errors import ApiError, documented_error
from novita_gateway.renderers import FastJSONRenderer
from novita_gateway.timeutil import iso_now
from novita_gateway.validation import unknown_fields

from . import caching, metrics_payloads, prometheus
from . import health as health_checks
from . import serializers as out


class FirstRenderer(BaseContentNegotiation):
    """Answer in the view's own format whatever Accept says (as a plain Django view would):
    scrapers and load balancers send Accept headers of their own."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class OpsView(APIView):
    # GET and HEAD only (OPTIONS too answers 405), as when these were plain Django views.
    http_method_names = ["get", "head"]
    metadata_class = None
    content_negotiation_class = FirstRenderer
    renderer_classes = [FastJSONRenderer]


class HealthView(OpsView):
    # Always open: no key, no rate limit (monitoring polls it), and no database touched before
    # the checks themselves run.
    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        summary="Health of the gateway and its dependencies",
        description=(
            "200 `healthy`, or `degraded` when a non-critical part (Novita API, job queue, "
            "caches, beat sweeps) is down; 503 `unhealthy` with a short body when the database "
            "or a configured Redis is down. Never needs an API key."
        ),
        responses={
            200: out.HealthOut,
            503: OpenApiResponse(out.UnhealthyOut, description="A critical part is down"),
        },
        auth=[],
    )
    def get(self, request):
        status, body = health_checks.report()
        response = JsonResponse(body, status=status)
        response["Cache-Control"] = "no-store"
        return response


class PrometheusMetricsView(OpsView):
    # The default authentication and permission: a key once any exists, as for /api/.

    @extend_schema(
        summary="Prometheus metrics",
        description=(
            "Prometheus text exposition, built at scrape time from the counters every process "
            "shares. Needs an API key once keys exist (Prometheus: `authorization`)."
        ),
        responses={(200, CONTENT_TYPE_LATEST.split(";")[0]): OpenApiTypes.STR},
    )
    def get(self, request):
        return HttpResponse(generate_latest(prometheus.REGISTRY), content_type=CONTENT_TYPE_LATEST)


class CacheStatsView(APIView):
    @extend_schema(
        summary="Cache statistics",
        description="Size, hits and misses of every named cache, counted across processes.",
        responses={200: out.CacheStatsOut},
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
        request=out.CacheClearIn,
        responses={
            200: out.MessageOut,
            400: documented_error("VALIDATION_ERROR (unknown cacheName; details list validNames)"),
        },
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
    @extend_schema(summary="Application metrics", responses={200: out.MetricsOut})
    def get(self, request):
        data = metrics_payloads.metrics_payload()
        return Response({"status": "success", "timestamp": iso_now(), "data": data})


class MetricsSummaryView(APIView):
    @extend_schema(summary="Summarized metrics", responses={200: out.MetricsSummaryOut})
    def get(self, request):
        data = metrics_payloads.summary_payload()
        return Response({"status": "success", "timestamp": iso_now(), "data": data})
