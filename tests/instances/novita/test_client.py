"""NovitaClient against a mocked upstream (responses): parsing, error mapping, retries, breaker."""

import json
import logging
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
import requests
import responses
from responses import matchers

from instances.novita import client as client_module
from instances.novita.client import NovitaClient, get_client, reset_client
from instances.novita.errors import (
    NovitaCircuitOpenError,
    NovitaMisconfiguredError,
    NovitaNotConfiguredError,
    NovitaNotFoundError,
    NovitaPermanentError,
    NovitaRateLimitedError,
    NovitaTimeoutError,
    NovitaTransientError,
)
from instances.novita.schemas import PortMapping

BASE = "https://novita.test/gpu-instance/openapi"
V1 = BASE + "/v1"
KEY = "sk-test-secret-key-123456"


@pytest.fixture
def mocked():
    with responses.RequestsMock() as rsps:
        yield rsps


@pytest.fixture
def no_sleep():
    with mock.patch("instances.novita.client.time.sleep") as sleep:
        yield sleep


def make_client(**kwargs):
    kwargs.setdefault("read_retries", 0)
    return NovitaClient(BASE, KEY, **kwargs)


INSTANCE_JSON = {
    "id": "ins-1",
    "name": "my-box",
    "clusterId": "c-hk",
    "clusterName": "CN-HK-01",
    "productId": "p-4090",
    "productName": "RTX 4090 24GB",
    "imageUrl": "pytorch/pytorch:latest",
    "cpuNum": "16",
    "memory": "62",
    "gpuNum": "1",
    "rootfsSize": 60,
    "status": "running",
    "statusError": {"state": "", "message": ""},
    "portMappings": [
        {"port": 8888, "endpoint": "https://ins-1-8888.proxy.test", "type": "http"},
        {"port": "22", "endpoint": "", "type": "tcp"},
    ],
    "connectComponentSSH": {
        "sshCommand": "ssh root@ins-1.test -p 30022",
        "password": "hunter2-ssh",
        "isRunning": True,
    },
    "connectComponentWebTerminal": {
        "address": "https://term.test/ins-1",
        "username": "root",
        "password": "hunter2-term",
        "isRunning": True,
    },
    "connectComponentJupyter": {"port": 8888, "address": "https://jup.test/ins-1"},
    "sshPassword": "hunter2-old",
    "billingMode": "spot",
    "spotStatus": "running",
    "spotReclaimTime": "0",
    "createdAt": "1713162260",
}


# --- request shape --------------------------------------------------------------------------


def test_sends_bearer_auth_json_content_type_and_timeout_tuple(mocked):
    mocked.get(V1 + "/clusters", json={"data": []})
    client = make_client(connect_timeout=1.5, read_timeout=7)

    client.list_clusters()

    request = mocked.calls[0].request
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.req_kwargs["timeout"] == (1.5, 7.0)


def test_every_operation_passes_a_connect_read_timeout_tuple(mocked):
    mocked.get(V1 + "/clusters", json={"data": []})
    mocked.get(V1 + "/products", json={"data": []})
    mocked.get(V1 + "/templates", json={"template": [], "total": 0})
    mocked.get(V1 + "/template", json={"template": {"Id": "t"}})
    mocked.get(V1 + "/gpu/instance", json={"id": "i"})
    mocked.get(V1 + "/gpu/instances", json={"instances": [], "total": 0})
    mocked.get(V1 + "/jobs", json={"jobs": [], "total": 0})
    mocked.post(V1 + "/gpu/instance/create", json={"id": "i"})
    for action in ("start", "stop", "delete", "migrate"):
        mocked.post(V1 + f"/gpu/instance/{action}", json={})
    client = make_client(connect_timeout=2, read_timeout=9)

    client.list_clusters()
    client.list_products()
    client.list_templates()
    client.get_template("t")
    client.get_instance("i")
    client.list_instances()
    client.list_jobs()
    client.create_instance(name="x", product_id="p", gpu_num=1, rootfs_size=20, image_url="img")
    client.start_instance("i")
    client.stop_instance("i")
    client.delete_instance("i")
    client.migrate_instance("i")

    # 12 calls, the three empty listings checking page 1 after an empty page 0.
    assert len(mocked.calls) == 15
    assert {call.request.req_kwargs["timeout"] for call in mocked.calls} == {(2.0, 9.0)}


def test_base_url_with_trailing_v1_is_accepted(mocked):
    mocked.get(V1 + "/clusters", json={"data": []})
    NovitaClient(BASE + "/v1/", KEY).list_clusters()
    assert mocked.calls[0].request.url == V1 + "/clusters"


def test_missing_base_url_raises_not_configured_without_http(mocked):
    client = NovitaClient("", KEY)
    with pytest.raises(NovitaNotConfiguredError):
        client.list_clusters()
    assert len(mocked.calls) == 0


def test_missing_api_key_raises_not_configured_without_http(mocked):
    with pytest.raises(NovitaNotConfiguredError):
        NovitaClient(BASE, "").get_instance("i")
    assert len(mocked.calls) == 0


# --- parsing --------------------------------------------------------------------------------


