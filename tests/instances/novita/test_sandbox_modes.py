"""The sandbox's emulation modes: each reading of Novita's API that public sources allow."""

from __future__ import annotations

import pytest
import requests

from instances.novita.sandbox import Sandbox

KEY = "sandbox-key"
TIMEOUT = 3
BODY = {
    "productId": "4090.16c.62g-hk-a",
    "gpuNum": 1,
    "imageUrl": "ubuntu:22.04",
    "kind": "gpu",
}


def serve(**modes):
    return Sandbox(api_key=KEY, step_seconds=0.2, seed=3, **modes).serve()


def call(sb, method, path, **kwargs):
    headers = {"Authorization": f"Bearer {KEY}"}
    url = f"{sb.api_base_url}/v1{path}"
    return requests.request(method, url, headers=headers, timeout=TIMEOUT, **kwargs)


def page_ids(sb, page_num, size=2):
    body = call(sb, "GET", "/gpu/instances", params={"pageSize": size, "pageNum": page_num}).json()
    return [i["id"] for i in body["instances"]], body["total"]


@pytest.fixture
def five():
    """Five instances per page-numbering mode; the list is newest first."""
    made = {}

    def make(mode):
        sb = serve(page_numbering=mode)
        ids = [call(sb, "POST", "/gpu/instance/create", json=BODY).json()["id"] for _ in range(5)]
        made[mode] = sb
        return sb, ids[::-1]

    yield make
    for sb in made.values():
        sb.shutdown()


def test_zero_based_pages_start_at_zero(five):
    sb, newest_first = five("zero")
    pages = [page_ids(sb, n) for n in range(4)]
    assert [ids for ids, _ in pages] == [newest_first[0:2], newest_first[2:4], newest_first[4:], []]
    assert {total for _, total in pages} == {5}


def test_one_based_pages_answer_page_zero_empty_with_the_total(five):
    sb, newest_first = five("one")
    assert page_ids(sb, 0) == ([], 5)
    assert page_ids(sb, 1)[0] == newest_first[0:2]
    assert page_ids(sb, 3)[0] == newest_first[4:]


def test_zero_as_one_answers_the_first_page_twice(five):
    sb, newest_first = five("zero-as-one")
    assert page_ids(sb, 0)[0] == page_ids(sb, 1)[0] == newest_first[0:2]
    assert page_ids(sb, 2)[0] == newest_first[2:4]


def test_page_numbering_applies_to_jobs_and_templates():
    with serve(page_numbering="one") as sb:
        templates = call(sb, "GET", "/templates", params={"pageSize": 10, "pageNum": 0}).json()
        assert (templates["template"], templates["total"]) == ([], 3)
        templates = call(sb, "GET", "/templates", params={"pageSize": 10, "pageNum": 1}).json()
        assert len(templates["template"]) == 3
        jobs = call(sb, "GET", "/jobs", params={"pageSize": 10, "pageNum": 0}).json()
        assert jobs == {"jobs": [], "total": 0}


def test_unknown_instance_default_is_400_kratos_body():
    with serve() as sb:
        resp = call(sb, "GET", "/gpu/instance", params={"instanceId": "nope"})
    assert resp.status_code == 400
    assert set(resp.json()) == {"code", "reason", "message", "metadata"}
    assert (resp.json()["code"], resp.json()["reason"]) == (400, "RESOURCE_NOT_FOUND")


def test_unknown_instance_404_json_names_the_resource():
    with serve(not_found="404-json") as sb:
        resp = call(sb, "POST", "/gpu/instance/stop", json={"instanceId": "nope"})
    assert resp.status_code == 404
    assert resp.json()["reason"] == "RESOURCE_NOT_FOUND"
    assert resp.json()["metadata"] == {"instanceId": "nope"}


def test_unknown_instance_404_route_looks_like_a_missing_route():
    with serve(not_found="404-route") as sb:
        resp = call(sb, "GET", "/gpu/instance", params={"instanceId": "nope"})
    assert (resp.status_code, resp.json()["reason"]) == (404, "API_NOT_FOUND")


def test_wrong_base_path_is_route_404_json_or_html():
    with serve() as sb:
        resp = requests.get(f"{sb.base_url}/openapi/v1/gpu/instances", timeout=TIMEOUT)
        assert (resp.status_code, resp.json()["reason"]) == (404, "API_NOT_FOUND")
        sb.configure(route_404="html")
        resp = requests.get(f"{sb.base_url}/openapi/v1/gpu/instances", timeout=TIMEOUT)
        assert resp.status_code == 404
        assert resp.headers["Content-Type"] == "text/html"
        assert "404 Not Found" in resp.text


def test_status_right_after_create_is_pending():
    with Sandbox(api_key=KEY, step_seconds=5, seed=1).serve() as sb:
        instance_id = call(sb, "POST", "/gpu/instance/create", json=BODY).json()["id"]
        view = call(sb, "GET", "/gpu/instance", params={"instanceId": instance_id}).json()
    assert view["status"] == "pending"


def test_templates_carry_create_time_and_created_at():
    with serve() as sb:
        templates = call(sb, "GET", "/templates", params={"pageSize": 10}).json()["template"]
    keys = [{"createTime", "createdAt"} & set(t) for t in templates]
    assert {"createTime"} in keys and {"createdAt"} in keys


def test_modes_can_be_switched_over_the_control_api():
    with serve() as sb:
        url = f"{sb.base_url}/_sandbox/config"
        resp = requests.post(url, json={"pageNumbering": "one", "notFound": "404-json"}, timeout=3)
        assert resp.json()["pageNumbering"] == "one"
        assert (sb.page_numbering, sb.not_found) == ("one", "404-json")
        bad = requests.post(url, json={"pageNumbering": "two"}, timeout=3)
        assert (bad.status_code, bad.json()["reason"]) == (400, "VALIDATOR_PARAM")


def test_unknown_mode_is_refused_at_construction():
    with pytest.raises(ValueError, match="page_numbering"):
        Sandbox(page_numbering="minus-one")
