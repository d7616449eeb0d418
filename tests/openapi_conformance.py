"""Every response the test suite gets from the gateway is checked against the OpenAPI schema.

tests/conftest.py wraps Django's test client (DRF's APIClient goes through it too) so that each
response to one of the gateway's routes must be documented: its status code among the
operation's responses, its content type among that response's media types, and a JSON body that
validates against the documented schema. Objects are checked strictly: a field the schema does
not list is an error, so a body and its schema cannot drift apart unnoticed.

Routes a test adds of its own (views in tests/) and the schema and docs pages are not checked.
An undocumented method on a documented path must answer 405, an unknown path 404, both in the
error envelope.
"""

from __future__ import annotations

import copy
import json
import re
from functools import cache

from django.urls import Resolver404, resolve
from jsonschema import Draft202012Validator

from ops import apidocs

UNCHECKED_PREFIXES = ("/api/schema/", "/api/docs/", "/admin/", "/static/")
CHECKED_PREFIXES = ("/api/", "/health", "/metrics")
BEFORE_THE_VIEW = (400, 401, 429, 503)


@cache
def schema() -> dict:
    return apidocs.schema()


def _strict(node):
    """OpenAPI 3.0 schema -> JSON Schema: `nullable` becomes a null alternative, and objects
    with listed properties accept no others unless they say so."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _strict(value) for key, value in node.items()}
    if out.get("type") == "object" and "properties" in out:
        out.setdefault("additionalProperties", False)
    if out.pop("nullable", False):
        return {"anyOf": [out, {"type": "null"}]}
    return out


@cache
def _components() -> dict:
    return {"schemas": _strict(copy.deepcopy(schema()["components"]["schemas"]))}


@cache
def _operations() -> list[tuple[re.Pattern, str, dict]]:
    """(path pattern, template, path item), templates without parameters first."""
    items = []
    for template, item in schema()["paths"].items():
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        items.append((template.count("{"), template, re.compile(f"^{pattern}$"), item))
    items.sort(key=lambda entry: entry[:2])
    return [(pattern, template, item) for _, template, pattern, item in items]


def _documented_path(path: str) -> tuple[str, dict] | None:
    for pattern, template, item in _operations():
        if pattern.match(path):
            return template, item
    return None


def _is_test_route(path: str) -> bool:
    try:
        match = resolve(path)
    except Resolver404:
        return False
    return (getattr(match.func, "__module__", "") or "").startswith("tests.")


def _validate_body(body_schema: dict, response, where: str) -> None:
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        raise AssertionError(f"{where}: documented as JSON, body is not JSON") from exc
    document = {**_strict(copy.deepcopy(body_schema)), "components": _components()}
    errors = sorted(Draft202012Validator(document).iter_errors(body), key=lambda e: e.path)
    if errors:
        lines = [
            f"  at {'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}" for e in errors
        ]
        raise AssertionError(f"{where}: body does not match the schema\n" + "\n".join(lines[:10]))


def _error_envelope_schema() -> dict:
    return {"$ref": "#/components/schemas/ErrorOut"}


def check(method: str, path: str, response) -> str | None:
    """Raise AssertionError when the response is not what the schema documents; return the
    operation's "METHOD template status" key when one was checked."""
    if path.startswith(UNCHECKED_PREFIXES) or not path.startswith(CHECKED_PREFIXES):
        return None
    if _is_test_route(path):
        return None
    method = method.lower()
    status = response.status_code
    where = f"{method.upper()} {path} -> {status}"
    found = _documented_path(path)
    if found is None:
        # Before routing, the request checks (control characters, body size, rate limit) may
        # answer an unknown path too: /api/instances/\r?source=%7F is a 400, not a 404.
        assert status in (404, *BEFORE_THE_VIEW), f"{where}: path is not in the schema"
        _validate_body(_error_envelope_schema(), response, where)
        return None
    template, item = found
    operation = item.get(method if method != "head" else "get")
    if operation is None:
        # The layers before the view (path checks, auth, rate limit) may answer first.
        assert status in (405, *BEFORE_THE_VIEW), f"{where}: method not documented for {template}"
        _validate_body(_error_envelope_schema(), response, where)
        return None
    responses = operation["responses"]
    documented = responses.get(str(status)) or responses.get("default")
    assert documented is not None, (
        f"{where}: status {status} not documented for {method.upper()} {template} "
        f"(documented: {', '.join(sorted(responses))})"
    )
    content = documented.get("content") or {}
    media_type = (response.get("Content-Type") or "").split(";")[0].strip()
    if not content:
        assert not response.content, f"{where}: documented without a body, got one"
        return f"{method.upper()} {template} {status}"
    assert media_type in content, (
        f"{where}: content type {media_type!r} not documented ({', '.join(content)})"
    )
    body_schema = content[media_type].get("schema")
    if method != "head" and body_schema and media_type == "application/json":
        _validate_body(body_schema, response, where)
    return f"{method.upper()} {template} {status}"
