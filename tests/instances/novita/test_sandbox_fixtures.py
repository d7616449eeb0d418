"""The sandbox answers in the shapes public sources recorded (tests/fixtures/novita/), so the
simulator and the recorded evidence cannot drift apart: every key the sandbox sends appears in a
recording of the same body, every key all recordings carry is sent, and each value has a type
some recording shows (recursively, into nested objects and list items)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from instances.novita.sandbox import Sandbox

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "novita"
KEY = "sandbox-key"


def recorded(name):
    return json.loads((FIXTURES / name).read_text())


def conforms(value, examples, path="$"):
    """Problems with `value` against the recorded `examples` of the same place (empty: none)."""
    examples = [e for e in examples if e is not None]
    if not examples:
        return []
    if isinstance(value, dict) and all(isinstance(e, dict) for e in examples):
        known = set().union(*examples)
        always = set.intersection(*(set(e) for e in examples))
        problems = [f"{path}.{k}: never recorded" for k in sorted(set(value) - known)]
        problems += [f"{path}.{k}: recorded always, not sent" for k in sorted(always - set(value))]
        for key in set(value) & known:
            problems += conforms(value[key], [e.get(key) for e in examples], f"{path}.{key}")
        return problems
    if isinstance(value, list) and all(isinstance(e, list) for e in examples):
        items = [item for e in examples for item in e]
        return [p for i, v in enumerate(value) for p in conforms(v, items, f"{path}[{i}]")]
    types = {type(e).__name__ for e in examples}
    if type(value).__name__ not in types:
        return [f"{path}: {type(value).__name__} where recordings show {sorted(types)}"]
    return []


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(api_key=KEY, step_seconds=0.01, seed=2).serve() as sb:
        yield sb


def call(sb, method, path, key=KEY, **kwargs):
    headers = {"Authorization": f"Bearer {key}"}
    url = f"{sb.api_base_url}/v1{path}"
    return requests.request(method, url, headers=headers, timeout=5, **kwargs)


@pytest.fixture(scope="module")
def instance_id(sandbox):
    body = {
        "name": "shape-box",
        "productId": "4090.16c.62g-hk-a",
        "gpuNum": 1,
        "imageUrl": "ubuntu:22.04",
        "ports": "8888/http,22/tcp",
        "envs": [{"key": "A", "value": "1"}],
        "kind": "gpu",
    }
    created = call(sandbox, "POST", "/gpu/instance/create", json=body).json()
    assert conforms(created, [recorded("create_instance.json")]) == []
    deadline = time.monotonic() + 5
    while sandbox.status(created["id"]) != "running":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert call(sandbox, "POST", "/gpu/instance/migrate", json={"instanceId": created["id"]}).ok
    return created["id"]


SUCCESS_BODIES = {
    # name: (path, query, recordings)
    "clusters": ("/clusters", {}, ["clusters.json"]),
    "products": ("/products", {}, ["products.json"]),
    "spot products": ("/products", {"billingMethod": "spot"}, ["products.json"]),
    "templates": ("/templates", {"pageSize": 10, "pageNum": 0}, ["templates.json"]),
    "template": ("/template", {"templateId": "pytorch-jupyter"}, ["template.json"]),
    "instances": ("/gpu/instances", {"pageSize": 10, "pageNum": 0}, ["list_instances.json"]),
    "instance": (
        "/gpu/instance",
        {},
        ["get_instance.json", "get_instance_legacy.json", "get_instance_pending.json"],
    ),
    "jobs": ("/jobs", {"pageSize": 10, "pageNum": 0}, ["jobs.json"]),
}


@pytest.mark.parametrize("name", SUCCESS_BODIES)
def test_sandbox_success_bodies_match_the_recorded_shapes(sandbox, instance_id, name):
    path, query, recordings = SUCCESS_BODIES[name]
    if path == "/gpu/instance":
        query = {"instanceId": instance_id}
    response = call(sandbox, "GET", path, params=query)
    assert response.status_code == 200
    body = response.json()
    examples = [recorded(r) for r in recordings]
    if name == "template":
        # One template's fields are recorded in the listing too (older docs say createTime).
        examples.append({"template": recorded("templates.json")["template"][0]})
    assert conforms(body, examples) == []


def test_templates_recorded_both_ways_are_one_shape(sandbox):
    body = call(sandbox, "GET", "/template", params={"templateId": "ubuntu-ssh"}).json()
    listed = recorded("templates.json")["template"]
    assert conforms(body["template"], listed) == []


ERROR_BODIES = {
    "unknown instance": ("GET", "/gpu/instance?instanceId=nope", KEY, "error_resource_not_found"),
    "unknown route": ("GET", "/no/such/route", KEY, "error_api_not_found"),
    "bad key": ("GET", "/gpu/instances", "wrong", "error_unauthorized"),
}


@pytest.mark.parametrize("name", ERROR_BODIES)
def test_sandbox_error_bodies_match_the_recorded_ones(sandbox, name):
    method, path, key, recording = ERROR_BODIES[name]
    manifest = recorded("manifest.json")[f"{recording}.json"]
    response = call(sandbox, method, path, key=key)
    assert response.status_code == manifest["status"]
    assert conforms(response.json(), [recorded(f"{recording}.json")]) == []
    assert response.json()["reason"] == recorded(f"{recording}.json")["reason"]


def test_no_capacity_error_matches_the_recorded_one(sandbox):
    body = {"productId": "h100.24c.200g", "gpuNum": 1, "imageUrl": "x", "kind": "gpu"}
    response = call(sandbox, "POST", "/gpu/instance/create", json=body)
    expected = recorded("error_insufficient_resource.json")
    assert response.status_code == 400
    assert response.json()["reason"] == expected["reason"]
    assert set(response.json()) == set(expected)


def test_conformance_check_catches_drift():
    recorded_item = {"id": "a", "cpuNum": "16", "ports": [{"port": 1}]}
    assert conforms({"id": "a", "cpuNum": 16, "ports": [{"port": 1}]}, [recorded_item]) == [
        "$.cpuNum: int where recordings show ['str']"
    ]
    assert conforms({"id": "a", "cpuNum": "1", "ports": [], "x": 1}, [recorded_item]) == [
        "$.x: never recorded"
    ]
    assert conforms({"id": "a", "ports": []}, [recorded_item]) == [
        "$.cpuNum: recorded always, not sent"
    ]
