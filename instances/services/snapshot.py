"""One picture of upstream's fleet: a paginated pass over its instance list (a *snapshot*).

One pass feeds every reader: the comprehensive listing, endpoint 4's upstream-backed listings
(sync.py), the reconciler and migration. Listings share a snapshot through the `instances` cache
for a few seconds, so a dashboard polling the fleet costs upstream at most one pass per
UPSTREAM_CACHE_SECONDS however many clients poll. Whatever writes local state from upstream
(syncLocalState, the reconciler, migration) takes a fresh pass instead: acting on a view that is
seconds old could undo a stop or start requested meanwhile.

Each upstream instance is turned into its listing row once per pass, while the pass runs; the
cache keeps those rows (plain dicts pickle about ten times faster than the parsed objects), and a
listing only adds the local records, one dict lookup each.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone

from novita_gateway.timeutil import iso
from ops import counters
from ops.caching import named_cache

from ..novita.client import get_client
from ..novita.schemas import (
    UpstreamInstance,
    any_id,
    as_datetime,
    as_int,
    as_str,
    port_layout,
    status_error_text,
)
from ..status import Desired, from_upstream, spot_reclaimed

logger = logging.getLogger(__name__)

UPSTREAM_PAGE_SIZE = 100
UPSTREAM_CACHE_SECONDS = 5
# Versioned: a deploy that changes the Snapshot's shape must not read an older pickle.
_CACHE_KEY = "fleet:upstream-snapshot:v1"
_HITS = "fleet:snapshot:hits"
_MISSES = "fleet:snapshot:misses"

# Every row of a snapshot is consistent by construction; sync.py judges merged rows.
CONSISTENT = "consistent"


def _cache():
    return named_cache("instances")


# The snapshot is stored by a thread of its own: pickling, compressing and writing a thousand
# rows is a tenth of a cold 1,000-instance listing, and the listing does not need to wait for
# it. The next lookup in this process waits for that store, so a process never misses its own
# snapshot; another process may miss it for those few milliseconds and make a pass of its own,
# as it would while this pass ran.
_store_thread: threading.Thread | None = None
_store_guard = threading.Lock()


def _store(key: str, snapshot: Snapshot, previous: threading.Thread | None) -> None:
    if previous is not None:
        previous.join()  # stores land in the order the passes ended
    try:
        _cache().set(key, snapshot, UPSTREAM_CACHE_SECONDS)
    except Exception:  # noqa: BLE001 - an unstored snapshot only costs the next reader a pass
        logger.warning("fleet snapshot not cached", exc_info=True)


def _store_in_background(snapshot: Snapshot) -> None:
    global _store_thread
    context = contextvars.copy_context()  # keeps the request id on the thread's log lines
    with _store_guard:
        thread = threading.Thread(
            target=context.run,
            args=(_store, _CACHE_KEY, snapshot, _store_thread),
            name="fleet-snapshot-store",
            daemon=True,
        )
        _store_thread = thread
        thread.start()


def wait_for_store(timeout: float = 5.0) -> None:
    """Return once the last snapshot this process passed to the cache is in it, or after
    `timeout` seconds (a cache that hangs then costs a reader a pass, never the reader itself)."""
    thread = _store_thread
    if thread is not None:
        thread.join(timeout)


@dataclass
class Snapshot:
    """Every instance upstream listed in one pass, and how that pass went."""

    # Upstream id -> its listing row (source "novita"), in listing order (newest first).
    rows: dict[str, dict]
    # Upstream ids that carry a statusError (kept apart: rows are shown as they are).
    errors: frozenset[str]
    # When the pass began: a local row changed after this may be newer than what we saw.
    started_at: datetime
    seconds: float
    pages: int
    # False when the pass stopped early (page cap, upstream repeating a page, fewer items than
    # upstream's total): absences prove nothing then.
    complete: bool
    # The parsed items, for code that writes local state: only in a fresh snapshot
    # (get_snapshot(fresh=True)), never in a cached one.
    by_id: dict[str, UpstreamInstance] = field(default_factory=dict)

    def __getstate__(self):
        return {**self.__dict__, "by_id": {}}


def fetch_snapshot(
    *, keep_items: bool = True, meanwhile: Callable[[], object] | None = None
) -> Snapshot:
    """One paginated pass over upstream's instance list. Raises NovitaError if any page fails,
    so a partial listing is never mistaken for the whole fleet.

    Rows are built straight from the raw items; UpstreamInstance objects only with
    `keep_items` (a listing needs only the rows, and tens of thousands of long-lived objects
    it does not need make every garbage-collector pass of the process slower).

    Pages are read ahead: the next one is on its way while this one's rows are built, and
    `meanwhile` (a listing's database read) runs while the first ones are.
    """
    started_at = timezone.now()
    synced = iso(started_at)
    start = time.perf_counter()
    by_id: dict[str, UpstreamInstance] = {}
    rows: dict[str, dict] = {}
    errors: set[str] = set()
    # Most instances share a handful of port layouts; rows share one list per layout.
    port_layouts: dict[tuple, list[dict]] = {}
    pages = 0
    last = None
    reader = get_client().iter_instance_pages(
        page_size=UPSTREAM_PAGE_SIZE, raw=True, read_ahead=True
    )
    try:
        if meanwhile is not None:
            meanwhile()
        for page in reader:
            pages += 1
            last = page
            for item in page.items:
                built = novita_row(item, synced, port_layouts)
                if built is None:
                    continue
                row, has_error = built
                rows[row["id"]] = row
                if has_error:
                    errors.add(row["id"])
                if keep_items:
                    by_id[row["id"]] = UpstreamInstance.from_api(item)
    finally:
        reader.close()
    # The client decides: a listing is complete when it ran to its end (see NovitaClient._pages).
    complete = last is not None and last.complete
    if not complete:
        logger.warning("upstream listing stopped after %d pages; treating it as partial", pages)
    return Snapshot(
        rows=rows,
        errors=frozenset(errors),
        started_at=started_at,
        seconds=time.perf_counter() - start,
        pages=pages,
        complete=complete,
        by_id=by_id,
    )


def get_snapshot(
    *, fresh: bool = False, meanwhile: Callable[[], object] | None = None
) -> tuple[Snapshot, bool]:
    """(snapshot, served from cache). `fresh` skips the cache read but still refreshes it.
    `meanwhile` is called once either way: during the upstream pass, or after a cache hit."""
    cache = _cache()
    if not fresh:
        wait_for_store()
        try:
            cached = cache.get(_CACHE_KEY)
        except Exception:  # noqa: BLE001 - an unreadable entry is a miss, never an error
            logger.warning("fleet snapshot cache unreadable; fetching", exc_info=True)
            cached = None
        if isinstance(cached, Snapshot):
            counters.incr(_HITS)
            if meanwhile is not None:
                meanwhile()
            return cached, True
        counters.incr(_MISSES)
    snapshot = fetch_snapshot(keep_items=fresh, meanwhile=meanwhile)
    if snapshot.complete:
        _store_in_background(snapshot)
    return snapshot, False


def cache_hit_ratio() -> float:
    """Share of fleet listings served from the cached snapshot, across every process."""
    totals = counters.get_all()
    hits = totals.get(_HITS, 0)
    lookups = hits + totals.get(_MISSES, 0)
    return round(hits / lookups, 4) if lookups else 0.0


# --- rows of upstream instances ---------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _novita_only_status(
    upstream_status: str | None, spot_status: str | None, reclaim_started: bool, has_error: bool
) -> str:
    """A gateway status for an instance nobody asked us to manage."""
    # A handful of distinct inputs across a whole fleet: map (and warn about an unknown value)
    # once per process, not once per instance per listing.
    # Nobody asked us to manage it, so nobody asked for a stop either: `exited` reads as
    # upstream documents it (stopped), except after a spot reclaim, where it stopped on its own.
    reclaimed = spot_reclaimed(upstream_status, spot_status, reclaim_started)
    return (
        from_upstream(
            upstream_status,
            current="",
            desired=Desired.RUNNING if reclaimed else Desired.STOPPED,
            first_boot=True,
            has_error=has_error,
        )
        or "unknown"
    )


def _created_iso(value: Any) -> str | None:
    """timeutil.iso's format for an upstream timestamp. This runs once per upstream instance
    per pass, so whole Unix seconds as text ("1795813196", the usual shape) are formatted
    straight from gmtime, about twice as fast as through a datetime."""
    # At most 11 digits: as_datetime reads longer numbers as milliseconds.
    if type(value) is str and len(value) <= 11 and value.isascii() and value.isdigit():
        seconds = int(value)
        if seconds > 0:  # 0 means "never"
            return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(seconds))
    return iso(as_datetime(value))


def novita_row(
    item: Any, synced: str, port_layouts: dict[tuple, list[dict]] | None = None
) -> tuple[dict, bool] | None:
    """(listing row of a raw upstream list item (source "novita"), whether upstream reports a
    statusError on it); None for an item without an id. Merged rows reuse the row's fields.

    Parsed as tolerantly as UpstreamInstance.from_api, with the same helpers. Rows are read-only
    once built, so rows with the same port layout share its list.
    """
    if not isinstance(item, dict):
        return None
    instance_id = any_id(item)
    if instance_id is None:
        return None
    get = item.get
    layout = port_layout(get("portMappings"))
    ports = port_layouts.get(layout) if port_layouts is not None else None
    if ports is None:
        ports = [
            {"port": port, "endpoint": endpoint, "type": kind} for port, endpoint, kind in layout
        ]
        if port_layouts is not None and len(port_layouts) < 1000:
            port_layouts[layout] = ports
    status = as_str(get("status"))
    has_error = status_error_text(get("statusError")) is not None
    reclaim_started = bool(as_int(get("spotReclaimTime")))
    cluster_id = as_str(get("clusterId"))
    cpu_num = as_int(get("cpuNum"))
    memory = as_int(get("memory"))
    row = {
        "id": instance_id,
        "name": as_str(get("name")),
        "status": _novita_only_status(
            status, as_str(get("spotStatus")), reclaim_started, has_error
        ),
        "source": "novita",
        "dataConsistency": CONSISTENT,
        "novitaInstanceId": instance_id,
        "novitaStatus": status,
        "gpuNum": as_int(get("gpuNum")),
        "region": cluster_id,
        "clusterId": cluster_id,
        "clusterName": as_str(get("clusterName")),
        "productName": as_str(get("productName")),
        # The contract shows cpuNum and memory as text ("8", "32GB"); upstream sends counts, GB.
        "cpuNum": str(cpu_num) if cpu_num is not None else None,
        "memory": f"{memory}GB" if memory is not None else None,
        "imageUrl": as_str(get("imageUrl")),
        "portMappings": ports,
        "createdAt": _created_iso(get("createdAt")),
        "lastSyncedAt": synced,
    }
    return row, has_error
