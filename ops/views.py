"""Health endpoint (no API key needed, no secrets)."""

import time

from django.http import JsonResponse
from django.views.decorators.http import require_GET

from .timeutil import iso_now

STARTED_AT = time.monotonic()


@require_GET
def health(request):
    return JsonResponse(
        {"status": "healthy", "timestamp": iso_now(), "uptime": int(time.monotonic() - STARTED_AT)}
    )
