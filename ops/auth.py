"""Client authentication by API key (`Authorization: Bearer` or `X-API-Key`)."""

import hmac
import time

from django.conf import settings
from django.utils import timezone
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission

from .models import ApiKey, hash_key

# Whether any admin-issued key exists is asked at most every few seconds per process.
_ACTIVE_KEYS_TTL = 5.0
_active_cache: dict[str, float | bool] = {"at": 0.0, "value": False}


def admin_keys_exist() -> bool:
    now = time.monotonic()
    if now - _active_cache["at"] > _ACTIVE_KEYS_TTL:
        _active_cache["value"] = ApiKey.objects.filter(revoked_at__isnull=True).exists()
        _active_cache["at"] = now
    return bool(_active_cache["value"])


def forget_cached_keys() -> None:
    _active_cache["at"] = 0.0


def keys_configured() -> bool:
    return bool(settings.GATEWAY_API_KEYS) or admin_keys_exist()


def presented_key(request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.headers.get("X-API-Key") or None


class ApiClient:
    """The authenticated caller; `ident` names it for rate limiting and logs (never the key)."""

    is_authenticated = True

    def __init__(self, ident: str):
        self.ident = ident


class ApiKeyAuthentication(BaseAuthentication):
    """Accepts keys from GATEWAY_API_KEYS or issued in the admin."""

    def authenticate(self, request):
        raw = presented_key(request)
        if raw is None or not keys_configured():
            return None
        digest = hash_key(raw)
        # Compare every configured key in constant time, so timing tells nothing.
        matched = False
        for index, configured in enumerate(settings.GATEWAY_API_KEYS):
            if hmac.compare_digest(hash_key(configured), digest):
                matched = f"env:{index}"
        if matched:
            return ApiClient(matched), None
        key = ApiKey.objects.filter(key_hash=digest, revoked_at__isnull=True).first()
        if key is None or not hmac.compare_digest(key.key_hash, digest):
            raise AuthenticationFailed()
        # Touch last_used_at at most once a minute to keep hot paths write-free.
        now = timezone.now()
        if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        return ApiClient(f"key:{key.pk}"), key

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


class HasApiKeyWhenConfigured(BasePermission):
    """Open API when no key is configured (logged loudly at start), else a key is required."""

    def has_permission(self, request, view):
        if not keys_configured():
            return True
        return request.user is not None and getattr(request.user, "is_authenticated", False)
