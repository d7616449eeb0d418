"""The catalogue a client creates from: GET /api/regions, /api/products and /api/templates,
served from the named caches."""

import pytest

from tests.instances.upstream import TEMPLATE, V1

pytestmark = pytest.mark.django_db

PRODUCTS = [
    {
        "id": "4090-hk",
        "name": "RTX 4090 24GB",
        "availableDeploy": True,
        "regions": ["CN-HK-01 (Hong Kong)"],
        "price": 35000,
        "spotPrice": "18000",
        "billingMethods": ["onDemand", "spot"],
        "cpuPerGpu": 16,
        "memoryPerGpu": 62,
    },
    {
        "id": "4090-hk-full",
        "name": "RTX 4090 24GB",
        "availableDeploy": False,
        "regions": ["CN-HK-01"],
        "price": 10000,
    },
    {
        "id": "4090-us",
        "name": "RTX 4090 24GB",
        "availableDeploy": True,
        "regions": ["US West"],
        "price": 36000,
        "spotPrice": "0",
        "billingMethods": ["onDemand"],
    },
    {
        "id": "a100-us",
        "name": "A100 80GB",
        "availableDeploy": False,
        "regions": ["US West"],
        "price": 160000,
    },
]


@pytest.fixture
def catalogue(novita):
    novita.mock.get(
        f"{V1}/clusters",
        json={
            "data": [
                {"id": "CN-HK-01", "name": "CN-HK-01 (Hong Kong)"},
                {"id": "us-west-1", "name": "US West"},
            ]
        },
    )
    novita.mock.get(f"{V1}/products", json={"data": PRODUCTS})
    novita.mock.get(f"{V1}/templates", json={"template": [TEMPLATE], "total": 1})
    return novita


def upstream_calls(novita) -> int:
    return len(novita.mock.calls)


def test_regions_list_every_code_and_the_cluster_it_maps_to(api, catalogue):
    body = api.get("/api/regions").json()
    rows = {r["id"]: r for r in body["regions"]}
    assert list(rows) == ["CN-HK-01", "US-WEST-01", "EU-WEST-01", "AS-SGP-02"]
    assert body["total"] == 4
    assert rows["CN-HK-01"] == {
        "id": "CN-HK-01",
        "name": "CN-HK-01 (Hong Kong)",
        "clusterId": "CN-HK-01",
        "available": True,
    }
    assert rows["US-WEST-01"]["clusterId"] == "us-west-1"
    assert rows["EU-WEST-01"] == {
        "id": "EU-WEST-01",
        "name": None,
        "clusterId": None,
        "available": False,
    }


def test_products_show_prices_availability_and_where_offered(api, catalogue):
    body = api.get("/api/products").json()
    rows = {p["name"]: p for p in body["products"]}
    assert body["total"] == 2
    rtx = rows["RTX 4090 24GB"]
    # The cheapest offer with capacity (the $0.10 one has none), in USD per hour.
    assert rtx["pricePerHour"] == 0.35
    assert rtx["spotPricePerHour"] == 0.18
    assert rtx["available"] is True
    assert rtx["regions"] == ["CN-HK-01", "US-WEST-01"]
    assert (rtx["gpu"], rtx["gpuMemoryGb"], rtx["gpuNum"]) == ("RTX 4090", 24, 1)
    assert (rtx["cpuPerGpu"], rtx["memoryPerGpuGb"]) == (16, 62)
    a100 = rows["A100 80GB"]
    assert a100["available"] is False and a100["regions"] == ["US-WEST-01"]
    assert "spotPricePerHour" not in a100


def test_products_of_one_region_carry_that_regions_prices(api, catalogue):
    body = api.get("/api/products?region=US-WEST-01").json()
    rows = {p["name"]: p for p in body["products"]}
    assert rows["RTX 4090 24GB"]["pricePerHour"] == 0.36
    assert "spotPricePerHour" not in rows["RTX 4090 24GB"]  # spotPrice "0": no spot there
    assert rows["RTX 4090 24GB"]["regions"] == ["CN-HK-01", "US-WEST-01"]
    assert api.get("/api/products?region=EU-WEST-01").json() == {"products": [], "total": 0}


def test_products_for_more_gpus_are_priced_for_the_whole_instance(api, catalogue):
    body = api.get("/api/products?region=CN-HK-01&gpuNum=2").json()
    (rtx,) = body["products"]
    assert (rtx["gpuNum"], rtx["pricePerHour"]) == (2, 0.7)
    asked = {c.request.params.get("gpuNum") for c in catalogue.calls("/products")}
    assert asked == {"2"}


@pytest.mark.parametrize("query", ["region=MARS-01", "gpuNum=9", "gpuNum=0", "gpuNum=two"])
def test_products_reject_unknown_regions_and_gpu_counts(api, catalogue, query):
    response = api.get(f"/api/products?{query}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


def test_unknown_region_message_lists_the_regions(api, catalogue):
    (detail,) = api.get("/api/products?region=MARS-01").json()["error"]["details"]
    assert detail["field"] == "region"
    assert "CN-HK-01, US-WEST-01, EU-WEST-01, AS-SGP-02" in detail["message"]


def test_templates_list_id_name_image_and_ports(api, catalogue):
    body = api.get("/api/templates").json()
    assert body["total"] == 1
    assert body["templates"] == [
        {
            "id": "pytorch-jupyter",
            "name": "PyTorch",
            "image": "pytorch/pytorch:latest",
            "ports": [{"port": 8888, "type": "http"}, {"port": 22, "type": "tcp"}],
        }
    ]


def test_a_warm_catalogue_calls_no_upstream(api, catalogue):
    for path in (
        "/api/regions",
        "/api/products",
        "/api/products?region=CN-HK-01",
        "/api/templates",
    ):
        assert api.get(path).status_code == 200
    cold = upstream_calls(catalogue)
    assert cold > 0

    for path in (
        "/api/regions",
        "/api/products",
        "/api/products?region=US-WEST-01",
        "/api/templates",
    ):
        assert api.get(path).status_code == 200

    assert upstream_calls(catalogue) == cold
    stats = api.get("/api/cache/stats").json()
    assert "products" in str(stats) and "templates" in str(stats)


def test_a_cold_catalogue_with_upstream_down_is_an_upstream_error(api, novita):
    novita.mock.get(f"{V1}/clusters", status=503, json={"message": "down"})
    response = api.get("/api/regions")
    assert response.status_code in (502, 503)
    assert response.json()["error"]["code"] in ("NOVITA_API_ERROR", "CIRCUIT_BREAKER_OPEN")
