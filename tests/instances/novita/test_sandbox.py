"""Behaviour of the upstream simulator, exercised over real loopback HTTP (no database)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from instances.novita.sandbox import Sandbox

KEY = "sandbox-key"
STEP = 0.03
TIMEOUT = 3  # seconds for any single HTTP call
DEADLINE = 4  # seconds to wait for a state that should arrive within a few steps

CREATE_BODY = {
    "name": "test-box",
    "productId": "4090.16c.62g-hk-a",
    "gpuNum": 1,
    "rootfsSize": 60,
    "imageUrl": "pytorch/pytorch:2.3.1-cuda12.1-cudnn8-runtime",
    "ports": "8888/http,22/tcp",
    "envs": [{"key": "A", "value": "1"}],
    "kind": "gpu",
}


@pytest.fixture
def sb():
    sandbox = Sandbox(api_key=KEY, step_seconds=STEP, seed=7).serve()
    try:
        yield sandbox
    finally:
        sandbox.shutdown()


@pytest.fixture
def api(sb):
    """A tiny authenticated client bound to the sandbox's v1 base."""

    class Api:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {KEY}"
        base = f"{sb.api_base_url}/v1"

        def get(self, path, **params):
            return self.session.get(self.base + path, params=params, timeout=TIMEOUT)

        def post(self, path, body=None):
            return self.session.post(self.base + path, json=body or {}, timeout=TIMEOUT)

        def create(self, **overrides):
            resp = self.post("/gpu/instance/create", {**CREATE_BODY, **overrides})
            assert resp.status_code == 200, resp.text
            return resp.json()["id"]

        def status(self, instance_id):
            return self.get("/gpu/instance", instanceId=instance_id).json().get("status")

        def wait_status(self, instance_id, wanted, seen=None):
            deadline = time.monotonic() + DEADLINE
            while time.monotonic() < deadline:
                status = self.status(instance_id)
                if seen is not None and (not seen or seen[-1] != status):
                    seen.append(status)
                if status == wanted:
                    return
                time.sleep(STEP / 3)
            raise AssertionError(f"{instance_id} never reached {wanted}; saw {seen}")

    client = Api()
    yield client
    client.session.close()


def slow_down(sb):
    """Widen the state windows for tests that must observe a short-lived state."""
    sb.configure(step_seconds=0.2)


def wait_until(predicate, what):
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(STEP / 3)
    raise AssertionError(f"timed out waiting for {what}")


def tcp_accepts(endpoint: str) -> bool:
    host, _, port = endpoint.rpartition(":")
    assert host == "127.0.0.1"
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def endpoint_of(view, port):
    return next(m["endpoint"] for m in view["portMappings"] if m["port"] == port)


# -- auth and errors -------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer wrong", "sandbox-key", "Basic sandbox-key"])
def test_missing_or_wrong_api_key_is_rejected_with_401(sb, header):
    headers = {"Authorization": header} if header else {}
    resp = requests.get(f"{sb.api_base_url}/v1/clusters", headers=headers, timeout=TIMEOUT)
    assert resp.status_code == 401
    assert resp.json() == {
        "code": 401,
        "reason": "UNAUTHORIZED",
        "message": "missing or invalid API key",
        "metadata": {},
    }


def test_auth_can_be_disabled():
    with Sandbox(api_key=None, step_seconds=STEP).serve() as sandbox:
        resp = requests.get(f"{sandbox.api_base_url}/v1/clusters", timeout=TIMEOUT)
        assert resp.status_code == 200


def test_unknown_path_is_404_api_not_found(api):
    resp = api.get("/gpu/nothing-here")
    assert resp.status_code == 404
    assert resp.json()["code"] == 404
    assert resp.json()["reason"] == "API_NOT_FOUND"


def test_unknown_instance_is_http_400_resource_not_found(api):
    resp = api.get("/gpu/instance", instanceId="does-not-exist")
    assert resp.status_code == 400
    assert resp.json()["reason"] == "RESOURCE_NOT_FOUND"
    resp = api.post("/gpu/instance/stop", {"instanceId": "does-not-exist"})
    assert (resp.status_code, resp.json()["reason"]) == (400, "RESOURCE_NOT_FOUND")


# -- catalogue -------------------------------------------------------------------------------