def test_list_clusters_parses_clusters(mocked):
    mocked.get(
        V1 + "/clusters",
        json={
            "data": [
                {
                    "id": "c-1",
                    "name": "US-CA-06 (California)",
                    "availableGpuType": ["RTX 4090 24GB"],
                    "supportNetworkStorage": True,
                    "supportInstanceNetwork": "false",
                }
            ]
        },
    )
    [cluster] = make_client().list_clusters()
    assert cluster.id == "c-1"
    assert cluster.name == "US-CA-06 (California)"
    assert cluster.available_gpu_types == ["RTX 4090 24GB"]
    assert cluster.support_network_storage is True
    assert cluster.support_instance_network is False


def test_list_products_sends_filters_and_parses_numbers_from_strings(mocked):
    mocked.get(
        V1 + "/products",
        match=[
            matchers.query_param_matcher(
                {
                    "clusterId": "c-1",
                    "gpuNum": "2",
                    "productName": "4090",
                    "billingMethod": "spot",
                }
            )
        ],
        json={
            "data": [
                {
                    "id": "p-1",
                    "name": "RTX 4090 24GB",
                    "cpuPerGpu": "16",
                    "memoryPerGpu": 62,
                    "diskPerGpu": "",
                    "availableDeploy": True,
                    "minRootFS": "10",
                    "maxRootFS": 500,
                    "regions": ["US-CA-06 (California)"],
                    "price": "35000",
                    "spotPrice": "17500",
                    "billingMethods": ["onDemand", "spot"],
                    "inventoryState": "low",
                }
            ]
        },
    )
    [product] = make_client().list_products(
        cluster_id="c-1", gpu_num=2, product_name="4090", billing_method="spot"
    )
    assert product.id == "p-1"
    assert product.cpu_per_gpu == 16
    assert product.memory_per_gpu == 62
    assert product.disk_per_gpu is None
    assert product.min_rootfs == 10
    assert product.price == 35000
    assert product.spot_price == 17500.0
    assert product.available_deploy is True
    assert product.regions == ["US-CA-06 (California)"]


def test_get_instance_parses_strings_empty_values_and_capital_id(mocked):
    body = dict(INSTANCE_JSON)
    del body["id"]
    body["Id"] = "ins-1"
    mocked.get(
        V1 + "/gpu/instance",
        match=[matchers.query_param_matcher({"instanceId": "ins-1"})],
        json=body,
    )
    instance = make_client().get_instance("ins-1")

    assert instance.id == "ins-1"
    assert instance.status == "running"
    assert instance.status_error is None
    assert (instance.cpu_num, instance.memory, instance.gpu_num) == (16, 62, 1)
    assert instance.rootfs_size == 60
    assert instance.port_mappings == [
        PortMapping(port=8888, endpoint="https://ins-1-8888.proxy.test", type="http"),
        PortMapping(port=22, endpoint=None, type="tcp"),
    ]
    assert instance.ssh_command == "ssh root@ins-1.test -p 30022"
    assert instance.jupyter_address == "https://jup.test/ins-1"
    assert instance.web_terminal_address == "https://term.test/ins-1"
    assert instance.billing_mode == "spot"
    assert instance.spot_status == "running"
    assert instance.spot_reclaim_time is None
    assert instance.created_at == datetime.fromtimestamp(1713162260, tz=UTC)


def test_instance_keeps_no_passwords(mocked):
    mocked.get(V1 + "/gpu/instance", json=INSTANCE_JSON)
    instance = make_client().get_instance("ins-1")
    assert "hunter2" not in repr(instance)
    assert not any(hasattr(instance, name) for name in ("password", "ssh_password"))


def test_instance_keeps_unknown_status_and_reports_status_error(mocked):
    mocked.get(
        V1 + "/gpu/instance",
        json={
            "id": "i",
            "status": "teleporting",
            "statusError": {"state": "failed", "message": "image pull failed"},
            "spotReclaimTime": "1713162999",
            "createdAt": "",
            "cpuNum": "not-a-number",
        },
    )
    instance = make_client().get_instance("i")
    assert instance.status == "teleporting"
    assert instance.status_error == "image pull failed"
    assert instance.spot_reclaim_time == 1713162999
    assert instance.created_at is None
    assert instance.cpu_num is None
    assert instance.port_mappings == []


def test_get_instance_with_non_object_body_is_permanent(mocked):
    mocked.get(V1 + "/gpu/instance", json=["not", "an", "object"])
    with pytest.raises(NovitaPermanentError):
        make_client().get_instance("i")


def test_get_template_unwraps_and_flattens_ports(mocked):
    mocked.get(
        V1 + "/template",
        match=[matchers.query_param_matcher({"templateId": "tpl-1"})],
        json={
            "template": {
                "Id": "tpl-1",
                "name": "PyTorch",
                "image": "pytorch/pytorch:2",
                "imageAuth": "",
                "startCommand": "jupyter lab",
                "entrypoint": "",
                "rootfsSize": "50",
                "ports": [
                    {"type": "http", "ports": [8888, "6006"]},
                    {"type": "tcp", "ports": [22]},
                ],
                "envs": [{"key": "A", "value": "1"}, {"key": "", "value": "dropped"}],
                "createdAt": "1713162260",
            }
        },
    )
    template = make_client().get_template("tpl-1")
    assert template.id == "tpl-1"
    assert template.image == "pytorch/pytorch:2"
    assert template.image_auth_id is None
    assert template.start_command == "jupyter lab"
    assert template.entrypoint is None
    assert template.rootfs_size == 50
    assert [(p.port, p.type) for p in template.ports] == [
        (8888, "http"),
        (6006, "http"),
        (22, "tcp"),
    ]
    assert template.envs == [{"key": "A", "value": "1"}]


