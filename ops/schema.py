"""The error answers every endpoint can give, added to the schema in one place.

Views document their own errors (404 for an unknown instance, 409 for a state conflict...). What
the layers around every view can answer is added here, from the same rules those layers apply:
control characters in the path or query (400, RejectControlCharactersMiddleware), a body that
is not JSON (400/415, the parser), a missing key (401, auth), the rate limit (429, ratelimit),
an unreachable database (503, RequestContextMiddleware) and an Accept header no renderer serves
(406, DRF's content negotiation).
"""

from __future__ import annotations

from rest_framework.negotiation import DefaultContentNegotiation

from . import ratelimit

ENVELOPE = {"$ref": "#/components/schemas/ErrorOut"}


def _add(responses: dict, status: int, description: str) -> None:
    existing = responses.get(str(status))
    if existing is None:
        responses[str(status)] = {
            "content": {"application/json": {"schema": ENVELOPE}},
            "description": description,
        }
    elif description not in existing.get("description", ""):
        existing["description"] = "; ".join(
            filter(None, [existing.get("description"), description])
        )


def _negotiates(generator) -> set[tuple[str, str]]:
    """(path, METHOD) of the views that answer 406 to an Accept header they cannot serve."""
    found = set()
    for path, _regex, method, callback in generator.endpoints or []:
        view_class = getattr(callback, "cls", None)
        negotiation = getattr(view_class, "content_negotiation_class", None)
        if negotiation is not None and issubclass(negotiation, DefaultContentNegotiation):
            found.add((path, method.upper()))
    return found


def document_common_errors(result, generator, request, public):
    """drf-spectacular postprocessing hook (SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"])."""
    negotiating = _negotiates(generator)
    for path, item in result.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            _add(responses, 400, "VALIDATION_ERROR: control characters in the path or query")
            if "requestBody" in operation:
                _add(responses, 400, "VALIDATION_ERROR: the body is not a JSON object")
                _add(responses, 415, "UNSUPPORTED_MEDIA_TYPE: send JSON")
            if any(operation.get("security") or []):
                _add(responses, 401, "UNAUTHORIZED: a valid API key is required")
            if (path, method.upper()) in negotiating:
                _add(responses, 406, "NOT_ACCEPTABLE: the API answers application/json")
            if ratelimit.applies_to(path):
                _add(responses, 429, "RATE_LIMIT_EXCEEDED (Retry-After says when to retry)")
            if path != "/health":  # /health reports a database outage in its own 503 body
                _add(responses, 503, "SERVICE_UNAVAILABLE: the database is unreachable")
            operation["responses"] = dict(sorted(responses.items()))
    return result
