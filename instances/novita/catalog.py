"""Turn what API clients say (product name, template id, region code) into what upstream's create
call needs, with the upstream catalog cached.

Caches hold plain dataclasses and are only an optimisation: a cache that is cleared, missing or
down just means one more upstream call. Product availability is cached too (for
CATALOG_CACHE_SECONDS), so a create may still meet INSUFFICIENT_RESOURCE upstream; clearing the
cache (`POST /api/cache/clear` with `cacheName` products) forces a fresh look.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .client import NovitaClient, get_client
from .errors import NovitaError, NovitaNotFoundError, ResolutionError
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


# --- regions --------------------------------------------------------------------------------

# The contract's region codes and the Novita clusters they mean. A cluster matches an entry by
# its id (a slug such as "cn-hongkong-1") or by its name; Novita's own console has named
# clusters after these codes ({id: "cn-hongkong-1", name: "CN-HK-01"}), so the code itself is a
# candidate too. NOVITA_REGION_CLUSTERS overrides entries (see parse_region_clusters).
DEFAULT_REGION_CLUSTERS: dict[str, tuple[str, ...]] = {
    "CN-HK-01": ("cn-hongkong-1", "CN-HK-01"),
    "US-WEST-01": ("us-west-1", "US-WEST-01"),
    "EU-WEST-01": ("eu-west-1", "EU-WEST-01"),
    "AS-SGP-02": ("as-sgp-2", "AS-SGP-02"),
}


def parse_region_clusters(text: str) -> dict[str, tuple[str, ...]]:
    """DEFAULT_REGION_CLUSTERS with the entries of `CODE=cluster|cluster,CODE2=...` applied.

    Each cluster is an id or a name. `CODE=` (nothing after the sign) removes a region.
    """
    table = dict(DEFAULT_REGION_CLUSTERS)
    for entry in (text or "").split(","):
        if not entry.strip():
            continue
        code, sep, clusters = entry.partition("=")
        code = code.strip().upper()
        if not sep or not code:
            raise ValueError(f"NOVITA_REGION_CLUSTERS entry {entry.strip()!r} is not CODE=cluster")
        candidates = tuple(c.strip() for c in clusters.split("|") if c.strip())
        if candidates:
            table[code] = candidates
        else:
            table.pop(code, None)
    return table


@functools.lru_cache(maxsize=8)
def _parsed(text: str) -> dict[str, tuple[str, ...]]:
    return parse_region_clusters(text)


def region_clusters() -> dict[str, tuple[str, ...]]:
    """The region table in force: the defaults with settings.NOVITA_REGION_CLUSTERS applied.

    A malformed setting is reported by `manage.py check` (instances.apps); here it falls back
    to the defaults so a request never fails on it.
    """
    from django.conf import settings

    try:
        return dict(_parsed(getattr(settings, "NOVITA_REGION_CLUSTERS", "") or ""))
    except ValueError:
        logger.error("NOVITA_REGION_CLUSTERS is malformed; using the default region table")
        return dict(DEFAULT_REGION_CLUSTERS)


def region_codes() -> list[str]:
    """Every region code the gateway knows, in table order."""
    return list(region_clusters())


def _code(text: str | None) -> str:
    """The comparable part of a region/cluster label: "US-CA-06 (California)" -> "us-ca-06"."""
    if not text:
        return ""
    return text.strip().split(" ", 1)[0].lower()


def _cluster_matches(cluster: Cluster, candidate: str) -> bool:
    wanted = candidate.strip().lower()
    if not wanted:
        return False
    name = (cluster.name or "").strip().lower()
    return wanted in ((cluster.id or "").lower(), name) or _code(candidate) == _code(name)


def _clusters(client: NovitaClient) -> list[Cluster]:
    return _cached("clusters", _key("clusters", client.base_url), client.list_clusters)


def _find_cluster(region: str, clusters: list[Cluster]) -> Cluster | None:
    code = region.strip().upper()
    table = region_clusters()
    # A code outside the table may still name a cluster directly (its id or its name).
    for candidate in table.get(code, (region,)):
        for cluster in clusters:
            if _cluster_matches(cluster, candidate):
                return cluster
    return None


def available_regions(client: NovitaClient | None = None) -> list[str]:
    """The region codes of the table that map to a cluster upstream lists right now."""
    clusters = _clusters(client or get_client())
    return [code for code in region_clusters() if _find_cluster(code, clusters) is not None]


def resolve_cluster(region: str, client: NovitaClient | None = None) -> Cluster:
    """The cluster a region code maps to (see DEFAULT_REGION_CLUSTERS); a code outside the table
    is matched against cluster ids and names as given."""
    client = client or get_client()
    if not (region or "").strip():
        raise ResolutionError("A region is required", reason="REGION_REQUIRED")
    clusters = _clusters(client)
    cluster = _find_cluster(region, clusters)
    if cluster is None:
        existing = [code for code in region_clusters() if _find_cluster(code, clusters)]
        listed = ", ".join(existing) or "none (check NOVITA_REGION_CLUSTERS)"
        raise ResolutionError(
            f"Region '{region}' maps to no Novita cluster; regions available: {listed}",
            reason="REGION_NOT_FOUND",
        )
    return cluster


def _offered_in(product: Product, cluster: Cluster) -> bool:
    """Products list the clusters they are offered in by id or by display name
    ("US-01 (Dallas)"); an empty list means every cluster."""
    if not product.regions:
        return True
    return any(_cluster_matches(cluster, entry) for entry in product.regions)


SPOT = "spot"


def offer_price(product: Product, billing_mode: str | None) -> int | None:
    """What one GPU of `product` costs per hour under `billing_mode`, in upstream's unit."""
    if billing_mode == SPOT:
        return int(product.spot_price) if product.spot_price is not None else None
    return product.price


