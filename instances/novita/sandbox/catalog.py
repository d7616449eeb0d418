"""The sandbox's catalogue: clusters, GPU products and templates it serves."""

from __future__ import annotations

# Real cluster ids are slugs; names are display names, some of them the contract's region codes
# ({id: "cn-hongkong-1", name: "CN-HK-01"}), some with a place ("US-01 (Dallas)"). The gateway
# maps region codes to these through its region table (instances/novita/catalog.py); Dallas is
# deliberately in no region.
CLUSTERS = (
    {"id": "cn-hongkong-1", "name": "CN-HK-01"},
    {"id": "us-west-1", "name": "US-WEST-01 (Oregon)"},
    {"id": "eu-west-1", "name": "EU-WEST-01 (Frankfurt)"},
    {"id": "as-sgp-2", "name": "AS-SGP-02"},
    {"id": "us-dallas-1", "name": "US-01 (Dallas)"},
)
_HK, _US, _EU, _SGP, _DAL = (c["name"] for c in CLUSTERS)


def _product(
    pid,
    name,
    regions,
    price,
    *,
    cpu=16,
    mem=62,
    disk=100,
    deploy=True,
    spot=None,
    inventory="normal",
    max_rootfs=500,
):
    methods = ["onDemand", "monthly"] + (["spot"] if spot is not None else [])
    return {
        "id": pid,
        "name": name,
        "cpuPerGpu": cpu,
        "memoryPerGpu": mem,
        "diskPerGpu": disk,
        "availableDeploy": deploy,
        "minRootFS": 10,
        "maxRootFS": max_rootfs,
        "minLocalStorage": 0,
        "maxLocalStorage": disk,
        "regions": list(regions),
        "price": price,
        "monthlyPrice": [{"price": price * 24 * 30 * 85 // 100, "month": 1}],
        "billingMethods": methods,
        # The docs type spotPrice as a string while price is an int; mirror that.
        "spotPrice": str(spot) if spot is not None else "0",
        "inventoryState": inventory if deploy else "none",
    }


# A product's `regions` hold cluster display names (empty would mean every cluster).
PRODUCTS = (
    # Two offers with the same display name in the same region at different prices: the
    # gateway has to pick one (e.g. the cheapest deployable) rather than match by name.
    _product("4090.16c.62g-hk-a", "RTX 4090 24GB", [_HK], 35000, spot=18000),
    _product("4090.16c.62g-hk-b", "RTX 4090 24GB", [_HK], 39000, inventory="high"),
    _product("4090.16c.62g-us", "RTX 4090 24GB", [_US, _EU], 36000, spot=19000),
    _product("a100.24c.120g", "A100 80GB", [_US, _SGP], 160000, cpu=24, mem=120),
    _product(
        "h100.24c.200g",
        "H100 80GB",
        [_EU],
        250000,
        cpu=24,
        mem=200,
        deploy=False,
    ),
    _product("l40s.16c.62g", "L40S 48GB", [_SGP], 86000, spot=43000, inventory="low"),
    _product("3090.12c.46g", "RTX 3090 24GB", [_SGP, _HK], 21000, cpu=12, mem=46),
    _product("4090.16c.62g-dal", "RTX 4090 24GB", [_DAL], 33000),
)

# Novita's newer template docs say `createdAt`, older ones `createTime`: the first template
# carries both, the second only `createTime`, the third only `createdAt`.
TEMPLATES = (
    {
        "Id": "pytorch-jupyter",
        "name": "PyTorch + Jupyter",
        "readme": "PyTorch 2.3 with CUDA 12.1, JupyterLab on 8888 and SSH on 22.",
        "type": "instance",
        "channel": "official",
        "image": "pytorch/pytorch:2.3.1-cuda12.1-cudnn8-runtime",
        "imageAuth": "",
        "startCommand": "",
        "entrypoint": "",
        "rootfsSize": 60,
        "ports": [{"type": "http", "ports": [8888]}, {"type": "tcp", "ports": [22]}],
        "envs": [{"key": "JUPYTER_TOKEN", "value": "sandbox"}],
        "tools": [{"name": "Jupyter", "describe": "JupyterLab", "port": "8888", "type": "http"}],
        "createdAt": "1713162260",
        "createTime": "1713162260",
        "recommendCards": [{"gpuSpecId": "4090.16c.62g", "cardNum": "1"}],
        "minCudaVersion": "12.1",
    },
    {
        "Id": "ubuntu-ssh",
        "name": "Ubuntu 22.04 + SSH",
        "readme": "Plain Ubuntu with an SSH server on 22.",
        "type": "instance",
        "channel": "official",
        "image": "ubuntu:22.04",
        "imageAuth": "",
        "startCommand": "",
        "entrypoint": "",
        "rootfsSize": 30,
        "ports": [{"type": "tcp", "ports": [22]}],
        "envs": [],
        "tools": [],
        "createTime": "1713162261",
        "recommendCards": [],
        "minCudaVersion": "",
    },
    {
        "Id": "comfyui",
        "name": "ComfyUI",
        "readme": "ComfyUI web UI on 8188.",
        "type": "instance",
        "channel": "community",
        "image": "ghcr.io/ai-dock/comfyui:latest-cuda",
        "imageAuth": "",
        "startCommand": "",
        "entrypoint": "",
        "rootfsSize": 80,
        "ports": [{"type": "http", "ports": [8188]}],
        "envs": [{"key": "COMFYUI_ARGS", "value": "--listen"}],
        "tools": [],
        "createdAt": "1713162262",
        "recommendCards": [{"gpuSpecId": "4090.16c.62g", "cardNum": "1"}],
        "minCudaVersion": "12.1",
    },
)

_PRODUCTS_BY_ID = {p["id"]: p for p in PRODUCTS}
_CLUSTER_NAMES = {c["id"]: c["name"] for c in CLUSTERS}


def offered_in(product: dict, cluster_id: str) -> bool:
    """Whether a product is offered in a cluster: its `regions` name the cluster (or are empty)."""
    return not product["regions"] or _CLUSTER_NAMES.get(cluster_id) in product["regions"]


def home_cluster(product: dict) -> str:
    """The cluster a create without clusterId lands in: the first one the product names."""
    for cluster in CLUSTERS:
        if offered_in(product, cluster["id"]):
            return cluster["id"]
    return CLUSTERS[0]["id"]


_TEMPLATES_BY_ID = {t["Id"]: t for t in TEMPLATES}
_DEPLOYABLE = tuple(p for p in PRODUCTS if p["availableDeploy"])
_SEED_PORTS = ((8888, "http"), (22, "tcp"))
