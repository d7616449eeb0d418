"""Check the gateway's assumptions about Novita's API against one live account.

Run by `manage.py novita_doctor`. Read-only unless a smoke test is asked for; every call has a
timeout and the whole run a time limit. Each assumption ends as one Finding: confirmed,
contradicted, or not checked, with the shape that was seen (values that look secret masked).

The assumptions and their public sources are listed in docs/upstream.md; the keys used here
(`pagination.instances`, `not_found.instance`, ...) are the ones that page uses.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from instances.services import health_probe
from instances.status import from_upstream
from ops.netsafety import DeadlineAdapter, deadline

from . import catalog
from .client import NovitaClient
from .errors import (
    NovitaError,
    NovitaMisconfiguredError,
    NovitaNotFoundError,
    NovitaTransientError,
)
from .schemas import Cluster, Job, UpstreamInstance

CONFIRMED = "confirmed"
CONTRADICTED = "contradicted"
NOT_CHECKED = "not checked"

_SECRET_KEY_RE = re.compile(r"pass|secret|token|auth|key|credential", re.IGNORECASE)
# Fields whose values are shown (they are enums or codes, never secrets).
_SHOWN_VALUES = frozenset({"code", "reason", "status", "state", "type", "pageNum", "total"})
_INVALID_KEY = "novita-doctor-invalid-key"
# Listings longer than this are not read in full by the doctor (the time limit matters more).
_MAX_FULL_LISTING = 2000


class TimeLimitReached(Exception):
    """The doctor's total time limit ran out."""


@dataclass
class Finding:
    """The outcome of checking one assumption."""

    key: str
    claim: str
    result: str
    seen: str

    def line(self) -> str:
        return f"{self.result.upper():<13} {self.key:<30} {self.claim} -- saw: {self.seen}"


@dataclass
class RawAnswer:
    """One upstream answer as it came: status, JSON body (None when not JSON), raw text."""

    status: int
    body: Any
    text: str

    @property
    def unavailable(self) -> bool:
        """An outage answer (5xx, 408, 429): it says nothing about the API's shapes."""
        return self.status >= 500 or self.status in (408, 429)

    def describe(self) -> str:
        if self.body is None:
            snippet = " ".join(self.text.split())[:60]
            return f"HTTP {self.status} non-JSON {snippet!r}"
        return f"HTTP {self.status} {shape(self.body)}"


def shape(value: Any, depth: int = 0, key: str = "") -> str:
    """A compact, value-free picture of a JSON value: keys and types, enum-like values shown,
    secret-looking fields masked."""
    if key and _SECRET_KEY_RE.search(key) and value not in (None, "", {}, []):
        return "***"
    if isinstance(value, dict):
        if depth >= 2:
            return "{...}" if value else "{}"
        items = list(value.items())
        parts = [f"{k}: {shape(v, depth + 1, k)}" for k, v in items[:12]]
        if len(items) > 12:
            parts.append(f"... +{len(items) - 12} keys")
        return "{" + ", ".join(parts) + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        return f"[{shape(value[0], depth + 1)}] x{len(value)}"
    if isinstance(value, bool):
        return "bool"
    if key in _SHOWN_VALUES and isinstance(value, str | int):
        return repr(value)
    if isinstance(value, int | float):
        return type(value).__name__
    if isinstance(value, str):
        return "str" if value else '""'
    return "null" if value is None else type(value).__name__


def detect_page_numbering(pages: list[list[str]], total: int | None) -> tuple[str | None, str]:
    """From the ids on pages 0, 1 and 2 (pageSize 1): the convention, or None with why not.

    Returns "zero", "one", "zero-as-one", "ignored" (pageNum has no effect) or None.
    """
    p0, p1, p2 = (pages + [[], [], []])[:3]
    if not p0 and not p1:
        if total:
            return None, f"pages 0 and 1 are both empty although total is {total}"
        return None, "nothing listed to compare"
    if not p0:
        return "one", "page 0 is empty, page 1 holds the first item"
    if p0 == p1:
        if p2 == p0 and (total or 0) > 2:
            return "ignored", "pages 0, 1 and 2 hold the same item"
        return "zero-as-one", "pages 0 and 1 hold the same item"
    return "zero", "page 0 holds the first item, page 1 the next one"


