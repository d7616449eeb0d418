"""Instances on the wire: each response shape is declared once, as an output serializer, and
that one declaration both renders the body (`Shape.render`) and documents it in the schema.

Field names are the contract's camelCase; `source=` maps them to our snake_case names. A field
declared `required=False` is left out of the body when it has no value (None or ""), which is
what the schema says of it (not required).

The polling path (GET /api/instances/{id}) is the hottest request, so a shape renders from a
plan made once per class from its declared fields (how each reads and converts its value), as
fast as a hand-built dict; a serializer built per request costs about ten times as much (deep
copies of every field). tests/instances/test_representations.py checks that the plan renders
exactly what DRF's own to_representation would.
"""

from __future__ import annotations

from operator import attrgetter, itemgetter

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from novita_gateway.timeutil import iso


class WireDateTimeField(serializers.DateTimeField):
    """The contract's timestamps: ISO 8601, UTC, milliseconds, trailing Z."""

    def to_representation(self, value):
        return iso(value)


class _Values:
    """An object whose attributes are `values`, falling back to `obj`'s (see Shape.render)."""

    __slots__ = ("_obj", "_values")

    def __init__(self, obj, values: dict):
        self._obj = obj
        self._values = values

    def __getattr__(self, name):
        values = object.__getattribute__(self, "_values")
        if name in values:
            return values[name]
        return getattr(object.__getattribute__(self, "_obj"), name)


# Field types whose to_representation is just this builtin (DRF's own, called directly).
_BUILTIN = {
    serializers.CharField: str,
    serializers.IntegerField: int,
    serializers.FloatField: float,
    serializers.BooleanField: bool,
}


def _readers(field) -> tuple:
    """How a field reads its value (from an object, from a dict): DRF's get_attribute minus the
    generality these shapes do not use (dotted sources, callables, defaults)."""
    if isinstance(field, _Derived):
        return field.compute, field.compute
    if field.source == "*":
        return (lambda obj: obj), (lambda obj: obj)
    return attrgetter(field.source), itemgetter(field.source)


def _converter(field):
    if isinstance(field, serializers.ListSerializer):
        return _many(type(field.child))
    if isinstance(field, Shape):
        return type(field).render
    return _BUILTIN.get(type(field), field.to_representation)


# Comments, not docstrings, on the shapes: a docstring would become the schema's description.
class Shape(serializers.Serializer):
    # An output shape. Optional (required=False) fields are omitted when empty; a missing
    # optional value is omitted too, a missing required one is an error.

    @classmethod
    def _plan(cls) -> list[tuple]:
        """(name, read, read_key, convert, optional) for each field, made once per class."""
        plan = cls.__dict__.get("_plan_cache")
        if plan is None:
            plan = []
            for name, field in cls().fields.items():
                read, read_key = _readers(field)
                plan.append((name, read, read_key, _converter(field), not field.required))
            cls._plan_cache = plan
        return plan

    def to_representation(self, instance):
        return self.render(instance)

    @classmethod
    def render(cls, obj=None, **values) -> dict:
        """The body for `obj` (a model instance or a dict); keyword values add to or override its
        attributes, for what the object itself does not carry (a message, an estimate)."""
        if values:
            obj = _Values(obj, values)
        from_dict = isinstance(obj, dict)
        data = {}
        for name, read, read_key, convert, optional in cls._plan():
            try:
                value = read_key(obj) if from_dict else read(obj)
            except (AttributeError, KeyError):
                if optional:
                    continue
                raise
            if value is None or value == "":
                if optional:
                    continue
                data[name] = value if value is None else convert(value)
            else:
                data[name] = convert(value)
        return data


def _many(shape):
    def convert(items):
        return [shape.render(item) for item in items]

    return convert


class PortMappingOut(Shape):
    port = serializers.IntegerField()
    endpoint = serializers.CharField(allow_null=True)
    type = serializers.CharField()


class _Derived:
    """A field whose value is `compute(instance)` rather than one attribute."""

    def __init__(self, compute, **kwargs):
        self.compute = compute
        kwargs.setdefault("source", "*")
        super().__init__(**kwargs)

    def get_attribute(self, instance):
        return self.compute(instance)


class DerivedDateTimeField(_Derived, WireDateTimeField):
    pass


