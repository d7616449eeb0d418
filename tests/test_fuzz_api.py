"""Property-based fuzzing of every API endpoint: whatever a client sends, the answer is never a
500, and every error uses the contract's envelope.

Bodies are drawn from the endpoints' real field names with values of every JSON type (and some
raw, non-JSON bytes), so the generator reaches the validators instead of stopping at "unknown
field". Hostile shapes are drawn too: JSON nested far deeper than any request, numbers that
overflow to infinity (1e400), and control characters (NUL included) in body strings, in the
instance id of the path and in query keys and values. Upstream is mocked as unavailable: paths
that reach it must turn that into a clean error. Bounded by `max_examples` so the run stays short.

CI runs this with DATABASE_URL on PostgreSQL, where a NUL reaching a query is a driver error
(a 500) rather than a miss as on SQLite; the @example cases make sure those inputs are tried on
every run, not only when the generator happens to draw them.
"""

import json
from urllib.parse import urlencode

import pytest
import responses
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from instances.models import Instance
from instances.status import Status

pytestmark = pytest.mark.django_db

FIELDS = [
    "name",
    "productName",
    "templateId",
    "gpuNum",
    "rootfsSize",
    "region",
    "webhookUrl",
    "healthCheckConfig",
    "targetPort",
    "instanceName",
    "lastUsedAt",
    "dryRun",
    "cacheName",
    "autoStopMinutes",
    "autoStopEnabled",
    "billingMode",
    "timeoutMs",
    "retryAttempts",
    "retryDelayMs",
    "maxWaitTimeMs",
]

control_text = st.text(alphabet=st.characters(categories=("Cc",)), min_size=1, max_size=5).flatmap(
    lambda cc: st.sampled_from([cc, f"a{cc}b", f"fuzz-1{cc}"])
)
overflowing = st.sampled_from(["1e400", "-1e400", "1e309", "9" * 310 + ".0", "-4e999"])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(
        [
            "fuzz-1",
            "RTX 4090 24GB",
            "pytorch-jupyter",
            "CN-HK-01",
            "https://hooks.example.com/x",
            "2024-01-15T10:30:00.000Z",
            "true",
            "",
            "inst_missing",
            "\x00",
            "é" * 3,
            "9" * 400,
        ]
    ),
    control_text,
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=8,
)


def _nested(depth: int, field: str) -> str:
    return json.dumps({"name": "fuzz-1"})[:-1] + f', "{field}": ' + "[" * depth + "]" * depth + "}"


def _with_raw_number(field: str, number: str, extra: dict) -> str:
    # json.dumps cannot write 1e400 (it would say Infinity): splice the raw text in.
    head = json.dumps(extra)[:-1]
    return f'{head}{", " if extra else ""}"{field}": {number}}}'


bodies = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), values, max_size=8).map(json.dumps),
    values.map(json.dumps),
    st.binary(max_size=64).map(lambda b: b.decode("latin-1")),
    st.builds(_nested, st.integers(min_value=30, max_value=20000), st.sampled_from(FIELDS)),
    st.builds(
        _with_raw_number,
        st.sampled_from(FIELDS),
        overflowing,
        st.dictionaries(st.sampled_from(FIELDS), scalars, max_size=3),
    ),
    st.dictionaries(control_text, scalars, min_size=1, max_size=2).map(json.dumps),
)

ENDPOINTS = [
    ("POST", "/api/instances"),
    ("GET", "/api/instances"),
    ("GET", "/api/instances/comprehensive"),
    ("GET", "/api/instances/{id}"),
    ("DELETE", "/api/instances/{id}"),
    ("POST", "/api/instances/{id}/start"),
    ("POST", "/api/instances/{id}/stop"),
    ("POST", "/api/instances/start"),
    ("POST", "/api/instances/stop"),
    ("PUT", "/api/instances/{id}/last-used"),
    ("PUT", "/api/instances/last-used"),
    ("GET", "/api/instances/auto-stop/stats"),
    ("POST", "/api/instances/auto-stop/trigger"),
    ("GET", "/api/cache/stats"),
    ("POST", "/api/cache/clear"),
    ("GET", "/api/metrics"),
    ("GET", "/api/metrics/summary"),
]

query_values = st.one_of(
    st.sampled_from(["true", "false", "1", "", "all", "novita", "local", "x" * 300, "%00", "tru€"]),
    control_text,
)
query_keys = st.one_of(
    st.sampled_from(["source", "includeNovitaOnly", "syncLocalState"]), control_text
)
ids = st.one_of(
    st.just("KNOWN"),
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/?#%"),
        min_size=1,
        max_size=30,
    ),
    # Percent-encoded control characters: the path is decoded before any view sees it.
    st.sampled_from(["%00", "inst_%00", "%01", "%0a", "%1b", "%7f", "%c2%85"]),
    control_text.map(lambda t: t.replace("/", "").replace("?", "").replace("#", "") or "\x00"),
)


@pytest.fixture
def upstream_down():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        # Anything reaching the fake upstream host gets a 503.
        import re

        for method in ("GET", "POST"):
            mock.add(
                method,
                re.compile(r"https://novita\.test/.*"),
                status=503,
                json={"code": 503, "reason": "UNKNOWN", "message": "down"},
            )
        yield mock


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    body=bodies,
    instance_id=ids,
    query=st.dictionaries(query_keys, query_values, max_size=3),
)
@example(endpoint=("GET", "/api/instances/{id}"), body="", instance_id="%00", query={})
# The client drops the \r, leaving an unknown path whose query is refused before routing (400).
@example(
    endpoint=("GET", "/api/instances/{id}"), body="", instance_id="\r", query={"source": "\x7f"}
)
@example(endpoint=("DELETE", "/api/instances/{id}"), body="", instance_id="inst_\x00", query={})
@example(
    endpoint=("POST", "/api/instances/start"),
    body='{"instanceName": "fuzz-known\\u0000"}',
    instance_id="KNOWN",
    query={},
)
@example(
    endpoint=("PUT", "/api/instances/{id}/last-used"),
    body='{"lastUsedAt": 1e400}',
    instance_id="KNOWN",
    query={},
)
@example(
    endpoint=("POST", "/api/instances"),
    body=_with_raw_number("autoStopMinutes", "1e400", {"name": "fuzz-2"}),
    instance_id="KNOWN",
    query={},
)
@example(
    endpoint=("POST", "/api/instances"), body=_nested(20000, "name"), instance_id="KNOWN", query={}
)
@example(endpoint=("GET", "/api/instances"), body="", instance_id="KNOWN", query={"source": "\x00"})
def test_no_input_makes_the_api_answer_500(
    client, upstream_down, endpoint, body, instance_id, query
):
    known, _ = Instance.objects.get_or_create(
        name="fuzz-known",
        defaults={
            "product_name": "RTX 4090 24GB",
            "template_id": "pytorch-jupyter",
            "status": Status.READY,
            "novita_instance_id": "nov-fuzz",
        },
    )
    method, path = endpoint
    path = path.replace("{id}", known.id if instance_id == "KNOWN" else instance_id)
    response = client.generic(
        method,
        path,
        data=body.encode("utf-8", "surrogatepass"),
        content_type="application/json",
        QUERY_STRING=urlencode(query),
    )
    assert response.status_code < 500 or response.status_code in (502, 503), (
        method,
        path,
        body,
        response.status_code,
        response.content[:500],
    )
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"code", "message", "details", "timestamp", "requestId"}
