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


# Learning the numbering: a client that has seen page 0 is not a page of its own skips it.


def serve(mocked, items, convention, with_total=True):
    mocked.remove("GET", V1 + "/gpu/instances")
    mocked.add_callback(
        "GET", V1 + "/gpu/instances", callback=paged(items, convention, with_total=with_total)
    )


def walk(c, mocked):
    """(ids, page numbers asked for, the last page's `complete`) of one fresh listing."""
    mocked.calls.reset()
    pages = list(c.iter_instance_pages(page_size=2))
    return [i.id for p in pages for i in p], page_numbers(mocked), pages[-1].complete


@pytest.mark.parametrize("with_total", [True, False], ids=["total", "no-total"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("learned_under", PAGE_CONVENTIONS)
@pytest.mark.parametrize("convention", PAGE_CONVENTIONS)
def test_a_listing_after_any_earlier_one_returns_every_item_whatever_the_numbering_became(
    mocked, convention, learned_under, size, with_total
):
    # Whatever one walk taught the client, the next returns everything once, even if
    # upstream's numbering changed in between, and costs at most one page more than a first
    # walk. Upstream's order is kept, except that a page 0 read last comes last.
    c = client()
    serve(mocked, instances(4), learned_under)
    walk(c, mocked)
    serve(mocked, instances(size), convention, with_total=with_total)

    ids, asked, complete = walk(c, mocked)

    assert sorted(ids) == sorted(f"ins-{i}" for i in range(size))
    if asked[0] == 0 or convention != "zero":
        assert ids == [f"ins-{i}" for i in range(size)]
    assert complete is True
    assert len(asked) <= size // 2 + 3


@pytest.mark.parametrize("convention", ["one", "zero-as-one"])
def test_page_0_is_skipped_once_a_complete_listing_showed_it_is_not_a_page_of_its_own(
    mocked, convention
):
    c = client()
    serve(mocked, instances(4), convention)
    assert walk(c, mocked)[1] == [0, 1, 2]

    assert walk(c, mocked) == (["ins-0", "ins-1", "ins-2", "ins-3"], [1, 2], True)


def test_page_0_refused_by_upstream_is_not_asked_for_again(mocked):
    items = instances(3)

    def callback(request):
        if parse_qs(urlsplit(request.url).query)["pageNum"][0] == "0":
            return 400, {}, json.dumps({"code": 400, "reason": "VALIDATOR_PARAM"})
        return paged(items, "one")(request)

    mocked.add_callback("GET", V1 + "/gpu/instances", callback=callback)
    c = client()
    walk(c, mocked)
    assert walk(c, mocked) == (["ins-0", "ins-1", "ins-2"], [1, 2], True)


def test_zero_based_pages_are_always_read_from_page_0(mocked):
    c = client()
    serve(mocked, instances(4), "zero")
    walk(c, mocked)
    assert walk(c, mocked)[1] == [0, 1]


def test_a_skipped_page_0_holding_items_is_read_last_and_walks_start_at_0_again(mocked):
    c = client()
    serve(mocked, instances(4), "zero-as-one")
    walk(c, mocked)
    serve(mocked, instances(4), "zero")  # upstream now counts from 0: page 1 is the 2nd page

    ids, asked, complete = walk(c, mocked)

    assert ids == ["ins-2", "ins-3", "ins-0", "ins-1"]
    assert (asked, complete) == ([1, 2, 0], True)
    assert walk(c, mocked)[1] == [0, 1]


def test_without_total_a_walk_that_skipped_page_0_reads_it_last(mocked):
    # Only `total` proves a walk from page 1 complete; without it page 0 is read at the end.
    c = client()
    serve(mocked, instances(4), "zero-as-one")
    walk(c, mocked)
    serve(mocked, instances(3), "zero-as-one", with_total=False)

    assert walk(c, mocked) == (["ins-0", "ins-1", "ins-2"], [1, 2, 0], True)


def test_an_empty_page_1_after_learning_is_checked_against_page_0(mocked):
    c = client()
    serve(mocked, instances(4), "zero-as-one")
    walk(c, mocked)
    # An upstream that counts from 0 with one page of items answers page 1 with nothing and
    # (wrongly or not) total 0: page 0 still decides.
    serve(mocked, instances(2), "zero", with_total=False)
    assert walk(c, mocked) == (["ins-0", "ins-1"], [1, 0], True)


def test_only_the_last_page_of_a_walk_that_reads_page_0_last_says_complete(mocked):
    c = client()
    serve(mocked, instances(4), "zero-as-one")
    walk(c, mocked)
    serve(mocked, instances(3), "zero")
    pages = list(c.iter_instance_pages(page_size=2))
    assert [(p.page_num, p.complete) for p in pages] == [(1, False), (2, False), (0, True)]


def test_a_partial_listing_teaches_nothing(mocked, caplog):
    # Page 1 repeats page 0, but the walk ends short of total: no evidence to act on.
    def callback(request):
        num = int(parse_qs(urlsplit(request.url).query)["pageNum"][0])
        body = instances(2) if num < 2 else []
        return 200, {}, json.dumps({"instances": body, "total": 9})

    mocked.add_callback("GET", V1 + "/gpu/instances", callback=callback)
    c = client()
    with caplog.at_level(logging.WARNING, logger="instances.novita.client"):
        walk(c, mocked)
    assert walk(c, mocked)[1][0] == 0


def test_a_walk_from_page_1_short_of_total_stays_partial_when_page_0_is_refused(mocked, caplog):
    items = instances(4)
    state = {"served": items}

    def callback(request):
        if parse_qs(urlsplit(request.url).query)["pageNum"][0] == "0":
            return 400, {}, json.dumps({"code": 400, "reason": "VALIDATOR_PARAM"})
        body = json.loads(paged(state["served"], "one")(request)[2])
        return 200, {}, json.dumps({**body, "total": 4})

    mocked.add_callback("GET", V1 + "/gpu/instances", callback=callback)
    c = client()
    walk(c, mocked)
    state["served"] = items[:3]  # one item lost between pages; total still says 4
    with caplog.at_level(logging.WARNING, logger="instances.novita.client"):
        ids, asked, complete = walk(c, mocked)
    assert (ids, asked, complete) == (["ins-0", "ins-1", "ins-2"], [1, 2, 3, 0], False)
    assert "partial" in caplog.text
