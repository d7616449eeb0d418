"""JSON log lines carrying the request id, with secrets masked."""

import json
import logging
import re
import time

import orjson

from novita_gateway.context import current_correlation_id, current_request_id

# Anything shaped like a credential is masked even if a careless caller logs it.
_SECRET_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{6,}"),
    re.compile(
        r"(?i)((?:api[_-]?key|secret|password|token|authorization)[\"']?\s*[:=]\s*[\"']?)"
        r"[^\s\"',&}]{3,}"
    ),
]


# Each pattern above needs one of these words; a line without any (every access-log line of a
# normal request) skips the two regular expressions.
_SECRET_HINTS = ("bearer", "key", "secret", "password", "token", "authorization")


def redact(text: str) -> str:
    lowered = text.lower()
    if not any(hint in lowered for hint in _SECRET_HINTS):
        return text
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(r"\1[REDACTED]", text)
    return text


class RequestContextFilter(logging.Filter):
    """Attach the current request/correlation ids to every record."""

    def filter(self, record):
        record.request_id = current_request_id()
        record.correlation_id = current_correlation_id()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra fields given with `extra={"fields": {...}}`."""

    # Every request writes a line: the timestamp is formatted once a second, and orjson writes
    # the line (the json module and strftime were half of the access log's cost).
    _stamp: tuple[int, str] = (-1, "")

    def _timestamp(self, created: float) -> str:
        second = int(created)
        stamp = self._stamp
        if stamp[0] != second:
            stamp = self._stamp = (
                second,
                time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(second)),
            )
        return stamp[1]

    def format(self, record):
        payload = {
            "ts": self._timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key in ("request_id", "correlation_id"):
            value = getattr(record, key, None)
            if value:
                payload[key] = value
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            payload.update(fields)
        if record.exc_info:
            payload["exc"] = redact(self.formatException(record.exc_info))
        try:
            return orjson.dumps(payload, default=str).decode()
        except TypeError:  # what orjson refuses (an integer beyond 64 bits, a non-str key)
            return json.dumps(payload, default=str)