def test_clusters_have_slug_ids_and_display_names(api):
    clusters = api.get("/clusters").json()["data"]
    assert {c["id"]: c["name"] for c in clusters} == {
        "cn-hongkong-1": "CN-HK-01",
        "us-west-1": "US-WEST-01 (Oregon)",
        "eu-west-1": "EU-WEST-01 (Frankfurt)",
        "as-sgp-2": "AS-SGP-02",
        "us-dallas-1": "US-01 (Dallas)",
    }
    for cluster in clusters:
        assert cluster["name"]
        assert isinstance(cluster["availableGpuType"], list)
        assert isinstance(cluster["supportNetworkStorage"], bool)


def test_products_include_duplicate_offers_and_an_undeployable_one(api):
    products = api.get("/products").json()["data"]
    cluster_names = {c["name"] for c in api.get("/clusters").json()["data"]}
    for product in products:
        assert isinstance(product["price"], int)
        assert isinstance(product["spotPrice"], str)
        assert set(product["regions"]) <= cluster_names
    hk_4090 = [p for p in products if p["name"] == "RTX 4090 24GB" and "CN-HK-01" in p["regions"]]
    assert len(hk_4090) == 2
    assert hk_4090[0]["price"] != hk_4090[1]["price"]
    assert any(p["name"] == "H100 80GB" and not p["availableDeploy"] for p in products)


def test_products_filter_by_cluster_fuzzy_name_and_billing(api):
    by_cluster = api.get("/products", clusterId="as-sgp-2").json()["data"]
    assert by_cluster and all("AS-SGP-02" in p["regions"] for p in by_cluster)
    fuzzy = api.get("/products", productName="4090").json()["data"]
    assert fuzzy and all("4090" in p["name"] for p in fuzzy)
    spot = api.get("/products", billingMethod="spot").json()["data"]
    assert spot and all("spot" in p["billingMethods"] for p in spot)
    assert api.get("/products", gpuNum=9).status_code == 400


def test_templates_list_and_get(api):
    listing = api.get("/templates").json()
    ids = {t["Id"] for t in listing["template"]}
    assert {"pytorch-jupyter", "ubuntu-ssh", "comfyui"} <= ids
    assert listing["total"] == len(listing["template"])
    template = api.get("/template", templateId="pytorch-jupyter").json()["template"]
    assert template["ports"] == [{"type": "http", "ports": [8888]}, {"type": "tcp", "ports": [22]}]
    assert template["rootfsSize"] == 60
    assert template["image"]
    missing = api.get("/template", templateId="nope")
    assert (missing.status_code, missing.json()["reason"]) == (400, "TEMPLATE_NOT_FOUND")


# -- create and lifecycle --------------------------------------------------------------------


def test_created_instance_walks_through_upstream_states_to_running(api):
    instance_id = api.create()
    seen = []
    api.wait_status(instance_id, "running", seen)
    # Polling can miss a short state, but the order must follow upstream.
    order = ["pending", "toCreate", "creating", "pulling", "running"]
    assert seen == [s for s in order if s in seen]


def test_get_instance_has_upstream_shape(api):
    instance_id = api.create()
    api.wait_status(instance_id, "running")
    view = api.get("/gpu/instance", instanceId=instance_id).json()
    assert view["id"] == instance_id
    assert view["name"] == "test-box"
    assert (view["clusterId"], view["clusterName"]) == ("cn-hongkong-1", "CN-HK-01")
    assert (view["cpuNum"], view["memory"], view["gpuNum"]) == ("16", "62", "1")
    assert view["envs"] == [{"key": "A", "value": "1"}]
    assert {m["port"]: m["type"] for m in view["portMappings"]} == {8888: "http", 22: "tcp"}
    assert all(m["endpoint"] for m in view["portMappings"])
    assert view["connectComponentSSH"]["password"]
    assert view["connectComponentSSH"]["isRunning"] is True
    assert view["statusError"] == {"state": "", "message": ""}


def test_stop_then_start_cycles_through_exited(api, sb):
    instance_id = api.create()
    api.wait_status(instance_id, "running")
    slow_down(sb)
    assert api.post("/gpu/instance/stop", {"instanceId": instance_id}).json() == {}
    seen = []
    api.wait_status(instance_id, "exited", seen)
    assert seen[0] in ("toStop", "stopping")
    api.post("/gpu/instance/start", {"instanceId": instance_id})
    seen = []
    api.wait_status(instance_id, "running", seen)
    assert seen[0] in ("toStart", "starting")


def test_restart_returns_to_running(api, sb):
    instance_id = api.create()
    api.wait_status(instance_id, "running")
    slow_down(sb)
    assert api.post("/gpu/instance/restart", {"instanceId": instance_id}).status_code == 200
    assert api.status(instance_id) in ("toRestart", "restarting")
    api.wait_status(instance_id, "running")