def test_list_templates_fetches_every_page(mocked):
    for page_num, ids in ((0, ["a", "b"]), (1, ["c"])):
        mocked.get(
            V1 + "/templates",
            match=[
                matchers.query_param_matcher(
                    {"pageSize": "2", "pageNum": str(page_num), "channel": "private"}
                )
            ],
            json={"template": [{"Id": i} for i in ids], "total": 3},
        )
    templates = make_client().list_templates(channel="private", page_size=2)
    assert [t.id for t in templates] == ["a", "b", "c"]


def test_create_instance_returns_id_and_sends_camel_case_body(mocked):
    mocked.post(V1 + "/gpu/instance/create", json={"id": "ins-9"})
    instance_id = make_client().create_instance(
        name="box",
        product_id="p-1",
        gpu_num=1,
        rootfs_size=60,
        image_url="img:1",
        ports="8888/http,22/tcp",
        envs=[{"key": "A", "value": "1"}],
        clusterId="c-1",
        entrypoint=None,
    )
    assert instance_id == "ins-9"
    sent = json.loads(mocked.calls[0].request.body)
    assert sent == {
        "name": "box",
        "productId": "p-1",
        "gpuNum": 1,
        "rootfsSize": 60,
        "imageUrl": "img:1",
        "ports": "8888/http,22/tcp",
        "envs": [{"key": "A", "value": "1"}],
        "clusterId": "c-1",
        "kind": "gpu",
    }


def test_create_instance_accepts_capital_id(mocked):
    mocked.post(V1 + "/gpu/instance/create", json={"Id": "ins-cap"})
    assert make_client().create_instance(name="x") == "ins-cap"


def test_create_instance_without_id_in_answer_is_permanent(mocked):
    mocked.post(V1 + "/gpu/instance/create", json={})
    with pytest.raises(NovitaPermanentError, match="may still exist"):
        make_client().create_instance(name="x")


@pytest.mark.parametrize("action", ["start", "stop", "delete"])
def test_instance_actions_post_the_instance_id(mocked, action):
    # Upstream answers these with an empty body or {}.
    mocked.post(
        V1 + f"/gpu/instance/{action}",
        body="",
        match=[matchers.json_params_matcher({"instanceId": "ins-1"})],
    )
    result = getattr(make_client(), f"{action}_instance")("ins-1")
    assert result is None
    assert mocked.calls[0].request.method == "POST"


def test_migrate_posts_instance_id_and_reads_optional_ids(mocked):
    mocked.post(
        V1 + "/gpu/instance/migrate",
        match=[matchers.json_params_matcher({"instanceId": "ins-1"})],
        json={"newInstanceId": "ins-2", "jobId": "job-7"},
    )
    result = make_client().migrate_instance("ins-1")
    assert (result.instance_id, result.job_id) == ("ins-2", "job-7")


def test_migrate_with_empty_answer_returns_empty_result(mocked):
    mocked.post(V1 + "/gpu/instance/migrate", json={})
    result = make_client().migrate_instance("ins-1")
    assert (result.instance_id, result.job_id) == (None, None)


# --- pagination -----------------------------------------------------------------------------


def _instances_page(mocked, page_num, ids, total, page_size=2, **extra):
    mocked.get(
        V1 + "/gpu/instances",
        match=[
            matchers.query_param_matcher(
                {"pageSize": str(page_size), "pageNum": str(page_num), **extra}
            )
        ],
        json={"instances": [{"id": i, "status": "running"} for i in ids], "total": total},
    )


def test_list_instances_fetches_pages_from_0_until_total(mocked):
    _instances_page(mocked, 0, ["a", "b"], 5, status="running")
    _instances_page(mocked, 1, ["c", "d"], 5, status="running")
    _instances_page(mocked, 2, ["e"], 5, status="running")

    instances = make_client().list_instances(status="running", page_size=2)

    assert [i.id for i in instances] == ["a", "b", "c", "d", "e"]
    assert len(mocked.calls) == 3


def test_list_instances_stops_at_an_empty_page_when_total_is_missing(mocked):
    mocked.get(
        V1 + "/gpu/instances",
        match=[matchers.query_param_matcher({"pageSize": "2", "pageNum": "0"})],
        json={"instances": [{"id": "a"}, {"id": "b"}]},
    )
    mocked.get(
        V1 + "/gpu/instances",
        match=[matchers.query_param_matcher({"pageSize": "2", "pageNum": "1"})],
        json={"instances": []},
    )
    assert [i.id for i in make_client().list_instances(page_size=2)] == ["a", "b"]
    assert len(mocked.calls) == 2


def test_list_instances_drops_duplicates_across_shifting_pages(mocked):
    _instances_page(mocked, 0, ["a", "b"], 3)
    _instances_page(mocked, 1, ["b", "c"], 3)
    assert [i.id for i in make_client().list_instances(page_size=2)] == ["a", "b", "c"]


def test_listing_without_the_list_field_is_empty(mocked):
    # Upstream may omit empty fields entirely.
    mocked.get(V1 + "/gpu/instances", json={"total": 0})
    assert make_client().list_instances() == []


def test_listing_with_a_body_that_is_not_an_object_is_permanent(mocked):
    # Reading garbage as "no instances" could make a reconcile think everything was deleted.
    mocked.get(V1 + "/gpu/instances", json="maintenance")
    with pytest.raises(NovitaPermanentError):
        make_client().list_instances()


