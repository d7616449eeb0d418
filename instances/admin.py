"""Operator control room: the instance list, each instance's page with its timeline, actions that
call the same services as the API, the webhook outbox, and a dashboard at /admin/dashboard/.

Nothing here assigns a status: actions and the auto-stop form call services (commands.py,
admin_ops.py), which make guarded updates and record who did what.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote
from django.forms.models import BaseInlineFormSet
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince, timeuntil

from novita_gateway.errors import InvalidInstanceState

from . import charts, selectors
from .models import Instance, InstanceEvent, WebhookDelivery
from .novita import errors as upstream
from .services import admin_ops, commands
from .status import Status

# Upstream calls are made one by one in the request: keep a single action's work bounded.
MAX_PER_ACTION = 100
TIMELINE_LIMIT = 200
DELIVERIES_SHOWN = 50
# Per-instance messages beyond this are summarised, so a bulk action stays readable.
MESSAGES_SHOWN = 20

BADGE_COLOURS = {
    Status.READY: "#1e8e3e",
    Status.RUNNING: "#1a73e8",
    Status.HEALTH_CHECKING: "#1a73e8",
    Status.CREATING: "#b06000",
    Status.CREATED: "#b06000",
    Status.STARTING: "#b06000",
    Status.STOPPING: "#b06000",
    Status.STOPPED: "#5f6368",
    Status.EXITED: "#7b5ea7",
    Status.FAILED: "#c5221f",
    Status.TERMINATED: "#3c4043",
}


def status_badge_html(status: str, desired: str = ""):
    colour = BADGE_COLOURS.get(status, "#5f6368")
    return format_html(
        '<span class="status-badge" data-status="{}" title="desired: {}" style="background:{};'
        'color:#fff;padding:2px 8px;border-radius:10px;font-size:11px;white-space:nowrap">'
        "{}</span>",
        status,
        desired or "?",
        colour,
        status,
    )


def relative(moment, now=None) -> str:
    if moment is None:
        return "—"
    now = now or timezone.now()
    if moment <= now:
        return f"{timesince(moment, now, depth=1)} ago"
    return f"in {timeuntil(moment, now, depth=1)}"


def about(instance: Instance, text: str):
    """A per-instance message. The id is wrapped in <code>: the admin capitalises the first
    letter of every message, and "Inst_..." is not an id anyone can search for."""
    return format_html("<code>{}</code>: {}", instance.id, text)


class ReadOnlyAdmin:
    """Records the service writes (deliveries, events): operators read them, never edit."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class Pending(str):
    """An outcome that is recorded but not complete (Novita did not take the call yet)."""


def actor_of(request) -> str:
    return request.user.get_username()


def _why(exc: InvalidInstanceState) -> str:
    # "Instance cannot be stopped while stopped" reads better after the id as "cannot be ...".
    text = exc.message
    if text.startswith("Instance "):
        text = text[len("Instance ") :]
    return text


class RecentFormSet(BaseInlineFormSet):
    """Shows only the newest rows: an old instance may have thousands of deliveries."""

    limit = DELIVERIES_SHOWN

    def get_queryset(self):
        if not hasattr(self, "_recent"):
            self._recent = super().get_queryset()[: self.limit]
        return self._recent


class WebhookDeliveryInline(admin.TabularInline):
    model = WebhookDelivery
    formset = RecentFormSet
    verbose_name_plural = f"webhook deliveries (newest {DELIVERIES_SHOWN})"
    fields = [
        "created_at",
        "event",
        "state",
        "attempts",
        "last_status_code",
        "last_error",
        "delivered_at",
        "next_attempt_at",
    ]
    readonly_fields = fields
    ordering = ["-created_at"]
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# Operators may only change auto-stop settings; everything else is the services' business.
EDITABLE = ("auto_stop_enabled", "auto_stop_minutes")