def test_action_in_the_wrong_state_is_rejected(api):
    instance_id = api.create()
    api.wait_status(instance_id, "running")
    resp = api.post("/gpu/instance/start", {"instanceId": instance_id})
    assert (resp.status_code, resp.json()["reason"]) == (400, "DEPENDENT_RESOURCE_STATE")
    api.post("/gpu/instance/stop", {"instanceId": instance_id})
    api.wait_status(instance_id, "exited")
    resp = api.post("/gpu/instance/stop", {"instanceId": instance_id})
    assert (resp.status_code, resp.json()["reason"]) == (400, "DEPENDENT_RESOURCE_STATE")


def test_deleted_instance_is_removed_then_not_found(api, sb):
    instance_id = api.create()
    api.wait_status(instance_id, "running")
    slow_down(sb)  # "removed" lasts a single step before the instance vanishes
    api.post("/gpu/instance/delete", {"instanceId": instance_id})
    api.wait_status(instance_id, "removed")

    def gone():
        resp = api.get("/gpu/instance", instanceId=instance_id)
        return resp.status_code == 400 and resp.json()["reason"] == "RESOURCE_NOT_FOUND"

    wait_until(gone, "the removed instance to disappear")
    assert sb.get(instance_id) is None
    assert api.get("/gpu/instances").json()["total"] == 0


@pytest.mark.parametrize(
    "overrides",
    [
        {"productId": None},
        {"gpuNum": 0},
        {"gpuNum": 9},
        {"gpuNum": "1"},
        {"imageUrl": ""},
        {"kind": None},
        {"ports": "8888"},
        {"ports": "2222/tcp"},
        {"ports": [{"port": 22, "type": "tcp"}]},
        {"envs": "A=1"},
    ],
)
def test_invalid_create_body_is_rejected_with_validator_param(api, overrides):
    body = {k: v for k, v in {**CREATE_BODY, **overrides}.items() if v is not None}
    resp = api.post("/gpu/instance/create", body)
    assert resp.status_code == 400
    assert resp.json()["reason"] == "VALIDATOR_PARAM"


def test_non_json_create_body_is_rejected(api, sb):
    resp = api.session.post(
        f"{sb.api_base_url}/v1/gpu/instance/create", data=b"{not json", timeout=TIMEOUT
    )
    assert (resp.status_code, resp.json()["reason"]) == (400, "VALIDATOR_PARAM")


@pytest.mark.parametrize("product_id", ["h100.24c.200g", "no-such-product"])
def test_undeployable_or_unknown_product_is_rejected(api, product_id):
    resp = api.post("/gpu/instance/create", {**CREATE_BODY, "productId": product_id})
    assert (resp.status_code, resp.json()["reason"]) == (400, "INSUFFICIENT_RESOURCE")


def test_failed_instance_carries_status_error(api, sb):
    instance_id = api.create()
    sb.fail_instance(instance_id, "image not found")
    view = api.get("/gpu/instance", instanceId=instance_id).json()
    assert view["status"] == "exited"
    assert view["statusError"]["message"] == "image not found"


# -- listing ---------------------------------------------------------------------------------


def test_instance_list_paginates_from_page_zero_by_default_with_total(api):
    ids = {api.create(name=f"box-{i}") for i in range(5)}
    first = api.get("/gpu/instances", pageSize=2, pageNum=0).json()
    second = api.get("/gpu/instances", pageSize=2, pageNum=1).json()
    third = api.get("/gpu/instances", pageSize=2, pageNum=2).json()
    assert first["total"] == second["total"] == third["total"] == 5
    pages = [first, second, third]
    assert [len(p["instances"]) for p in pages] == [2, 2, 1]
    assert {i["id"] for p in pages for i in p["instances"]} == ids
    item = first["instances"][0]
    assert {"productId", "productName", "rootfsSize", "spotStatus", "spotReclaimTime"} <= set(item)
    # List entries carry port and type only; endpoints come from get-instance.
    assert all(set(m) == {"port", "type"} for m in item["portMappings"])


def test_instance_list_filters_by_name_and_status(api):
    keep = api.create(name="alpha-1")
    other = api.create(name="beta-1")
    api.wait_status(keep, "running")
    api.wait_status(other, "running")
    api.post("/gpu/instance/stop", {"instanceId": other})
    api.wait_status(other, "exited")
    by_name = api.get("/gpu/instances", name="alpha").json()
    assert [i["id"] for i in by_name["instances"]] == [keep]
    exited = api.get("/gpu/instances", status="exited").json()
    assert (exited["total"], exited["instances"][0]["id"]) == (1, other)


