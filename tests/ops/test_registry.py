"""ops learns about instances only through ops/registry.py, filled by the instances app."""

import pytest

from ops import registry


@pytest.fixture
def saved_facts():
    saved = dict(vars(registry.facts))
    yield registry.facts
    for name, provider in saved.items():
        setattr(registry.facts, name, provider)


def test_the_instances_app_supplies_every_fact_at_start_up():
    assert all(provider is not None for provider in vars(registry.facts).values())


def test_a_fact_nobody_supplies_reads_as_unknown(saved_facts):
    registry.register(breaker_state=None)
    assert registry.read("breaker_state") is None


def test_a_failing_fact_reads_as_unknown_and_metrics_still_answer(saved_facts, api, db):
    def broken():
        raise RuntimeError("database gone")

    registry.register(instances_by_status=broken, breaker_state=broken)
    assert registry.read("instances_by_status") is None
    response = api.get("/metrics")
    assert response.status_code == 200
    assert b"ngw_instances{" not in response.content
    assert b"ngw_http_requests" in response.content


def test_health_counts_instances_through_the_registry(saved_facts, api, db):
    registry.register(instances_by_status=lambda: {"ready": 2, "stopped": 1})
    body = api.get("/health").json()
    assert body["dependencies"]["cache"]["totalStates"] == 3


def test_an_unknown_fact_name_is_refused():
    with pytest.raises(TypeError, match="no_such_fact"):
        registry.register(no_such_fact=lambda: 1)
