"""The fleet view: local records merged with upstream's listing (endpoint 5, and endpoint 4's
upstream-backed variants), its brief cache, and syncLocalState."""

import json
import threading
import time
import uuid
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

from instances.models import Instance, WebhookDelivery
from instances.services import snapshot
from instances.status import Desired, Status
from tests.instances.upstream import PAGE_CONVENTIONS, V1, paged, remote_instance

pytestmark = pytest.mark.django_db

URL = "/api/instances/comprehensive"
HOOK = "https://hooks.example.com/h"


@pytest.fixture(autouse=True)
def private_fleet_cache(monkeypatch):
    """Other test runs share var/ (file cache, counters file): keep this test's snapshot and
    hit/miss counts to itself."""
    tag = uuid.uuid4().hex
    monkeypatch.setattr(snapshot, "_CACHE_KEY", f"fleet:test:{tag}")
    monkeypatch.setattr(snapshot, "_HITS", f"fleet:test:{tag}:hits")
    monkeypatch.setattr(snapshot, "_MISSES", f"fleet:test:{tag}:misses")


def list_items(*instances, **extra):
    """List items as upstream sends them: ports without endpoints, spot fields, no passwords."""
    items = []
    for data in instances:
        item = {
            **data,
            "portMappings": [{"port": 8888, "type": "http"}, {"port": 22, "type": "tcp"}],
            "productName": "RTX 4090 24GB",
            "spotStatus": "",
            "spotReclaimTime": "0",
            **extra,
        }
        item.pop("connectComponentSSH", None)
        items.append(item)
    return items


def serve_list(novita, items, convention="zero"):
    """Upstream's paginated list over `items` (a list the test may change later)."""
    novita.mock.add_callback("GET", f"{V1}/gpu/instances", callback=paged(items, convention))
    return items


def by_name(body):
    return {row["name"]: row for row in body["instances"]}


# --- merge rules ----------------------------------------------------------------------------


def test_each_source_combination_gets_its_source_and_consistency(api, make_instance, novita):
    make_instance(name="both", novita_instance_id="nov-both", cluster_id="CN-HK-01")
    make_instance(name="booting", status=Status.CREATING, novita_instance_id=None)
    make_instance(name="vanished", novita_instance_id="nov-vanished")
    make_instance(name="gone", status=Status.TERMINATED, novita_instance_id="nov-gone")
    serve_list(
        novita,
        list_items(remote_instance("nov-both", "both"), remote_instance("nov-x", "theirs")),
    )

    response = api.get(URL)

    assert response.status_code == 200
    body = response.json()
    rows = by_name(body)
    assert {n: (r["source"], r["dataConsistency"]) for n, r in rows.items()} == {
        "both": ("merged", "consistent"),
        "booting": ("local", "consistent"),
        "vanished": ("local", "inconsistent"),
        "gone": ("local", "consistent"),
        "theirs": ("novita", "consistent"),
    }
    assert rows["vanished"]["inconsistencies"] == ["existence"]
    assert "inconsistencies" not in rows["both"]
    assert body["total"] == 5
    assert body["sources"] == {"local": 3, "novita": 1, "merged": 1}


def test_merged_row_carries_upstream_fields_and_our_identity(api, make_instance, novita):
    mine = make_instance(
        name="both",
        novita_instance_id="nov-both",
        port_mappings=[{"port": 8888, "endpoint": "https://abc.novita.test:8888", "type": "http"}],
        last_used_at=timezone.now(),
    )
    serve_list(novita, list_items(remote_instance("nov-both", "both")))

    row = by_name(api.get(URL).json())["both"]

    assert row["id"] == mine.id and row["novitaInstanceId"] == "nov-both"
    assert row["status"] == "ready" and row["novitaStatus"] == "running"
    assert row["clusterId"] == "CN-HK-01" and row["clusterName"] == "Hong Kong"
    assert row["productName"] == "RTX 4090 24GB"
    assert (row["cpuNum"], row["memory"], row["gpuNum"]) == ("8", "32GB", 1)
    assert row["imageUrl"] == "pytorch/pytorch:latest"
    # List items have no addresses: the endpoints we stored are what a client can use.
    assert row["portMappings"] == [
        {"port": 8888, "endpoint": "https://abc.novita.test:8888", "type": "http"}
    ]
    assert row["createdAt"] and row["lastSyncedAt"] and row["lastUsedAt"]


