"""Routes used only by the security tests: a tiny DRF view under /api/ and a plain view."""

from django.http import JsonResponse
from django.urls import include, path
from rest_framework.decorators import api_view
from rest_framework.response import Response

from ops.auth import api_key_required


@api_view(["GET", "POST"])
def ping(request):
    return Response({"pong": True, "client": str(request.user) if request.user else None})


@api_key_required
def plain(request):
    client = getattr(request, "api_client", None)
    return JsonResponse({"ok": True, "client": str(client) if client else None})


urlpatterns = [
    path("api/t/ping", ping),
    path("t/plain-protected", plain),
    path("", include("novita_gateway.urls")),
]
