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

        # Say loudly at start when the API is open to anyone who can reach it.
        serving = any(arg in ("runserver",) for arg in sys.argv) or "gunicorn" in sys.argv[0]
        if serving and not settings.GATEWAY_API_KEYS:
            logger.warning(
                "No GATEWAY_API_KEYS configured: the API is OPEN unless keys are issued in the "
                "admin (python manage.py issue_api_key NAME)."
            )
