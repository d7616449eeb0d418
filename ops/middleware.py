"""Outermost middleware: request id, body limit, error envelope for non-DRF errors, access log."""

import logging
import re
import secrets
import time
from urllib.parse import unquote_plus

from csp.middleware import CSPMiddleware
from django import db
from django.conf import settings
from django.contrib.auth import middleware as auth_middleware
from django.contrib.messages import middleware as messages_middleware
from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
from django.http import Http404

from novita_gateway.context import correlation_id_var, request_id_var
from novita_gateway.errors import error_response
from novita_gateway.parsers import CONTROL_CHARACTERS

from . import metrics

logger = logging.getLogger("novita_gateway.access")

# Under /api/ but pages for a browser (Swagger UI, the schema it loads), not the JSON API.
API_DOC_PREFIXES = ("/api/docs/", "/api/schema/")


def json_api_path(path: str) -> bool:
    """True for the JSON API: what API clients call with a key, never with a browser session."""
    return path.startswith("/api/") and not path.startswith(API_DOC_PREFIXES)


def browser_only(middleware: type) -> type:
    """`middleware`, skipped on the JSON API.

    The logged-in user, flash messages and the pages' Content-Security-Policy serve the admin's
    pages; an API request carries a key instead (DRF authenticates it) and gets JSON. Running
    them anyway built a lazy user and a message store on every poll. A subclass, so Django's
    checks (the admin needs the first two) still see them. Sessions and CSRF stay as Django
    names them: `check --deploy` looks for those by name."""

    class BrowserOnly(middleware):
        def __call__(self, request):
            if json_api_path(request.path):
                return self.get_response(request)
            return super().__call__(request)

    BrowserOnly.__name__ = BrowserOnly.__qualname__ = middleware.__name__
    BrowserOnly.__module__ = __name__
    BrowserOnly.__doc__ = (
        middleware.__doc__ or f"{middleware.__module__}.{middleware.__name__}, not on the JSON API."
    )
    return BrowserOnly


AuthenticationMiddleware = browser_only(auth_middleware.AuthenticationMiddleware)
MessageMiddleware = browser_only(messages_middleware.MessageMiddleware)

# A client-chosen id is echoed in headers and logs, so it must be short and printable.
_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def _client_id(request, meta_key: str) -> str | None:
    value = request.META.get(meta_key)
    if value and _VALID_ID.match(value):
        return value
    return None


class RequestContextMiddleware:
    """Gives every request an id, enforces the body limit and writes one log line per request."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        request_id = _client_id(request, "HTTP_X_REQUEST_ID") or f"req_{secrets.token_hex(12)}"
        correlation_id = _client_id(request, "HTTP_X_CORRELATION_ID")
        rid_token = request_id_var.set(request_id)
        cid_token = correlation_id_var.set(correlation_id)
        request.request_id = request_id
        try:
            response = self._respond(request)
            response["X-Request-ID"] = request_id
            if correlation_id:
                response["X-Correlation-ID"] = correlation_id
            duration_ms = (time.perf_counter() - started) * 1000
            metrics.record_request(request, response.status_code, duration_ms)
            logger.info(
                "%s %s %s %.1fms",
                request.method,
                request.path,
                response.status_code,
                duration_ms,
                extra={
                    "fields": {
                        "method": request.method,
                        "path": request.path,
                        "status": response.status_code,
                        "duration_ms": round(duration_ms, 2),
                    }
                },
            )
            return response
        finally:
            request_id_var.reset(rid_token)
            correlation_id_var.reset(cid_token)

    def _respond(self, request):
        length = request.META.get("CONTENT_LENGTH") or "0"
        try:
            too_large = int(length) > settings.MAX_REQUEST_BODY_BYTES
        except ValueError:
            return error_response(400, "VALIDATION_ERROR", "Invalid Content-Length header")
        if too_large:
            return error_response(
                413,
                "PAYLOAD_TOO_LARGE",
                "Request body too large",
                f"At most {settings.MAX_REQUEST_BODY_BYTES} bytes are accepted",
            )
        response = self.get_response(request)
        # With DEBUG on, Django answers unknown routes with an HTML page; API clients get JSON.
        if (
            response.status_code in (404, 405)
            and not request.path.startswith("/admin/")
            and "json" not in response.get("Content-Type", "")
        ):
            if response.status_code == 404:
                return error_response(
                    404, "NOT_FOUND", "Resource not found", f"No route for {request.path}"
                )
            return error_response(405, "METHOD_NOT_ALLOWED", f"Method {request.method} not allowed")
        return response

    def process_exception(self, request, exception):
        # 404/403/400 from plain views (the admin raises PermissionDenied) are not crashes:
        # Django's handlers answer them (handler403/404 give the same envelope).
        if isinstance(exception, (Http404, PermissionDenied, BadRequest, SuspiciousOperation)):
            return None
        if isinstance(exception, (db.OperationalError, db.InterfaceError)):
            logger.error("database unavailable: %s", type(exception).__name__)
            return error_response(
                503,
                "SERVICE_UNAVAILABLE",
                "Database temporarily unavailable",
                headers={"Retry-After": "5"},
            )
        # Exceptions outside DRF views (plain Django views, middleware below us).
        logger.exception("unhandled error")
        return error_response(500, "INTERNAL_SERVER_ERROR", "Internal server error")


class RejectControlCharactersMiddleware:
    """400 in the envelope for a path or query string holding control characters.

    No route, id or query value of ours contains one, NUL cannot even reach PostgreSQL (the
    driver refuses it: a 500 deep in a lookup), and the rest would end up in logs and the admin.
    Checked on the decoded text, so %00 and a raw byte are refused alike.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        query = unquote_plus(request.META.get("QUERY_STRING", ""), errors="replace")
        for part, text in (("path", request.path), ("query", query)):
            if CONTROL_CHARACTERS.search(text):
                return error_response(
                    400,
                    "VALIDATION_ERROR",
                    f"The request {part} must not contain control characters",
                    [{"field": part, "message": "control characters are not allowed"}],
                )
        return self.get_response(request)


@browser_only
class PageContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's policy on HTML pages only (admin, API docs). JSON answers carry no markup to
    protect, and the JSON API skips the middleware altogether."""

    def process_response(self, request, response):
        if not response.get("Content-Type", "").startswith("text/html"):
            return response
        return super().process_response(request, response)