def test_iter_instance_pages_yields_one_page_per_request(mocked):
    _instances_page(mocked, 0, ["a", "b"], 3)
    _instances_page(mocked, 1, ["c"], 3)

    pages = list(make_client().iter_instance_pages(page_size=2))

    assert len(pages) == len(mocked.calls) == 2
    assert [p.page_num for p in pages] == [0, 1]
    assert [p.complete for p in pages] == [False, True]
    assert pages[0].total == 3
    assert [i.id for i in pages[1]] == ["c"]


def test_read_ahead_yields_every_page_in_order_as_raw_items(mocked):
    _instances_page(mocked, 0, ["a", "b"], 5)
    _instances_page(mocked, 1, ["c", "d"], 5)
    _instances_page(mocked, 2, ["e"], 5)

    reader = make_client().iter_instance_pages(page_size=2, raw=True, read_ahead=True)

    assert [[item["id"] for item in page] for page in reader] == [["a", "b"], ["c", "d"], ["e"]]
    assert len(mocked.calls) == 3


def test_read_ahead_raises_a_failed_page_in_the_callers_thread(mocked):
    _instances_page(mocked, 0, ["a", "b"], 5)
    mocked.get(
        V1 + "/gpu/instances",
        match=[matchers.query_param_matcher({"pageSize": "2", "pageNum": "1"})],
        json={"reason": "INTERNAL"},
        status=500,
    )

    reader = make_client().iter_instance_pages(page_size=2, raw=True, read_ahead=True)

    assert [item["id"] for item in next(reader)] == ["a", "b"]
    with pytest.raises(NovitaTransientError):
        next(reader)


def test_read_ahead_stops_requesting_pages_once_closed(mocked):
    fetched = threading.Event()
    release = threading.Event()

    def slow_page(request):
        fetched.set()
        release.wait(5)
        page = request.params["pageNum"]
        return 200, {}, json.dumps({"instances": [{"id": f"i{page}"}], "total": 100})

    mocked.add_callback("GET", V1 + "/gpu/instances", callback=slow_page)
    reader = make_client().iter_instance_pages(page_size=1, raw=True, read_ahead=True)
    assert fetched.wait(5)  # the first page is requested before anyone asks for it

    reader.close()
    release.set()
    time.sleep(0.2)

    assert len(mocked.calls) == 1


def test_a_body_orjson_refuses_is_still_read(mocked):
    # The fast parser rejects NaN, which the standard one (and many servers) accept.
    mocked.get(
        V1 + "/gpu/instances",
        body='{"instances": [{"id": "a", "name": "box", "memory": NaN}], "total": 1}',
        content_type="application/json",
    )

    [instance] = make_client().list_instances()

    assert (instance.id, instance.name, instance.memory) == ("a", "box", None)


def test_a_netrc_entry_never_replaces_the_api_key(mocked, tmp_path, monkeypatch):
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine novita.test login someone password other-secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    _instances_page(mocked, 0, ["a"], 1)

    make_client().list_instances(page_size=2)

    assert mocked.calls[0].request.headers["Authorization"] == f"Bearer {KEY}"