def _spot_price(product: Product) -> float | None:
    """The spot price when the product takes spot (upstream says "0" when it does not)."""
    if not product.spot_price or product.spot_price <= 0:
        return None
    if product.billing_methods and SPOT not in product.billing_methods:
        return None
    return product.spot_price


def _products_in(client: NovitaClient, cluster: Cluster, gpu_num: int, *, spot: bool = False):
    return _cached(
        "products",
        _key("products", client.base_url, cluster.id, gpu_num, SPOT if spot else ""),
        lambda: client.list_products(
            cluster_id=cluster.id, gpu_num=gpu_num, billing_method=SPOT if spot else None
        ),
    )


def _offers_named(
    products: list[Product], product_name: str, cluster: Cluster, *, spot: bool
) -> list[Product]:
    """The offers of `products` that a create of `product_name` in `cluster` may use."""
    wanted = (product_name or "").strip().lower()
    offers = [
        p
        for p in products
        if (p.name or "").strip().lower() == wanted and p.id and _offered_in(p, cluster)
    ]
    if spot:
        # An upstream that ignores the filter still says which products take spot.
        offers = [
            p
            for p in offers
            if p.spot_price is not None and (not p.billing_methods or SPOT in p.billing_methods)
        ]
    return offers


def resolve_product(
    product_name: str,
    region: str,
    gpu_num: int = 1,
    client: NovitaClient | None = None,
    billing_mode: str | None = None,
) -> Product:
    """The cheapest deployable product named exactly `product_name` in the region's cluster.

    For a spot create only spot offers count (upstream is asked with billingMethod=spot) and the
    comparison is on the spot price.
    """
    client = client or get_client()
    cluster = resolve_cluster(region, client=client)
    spot = billing_mode == SPOT
    products = _products_in(client, cluster, gpu_num, spot=spot)

    offers = _offers_named(products, product_name, cluster, spot=spot)
    if not offers:
        kind = "as spot " if spot else ""
        raise ResolutionError(
            f"Product '{product_name}' is not offered {kind}in region {region}",
            reason="PRODUCT_NOT_OFFERED",
        )
    available = [p for p in offers if p.available_deploy]
    if not available:
        raise ResolutionError(
            f"Product '{product_name}' has no capacity in region {region} right now",
            reason="NO_CAPACITY",
        )

    def cost(p: Product) -> tuple[bool, int]:
        # A missing price sorts last: never pick an unpriced offer over a priced one.
        price = offer_price(p, billing_mode)
        return (price is None, price or 0)

    return min(available, key=cost)


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


