"""Turn what API clients say (product name, template id, region code) into what upstream's create
call needs, with the upstream catalog cached.

Caches hold plain dataclasses and are only an optimisation: a cache that is cleared, missing or
down just means one more upstream call. Product availability is cached too (for
CATALOG_CACHE_SECONDS), so a create may still meet INSUFFICIENT_RESOURCE upstream; call
`clear_catalog_cache()` after that to force a fresh look.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .client import NovitaClient, get_client
from .errors import NovitaNotFoundError, ResolutionError
from .schemas import Cluster, Product, Template

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TTL = 300
_KEY_PREFIX = "novita:catalog:v1"


@dataclass(slots=True)
class TemplateSpec:
    """A template mapped to create-call fields."""

    template_id: str
    image_url: str
    command: str | None = None
    entrypoint: str | None = None
    ports: str = ""  # create's comma string, e.g. "8888/http,22/tcp"
    envs: list[dict[str, str]] = field(default_factory=list)
    rootfs_size: int | None = None
    port_list: list[tuple[int, str]] = field(default_factory=list)
    image_auth_id: str | None = None
    min_cuda_version: str | None = None


# --- caching --------------------------------------------------------------------------------


def _cache(alias: str):
    from django.conf import settings
    from django.core.cache import caches

    if alias in getattr(settings, "CACHE_NAMES", ()):
        # The named wrapper counts hits and misses for /api/cache/stats.
        from ops.caching import named_cache

        return named_cache(alias)
    configured = getattr(settings, "CACHES", {}) or {}
    return caches[alias if alias in configured else "default"]


def _ttl() -> int:
    from django.conf import settings

    return int(getattr(settings, "CATALOG_CACHE_SECONDS", DEFAULT_TTL))


def _key(kind: str, *parts: Any) -> str:
    # User-supplied parts (template ids, names) are hashed so keys stay short and printable.
    raw = "\x1f".join(str(p) for p in parts)
    digest = hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]
    return f"{_KEY_PREFIX}:{kind}:{digest}"


def _cached(alias: str, key: str, fetch: Callable[[], T]) -> T:
    cache = _cache(alias)
    try:
        value = cache.get(key)
    except Exception:
        logger.warning("catalog cache %s unavailable on read", alias, exc_info=True)
        value = None
    if value is not None:
        return value
    value = fetch()
    try:
        cache.set(key, value, _ttl())
    except Exception:
        logger.warning("catalog cache %s unavailable on write", alias, exc_info=True)
    return value


def clear_catalog_cache() -> None:
    """Drop cached clusters, products and templates (e.g. after a create hit no capacity)."""
    from django.conf import settings

    configured = getattr(settings, "CACHES", {}) or {}
    for alias in ("clusters", "products", "templates"):
        if alias in configured:
            _cache(alias).clear()
    # Without dedicated aliases the entries live in the default cache next to other data,
    # so only our keys are removed there.
    default = _cache("default")
    delete_pattern = getattr(default, "delete_pattern", None)
    if callable(delete_pattern):
        delete_pattern(f"{_KEY_PREFIX}:*")


# --- resolution -----------------------------------------------------------------------------


def _code(text: str | None) -> str:
    """The comparable part of a region/cluster label: "US-CA-06 (California)" -> "us-ca-06"."""
    if not text:
        return ""
    return text.strip().split(" ", 1)[0].lower()


def _clusters(client: NovitaClient) -> list[Cluster]:
    return _cached("clusters", _key("clusters", client.base_url), client.list_clusters)


def resolve_cluster(region: str, client: NovitaClient | None = None) -> Cluster:
    """The cluster for a region code: its id equals the code, or its name starts with it."""
    client = client or get_client()
    wanted = (region or "").strip().lower()
    if not wanted:
        raise ResolutionError("A region is required", reason="REGION_REQUIRED")
    clusters = _clusters(client)
    for cluster in clusters:
        if (cluster.id or "").lower() == wanted:
            return cluster
    for cluster in clusters:
        if (cluster.name or "").lower().startswith(wanted):
            return cluster
    raise ResolutionError(f"Region '{region}' is not available", reason="REGION_NOT_FOUND")


def _offered_in(product: Product, cluster: Cluster, region: str) -> bool:
    if not product.regions:
        return True  # empty means every cluster
    accepted = {_code(cluster.id), _code(cluster.name), _code(region)} - {""}
    return any(_code(entry) in accepted for entry in product.regions)


def resolve_product(
    product_name: str,
    region: str,
    gpu_num: int = 1,
    client: NovitaClient | None = None,
) -> Product:
    """The cheapest deployable product named exactly `product_name` in the region's cluster."""
    client = client or get_client()
    cluster = resolve_cluster(region, client=client)
    products = _cached(
        "products",
        _key("products", client.base_url, cluster.id, gpu_num),
        lambda: client.list_products(cluster_id=cluster.id, gpu_num=gpu_num),
    )

    wanted = (product_name or "").strip().lower()
    offers = [
        p
        for p in products
        if (p.name or "").strip().lower() == wanted and p.id and _offered_in(p, cluster, region)
    ]
    if not offers:
        raise ResolutionError(
            f"Product '{product_name}' is not offered in region {region}",
            reason="PRODUCT_NOT_OFFERED",
        )
    available = [p for p in offers if p.available_deploy]
    if not available:
        raise ResolutionError(
            f"Product '{product_name}' has no capacity in region {region} right now",
            reason="NO_CAPACITY",
        )
    # A missing price sorts last: never pick an unpriced offer over a priced one.
    return min(available, key=lambda p: (p.price is None, p.price or 0))


def _template_spec(template_id: str, template: Template) -> TemplateSpec:
    port_list = [(p.port, p.type) for p in template.ports]
    return TemplateSpec(
        template_id=template_id,
        image_url=template.image or "",
        command=template.start_command,
        entrypoint=template.entrypoint,
        ports=",".join(f"{port}/{kind}" for port, kind in port_list),
        envs=[dict(env) for env in template.envs],
        rootfs_size=template.rootfs_size,
        port_list=port_list,
        image_auth_id=template.image_auth_id,
        min_cuda_version=template.min_cuda_version,
    )


def resolve_template(template_id: str, client: NovitaClient | None = None) -> TemplateSpec:
    """Image, command, ports, envs and disk size of an upstream template, ready for create."""
    client = client or get_client()
    if not template_id:
        raise ResolutionError("A templateId is required", reason="TEMPLATE_REQUIRED")

    def fetch() -> TemplateSpec:
        try:
            template = client.get_template(template_id)
        except NovitaNotFoundError:
            raise ResolutionError(
                f"Template '{template_id}' was not found", reason="TEMPLATE_NOT_FOUND"
            ) from None
        if not template.image:
            raise ResolutionError(
                f"Template '{template_id}' has no image", reason="TEMPLATE_WITHOUT_IMAGE"
            )
        return _template_spec(template_id, template)

    return _cached("templates", _key("template", client.base_url, template_id), fetch)