def test_proxy_settings_from_the_environment_still_apply(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal.test:3128")
    monkeypatch.setenv("NO_PROXY", "")
    session = requests.Session()
    seen = {}

    def record(method, url, **kwargs):
        seen.update(kwargs)
        response = requests.Response()
        response.status_code, response._content = 200, b'{"instances": [], "total": 0}'
        return response

    session.request = record
    NovitaClient(BASE, KEY, session=session).list_instances()

    assert seen["proxies"] == {"https": "http://proxy.internal.test:3128"}


def test_list_jobs_paginates_and_filters_by_instance(mocked):
    job = {
        "Id": "j1",
        "type": "instanceMigrate",
        "state": {"state": "running", "error": "", "errorMessage": ""},
        "instanceId": "ins-1",
        "createdAt": "1713162260",
    }
    mocked.get(
        V1 + "/jobs",
        match=[
            matchers.query_param_matcher(
                {"pageSize": "2", "pageNum": "0", "type": "instanceMigrate"}
            )
        ],
        json={"jobs": [job, {**job, "Id": "j2", "instanceId": "ins-2"}], "total": 3},
    )
    mocked.get(
        V1 + "/jobs",
        match=[
            matchers.query_param_matcher(
                {"pageSize": "2", "pageNum": "1", "type": "instanceMigrate"}
            )
        ],
        json={
            "jobs": [
                {**job, "Id": "j3", "state": {"state": "fail", "errorMessage": "no capacity"}}
            ],
            "total": 3,
        },
    )
    jobs = make_client().list_jobs(type="instanceMigrate", instance_id="ins-1", page_size=2)
    assert [(j.id, j.state, j.error) for j in jobs] == [
        ("j1", "running", None),
        ("j3", "fail", "no capacity"),
    ]
    assert jobs[0].created_at == datetime.fromtimestamp(1713162260, tz=UTC)


def test_jobs_go_to_internal_api_only_when_base_and_key_are_both_set(mocked):
    internal = "https://internal.novita.test"
    mocked.get(internal + "/api/v1/jobs", json={"jobs": [], "total": 0})
    mocked.get(V1 + "/jobs", json={"jobs": [], "total": 0})

    make_client(internal_base_url=internal, internal_api_key="internal-key-xyz").list_jobs()
    make_client(internal_base_url=internal).list_jobs()
    make_client(internal_api_key="internal-key-xyz").list_jobs()

    # Each empty listing reads pages 0 and 1 (an empty page 0 may mean pages start at 1).
    urls = [c.request.url.split("?")[0] for c in mocked.calls]
    assert urls == [internal + "/api/v1/jobs"] * 2 + [V1 + "/jobs"] * 4
    assert mocked.calls[0].request.headers["Authorization"] == "Bearer internal-key-xyz"
    assert mocked.calls[2].request.headers["Authorization"] == f"Bearer {KEY}"


# --- error mapping --------------------------------------------------------------------------


def test_timeout_is_mapped_to_novita_timeout_error(mocked):
    mocked.get(V1 + "/gpu/instance", body=requests.exceptions.ReadTimeout("read timed out"))
    with pytest.raises(NovitaTimeoutError) as caught:
        make_client().get_instance("i")
    assert caught.value.transient
    assert caught.value.operation == "get_instance"


def test_connect_timeout_is_a_timeout_not_a_plain_connection_error(mocked):
    mocked.post(V1 + "/gpu/instance/stop", body=requests.exceptions.ConnectTimeout("slow"))
    with pytest.raises(NovitaTimeoutError):
        make_client().stop_instance("i")


def test_connection_error_is_transient(mocked):
    mocked.get(V1 + "/clusters", body=requests.exceptions.ConnectionError("refused"))
    with pytest.raises(NovitaTransientError) as caught:
        make_client().list_clusters()
    assert not isinstance(caught.value, NovitaTimeoutError)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_transient(mocked, status):
    mocked.get(V1 + "/clusters", status=status, json={"code": status, "reason": "UNKNOWN"})
    with pytest.raises(NovitaTransientError) as caught:
        make_client().list_clusters()
    assert caught.value.status_code == status
    assert caught.value.reason == "UNKNOWN"


def test_429_is_rate_limited_with_retry_after(mocked):
    mocked.post(
        V1 + "/gpu/instance/start",
        status=429,
        headers={"Retry-After": "7"},
        json={"code": 429, "reason": "RATE_LIMIT_EXCEEDED", "message": "slow down"},
    )
    with pytest.raises(NovitaRateLimitedError) as caught:
        make_client().start_instance("i")
    assert caught.value.retry_after == 7.0
    assert caught.value.reason == "RATE_LIMIT_EXCEEDED"


def test_404_without_json_is_a_misconfiguration_not_a_missing_instance(mocked):
    mocked.get(V1 + "/gpu/instance", status=404, body="page not found")
    with pytest.raises(NovitaMisconfiguredError):
        make_client().get_instance("i")


@pytest.mark.parametrize(
    "body",
    [
        {"code": 404, "reason": "API_NOT_FOUND", "message": "api not found"},
        {"code": 404, "message": "not found"},
        {"error": {"code": "NOT_FOUND", "message": "route"}},
    ],
)
def test_route_level_404_is_a_misconfiguration(mocked, body):
    mocked.get(V1 + "/gpu/instance", status=404, json=body)
    with pytest.raises(NovitaMisconfiguredError):
        make_client().get_instance("i")


def test_404_naming_the_missing_resource_is_not_found(mocked):
    mocked.get(
        V1 + "/gpu/instance",
        status=404,
        json={"code": 404, "reason": "RESOURCE_NOT_FOUND", "message": "instance not found"},
    )
    with pytest.raises(NovitaNotFoundError):
        make_client().get_instance("i")


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_are_misconfiguration_and_count_for_the_breaker(mocked, status):
    mocked.get(V1 + "/gpu/instance", status=status, json={"reason": "UNAUTHORIZED"})
    client = make_client(failure_threshold=2)
    for _ in range(2):
        with pytest.raises(NovitaMisconfiguredError):
            client.get_instance("i")
    assert client.breaker_state == "open"


def test_misconfiguration_is_not_retried_on_the_spot(mocked, no_sleep):
    mocked.get(V1 + "/gpu/instances", status=404, body="<html>nginx</html>")
    with pytest.raises(NovitaMisconfiguredError):
        make_client(read_retries=3).list_instances()
    assert len(mocked.calls) == 1


def test_html_page_with_200_is_a_misconfiguration(mocked):
    mocked.get(V1 + "/gpu/instances", status=200, body="<html>login</html>")
    with pytest.raises(NovitaMisconfiguredError):
        make_client().list_instances()


def test_listing_answered_by_an_object_with_no_list_is_a_misconfiguration(mocked):
    mocked.get(V1 + "/gpu/instances", json={"status": "ok", "service": "something else"})
    with pytest.raises(NovitaMisconfiguredError):
        make_client().list_instances()


def test_400_resource_not_found_is_not_found(mocked):
    mocked.get(
        V1 + "/gpu/instance",
        status=400,
        json={"code": 400, "reason": "RESOURCE_NOT_FOUND", "message": "container not found"},
    )
    with pytest.raises(NovitaNotFoundError) as caught:
        make_client().get_instance("i")
    assert caught.value.status_code == 400
    assert caught.value.message == "container not found"
    assert not caught.value.transient


def test_other_400_is_permanent_with_reason_and_message(mocked):
    mocked.post(
        V1 + "/gpu/instance/create",
        status=400,
        json={
            "code": 400,
            "reason": "INSUFFICIENT_RESOURCE",
            "message": "not enough GPUs",
            "metadata": {},
        },
    )
    with pytest.raises(NovitaPermanentError) as caught:
        make_client().create_instance(name="x")
    assert not isinstance(caught.value, NovitaNotFoundError)
    assert caught.value.reason == "INSUFFICIENT_RESOURCE"
    assert caught.value.message == "not enough GPUs"
    assert "INSUFFICIENT_RESOURCE" in caught.value.details()


def test_error_envelope_of_llm_apis_is_understood(mocked):
    mocked.get(
        V1 + "/clusters",
        status=401,
        json={"error": {"message": "invalid api key", "code": "UNAUTHORIZED"}},
    )
    with pytest.raises(NovitaMisconfiguredError) as caught:
        make_client().list_clusters()
    assert caught.value.reason == "UNAUTHORIZED"
    assert caught.value.message == "invalid api key"


def test_unparseable_error_body_falls_back_to_truncated_text(mocked):
    mocked.get(V1 + "/clusters", status=403, body="<html>" + "x" * 1000 + "</html>")
    with pytest.raises(NovitaMisconfiguredError) as caught:
        make_client().list_clusters()
    assert caught.value.message.startswith("<html>")
    assert len(caught.value.message) <= 300


def test_non_json_success_body_is_a_misconfiguration(mocked):
    mocked.get(V1 + "/clusters", body="<html>maintenance</html>")
    with pytest.raises(NovitaMisconfiguredError, match="not JSON"):
        make_client().list_clusters()


def test_secrets_never_reach_exception_text(mocked):
    mocked.get(
        V1 + "/gpu/instance",
        status=400,
        json={
            "reason": "REQUEST",
            "message": (
                f"bad header Authorization: Bearer {KEY}; password=hunter2 "
                '{"token": "tok-abc123"} api_key=' + KEY + " see https://root:pw123@reg.test/x"
                " JUPYTER_TOKEN=jt-999 sshPassword: sp-777"
            ),
        },
    )
    with pytest.raises(NovitaPermanentError) as caught:
        make_client().get_instance("i")
    text = f"{caught.value} {caught.value.details()} {caught.value.message!r}"
    for secret in (KEY, "hunter2", "tok-abc123", "pw123", "jt-999", "sp-777"):
        assert secret not in text
    assert "[redacted]" in text


def test_debug_log_names_operation_and_never_headers(mocked, caplog):
    mocked.get(V1 + "/clusters", json={"data": []})
    with caplog.at_level(logging.DEBUG, logger="instances.novita.client"):
        make_client().list_clusters()
    assert any("list_clusters" in r.getMessage() for r in caplog.records)
    assert KEY not in caplog.text
    assert "Authorization" not in caplog.text


# --- retries --------------------------------------------------------------------------------


def test_get_is_retried_on_5xx_then_succeeds(mocked, no_sleep):
    mocked.get(V1 + "/clusters", status=503)
    mocked.get(V1 + "/clusters", json={"data": [{"id": "c"}]})

    clusters = make_client(read_retries=2).list_clusters()

    assert [c.id for c in clusters] == ["c"]
    assert len(mocked.calls) == 2
    assert no_sleep.call_count == 1


def test_get_gives_up_after_the_configured_retries_with_growing_backoff(mocked, no_sleep):
    mocked.get(V1 + "/clusters", status=502)
    client = make_client(read_retries=2, retry_base_delay=0.1, retry_max_delay=1)
    with pytest.raises(NovitaTransientError):
        client.list_clusters()
    assert len(mocked.calls) == 3
    first, second = (c.args[0] for c in no_sleep.call_args_list)
    assert 0.05 <= first <= 0.1
    assert 0.1 <= second <= 0.2


def test_get_is_retried_on_timeout(mocked, no_sleep):
    mocked.get(V1 + "/gpu/instance", body=requests.exceptions.ReadTimeout())
    mocked.get(V1 + "/gpu/instance", json={"id": "i"})
    assert make_client(read_retries=1).get_instance("i").id == "i"
    assert len(mocked.calls) == 2


def test_get_is_not_retried_on_permanent_errors(mocked, no_sleep):
    mocked.get(V1 + "/gpu/instance", status=400, json={"reason": "RESOURCE_NOT_FOUND"})
    with pytest.raises(NovitaNotFoundError):
        make_client(read_retries=2).get_instance("i")
    assert len(mocked.calls) == 1
    no_sleep.assert_not_called()


def test_stop_is_not_retried_on_5xx(mocked, no_sleep):
    mocked.post(V1 + "/gpu/instance/stop", status=503)
    with pytest.raises(NovitaTransientError):
        make_client(read_retries=2).stop_instance("i")
    assert len(mocked.calls) == 1
    no_sleep.assert_not_called()


def test_create_is_not_retried_on_timeout(mocked, no_sleep):
    mocked.post(V1 + "/gpu/instance/create", body=requests.exceptions.ReadTimeout())
    with pytest.raises(NovitaTimeoutError):
        make_client(read_retries=2).create_instance(name="x")
    assert len(mocked.calls) == 1


def test_retry_after_is_honoured_on_get(mocked, no_sleep):
    mocked.get(V1 + "/clusters", status=429, headers={"Retry-After": "2"})
    mocked.get(V1 + "/clusters", json={"data": []})
    make_client(read_retries=2).list_clusters()
    no_sleep.assert_called_once_with(2.0)


def test_retry_after_beyond_the_cap_is_left_to_the_caller(mocked, no_sleep):
    mocked.get(V1 + "/clusters", status=429, headers={"Retry-After": "120"})
    with pytest.raises(NovitaRateLimitedError) as caught:
        make_client(read_retries=2, max_retry_after=5).list_clusters()
    assert caught.value.retry_after == 120.0
    assert len(mocked.calls) == 1
    no_sleep.assert_not_called()


def test_retry_after_as_http_date_is_understood(mocked):
    when = datetime.now(UTC) + timedelta(seconds=30)
    mocked.get(
        V1 + "/clusters",
        status=429,
        headers={"Retry-After": when.strftime("%a, %d %b %Y %H:%M:%S GMT")},
    )
    with pytest.raises(NovitaRateLimitedError) as caught:
        make_client().list_clusters()
    assert 25 <= caught.value.retry_after <= 31


# --- circuit breaker ------------------------------------------------------------------------


def _backdate_breaker(client, seconds):
    # pybreaker measures the open period from opened_at; moving it back is moving time forward.
    client._breaker._state_storage.opened_at = datetime.now(UTC) - timedelta(seconds=seconds)


def test_breaker_opens_after_threshold_transient_failures_and_fails_fast(mocked):
    mocked.get(V1 + "/clusters", status=503)
    client = make_client(failure_threshold=3, reset_timeout=60)

    for _ in range(3):
        with pytest.raises(NovitaTransientError) as caught:
            client.list_clusters()
        assert not isinstance(caught.value, NovitaCircuitOpenError)
    assert client.breaker_state == "open"

    with pytest.raises(NovitaCircuitOpenError):
        client.list_clusters()
    with pytest.raises(NovitaCircuitOpenError):
        client.stop_instance("i")
    assert len(mocked.calls) == 3


def test_breaker_counts_each_get_attempt_and_stops_retrying_once_open(mocked, no_sleep):
    mocked.get(V1 + "/clusters", status=503)
    client = make_client(read_retries=5, failure_threshold=2)
    with pytest.raises(NovitaCircuitOpenError):
        client.list_clusters()
    assert len(mocked.calls) == 2


def test_breaker_half_opens_after_reset_timeout_and_closes_on_success(mocked):
    mocked.get(V1 + "/clusters", status=503)
    client = make_client(failure_threshold=2, reset_timeout=30)
    for _ in range(2):
        with pytest.raises(NovitaTransientError):
            client.list_clusters()
    assert client.breaker_state == "open"

    _backdate_breaker(client, 31)
    assert client.breaker_state == "half-open"
    mocked.replace(responses.GET, V1 + "/clusters", json={"data": []})

    assert client.list_clusters() == []
    assert client.breaker_state == "closed"
    assert len(mocked.calls) == 3


def test_failed_trial_call_reopens_the_breaker(mocked):
    mocked.get(V1 + "/clusters", status=503)
    client = make_client(failure_threshold=1, reset_timeout=30)
    with pytest.raises(NovitaTransientError):
        client.list_clusters()
    _backdate_breaker(client, 31)

    with pytest.raises(NovitaTransientError):
        client.list_clusters()  # the trial call reaches upstream and fails

    assert client.breaker_state == "open"
    with pytest.raises(NovitaCircuitOpenError):
        client.list_clusters()
    assert len(mocked.calls) == 2


def test_not_found_400_is_not_counted_by_breaker(mocked):
    mocked.get(
        V1 + "/gpu/instance",
        status=400,
        json={"code": 400, "reason": "RESOURCE_NOT_FOUND", "message": "container not found"},
    )
    client = make_client(failure_threshold=2)
    for _ in range(5):
        with pytest.raises(NovitaNotFoundError):
            client.get_instance("gone")
    assert client.breaker_state == "closed"
    assert len(mocked.calls) == 5


def test_permanent_errors_do_not_open_the_breaker(mocked):
    mocked.post(V1 + "/gpu/instance/create", status=400, json={"reason": "BALANCE_NOT_ENOUGH"})
    client = make_client(failure_threshold=1)
    for _ in range(3):
        with pytest.raises(NovitaPermanentError):
            client.create_instance(name="x")
    assert client.breaker_state == "closed"


def test_breaker_falls_back_to_memory_when_redis_is_unreachable():
    # Port 9 on loopback: nothing listens, so the connection is refused at once.
    client = make_client(redis_url="redis://127.0.0.1:9/0")
    assert client.breaker_state == "closed"


def test_reset_breaker_closes_an_open_circuit(mocked):
    mocked.get(V1 + "/clusters", status=503)
    client = make_client(failure_threshold=1)
    with pytest.raises(NovitaTransientError):
        client.list_clusters()
    assert client.breaker_state == "open"
    client.reset_breaker()
    assert client.breaker_state == "closed"
    assert client._breaker.fail_counter == 0


@pytest.fixture
def redis_url():
    redis = pytest.importorskip("redis")
    url = "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.3).ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    return url


def test_breaker_state_is_shared_through_redis(mocked, redis_url):
    # A namespace of its own, so parallel runs and real processes are not disturbed.
    namespace = f"novita-test-{uuid.uuid4().hex}"
    first = make_client(redis_url=redis_url, breaker_namespace=namespace, failure_threshold=2)
    second = make_client(redis_url=redis_url, breaker_namespace=namespace, failure_threshold=2)
    mocked.get(V1 + "/clusters", status=503)
    try:
        with pytest.raises(NovitaTransientError):
            first.list_clusters()
        with pytest.raises(NovitaTransientError):
            second.list_clusters()  # the second consecutive failure, counted in Redis

        assert first.breaker_state == second.breaker_state == "open"
        with pytest.raises(NovitaCircuitOpenError):
            first.list_clusters()
        assert len(mocked.calls) == 2
    finally:
        first.reset_breaker()
        import redis

        conn = redis.Redis.from_url(redis_url)
        for key in conn.scan_iter(f"{namespace}:*"):
            conn.delete(key)


# --- metrics hook ---------------------------------------------------------------------------


def test_on_call_reports_every_attempt_with_its_outcome(mocked, no_sleep):
    calls = []
    mocked.get(V1 + "/clusters", status=503)
    mocked.get(V1 + "/clusters", json={"data": []})
    mocked.get(V1 + "/gpu/instance", body=requests.exceptions.ReadTimeout())
    mocked.get(V1 + "/products", status=429)
    mocked.post(V1 + "/gpu/instance/stop", status=400, json={"reason": "REQUEST"})
    client = make_client(
        read_retries=1,
        failure_threshold=10,
        on_call=lambda op, secs, outcome: calls.append((op, outcome, secs >= 0)),
    )

    client.list_clusters()
    with pytest.raises(NovitaTimeoutError):
        client.get_instance("i")
    with pytest.raises(NovitaRateLimitedError):
        client.list_products()
    with pytest.raises(NovitaPermanentError):
        client.stop_instance("i")

    assert calls == [
        ("list_clusters", "transient", True),
        ("list_clusters", "ok", True),
        ("get_instance", "timeout", True),
        ("get_instance", "timeout", True),
        ("list_products", "rate_limited", True),
        ("list_products", "rate_limited", True),
        ("stop_instance", "permanent", True),
    ]


def test_on_call_reports_circuit_open_and_a_broken_hook_never_breaks_calls(mocked):
    outcomes = []

    def hook(operation, seconds, outcome):
        outcomes.append(outcome)
        raise RuntimeError("metrics backend down")

    mocked.get(V1 + "/clusters", status=500)
    client = make_client(failure_threshold=1, on_call=hook)
    with pytest.raises(NovitaTransientError):
        client.list_clusters()
    with pytest.raises(NovitaCircuitOpenError):
        client.list_clusters()
    assert outcomes == ["transient", "circuit_open"]


# --- get_client -----------------------------------------------------------------------------


@pytest.fixture
def fresh_client():
    reset_client()
    yield
    reset_client()


def test_get_client_is_built_from_settings_and_cached(settings, fresh_client, mocked):
    settings.NOVITA_API_BASE_URL = BASE
    settings.NOVITA_API_KEY = KEY
    settings.NOVITA_INTERNAL_API_BASE_URL = ""
    settings.NOVITA_INTERNAL_API_KEY = ""
    settings.NOVITA_CONNECT_TIMEOUT = 1.25
    settings.NOVITA_READ_TIMEOUT = 4
    settings.NOVITA_READ_RETRIES = 1
    settings.NOVITA_CIRCUIT_FAILURE_THRESHOLD = 3
    settings.NOVITA_CIRCUIT_RESET_SECONDS = 15
    settings.REDIS_URL = ""

    client = get_client()

    assert get_client() is client
    assert client.timeout == (1.25, 4.0)
    assert client.read_retries == 1
    assert client._breaker.fail_max == 3
    assert client._breaker.reset_timeout == 15
    mocked.get(V1 + "/clusters", json={"data": []})
    client.list_clusters()
    assert mocked.calls[0].request.headers["Authorization"] == f"Bearer {KEY}"


def test_reset_client_rebuilds_with_new_settings(settings, fresh_client):
    settings.NOVITA_API_BASE_URL = BASE
    settings.NOVITA_API_KEY = KEY
    settings.REDIS_URL = ""
    first = get_client()
    settings.NOVITA_API_BASE_URL = "https://other.test/gpu-instance/openapi"
    reset_client()
    second = get_client()
    assert second is not first
    assert second.base_url == "https://other.test/gpu-instance/openapi"


def test_get_client_without_base_url_fails_on_call(settings, fresh_client, mocked):
    settings.NOVITA_API_BASE_URL = ""
    settings.REDIS_URL = ""
    with pytest.raises(NovitaNotConfiguredError):
        get_client().list_clusters()
    assert len(mocked.calls) == 0


def test_get_client_is_rebuilt_in_a_forked_child(settings, fresh_client, monkeypatch):
    settings.NOVITA_API_BASE_URL = BASE
    settings.NOVITA_API_KEY = KEY
    settings.REDIS_URL = ""
    parent = get_client()
    monkeypatch.setattr(client_module.os, "getpid", lambda: -1)
    assert get_client() is not parent


def test_an_upstream_trickling_its_answer_is_cut_at_the_total_deadline():
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Trickle(BaseHTTPRequestHandler):
        def do_GET(self):
            # One header byte every 0.1 s: each read is quick, the answer never completes.
            for byte in b"HTTP/1.1 200 OK\r\n" + b"X-Pad: y\r\n" * 100:
                try:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.1)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = NovitaClient(
        f"http://127.0.0.1:{server.server_address[1]}/gpu-instance/openapi",
        KEY,
        connect_timeout=1,
        read_timeout=1,
        total_timeout=0.8,
        read_retries=0,
    )
    started = time.monotonic()
    try:
        with pytest.raises(NovitaTimeoutError) as raised:
            client.get_instance("inst-1")
        assert time.monotonic() - started < 1.6
        assert "0.8s in all" in str(raised.value)
    finally:
        server.shutdown()
        server.server_close()
