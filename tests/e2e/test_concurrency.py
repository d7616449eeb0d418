"""Concurrent requests and overlapping sweeps against the real processes.

Requests go through gunicorn (two processes of four threads) from a thread pool, so they really
overlap inside the service; with SQLite writers take turns, with PostgreSQL (CI) they race for
row locks. The auto-stop sweeps run in two separate processes against the stack's database.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.stack import ROOT, Stack, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CREATE = {"productName": "RTX 4090 24GB", "templateId": "pytorch-jupyter"}


@pytest.fixture(scope="module")
def stack():
    with Stack(step_seconds=0.1, web_workers=2).running() as s:
        yield s


def fire(stack, calls: list[tuple[str, str, dict | None]]):
    barrier = threading.Barrier(len(calls))

    def run(call):
        method, path, body = call
        barrier.wait(timeout=30)
        return stack.api(method, path, json=body, timeout=60)

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def code(response) -> str | None:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def path_calls(stack, path: str) -> int:
    return stack.upstream_calls()["byPath"].get(path, 0)


@pytest.fixture
def creates_rejected_upstream(stack):
    # The promise here is the API's; upstream refusing every create keeps 100 provisioning
    # workers from loading the machine for the rest of the module.
    stack.fault(path="/gpu/instance/create", status=400, reason="INSUFFICIENT_RESOURCE")
    yield
    wait_until(
        lambda: "creating" not in {r["status"] for r in local_rows(stack)},
        60,
        interval=0.5,
        message="every refused create to end failed",
    )
    stack.clear_faults()


def local_rows(stack) -> list[dict]:
    return stack.api("GET", "/api/instances").json()["instances"]


def local_names(stack) -> collections.Counter:
    return collections.Counter(r["name"] for r in local_rows(stack))


def test_fifty_parallel_creates_with_distinct_names_all_succeed(stack, creates_rejected_upstream):
    """50 creates with distinct names at the same moment: every one answers 201 and exactly 50
    records exist, one per name."""
    names = [f"parallel-{i}" for i in range(50)]
    responses = fire(stack, [("POST", "/api/instances", {"name": n, **CREATE}) for n in names])
    assert [r.status_code for r in responses] == [201] * 50, [
        (r.status_code, r.text[:200]) for r in responses if r.status_code != 201
    ]
    assert len({r.json()["instanceId"] for r in responses}) == 50
    counts = local_names(stack)
    assert all(counts[n] == 1 for n in names)


def test_fifty_parallel_creates_with_one_name_make_exactly_one(stack, creates_rejected_upstream):
    """50 creates with the same name at the same moment: exactly one 201, the other 49 answer
    409 INSTANCE_ALREADY_EXISTS, and one record exists."""
    responses = fire(stack, [("POST", "/api/instances", {"name": "contested", **CREATE})] * 50)
    statuses = collections.Counter(r.status_code for r in responses)
    assert statuses == {201: 1, 409: 49}, [(r.status_code, r.text[:200]) for r in responses]
    assert {code(r) for r in responses if r.status_code == 409} == {"INSTANCE_ALREADY_EXISTS"}
    assert local_names(stack)["contested"] == 1


def test_fifty_parallel_creates_reusing_a_terminated_name_make_exactly_one(
    stack, creates_rejected_upstream
):
    """A terminated instance's name is free again, but only for one of 50 racing creates."""
    first = stack.api("POST", "/api/instances", json={"name": "reborn", **CREATE}).json()
    deleted = stack.api("DELETE", f"/api/instances/{first['instanceId']}")
    assert deleted.status_code in (200, 202)
    stack.wait_status(first["instanceId"], "terminated", timeout=60)

    responses = fire(stack, [("POST", "/api/instances", {"name": "reborn", **CREATE})] * 50)

    statuses = collections.Counter(r.status_code for r in responses)
    assert statuses == {201: 1, 409: 49}, [(r.status_code, r.text[:200]) for r in responses]
    assert local_names(stack)["reborn"] == 2  # the terminated one and the new one