def test_merged_row_names_each_field_that_differs(api, make_instance, novita):
    make_instance(
        name="drifted",
        novita_instance_id="nov-d",
        gpu_num=2,
        image_url="pytorch/pytorch:old",
    )
    serve_list(
        novita,
        list_items(remote_instance("nov-d", "renamed-upstream", status="exited", gpuNum="1")),
    )

    row = by_name(api.get(URL).json())["drifted"]

    assert row["source"] == "merged"
    assert row["dataConsistency"] == "inconsistent"
    assert row["inconsistencies"] == ["status", "name", "gpuNum", "imageUrl"]
    # Without syncLocalState the listing reports and changes nothing.
    assert Instance.objects.get(name="drifted").status == Status.READY


@pytest.mark.parametrize(
    "upstream, expected",
    [
        ({"status": "running"}, "running"),
        ({"status": "exited"}, "stopped"),
        (
            {"status": "exited", "spotStatus": "terminated", "spotReclaimTime": "1700000000"},
            "exited",
        ),
        ({"status": "pulling"}, "creating"),
        ({"status": "restarting"}, "starting"),
        ({"status": "removing"}, "stopping"),
        ({"status": "removed"}, "terminated"),
        ({"status": "exited", "statusError": {"state": "failed", "message": "OOM"}}, "failed"),
        ({"status": "teleporting"}, "unknown"),
    ],
)
def test_novita_only_rows_get_a_gateway_status(api, novita, upstream, expected):
    item = list_items(remote_instance("nov-x", "theirs"))[0]
    item.update(upstream)
    serve_list(novita, [item])

    row = api.get(URL).json()["instances"][0]

    assert (row["source"], row["status"], row["novitaStatus"]) == (
        "novita",
        expected,
        upstream["status"],
    )
    assert row["id"] == row["novitaInstanceId"] == "nov-x"


def test_novita_rows_read_every_shape_upstream_is_known_to_send(api, novita):
    serve_list(
        novita,
        [
            {
                "Id": "up-a",
                "name": "a",
                "status": "running",
                "cpuNum": 8,
                "memory": 32.0,
                "gpuNum": "2",
                "clusterId": "",
                "createdAt": "1700000000000",  # milliseconds
                "portMappings": [{"port": "8888", "type": "HTTP"}, {"port": "x"}, "junk"],
            },
            {"id": "up-b", "status": "running", "createdAt": "2023-11-14T22:13:20Z"},
            {"id": "up-c", "status": "running", "createdAt": 1700000000, "portMappings": None},
            {"id": "up-d", "status": "running", "createdAt": "0", "statusError": ""},
            "not an object",
            {"name": "no id at all", "status": "running"},
        ],
    )

    response = api.get(URL)

    assert response.status_code == 200
    rows = {row["id"]: row for row in response.json()["instances"]}
    assert set(rows) == {"up-a", "up-b", "up-c", "up-d"}
    a = rows["up-a"]
    assert (a["cpuNum"], a["memory"], a["gpuNum"], a["clusterId"]) == ("8", "32GB", 2, None)
    assert a["portMappings"] == [{"port": 8888, "endpoint": None, "type": "http"}]
    created = {key: row["createdAt"] for key, row in rows.items()}
    assert created == {
        "up-a": "2023-11-14T22:13:20.000Z",
        "up-b": "2023-11-14T22:13:20.000Z",
        "up-c": "2023-11-14T22:13:20.000Z",
        "up-d": None,
    }
    assert rows["up-d"]["status"] == "running"  # an empty statusError is no error


def test_include_novita_only_false_leaves_out_unmanaged_instances(api, make_instance, novita):
    make_instance(name="mine", novita_instance_id="nov-mine")
    serve_list(
        novita,
        list_items(remote_instance("nov-mine", "mine"), remote_instance("nov-x", "theirs")),
    )

    body = api.get(URL + "?includeNovitaOnly=false").json()

    assert [r["name"] for r in body["instances"]] == ["mine"]
    assert body["sources"] == {"local": 0, "novita": 0, "merged": 1}


def test_comprehensive_includes_novita_only_by_default(api, novita):
    serve_list(novita, list_items(remote_instance("nov-x", "theirs")))
    assert [r["source"] for r in api.get(URL).json()["instances"]] == ["novita"]