class DerivedFloatField(_Derived, serializers.FloatField):
    pass


@extend_schema_field(
    {
        "type": "object",
        "properties": {
            "ssh": {"type": "string"},
            "jupyter": {"type": "string"},
            "webTerminal": {"type": "string"},
        },
        "description": "Addresses and commands only; passwords are never stored or shown.",
    }
)
class ConnectionDetailsField(_Derived, serializers.Field):
    def to_representation(self, value):
        return value


def connection_details(instance) -> dict:
    # Only addresses and commands; upstream passwords are never stored, so never shown.
    return {k: v for k, v in (instance.connection_details or {}).items() if v}


def auto_stop_minutes(instance) -> float:
    return instance.auto_stop_threshold_minutes


def shown_auto_stop_at(instance):
    """The deadline, only while auto-stop can act on this instance."""
    if instance.auto_stop_at and instance.auto_stop_applies and settings.AUTO_STOP_ENABLED:
        return instance.auto_stop_at
    return None


class InstanceSummaryOut(Shape):
    # The list shape (contract endpoint 4).

    id = serializers.CharField()
    name = serializers.CharField()
    status = serializers.CharField()
    gpuNum = serializers.IntegerField(source="gpu_num")
    region = serializers.CharField()
    portMappings = PortMappingOut(many=True, source="port_mappings")
    createdAt = WireDateTimeField(source="created_at")
    readyAt = WireDateTimeField(source="ready_at", required=False)
    lastUsedAt = WireDateTimeField(source="last_used_at", required=False)
    autoStopAt = DerivedDateTimeField(
        shown_auto_stop_at, required=False, help_text="Auto-stop deadline"
    )
    stoppedAt = WireDateTimeField(source="stopped_at", required=False)


class InstanceDetailOut(InstanceSummaryOut):
    # The detail shape (contract endpoint 3), plus a few fields the contract leaves open.

    desiredStatus = serializers.CharField(source="desired_status")
    productName = serializers.CharField(source="product_name")
    templateId = serializers.CharField(source="template_id")
    rootfsSize = serializers.IntegerField(source="rootfs_size")
    novitaInstanceId = serializers.CharField(source="novita_instance_id", allow_null=True)
    connectionDetails = ConnectionDetailsField(connection_details)
    autoStopEnabled = serializers.BooleanField(source="auto_stop_enabled")
    autoStopMinutes = DerivedFloatField(auto_stop_minutes)
    failureReason = serializers.CharField(source="failure_reason", required=False)
    # From the audit trail (instances/history.py), given to render() as keyword values.
    statusReason = serializers.CharField(
        source="status_reason",
        required=False,
        help_text="Why the instance has its current status: the reason recorded with its last "
        "status change (e.g. `all probed ports answer (8888/http 200)`, `idle 23 min > 20 min "
        "threshold ...`, `upstream reported an error: ...`). The full history is "
        "`GET /api/instances/{id}/events`.",
    )
    pricePerHour = serializers.FloatField(
        source="price_per_hour_usd",
        required=False,
        help_text="USD per hour for the whole instance (all its GPUs), as upstream priced the "
        "offer it was created from (the spot price for spot instances). Absent until the worker "
        "has resolved the product.",
    )
    billedSeconds = serializers.IntegerField(
        source="billed_seconds",
        required=False,
        help_text="Billed time: seconds the instance has spent in `starting`, `running`, "
        "`health_checking` or `ready`, summed from its status history, counting up to now "
        "while it is in one of them.",
    )
    costSoFar = serializers.FloatField(
        source="cost_so_far",
        required=False,
        help_text="Estimated GPU cost in USD: billedSeconds / 3600 x pricePerHour. An estimate: "
        "storage billed while stopped is not included, and upstream's invoice is what counts. "
        "Absent while pricePerHour is unknown.",
    )


class CreateInstanceOut(Shape):
    instanceId = serializers.CharField(source="id")
    status = serializers.CharField()
    message = serializers.CharField()
    estimatedReadyTime = WireDateTimeField(source="estimated_ready_time")


class OperationOut(Shape):
    instanceId = serializers.CharField(source="id")
    novitaInstanceId = serializers.CharField(source="novita_instance_id", allow_null=True)
    operationId = serializers.CharField(source="operation_id")
    status = serializers.CharField()
    message = serializers.CharField()
    estimatedReadyTime = WireDateTimeField(source="estimated_ready_time", required=False)


