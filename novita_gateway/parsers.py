"""Strict JSON: duplicate keys, NaN/Infinity and non-object bodies are client errors."""

import json

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


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
            )
        except (ValueError, UnicodeDecodeError) as exc:
            raise ParseError(f"Malformed JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ParseError("The request body must be a JSON object")
        return data
