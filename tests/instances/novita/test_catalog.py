"""Catalog resolution: region -> cluster, productName -> cheapest deployable product, templateId
-> create fields, all cached."""

import pytest
import responses
from django.core.cache import caches
from responses import matchers

from instances.apps import check_region_table
from instances.novita.catalog import (
    available_regions,
    offer_price,
    region_codes,
    resolve_cluster,
    resolve_product,
    resolve_template,
)
from instances.novita.client import NovitaClient
from instances.novita.errors import NovitaTransientError, ResolutionError

BASE = "https://novita.test/gpu-instance/openapi"
V1 = BASE + "/v1"

CLUSTERS = {
    "data": [
        {"id": "CN-HK-01", "name": "CN-HK-01 (Hong Kong)"},
        {"id": "c-us-ca-06", "name": "US-CA-06 (California)"},
    ]
}


@pytest.fixture(autouse=True)
def locmem_caches(settings):
    settings.CACHES = {
        alias: {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": alias}
        for alias in ("default", "products", "templates", "clusters")
    }
    settings.CATALOG_CACHE_SECONDS = 300
    for alias in settings.CACHES:
        caches[alias].clear()


@pytest.fixture
def mocked():
    with responses.RequestsMock() as rsps:
        yield rsps


@pytest.fixture
def client():
    return NovitaClient(BASE, "test-key", read_retries=0)


def product(pid, name="RTX 4090 24GB", price=35000, available=True, regions=()):
    return {
        "id": pid,
        "name": name,
        "price": price,
        "availableDeploy": available,
        "regions": list(regions),
    }


def mock_products(mocked, cluster_id, products, gpu_num=1):
    mocked.get(
        V1 + "/products",
        match=[matchers.query_param_matcher({"clusterId": cluster_id, "gpuNum": str(gpu_num)})],
        json={"data": products},
    )


# --- clusters -------------------------------------------------------------------------------


def test_region_resolves_to_the_cluster_with_that_id(mocked, client):
    mocked.get(V1 + "/clusters", json=CLUSTERS)
    assert resolve_cluster("CN-HK-01", client=client).id == "CN-HK-01"


def test_region_resolves_to_a_cluster_whose_name_starts_with_it(mocked, client):
    mocked.get(V1 + "/clusters", json=CLUSTERS)
    assert resolve_cluster("us-ca-06", client=client).id == "c-us-ca-06"


def test_unknown_region_is_a_resolution_error(mocked, client):
    mocked.get(V1 + "/clusters", json=CLUSTERS)
    with pytest.raises(ResolutionError, match="EU-WEST-01"):
        resolve_cluster("EU-WEST-01", client=client)


# --- products -------------------------------------------------------------------------------


def test_cheapest_available_offer_is_chosen(mocked, client):
    mocked.get(V1 + "/clusters", json=CLUSTERS)
    mock_products(
        mocked,
        "CN-HK-01",
        [
            product("p-expensive", price=50000),
            product("p-cheap-but-full", price=10000, available=False),
            product("p-cheapest", name="rtx 4090 24gb", price=30000),
            product("p-other-model", name="RTX 4090 24GB x", price=1),
            product("p-unpriced", price=None),
        ],
    )
    chosen = resolve_product("RTX 4090 24GB", "CN-HK-01", client=client)
    assert chosen.id == "p-cheapest"


def test_products_offered_in_other_clusters_are_skipped(mocked, client):
    mocked.get(V1 + "/clusters", json=CLUSTERS)
    mock_products(
        mocked,
        "c-us-ca-06",
        [
            product("p-elsewhere", price=1000, regions=["CN-HK-01 (Hong Kong)"]),
            product("p-here", price=9000, regions=["US-CA-06 (California)"]),
            product("p-everywhere", price=20000, regions=[]),
        ],
    )
    assert resolve_product("RTX 4090 24GB", "US-CA-06", client=client).id == "p-here"


def test_gpu_num_is_sent_upstream(mocked, client):
    mocked.get(V1 + "/clusters", json=CLUSTERS)
    mock_products(mocked, "CN-HK-01", [product("p-2gpu")], gpu_num=2)
    assert resolve_product("RTX 4090 24GB", "CN-HK-01", gpu_num=2, client=client).id == "p-2gpu"


def test_unknown_product_is_a_resolution_error(mocked, client):
    mocked.get(V1 + "/clusters", json=CLUSTERS)
    mock_products(mocked, "CN-HK-01", [product("p-1")])
    with pytest.raises(ResolutionError) as caught:
        resolve_product("H100 80GB", "CN-HK-01", client=client)
    assert str(caught.value) == "Product 'H100 80GB' is not offered in region CN-HK-01"
    assert caught.value.reason == "PRODUCT_NOT_OFFERED"


def test_product_with_every_offer_unavailable_reports_no_capacity(mocked, client):
    mocked.get(V1 + "/clusters", json=CLUSTERS)
    mock_products(mocked, "CN-HK-01", [product("p-1", available=False)])
    with pytest.raises(ResolutionError, match="no capacity") as caught:
        resolve_product("RTX 4090 24GB", "CN-HK-01", client=client)
    assert caught.value.reason == "NO_CAPACITY"


def test_second_resolve_is_served_from_cache(mocked, client):
    mocked.get(V1 + "/clusters", json=CLUSTERS)
    mock_products(mocked, "CN-HK-01", [product("p-1")])

    first = resolve_product("RTX 4090 24GB", "CN-HK-01", client=client)
    calls_after_first = len(mocked.calls)
    second = resolve_product("RTX 4090 24GB", "CN-HK-01", client=client)

    assert calls_after_first == 2
    assert len(mocked.calls) == 2
    assert second == first


def test_upstream_errors_are_not_cached(mocked, client):
    mocked.get(V1 + "/clusters", status=503)
    with pytest.raises(NovitaTransientError):
        resolve_cluster("CN-HK-01", client=client)
    mocked.replace(responses.GET, V1 + "/clusters", json=CLUSTERS)
    assert resolve_cluster("CN-HK-01", client=client).id == "CN-HK-01"


def test_falls_back_to_the_default_cache_without_catalog_aliases(settings, mocked, client):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "d"}
    }
    caches["default"].clear()
    mocked.get(V1 + "/clusters", json=CLUSTERS)
    resolve_cluster("CN-HK-01", client=client)
    resolve_cluster("CN-HK-01", client=client)
    assert len(mocked.calls) == 1


