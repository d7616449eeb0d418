"""Routes used only by the security tests: a tiny DRF view under /api/."""

from django.urls import include, path
from rest_framework.decorators import api_view
from rest_framework.response import Response


@api_view(["GET", "POST"])
def ping(request):
    return Response({"pong": True, "client": str(request.user) if request.user else None})


urlpatterns = [
    path("api/t/ping", ping),
    path("", include("novita_gateway.urls")),
]
