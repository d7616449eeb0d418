"""The sandbox's HTTP layer: upstream API routes, the /_sandbox control routes, auth, faults."""

from __future__ import annotations

import hmac
import json
import sys
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from .base import (
    API_PREFIX,
    CONTROL_PREFIX,
    HTML_404,
    ApiError,
    RouteNotFound,
    _bad_param,
    _int_param,
    _is_int,
    _json_body,
    _rel_path,
)

if TYPE_CHECKING:
    from .state import Sandbox


_GET_ROUTES = {
    "/clusters": "api_clusters",
    "/products": "api_products",
    "/templates": "api_templates",
    "/template": "api_template",
    "/gpu/instances": "api_list_instances",
    "/gpu/instance": "api_get_instance",
    "/jobs": "api_jobs",
}
_ACTIONS = {f"/gpu/instance/{a}": a for a in ("start", "stop", "restart", "delete", "migrate")}


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # Clients that time out or hang up mid-response are normal here (timeout and fault
        # tests do it on purpose); anything else is a sandbox bug and should be visible.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    sandbox: Sandbox  # set on the per-server subclass
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, the client's delayed ACK
    # would add ~40 ms to every response, which distorts step timing and benchmarks.
    disable_nagle_algorithm = True
    server_version = "NovitaSandbox/1.0"
    # Idle keep-alive connections are dropped after this, so handler threads do not pile up.
    timeout = 60

    def log_message(self, format, *args):  # noqa: A002 - signature fixed by the base class
        pass  # quiet by default; the call record is the log

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # -- plumbing -----------------------------------------------------------------------

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, payload, headers: dict | None = None, head=False) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), "application/json", headers, head)

    def _send_bytes(self, status, data: bytes, content_type: str, headers=None, head=False):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _send_route_404(self, error: RouteNotFound, headers=None, head=False) -> None:
        if self.sandbox.route_404 == "json":
            self._send(404, error.body(), headers, head=head)
        else:
            self._send_bytes(404, HTML_404.encode(), "text/html", headers, head)

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        raw_body = self._read_body()
        path = split.path
        if path.startswith(API_PREFIX + "/"):
            self._api(method, path[len(API_PREFIX) :], split.query, query, raw_body)
        elif path.startswith(CONTROL_PREFIX + "/"):
            try:
                status, payload = self._control(
                    method, path[len(CONTROL_PREFIX) :], query, raw_body
                )
            except RouteNotFound as exc:
                self._send_route_404(exc, head=method == "HEAD")
                return
            except ApiError as exc:
                status, payload = exc.status, exc.body()
            self._send(status, payload, head=method == "HEAD")
        else:
            self._send_route_404(RouteNotFound(path), head=method == "HEAD")

    def _api(self, method, rel, raw_query, query, raw_body) -> None:
        sb = self.sandbox
        latency, fault = sb._take_faults(rel)
        if latency:
            time.sleep(latency)
        if fault is not None and fault.down:
            sb._record(method, rel, raw_query, 0)  # 0: no answer was sent
            self.close_connection = True
            return
        headers = {}
        try:
            if fault is not None:
                if fault.status == 429:
                    headers["Retry-After"] = "1"
                raise ApiError(fault.status, fault.reason, "injected fault")
            self._check_auth()
            payload = self._route(method, rel, query, raw_body)
            status = 200
        except RouteNotFound as exc:
            sb._record(method, rel, raw_query, exc.status)
            self._send_route_404(exc, headers, head=method == "HEAD")
            return
        except ApiError as exc:
            status, payload = exc.status, exc.body()
        except Exception as exc:
            # A sandbox bug: show it, but still answer like an upstream 500 would.
            traceback.print_exc()
            status, payload = 500, ApiError(500, "UNKNOWN", f"sandbox error: {exc}").body()
        sb._record(method, rel, raw_query, status)
        self._send(status, payload, headers, head=method == "HEAD")

    def _check_auth(self) -> None:
        key = self.sandbox.api_key
        if key is None:
            return
        header = self.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), key):
            raise ApiError(401, "UNAUTHORIZED", "missing or invalid API key")

    def _route(self, method, rel, query, raw_body):
        sb = self.sandbox
        if rel in _GET_ROUTES:
            if method not in ("GET", "HEAD"):
                raise ApiError(405, "METHOD_NOT_ALLOWED", f"{method} not allowed on {rel}")
            return getattr(sb, _GET_ROUTES[rel])(query)
        if rel == "/gpu/instance/create" or rel in _ACTIONS:
            if method != "POST":
                raise ApiError(405, "METHOD_NOT_ALLOWED", f"{method} not allowed on {rel}")
            body = _json_body(raw_body)
            if rel == "/gpu/instance/create":
                return sb.api_create(body)
            return sb.api_action(_ACTIONS[rel], body)
        raise RouteNotFound(f"{API_PREFIX}{rel}")

    def _control(self, method, rel, query, raw_body) -> tuple[int, dict]:
        sb = self.sandbox
        parts = [p for p in rel.split("/") if p]
        if parts[:1] in (["ports"], ["terminal"], ["logs"]) and method in ("GET", "HEAD"):
            if parts[0] == "ports" and len(parts) >= 3 and parts[2].isdigit():
                return sb.port_probe(parts[1], int(parts[2]))
            if len(parts) >= 2:
                # Web terminal / log streams behave like an http port of the instance.
                view = sb.get(parts[1])
                if view is None:
                    return 404, {"error": "no such instance"}
                return (200 if view["status"] == "running" else 503), {"status": view["status"]}
        body = _json_body(raw_body) if raw_body else {}
        route = (method, parts[0] if parts else "")
        if route == ("GET", "health"):
            return 200, {"ok": True}
        if route == ("GET", "faults"):
            return 200, {"faults": sb.faults()}
        if route == ("POST", "faults"):
            if not isinstance(body, dict):
                raise _bad_param("fault must be a JSON object")
            kwargs = {}
            for key, alias in (
                ("path", "path"),
                ("status", "status"),
                ("reason", "reason"),
                ("error_rate", "errorRate"),
                ("latency_ms", "latencyMs"),
                ("count", "count"),
                ("down", "down"),
            ):
                if key in body:
                    kwargs[key] = body[key]
                elif alias in body:
                    kwargs[key] = body[alias]
            try:
                fault = sb.set_fault(**kwargs)
            except (TypeError, ValueError) as exc:
                raise _bad_param(str(exc)) from None
            return 200, {"fault": fault}
        if route == ("DELETE", "faults"):
            sb.clear_faults()
            return 200, {}
        if route == ("GET", "calls"):
            summary = sb.calls_summary(_int_param(query, "limit", 200, 0))
            if query.get("path"):
                rel_path = _rel_path(query["path"])
                summary["recent"] = [c for c in summary["recent"] if c["path"] == rel_path]
            return 200, summary
        if route == ("DELETE", "calls"):
            sb.reset_calls()
            return 200, {}
        if route == ("POST", "reset"):
            sb.reset()
            return 200, {}
        if route == ("GET", "config"):
            return 200, {
                "stepSeconds": sb.step_seconds,
                "auth": sb.api_key is not None,
                **sb.modes(),
            }
        if route == ("POST", "config"):
            step = body.get("stepSeconds", body.get("step_seconds"))
            if step is not None and (not isinstance(step, int | float) or step < 0):
                raise _bad_param("stepSeconds must be a number >= 0")
            try:
                sb.configure(
                    step_seconds=step,
                    page_numbering=body.get("pageNumbering"),
                    not_found=body.get("notFound"),
                    route_404=body.get("route404"),
                )
            except ValueError as exc:
                raise _bad_param(str(exc)) from None
            return 200, {"stepSeconds": sb.step_seconds, **sb.modes()}
        if route == ("POST", "seed"):
            count = body.get("count", 0)
            if not _is_int(count) or count < 0:
                raise _bad_param("count must be a non-negative integer")
            try:
                ids = sb.seed_instances(
                    count,
                    status=body.get("status", "running"),
                    name_prefix=body.get("namePrefix", body.get("name_prefix", "seed")),
                )
            except ValueError as exc:
                raise _bad_param(str(exc)) from None
            return 200, {"count": len(ids), "ids": ids}
        if parts[:1] == ["instances"] and len(parts) >= 2:
            iid = parts[1]
            action = parts[2] if len(parts) > 2 else ""
            if method == "GET" and not action:
                view = sb.get(iid)
                if view is None:
                    raise sb.not_found_error(iid)
                return 200, view
            if method == "POST" and action == "reclaim":
                sb.reclaim_spot(iid)
                return 200, {}
            if method == "POST" and action == "notify":
                sb.notify_spot(iid)
                return 200, {}
            if method == "POST" and action == "fail":
                sb.fail_instance(iid, str(body.get("message") or "failed to pull image"))
                return 200, {}
        if route == ("POST", "endpoints"):
            # {"name": ..., "port": ..., "endpoint": ...}: see Sandbox.override_endpoint.
            try:
                sb.override_endpoint(str(body["name"]), int(body["port"]), str(body["endpoint"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise _bad_param(f"endpoint override: {exc}") from None
            return 200, {}
        raise RouteNotFound(f"{CONTROL_PREFIX}{rel}")
