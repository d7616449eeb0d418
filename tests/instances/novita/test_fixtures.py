"""The client reads every recorded upstream body in tests/fixtures/novita/ the way the gateway
needs it: a typed object for each success body, the right error class for each error body."""

import json
from pathlib import Path

import pytest
import responses

from instances.novita.client import NovitaClient
from instances.novita.errors import (
    NovitaMisconfiguredError,
    NovitaNotFoundError,
    NovitaPermanentError,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "novita"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
BASE = "https://novita.test/gpu-instance/openapi"
ERROR_CLASSES = {
    "instance gone": NovitaNotFoundError,
    "permanent": NovitaPermanentError,
    "misconfigured": NovitaMisconfiguredError,
}


def body(name):
    return (FIXTURES / name).read_text()


def fixture_json(name):
    return json.loads(body(name))


@pytest.fixture
def mocked():
    with responses.RequestsMock() as rsps:
        yield rsps


def client():
    return NovitaClient(BASE, "sk-fixture-key", read_retries=0)


def serve(mocked, name, status=None):
    entry = MANIFEST[name]
    mocked.add(
        entry["method"],
        BASE + entry["path"],
        body=body(name),
        status=status or entry["status"],
        content_type=entry.get("content_type", "application/json"),
    )


def test_every_fixture_file_is_listed_in_the_manifest_and_readme():
    files = {p.name for p in FIXTURES.iterdir() if p.name not in ("README.md", "manifest.json")}
    assert files == set(MANIFEST)
    readme = body("README.md")
    for name in files:
        assert f"`{name}`" in readme, name


def test_create_body_gives_the_instance_id(mocked):
    serve(mocked, "create_instance.json")
    assert client().create_instance(product_id="p", gpu_num=1) == "07ed667185a895bb"


def test_get_instance_body_gives_ports_as_novita_publishes_them(mocked):
    serve(mocked, "get_instance.json")
    instance = client().get_instance("07ed667185a895bb")
    assert instance.status == "running"
    assert (instance.cpu_num, instance.memory, instance.gpu_num) == (16, 62, 1)
    assert instance.cluster_id == "us-ca-1"
    endpoints = {m.port: (m.endpoint, m.type) for m in instance.port_mappings}
    assert endpoints == {
        8188: ("https://07ed667185a895bb-8188.us-ca-1.gpu-instance.novita.ai", "http"),
        22: ("proxy.us-ca-1.gpu-instance.novita.ai:38597", "tcp"),
    }
    assert instance.billing_mode == "onDemand"
    assert instance.status_error is None


def test_get_instance_never_keeps_upstream_passwords(mocked):
    serve(mocked, "get_instance.json")
    instance = client().get_instance("07ed667185a895bb")
    assert "FIXTURE-" not in repr(instance)


def test_pending_right_after_create_is_read(mocked):
    serve(mocked, "get_instance_pending.json")
    instance = client().get_instance("8097f1658f3e6ad1")
    assert instance.status == "pending"
    assert instance.billing_mode == "spot"
    assert [m.endpoint for m in instance.port_mappings] == [None]


def test_legacy_get_instance_body_is_read(mocked):
    serve(mocked, "get_instance_legacy.json")
    instance = client().get_instance("96d7033c8e14f47a")
    assert instance.status == "exited"
    assert instance.ssh_command == "ssh root@proxy.us-ca-1.gpu-instance.novita.ai -p 41022"
    assert instance.created_at is not None and instance.created_at.year == 2024
    assert instance.port_mappings[0].endpoint == (
        "96d7033c8e14f47a-3000.us-ca-1.gpu-instance.novita.ai"
    )
    assert "FIXTURE-" not in repr(instance)


def test_list_instances_body_gives_every_instance_with_spot_state(mocked):
    serve(mocked, "list_instances.json")
    instances = client().list_instances()
    assert [i.id for i in instances] == ["07ed667185a895bb", "8097f1658f3e6ad1"]
    running, spot = instances
    assert running.spot_status is None and running.spot_reclaim_time is None
    assert spot.spot_status == "terminated" and spot.spot_reclaim_time == 1732900000
    assert [m.endpoint for m in running.port_mappings] == [None, None]


def test_empty_listing_is_empty(mocked):
    serve(mocked, "list_instances_empty.json")
    assert client().list_instances() == []


def test_products_body_gives_prices_regions_and_spot_offers(mocked):
    serve(mocked, "products.json")
    products = {p.id: p for p in client().list_products()}
    spot = products["4090.16c96g.v2"]
    assert spot.price == 35000 and spot.spot_price == 17500
    assert spot.regions == ["US-CA-NAS-02 (California)"]
    assert "spot" in spot.billing_methods
    assert products["26"].price == 67000 and products["26"].spot_price is None
    assert products["26"].available_deploy is False
    assert products["A100-80GB.14c240g"].regions == []


def test_clusters_body_gives_slug_ids_and_names(mocked):
    serve(mocked, "clusters.json")
    clusters = {c.id: c.name for c in client().list_clusters()}
    assert clusters["cn-hongkong-1"] == "CN-HK-01"
    assert clusters["us-dallas-1"] == "US-01 (Dallas)"


def test_templates_body_reads_both_spellings_of_the_creation_time(mocked):
    serve(mocked, "templates.json")
    first, second = client().list_templates()
    assert first.id == "107672" and first.created_at is not None
    assert second.created_at is not None
    assert first.min_cuda_version == "12.1"
    assert [(p.port, p.type) for p in first.ports] == [(8888, "http"), (22, "tcp")]
    assert second.rootfs_size == 80


def test_template_body_is_read(mocked):
    serve(mocked, "template.json")
    template = client().get_template("107672")
    assert template.image == "pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime"
    assert template.start_command.startswith("jupyter")
    assert template.min_cuda_version == "12.1"


def test_jobs_body_gives_error_text_from_every_field_novita_uses(mocked):
    serve(mocked, "jobs.json")
    jobs = {j.id: j for j in client().list_jobs()}
    assert jobs["job-6f1c2a"].state == "running" and jobs["job-6f1c2a"].error is None
    assert jobs["job-7a2b3c"].error == "no capacity in cluster"
    assert jobs["job-8c3d4e"].error == "push to registry denied"
    assert jobs["job-6f1c2a"].instance_id == "8097f1658f3e6ad1"


ERROR_FIXTURES = sorted(name for name, entry in MANIFEST.items() if "meaning" in entry)


@pytest.mark.parametrize("name", ERROR_FIXTURES)
def test_error_body_maps_to_what_it_means(mocked, name):
    entry = MANIFEST[name]
    serve(mocked, name)
    call = {
        "/v1/gpu/instance": lambda c: c.get_instance("07ed667185a895bb"),
        "/v1/gpu/instances": lambda c: c.list_instances(),
        "/v1/gpu/instance/create": lambda c: c.create_instance(product_id="p"),
        "/v1/gpu/instance/migrate": lambda c: c.migrate_instance("07ed667185a895bb"),
    }[entry["path"]]
    with pytest.raises(ERROR_CLASSES[entry["meaning"]]) as caught:
        call(client())
    assert caught.value.status_code == entry["status"]
    if entry["meaning"] != "instance gone":
        assert not isinstance(caught.value, NovitaNotFoundError)


@pytest.mark.parametrize(
    "first_boot,expected", [(True, "creating"), (False, "starting")], ids=["create", "start"]
)
def test_pending_right_after_create_maps_to_creating_or_starting(first_boot, expected):
    from instances.status import from_upstream

    status = fixture_json("get_instance_pending.json")["status"]
    mapped = from_upstream(status, current="ready", desired="running", first_boot=first_boot)
    assert mapped == expected
