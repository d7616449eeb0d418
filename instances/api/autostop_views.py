"""Thin views for the contract's endpoints 10-12: last-used heartbeats and auto-stop control."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from novita_gateway.errors import FeatureDisabled, documented_error
from novita_gateway.timeutil import iso_now

from ..representations import LastUsedOut
from ..services import autostop
from . import autostop_serializers as a
from .views import actor_of, validated

LAST_USED_MESSAGE = "Last used time updated successfully"
VALIDATION = documented_error("VALIDATION_ERROR")
NOT_FOUND = documented_error("INSTANCE_NOT_FOUND")
DISABLED = documented_error("FEATURE_DISABLED (AUTO_STOP_ENABLED is false)")


def _require_enabled() -> None:
    if not settings.AUTO_STOP_ENABLED:
        raise FeatureDisabled(
            "Auto-stop is disabled", details="Set AUTO_STOP_ENABLED=true to use auto-stop"
        )


def _last_used(instance_id=None, name=None, used_at=None) -> Response:
    instance_id, stored = autostop.record_heartbeat(
        instance_id=instance_id, name=name, used_at=used_at
    )
    return Response(
        LastUsedOut.render(id=instance_id, last_used_at=stored, message=LAST_USED_MESSAGE)
    )


LAST_USED_DESCRIPTION = (
    "Marks the instance as used (postponing its auto-stop). `lastUsedAt` defaults to now; a "
    "time more than 60 s in the future is rejected. An older time than the one stored changes "
    "nothing: the response then shows the stored time."
)


class LastUsedView(APIView):
    @extend_schema(
        summary="Update an instance's last used time",
        operation_id="instances_last_used",
        description=LAST_USED_DESCRIPTION,
        request=a.LastUsedSerializer,
        responses={200: LastUsedOut, 400: VALIDATION, 404: NOT_FOUND},
    )
    def put(self, request, instance_id):
        data = validated(a.LastUsedSerializer, request.data)
        return _last_used(instance_id=instance_id, used_at=data.get("lastUsedAt"))


class LastUsedByNameView(APIView):
    @extend_schema(
        summary="Update an instance's last used time, by name",
        operation_id="instances_last_used_by_name",
        description=LAST_USED_DESCRIPTION,
        request=a.LastUsedByNameSerializer,
        responses={200: LastUsedOut, 400: VALIDATION, 404: NOT_FOUND},
    )
    def put(self, request):
        data = validated(a.LastUsedByNameSerializer, request.data)
        return _last_used(name=data["instanceName"], used_at=data.get("lastUsedAt"))


class AutoStopStatsView(APIView):
    @extend_schema(
        summary="Auto-stop statistics and configuration",
        description=(
            "`schedulerRunning` is true only when the scheduled sweep actually ran within the "
            "last two check intervals."
        ),
        responses={200: a.AutoStopStatsOut, 404: DISABLED},
    )
    def get(self, request):
        _require_enabled()
        return Response(autostop.stats())


class AutoStopTriggerView(APIView):
    @extend_schema(
        summary="Run an auto-stop check now",
        description=(
            "Runs the check synchronously and lists the idle instances it found. `dryRun` "
            "(default true) stops nothing and calls no upstream; `dryRun: false` stops them."
        ),
        request=a.TriggerSerializer,
        responses={200: a.TriggerOut, 400: VALIDATION, 404: DISABLED},
    )
    def post(self, request):
        _require_enabled()
        data = validated(a.TriggerSerializer, request.data)
        result = autostop.sweep(dry_run=data["dryRun"], trigger="api", actor=actor_of(request))
        return Response(
            {
                "message": "Auto-stop check completed successfully",
                "dryRun": result.dry_run,
                "timestamp": iso_now(),
                "candidates": [c.as_api() for c in result.candidates],
                "stopped": len(result.stopped),
                "failed": len(result.failures),
                "warned": len(result.warned),
            }
        )
