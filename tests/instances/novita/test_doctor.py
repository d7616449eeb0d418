"""novita_doctor's checks, run in-process against the sandbox in each of its emulation modes."""

from __future__ import annotations

import time

import pytest

from instances.novita.doctor import (
    CONFIRMED,
    CONTRADICTED,
    NOT_CHECKED,
    Doctor,
    detect_page_numbering,
    shape,
)
from instances.novita.sandbox import PAGE_NUMBERINGS, Sandbox

KEY = "sandbox-key-0123456789"
SMOKE = {"image": "ubuntu:22.04", "ports": "8888/http,22/tcp", "wait_seconds": 20}


def doctor_for(sb, **kwargs):
    lines = []
    options = {"poll_seconds": 0.02, "time_limit": 60, "call_timeout": 5, "out": lines.append}
    doctor = Doctor(sb.api_base_url, KEY, **{**options, **kwargs})
    return doctor, lines


def results(doctor):
    return {f.key: f.result for f in doctor.findings}


@pytest.fixture
def sandbox():
    made = []

    def make(**modes):
        sb = Sandbox(api_key=KEY, step_seconds=0.02, seed=5, **modes).serve()
        made.append(sb)
        return sb

    yield make
    for sb in made:
        sb.shutdown()


def deleted_or_deleting(sb, instance_id):
    return sb.status(instance_id) in (None, "toRemove", "removing", "removed")


@pytest.mark.parametrize("not_found", ["400", "404-json"])
@pytest.mark.parametrize("page_numbering", PAGE_NUMBERINGS)
def test_every_assumption_holds_against_the_sandbox_in_each_mode(
    sandbox, page_numbering, not_found
):
    sb = sandbox(page_numbering=page_numbering, not_found=not_found)
    doctor, lines = doctor_for(sb)
    doctor.run("CN-HK-01", **SMOKE)
    assert [f.line() for f in doctor.contradicted] == []
    found = results(doctor)
    # The smoke instance lets the doctor learn the instance listing's numbering too.
    for key in ("pagination.instances", "pagination.templates", "not_found.instance"):
        assert found[key] == CONFIRMED
    for key in ("smoke.running", "smoke.endpoints", "smoke.stop", "smoke.delete"):
        assert found[key] == CONFIRMED
    assert deleted_or_deleting(sb, doctor.created_id)
    assert set(lines) >= {f.line() for f in doctor.findings}


@pytest.mark.parametrize("page_numbering", PAGE_NUMBERINGS)
def test_page_numbering_is_learned_from_pages_zero_and_one(sandbox, page_numbering):
    sb = sandbox(page_numbering=page_numbering)
    sb.seed_instances(3)
    doctor, _ = doctor_for(sb)
    doctor.run()
    seen = next(f.seen for f in doctor.findings if f.key == "pagination.instances")
    assert f"pages count {page_numbering}:" in seen


def test_unknown_ids_answered_like_a_missing_route_are_contradicted(sandbox):
    sb = sandbox(not_found="404-route")
    doctor, _ = doctor_for(sb)
    doctor.run()
    assert [f.key for f in doctor.contradicted] == ["not_found.instance"]
    assert "API_NOT_FOUND" in doctor.contradicted[0].seen


def test_a_refused_key_is_reported_and_nothing_else_is_tried(sandbox):
    sb = sandbox()
    doctor = Doctor(sb.api_base_url, "wrong-key-123", out=lambda line: None)
    doctor.run()
    assert [(f.key, f.result) for f in doctor.findings] == [("auth.key", CONTRADICTED)]
    assert "wrong-key-123" not in doctor.findings[0].line()
    assert sb.call_count() == 1


def test_an_unmapped_region_is_contradicted_with_the_fix(sandbox):
    sb = sandbox()
    table = {"CN-HK-01": ("cn-hongkong-1",), "MARS-01": ("mars-1",)}
    doctor, _ = doctor_for(sb, region_table=table)
    doctor.run()
    assert [f.key for f in doctor.contradicted] == ["regions.MARS-01"]
    assert "NOVITA_REGION_CLUSTERS=MARS-01=" in doctor.contradicted[0].seen


def test_smoke_in_an_unknown_region_creates_nothing_and_fails(sandbox):
    sb = sandbox()
    doctor, _ = doctor_for(sb)
    doctor.run("MARS-01", **SMOKE)
    assert [f.key for f in doctor.contradicted] == ["smoke"]
    assert sb.call_count("/gpu/instance/create") == 0


def test_smoke_accepts_a_cluster_id_as_the_region(sandbox):
    sb = sandbox()
    doctor, _ = doctor_for(sb)
    doctor.run("us-dallas-1", **SMOKE)
    assert doctor.contradicted == []
    assert sb.call_count("/gpu/instance/delete") == 1


