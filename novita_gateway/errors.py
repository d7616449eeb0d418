"""The one error envelope of the API (the contract's "Error Response").

Every failure a client can see, from DRF validation to a 404 route or an unhandled exception,
leaves through `error_response`, so the shape and the request id are the same everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django import db
from django.http import Http404, JsonResponse
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework import serializers
from rest_framework.response import Response

from .context import current_request_id
from .timeutil import iso_now

logger = logging.getLogger("novita_gateway.errors")


class ApiError(Exception):
    """An error with a contract code, raised by services and views alike."""

    status_code = 400
    code = "VALIDATION_ERROR"
    message = "Request failed"

    def __init__(self, message: str | None = None, details=None, *, code=None, status_code=None):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.details = details
        if code:
            self.code = code
        if status_code:
            self.status_code = status_code


class InstanceNotFound(ApiError):
    status_code = 404
    code = "INSTANCE_NOT_FOUND"
    message = "Instance not found"


class InstanceAlreadyExists(ApiError):
    status_code = 409
    code = "INSTANCE_ALREADY_EXISTS"
    message = "Instance name already in use"


class InvalidInstanceState(ApiError):
    status_code = 409
    code = "INVALID_INSTANCE_STATE"
    message = "The instance cannot do that in its current state"

    @classmethod
    def changed_meanwhile(cls) -> InvalidInstanceState:
        """Another actor moved the instance between our read and our guarded update."""
        return cls("Instance changed state meanwhile; try again", code="INSTANCE_STATE_CHANGED")


class FeatureDisabled(ApiError):
    status_code = 404
    code = "FEATURE_DISABLED"
    message = "Feature is disabled"


class ApiKeysNotConfigured(drf_exceptions.NotAuthenticated):
    """No client key exists and an open API was not asked for: the API fails closed."""

    default_detail = (
        "No API keys are configured on this gateway, so the API is closed. The operator sets "
        "GATEWAY_API_KEYS (comma-separated keys) or issues a key with `python manage.py "
        "issue_api_key NAME` (or in the admin); ALLOW_OPEN_API=true serves the API without keys."
    )


class ErrorBodyOut(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.JSONField(allow_null=True)
    timestamp = serializers.DateTimeField()
    requestId = serializers.CharField()


class ErrorOut(serializers.Serializer):
    # The envelope's schema; `envelope` below is the one place that builds it.

    error = ErrorBodyOut()


def documented_error(codes: str) -> OpenApiResponse:
    """An error answer for the schema: the envelope, described by the contract codes it carries."""
    return OpenApiResponse(ErrorOut, description=codes)


def envelope(code: str, message: str, details=None) -> dict:
    return {
        "error": {
            "code": code,
            "message": message,
            "details": details,
            "timestamp": iso_now(),
            "requestId": current_request_id(),
        }
    }


def error_response(status: int, code: str, message: str, details=None, headers=None):
    response = JsonResponse(envelope(code, message, details), status=status)
    for key, value in (headers or {}).items():
        response[key] = value
    return response


def _validation_details(detail, prefix="", data=None) -> list[dict]:
    """Flatten DRF's nested error dict into the contract's [{field, message, value}]."""
    out: list[dict] = []
    if isinstance(detail, dict):
        for key, value in detail.items():
            field = f"{prefix}.{key}" if prefix else str(key)
            if key == "non_field_errors":
                field = prefix or "body"
            sub = data.get(key) if isinstance(data, dict) else None
            out.extend(_validation_details(value, field, sub))
    elif isinstance(detail, list):
        if detail and all(isinstance(d, str) for d in detail):
            for message in detail:
                out.append({"field": prefix or "body", "message": str(message), "value": data})
        else:
            for index, item in enumerate(detail):
                sub = data[index] if isinstance(data, list) and index < len(data) else None
                out.extend(_validation_details(item, f"{prefix}[{index}]", sub))
    else:
        out.append({"field": prefix or "body", "message": str(detail), "value": data})
    return out


def _safe_value(value):
    # Echo only small scalars back: a client's megabyte string or a secret-looking blob is
    # not worth reflecting.
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    if isinstance(value, str):
        return value if len(value) <= 200 else value[:200] + "..."
    return None


# How an app's own exceptions reach clients, registered by that app (AppConfig.ready) so that
# this module, the bottom layer, imports none: (exception class, fn(exc) -> (status, code,
# message, details, headers)).
_translators: list[tuple[type[BaseException], Callable]] = []


def translate(exc_type: type[BaseException], translator: Callable) -> None:
    _translators.append((exc_type, translator))


def exception_handler(exc, context):
    """DRF's exception handler: map every exception to the envelope."""
    request = context.get("request")
    if isinstance(exc, ApiError):
        return _drf(exc.status_code, exc.code, exc.message, exc.details)
    if isinstance(exc, drf_exceptions.ValidationError):
        data = getattr(request, "_full_data", None) if request is not None else None
        details = _validation_details(exc.detail, data=data if isinstance(data, dict) else None)
        for item in details:
            item["value"] = _safe_value(item["value"])
        return _drf(400, "VALIDATION_ERROR", "Validation failed", details)
    if isinstance(exc, drf_exceptions.ParseError):
        return _drf(400, "VALIDATION_ERROR", "Malformed request body", str(exc.detail))
    if isinstance(exc, drf_exceptions.UnsupportedMediaType):
        return _drf(415, "UNSUPPORTED_MEDIA_TYPE", "Send a JSON body", str(exc.detail))
    if isinstance(exc, (drf_exceptions.NotAuthenticated, drf_exceptions.AuthenticationFailed)):
        auth_header = getattr(exc, "auth_header", None)
        headers = {"WWW-Authenticate": auth_header} if auth_header else None
        message = (
            str(exc.detail)
            if isinstance(exc, ApiKeysNotConfigured)
            else "A valid API key is required"
        )
        return _drf(401, "UNAUTHORIZED", message, None, headers)
    if isinstance(exc, drf_exceptions.PermissionDenied):
        return _drf(403, "FORBIDDEN", "Not allowed", None)
    if isinstance(exc, drf_exceptions.Throttled):
        headers = {"Retry-After": str(int(exc.wait or 1))}
        return _drf(429, "RATE_LIMIT_EXCEEDED", "Rate limit exceeded", None, headers)
    if isinstance(exc, (Http404, drf_exceptions.NotFound)):
        return _drf(404, "NOT_FOUND", "Resource not found", None)
    if isinstance(exc, drf_exceptions.MethodNotAllowed):
        return _drf(405, "METHOD_NOT_ALLOWED", str(exc.detail), None)
    if isinstance(exc, drf_exceptions.NotAcceptable):
        return _drf(406, "NOT_ACCEPTABLE", str(exc.detail), None)
    for exc_type, translator in _translators:
        if isinstance(exc, exc_type):
            return _drf(*translator(exc))
    if isinstance(exc, drf_exceptions.APIException):
        return _drf(exc.status_code, "REQUEST_ERROR", str(exc.detail), None)
    if isinstance(exc, (db.OperationalError, db.InterfaceError)):
        # The database is unreachable or restarting: a clear, retryable answer, not a 500.
        logger.error("database unavailable: %s", type(exc).__name__)
        return _drf(
            503,
            "SERVICE_UNAVAILABLE",
            "Database temporarily unavailable",
            None,
            {"Retry-After": "5"},
        )
    # Anything else is a bug: log it with the request id, tell the client nothing internal.
    logger.exception("unhandled error")
    return _drf(500, "INTERNAL_SERVER_ERROR", "Internal server error", None)


def _drf(status, code, message, details, headers=None):
    return Response(envelope(code, message, details), status=status, headers=headers)


# Django-level handlers for what never reaches DRF (unknown routes, crashes in middleware).
def handler404(request, exception=None):
    return error_response(404, "NOT_FOUND", "Resource not found", f"No route for {request.path}")


def handler500(request):
    return error_response(500, "INTERNAL_SERVER_ERROR", "Internal server error")


def handler400(request, exception=None):
    return error_response(400, "VALIDATION_ERROR", "Bad request")


def handler403(request, exception=None):
    return error_response(403, "FORBIDDEN", "Not allowed")