@admin.register(Instance)
class InstanceAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "id",
        "status_badge",
        "region",
        "product",
        "gpus",
        "age",
        "last_used",
        "auto_stop",
        "upstream_id",
    ]
    list_display_links = ["name", "id"]
    list_filter = ["status", "desired_status", "region", "product_name", "last_change_source"]
    search_fields = ["name", "^id", "^novita_instance_id"]
    ordering = ["-created_at"]
    list_per_page = 50
    actions = ["start", "stop", "mark_used", "sync", "terminate"]
    inlines = [WebhookDeliveryInline]
    readonly_fields = [
        *(f.name for f in Instance._meta.fields if f.name not in EDITABLE),
        "status_badge",
        "price",
        "connection",
        "ports",
        "timeline",
    ]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "id",
                    "name",
                    "novita_instance_id",
                    "status_badge",
                    "desired_status",
                    "upstream_status",
                    "spot_status",
                    "last_change_source",
                    "failure_reason",
                ]
            },
        ),
        (
            "Auto-stop",
            {
                "fields": [
                    "auto_stop_enabled",
                    "auto_stop_minutes",
                    "auto_stop_at",
                    "auto_stop_warned_at",
                    "last_used_at",
                ],
                "description": "Saving recomputes the deadline and records an event.",
            },
        ),
        ("Connection", {"fields": ["connection", "ports"]}),
        (f"Timeline (newest {TIMELINE_LIMIT} events)", {"fields": ["timeline"]}),
        (
            "Resources",
            {
                "fields": [
                    "product_name",
                    "product_id",
                    "template_id",
                    "gpu_num",
                    "rootfs_size",
                    "region",
                    "cluster_id",
                    "cluster_name",
                    "image_url",
                    "billing_mode",
                    "price",
                ]
            },
        ),
        (
            "Readiness and webhooks",
            {
                "fields": [
                    "webhook_url",
                    "health_check_config",
                    "target_port",
                    "readiness_deadline",
                    "operation_id",
                ]
            },
        ),
        (
            "Timestamps and bookkeeping",
            {
                "classes": ["collapse"],
                "fields": [
                    "created_at",
                    "updated_at",
                    "started_at",
                    "ready_at",
                    "stopped_at",
                    "last_synced_at",
                    "next_poll_at",
                    "poll_interval",
                    "drive_attempts",
                    "create_attempts",
                    "migration_job_id",
                    "migration_started_at",
                ],
            },
        ),
    ]

    # --- permissions: instances come from the API; removal goes through "terminate" ---------

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    # --- list columns ---------------------------------------------------------------------

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return status_badge_html(obj.status, obj.desired_status)

    # Short headers keep the list one screen wide next to the filters.
    @admin.display(description="product", ordering="product_name")
    def product(self, obj):
        return obj.product_name

    @admin.display(description="GPUs", ordering="gpu_num")
    def gpus(self, obj):
        return obj.gpu_num

    @admin.display(description="upstream id", ordering="novita_instance_id")
    def upstream_id(self, obj):
        return obj.novita_instance_id or "—"

    @admin.display(description="age", ordering="created_at")
    def age(self, obj):
        return timesince(obj.created_at, depth=1)

    @admin.display(description="last used", ordering="last_used_at")
    def last_used(self, obj):
        return relative(obj.last_used_at)

    @admin.display(description="auto-stop", ordering="auto_stop_at")
    def auto_stop(self, obj):
        if not obj.auto_stop_enabled:
            return "exempt"
        if obj.auto_stop_at and obj.auto_stop_applies:
            return relative(obj.auto_stop_at)
        return "—"

    # --- change page fields ---------------------------------------------------------------

    @admin.display(description="price")
    def price(self, obj):
        if obj.price_per_hour is None:
            return "unknown"
        return f"${obj.price_per_hour_usd:.4f} / hour"

    @admin.display(description="connection details")
    def connection(self, obj):
        return render_to_string(
            "admin/instances/instance/connection.html",
            {"details": sorted((obj.connection_details or {}).items())},
        )

    @admin.display(description="port mappings")
    def ports(self, obj):
        return render_to_string(
            "admin/instances/instance/ports.html", {"ports": obj.port_mappings or []}
        )

    @admin.display(description="events")
    def timeline(self, obj):
        if obj is None or obj.pk is None:
            return "—"
        events = list(obj.events.order_by("-created_at", "-id")[:TIMELINE_LIMIT])
        return render_to_string("admin/instances/instance/timeline.html", {"events": events})

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs.setdefault("help_texts", {})["auto_stop_minutes"] = (
            "Idle minutes before a stop; blank uses the default threshold."
        )
        return super().get_form(request, obj, change, **kwargs)

    def save_model(self, request, obj, form, change):
        # Never obj.save(): it would write back every field as loaded, undoing whatever the
        # monitor or auto-stop changed since the page was opened.
        if not change or not form.has_changed():
            return
        try:
            admin_ops.set_auto_stop(
                obj,
                enabled=form.cleaned_data["auto_stop_enabled"],
                minutes=form.cleaned_data["auto_stop_minutes"],
                actor=actor_of(request),
            )
        except admin_ops.AdminOpError as exc:
            self.message_user(request, about(obj, f"auto-stop not changed: {exc}"), messages.ERROR)

    # --- actions --------------------------------------------------------------------------

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def _run(self, request, queryset, verb: str, operation) -> None:
        """Apply `operation` to each selected instance and report each outcome."""
        instances = list(queryset.order_by("created_at")[: MAX_PER_ACTION + 1])
        if len(instances) > MAX_PER_ACTION:
            self.message_user(
                request,
                f"Select at most {MAX_PER_ACTION} instances for one {verb}.",
                messages.ERROR,
            )
            return
        done, pending, refused = [], [], []
        for instance in instances:
            try:
                outcome = operation(instance)
                (pending if isinstance(outcome, Pending) else done).append(about(instance, outcome))
            except InvalidInstanceState as exc:
                refused.append(about(instance, _why(exc)))
            except admin_ops.AdminOpError as exc:
                refused.append(about(instance, str(exc)))
            except upstream.NovitaError as exc:
                refused.append(about(instance, f"{verb} failed upstream: {exc.details()}"))
        self._report(request, done, messages.SUCCESS, f"{verb} done")
        self._report(request, pending, messages.WARNING, f"{verb} recorded, upstream pending")
        self._report(request, refused, messages.WARNING, f"{verb} not done")

    def _report(self, request, lines, level, summary) -> None:
        for line in lines[:MESSAGES_SHOWN]:
            self.message_user(request, line, level)
        if len(lines) > MESSAGES_SHOWN:
            more = len(lines) - MESSAGES_SHOWN
            self.message_user(request, f"… and {more} more: {summary}", level)

    def _upstream_pending(self, action: str, call):
        """Start/stop/terminate record the decision before calling Novita, so an upstream
        failure leaves the request standing (the monitor retries): say so, don't call it a
        refusal."""
        try:
            call()
        except upstream.NovitaNotFoundError:
            return Pending(f"{action} recorded, but Novita no longer knows this instance")
        except upstream.NovitaError as exc:
            return Pending(
                f"{action} recorded; Novita did not take it yet, will retry ({exc.details()})"
            )
        return f"{action} requested"

    @admin.action(description="Start selected instances", permissions=["change"])
    def start(self, request, queryset):
        actor = actor_of(request)

        def op(instance):
            return self._upstream_pending(
                "start",
                lambda: commands.start_instance(instance, source="admin", actor=actor),
            )

        self._run(request, queryset, "start", op)

    @admin.action(description="Stop selected instances", permissions=["change"])
    def stop(self, request, queryset):
        actor = actor_of(request)

        def op(instance):
            def call():
                stopped = commands.stop_instance(
                    instance, source="admin", actor=actor, reason="stop requested by operator"
                )
                if stopped is None:
                    raise admin_ops.AdminOpError("changed state meanwhile; try again")

            return self._upstream_pending("stop", call)

        self._run(request, queryset, "stop", op)

    @admin.action(description="Mark selected instances as used now", permissions=["change"])
    def mark_used(self, request, queryset):
        actor = actor_of(request)

        def op(instance):
            updated = admin_ops.mark_used(instance, actor=actor)
            if updated.auto_stop_at:
                return f"marked used; auto-stop {relative(updated.auto_stop_at)}"
            return "marked used"

        self._run(request, queryset, "mark used", op)

    @admin.action(description="Sync selected instances with Novita now", permissions=["change"])
    def sync(self, request, queryset):
        actor = actor_of(request)

        def op(instance):
            updated = admin_ops.sync_now(instance, actor=actor)
            upstream_status = updated.upstream_status or "nothing"
            return f"synced: upstream {upstream_status}, status {updated.status}"

        self._run(request, queryset, "sync", op)

    @admin.action(description="Terminate selected instances…", permissions=["change"])
    def terminate(self, request, queryset):
        if request.POST.get("post") == "yes":
            actor = actor_of(request)

            def op(instance):
                return self._upstream_pending(
                    "terminate",
                    lambda: commands.delete_instance(instance, source="admin", actor=actor),
                )

            self._run(request, queryset, "terminate", op)
            return None
        instances = list(queryset.order_by("created_at")[: MAX_PER_ACTION + 1])
        if len(instances) > MAX_PER_ACTION:
            self.message_user(
                request,
                f"Select at most {MAX_PER_ACTION} instances for one terminate.",
                messages.ERROR,
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Terminate instances?",
            "subtitle": None,
            "instances": instances,
            "opts": self.model._meta,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(
            request, "admin/instances/instance/terminate_confirmation.html", context
        )


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    list_display = [
        "created_at",
        "instance_link",
        "event",
        "state",
        "attempts",
        "last_status_code",
        "short_error",
        "delivered_at",
        "next_attempt_at",
    ]
    list_filter = ["state", "event"]
    search_fields = ["^instance__id", "instance__name", "^instance__novita_instance_id"]
    list_select_related = ["instance"]
    ordering = ["-created_at"]
    fields = [
        "instance",
        "url",
        "event",
        "state",
        "attempts",
        "last_status_code",
        "last_error",
        "created_at",
        "next_attempt_at",
        "delivered_at",
        "attempts_table",
        "body",
    ]
    readonly_fields = fields

    @admin.display(description="instance", ordering="instance__name")
    def instance_link(self, obj):
        url = reverse("admin:instances_instance_change", args=[quote(obj.instance_id)])
        return format_html('<a href="{}">{}</a>', url, obj.instance.name)

    @admin.display(description="last error")
    def short_error(self, obj):
        return (obj.last_error or "")[:80]

    @admin.display(description="attempts")
    def attempts_table(self, obj):
        return render_to_string(
            "admin/instances/webhookdelivery/attempts.html", {"attempts": obj.attempt_log or []}
        )


@admin.register(InstanceEvent)
class InstanceEventAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    list_display = [
        "created_at",
        "instance",
        "from_status",
        "to_status",
        "desired_status",
        "source",
        "actor",
        "reason",
    ]
    list_filter = ["source", "to_status"]
    search_fields = ["^instance__id", "instance__name", "actor", "request_id"]
    list_select_related = ["instance"]
    ordering = ["-created_at", "-id"]
    # The timeline grows with every change: skip the exact count of a filtered list.
    show_full_result_count = False


def dashboard_view(request):
    """The operator dashboard (wrapped in admin.site.admin_view by the URLconf: staff only)."""
    context = {
        **admin.site.each_context(request),
        "title": "Operator dashboard",
        "subtitle": None,
        "now": timezone.now(),
        "d": selectors.dashboard(),
        "charts": charts.render_all(selectors.dashboard_charts()),
    }
    return TemplateResponse(request, "admin/dashboard.html", context)
