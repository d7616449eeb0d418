"""Client authentication by API key (`Authorization: Bearer` or `X-API-Key`).

Keys come from GATEWAY_API_KEYS and from ApiKey rows issued in the admin. As soon as any key
exists, every DRF view requires one (DRF defaults in settings; /metrics too, /health and the
docs opt out). With no key anywhere the API fails closed (401 saying how to configure
keys) unless DEBUG is on or ALLOW_OPEN_API=true says an open API is wanted; an open API says so
in the log.
"""

import hmac
import ipaddress
import logging
import threading
import time

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission

from novita_gateway.errors import ApiKeysNotConfigured

from .models import ApiKey, hash_key

logger = logging.getLogger("novita_gateway.auth")

# Whether any admin-issued key exists is kept in the shared default cache, so every process
# sees a new key at once (ApiKey saves and deletes drop the entry, see models.py) and a request
# without a key costs no query. Unreachable cache: each request asks the database instead.
CONFIGURED_CACHE_KEY = "ops:api-keys-configured"
_CONFIGURED_CACHE_SECONDS = 30
_LAST_USED_RESOLUTION_SECONDS = 60
WWW_AUTHENTICATE = 'Bearer realm="api"'
# What an admin-issued key's hash resolves to is remembered in each process this long: a client
# polling many times a second costs one query per half second, and a key revoked in any process
# is refused everywhere within a second (revoking in this process forgets it at once).
KEY_LOOKUP_SECONDS = 0.5
_KEY_LOOKUP_MAX = 4096
_key_lookups: dict[str, tuple[float, "ApiKey | None"]] = {}
_key_lookups_lock = threading.Lock()

_warned_open = False


def env_keys() -> list[str]:
    # "GATEWAY_API_KEYS=" or a stray comma must not count as a configured (empty) key.
    return [k.strip() for k in settings.GATEWAY_API_KEYS or [] if k and k.strip()]


_env_digests: dict = {"for": None, "digests": []}


def env_key_digests() -> list[str]:
    """Hashes of GATEWAY_API_KEYS, in order: worked out once per value of the setting, not for
    every request that presents a key."""
    configured = tuple(settings.GATEWAY_API_KEYS or ())
    if _env_digests["for"] != configured:
        _env_digests["digests"] = [hash_key(key) for key in env_keys()]
        _env_digests["for"] = configured
    return _env_digests["digests"]


def admin_keys_exist() -> bool:
    # Revoked keys count: revoking the last key must lock the API, never open it.
    cached = cache.get(CONFIGURED_CACHE_KEY)
    if cached is None:
        cached = ApiKey.objects.exists()
        cache.set(CONFIGURED_CACHE_KEY, cached, _CONFIGURED_CACHE_SECONDS)
    return bool(cached)


def forget_cached_keys() -> None:
    cache.delete(CONFIGURED_CACHE_KEY)
    with _key_lookups_lock:
        _key_lookups.clear()


def keys_configured() -> bool:
    configured = bool(env_keys()) or admin_keys_exist()
    if not configured:
        _warn_open_once()
    return configured


def open_api_allowed() -> bool:
    """Whether requests may go without a key while none is configured (never by accident)."""
    return bool(settings.DEBUG or settings.ALLOW_OPEN_API)


def _warn_open_once() -> None:
    # The start-up warning cannot see admin-issued keys (no database in AppConfig.ready), so
    # every serving process also says it when it actually answers a request unauthenticated.
    global _warned_open
    if not _warned_open:
        _warned_open = True
        logger.warning(
            "No API keys configured: the API is OPEN to anyone who can reach it. Set "
            "GATEWAY_API_KEYS or run `python manage.py issue_api_key NAME`."
        )


def presented_key(request) -> str | None:
    # META, not request.headers: building the headers mapping from every META entry cost more
    # than the rest of this check.
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.META.get("HTTP_X_API_KEY", "").strip() or None


class ApiClient:
    """The authenticated caller; `ident` names it for rate limiting and logs (never the key)."""

    is_authenticated = True

    def __init__(self, ident: str):
        self.ident = ident

    def __str__(self):
        return self.ident


