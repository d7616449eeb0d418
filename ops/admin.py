"""Operator UI for client API keys: issue (raw key shown once), revoke, see last use."""

from django.contrib import admin, messages

from .models import ApiKey


class ActiveFilter(admin.SimpleListFilter):
    title = "active"
    parameter_name = "active"

    def lookups(self, request, model_admin):
        return [("yes", "Active"), ("no", "Revoked")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(revoked_at__isnull=True)
        if self.value() == "no":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "created_at", "last_used_at", "active"]
    list_filter = [ActiveFilter]
    search_fields = ["name", "prefix"]
    actions = ["revoke"]
    # key_hash is never shown: it is not a secret by itself, but nobody needs to see it.
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["name"]
        return ["name", "prefix", "created_at", "last_used_at", "revoked_at"]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    @admin.display(boolean=True, description="active", ordering="revoked_at")
    def active(self, obj):
        return obj.is_active

    def save_model(self, request, obj, form, change):
        raw = None
        if not change:
            raw = obj.set_new_secret()
        super().save_model(request, obj, form, change)
        if raw:
            messages.warning(
                request,
                f"New API key for “{obj.name}”: {raw} — copy it now, it will not be shown again.",
            )

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke(self, request, queryset):
        count = ApiKey.revoke_all(queryset)
        self.message_user(request, f"Revoked {count} API key(s).", messages.SUCCESS)