# --- templates ------------------------------------------------------------------------------

TEMPLATE = {
    "template": {
        "Id": "pytorch-jupyter",
        "image": "pytorch/pytorch:2.3",
        "imageAuth": "auth-1",
        "startCommand": "jupyter lab --ip=0.0.0.0",
        "entrypoint": "",
        "rootfsSize": "60",
        "ports": [{"type": "http", "ports": [8888]}, {"type": "tcp", "ports": ["22"]}],
        "envs": [{"key": "JUPYTER_TOKEN", "value": "abc"}],
    }
}


def test_template_is_mapped_to_create_fields(mocked, client):
    mocked.get(
        V1 + "/template",
        match=[matchers.query_param_matcher({"templateId": "pytorch-jupyter"})],
        json=TEMPLATE,
    )
    spec = resolve_template("pytorch-jupyter", client=client)
    assert spec.image_url == "pytorch/pytorch:2.3"
    assert spec.command == "jupyter lab --ip=0.0.0.0"
    assert spec.entrypoint is None
    assert spec.ports == "8888/http,22/tcp"
    assert spec.port_list == [(8888, "http"), (22, "tcp")]
    assert spec.envs == [{"key": "JUPYTER_TOKEN", "value": "abc"}]
    assert spec.rootfs_size == 60
    assert spec.image_auth_id == "auth-1"


def test_template_resolution_is_cached(mocked, client):
    mocked.get(V1 + "/template", json=TEMPLATE)
    first = resolve_template("pytorch-jupyter", client=client)
    second = resolve_template("pytorch-jupyter", client=client)
    assert first == second
    assert len(mocked.calls) == 1


def test_unknown_template_is_a_resolution_error(mocked, client):
    mocked.get(
        V1 + "/template",
        status=400,
        json={"code": 400, "reason": "TEMPLATE_NOT_FOUND", "message": "template not found"},
    )
    with pytest.raises(ResolutionError, match="Template 'nope' was not found"):
        resolve_template("nope", client=client)


def test_template_without_image_is_a_resolution_error(mocked, client):
    mocked.get(V1 + "/template", json={"template": {"Id": "t", "image": ""}})
    with pytest.raises(ResolutionError, match="no image"):
        resolve_template("t", client=client)


@pytest.mark.django_db
def test_catalog_lookups_are_counted_in_cache_stats(mocked, client):
    from ops import caching, metrics

    mocked.get(V1 + "/clusters", json=CLUSTERS)
    mock_products(mocked, "CN-HK-01", [product("p-1")])
    resolve_product("RTX 4090 24GB", "CN-HK-01", client=client)
    resolve_product("RTX 4090 24GB", "CN-HK-01", client=client)
    metrics.flush()
    products = caching.stats()["products"]
    assert (products["hits"], products["misses"]) == (1, 1)


# --- regions as Novita models them ----------------------------------------------------------

REAL_CLUSTERS = {
    "data": [
        {"id": "cn-hongkong-1", "name": "CN-HK-01"},
        {"id": "as-sgp-2", "name": "AS-SGP-02 (Singapore)"},
        {"id": "us-ca-nas-2", "name": "US-CA-NAS-02 (California)"},
        {"id": "us-dallas-1", "name": "US-01 (Dallas)"},
    ]
}


