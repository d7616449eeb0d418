"""Routes used only by the error-envelope tests: one view per kind of failure."""

from django.urls import include, path
from rest_framework import serializers
from rest_framework.decorators import api_view
from rest_framework.response import Response

from instances.novita import errors as upstream


class _Body(serializers.Serializer):
    name = serializers.RegexField(r"^[A-Za-z0-9_-]+$", max_length=10)
    count = serializers.IntegerField(min_value=1, max_value=8)


@api_view(["POST"])
def echo(request):
    body = _Body(data=request.data)
    body.is_valid(raise_exception=True)
    return Response(body.validated_data)


@api_view(["GET"])
def crash(request):
    raise RuntimeError("secret internal detail")


@api_view(["GET"])
def upstream_timeout(request):
    raise upstream.NovitaTimeoutError("read timed out", operation="get_instance")


@api_view(["GET"])
def upstream_open(request):
    raise upstream.NovitaCircuitOpenError("open", operation="get_instance")


@api_view(["GET"])
def upstream_rejected(request):
    raise upstream.NovitaPermanentError(
        "not enough GPUs",
        operation="create_instance",
        status_code=400,
        reason="INSUFFICIENT_RESOURCE",
    )


@api_view(["GET"])
def database_down(request):
    from django.db import OperationalError

    raise OperationalError("could not connect to server")


urlpatterns = [
    path("t/db-down", database_down),
    path("t/echo", echo),
    path("t/crash", crash),
    path("t/upstream-timeout", upstream_timeout),
    path("t/upstream-open", upstream_open),
    path("t/upstream-rejected", upstream_rejected),
    path("", include("novita_gateway.urls")),
]