def test_parallel_stops_and_starts_on_one_instance_act_once(stack):
    """Ten stops and five starts at the same moment on a ready instance: the stops are one
    stop (every 200 carries the same operation; a stop that lost the race to the state change
    may get a clear 409), the starts are refused with a clear 409, upstream gets exactly one
    stop call and no start, and the instance ends stopped. Then ten starts at once on the
    stopped instance: one is accepted, one upstream start call, and it ends ready."""
    instance_id = stack.api("POST", "/api/instances", json={"name": "contended", **CREATE}).json()[
        "instanceId"
    ]
    stack.wait_status(instance_id, "ready", timeout=60)
    stops_before = path_calls(stack, "/gpu/instance/stop")
    starts_before = path_calls(stack, "/gpu/instance/start")

    stop = ("POST", f"/api/instances/{instance_id}/stop", {})
    start = ("POST", f"/api/instances/{instance_id}/start", {})
    responses = fire(stack, [stop] * 10 + [start] * 5)
    stop_answers, start_answers = responses[:10], responses[10:]
    accepted = [r for r in stop_answers if r.status_code == 200]
    assert accepted and {r.status_code for r in stop_answers} <= {200, 409}
    assert len({r.json()["operationId"] for r in accepted}) == 1
    assert {code(r) for r in stop_answers if r.status_code == 409} <= {
        "INSTANCE_STATE_CHANGED",
        "INSTANCE_NOT_STOPPABLE",  # a straggler that arrived after the stop completed
    }
    assert {r.status_code for r in start_answers} == {409}
    assert {code(r) for r in start_answers} <= {"INSTANCE_NOT_STARTABLE", "INSTANCE_STATE_CHANGED"}
    stack.wait_status(instance_id, "stopped", timeout=60)
    assert path_calls(stack, "/gpu/instance/stop") - stops_before == 1
    assert path_calls(stack, "/gpu/instance/start") - starts_before == 0

    responses = fire(stack, [start] * 10)
    assert sorted(r.status_code for r in responses) == [202] + [409] * 9
    stack.wait_status(instance_id, "ready", timeout=60)
    assert path_calls(stack, "/gpu/instance/start") - starts_before == 1
    assert path_calls(stack, "/gpu/instance/stop") - stops_before == 1


SEED_IDLE = """
import json
from datetime import timedelta
from django.utils import timezone
from instances.models import Instance
now = timezone.now()
ids = json.loads({ids!r})
Instance.objects.bulk_create([
    Instance(
        name=f"idle-{{i}}", product_name="RTX 4090 24GB", template_id="pytorch-jupyter",
        status="ready", desired_status="running", novita_instance_id=upstream_id,
        ready_at=now - timedelta(hours=1), auto_stop_at=now - timedelta(minutes=1),
    )
    for i, upstream_id in enumerate(ids)
])
"""

# Both sweeps select before either claims (each waits for the other after its SELECT), so the
# claims really race; what happens after that is the product's own code.
LINED_UP_SWEEP = """
import json, pathlib, time
from instances.services import autostop
me, other = pathlib.Path({me!r}), pathlib.Path({other!r})
select = autostop._select_due
def lined_up(now):
    rows = select(now)
    me.touch()
    deadline = time.monotonic() + 30
    while not other.exists() and time.monotonic() < deadline:
        time.sleep(0.002)
    return rows
autostop._select_due = lined_up
result = autostop.sweep()
print(json.dumps({{"stopped": result.stopped, "candidates": len(result.candidates),
                  "failures": result.failures}}))
"""


def test_overlapping_auto_stop_sweeps_stop_each_idle_instance_once(stack):
    """Two auto-stop sweeps in two processes over the same 12 idle instances, both selecting
    before either claims: between them every instance is stopped, none by both, and upstream
    receives exactly one (successful) stop call per instance."""
    seeded = stack.sandbox(
        "POST", "/_sandbox/seed", json={"count": 12, "status": "running", "namePrefix": "idle"}
    ).json()["ids"]
    stack.shell(SEED_IDLE.format(ids=json.dumps(seeded)))
    stops_before = path_calls(stack, "/gpu/instance/stop")

    marks = [stack.tmp / "sweep-a-selected", stack.tmp / "sweep-b-selected"]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "shell",
                "--no-imports",
                "-c",
                LINED_UP_SWEEP.format(me=str(me), other=str(other)),
            ],
            cwd=ROOT,
            env=stack.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for me, other in (marks, marks[::-1])
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))

    assert [r["candidates"] for r in results] == [12, 12], results
    assert all(r["failures"] == [] for r in results), results
    first, second = (set(r["stopped"]) for r in results)
    assert not first & second
    assert len(first | second) == 12
    assert path_calls(stack, "/gpu/instance/stop") - stops_before == 12
    recent = stack.sandbox("GET", "/_sandbox/calls", params={"limit": 10000}).json()["recent"]
    stop_statuses = [c["status"] for c in recent if c["path"] == "/gpu/instance/stop"]
    assert stop_statuses[-12:] == [200] * 12
