from django.apps import AppConfig
from django.core import checks


class InstancesConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "instances"

    def ready(self):
        checks.register(check_region_table, checks.Tags.compatibility)
        # Services enqueue tasks by name (services/queue.py); every process that enqueues, the
        # web ones included, must have them registered, not only the workers that autodiscover.
        from novita_gateway import errors

        from . import facts, tasks  # noqa: F401
        from .api.errors import upstream_error
        from .novita.errors import NovitaError

        # /health and /metrics (ops, a layer below) learn about instances through these.
        facts.register()
        # Upstream failures reach clients in the envelope with the contract's codes.
        errors.translate(NovitaError, upstream_error)


def check_region_table(app_configs=None, **kwargs):
    """NOVITA_REGION_CLUSTERS must parse, or region lookups silently use the defaults."""
    from django.conf import settings

    from .novita.catalog import parse_region_clusters

    try:
        parse_region_clusters(getattr(settings, "NOVITA_REGION_CLUSTERS", "") or "")
    except ValueError as exc:
        return [checks.Error(str(exc), id="instances.E001")]
    return []
