"""Every upstream listing returns every item whether Novita numbers pages from 0, from 1, or
reads 0 as 1, with or without `total` in the answer, and never mistakes a partial listing for
a complete one."""

import json
import logging
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from instances.novita import client as client_module
from instances.novita.client import NovitaClient
from instances.novita.errors import NovitaMisconfiguredError
from tests.instances.upstream import PAGE_CONVENTIONS, paged

BASE = "https://novita.test/gpu-instance/openapi"
V1 = BASE + "/v1"
SIZES = (0, 1, 2, 3, 5, 7)  # empty, one item, exactly one page, page plus one, several pages


@pytest.fixture
def mocked():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


def client():
    return NovitaClient(BASE, "sk-test", read_retries=0)


def instances(n):
    return [{"id": f"ins-{i}", "name": f"box-{i}", "status": "running"} for i in range(n)]


def page_numbers(mocked):
    return [int(parse_qs(urlsplit(c.request.url).query)["pageNum"][0]) for c in mocked.calls]


LISTINGS = {
    # name: (path, list key, item factory, call returning the ids)
    "instances": (
        "/gpu/instances",
        "instances",
        instances,
        lambda c: [i.id for i in c.list_instances(page_size=2)],
    ),
    "instance pages (fleet snapshot)": (
        "/gpu/instances",
        "instances",
        instances,
        lambda c: [
            item["id"]
            for page in c.iter_instance_pages(page_size=2, raw=True, read_ahead=True)
            for item in page
        ],
    ),
    "name lookup": (
        "/gpu/instances",
        "instances",
        instances,
        lambda c: [i.id for i in c.list_instances(name="box", page_size=2)],
    ),
    "templates": (
        "/templates",
        "template",
        lambda n: [{"Id": f"tpl-{i}", "image": "img"} for i in range(n)],
        lambda c: [t.id for t in c.list_templates(page_size=2)],
    ),
    "jobs": (
        "/jobs",
        "jobs",
        lambda n: [{"Id": f"job-{i}", "state": {"state": "running"}} for i in range(n)],
        lambda c: [j.id for j in c.list_jobs(page_size=2)],
    ),
}


