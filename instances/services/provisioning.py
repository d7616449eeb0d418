"""Provisioning: turn a new instance's request into a paid instance upstream, exactly once.

Resolves the product (cheapest available in the region's cluster), the template and the cluster
(catalog.py, cached), then calls upstream create. A create that timed out or got a 5xx is
ambiguous: before trying again the name is looked up upstream, so one request never makes two
paid instances. An instance terminated while its create was in flight is deleted upstream.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.utils import timezone

from ..models import Instance
from ..novita import catalog
from ..novita import errors as upstream
from ..novita.client import get_client
from ..status import Status
from .polling import FIRST_POLL_DELAY, POLL_BACKOFF, POLL_CAP
from .transitions import fail, fail_if_overdue, record_event, update_fields

logger = logging.getLogger(__name__)

MAX_CREATE_ATTEMPTS = 5


def _now():
    return timezone.now()


def provision(instance: Instance) -> None:
    """Create the instance upstream. Never makes two paid instances for one request: after an
    ambiguous attempt (timeout, 5xx) the name is looked up upstream before creating again."""
    client = get_client()
    attempts = instance.create_attempts
    update_fields(instance.id, expected_status=Status.CREATING, create_attempts=attempts + 1)
    try:
        if attempts > 0:
            existing = client.list_instances(name=instance.name)
            # A name is reused once its instance is terminated: the old one, still listed
            # while upstream removes it, belongs to its own record, never to this one.
            taken = set(
                Instance.objects.filter(
                    novita_instance_id__in=[r.id for r in existing if r.id]
                ).values_list("novita_instance_id", flat=True)
            )
            match = next(
                (r for r in existing if r.name == instance.name and r.id and r.id not in taken),
                None,
            )
            if match is not None:
                _adopt(instance, match.id, reason="found upstream after an ambiguous create")
                return
        product = catalog.resolve_product(
            instance.product_name,
            instance.region,
            instance.gpu_num,
            billing_mode=instance.billing_mode or None,
        )
        template = catalog.resolve_template(instance.template_id)
        cluster = catalog.resolve_cluster(instance.region)
        rootfs = max(instance.rootfs_size, template.rootfs_size or 0)
        fields = {
            "name": instance.name,
            "productId": product.id,
            "gpuNum": instance.gpu_num,
            "rootfsSize": rootfs,
            "imageUrl": template.image_url,
            "kind": "gpu",
            "clusterId": cluster.id,
        }
        optional = {
            "ports": template.ports,
            "envs": template.envs,
            "command": template.command,
            "entrypoint": template.entrypoint,
            "imageAuthId": template.image_auth_id,
            "minCudaVersion": template.min_cuda_version,
            "billingMode": instance.billing_mode,
        }
        # Left out when empty, so upstream applies its own defaults.
        fields.update((key, value) for key, value in optional.items() if value)
        update_fields(
            instance.id,
            expected_status=Status.CREATING,
            product_id=(product.id or "")[:100],
            price_per_hour=(catalog.offer_price(product, instance.billing_mode) or 0)
            * instance.gpu_num
            or None,
            cluster_id=(cluster.id or "")[:100],
            cluster_name=(cluster.name or "")[:200],
            image_url=(template.image_url or "")[:500],
        )
        upstream_id = client.create_instance(**fields)
    except upstream.NovitaPermanentError as exc:
        fail(instance, f"create rejected: {exc.details()}", source="worker")
        return
    except upstream.NovitaError as exc:
        # Refused before anything was created (a wrong base URL or key, the breaker open):
        # not ambiguous, and it clears without us, so keep trying until the readiness deadline
        # rather than failing after a count.
        if isinstance(exc, (upstream.NovitaMisconfiguredError, upstream.NovitaCircuitOpenError)):
            if fail_if_overdue(instance):
                return
        elif attempts + 1 >= MAX_CREATE_ATTEMPTS:
            fail(instance, f"create failed {attempts + 1} times: {exc.details()}", source="worker")
            return
        record_event(
            instance.id,
            source="worker",
            reason=f"create attempt {attempts + 1} failed, will retry: {exc.details()}",
            from_status=Status.CREATING,
            to_status=Status.CREATING,
        )
        delay = min(FIRST_POLL_DELAY * POLL_BACKOFF ** (attempts + 1), POLL_CAP)
        update_fields(
            instance.id,
            expected_status=Status.CREATING,
            next_poll_at=_now() + timedelta(seconds=delay),
        )
        return
    _adopt(instance, upstream_id, reason="created upstream")


def _adopt(instance: Instance, upstream_id: str, *, reason: str) -> None:
    adopted = update_fields(
        instance.id,
        expected_status=Status.CREATING,
        novita_instance_id=upstream_id,
        next_poll_at=_now() + timedelta(seconds=FIRST_POLL_DELAY),
        poll_interval=FIRST_POLL_DELAY,
    )
    if not adopted:
        # Terminated (or failed) while the create call was in flight: don't leave a paid
        # instance behind that nobody tracks.
        try:
            get_client().delete_instance(upstream_id)
        except upstream.NovitaError as exc:
            logger.error("could not delete orphan upstream %s: %s", upstream_id, exc.details())
        record_event(
            instance.id,
            source="worker",
            reason=f"deleted upstream {upstream_id}: instance left creating while it was made",
        )
        return
    record_event(
        instance.id,
        source="worker",
        reason=f"{reason} as {upstream_id}",
        from_status=Status.CREATING,
        to_status=Status.CREATING,
        desired_status=instance.desired_status,
    )