def identify(raw: str) -> tuple[ApiClient, ApiKey | None] | None:
    """The client a presented key belongs to, or None for an unknown or revoked key."""
    # Hashing first gives equal-length ASCII strings to compare_digest, whatever the client
    # sent, and every configured key is compared so the timing says nothing about which matched.
    digest = hash_key(raw)
    matched = None
    for index, configured in enumerate(env_key_digests()):
        if hmac.compare_digest(configured, digest) and matched is None:
            matched = f"env:{index}"
    if matched:
        return ApiClient(matched), None
    key = _stored_key(digest)
    if key is None or not hmac.compare_digest(key.key_hash, digest) or not key.is_active:
        return None
    # Touch last_used_at at most once a minute to keep hot paths write-free.
    now = timezone.now()
    if (
        key.last_used_at is None
        or (now - key.last_used_at).total_seconds() > _LAST_USED_RESOLUTION_SECONDS
    ):
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return ApiClient(f"key:{key.pk}"), key


def _stored_key(digest: str) -> ApiKey | None:
    now = time.monotonic()
    found = _key_lookups.get(digest)
    if found is not None and found[0] > now:
        return found[1]
    key = ApiKey.objects.filter(key_hash=digest).first()
    with _key_lookups_lock:
        if len(_key_lookups) >= _KEY_LOOKUP_MAX:
            _key_lookups.clear()
        _key_lookups[digest] = (now + KEY_LOOKUP_SECONDS, key)
    return key


def client_of(request) -> tuple[ApiClient, ApiKey | None] | None:
    """The client whose valid key `request` presents, or None: looked up once per request, so
    the rate limiter and authentication share one lookup."""
    http_request = getattr(request, "_request", request)  # DRF's Request wraps Django's
    try:
        return http_request._api_client_lookup
    except AttributeError:
        raw = presented_key(http_request)
        result = identify(raw) if raw is not None else None
        http_request._api_client_lookup = result
        return result


class ApiKeyAuthentication(BaseAuthentication):
    """Accepts keys from GATEWAY_API_KEYS or issued in the admin."""

    def authenticate(self, request):
        if presented_key(request) is None:
            return None
        result = client_of(request)
        # A valid key proves keys are configured; only a bad one needs to ask whether any is.
        if result is None and keys_configured():
            # Same answer for unknown and revoked keys: no hint about which keys exist.
            raise AuthenticationFailed()
        return result

    def authenticate_header(self, request):
        return WWW_AUTHENTICATE


class HasApiKeyWhenConfigured(BasePermission):
    """A key is required once any is configured; with none, the API is closed unless an open
    API was asked for (DEBUG or ALLOW_OPEN_API), which is logged loudly."""

    def has_permission(self, request, view):
        if request.user is not None and getattr(request.user, "is_authenticated", False):
            return True
        if keys_configured():
            return False
        if not open_api_allowed():
            raise ApiKeysNotConfigured()
        return True


def _networks(entries) -> list:
    nets = []
    for entry in entries or []:
        try:
            nets.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            logger.warning("ignoring invalid TRUSTED_PROXIES entry %r", entry)
    return nets


def _trusted(address: str, nets) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in net for net in nets)


def client_ip(request) -> str | None:
    """The caller's IP: X-Forwarded-For is believed only when it comes from TRUSTED_PROXIES."""
    remote = request.META.get("REMOTE_ADDR")
    nets = _networks(settings.TRUSTED_PROXIES)
    if not remote or not nets or not _trusted(remote, nets):
        return remote
    forwarded = [
        a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if a.strip()
    ]
    # Walk from the nearest hop outwards; the first address no trusted proxy vouches for is
    # the client (anything further left is whatever the client chose to send).
    for address in reversed(forwarded):
        if not _trusted(address, nets):
            try:
                return str(ipaddress.ip_address(address))
            except ValueError:
                return remote
    return remote


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Documents both ways of presenting a key in the OpenAPI schema (either one will do)."""

    target_class = "ops.auth.ApiKeyAuthentication"
    name = ["ApiKeyBearer", "ApiKeyHeader"]

    def get_security_requirement(self, auto_schema):
        return [{"ApiKeyBearer": []}, {"ApiKeyHeader": []}]

    def get_security_definition(self, auto_schema):
        return [
            {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"},
            {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        ]