@pytest.mark.parametrize("with_total", [True, False], ids=["total", "no-total"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("convention", PAGE_CONVENTIONS)
@pytest.mark.parametrize("listing", LISTINGS)
def test_every_listing_returns_every_item_once_under_each_page_numbering(
    mocked, listing, convention, size, with_total
):
    path, key, make, call = LISTINGS[listing]
    items = make(size)
    mocked.add_callback(
        "GET", V1 + path, callback=paged(items, convention, key=key, with_total=with_total)
    )

    ids = call(client())

    assert ids == [item.get("id") or item.get("Id") for item in items]
    assert len(mocked.calls) <= size // 2 + 3  # at most one extra page, plus the closing one


@pytest.mark.parametrize("convention", PAGE_CONVENTIONS)
def test_fleet_pages_say_the_listing_is_complete_under_each_page_numbering(mocked, convention):
    mocked.add_callback("GET", V1 + "/gpu/instances", callback=paged(instances(5), convention))
    pages = list(client().iter_instance_pages(page_size=2))
    assert pages[-1].complete is True
    assert not any(p.complete for p in pages[:-1])


def test_listing_starts_at_page_0(mocked):
    mocked.add_callback("GET", V1 + "/gpu/instances", callback=paged(instances(3), "zero"))
    client().list_instances(page_size=2)
    assert page_numbers(mocked) == [0, 1]


def test_zero_read_as_one_costs_one_extra_page_and_no_duplicate(mocked):
    mocked.add_callback("GET", V1 + "/gpu/instances", callback=paged(instances(4), "zero-as-one"))
    ids = [i.id for i in client().list_instances(page_size=2)]
    assert ids == ["ins-0", "ins-1", "ins-2", "ins-3"]
    assert page_numbers(mocked) == [0, 1, 2]


def test_an_empty_page_0_is_not_taken_for_an_empty_listing(mocked):
    # 1-based numbering: page 0 answers nothing, yet the account has instances.
    mocked.add_callback(
        "GET", V1 + "/gpu/instances", callback=paged(instances(3), "one", with_total=False)
    )
    assert len(client().list_instances(page_size=2)) == 3
    assert page_numbers(mocked) == [0, 1, 2]


def test_an_empty_page_0_claiming_total_0_is_checked_against_page_1(mocked):
    items = instances(3)

    def callback(request):
        num = int(parse_qs(urlsplit(request.url).query)["pageNum"][0])
        if num == 0:
            return 200, {}, json.dumps({"instances": [], "total": 0})
        return paged(items, "one")(request)

    mocked.add_callback("GET", V1 + "/gpu/instances", callback=callback)
    assert len(client().list_instances(page_size=2)) == 3


def test_an_empty_account_costs_two_requests(mocked):
    mocked.get(V1 + "/gpu/instances", json={"instances": [], "total": 0})
    pages = list(client().iter_instance_pages(page_size=2))
    assert (len(pages), pages[-1].complete) == (2, True)


def test_a_refused_page_0_falls_back_to_page_1(mocked):
    items = instances(3)

    def callback(request):
        num = int(parse_qs(urlsplit(request.url).query)["pageNum"][0])
        if num == 0:
            return 400, {}, json.dumps({"code": 400, "reason": "VALIDATOR_PARAM"})
        return paged(items, "one")(request)

    mocked.add_callback("GET", V1 + "/gpu/instances", callback=callback)
    pages = list(client().iter_instance_pages(page_size=2))
    assert [i["id"] if isinstance(i, dict) else i.id for p in pages for i in p] == [
        "ins-0",
        "ins-1",
        "ins-2",
    ]
    assert pages[-1].complete is True


def test_a_misconfigured_page_0_is_an_error_not_an_empty_listing(mocked):
    mocked.get(V1 + "/gpu/instances", status=404, body="<html>404</html>")
    with pytest.raises(NovitaMisconfiguredError):
        client().list_instances()


def test_a_short_page_before_total_is_reached_does_not_end_the_listing(mocked):
    # Upstream may cap pageSize below what we ask for: 2 items per page though we ask for 3.
    items = instances(5)

    def callback(request):
        num = int(parse_qs(urlsplit(request.url).query)["pageNum"][0])
        return 200, {}, json.dumps({"instances": items[num * 2 : num * 2 + 2], "total": 5})

    mocked.add_callback("GET", V1 + "/gpu/instances", callback=callback)
    pages = list(client().iter_instance_pages(page_size=3))
    assert sum(len(p) for p in pages) == 5
    assert pages[-1].complete is True


def test_a_listing_that_ends_short_of_total_is_partial(mocked, caplog):
    def callback(request):
        num = int(parse_qs(urlsplit(request.url).query)["pageNum"][0])
        page = instances(2) if num == 0 else []
        return 200, {}, json.dumps({"instances": page, "total": 3})

    mocked.add_callback("GET", V1 + "/gpu/instances", callback=callback)
    with caplog.at_level(logging.WARNING, logger="instances.novita.client"):
        pages = list(client().iter_instance_pages(page_size=2))
    assert pages[-1].complete is False
    assert "partial" in caplog.text


def test_an_upstream_that_ignores_page_num_ends_partial_after_two_repeats(mocked, caplog):
    mocked.get(V1 + "/gpu/instances", json={"instances": instances(2)})
    with caplog.at_level(logging.WARNING, logger="instances.novita.client"):
        pages = list(client().iter_instance_pages(page_size=2))
    assert len(pages) == 3
    assert pages[-1].complete is False
    assert "same page" in caplog.text


def test_the_page_cap_stops_a_listing_and_says_so(mocked, monkeypatch, caplog):
    monkeypatch.setattr(client_module, "MAX_PAGES", 3)
    mocked.add_callback(
        "GET", V1 + "/gpu/instances", callback=paged(instances(50), "zero", with_total=False)
    )
    with caplog.at_level(logging.WARNING, logger="instances.novita.client"):
        pages = list(client().iter_instance_pages(page_size=2))
    assert len(pages) == 3
    assert pages[-1].complete is False
    assert "page cap" in caplog.text
