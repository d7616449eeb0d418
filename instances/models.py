"""Instances, their audit trail and the webhook outbox. The database is the source of truth."""

import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Case, IntegerField, Q, Value, When
from django.utils import timezone

from .services.health_probe import DEFAULT_CONFIG as HEALTH_CHECK_DEFAULTS
from .status import AUTO_STOP_CANDIDATES, Desired, Status, from_upstream

# Price fields are in 1/100000 USD per hour (upstream's unit).
PRICE_UNIT = 100_000


def new_instance_id() -> str:
    return "inst_" + secrets.token_hex(8)


def new_operation_id(kind: str) -> str:
    return f"op_{kind}_{secrets.token_hex(6)}"


# The idle rule (DESIGN "Decisions since the first release"), for model instances (the methods of
# Instance below) and for the plain rows the auto-stop sweep and heartbeats read (these functions).


def auto_stop_threshold(auto_stop_minutes) -> float:
    """Idle minutes before auto-stop: the instance's own, else the configured default."""
    return float(auto_stop_minutes or settings.AUTO_STOP_INACTIVITY_THRESHOLD_MINUTES)


def idle_since(last_used_at, ready_at):
    """When the idle clock started, or None when unknown (never ready: treated as active).

    The later of the last heartbeat and the moment the instance became ready: a heartbeat from
    before a restart must not make the restarted instance look idle the moment it is ready.
    """
    if ready_at is None:
        return None
    if last_used_at is None:
        return ready_at
    return max(last_used_at, ready_at)


def idle_deadline(last_used_at, ready_at, auto_stop_minutes):
    """When an instance with these values becomes idle enough to stop (None when unknown)."""
    since = idle_since(last_used_at, ready_at)
    if since is None:
        return None
    return since + timedelta(minutes=auto_stop_threshold(auto_stop_minutes))


def readiness_wait(health_check_config) -> timedelta:
    """How long an instance may take to become ready once running: its health-check config's
    maxWaitTimeMs, else the API's default."""
    config = health_check_config or {}
    return timedelta(
        milliseconds=config.get("maxWaitTimeMs", HEALTH_CHECK_DEFAULTS["maxWaitTimeMs"])
    )


def new_delivery_id() -> str:
    # Sent as Standard Webhooks' `webhook-id`: the same on every retry, so receivers dedupe.
    return "msg_" + secrets.token_hex(12)


class InstanceQuerySet(models.QuerySet):
    def auto_stop_applies(self):
        """Instances auto-stop can act on now: Instance.auto_stop_applies as a query."""
        return self.filter(auto_stop_enabled=True, status__in=AUTO_STOP_CANDIDATES)

    def named(self, name: str):
        """Instances called `name`: the live one first, then terminated ones, newest first.

        Names are unique only among instances that are not terminated, so a name may also
        belong to any number of terminated instances.
        """
        terminated_last = Case(
            When(status=Status.TERMINATED, then=Value(1)),
            default=Value(0),
            output_field=IntegerField(),
        )
        return self.filter(name=name).order_by(terminated_last, "-created_at")


