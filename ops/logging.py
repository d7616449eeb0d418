"""JSON log lines carrying the request id, with secrets masked."""

import json
import logging
import os
import re
import select
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


class LineHandler(logging.StreamHandler):
    """A StreamHandler that writes each line with one write(2), without the handler's lock.

    Every request writes a line, from several threads of one process. StreamHandler formats and
    writes while holding its lock; the write releases the GIL, and getting it back behind busy
    threads kept the lock held for milliseconds: under load, request threads spent a seventh of
    their time queued on it. One write(2) of a whole line is atomic on a pipe (up to PIPE_BUF
    bytes) and on a regular file, so lines from different threads never interleave; a longer
    line, or a stream without a file descriptor, is written under the lock as before."""

    def handle(self, record):
        if not self.filter(record):
            return False
        try:
            data = (self.format(record) + self.terminator).encode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - logging must never break the caller
            self.handleError(record)
            return False
        fd = self._fd()
        if fd is not None and len(data) <= select.PIPE_BUF:
            try:
                while data:  # one call, unless interrupted or the disk fills part-way
                    data = data[os.write(fd, data) :]
            except OSError:
                self.handleError(record)
            return True
        line = data.decode("utf-8")
        with self.lock:
            try:
                self.stream.write(line)
                self.stream.flush()
            except Exception:  # noqa: BLE001
                self.handleError(record)
        return True

    def _fd(self) -> int | None:
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):  # a StringIO, a closed stream
            return None
        if self.__dict__.get("_flushed_for") is not self.stream:
            with self.lock:
                self.stream.flush()  # what went through the stream before goes first
            self._flushed_for = self.stream
        return fd