class LastUsedOut(Shape):
    instanceId = serializers.CharField(source="id")
    lastUsedAt = WireDateTimeField(source="last_used_at")
    message = serializers.CharField()


class WebhookInstanceOut(Shape):
    # The instance part (`data`) of a webhook payload: which instance, and how to reach it.

    id = serializers.CharField()
    name = serializers.CharField()
    status = serializers.CharField()
    portMappings = PortMappingOut(many=True, source="port_mappings")
    connectionDetails = ConnectionDetailsField(connection_details)


class InstanceEventOut(Shape):
    # One entry of an instance's audit trail: a status change or a decision, who and why.

    id = serializers.IntegerField()
    createdAt = WireDateTimeField(source="created_at")
    fromStatus = serializers.CharField(
        source="from_status", required=False, help_text="Absent on the creation event"
    )
    toStatus = serializers.CharField(
        source="to_status",
        required=False,
        help_text="Equal to fromStatus when the event records a decision, not a change",
    )
    desiredStatus = serializers.CharField(source="desired_status", required=False)
    source = serializers.CharField(
        help_text="Who acted: api, monitor, auto-stop, reconcile, migration, admin or worker"
    )
    reason = serializers.CharField(required=False)
    actor = serializers.CharField(
        required=False, help_text="API key name or operator, when a person or client acted"
    )
    requestId = serializers.CharField(
        source="request_id", required=False, help_text="X-Request-ID of the request that did it"
    )


class InstanceEventListOut(Shape):
    events = InstanceEventOut(many=True, help_text="Newest first")
    total = serializers.IntegerField(help_text="Events of this instance in all pages")
    page = serializers.IntegerField()
    pageSize = serializers.IntegerField(source="page_size")


# --- the catalogue ------------------------------------------------------------------------------


class RegionOut(Shape):
    id = serializers.CharField(help_text="Region code to send as `region` when creating")
    name = serializers.CharField(
        allow_null=True, help_text="Name of the Novita cluster it maps to (null: none right now)"
    )
    clusterId = serializers.CharField(source="cluster_id", allow_null=True)
    available = serializers.BooleanField(
        help_text="True when upstream lists the cluster this region maps to"
    )


class RegionListOut(Shape):
    regions = RegionOut(many=True)
    total = serializers.IntegerField()


class ProductOut(Shape):
    name = serializers.CharField(help_text="Send as `productName` when creating")
    gpu = serializers.CharField(help_text="GPU model")
    gpuMemoryGb = serializers.IntegerField(source="gpu_memory_gb", required=False)
    gpuNum = serializers.IntegerField(source="gpu_num", help_text="GPUs the prices are for")
    pricePerHour = serializers.FloatField(
        source="price_per_hour",
        allow_null=True,
        help_text="On-demand USD per hour for gpuNum GPUs (the cheapest offer)",
    )
    spotPricePerHour = serializers.FloatField(
        source="spot_price_per_hour",
        required=False,
        help_text="Spot USD per hour for gpuNum GPUs; absent where spot is not offered",
    )
    available = serializers.BooleanField(help_text="Capacity to deploy right now (cached)")
    regions = serializers.ListField(
        child=serializers.CharField(), help_text="Every region offering it"
    )
    cpuPerGpu = serializers.IntegerField(source="cpu_per_gpu", required=False)
    memoryPerGpuGb = serializers.IntegerField(source="memory_per_gpu_gb", required=False)


class ProductListOut(Shape):
    products = ProductOut(many=True, help_text="Cheapest first")
    total = serializers.IntegerField()


class TemplatePortOut(Shape):
    port = serializers.IntegerField()
    type = serializers.CharField(help_text="http or tcp")


class TemplateOut(Shape):
    id = serializers.CharField(help_text="Send as `templateId` when creating")
    name = serializers.CharField(required=False)
    image = serializers.CharField(required=False)
    ports = TemplatePortOut(many=True)
    channel = serializers.CharField(required=False, help_text="official, community or private")


class TemplateListOut(Shape):
    templates = TemplateOut(many=True)
    total = serializers.IntegerField()