# --- the catalogue as clients see it (GET /api/regions, /api/products, /api/templates) --------


@dataclass(slots=True)
class RegionRow:
    """A region code of the table and the cluster it maps to right now (None: none listed)."""

    id: str
    cluster_id: str | None
    name: str | None
    available: bool


def list_regions(client: NovitaClient | None = None) -> list[RegionRow]:
    clusters = _clusters(client or get_client())
    rows = []
    for code in region_clusters():
        cluster = _find_cluster(code, clusters)
        rows.append(
            RegionRow(
                id=code,
                cluster_id=cluster.id if cluster else None,
                name=cluster.name if cluster else None,
                available=cluster is not None,
            )
        )
    return rows


@dataclass(slots=True)
class ProductRow:
    """One product name as offered for `gpu_num` GPUs: best prices, capacity, where offered.

    Prices are USD per hour for the whole instance (gpu_num GPUs), the cheapest offer of that
    name; `regions` lists every region offering it, whatever region was asked about.
    """

    name: str
    gpu: str
    gpu_memory_gb: int | None
    gpu_num: int
    price_per_hour: float | None
    spot_price_per_hour: float | None
    available: bool
    regions: list[str]
    cpu_per_gpu: int | None
    memory_per_gpu_gb: int | None


_GPU_MEMORY = re.compile(r"^(?P<gpu>.+?)\s+(?P<gb>\d+)\s*GB$", re.IGNORECASE)


def offers(gpu_num: int = 1, client: NovitaClient | None = None) -> dict[str, list]:
    """Every offer of every mapped region, by product name: {name: [(region code, Product)]}.

    One products call per region when cold; served from the products cache when warm.
    """
    client = client or get_client()
    clusters = _clusters(client)
    by_name: dict[str, list] = {}
    for code in region_clusters():
        cluster = _find_cluster(code, clusters)
        if cluster is None:
            continue
        for product in _products_in(client, cluster, gpu_num):
            name = (product.name or "").strip()
            if name and product.id and _offered_in(product, cluster):
                by_name.setdefault(name, []).append((code, product))
    return by_name


def _usd(price, gpu_num: int) -> float | None:
    from ..models import PRICE_UNIT

    return None if price is None else round(price * gpu_num / PRICE_UNIT, 5)


def list_products(
    region: str | None = None, gpu_num: int = 1, client: NovitaClient | None = None
) -> list[ProductRow]:
    """The products clients can ask for, cheapest first; only those offered in `region` when
    one is given (prices and availability are then that region's)."""
    rows = []
    for name, found in offers(gpu_num, client).items():
        regions = list(dict.fromkeys(code for code, _p in found))
        here = [p for code, p in found if region is None or code == region]
        if not here:
            continue
        # The prices of what a create would get: offers with capacity, else every offer.
        priced = [p for p in here if p.available_deploy] or here
        prices = [p.price for p in priced if p.price is not None]
        spots = [s for s in (_spot_price(p) for p in priced) if s is not None]
        cheapest = min(priced, key=lambda p: (p.price is None, p.price or 0))
        match = _GPU_MEMORY.match(name)
        rows.append(
            ProductRow(
                name=name,
                gpu=match["gpu"] if match else name,
                gpu_memory_gb=int(match["gb"]) if match else None,
                gpu_num=gpu_num,
                price_per_hour=_usd(min(prices) if prices else None, gpu_num),
                spot_price_per_hour=_usd(min(spots) if spots else None, gpu_num),
                available=any(p.available_deploy for p in here),
                regions=regions,
                cpu_per_gpu=cheapest.cpu_per_gpu,
                memory_per_gpu_gb=cheapest.memory_per_gpu,
            )
        )
    return sorted(rows, key=lambda r: (r.price_per_hour is None, r.price_per_hour or 0, r.name))