class Doctor:
    """Runs the checks; `findings` collects one Finding per assumption, in order."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        call_timeout: float = 15.0,
        time_limit: float = 120.0,
        poll_seconds: float = 5.0,
        region_table: dict[str, tuple[str, ...]] | None = None,
        out: Callable[[str], None] | None = None,
        probe: Callable[[dict, float], health_probe.ProbeResult] = health_probe.probe_once,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.api_key = api_key or ""
        self.call_timeout = float(call_timeout)
        self.poll_seconds = float(poll_seconds)
        self.region_table = region_table if region_table is not None else catalog.region_clusters()
        self.out = out or print
        self.probe = probe
        self.sleep = sleep
        self.clock = clock
        self.deadline = clock() + float(time_limit)
        self.findings: list[Finding] = []
        # A doctor run must not trip (or share) the gateway's breaker: own client, no Redis.
        self.client = NovitaClient(
            base_url,
            self.api_key,
            connect_timeout=min(3.05, self.call_timeout),
            read_timeout=self.call_timeout,
            read_retries=1,
            failure_threshold=1_000_000,
            redis_url="",
        )
        self.v1 = self.client.base_url + "/v1"
        self.session = requests.Session()
        self.session.trust_env = False
        adapter = DeadlineAdapter(max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.clusters: list[Cluster] = []
        self.mapped: dict[str, Cluster] = {}
        self.created_id: str | None = None
        self.created_name: str | None = None
        self.create_sent = False
        self.deleted = False
        self.cleanup_failed = False

    # -- plumbing ------------------------------------------------------------------------

    def mask(self, text: str) -> str:
        if len(self.api_key) >= 4:
            text = text.replace(self.api_key, "***")
        return text

    def remaining(self) -> float:
        return self.deadline - self.clock()

    def _timeouts(self) -> tuple[float, float]:
        left = self.remaining()
        if left <= 0:
            raise TimeLimitReached("the doctor's time limit was reached")
        return (min(3.05, self.call_timeout, left), min(self.call_timeout, left))

    def _bounded(self) -> NovitaClient:
        """The client, its timeouts cut to what is left of the time limit."""
        self.client.timeout = self._timeouts()
        self.client.total_timeout = min(sum(self.client.timeout), max(self.remaining(), 0.001))
        return self.client

    def raw(self, path: str, params: dict | None = None, *, key: str | None = None) -> RawAnswer:
        """A GET under the v1 base, answered as is (no parsing rules of the gateway applied)."""
        timeouts = self._timeouts()
        # Per-operation timeouts do not stop an answer that trickles in: bound the whole call.
        with deadline(min(sum(timeouts), self.remaining())):
            response = self.session.get(
                self.v1 + path,
                params=params,
                headers={
                    "Authorization": f"Bearer {self.api_key if key is None else key}",
                    "Content-Type": "application/json",
                },
                timeout=timeouts,
                allow_redirects=False,
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        return RawAnswer(response.status_code, body, response.text[:2000])

    def record(self, key: str, claim: str, result: str, seen: str) -> Finding:
        finding = Finding(key, claim, result, self.mask(seen))
        self.findings.append(finding)
        self.out(finding.line())
        return finding

    def check(self, key: str, claim: str, fn: Callable[[], tuple[str, str]]) -> Finding:
        """Run one check. An outage (timeout, 5xx, 429, no connection) or the time limit makes
        it 'not checked'; an answer the gateway cannot use (a 4xx, a route or auth error, a body
        it cannot read) contradicts it."""
        try:
            result, seen = fn()
        except TimeLimitReached:
            result, seen = NOT_CHECKED, "time limit reached"
        except NovitaMisconfiguredError as exc:
            result, seen = CONTRADICTED, exc.details()
        except NovitaTransientError as exc:
            result, seen = NOT_CHECKED, f"upstream unavailable: {exc.details()}"
        except NovitaError as exc:
            result, seen = CONTRADICTED, exc.details()
        except requests.RequestException as exc:
            result, seen = NOT_CHECKED, f"upstream unavailable: {type(exc).__name__}: {exc}"
        return self.record(key, claim, result, seen)

    @property
    def contradicted(self) -> list[Finding]:
        return [f for f in self.findings if f.result == CONTRADICTED]

    # -- read-only checks ----------------------------------------------------------------

    def run(self, smoke_region: str | None = None, **smoke_options: Any) -> list[Finding]:
        key = self.check(
            "auth.key",
            "the API key is accepted (GET /clusters answers 200 with data[])",
            self._check_key,
        )
        if key.result != CONFIRMED:
            self.out("stopping: nothing else can be checked without a working key and base URL")
            return self.findings
        self.check(
            "auth.invalid_key",
            "a wrong key is refused with 401/403, which the gateway reads as misconfiguration",
            self._check_invalid_key,
        )
        self.check(
            "route.not_found",
            "a wrong path answers a route-level 404 that never reads as 'instance gone'",
            self._check_route_404,
        )
        self.check(
            "clusters.shape",
            "clusters carry an id (a slug such as cn-hongkong-1) and a display name",
            self._check_clusters,
        )
        for code in self.region_table:
            self.check(
                f"regions.{code}",
                f"region {code} maps to a listed cluster (NOVITA_REGION_CLUSTERS)",
                lambda code=code: self._check_region(code),
            )
        for code, cluster in list(self.mapped.items()):
            self.check(
                f"products.{code}",
                f"products for {cluster.id} parse and name the cluster in `regions`",
                lambda cluster=cluster: self._check_products(cluster),
            )
            self.check(
                f"products.spot.{code}",
                f"spot offers (billingMethod=spot) for {cluster.id} carry a readable spotPrice",
                lambda cluster=cluster: self._check_spot(cluster),
            )
        self.check(
            "templates.list",
            "templates parse (createdAt or createTime) and the listing returns `total` of them",
            self._check_templates,
        )
        self.check(
            "pagination.templates",
            "the template listing's page numbering is one the gateway handles (0, 1, 0-as-1)",
            lambda: self._check_pagination("/templates", "template", {"channel": "official"}),
        )
        self._check_instance_pagination()
        self.check(
            "not_found.instance",
            "an unknown instance id answers an instance-level not-found (400 RESOURCE_NOT_FOUND "
            "or a 404 naming the resource)",
            self._check_not_found,
        )
        self.check(
            "jobs.list",
            "GET /jobs answers {jobs: [...], total} with the public key",
            self._check_jobs,
        )
        if smoke_region:
            self.smoke(smoke_region, **smoke_options)
        else:
            self.record(
                "smoke",
                "create, run, probe, stop and delete one instance",
                NOT_CHECKED,
                "not asked for (--smoke REGION)",
            )
        return self.findings

    def _check_instance_pagination(self) -> Finding:
        return self.check(
            "pagination.instances",
            "the instance listing's page numbering is one the gateway handles, and the "
            "gateway's listing returns every instance",
            lambda: self._check_pagination("/gpu/instances", "instances", {}),
        )

    def _check_key(self) -> tuple[str, str]:
        answer = self.raw("/clusters")
        body = answer.body
        if answer.status == 200 and isinstance(body, dict) and isinstance(body.get("data"), list):
            return CONFIRMED, answer.describe()
        return (NOT_CHECKED if answer.unavailable else CONTRADICTED), answer.describe()

    def _check_invalid_key(self) -> tuple[str, str]:
        answer = self.raw("/clusters", key=_INVALID_KEY)
        return (CONFIRMED if answer.status in (401, 403) else CONTRADICTED), answer.describe()

    def _check_route_404(self) -> tuple[str, str]:
        path = f"/novita-doctor/no-such-route-{secrets.token_hex(4)}"
        answer = self.raw(path)
        try:
            self._bounded()._request("doctor_route", "GET", self.v1 + path)
        except NovitaMisconfiguredError:
            return CONFIRMED, f"{answer.describe()}; the gateway reads it as misconfiguration"
        except NovitaNotFoundError:
            return CONTRADICTED, f"{answer.describe()}; the gateway would read it as 'not found'"
        except NovitaError as exc:
            return CONFIRMED, f"{answer.describe()}; the gateway reads it as {type(exc).__name__}"
        return CONTRADICTED, f"{answer.describe()}; a made-up path answered like a real one"

    def _check_clusters(self) -> tuple[str, str]:
        self.clusters = self._bounded().list_clusters()
        listed = ", ".join(f"{c.id} {c.name!r}" for c in self.clusters[:8])
        if not self.clusters:
            return CONTRADICTED, "no clusters listed"
        if any(not c.id or not c.name for c in self.clusters):
            return CONTRADICTED, f"a cluster without id or name: {listed}"
        return CONFIRMED, f"{len(self.clusters)} clusters: {listed}"

    def _check_region(self, code: str) -> tuple[str, str]:
        if not self.clusters:
            return NOT_CHECKED, "no clusters listed"
        cluster = catalog._find_cluster(code, self.clusters)
        candidates = " | ".join(self.region_table.get(code, ()))
        if cluster is None:
            ids = ", ".join(c.id or "?" for c in self.clusters)
            return (
                CONTRADICTED,
                f"none of {candidates} is listed (clusters: {ids}); "
                f"set NOVITA_REGION_CLUSTERS={code}=<cluster id>",
            )
        self.mapped[code] = cluster
        return CONFIRMED, f"{code} -> {cluster.id} {cluster.name!r}"

    def _check_products(self, cluster: Cluster) -> tuple[str, str]:
        answer = self.raw("/products", {"clusterId": cluster.id})
        products = self._bounded().list_products(cluster_id=cluster.id)
        if not products:
            return NOT_CHECKED, f"no products listed for {cluster.id}: {answer.describe()}"
        offered = [p for p in products if catalog._offered_in(p, cluster)]
        regions = sorted({r for p in products for r in p.regions})[:4]
        priced = [p for p in offered if p.id and p.price is not None]
        seen = (
            f"{len(products)} products, {len(offered)} offered here, regions like {regions}; "
            f"first: {shape(_first_item(answer.body, 'data'))}"
        )
        if not offered:
            return CONTRADICTED, seen + "; no product's regions name this cluster"
        if not priced:
            return CONTRADICTED, seen + "; no offer has an id and a readable price"
        return CONFIRMED, seen

    def _check_spot(self, cluster: Cluster) -> tuple[str, str]:
        answer = self.raw("/products", {"clusterId": cluster.id, "billingMethod": "spot"})
        products = self._bounded().list_products(cluster_id=cluster.id, billing_method="spot")
        spot = [p for p in products if "spot" in p.billing_methods or p.spot_price is not None]
        if not spot:
            return NOT_CHECKED, f"no spot offers for {cluster.id}"
        raw_prices = [
            item.get("spotPrice")
            for item in _items(answer.body, "data")
            if isinstance(item, dict) and "spotPrice" in item
        ]
        kinds = sorted({type(v).__name__ for v in raw_prices})
        seen = f"{len(spot)} spot offers, spotPrice as {kinds}"
        if any(p.spot_price is None for p in spot if p.available_deploy):
            return CONTRADICTED, seen + "; a deployable spot offer has no readable spotPrice"
        return CONFIRMED, seen

    def _check_templates(self) -> tuple[str, str]:
        answer = self.raw("/templates", {"pageSize": 5, "pageNum": 0, "channel": "official"})
        first = _first_item(answer.body, "template")
        stamp_keys = sorted({"createdAt", "createTime"} & set(first or {}))
        total = _total(answer.body)
        if total is not None and total > _MAX_FULL_LISTING:
            return NOT_CHECKED, f"{total} official templates: too many to list in full"
        templates = self._bounded().list_templates(channel="official")
        seen = f"{len(templates)} of total {total}; timestamps in {stamp_keys}; {shape(first)}"
        if total is not None and len(templates) < total:
            return CONTRADICTED, seen
        return CONFIRMED, seen

    def _check_pagination(self, path: str, key: str, params: dict) -> tuple[str, str]:
        pages: list[list[str]] = []
        total = None
        for page_num in (0, 1, 2):
            answer = self.raw(path, {**params, "pageSize": 1, "pageNum": page_num})
            if answer.status != 200 or not isinstance(answer.body, dict):
                result = NOT_CHECKED if answer.unavailable else CONTRADICTED
                return result, f"pageNum={page_num}: {answer.describe()}"
            total = _total(answer.body)
            pages.append([_item_id(item) for item in _items(answer.body, key)])
        convention, why = detect_page_numbering(pages, total)
        seen = f"{why} (total {total})"
        if convention == "ignored":
            return CONTRADICTED, seen + "; pageNum seems to be ignored"
        if convention is None:
            return (CONTRADICTED if total else NOT_CHECKED), seen
        if total is not None and total > _MAX_FULL_LISTING:
            return CONFIRMED, f"pages count {convention}: {seen}; full listing not read"
        client = self._bounded()
        if path == "/templates":
            listed = client.list_templates(**params)
        else:
            listed = client.list_instances()
        ids = {item.id for item in listed}
        seen = f"pages count {convention}: {seen}; the gateway's listing returned {len(ids)}"
        if total is not None and len(ids) < total:
            return CONTRADICTED, seen
        return CONFIRMED, seen

    def _check_not_found(self) -> tuple[str, str]:
        made_up = f"novita-doctor-{secrets.token_hex(6)}"
        answer = self.raw("/gpu/instance", {"instanceId": made_up})
        try:
            self._bounded().get_instance(made_up)
        except NovitaNotFoundError:
            return CONFIRMED, f"{answer.describe()}; the gateway reads it as not found"
        except NovitaMisconfiguredError:
            return (
                CONTRADICTED,
                f"{answer.describe()}; the gateway reads it as a route/auth error, so it will "
                "notice deleted instances only through listings",
            )
        except NovitaError as exc:
            return CONTRADICTED, f"{answer.describe()}; the gateway reads it as {exc.details()}"
        return CONTRADICTED, f"{answer.describe()}; a made-up id answered like a real instance"

    def _check_jobs(self) -> tuple[str, str]:
        answer = self.raw("/jobs", {"pageSize": 5, "pageNum": 0})
        if answer.unavailable:
            return NOT_CHECKED, answer.describe()
        if answer.status != 200 or not isinstance(answer.body, dict):
            return CONTRADICTED, answer.describe()
        if not isinstance(answer.body.get("jobs"), list):
            return CONTRADICTED, answer.describe()
        jobs = [Job.from_api(item) for item in answer.body["jobs"]]
        unreadable = [j for j in jobs if not j.id or not j.state]
        seen = answer.describe()
        if unreadable:
            return CONTRADICTED, seen + "; a job without a readable Id or state"
        return CONFIRMED, seen

    # -- smoke test ----------------------------------------------------------------------

    def smoke(
        self,
        region: str,
        *,
        image: str = "nginx:alpine",
        ports: str = "80/http",
        wait_seconds: float = 900.0,
    ) -> None:
        """Create the cheapest instance in `region`, see it run, probe it, stop and delete it.

        Whatever happens (an error, Ctrl-C, SIGTERM, the time limit), what was created is
        deleted before this returns or raises.
        """
        self.created_name = f"novita-doctor-{secrets.token_hex(4)}"
        try:
            self._smoke(region, image, ports, wait_seconds)
        except TimeLimitReached:
            self.record("smoke.aborted", "the smoke test ran to the end", NOT_CHECKED, "time limit")
        except (requests.RequestException, NovitaError) as exc:
            self.record(
                "smoke.aborted",
                "the smoke test ran to the end",
                CONTRADICTED,
                f"stopped on {type(exc).__name__}: {exc}",
            )
        finally:
            with _signals_deferred(self.out):
                self.cleanup()

    def _smoke(self, region: str, image: str, ports: str, wait_seconds: float) -> None:
        # A region code from the table, or (like the gateway accepts) a cluster id or name.
        cluster = self.mapped.get(region.upper()) or catalog._find_cluster(region, self.clusters)
        if cluster is None:
            known = ", ".join(self.mapped) or "none"
            self.record(
                "smoke",
                f"smoke test in {region}",
                CONTRADICTED,
                f"{region} maps to no listed cluster (regions that do: {known})",
            )
            return
        products = self._bounded().list_products(cluster_id=cluster.id)
        offers = [
            p
            for p in products
            if p.available_deploy and p.id and p.price is not None
            if catalog._offered_in(p, cluster)
        ]
        if not offers:
            self.record("smoke", f"smoke test in {region}", NOT_CHECKED, "no deployable product")
            return
        product = min(offers, key=lambda p: p.price or 0)
        self.create_sent = True
        self.created_id = self._bounded().create_instance(
            name=self.created_name,
            product_id=product.id,
            gpu_num=1,
            rootfs_size=max(product.min_rootfs or 10, 10),
            image_url=image,
            ports=ports,
            kind="gpu",
            cluster_id=cluster.id,
            billing_mode="onDemand",
        )
        self.record(
            "smoke.create",
            "create answers {id}",
            CONFIRMED,
            f"{self.created_id} ({product.name}, {product.id}, price {product.price})",
        )
        first = self._bounded().get_instance(self.created_id)
        self.record(
            "smoke.first_status",
            "the status right after create is one the gateway maps (pending, toCreate, ...)",
            CONFIRMED if _gateway_maps(first.status) else CONTRADICTED,
            repr(first.status),
        )
        self.check(
            "smoke.name_lookup",
            "the gateway's name lookup finds a just-created instance (page 0 included)",
            self._check_name_lookup,
        )
        earlier = [f for f in self.findings if f.key == "pagination.instances"]
        if earlier and earlier[-1].result == NOT_CHECKED:
            # An empty account could not show the page numbering; one instance is enough.
            self.findings.remove(earlier[-1])
            self._check_instance_pagination()
        wait_until = self.clock() + wait_seconds
        running, seen = self._wait_status("running", wait_until)
        self.record(
            "smoke.running",
            "the instance reaches `running`",
            self._outcome(running),
            " -> ".join(seen),
        )
        if running:
            self.check(
                "smoke.endpoints",
                "port endpoints parse and answer the gateway's probe once the service is up",
                lambda: self._check_endpoints(wait_until),
            )
        self._bounded().stop_instance(self.created_id)
        stopped, seen = self._wait_status("exited", wait_until)
        self.record(
            "smoke.stop",
            "stop brings the instance to `exited`",
            self._outcome(stopped),
            " -> ".join(seen),
        )
        self._bounded().delete_instance(self.created_id)
        self.deleted = True
        self.check(
            "smoke.delete",
            "a deleted instance ends as `removed` or an instance-level not-found",
            lambda: self._check_deleted(wait_until),
        )

    def _check_name_lookup(self) -> tuple[str, str]:
        found = self._bounded().list_instances(name=self.created_name)
        ids = [i.id for i in found]
        return (CONFIRMED if self.created_id in ids else CONTRADICTED), f"ids {ids}"

    def _outcome(self, reached: bool) -> str:
        """A wait that ended on the run's time limit proves nothing either way."""
        if reached:
            return CONFIRMED
        return NOT_CHECKED if self.remaining() <= 0 else CONTRADICTED

    def _poll(self, until: float) -> Iterator[None]:
        """Yield until `until` or the time limit, sleeping between rounds."""
        end = min(until, self.deadline)
        while True:
            yield
            if self.clock() >= end:
                return
            self.sleep(min(self.poll_seconds, max(end - self.clock(), 0.0)))
            if self.clock() >= end:
                return

    def _wait_status(self, wanted: str, until: float) -> tuple[bool, list[str]]:
        seen: list[str] = []
        for _ in self._poll(until):
            instance = self._bounded().get_instance(self.created_id)
            status = instance.status or "?"
            if not seen or seen[-1] != status:
                seen.append(status)
            if status == wanted:
                return True, seen
            if instance.status_error:
                seen.append(f"statusError {instance.status_error!r}")
                return False, seen
        return False, seen

    def _check_endpoints(self, until: float) -> tuple[str, str]:
        instance: UpstreamInstance = self._bounded().get_instance(self.created_id)
        mappings = [
            {"port": m.port, "type": m.type, "endpoint": m.endpoint} for m in instance.port_mappings
        ]
        forms = [f"{m['port']}/{m['type']} {_endpoint_form(m['endpoint'])}" for m in mappings]
        if not any(m["endpoint"] for m in mappings):
            return CONTRADICTED, f"no endpoint in portMappings {forms}"
        last: dict[int, str] = {}
        for _ in self._poll(until):
            pending = [m for m in mappings if m["endpoint"]]
            results = [self.probe(m, min(self.call_timeout, 10.0)) for m in pending]
            last = {r.port: r.detail for r in results}
            if all(r.up for r in results):
                return CONFIRMED, f"{forms}; probes {last}"
        return CONTRADICTED, f"{forms}; never all up, last probes {last}"

    def _check_deleted(self, until: float) -> tuple[str, str]:
        seen: list[str] = []
        for _ in self._poll(until):
            try:
                status = self._bounded().get_instance(self.created_id).status or "?"
            except NovitaNotFoundError as exc:
                seen.append(f"not found ({exc.status_code} {exc.reason})")
                return CONFIRMED, " -> ".join(seen)
            if not seen or seen[-1] != status:
                seen.append(status)
            if status == "removed":
                return CONFIRMED, " -> ".join(seen)
        return CONTRADICTED, " -> ".join(seen)

    def cleanup(self) -> None:
        """Delete what the smoke test created, whatever state the run ended in."""
        if not self.create_sent or self.deleted:
            return
        ids = [self.created_id] if self.created_id else []
        # A create that timed out may still have made an instance: find it by its unique name.
        for attempt in range(3):
            try:
                # The run's time limit may be spent: cleanup gets full timeouts of its own.
                self.client.timeout = (min(3.05, self.call_timeout), self.call_timeout)
                self.client.total_timeout = sum(self.client.timeout)
                if not ids:
                    found = self.client.list_instances(name=self.created_name)
                    ids = [i.id for i in found if i.id and i.name == self.created_name]
                    if not ids and attempt < 2:
                        # An unanswered create may still be in flight upstream: look again.
                        time.sleep(min(2.0, self.call_timeout))
                        continue
                if not ids:
                    self.out(
                        f"cleanup: the create was not answered and no instance named "
                        f"{self.created_name} is listed; check the Novita console"
                    )
                for instance_id in ids:
                    with contextlib.suppress(NovitaNotFoundError):
                        self.client.delete_instance(instance_id)
                    self.out(f"cleanup: deleted instance {instance_id} ({self.created_name})")
                self.deleted = True
                return
            except NovitaError as exc:
                self.out(f"cleanup: attempt {attempt + 1} failed: {exc.details()}")
                time.sleep(min(2.0, self.poll_seconds))
        self.cleanup_failed = True
        left = ", ".join(ids) or f"named {self.created_name}"
        self.out(f"CLEANUP FAILED: delete instance {left} in the Novita console now")