def test_seeding_ten_thousand_instances_still_lists_in_pages(api, sb):
    ids = sb.seed_instances(10_000)
    assert len(set(ids)) == 10_000
    seen = set()
    for page in (0, 1, 99):
        body = api.get("/gpu/instances", pageSize=100, pageNum=page).json()
        assert body["total"] == 10_000
        assert len(body["instances"]) == 100
        seen.update(i["id"] for i in body["instances"])
    assert len(seen) == 300
    assert api.get("/gpu/instances", status="running", pageSize=1).json()["total"] == 10_000
    # Seeded instances are real instances: they can be stopped like any other.
    api.post("/gpu/instance/stop", {"instanceId": ids[0]})
    api.wait_status(ids[0], "exited")


# -- ports -----------------------------------------------------------------------------------


def http_url(endpoint):
    """Sandbox http endpoints come with or without a scheme, always on loopback."""
    url = endpoint if "://" in endpoint else f"http://{endpoint}"
    assert url.startswith("http://127.0.0.1:"), endpoint
    return url


def test_http_port_answers_like_novitas_edge_502_until_running(api, sb):
    slow_down(sb)
    instance_id = api.create()
    url = http_url(endpoint_of(api.get("/gpu/instance", instanceId=instance_id).json(), 8888))
    assert requests.get(url, timeout=TIMEOUT).status_code == 502  # edge up, service not yet
    api.wait_status(instance_id, "running")
    assert requests.get(url, timeout=TIMEOUT).status_code == 200
    api.post("/gpu/instance/stop", {"instanceId": instance_id})
    assert requests.get(url, timeout=TIMEOUT).status_code == 502


def test_http_endpoints_come_in_each_accepted_form(api):
    forms = set()
    for _ in range(12):
        view = api.get("/gpu/instance", instanceId=api.create(ports="8888/http,7860/http")).json()
        for mapping in view["portMappings"]:
            endpoint = mapping["endpoint"]
            http_url(endpoint)
            forms.add(("://" in endpoint, endpoint.endswith("/")))
    assert forms == {(True, False), (False, False), (True, True)}


def test_http_port_over_the_listener_cap_is_served_by_path(api, sb):
    sb.max_tcp_listeners = 0
    instance_id = api.create()
    url = endpoint_of(api.get("/gpu/instance", instanceId=instance_id).json(), 8888)
    assert url.startswith(f"{sb.base_url}/_sandbox/ports/{instance_id}/8888")
    api.wait_status(instance_id, "running")
    assert requests.get(url, timeout=TIMEOUT).status_code == 200


def test_tcp_port_accepts_connections_only_while_running(api):
    instance_id = api.create()
    api.wait_status(instance_id, "running")
    endpoint = endpoint_of(api.get("/gpu/instance", instanceId=instance_id).json(), 22)
    assert tcp_accepts(endpoint)
    api.post("/gpu/instance/stop", {"instanceId": instance_id})
    assert not tcp_accepts(endpoint)
    api.wait_status(instance_id, "exited")
    assert not tcp_accepts(endpoint)
    api.post("/gpu/instance/start", {"instanceId": instance_id})
    api.wait_status(instance_id, "running")
    endpoint = endpoint_of(api.get("/gpu/instance", instanceId=instance_id).json(), 22)
    assert tcp_accepts(endpoint)


def test_tcp_listener_opens_without_anyone_polling(api, sb):
    instance_id = api.create()
    # The sandbox flips listeners in the background; read its view only after it settled.
    time.sleep(STEP * 5)
    endpoint = endpoint_of(sb.get(instance_id), 22)
    wait_until(lambda: tcp_accepts(endpoint), "the tcp listener to open")


def test_tcp_listeners_beyond_the_cap_share_the_sandbox_port(api):
    # The cap counts every listener: the first instance's http and tcp ports take both.
    with Sandbox(api_key=KEY, step_seconds=STEP, max_tcp_listeners=2).serve() as small:
        headers = {"Authorization": f"Bearer {KEY}"}
        url = f"{small.api_base_url}/v1/gpu/instance/create"
        first = requests.post(url, json=CREATE_BODY, headers=headers, timeout=TIMEOUT).json()
        second = requests.post(url, json=CREATE_BODY, headers=headers, timeout=TIMEOUT).json()
        assert endpoint_of(small.get(first["id"]), 22) != f"127.0.0.1:{small.port}"
        assert endpoint_of(small.get(second["id"]), 22) == f"127.0.0.1:{small.port}"