def list_templates(client: NovitaClient | None = None) -> list[Template]:
    """Every template upstream lists for this account (official, community and its own)."""
    client = client or get_client()
    return _cached("templates", _key("templates", client.base_url), client.list_templates)


# --- checking a create at the door -----------------------------------------------------------

_MAX_CHOICES = 50


def create_problems(
    product_name: str,
    template_id: str,
    region: str,
    gpu_num: int = 1,
    client: NovitaClient | None = None,
    billing_mode: str | None = None,
) -> list[dict]:
    """What the catalogue says is wrong with a create, as the contract's validation details
    ({field, message, value}) plus `choices`: what would be valid instead.

    Empty when everything exists, and also when the catalogue cannot be read (upstream down,
    breaker open): the create is then accepted and resolved by the worker, as before. Capacity
    is not judged here; it changes by the minute and the worker picks what is free. A spot
    create also needs an offer that takes spot in the region (what the worker will look for).
    """
    client = client or get_client()
    try:
        clusters = _clusters(client)
    except NovitaError:
        return []
    problems = []
    cluster = _find_cluster(region, clusters)
    if cluster is None:
        available = [code for code in region_clusters() if _find_cluster(code, clusters)]
        problems.append(
            _problem(
                "region",
                region,
                f"Region '{region}' maps to no Novita cluster right now; regions available: "
                f"{', '.join(available) or 'none'}",
                available,
            )
        )
    product = _product_problems(product_name, region if cluster else None, gpu_num, client)
    if not product and cluster is not None and billing_mode == SPOT:
        product = _spot_problems(product_name, region, gpu_num, clusters, client)
    problems += product
    problems += _template_problems(template_id, client)
    return problems


def _problem(field_name: str, value, message: str, choices: list[str]) -> dict:
    return {"field": field_name, "message": message, "value": value, "choices": choices}


def _product_problems(name: str, region: str | None, gpu_num: int, client) -> list[dict]:
    try:
        by_name = offers(gpu_num, client)
    except NovitaError:
        return []
    found = {key.lower(): where for key, where in by_name.items()}.get(name.strip().lower())
    if not found:
        here = sorted(n for n, where in by_name.items() if any(c == region for c, _ in where))
        choices = (here if region else sorted(by_name))[:_MAX_CHOICES]
        scope = f"in {region}" if region else "anywhere"
        return [
            _problem(
                "productName",
                name,
                f"Unknown product '{name}' for {gpu_num} GPU(s); products offered {scope}: "
                f"{', '.join(choices) or 'none'} (GET /api/products)",
                choices,
            )
        ]
    regions = list(dict.fromkeys(code for code, _p in found))
    if region and region not in regions:
        return [
            _problem(
                "productName",
                name,
                f"Product '{name}' is not offered in {region}; it is offered in "
                f"{', '.join(regions)}",
                regions,
            )
        ]
    return []


def _spot_problems(name: str, region: str, gpu_num: int, clusters, client) -> list[dict]:
    def takes_spot(code: str) -> bool:
        cluster = _find_cluster(code, clusters)
        if cluster is None:
            return False
        products = _products_in(client, cluster, gpu_num, spot=True)
        return bool(_offers_named(products, name, cluster, spot=True))

    try:
        if takes_spot(region):
            return []
        regions = [code for code in region_clusters() if code != region and takes_spot(code)]
    except NovitaError:
        return []
    return [
        _problem(
            "productName",
            name,
            f"Product '{name}' is not offered as spot in {region}; as spot it is offered in "
            f"{', '.join(regions) or 'no region'} (or create it with billingMode onDemand)",
            regions,
        )
    ]


def _template_problems(template_id: str, client) -> list[dict]:
    try:
        resolve_template(template_id, client=client)
        return []
    except ResolutionError as exc:
        message = exc.message
    except NovitaError:
        return []
    try:
        choices = [t.id for t in list_templates(client) if t.id][:_MAX_CHOICES]
    except NovitaError:
        choices = []
    listed = f"; templates: {', '.join(choices)}" if choices else ""
    return [_problem("templateId", template_id, f"{message}{listed} (GET /api/templates)", choices)]
