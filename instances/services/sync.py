"""One picture of the fleet: local records merged with what upstream lists."""

from __future__ import annotations

from .. import representations
from ..models import Instance
from ..novita.client import get_client
from ..novita.schemas import UpstreamInstance


def _upstream_summary(remote: UpstreamInstance) -> dict:
    return {
        "id": remote.id,
        "name": remote.name,
        "status": remote.status,
        "gpuNum": remote.gpu_num,
        "region": remote.cluster_id,
        "portMappings": [
            {"port": m.port, "endpoint": m.endpoint, "type": m.type} for m in remote.port_mappings
        ],
        "createdAt": remote.created_at.isoformat() if remote.created_at else None,
        "source": "novita",
    }


def list_for_api(*, source: str, include_novita_only: bool, sync_local_state: bool) -> list[dict]:
    """Endpoint 4's listing. Local rows come from the database; upstream is asked only when the
    query needs it (source=novita, includeNovitaOnly or syncLocalState)."""
    local = list(Instance.objects.order_by("-created_at"))
    if source == "local" or (not include_novita_only and not sync_local_state and source == "all"):
        return [representations.instance_summary(i) for i in local]
    remote = get_client().list_instances()
    known = {i.novita_instance_id for i in local if i.novita_instance_id}
    novita_only = [_upstream_summary(r) for r in remote if r.id not in known]
    if source == "novita":
        by_id = {r.id: r for r in remote}
        managed = [
            representations.instance_summary(i) for i in local if i.novita_instance_id in by_id
        ]
        return managed + novita_only
    rows = [representations.instance_summary(i) for i in local]
    return rows + (novita_only if include_novita_only else [])