@pytest.mark.parametrize("query", ["includeNovitaOnly=maybe", "syncLocalState=2x"])
def test_invalid_query_values_are_400(api, novita, query):
    response = api.get(f"{URL}?{query}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert len(novita.mock.calls) == 0


def test_no_upstream_secret_reaches_the_listing(api, make_instance, novita):
    make_instance(name="mine", novita_instance_id="nov-mine")
    leaky = remote_instance("nov-x", "theirs")  # carries connectComponentSSH.password
    serve_list(novita, [leaky, remote_instance("nov-mine", "mine")])
    text = api.get(URL).content.decode()
    assert "hunter2" not in text and "password" not in text.lower()


# --- one pass, cached briefly -----------------------------------------------------------------


def test_every_upstream_page_is_read_once_per_listing(api, novita):
    serve_list(novita, list_items(*[remote_instance(f"nov-{i}", f"n-{i}") for i in range(250)]))

    body = api.get(URL).json()

    assert body["total"] == 250
    assert len({r["id"] for r in body["instances"]}) == 250
    assert len(novita.calls("/gpu/instances")) == 3  # pageSize 100
    assert body["performance"]["upstreamPages"] == 3


@pytest.mark.parametrize("convention", PAGE_CONVENTIONS)
def test_comprehensive_listing_shows_every_instance_under_each_page_numbering(
    api, make_instance, novita, convention
):
    make_instance(name="n-0", novita_instance_id="nov-0")
    items = list_items(*[remote_instance(f"nov-{i}", f"n-{i}") for i in range(250)])
    serve_list(novita, items, convention)

    body = api.get(URL).json()

    assert body["total"] == 250
    assert body["sources"] == {"local": 0, "novita": 249, "merged": 1}
    assert all(r["dataConsistency"] == "consistent" for r in body["instances"])


@pytest.mark.parametrize("convention", PAGE_CONVENTIONS)
def test_fleet_snapshot_is_complete_under_each_page_numbering(novita, convention):
    serve_list(novita, list_items(*[remote_instance(f"nov-{i}") for i in range(101)]), convention)
    taken = snapshot.fetch_snapshot()
    assert len(taken.rows) == len(taken.by_id) == 101
    assert taken.complete is True


def test_listing_reuses_one_upstream_pass_for_a_few_seconds(api, novita):
    serve_list(novita, list_items(remote_instance("nov-x", "theirs")))

    first = api.get(URL).json()
    second = api.get(URL).json()

    assert len(novita.calls("/gpu/instances")) == 1
    assert first["performance"]["cacheHit"] is False
    assert second["performance"]["cacheHit"] is True
    assert second["performance"]["cacheHitRatio"] == 0.5
    assert second["instances"] == first["instances"]
    for key in ("totalRequestTime", "novitaApiTime", "localDataTime", "mergeProcessingTime"):
        assert first["performance"][key] >= 0
    total = first["performance"]["totalRequestTime"]
    assert first["performance"]["novitaApiTime"] <= total


@pytest.fixture
def held_store(novita, monkeypatch):
    """One upstream instance listed, and snapshot stores held up until the returned event is
    set (or 10 s pass)."""
    serve_list(novita, list_items(remote_instance("nov-x", "theirs")))
    cache = snapshot._cache()
    release = threading.Event()
    real_set = cache.set

    def held_set(*args, **kwargs):
        release.wait(timeout=10)
        return real_set(*args, **kwargs)

    monkeypatch.setattr(cache, "set", held_set)
    monkeypatch.setattr(snapshot, "_cache", lambda: cache)
    yield release
    release.set()


def test_a_cold_listing_answers_before_its_snapshot_is_stored(api, novita, held_store):
    # Storing the snapshot (pickle, compress, write) is off the listing's path; the next
    # listing in the process waits for it and is served from it.
    first = api.get(URL)
    assert first.status_code == 200  # returned while the store is still held up
    assert snapshot._store_thread.is_alive()
    held_store.set()
    second = api.get(URL).json()

    assert second["performance"]["cacheHit"] is True
    assert len(novita.calls("/gpu/instances")) == 1


def test_a_store_that_hangs_holds_the_next_listing_only_briefly(
    api, novita, held_store, monkeypatch
):
    real_wait = snapshot.wait_for_store
    monkeypatch.setattr(snapshot, "wait_for_store", lambda: real_wait(timeout=0.2))
    api.get(URL)
    started = time.monotonic()
    second = api.get(URL)
    waited = time.monotonic() - started

    assert second.status_code == 200
    assert second.json()["performance"]["cacheHit"] is False  # it made a pass of its own
    assert waited < 5


def test_a_snapshot_that_cannot_be_stored_costs_the_next_listing_a_pass(
    api, novita, monkeypatch, caplog
):
    serve_list(novita, list_items(remote_instance("nov-x", "theirs")))
    cache = snapshot._cache()

    def broken_set(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(cache, "set", broken_set)
    monkeypatch.setattr(snapshot, "_cache", lambda: cache)

    assert api.get(URL).status_code == 200
    second = api.get(URL)

    assert second.status_code == 200
    assert second.json()["performance"]["cacheHit"] is False
    assert len(novita.calls("/gpu/instances")) == 2
    assert "fleet snapshot not cached" in caplog.text


def test_cached_pass_expires_after_its_short_lifetime(api, novita, monkeypatch):
    monkeypatch.setattr(snapshot, "UPSTREAM_CACHE_SECONDS", 0.05)
    serve_list(novita, list_items(remote_instance("nov-x", "theirs")))
    api.get(URL)
    time.sleep(0.1)
    api.get(URL)
    assert len(novita.calls("/gpu/instances")) == 2


def test_upstream_failure_is_an_error_envelope_and_nothing_is_cached(api, novita):
    novita.mock.get(
        f"{V1}/gpu/instances",
        json={"code": 503, "reason": "UNKNOWN", "message": "down"},
        status=503,
    )
    response = api.get(URL)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "NOVITA_API_ERROR"
    novita.mock.replace(
        "GET", f"{V1}/gpu/instances", json={"instances": [], "total": 0}, status=200
    )
    assert api.get(URL).status_code == 200


def test_a_listing_that_fails_mid_way_is_not_shown_as_the_fleet(api, novita):
    items = list_items(*[remote_instance(f"nov-{i}", f"n-{i}") for i in range(150)])

    def callback(request):
        num = int(parse_qs(urlsplit(request.url).query)["pageNum"][0])
        if num == 2:
            return 500, {}, json.dumps({"code": 500, "reason": "UNKNOWN", "message": "boom"})
        return 200, {}, json.dumps({"instances": items[:100], "total": 150})

    novita.mock.add_callback("GET", f"{V1}/gpu/instances", callback=callback)
    assert api.get(URL).status_code == 502


# --- syncLocalState ---------------------------------------------------------------------------


def test_sync_local_state_writes_upstream_truth_with_reconcile_events(api, make_instance, novita):
    stopped_outside = make_instance(name="a", novita_instance_id="nov-a", webhook_url=HOOK)
    fine = make_instance(name="b", novita_instance_id="nov-b")
    serve_list(
        novita,
        list_items(remote_instance("nov-a", "a", status="exited"), remote_instance("nov-b", "b")),
    )

    body = api.get(URL + "?syncLocalState=true").json()

    rows = by_name(body)
    assert rows["a"]["status"] == "exited" and rows["a"]["dataConsistency"] == "consistent"
    stopped_outside.refresh_from_db()
    assert stopped_outside.status == Status.EXITED
    assert stopped_outside.upstream_status == "exited"
    event = stopped_outside.events.get(to_status="exited")
    assert event.source == "reconcile" and "exited" in event.reason
    assert WebhookDelivery.objects.filter(instance=stopped_outside).count() == 1
    assert not fine.events.exists()
    fine.refresh_from_db()
    assert fine.status == Status.READY and fine.last_synced_at is not None


def test_sync_local_state_always_takes_a_fresh_pass(api, make_instance, novita):
    make_instance(name="a", novita_instance_id="nov-a")
    items = serve_list(novita, list_items(remote_instance("nov-a", "a")))
    api.get(URL)  # caches the running view
    items[0] = list_items(remote_instance("nov-a", "a", status="exited"))[0]

    body = api.get(URL + "?syncLocalState=true").json()

    assert len(novita.calls("/gpu/instances")) == 2
    assert by_name(body)["a"]["status"] == "exited"


def test_sync_confirms_before_terminating_an_instance_missing_upstream(api, make_instance, novita):
    gone = make_instance(name="gone", novita_instance_id="nov-gone")
    serve_list(novita, [])
    novita.get_returns(
        status=400, body={"code": 400, "reason": "RESOURCE_NOT_FOUND", "message": "not found"}
    )

    body = api.get(URL + "?syncLocalState=true").json()

    gone.refresh_from_db()
    assert gone.status == Status.TERMINATED
    assert gone.events.get(to_status="terminated").source == "reconcile"
    assert by_name(body)["gone"]["status"] == "terminated"
    assert len(novita.calls("/gpu/instance")) == 1


def test_sync_keeps_the_port_endpoints_list_items_lack(api, make_instance, novita):
    endpoints = [
        {"port": 8888, "endpoint": "https://abc.novita.test:8888", "type": "http"},
        {"port": 22, "endpoint": "abc.novita.test:22", "type": "tcp"},
    ]
    instance = make_instance(name="a", novita_instance_id="nov-a", port_mappings=endpoints)
    serve_list(novita, list_items(remote_instance("nov-a", "a", status="stopping")))

    api.get(URL + "?syncLocalState=true")

    instance.refresh_from_db()
    assert instance.status == Status.STOPPING
    assert instance.port_mappings == endpoints


def test_sync_leaves_instances_a_monitor_is_following_to_it(api, make_instance, novita):
    instance = make_instance(
        name="a",
        status=Status.STARTING,
        novita_instance_id="nov-a",
        next_poll_at=timezone.now() + timedelta(seconds=2),
    )
    serve_list(novita, list_items(remote_instance("nov-a", "a", status="exited")))

    api.get(URL + "?syncLocalState=true")

    instance.refresh_from_db()
    assert instance.status == Status.STARTING
    assert novita.calls("/gpu/instance/start") == []


# --- endpoint 4 (GET /api/instances) on the same machinery ------------------------------------


def test_list_default_reads_the_database_only(api, make_instance, novita):
    make_instance(name="a")
    body = api.get("/api/instances").json()
    assert body["total"] == 1 and "source" not in body["instances"][0]
    assert len(novita.mock.calls) == 0


def test_list_source_local_never_asks_upstream(api, make_instance, novita):
    make_instance(name="a")
    assert api.get("/api/instances?source=local&includeNovitaOnly=true").json()["total"] == 1
    assert len(novita.mock.calls) == 0


def test_list_source_novita_shows_what_upstream_lists(api, make_instance, novita):
    make_instance(name="mine", novita_instance_id="nov-mine")
    make_instance(name="local-only", novita_instance_id=None, status=Status.CREATING)
    serve_list(
        novita,
        list_items(remote_instance("nov-mine", "mine"), remote_instance("nov-x", "theirs")),
    )

    managed = api.get("/api/instances?source=novita").json()
    everything = api.get("/api/instances?source=novita&includeNovitaOnly=true").json()

    assert [(r["name"], r["source"]) for r in managed["instances"]] == [("mine", "merged")]
    assert {(r["name"], r["source"]) for r in everything["instances"]} == {
        ("mine", "merged"),
        ("theirs", "novita"),
    }
    assert everything["total"] == 2


def test_list_all_with_novita_only_merges_like_the_comprehensive_view(api, make_instance, novita):
    make_instance(name="mine", novita_instance_id="nov-mine")
    serve_list(
        novita,
        list_items(remote_instance("nov-mine", "mine"), remote_instance("nov-x", "theirs")),
    )
    body = api.get("/api/instances?source=all&includeNovitaOnly=true").json()
    assert {(r["name"], r["source"]) for r in body["instances"]} == {
        ("mine", "merged"),
        ("theirs", "novita"),
    }


def test_list_sync_local_state_updates_records(api, make_instance, novita):
    instance = make_instance(name="a", novita_instance_id="nov-a", desired_status=Desired.RUNNING)
    serve_list(novita, list_items(remote_instance("nov-a", "a", status="exited")))

    body = api.get("/api/instances?syncLocalState=true").json()

    instance.refresh_from_db()
    assert instance.status == Status.EXITED
    assert body["instances"][0]["status"] == "exited"
