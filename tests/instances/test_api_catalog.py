"""The catalogue a client creates from: GET /api/regions, /api/products and /api/templates,
served from the named caches."""

import json

import pytest
import responses

from instances.models import Instance
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


# --- validating a create at the door -----------------------------------------------------------

CREATE = {"name": "door", "productName": "RTX 4090 24GB", "templateId": "pytorch-jupyter"}


@pytest.fixture
def with_template(catalogue):
    catalogue.mock.get(f"{V1}/template", json={"template": TEMPLATE})
    return catalogue


def create(api, **changes):
    return api.post("/api/instances", {**CREATE, **changes}, format="json")


def details_of(response) -> dict:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    return {d["field"]: d for d in error["details"]}


def test_a_create_the_catalogue_knows_is_accepted(api, with_template):
    assert create(api, region="US-WEST-01").status_code == 201


def test_a_product_not_offered_in_the_region_is_400_naming_where_it_is(api, with_template):
    detail = details_of(create(api, productName="A100 80GB"))["productName"]
    assert detail["value"] == "A100 80GB"
    assert detail["choices"] == ["US-WEST-01"]
    assert "not offered in CN-HK-01" in detail["message"] and "US-WEST-01" in detail["message"]
    assert not Instance.objects.exists()


def test_an_unknown_product_is_400_listing_the_products_of_the_region(api, with_template):
    detail = details_of(create(api, productName="RTX 9090"))["productName"]
    assert detail["choices"] == ["RTX 4090 24GB"]


def test_a_missing_template_is_400_listing_templates(api, catalogue):
    catalogue.mock.get(
        f"{V1}/template",
        status=400,
        json={"code": 400, "reason": "TEMPLATE_NOT_FOUND", "message": "template not found"},
    )
    detail = details_of(create(api, templateId="no-such-template"))["templateId"]
    assert detail["value"] == "no-such-template"
    assert detail["choices"] == ["pytorch-jupyter"]
    assert not Instance.objects.exists()


def test_a_region_mapping_to_no_cluster_is_400_listing_the_regions_that_do(api, with_template):
    detail = details_of(create(api, region="EU-WEST-01"))["region"]
    assert detail["choices"] == ["CN-HK-01", "US-WEST-01"]


def test_an_unknown_region_code_is_400_listing_the_codes(api, with_template):
    detail = details_of(create(api, region="MARS-01"))["region"]
    assert "CN-HK-01, US-WEST-01, EU-WEST-01, AS-SGP-02" in detail["message"]


def test_a_spot_create_where_the_product_takes_no_spot_is_400_naming_where_it_does(
    api, with_template
):
    # US West's RTX 4090 offer is on-demand only (spotPrice "0", no "spot" billing method).
    detail = details_of(create(api, region="US-WEST-01", billingMode="spot"))["productName"]
    assert detail["value"] == "RTX 4090 24GB"
    assert detail["choices"] == ["CN-HK-01"]
    assert "not offered as spot in US-WEST-01" in detail["message"]
    assert not Instance.objects.exists()
    asked = {c.request.params.get("billingMethod") for c in with_template.calls("/products")}
    assert "spot" in asked


def test_a_spot_create_where_the_product_takes_spot_is_accepted(api, with_template):
    response = create(api, region="CN-HK-01", billingMode="spot")
    assert response.status_code == 201, response.content
    assert Instance.objects.get().billing_mode == "spot"


def test_an_on_demand_create_is_not_held_to_spot_offers(api, with_template):
    assert create(api, region="US-WEST-01", billingMode="onDemand").status_code == 201


def test_a_spot_create_is_accepted_when_spot_offers_cannot_be_read(api, with_template):
    def products(request):
        if request.params.get("billingMethod") == "spot":
            return (503, {}, '{"message": "down"}')
        return (200, {}, json.dumps({"data": PRODUCTS}))

    with_template.mock.remove(responses.GET, f"{V1}/products")
    with_template.mock.add_callback(responses.GET, f"{V1}/products", callback=products)
    assert create(api, region="US-WEST-01", billingMode="spot").status_code == 201


def test_every_wrong_field_is_reported_at_once(api, catalogue):
    catalogue.mock.get(f"{V1}/template", status=400, json={"reason": "TEMPLATE_NOT_FOUND"})
    fields = details_of(create(api, productName="RTX 9090", templateId="nope"))
    assert set(fields) == {"productName", "templateId"}


def test_with_upstream_down_a_create_is_accepted_and_resolved_later(api, novita):
    novita.mock.get(f"{V1}/clusters", status=503, json={"message": "down"})
    response = create(api, productName="anything", templateId="anything")
    assert response.status_code == 201
    assert Instance.objects.get().status == "creating"


def test_a_warm_catalogue_checks_a_create_without_upstream_calls(api, with_template):
    assert create(api, name="first").status_code == 201
    before = upstream_calls(with_template)
    assert create(api, name="second").status_code == 201
    assert details_of(create(api, name="third", productName="A100 80GB"))
    assert upstream_calls(with_template) == before


# --- unknown body fields --------------------------------------------------------------------------


def test_an_unknown_create_field_is_400_not_a_silent_default(api, with_template):
    fields = details_of(create(api, gpus=2))
    assert set(fields) == {"gpus"}
    assert "gpuNum" in fields["gpus"]["message"]
    assert not Instance.objects.exists()


def test_an_unknown_nested_field_is_400(api, with_template):
    response = create(api, healthCheckConfig={"targetPort": 8888, "timeout": 5})
    assert set(details_of(response)) == {"healthCheckConfig.timeout"}


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("post", "/api/instances/{id}/start", {"targetport": 8888}),
        ("post", "/api/instances/{id}/stop", {"force": True}),
        ("post", "/api/instances/start", {"instanceName": "x", "wait": True}),
        ("post", "/api/instances/stop", {"instanceName": "x", "wait": True}),
        ("put", "/api/instances/{id}/last-used", {"lastUsed": "2026-01-01T00:00:00Z"}),
        ("put", "/api/instances/last-used", {"instanceName": "x", "at": 1}),
        ("post", "/api/instances/auto-stop/trigger", {"dry_run": False}),
        ("post", "/api/cache/clear", {"cache": "products"}),
    ],
)
def test_unknown_fields_are_400_on_every_endpoint(api, make_instance, method, path, body):
    instance = make_instance(name="x")
    response = getattr(api, method)(path.format(id=instance.id), body, format="json")
    (unknown,) = set(body) - {"instanceName"}
    assert unknown in details_of(response)
