"""The whole product against a sandbox playing the least convenient reading of Novita's API the
public sources allow: list pages numbered from 1 (page 0 answers empty), unknown instances
answered 404 with a JSON body naming them, unknown routes answered with an HTML page.

Promise checked: an instance is created, becomes ready (its HTTP port answers 502 until the
instance runs, like Novita's edge), shows in the comprehensive listing, stops and is deleted;
one deleted upstream behind the gateway's back ends terminated.
"""

import pytest

from tests.e2e.stack import SANDBOX_KEY, Stack, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

READING = {
    "NOVITA_SANDBOX_PAGE_NUMBERING": "one",
    "NOVITA_SANDBOX_NOT_FOUND": "404-json",
    "NOVITA_SANDBOX_ROUTE_404": "html",
}


@pytest.fixture(scope="module")
def stack():
    with Stack(extra_env=READING).running() as s:
        yield s


def test_the_sandbox_plays_the_reading_asked_for(stack):
    config = stack.sandbox("GET", "/_sandbox/config").json()
    assert (config["pageNumbering"], config["notFound"], config["route404"]) == (
        "one",
        "404-json",
        "html",
    )


def test_lifecycle_and_listing_under_one_based_pages_and_404_not_found(stack):
    (instance_id,) = stack.create_ready(1, prefix="reading", timeout=120)
    body = stack.instance(instance_id)
    assert {m["port"] for m in body["portMappings"]} == {8188}

    # Found upstream although page 0 comes back empty: merged, not local-only (once the
    # short-lived fleet snapshot taken before the create has expired).
    wait_until(
        lambda: (
            stack.api("GET", "/api/instances/comprehensive").json()["sources"]
            == {"local": 0, "novita": 0, "merged": 1}
        ),
        30,
        message="the listing to find the instance upstream",
    )
    calls = stack.sandbox("GET", "/_sandbox/calls", params={"path": "/gpu/instances"}).json()
    pages = [c["query"] for c in calls["recent"]]
    assert "pageSize=100&pageNum=0" in pages and "pageSize=100&pageNum=1" in pages

    assert stack.api("POST", f"/api/instances/{instance_id}/stop").status_code in (200, 202)
    stack.wait_status(instance_id, "stopped")
    assert stack.api("DELETE", f"/api/instances/{instance_id}").status_code in (200, 202)
    stack.wait_status(instance_id, "terminated")


def test_an_instance_deleted_upstream_ends_terminated(stack):
    (instance_id,) = stack.create_ready(1, prefix="vanish", timeout=120)
    upstream_id = stack.instance(instance_id)["novitaInstanceId"]
    deleted = stack.sandbox(
        "POST",
        "/gpu-instance/openapi/v1/gpu/instance/delete",
        json={"instanceId": upstream_id},
        headers={"Authorization": f"Bearer {SANDBOX_KEY}"},
    )
    assert deleted.status_code == 200
    wait_until(
        lambda: stack.sandbox("GET", f"/_sandbox/instances/{upstream_id}").status_code == 404,
        30,
        message="the sandbox to forget the instance",
    )
    stack.wait_status(instance_id, "terminated", timeout=90)
