import logging
import sys

from django.apps import AppConfig
from django.conf import settings

logger = logging.getLogger("novita_gateway.startup")


class OpsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "ops"

    def ready(self):
        # Celery task signals -> job metrics (connected once, by dispatch_uid).
        from . import signals  # noqa: F401
        from .caching import skip_closing_caches_after_requests

        skip_closing_caches_after_requests()

        # Say loudly at start how the API stands without environment keys (admin-issued keys
        # are not visible here: no database in ready()).
        serving = any(arg in ("runserver",) for arg in sys.argv) or "gunicorn" in sys.argv[0]
        if serving and not settings.GATEWAY_API_KEYS:
            if settings.DEBUG or settings.ALLOW_OPEN_API:
                logger.warning(
                    "No GATEWAY_API_KEYS configured and an open API allowed (DEBUG or "
                    "ALLOW_OPEN_API): the API is OPEN unless keys are issued in the admin."
                )
            else:
                logger.warning(
                    "No GATEWAY_API_KEYS configured: /api/ answers 401 until a key is issued "
                    "(python manage.py issue_api_key NAME) or ALLOW_OPEN_API=true is set."
                )
