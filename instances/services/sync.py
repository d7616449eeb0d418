"""Fleet listings: local records merged with upstream's snapshot (snapshot.py), row by row.

Endpoint 4's upstream-backed listings and the comprehensive listing read a snapshot (cached for a
few seconds and shared between callers) and add the local records, one dict lookup each. With
syncLocalState, upstream's view is first written into the local records by the reconciler.
"""

from __future__ import annotations

import time

from novita_gateway.timeutil import iso

from .. import representations
from ..models import Instance
from ..status import Status
from .reconcile import reconcile_rows
from .snapshot import CONSISTENT, Snapshot, cache_hit_ratio, get_snapshot

INCONSISTENT = "inconsistent"
# Only when the upstream pass was cut short: a row's absence upstream then proves nothing.
UNKNOWN = "unknown"


# --- consistency ---------------------------------------------------------------------------


def differences(instance: Instance, upstream: dict, has_error: bool) -> list[str]:
    """Fields where the local record and upstream's row disagree (only fields both sides know)."""
    found = []
    if (
        instance.status_from_upstream(upstream["novitaStatus"], has_error=has_error)
        != instance.status
    ):
        found.append("status")
    if upstream["name"] and upstream["name"] != instance.name:
        found.append("name")
    if upstream["gpuNum"] is not None and upstream["gpuNum"] != instance.gpu_num:
        found.append("gpuNum")
    cluster = upstream["clusterId"]
    if cluster and instance.cluster_id and cluster != instance.cluster_id:
        found.append("clusterId")
    image = upstream["imageUrl"]
    if image and instance.image_url and image != instance.image_url:
        found.append("imageUrl")
    return found


def local_row(instance: Instance, upstream: dict | None, snapshot: Snapshot) -> dict:
    row = representations.InstanceSummaryOut.render(instance)
    row["novitaInstanceId"] = instance.novita_instance_id
    if upstream is None:
        expected_upstream = (
            bool(instance.novita_instance_id) and instance.status != Status.TERMINATED
        )
        if expected_upstream and not snapshot.complete:
            consistency, diffs = UNKNOWN, []
        elif expected_upstream:
            # We believe it exists upstream; upstream does not list it.
            consistency, diffs = INCONSISTENT, ["existence"]
        else:
            consistency, diffs = CONSISTENT, []
        row.update(
            source="local",
            dataConsistency=consistency,
            clusterId=instance.cluster_id or None,
            clusterName=instance.cluster_name or None,
            productName=instance.product_name or None,
            cpuNum=None,
            memory=None,
            imageUrl=instance.image_url or None,
            lastSyncedAt=iso(instance.last_synced_at),
        )
    else:
        diffs = differences(instance, upstream, upstream["id"] in snapshot.errors)
        row.update(
            source="merged",
            dataConsistency=INCONSISTENT if diffs else CONSISTENT,
            novitaStatus=upstream["novitaStatus"],
            clusterId=upstream["clusterId"] or instance.cluster_id or None,
            clusterName=upstream["clusterName"] or instance.cluster_name or None,
            productName=upstream["productName"] or instance.product_name or None,
            cpuNum=upstream["cpuNum"],
            memory=upstream["memory"],
            imageUrl=upstream["imageUrl"] or instance.image_url or None,
            lastSyncedAt=upstream["lastSyncedAt"],
        )
        # List items carry ports without addresses; the stored ones (from get-instance) have them.
        if not row["portMappings"]:
            row["portMappings"] = upstream["portMappings"]
    if diffs:
        row["inconsistencies"] = diffs
    return row


# --- listings -------------------------------------------------------------------------------


def _local_instances() -> list[Instance]:
    return list(Instance.objects.order_by("-created_at"))


def fleet(
    *,
    source: str = "all",
    include_novita_only: bool = True,
    sync_local_state: bool = False,
) -> dict:
    """Local records merged with one upstream pass, with counts and measured timings.

    source: "all" (every local record, merged where upstream lists it), "novita" (only what
    upstream lists). Novita-only instances are added when include_novita_only. With
    sync_local_state, upstream's view is first written into the local records (events with
    source "reconcile"), so the rows below show the synced state.

    Timings: on a cold listing without sync the database read runs during the upstream pass, so
    novitaApiTime (pass and cache) includes localDataTime; totalRequestTime is the wall time.
    """
    start = time.perf_counter()
    if sync_local_state:
        snapshot, cache_hit = get_snapshot(fresh=True)
        upstream_done = time.perf_counter()
        local = _local_instances()
        if reconcile_rows(local, snapshot, source="reconcile").acted:
            local = _local_instances()
        upstream_seconds = upstream_done - start
        local_seconds = time.perf_counter() - upstream_done
    else:
        local: list[Instance] = []
        local_seconds = 0.0

        def read_local() -> None:
            nonlocal local, local_seconds
            began = time.perf_counter()
            local = _local_instances()
            local_seconds = time.perf_counter() - began

        snapshot, cache_hit = get_snapshot(meanwhile=read_local)
        upstream_seconds = time.perf_counter() - start
        if cache_hit:  # the database read ran after the cache read, not during a pass
            upstream_seconds -= local_seconds
    local_done = time.perf_counter()

    upstream_rows = snapshot.rows
    rows = []
    managed = set()
    for instance in local:
        upstream = upstream_rows.get(instance.novita_instance_id or "")
        if upstream is not None:
            managed.add(upstream["id"])
        elif source == "novita":
            continue
        rows.append(local_row(instance, upstream, snapshot))
    merged = len(managed)
    local_only = len(rows) - merged
    novita_only = 0
    if include_novita_only:
        if managed:
            extra = [row for key, row in upstream_rows.items() if key not in managed]
        else:
            extra = list(upstream_rows.values())
        rows.extend(extra)
        novita_only = len(extra)
    merge_done = time.perf_counter()
    ratio = cache_hit_ratio()

    def ms(seconds: float) -> float:
        return round(seconds * 1000, 1)

    return {
        "instances": rows,
        "total": len(rows),
        "sources": {"local": local_only, "novita": novita_only, "merged": merged},
        "performance": {
            "totalRequestTime": ms(time.perf_counter() - start),
            "novitaApiTime": ms(upstream_seconds),
            "localDataTime": ms(local_seconds),
            "mergeProcessingTime": ms(merge_done - local_done),
            "cacheHitRatio": ratio,
            "cacheHit": cache_hit,
            "upstreamPages": 0 if cache_hit else snapshot.pages,
        },
    }


def list_for_api(*, source: str, include_novita_only: bool, sync_local_state: bool) -> list[dict]:
    """Endpoint 4's listing. The default (local records only) reads the database alone; upstream
    is asked only when the query needs it (source=novita, includeNovitaOnly or syncLocalState)."""
    needs_upstream = source == "novita" or include_novita_only or sync_local_state
    if not needs_upstream or (source == "local" and not sync_local_state):
        return [representations.InstanceSummaryOut.render(i) for i in _local_instances()]
    if source == "local":
        # Sync first, then show the local records as they now stand.
        fleet(source="all", include_novita_only=False, sync_local_state=True)
        return [representations.InstanceSummaryOut.render(i) for i in _local_instances()]
    return fleet(
        source=source,
        include_novita_only=include_novita_only,
        sync_local_state=sync_local_state,
    )["instances"]