# -- faults ----------------------------------------------------------------------------------


def test_fault_with_count_fails_that_many_calls_then_expires(api, sb):
    sb.set_fault(path="/gpu/instance/create", status=500, reason="UNKNOWN", count=2)
    for _ in range(2):
        resp = api.post("/gpu/instance/create", CREATE_BODY)
        assert resp.status_code == 500
        assert resp.json() == {
            "code": 500,
            "reason": "UNKNOWN",
            "message": "injected fault",
            "metadata": {},
        }
    assert api.get("/clusters").status_code == 200  # other paths are untouched
    assert api.post("/gpu/instance/create", CREATE_BODY).status_code == 200
    assert sb.faults() == []


def test_rate_limit_fault_sends_retry_after(api, sb):
    sb.set_fault(status=429)
    resp = api.get("/products")
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "1"
    assert resp.json()["reason"] == "RATE_LIMIT_EXCEEDED"
    sb.clear_faults()
    assert api.get("/products").status_code == 200


def test_latency_only_fault_delays_then_answers_normally(api, sb):
    sb.set_fault(path="/clusters", latency_ms=300, count=1)
    started = time.monotonic()
    resp = api.get("/clusters")
    assert resp.status_code == 200
    assert time.monotonic() - started >= 0.3
    with pytest.raises(requests.Timeout):
        sb.set_fault(path="/clusters", latency_ms=1500, count=1)
        api.session.get(f"{api.base}/clusters", timeout=0.3)


def test_down_fault_drops_the_connection(api, sb):
    sb.set_fault(path="/gpu/instances", down=True, count=1)
    with pytest.raises(requests.ConnectionError):
        api.get("/gpu/instances")
    assert api.get("/gpu/instances").status_code == 200


def test_partial_error_rate_fails_some_calls(api):
    with Sandbox(api_key=KEY, step_seconds=STEP, seed=3).serve() as flaky:
        flaky.set_fault(status=503, error_rate=0.5)
        codes = [
            requests.get(
                f"{flaky.api_base_url}/v1/clusters",
                headers={"Authorization": f"Bearer {KEY}"},
                timeout=TIMEOUT,
            ).status_code
            for _ in range(40)
        ]
        assert set(codes) == {200, 503}


def test_faults_can_be_set_and_cleared_over_http(api, sb):
    control = f"{sb.base_url}/_sandbox/faults"
    resp = requests.post(control, json={"path": "/clusters", "status": 502}, timeout=TIMEOUT)
    assert resp.status_code == 200
    assert api.get("/clusters").status_code == 502
    assert requests.delete(control, timeout=TIMEOUT).status_code == 200
    assert api.get("/clusters").status_code == 200


# -- call recording --------------------------------------------------------------------------


def test_calls_are_recorded_with_status_and_counted_per_path(api, sb):
    api.get("/clusters")
    api.get("/clusters")
    api.post("/gpu/instance/create", {"productId": "x"})
    assert sb.call_count() == 3
    assert sb.call_count("/clusters") == 2
    assert sb.call_count("/gpu/instance/create", method="POST") == 1
    calls = sb.calls("/gpu/instance/create")
    assert [(c["method"], c["path"], c["status"]) for c in calls] == [
        ("POST", "/gpu/instance/create", 400)
    ]
    summary = requests.get(f"{sb.base_url}/_sandbox/calls", timeout=TIMEOUT).json()
    assert summary["total"] == 3
    assert summary["byPath"] == {"/clusters": 2, "/gpu/instance/create": 1}
    assert len(summary["recent"]) == 3
    requests.delete(f"{sb.base_url}/_sandbox/calls", timeout=TIMEOUT)
    assert sb.call_count() == 0


def test_control_and_port_endpoints_are_not_recorded_as_api_calls(api, sb):
    requests.get(f"{sb.base_url}/_sandbox/health", timeout=TIMEOUT)
    requests.get(f"{sb.base_url}/_sandbox/calls", timeout=TIMEOUT)
    assert sb.call_count() == 0


# -- spot, migrate, control --------------------------------------------------------------------


