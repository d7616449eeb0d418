"""Request validation (input) and documented response shapes (output), kept separate.

Field names are the contract's camelCase; `source=` maps them to our snake_case names.
Unknown fields in a request body are refused (400), nested ones included.
"""

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers

from novita_gateway.validation import RejectUnknownFields
from ops import netsafety

from ..novita import catalog
from ..representations import InstanceSummaryOut
from ..services import health_probe
from .fields import StrictBooleanField, StrictCharField, StrictIntegerField, StrictRegexField
from .fleet_serializers import ComprehensiveInstanceOut

REGIONS = list(catalog.DEFAULT_REGION_CLUSTERS)
DEFAULT_REGION = "CN-HK-01"
NAME_PATTERN = r"^[A-Za-z0-9_-]+$"
NAME_MESSAGE = "Name must contain only alphanumeric characters, hyphens, and underscores"


def with_example(field, example):
    """Give a field's schema a realistic example (Swagger's "Try it out" starts from it)."""
    schema = {"type": "string", "example": example}
    for attr, key in (("min_length", "minLength"), ("max_length", "maxLength")):
        if getattr(field, attr, None) is not None:
            schema[key] = getattr(field, attr)
    # Fields are re-made from their arguments for every serializer (deepcopy), so the schema
    # has to sit on a class of its own.
    documented = extend_schema_field(schema)(type(type(field).__name__, (type(field),), {}))
    return documented(*field._args, **field._kwargs)


WEBHOOK_HELP = (
    "Receives a signed POST for every status change (`event: instance.status_changed`) and "
    "auto-stop warning (`instance.auto_stop_warning`): the contract's payload plus `event`, "
    "`deliveryId` (same on retries) and the instance's `sequence` number; sent in sequence "
    "order per instance. Signed with `X-Signature-SHA256` and the Standard Webhooks headers "
    "`webhook-id`, `webhook-timestamp`, `webhook-signature` (README: Webhooks a receiver can "
    "trust). Must resolve to a public address unless listed in WEBHOOK_ALLOWED_HOSTS."
)