@contextlib.contextmanager
def _signals_deferred(out: Callable[[str], None]):
    """While cleaning up, Ctrl-C and SIGTERM only say to wait (a second interrupt must not
    leave a paid instance behind)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def wait(signum, frame):
        out("cleanup in progress; deleting what the doctor created, please wait")

    previous = {sig: signal.signal(sig, wait) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _gateway_maps(upstream_status: str | None) -> bool:
    """Whether the gateway's status table knows this upstream status (unknown ones keep the
    current status, which is what the sentinel detects)."""
    sentinel = "<unknown>"
    return (
        from_upstream(upstream_status, current=sentinel, desired="running", first_boot=True)
        != sentinel
    )


def _items(body: Any, key: str) -> list:
    value = body.get(key) if isinstance(body, dict) else None
    return value if isinstance(value, list) else []


def _first_item(body: Any, key: str) -> Any:
    items = _items(body, key)
    return items[0] if items else None


def _total(body: Any) -> int | None:
    value = body.get("total") if isinstance(body, dict) else None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _item_id(item: Any) -> str:
    if isinstance(item, dict):
        return str(item.get("id") or item.get("Id") or item.get("ID") or item)
    return str(item)


def _endpoint_form(endpoint: str | None) -> str:
    """How an endpoint is written: scheme or none, port or none (hosts are kept: not secret)."""
    if not endpoint:
        return "(empty)"
    scheme = endpoint.split("://", 1)[0] if "://" in endpoint else "no scheme"
    try:
        port = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}").port
    except ValueError:
        port = None
    return f"{endpoint} [{scheme}, {'port ' + str(port) if port else 'no port'}]"