def test_spot_reclaim_leaves_instance_exited_and_terminated(api, sb):
    instance_id = api.create(billingMode="spot")
    api.wait_status(instance_id, "running")
    item = api.get("/gpu/instances").json()["instances"][0]
    assert (item["spotStatus"], item["spotReclaimTime"]) == ("running", "0")

    resp = requests.post(f"{sb.base_url}/_sandbox/instances/{instance_id}/reclaim", timeout=TIMEOUT)
    assert resp.status_code == 200
    item = api.get("/gpu/instances").json()["instances"][0]
    assert item["status"] == "exited"
    assert item["spotStatus"] == "terminated"
    assert item["spotReclaimTime"] != "0" and int(item["spotReclaimTime"]) > 0


def test_spot_notice_shows_notified_while_still_running_then_reclaim(api, sb):
    instance_id = api.create(billingMode="spot")
    api.wait_status(instance_id, "running")
    control = f"{sb.base_url}/_sandbox/instances/{instance_id}"
    assert requests.post(f"{control}/notify", timeout=TIMEOUT).status_code == 200
    item = api.get("/gpu/instances").json()["instances"][0]
    assert (item["status"], item["spotStatus"]) == ("running", "notified")
    requests.post(f"{control}/reclaim", timeout=TIMEOUT)
    item = api.get("/gpu/instances").json()["instances"][0]
    assert (item["status"], item["spotStatus"]) == ("exited", "terminated")
    api.post("/gpu/instance/start", {"instanceId": instance_id})
    api.wait_status(instance_id, "running")
    assert api.get("/gpu/instances").json()["instances"][0]["spotStatus"] == "running"


def test_reclaiming_an_on_demand_instance_is_refused(api, sb):
    instance_id = api.create()
    resp = requests.post(f"{sb.base_url}/_sandbox/instances/{instance_id}/reclaim", timeout=TIMEOUT)
    assert resp.status_code == 400


def test_migrate_runs_an_instance_migrate_job_to_success(api, sb):
    instance_id = api.create(billingMode="spot")
    api.wait_status(instance_id, "running")
    sb.reclaim_spot(instance_id)
    slow_down(sb)
    assert api.post("/gpu/instance/migrate", {"instanceId": instance_id}).status_code == 200
    assert api.status(instance_id) == "migrating"

    def job():
        jobs = api.get("/jobs", type="instanceMigrate", instanceId=instance_id).json()
        assert jobs["total"] == 1
        return jobs["jobs"][0]

    first = job()
    assert first["Id"] and first["type"] == "instanceMigrate"
    assert first["instanceId"] == instance_id
    assert first["state"]["state"] in ("pulling", "running")
    # While it runs, get-instance lists it among the instance's jobs; once done, no more.
    view = api.get("/gpu/instance", instanceId=instance_id).json()
    assert view["jobs"] == [{"id": first["Id"], "type": "instanceMigrate"}]
    wait_until(lambda: job()["state"]["state"] == "success", "the migrate job to succeed")
    assert api.get("/gpu/instance", instanceId=instance_id).json()["jobs"] == []
    api.wait_status(instance_id, "running")
    assert api.get("/jobs", state="success").json()["total"] == 1
    assert api.get("/jobs", type="saveImage").json()["total"] == 0


def test_seed_reset_and_config_over_http(api, sb):
    control = f"{sb.base_url}/_sandbox"
    seeded = requests.post(f"{control}/seed", json={"count": 3, "status": "exited"}, timeout=3)
    assert seeded.json()["count"] == 3
    assert api.get("/gpu/instances", status="exited").json()["total"] == 3
    resp = requests.post(f"{control}/config", json={"stepSeconds": 0.01}, timeout=TIMEOUT)
    assert resp.json()["stepSeconds"] == 0.01
    assert requests.post(f"{control}/reset", timeout=TIMEOUT).status_code == 200
    assert api.get("/gpu/instances").json()["total"] == 0


def test_zero_step_makes_transitions_immediate(api, sb):
    sb.configure(step_seconds=0)
    instance_id = api.create()
    assert api.status(instance_id) == "running"


# -- management command --------------------------------------------------------------------


def test_management_command_prints_base_url_and_serves():
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "DEBUG": "1", "DJANGO_SETTINGS_MODULE": "novita_gateway.settings"}
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "novita_sandbox", "--port", "0", "--seed-instances", "2"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:"), base_url
        resp = requests.get(
            f"{base_url}/gpu-instance/openapi/v1/gpu/instances",
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=TIMEOUT,
        )
        assert resp.json()["total"] == 2
    finally:
        proc.terminate()
        proc.wait(timeout=10)