def test_an_unusable_answer_contradicts_and_an_outage_is_not_checked(sandbox):
    sb = sandbox()
    sb.set_fault(path="/templates", status=400, reason="VALIDATOR_PARAM")
    sb.set_fault(path="/jobs", status=503)
    doctor, _ = doctor_for(sb)
    doctor.run()
    found = results(doctor)
    assert found["templates.list"] == found["pagination.templates"] == CONTRADICTED
    assert found["jobs.list"] == NOT_CHECKED
    sb.clear_faults()
    sb.set_fault(path="/templates", status=503)
    doctor, _ = doctor_for(sb)
    doctor.run()
    assert results(doctor)["templates.list"] == NOT_CHECKED
    assert "upstream unavailable" in next(
        f.seen for f in doctor.findings if f.key == "templates.list"
    )


def test_read_only_run_creates_nothing(sandbox):
    sb = sandbox()
    doctor, _ = doctor_for(sb)
    doctor.run()
    assert results(doctor)["smoke"] == NOT_CHECKED
    assert sb.call_count("/gpu/instance/create") == 0
    assert {c["method"] for c in sb.calls()} == {"GET"}


def test_smoke_deletes_its_instance_when_interrupted_while_waiting(sandbox):
    sb = sandbox()
    sb.configure(step_seconds=5)  # the instance stays pending: the doctor is waiting

    def interrupt(_seconds):
        raise KeyboardInterrupt

    doctor, lines = doctor_for(sb, sleep=interrupt)
    with pytest.raises(KeyboardInterrupt):
        doctor.run("CN-HK-01", **SMOKE)
    (instance_id,) = sb.instance_ids()
    assert deleted_or_deleting(sb, instance_id)
    assert sb.call_count("/gpu/instance/delete") == 1
    assert any(line.startswith("cleanup: deleted instance") for line in lines)


def test_smoke_deletes_its_instance_when_a_check_crashes(sandbox):
    sb = sandbox()

    def broken_probe(mapping, timeout):
        raise RuntimeError("probe bug")

    doctor, _ = doctor_for(sb, probe=broken_probe)
    with pytest.raises(RuntimeError):
        doctor.run("CN-HK-01", **SMOKE)
    (instance_id,) = sb.instance_ids() or [doctor.created_id]
    assert deleted_or_deleting(sb, instance_id)


def test_smoke_that_upstream_refuses_is_contradicted_and_leaves_nothing(sandbox):
    sb = sandbox()
    sb.set_fault(path="/gpu/instance/stop", status=400, reason="DEPENDENT_RESOURCE_STATE")
    doctor, _ = doctor_for(sb)
    doctor.run("CN-HK-01", **SMOKE)
    assert results(doctor)["smoke.aborted"] == CONTRADICTED
    assert sb.call_count("/gpu/instance/delete") == 1
    assert deleted_or_deleting(sb, doctor.created_id)


def test_smoke_cut_by_the_time_limit_still_deletes_its_instance(sandbox):
    sb = sandbox()
    sb.configure(step_seconds=10)  # never running within the limit
    # Room for the checks before the smoke test on a busy machine (2 s was cut before it once).
    doctor, lines = doctor_for(sb, time_limit=4.0)
    doctor.run("CN-HK-01", **SMOKE)
    found = results(doctor)
    assert found["smoke.running"] == NOT_CHECKED
    assert CONTRADICTED not in found.values()
    assert sb.call_count("/gpu/instance/delete") == 1
    assert deleted_or_deleting(sb, doctor.created_id)


def test_the_time_limit_bounds_the_run(sandbox):
    sb = sandbox()
    sb.set_fault(latency_ms=300)  # every call slow, none failing
    doctor, _ = doctor_for(sb, time_limit=1.0)
    started = time.monotonic()
    doctor.run()
    assert time.monotonic() - started < 3.0
    assert NOT_CHECKED in results(doctor).values()
    assert any(f.seen == "time limit reached" for f in doctor.findings)


def test_shape_shows_enums_and_types_and_masks_secrets():
    body = {
        "code": 400,
        "reason": "RESOURCE_NOT_FOUND",
        "message": "instance x not found",
        "metadata": {},
        "connectComponentSSH": {"sshCommand": "ssh root@h", "password": "hunter2"},
        "ports": [{"port": 22}],
    }
    text = shape(body)
    assert "reason: 'RESOURCE_NOT_FOUND'" in text and "code: 400" in text
    assert "hunter2" not in text and "password: ***" in text
    assert "instance x" not in text and "message: str" in text


@pytest.mark.parametrize(
    ("pages", "total", "convention"),
    [
        ([["a"], ["b"], ["c"]], 3, "zero"),
        ([["a"], [], []], 1, "zero"),
        ([[], ["a"], ["b"]], 2, "one"),
        ([["a"], ["a"], ["b"]], 2, "zero-as-one"),
        ([["a"], ["a"], ["a"]], 5, "ignored"),
        ([[], [], []], 0, None),
    ],
)
def test_page_numbering_detection(pages, total, convention):
    assert detect_page_numbering(pages, total)[0] == convention