class WebhookUrlField(serializers.URLField):
    """http(s) URL whose host does not resolve to a private, loopback or reserved address."""

    default_error_messages = {"type": "A string is required."}

    def __init__(self, **kwargs):
        kwargs.setdefault("help_text", WEBHOOK_HELP)
        kwargs.setdefault("max_length", 2000)
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_blank", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("type")
        value = super().to_internal_value(data)
        try:
            netsafety.validate_webhook_url(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None
        return value


_ATTEMPT = int(health_probe.MAX_ATTEMPT_SECONDS)
_ROUND = int(health_probe.ROUND_SECONDS)
_PAUSE_MS = int(health_probe.MAX_IN_ROUND_PAUSE * 1000)


class HealthCheckConfigSerializer(RejectUnknownFields):
    """The contract's ranges are accepted; what a probe really does is clamped so that nothing a
    client asks for can hold a worker: see each field."""

    timeoutMs = StrictIntegerField(
        min_value=1000,
        max_value=300000,
        default=30000,
        help_text=(
            "Wall-clock limit of one probe attempt (connect, status line and headers). Clamped "
            f"to {_ATTEMPT * 1000} ms: a larger value counts as {_ATTEMPT * 1000}."
        ),
    )
    retryAttempts = StrictIntegerField(
        min_value=0,
        max_value=10,
        default=3,
        help_text=(
            "Retries of a port that is down, within one probe round. A round (every port, every "
            f"retry) ends after {_ROUND} s whatever this asks; ports it had no time left for "
            "count as down until the next round."
        ),
    )
    retryDelayMs = StrictIntegerField(
        min_value=100,
        max_value=30000,
        default=2000,
        help_text=(
            "Delay before the next probe round. Between retries inside a round the pause is "
            f"clamped to {_PAUSE_MS} ms."
        ),
    )
    maxWaitTimeMs = StrictIntegerField(
        min_value=30000,
        max_value=1800000,
        default=600000,
        help_text="The instance fails when it is not ready this long after the request.",
    )
    targetPort = StrictIntegerField(
        min_value=1,
        max_value=65535,
        required=False,
        help_text="Probe only this port (default: every HTTP port, else every port).",
    )


class CreateInstanceSerializer(RejectUnknownFields):
    name = StrictRegexField(
        NAME_PATTERN,
        min_length=1,
        max_length=100,
        error_messages={"invalid": NAME_MESSAGE},
    )
    productName = with_example(
        StrictCharField(
            min_length=1,
            max_length=200,
            source="product_name",
            help_text="GPU product name, as `GET /api/products` lists it (`name`). The cheapest "
            "offer of that name with capacity in the region is used. A product not offered in "
            "the region is refused with the regions that offer it.",
        ),
        "RTX 4090 24GB",
    )
    templateId = with_example(
        StrictCharField(
            min_length=1,
            max_length=200,
            source="template_id",
            help_text="Template to create from (image, ports, environment), as "
            "`GET /api/templates` lists it (`id`).",
        ),
        "pytorch-jupyter",
    )
    gpuNum = StrictIntegerField(min_value=1, max_value=8, default=1, source="gpu_num")
    rootfsSize = StrictIntegerField(min_value=20, max_value=1000, default=60, source="rootfs_size")
    region = with_example(
        StrictCharField(
            default=DEFAULT_REGION,
            help_text="Region code, as `GET /api/regions` lists it (`id`): by default "
            f"{', '.join(REGIONS)}. Each maps to a Novita cluster (NOVITA_REGION_CLUSTERS).",
        ),
        "US-WEST-01",
    )
    webhookUrl = WebhookUrlField(source="webhook_url")
    healthCheckConfig = HealthCheckConfigSerializer(required=False, source="health_check_config")
    autoStopEnabled = StrictBooleanField(default=True, source="auto_stop_enabled")
    autoStopMinutes = StrictIntegerField(
        min_value=1,
        max_value=10080,
        required=False,
        source="auto_stop_minutes",
        help_text="Idle minutes before auto-stop (default AUTO_STOP_INACTIVITY_THRESHOLD_MINUTES)",
    )
    billingMode = serializers.ChoiceField(
        choices=["onDemand", "spot"], required=False, source="billing_mode"
    )

    def validate_region(self, value):
        codes = catalog.region_codes()
        if value.upper() not in codes:
            raise serializers.ValidationError(f"Unknown region; regions: {', '.join(codes)}")
        return value.upper()


class StartInstanceSerializer(RejectUnknownFields):
    healthCheckConfig = HealthCheckConfigSerializer(required=False)
    targetPort = StrictIntegerField(min_value=1, max_value=65535, required=False)
    webhookUrl = WebhookUrlField()


class StartByNameSerializer(StartInstanceSerializer):
    instanceName = StrictCharField(min_length=1, max_length=100)


class StopInstanceSerializer(RejectUnknownFields):
    webhookUrl = WebhookUrlField()


class StopByNameSerializer(StopInstanceSerializer):
    instanceName = StrictCharField(min_length=1, max_length=100)


class PageQuerySerializer(serializers.Serializer):
    page = serializers.IntegerField(min_value=1, default=1, help_text="1 is the newest page")
    pageSize = serializers.IntegerField(min_value=1, max_value=200, default=50)


class ListQuerySerializer(serializers.Serializer):
    source = serializers.ChoiceField(choices=["all", "local", "novita"], default="all")
    includeNovitaOnly = serializers.BooleanField(default=False)
    syncLocalState = serializers.BooleanField(default=False)


# --- Output shapes -----------------------------------------------------------------------------
# Bodies and schema both come from instances/representations.py; these only assemble them.


class InstanceListOut(serializers.Serializer):
    instances = PolymorphicProxySerializer(
        component_name="InstanceListRow",
        serializers=[InstanceSummaryOut, ComprehensiveInstanceOut],
        resource_type_field_name=None,
        many=True,
        help_text="Summary rows; rows of the comprehensive listing when upstream is asked "
        "(source=novita, includeNovitaOnly or syncLocalState)",
    )
    total = serializers.IntegerField()
