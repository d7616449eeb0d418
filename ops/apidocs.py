"""The API reference in docs/, generated from the OpenAPI schema (the source of truth):
docs/openapi.yaml as drf-spectacular writes it, and docs/api.md, the same schema as Markdown."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from django.conf import settings
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiYamlRenderer

DOCS_DIR = Path(settings.BASE_DIR) / "docs"
METHODS = ("get", "post", "put", "patch", "delete")

INTRO = """\
# API reference

Generated from the OpenAPI schema ([`openapi.yaml`](openapi.yaml)) by
`.venv/bin/python manage.py api_docs`; do not edit by hand (a test fails when either file is
stale). The running gateway serves the same schema at `/api/schema/` and a Swagger UI at
`/api/docs/` (`/` redirects there).

- **Authentication**: send a client key (see the README's *Client API keys*) as
  `Authorization: Bearer <key>` or `X-API-Key: <key>`; a missing, wrong or revoked key is
  `401 UNAUTHORIZED`. With no key configured the API refuses every call unless
  `ALLOW_OPEN_API=true` (as `make run` sets on the sandbox). `/health` and the docs never need one.
- **Errors**: every error, whatever the status, is the envelope
  `{"error": {"code", "message", "details", "timestamp", "requestId"}}`; `details` lists each
  invalid field for `VALIDATION_ERROR`. `X-Request-ID` is echoed (or generated).
- **Names on the wire** are camelCase; timestamps are ISO 8601 UTC with milliseconds.
- `GET /health` (dependency checks) and `GET /metrics` (Prometheus text) are described here
  too; the README says how to use them.
"""


def schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def schema_yaml(data: dict) -> str:
    return OpenApiYamlRenderer().render(data, renderer_context={}).decode()


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _type(prop: dict) -> str:
    if "$ref" in prop:
        name = _ref_name(prop["$ref"])
        return f"[{name}](#{name.lower()})"
    if "allOf" in prop:
        return " & ".join(_type(p) for p in prop["allOf"])
    if "oneOf" in prop:
        return " or ".join(_type(p) for p in prop["oneOf"])
    kind = prop.get("type", "object")
    if kind == "array":
        return f"array of {_type(prop.get('items') or {})}"
    if prop.get("format"):
        kind = f"{kind} ({prop['format']})"
    if prop.get("nullable"):
        kind += ", nullable"
    return kind


def _constraints(prop: dict) -> str:
    parts = []
    if "enum" in prop:
        parts.append("one of " + ", ".join(f"`{v}`" for v in prop["enum"] if v is not None))
    for key, label in (
        ("minimum", "min"),
        ("maximum", "max"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
    ):
        if key in prop:
            parts.append(f"{label} {prop[key]}")
    if "pattern" in prop:
        parts.append(f"pattern `{prop['pattern']}`")
    if "default" in prop:
        parts.append(f"default `{json.dumps(prop['default'])}`")
    return "; ".join(parts)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _fields_table(component: dict) -> list[str]:
    props = component.get("properties") or {}
    if not props:
        return ["Any JSON object." if component.get("type") == "object" else ""]
    required = set(component.get("required") or [])
    lines = ["| Field | Type | Required | Notes |", "|---|---|---|---|"]
    for name, prop in props.items():
        notes = "; ".join(p for p in (_cell(prop.get("description", "")), _constraints(prop)) if p)
        if prop.get("readOnly"):
            notes = "read-only; " + notes if notes else "read-only"
        lines.append(
            f"| `{name}` | {_type(prop)} | {'yes' if name in required else ''} | {_cell(notes)} |"
        )
    return lines


def _body_type(content: dict | None) -> str:
    if not content:
        return ""
    media = content.get("application/json") or next(iter(content.values()), {})
    return _type(media.get("schema") or {})


def _operation(path: str, method: str, op: dict) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", ""]
    if op.get("summary"):
        lines += [f"**{op['summary']}**", ""]
    if op.get("description"):
        lines += [op["description"].strip(), ""]
    params = op.get("parameters") or []
    if params:
        lines += ["| Parameter | In | Type | Required | Notes |", "|---|---|---|---|---|"]
        for p in params:
            prop = p.get("schema") or {}
            notes = "; ".join(x for x in (_constraints(prop),) if x)
            lines.append(
                f"| `{p['name']}` | {p['in']} | {_type(prop)} | "
                f"{'yes' if p.get('required') else ''} | {_cell(notes)} |"
            )
        lines.append("")
    body = op.get("requestBody")
    if body:
        required = " (required)" if body.get("required") else ""
        lines += [f"Request body{required}: {_body_type(body.get('content'))}", ""]
    lines += ["| Status | Body | Meaning |", "|---|---|---|"]
    for status, response in (op.get("responses") or {}).items():
        lines.append(
            f"| {status} | {_body_type(response.get('content')) or '-'} | "
            f"{_cell(response.get('description') or '')} |"
        )
    lines.append("")
    return lines


def markdown(data: dict) -> str:
    info = data.get("info") or {}
    lines = [INTRO, f"{info.get('title', '')} {info.get('version', '')}".strip(), ""]
    by_tag: dict[str, list[tuple[str, str, dict]]] = {}
    for path, item in (data.get("paths") or {}).items():
        for method in METHODS:
            if method in item:
                tag = (item[method].get("tags") or ["other"])[0]
                by_tag.setdefault(tag, []).append((path, method, item[method]))
    lines += ["## Endpoints", ""]
    for tag in sorted(by_tag):
        lines += [f"- {tag}: " + ", ".join(f"`{m.upper()} {p}`" for p, m, _ in by_tag[tag])]
    lines.append("")
    for tag in sorted(by_tag):
        lines += [f"## {tag.capitalize()}", ""]
        for path, method, op in by_tag[tag]:
            lines += _operation(path, method, op)
    lines += ["## Schemas", ""]
    for name, component in ((data.get("components") or {}).get("schemas") or {}).items():
        lines += [f"### {name}", ""]
        if component.get("description"):
            lines += [_cell(component["description"]), ""]
        if "enum" in component:
            lines += [_constraints(component).capitalize(), ""]
            continue
        lines += [*_fields_table(component), ""]
    return "\n".join(lines).rstrip() + "\n"


def render() -> dict[Path, str]:
    """What docs/ should hold, file by file."""
    data = schema()
    text = schema_yaml(data)
    # The Markdown is built from the YAML as written, so both files always agree.
    return {
        DOCS_DIR / "openapi.yaml": text,
        DOCS_DIR / "api.md": markdown(yaml.safe_load(text)),
    }