class Instance(models.Model):
    """A GPU instance managed by the gateway (our id, upstream id, desired and actual state)."""

    id = models.CharField(primary_key=True, max_length=40, default=new_instance_id, editable=False)
    # Unique among instances that are not terminated (see Meta): a terminated name is free again.
    name = models.CharField(max_length=100, db_index=True)
    novita_instance_id = models.CharField(max_length=100, null=True, blank=True, unique=True)

    # What was asked for, and what it resolved to upstream.
    product_name = models.CharField(max_length=200)
    product_id = models.CharField(max_length=100, blank=True, default="")
    template_id = models.CharField(max_length=200)
    gpu_num = models.PositiveSmallIntegerField(default=1)
    rootfs_size = models.PositiveIntegerField(default=60)
    region = models.CharField(max_length=32, default="CN-HK-01")
    cluster_id = models.CharField(max_length=100, blank=True, default="")
    cluster_name = models.CharField(max_length=200, blank=True, default="")
    image_url = models.CharField(max_length=500, blank=True, default="")
    billing_mode = models.CharField(max_length=20, blank=True, default="")
    # Upstream price in 1/100000 USD per hour for the whole instance (for spend estimates).
    price_per_hour = models.BigIntegerField(null=True, blank=True)

    # State: what we want, what we show, what upstream last said.
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.CREATING)
    desired_status = models.CharField(
        max_length=20, choices=Desired.choices, default=Desired.RUNNING
    )
    upstream_status = models.CharField(max_length=40, blank=True, default="")
    spot_status = models.CharField(max_length=20, blank=True, default="")
    failure_reason = models.TextField(blank=True, default="")
    last_change_source = models.CharField(max_length=20, blank=True, default="api")

    port_mappings = models.JSONField(default=list, blank=True)
    connection_details = models.JSONField(default=dict, blank=True)

    webhook_url = models.URLField(max_length=2000, blank=True, default="")
    health_check_config = models.JSONField(default=dict, blank=True)
    target_port = models.PositiveIntegerField(null=True, blank=True)

    # Auto-stop: per-instance overrides; auto_stop_at is the stored deadline the sweep indexes.
    auto_stop_enabled = models.BooleanField(default=True)
    auto_stop_minutes = models.PositiveIntegerField(null=True, blank=True)
    auto_stop_at = models.DateTimeField(null=True, blank=True)
    auto_stop_warned_at = models.DateTimeField(null=True, blank=True)

    # Monitoring: the sweep claims rows whose next_poll_at has passed.
    next_poll_at = models.DateTimeField(null=True, blank=True)
    poll_interval = models.FloatField(default=2.0)
    readiness_deadline = models.DateTimeField(null=True, blank=True)
    # Readiness probing (health_checking): when the next probe round is due, None when none is
    # wanted; pushed out while a probe worker holds the instance (see services/readiness.py).
    probe_due_at = models.DateTimeField(null=True, blank=True)
    operation_id = models.CharField(max_length=40, blank=True, default="")
    # Re-drives of upstream toward desired state (reconciler), bounded.
    drive_attempts = models.PositiveSmallIntegerField(default=0)
    create_attempts = models.PositiveSmallIntegerField(default=0)
    # The sequence number of this instance's latest webhook delivery (1, 2, 3...).
    webhook_sequence = models.PositiveIntegerField(default=0)

    # Migration of reclaimed spot instances.
    migration_job_id = models.CharField(max_length=100, blank=True, default="")
    migration_started_at = models.DateTimeField(null=True, blank=True)
    # Upstream refused the migrate call (4xx): first refusal, refusals, when to ask again.
    migration_refused_since = models.DateTimeField(null=True, blank=True)
    migration_refusals = models.PositiveSmallIntegerField(default=0)
    migration_retry_at = models.DateTimeField(null=True, blank=True)
    # Consecutive complete upstream listings this instance was absent from, and when the first
    # of them began (2 listings, ABSENCE_SPAN apart, mean gone).
    missing_listings = models.PositiveSmallIntegerField(default=0)
    missing_since = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)

    objects = InstanceQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["next_poll_at"], name="inst_next_poll_idx"),
            models.Index(fields=["probe_due_at"], name="inst_probe_due_idx"),
            models.Index(fields=["status", "auto_stop_at"], name="inst_autostop_idx"),
            models.Index(fields=["status"], name="inst_status_idx"),
            models.Index(fields=["region"], name="inst_region_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["name"],
                condition=~Q(status=Status.TERMINATED),
                name="inst_live_name_uniq",
                violation_error_message="An instance with this name already exists",
            )
        ]

    def __str__(self):
        return f"{self.name} ({self.id})"

    @property
    def price_per_hour_usd(self) -> float | None:
        if self.price_per_hour is None:
            return None
        return self.price_per_hour / PRICE_UNIT

    @property
    def auto_stop_threshold_minutes(self) -> float:
        return auto_stop_threshold(self.auto_stop_minutes)

    @property
    def idle_since(self):
        return idle_since(self.last_used_at, self.ready_at)

    @property
    def auto_stop_applies(self) -> bool:
        """Auto-stop can act on this instance now (enabled for it, and in a billed state)."""
        return self.auto_stop_enabled and self.status in AUTO_STOP_CANDIDATES

    def auto_stop_deadline(self):
        """The auto-stop deadline these fields imply, as `auto_stop_at` should store it: None
        when auto-stop does not apply or the instance was never ready."""
        if not self.auto_stop_applies:
            return None
        return idle_deadline(self.last_used_at, self.ready_at, self.auto_stop_minutes)

    @property
    def readiness_wait(self) -> timedelta:
        return readiness_wait(self.health_check_config)

    @property
    def first_boot(self) -> bool:
        """Never started nor ready: upstream's creating states then mean `creating`."""
        return self.ready_at is None and self.started_at is None

    def status_from_upstream(self, upstream_status: str | None, *, has_error: bool = False) -> str:
        """The gateway status upstream's view implies for this instance (see status.py)."""
        return from_upstream(
            upstream_status,
            current=self.status,
            desired=self.desired_status,
            first_boot=self.first_boot,
            has_error=has_error,
        )