def test_contract_region_codes_map_to_real_cluster_slugs(mocked, client):
    mocked.get(V1 + "/clusters", json=REAL_CLUSTERS)
    assert resolve_cluster("CN-HK-01", client=client).id == "cn-hongkong-1"
    assert resolve_cluster("AS-SGP-02", client=client).id == "as-sgp-2"


def test_region_table_matches_a_cluster_by_name_when_ids_differ(mocked, client):
    mocked.get(V1 + "/clusters", json={"data": [{"id": "hk-9", "name": "CN-HK-01 (Hong Kong)"}]})
    assert resolve_cluster("CN-HK-01", client=client).id == "hk-9"


def test_operator_overrides_the_region_table_from_the_environment(mocked, client, settings):
    settings.NOVITA_REGION_CLUSTERS = "US-WEST-01=us-ca-nas-2,US-DAL-01=US-01 (Dallas)"
    mocked.get(V1 + "/clusters", json=REAL_CLUSTERS)
    assert resolve_cluster("US-WEST-01", client=client).id == "us-ca-nas-2"
    assert resolve_cluster("US-DAL-01", client=client).id == "us-dallas-1"
    assert "US-DAL-01" in region_codes()


def test_region_removed_by_the_operator_is_gone(settings):
    settings.NOVITA_REGION_CLUSTERS = "EU-WEST-01="
    assert "EU-WEST-01" not in region_codes()
    assert "CN-HK-01" in region_codes()


def test_region_mapping_to_no_cluster_lists_the_regions_that_exist(mocked, client):
    mocked.get(V1 + "/clusters", json=REAL_CLUSTERS)
    with pytest.raises(ResolutionError) as caught:
        resolve_cluster("EU-WEST-01", client=client)
    assert "EU-WEST-01" in caught.value.message
    assert "CN-HK-01, AS-SGP-02" in caught.value.message
    assert available_regions(client=client) == ["CN-HK-01", "AS-SGP-02"]


def test_malformed_region_table_is_reported_by_the_system_check(settings):
    settings.NOVITA_REGION_CLUSTERS = "CN-HK-01"
    assert [e.id for e in check_region_table()] == ["instances.E001"]
    settings.NOVITA_REGION_CLUSTERS = "CN-HK-01=cn-hongkong-1"
    assert check_region_table() == []


def test_products_match_their_cluster_by_display_name(mocked, client, settings):
    settings.NOVITA_REGION_CLUSTERS = "US-DAL-01=us-dallas-1"
    mocked.get(V1 + "/clusters", json=REAL_CLUSTERS)
    mock_products(
        mocked,
        "us-dallas-1",
        [
            product("p-california", price=1, regions=["US-CA-NAS-02 (California)"]),
            product("p-dallas", price=67000, regions=["US-01 (Dallas)"]),
        ],
    )
    assert resolve_product("RTX 4090 24GB", "US-DAL-01", client=client).id == "p-dallas"


def test_products_match_their_cluster_by_id(mocked, client):
    mocked.get(V1 + "/clusters", json=REAL_CLUSTERS)
    mock_products(mocked, "as-sgp-2", [product("p-sgp", regions=["as-sgp-2"])])
    assert resolve_product("RTX 4090 24GB", "AS-SGP-02", client=client).id == "p-sgp"


# --- spot -----------------------------------------------------------------------------------


def spot_product(pid, price, spot_price, methods=("onDemand", "spot")):
    data = product(pid, price=price)
    data.update(spotPrice=spot_price, billingMethods=list(methods))
    return data


def test_spot_create_asks_upstream_for_spot_offers_and_compares_spot_prices(mocked, client):
    mocked.get(V1 + "/clusters", json=REAL_CLUSTERS)
    mocked.get(
        V1 + "/products",
        match=[
            matchers.query_param_matcher(
                {"clusterId": "cn-hongkong-1", "gpuNum": "1", "billingMethod": "spot"}
            )
        ],
        json={
            "data": [
                spot_product("p-cheap-on-demand", 30000, "25000"),
                spot_product("p-cheap-spot", 40000, "12000"),
                spot_product("p-no-spot", 1000, "", methods=("onDemand",)),
            ]
        },
    )
    chosen = resolve_product("RTX 4090 24GB", "CN-HK-01", client=client, billing_mode="spot")
    assert chosen.id == "p-cheap-spot"
    assert offer_price(chosen, "spot") == 12000
    assert offer_price(chosen, "onDemand") == 40000


def test_spot_create_with_no_spot_offer_is_refused(mocked, client):
    mocked.get(V1 + "/clusters", json=REAL_CLUSTERS)
    mocked.get(
        V1 + "/products",
        json={"data": [spot_product("p-no-spot", 1000, "", methods=("onDemand",))]},
    )
    with pytest.raises(ResolutionError, match="spot"):
        resolve_product("RTX 4090 24GB", "CN-HK-01", client=client, billing_mode="spot")
