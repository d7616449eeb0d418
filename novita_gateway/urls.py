"""URL routes: the API under /api/, health, admin, OpenAPI schema and docs.

The apps' routes are included by dotted name, as INSTALLED_APPS names them: this package is the
bottom layer (novita_gateway <- ops <- instances, see .importlinter) and imports neither app.
"""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

urlpatterns = [
    # First: every client poll resolves here, and each pattern tried before it costs the poll.
    # Paths this include does not know (api/schema/, api/docs/, api/cache/...) fall through.
    path("api/", include("instances.api.urls")),
    # A person who opens the bare address lands on the API reference, not a 404.
    path("", RedirectView.as_view(pattern_name="docs", permanent=False), name="root"),
    # /health, /metrics, /api/cache/*, /api/metrics*
    path("", include("ops.urls")),
    # Staff only (admin_view); before admin/ so the admin's catch-all never sees it.
    path("admin/dashboard/", include("instances.admin_urls")),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file: no inline script, so the
    # page works under the Content-Security-Policy.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="docs"),
]

handler400 = "novita_gateway.errors.handler400"
handler403 = "novita_gateway.errors.handler403"
handler404 = "novita_gateway.errors.handler404"
handler500 = "novita_gateway.errors.handler500"
