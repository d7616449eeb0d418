"""Strict JSON: duplicate keys, NaN/Infinity (also as overflowing numbers such as 1e400),
nesting deeper than MAX_DEPTH, control characters in strings and non-object bodies are client
errors, answered 400 before any view, serializer or database sees them."""

import json
import math
import re

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# No request of the contract nests more than three levels; generous, but far from recursion.
MAX_DEPTH = 32
# C0 controls, DEL and C1 controls: never meaningful in a name, id, URL or date, and NUL cannot
# even be stored by PostgreSQL.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def check_structure(data) -> None:
    """Raise ValueError when `data` nests deeper than MAX_DEPTH or a string (key or value)
    holds a control character. Iterative, so no input can exhaust the stack here."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if CONTROL_CHARACTERS.search(value):
                raise ValueError("strings must not contain control characters")
        elif isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
            if isinstance(value, dict):
                stack.extend((key, depth) for key in value)
                stack.extend((item, depth + 1) for item in value.values())
            else:
                stack.extend((item, depth + 1) for item in value)


def _no_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key '{key}'")
        seen[key] = value
    return seen


def _no_constants(name):
    raise ValueError(f"'{name}' is not valid JSON")


class StrictJSONParser(JSONParser):
    """JSON parser that rejects what lenient parsers let through silently."""

    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read(settings.MAX_REQUEST_BODY_BYTES + 1) if stream else b""
        if len(raw) > settings.MAX_REQUEST_BODY_BYTES:
            raise ParseError("Request body too large")
        if not raw.strip():
            return {}
        try:
            data = json.loads(
                raw.decode("utf-8"),
                object_pairs_hook=_no_duplicates,
                parse_constant=_no_constants,
                parse_float=_finite,
            )
            check_structure(data)
        except RecursionError:
            raise ParseError(f"Malformed JSON: nested deeper than {MAX_DEPTH} levels") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ParseError(f"Malformed JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ParseError("The request body must be a JSON object")
        return data
