"""Shared pieces of the sandbox: paths, upstream status sequences, the error type, parsing."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

API_PREFIX = "/gpu-instance/openapi/v1"
CONTROL_PREFIX = "/_sandbox"

# Terminal pseudo-state of a deleted instance: it stays "removed" for one step, then vanishes.
_GONE = "<gone>"

UPSTREAM_STATUSES = frozenset(
    {
        "pending",
        "toCreate",
        "creating",
        "pulling",
        "running",
        "toStart",
        "starting",
        "toStop",
        "stopping",
        "exited",
        "toRestart",
        "restarting",
        "toRemove",
        "removing",
        "removed",
        "toReset",
        "resetting",
        "migrating",
        "freezing",
    }
)

# One state per step; the last entry is where the instance settles.
# Novita's CLI live test sees `pending` right after a create; the docs list `toCreate`.
SEQ_CREATE = ("pending", "toCreate", "creating", "pulling", "running")
SEQ_STOP = ("toStop", "stopping", "exited")
SEQ_START = ("toStart", "starting", "running")
SEQ_RESTART = ("toRestart", "restarting", "running")
SEQ_DELETE = ("toRemove", "removing", "removed", _GONE)
SEQ_MIGRATE = ("migrating", "migrating", "running")
SEQ_MIGRATE_JOB = ("pulling", "running", "success")

_DEFAULT_REASONS = {
    400: "REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "API_NOT_FOUND",
    409: "CONFLICT",
    429: "RATE_LIMIT_EXCEEDED",
    500: "UNKNOWN",
    502: "BAD_GATEWAY",
    503: "SERVICE_UNAVAILABLE",
    504: "GATEWAY_TIMEOUT",
}


# Emulation modes where public sources disagree (see docs/upstream.md).
# Page numbering: "zero" = pageNum 0 is the first page (Novita's CLI and its live test, the
# list-templates doc's echoed pageNum 0); "one" = pageNum 1 is the first page and 0 answers an
# empty page (the jobs doc's curl example, the MCP server); "zero-as-one" = 0 and 1 both answer
# the first page.
PAGE_NUMBERINGS = ("zero", "one", "zero-as-one")
# The default follows the strongest evidence: sources that ran against the live API (Novita's
# CLI and its end-to-end test, a third-party SDK's live tests) all start at 0.
DEFAULT_PAGE_NUMBERING = "zero"
# Unknown instance id: "400" = 400 RESOURCE_NOT_FOUND (the documented error table);
# "404-json" = 404 whose JSON body names the missing resource; "404-route" = 404 API_NOT_FOUND,
# indistinguishable from a wrong route (an upstream the gateway's "gone" rule cannot use).
NOT_FOUND_MODES = ("400", "404-json", "404-route")
# Unknown path: "json" = Kratos-style 404 API_NOT_FOUND; "html" = a proxy's HTML page.
ROUTE_404_MODES = ("json", "html")

HTML_404 = (
    "<html>\n<head><title>404 Not Found</title></head>\n<body>\n"
    "<center><h1>404 Not Found</h1></center>\n<hr><center>nginx</center>\n</body>\n</html>\n"
)


class ApiError(Exception):
    """An upstream-style error in the Kratos envelope: {code, reason, message, metadata}."""

    def __init__(self, status: int, reason: str, message: str, metadata: dict | None = None):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.metadata = metadata or {}

    def body(self) -> dict:
        return {
            "code": self.status,
            "reason": self.reason,
            "message": self.message,
            "metadata": dict(self.metadata),
        }


class RouteNotFound(ApiError):
    """No such route: rendered as JSON API_NOT_FOUND or as a proxy's HTML page (route_404)."""

    def __init__(self, path: str):
        super().__init__(404, "API_NOT_FOUND", f"no route for {path}")


def _page_bounds(mode: str, q: dict, size: int) -> tuple[int, int]:
    """Slice bounds of the requested page under a page-numbering mode (empty: start == end)."""
    first = 0 if mode == "zero" else 1
    page = _int_param(q, "pageNum", first, 0)
    if mode == "zero":
        index = page
    elif mode == "one":
        if page == 0:
            return 0, 0
        index = page - 1
    else:
        index = max(page, 1) - 1
    return index * size, index * size + size


def _not_found(instance_id) -> ApiError:
    return ApiError(400, "RESOURCE_NOT_FOUND", f"instance {instance_id} not found")


def _bad_param(message: str) -> ApiError:
    return ApiError(400, "VALIDATOR_PARAM", message)


_UNSET = object()


def _rel_path(path: str | None) -> str | None:
    """Paths are recorded and matched relative to the v1 prefix ("/gpu/instance/create")."""
    if path is None:
        return None
    path = urlsplit(path).path
    if path.startswith(API_PREFIX):
        path = path[len(API_PREFIX) :] or "/"
    return path


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_param(q: dict, key: str, default: int, lo: int | None = None, hi: int | None = None):
    raw = q.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad_param(f"{key} must be an integer") from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise _bad_param(f"{key} is out of range")
    return value


def _parse_ports(raw) -> tuple:
    """Upstream takes ports as a comma string: "8888/http, 22/tcp"."""
    if raw is None or raw == "":
        return ()
    if not isinstance(raw, str):
        raise _bad_param('ports must be a comma-separated string such as "8888/http,22/tcp"')
    out = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        port_s, sep, kind = item.partition("/")
        kind = kind.strip().lower()
        if not sep or kind not in ("tcp", "http") or not port_s.strip().isdigit():
            raise _bad_param(f"invalid port spec {item!r}; expected <port>/<tcp|http>")
        port = int(port_s)
        if not 1 <= port <= 65535:
            raise _bad_param(f"port {port} is out of range")
        if port in (2222, 2223, 2224):
            raise _bad_param(f"port {port} is reserved")
        if (port, kind) not in out:
            out.append((port, kind))
    if len(out) > 15:
        raise _bad_param("at most 15 ports are allowed")
    return tuple(out)


def _parse_envs(raw) -> tuple:
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > 100:
        raise _bad_param("envs must be a list of at most 100 {key, value} objects")
    out = []
    for env in raw:
        if not isinstance(env, dict) or not isinstance(env.get("key"), str) or not env["key"]:
            raise _bad_param("each env needs a non-empty string key")
        value = env.get("value", "")
        if not isinstance(value, str) or len(env["key"]) > 511 or len(value) > 4095:
            raise _bad_param("env key/value too long or not a string")
        out.append((env["key"], value))
    return tuple(out)


def _json_body(raw: bytes):
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _bad_param("request body is not valid JSON") from None