class InstanceEvent(models.Model):
    """One entry of an instance's audit trail: a transition or decision, who made it and why."""

    class Source(models.TextChoices):
        API = "api"
        MONITOR = "monitor"
        AUTO_STOP = "auto-stop"
        RECONCILE = "reconcile"
        MIGRATION = "migration"
        ADMIN = "admin"
        WORKER = "worker"

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="events")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    from_status = models.CharField(max_length=20, blank=True, default="")
    to_status = models.CharField(max_length=20, blank=True, default="")
    desired_status = models.CharField(max_length=20, blank=True, default="")
    source = models.CharField(max_length=20, choices=Source.choices)
    reason = models.TextField(blank=True, default="")
    request_id = models.CharField(max_length=140, blank=True, default="")
    actor = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["instance", "-created_at"], name="event_instance_idx")]

    def __str__(self):
        return f"{self.instance_id}: {self.from_status}->{self.to_status} ({self.source})"


class WebhookDelivery(models.Model):
    """Outbox row: written with the status change, delivered after commit, every attempt kept."""

    class State(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    class Event(models.TextChoices):
        STATUS_CHANGED = "instance.status_changed"
        AUTO_STOP_WARNING = "instance.auto_stop_warning"

    instance = models.ForeignKey(
        Instance, on_delete=models.CASCADE, related_name="webhook_deliveries"
    )
    url = models.URLField(max_length=2000)
    event = models.CharField(max_length=40, choices=Event.choices, default=Event.STATUS_CHANGED)
    delivery_id = models.CharField(max_length=40, unique=True, default=new_delivery_id)
    # Per instance, in the order the events happened; deliveries are sent in this order.
    sequence = models.PositiveIntegerField(default=0)
    # Waiting for an earlier delivery of the same instance (see services/webhooks.py).
    held = models.BooleanField(default=False)
    # The exact bytes signed and sent, so retries send the same body and signature.
    body = models.TextField()
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    attempt_log = models.JSONField(default=list, blank=True)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(fields=["state", "next_attempt_at"], name="webhook_due_idx"),
            models.Index(fields=["instance", "state", "sequence"], name="webhook_order_idx"),
        ]

    def __str__(self):
        return f"{self.event} -> {self.url} ({self.state})"


class SweepRun(models.Model):
    """One run of a scheduled sweep (auto-stop, reconcile, migration) and what it did."""

    class Kind(models.TextChoices):
        AUTO_STOP = "auto-stop"
        RECONCILE = "reconcile"
        MIGRATION = "migration"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    duration_ms = models.FloatField(default=0)
    dry_run = models.BooleanField(default=False)
    examined = models.PositiveIntegerField(default=0)
    acted = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)
    # e.g. the instance ids stopped and the reason for each.
    summary = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["kind", "-started_at"], name="sweep_kind_idx")]

    def __str__(self):
        return f"{self.kind} at {self.started_at:%Y-%m-%d %H:%M:%S}"
