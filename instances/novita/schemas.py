"""Typed views of the upstream objects, parsed tolerantly.

Novita's documentation and its live API disagree in small ways (numbers as strings, `Id` vs `id`,
empty strings for "no value", fields that come and go between versions), so every field here is
optional and every parser accepts anything JSON can hold without raising. Unknown enum values
(statuses, job states) are kept verbatim: mapping them is status.py's job, not the parser's.

Secrets that upstream returns (SSH / web-terminal passwords) are never copied into these objects,
so nothing downstream can log, cache or serialise them by accident.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# --- coercion helpers -----------------------------------------------------------------------


def as_str(value: Any) -> str | None:
    """Text, with "" and null both meaning "no value"."""
    if type(value) is str:  # by far the commonest case: answered before any other test
        return value or None
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, bool)):
        return str(value)
    return None


def as_int(value: Any) -> int | None:
    """An integer from an int, a float or a numeric string ("24", "24.0"); else None."""
    kind = type(value)
    if kind is int:
        return value
    if kind is str:
        try:
            return int(value)
        except ValueError:
            pass  # "", "24.0", "n/a": the general path below
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            return int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                return None
            return as_int(number)
    return None


def as_float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value.strip():
        try:
            return float(value)
        except ValueError:
            return None
    return None


def as_bool(value: Any, default: bool = False) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no"):
            return False
    return default


def as_datetime(value: Any) -> datetime | None:
    """Upstream timestamps are Unix seconds, usually as strings; 0 means "never"."""
    if value is None or value == "":
        return None
    number = as_float(value)
    if number is None:
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return None
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        return None
    if number <= 0:
        return None
    if number > 1e11:  # milliseconds slipped through somewhere
        number /= 1000.0
    try:
        return datetime.fromtimestamp(number, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else []


def str_list(value: Any) -> list[str]:
    return [s for s in (as_str(v) for v in as_list(value)) if s is not None]


def any_id(data: dict) -> str | None:
    """Upstream spells identifiers `id` on some objects and `Id` on others (jobs, templates)."""
    return as_str(data.get("id")) or as_str(data.get("Id")) or as_str(data.get("ID"))


def port_layout(value: Any) -> tuple[tuple[int, str | None, str], ...]:
    """(port, endpoint, type) for each usable entry of a portMappings list; type defaults to
    http. A tuple, so callers can use it as a key: most instances share a few layouts.

    Runs for every instance of every listing pass, so well-typed values skip the coercions.
    """
    if type(value) is not list:
        return ()
    layout = []
    for item in value:
        if type(item) is not dict:
            continue
        get = item.get
        port = get("port")
        if type(port) is not int:
            port = as_int(port)
            if port is None:
                continue
        kind = get("type")
        kind = kind.lower() if type(kind) is str and kind else (as_str(kind) or "http").lower()
        endpoint = get("endpoint")
        if endpoint is not None and (type(endpoint) is not str or not endpoint):
            endpoint = as_str(endpoint)
        layout.append((port, endpoint, kind))
    return tuple(layout)


def status_error_text(value: Any) -> str | None:
    """statusError's text: an object's message (or state), or a bare string."""
    if isinstance(value, dict):
        return as_str(value.get("message")) or as_str(value.get("state"))
    return as_str(value)


def env_list(value: Any) -> list[dict[str, str]]:
    envs = []
    for item in as_list(value):
        item = as_dict(item)
        key = as_str(item.get("key"))
        if key:
            envs.append({"key": key, "value": as_str(item.get("value")) or ""})
    return envs


# --- objects --------------------------------------------------------------------------------


@dataclass(slots=True)
class Cluster:
    id: str | None = None
    name: str | None = None
    available_gpu_types: list[str] = field(default_factory=list)
    support_network_storage: bool = False
    support_instance_network: bool = False

    @classmethod
    def from_api(cls, data: Any) -> Cluster:
        data = as_dict(data)
        return cls(
            id=any_id(data),
            name=as_str(data.get("name")),
            available_gpu_types=str_list(data.get("availableGpuType")),
            support_network_storage=as_bool(data.get("supportNetworkStorage")),
            support_instance_network=as_bool(data.get("supportInstanceNetwork")),
        )


@dataclass(slots=True)
class Product:
    id: str | None = None
    name: str | None = None
    cpu_per_gpu: int | None = None
    memory_per_gpu: int | None = None
    disk_per_gpu: int | None = None
    available_deploy: bool = False
    min_rootfs: int | None = None
    max_rootfs: int | None = None
    min_local_storage: int | None = None
    max_local_storage: int | None = None
    regions: list[str] = field(default_factory=list)
    # Integer in an unstated unit (a third-party SDK reads it as 1/100000 USD per hour).
    price: int | None = None
    spot_price: float | None = None
    billing_methods: list[str] = field(default_factory=list)
    inventory_state: str | None = None

    @classmethod
    def from_api(cls, data: Any) -> Product:
        data = as_dict(data)
        return cls(
            id=any_id(data),
            name=as_str(data.get("name")),
            cpu_per_gpu=as_int(data.get("cpuPerGpu")),
            memory_per_gpu=as_int(data.get("memoryPerGpu")),
            disk_per_gpu=as_int(data.get("diskPerGpu")),
            available_deploy=as_bool(data.get("availableDeploy")),
            min_rootfs=as_int(data.get("minRootFS")),
            max_rootfs=as_int(data.get("maxRootFS")),
            min_local_storage=as_int(data.get("minLocalStorage")),
            max_local_storage=as_int(data.get("maxLocalStorage")),
            regions=str_list(data.get("regions")),
            price=as_int(data.get("price")),
            spot_price=as_float(data.get("spotPrice")),
            billing_methods=str_list(data.get("billingMethods")),
            inventory_state=as_str(data.get("inventoryState")),
        )


@dataclass(slots=True)
class TemplatePort:
    port: int
    type: str  # "http" or "tcp"


@dataclass(slots=True)
class Template:
    id: str | None = None
    name: str | None = None
    type: str | None = None
    channel: str | None = None
    image: str | None = None
    image_auth_id: str | None = None
    start_command: str | None = None
    entrypoint: str | None = None
    rootfs_size: int | None = None
    # Upstream groups ports by type ({type, ports:[...]}); flattened here, order kept.
    ports: list[TemplatePort] = field(default_factory=list)
    envs: list[dict[str, str]] = field(default_factory=list)
    min_cuda_version: str | None = None
    created_at: datetime | None = None

    @classmethod
    def from_api(cls, data: Any) -> Template:
        data = as_dict(data)
        ports: list[TemplatePort] = []
        for group in as_list(data.get("ports")):
            group = as_dict(group)
            port_type = (as_str(group.get("type")) or "http").lower()
            numbers = group.get("ports")
            if not isinstance(numbers, list):
                # Tolerate the flat {port, type} shape used by the edit endpoint.
                numbers = [group.get("port")]
            for number in numbers:
                port = as_int(number)
                if port is not None:
                    ports.append(TemplatePort(port=port, type=port_type))
        return cls(
            id=any_id(data),
            name=as_str(data.get("name")),
            type=as_str(data.get("type")),
            channel=as_str(data.get("channel")),
            image=as_str(data.get("image")),
            image_auth_id=as_str(data.get("imageAuth")),
            start_command=as_str(data.get("startCommand")),
            entrypoint=as_str(data.get("entrypoint")),
            rootfs_size=as_int(data.get("rootfsSize")),
            ports=ports,
            envs=env_list(data.get("envs")),
            min_cuda_version=as_str(data.get("minCudaVersion")),
            # Older docs spell it createTime, newer ones createdAt.
            created_at=as_datetime(data.get("createdAt") or data.get("createTime")),
        )


@dataclass(slots=True)
class PortMapping:
    port: int
    endpoint: str | None  # only get-instance carries the public address
    type: str


@dataclass(slots=True)
class UpstreamInstance:
    id: str | None = None
    name: str | None = None
    status: str | None = None  # upstream's value, verbatim (unknown values included)
    status_error: str | None = None  # statusError.message, when upstream reports one
    cluster_id: str | None = None
    cluster_name: str | None = None
    product_id: str | None = None
    product_name: str | None = None
    image_url: str | None = None
    cpu_num: int | None = None
    memory: int | None = None  # GB
    gpu_num: int | None = None
    rootfs_size: int | None = None  # GB
    port_mappings: list[PortMapping] = field(default_factory=list)
    ssh_command: str | None = None
    jupyter_address: str | None = None
    web_terminal_address: str | None = None
    billing_mode: str | None = None
    spot_status: str | None = None
    spot_reclaim_time: int | None = None  # None when no reclaim has started ("0" upstream)
    created_at: datetime | None = None
    # Types of the jobs upstream runs on it now (get-instance's `jobs`, e.g. saveImage).
    running_jobs: list[str] = field(default_factory=list)

    @classmethod
    def from_api(cls, data: Any) -> UpstreamInstance:
        data = as_dict(data)
        get = data.get

        mappings = [
            PortMapping(port=port, endpoint=endpoint, type=kind)
            for port, endpoint, kind in port_layout(get("portMappings"))
        ]
        error_text = status_error_text(get("statusError"))
        ssh = as_dict(get("connectComponentSSH"))
        reclaim = as_int(get("spotReclaimTime"))
        return cls(
            id=any_id(data),
            name=as_str(get("name")),
            status=as_str(get("status")),
            status_error=error_text,
            cluster_id=as_str(get("clusterId")),
            cluster_name=as_str(get("clusterName")),
            product_id=as_str(get("productId")),
            product_name=as_str(get("productName")),
            image_url=as_str(get("imageUrl")),
            cpu_num=as_int(get("cpuNum")),
            memory=as_int(get("memory")),
            gpu_num=as_int(get("gpuNum")),
            rootfs_size=as_int(get("rootfsSize")),
            port_mappings=mappings,
            # Older API versions put the SSH command at the top level.
            ssh_command=as_str(ssh.get("sshCommand")) or as_str(get("sshCommand")),
            jupyter_address=as_str(as_dict(get("connectComponentJupyter")).get("address")),
            web_terminal_address=as_str(as_dict(get("connectComponentWebTerminal")).get("address")),
            billing_mode=as_str(get("billingMode")),
            spot_status=as_str(get("spotStatus")),
            spot_reclaim_time=reclaim if reclaim else None,
            created_at=as_datetime(get("createdAt")),
            running_jobs=[
                as_str(as_dict(job).get("type")) or "job" for job in as_list(get("jobs"))
            ],
        )


@dataclass(slots=True)
class Job:
    id: str | None = None
    type: str | None = None  # saveImage, instanceMigrate, autoInstanceMigrate, ...
    state: str | None = None  # pulling, running, fail, success, break, ...
    error: str | None = None
    instance_id: str | None = None
    log_address: str | None = None
    created_at: datetime | None = None

    @classmethod
    def from_api(cls, data: Any) -> Job:
        data = as_dict(data)
        raw_state = data.get("state")
        if isinstance(raw_state, dict):
            state = as_str(raw_state.get("state"))
            # The docs say errorMessage/error; a third-party SDK types it as message.
            error = (
                as_str(raw_state.get("errorMessage"))
                or as_str(raw_state.get("message"))
                or as_str(raw_state.get("error"))
            )
        else:
            state = as_str(raw_state)
            error = None
        return cls(
            id=any_id(data),
            type=as_str(data.get("type")),
            state=state,
            error=error,
            instance_id=as_str(data.get("instanceId")),
            log_address=as_str(data.get("logAddress")),
            created_at=as_datetime(data.get("createdAt")),
        )


@dataclass(slots=True)
class MigrationResult:
    """What upstream said when a migration was accepted (the body is undocumented)."""

    instance_id: str | None = None  # a new upstream id, if upstream reports one
    job_id: str | None = None

    @classmethod
    def from_api(cls, data: Any) -> MigrationResult:
        data = as_dict(data)
        return cls(
            instance_id=as_str(data.get("newInstanceId")) or as_str(data.get("instanceId")),
            job_id=as_str(data.get("jobId")),
        )


@dataclass(slots=True)
class Page:
    """One page of a paginated listing; iterates over its items."""

    items: list
    page_num: int
    total: int | None
    # Only on the last page of a listing: True when the listing ran to its end.
    complete: bool = False

    def __iter__(self) -> Iterator:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)
