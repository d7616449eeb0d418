"""Auto-stop endpoints: request validation (input) and documented response shapes (output)."""

from datetime import UTC, datetime

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from novita_gateway.validation import RejectUnknownFields

from ..services.autostop import CLOCK_SKEW_ALLOWANCE
from .fields import StrictBooleanField, StrictCharField


@extend_schema_field(OpenApiTypes.DATETIME)
class IsoDateTimeField(serializers.Field):
    """An ISO 8601 date-time string (a string, nothing else); no offset means UTC."""

    default_error_messages = {
        "type": "A string is required.",
        "invalid": "Must be an ISO 8601 date-time, e.g. 2024-01-15T10:30:00.000Z.",
    }

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("type")
        try:
            value = parse_datetime(data.strip())
        except ValueError:  # well-formed but impossible, e.g. month 13
            value = None
        if value is None:
            self.fail("invalid")
        if timezone.is_naive(value):
            value = timezone.make_aware(value, UTC)
        return value

    def to_representation(self, value):
        return value.isoformat()


# No GPU of ours was used before this; an earlier date is a client bug (e.g. seconds sent as
# a year), not a heartbeat.
EARLIEST_LAST_USED = datetime(2000, 1, 1, tzinfo=UTC)


class LastUsedSerializer(RejectUnknownFields):
    lastUsedAt = IsoDateTimeField(
        required=False,
        help_text=(
            "When the instance was last used (default: now). From 2000-01-01 on, and never "
            f"more than {int(CLOCK_SKEW_ALLOWANCE.total_seconds())} s ahead of the server clock."
        ),
    )

    def validate_lastUsedAt(self, value):
        if value < EARLIEST_LAST_USED:
            raise serializers.ValidationError("Must not be before 2000-01-01T00:00:00Z.")
        limit = timezone.now() + CLOCK_SKEW_ALLOWANCE
        if value > limit:
            raise serializers.ValidationError(
                "Must not be in the future (more than "
                f"{int(CLOCK_SKEW_ALLOWANCE.total_seconds())} s ahead of the server clock)."
            )
        return value


class LastUsedByNameSerializer(LastUsedSerializer):
    instanceName = StrictCharField(min_length=1, max_length=100)


class TriggerSerializer(RejectUnknownFields):
    dryRun = StrictBooleanField(
        default=True, help_text="Only report what would be stopped (default true, for safety)."
    )


# --- Output shapes (documentation of what the views return) ----------------------------------


class LastUsedOut(serializers.Serializer):
    instanceId = serializers.CharField()
    lastUsedAt = serializers.DateTimeField()
    message = serializers.CharField()


class AutoStopStatsOut(serializers.Serializer):
    schedulerRunning = serializers.BooleanField(
        help_text="True only when the scheduled sweep ran within the last two intervals"
    )
    checkIntervalMinutes = serializers.FloatField()
    defaultInactivityThresholdMinutes = serializers.FloatField()
    warningMinutes = serializers.FloatField()
    lastRunAt = serializers.DateTimeField(allow_null=True)
    lastRunDurationMs = serializers.FloatField(allow_null=True)
    lastRunStopped = serializers.IntegerField(allow_null=True)
    totalStopped = serializers.IntegerField()
    nextDeadlineAt = serializers.DateTimeField(
        allow_null=True, help_text="Earliest auto-stop deadline among running instances"
    )


class CandidateOut(serializers.Serializer):
    instanceId = serializers.CharField()
    name = serializers.CharField()
    idleMinutes = serializers.FloatField()
    thresholdMinutes = serializers.FloatField()
    reason = serializers.CharField()
    action = serializers.ChoiceField(choices=["wouldStop", "stopped", "stopFailed", "skipped"])


class TriggerOut(serializers.Serializer):
    message = serializers.CharField()
    dryRun = serializers.BooleanField()
    timestamp = serializers.DateTimeField()
    candidates = CandidateOut(many=True)
    stopped = serializers.IntegerField()
    failed = serializers.IntegerField()
    warned = serializers.IntegerField()
