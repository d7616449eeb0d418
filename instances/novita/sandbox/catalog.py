"""The sandbox's catalogue: clusters, GPU products and templates it serves."""

from __future__ import annotations

CLUSTERS = (
    {"id": "CN-HK-01", "name": "Hong Kong 01"},
    {"id": "US-WEST-01", "name": "US West (Oregon) 01"},
    {"id": "EU-WEST-01", "name": "EU West (Frankfurt) 01"},
    {"id": "AS-SGP-02", "name": "Singapore 02"},
)


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


PRODUCTS = (
    # Two offers with the same display name in the same region at different prices: the
    # gateway has to pick one (e.g. the cheapest deployable) rather than match by name.
    _product("4090.16c.62g-hk-a", "RTX 4090 24GB", ["CN-HK-01"], 35000, spot=18000),
    _product("4090.16c.62g-hk-b", "RTX 4090 24GB", ["CN-HK-01"], 39000, inventory="high"),
    _product("4090.16c.62g-us", "RTX 4090 24GB", ["US-WEST-01", "EU-WEST-01"], 36000, spot=19000),
    _product("a100.24c.120g", "A100 80GB", ["US-WEST-01", "AS-SGP-02"], 160000, cpu=24, mem=120),
    _product(
        "h100.24c.200g",
        "H100 80GB",
        ["EU-WEST-01"],
        250000,
        cpu=24,
        mem=200,
        deploy=False,
    ),
    _product("l40s.16c.62g", "L40S 48GB", ["AS-SGP-02"], 86000, spot=43000, inventory="low"),
    _product("3090.12c.46g", "RTX 3090 24GB", ["AS-SGP-02", "CN-HK-01"], 21000, cpu=12, mem=46),
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
_TEMPLATES_BY_ID = {t["Id"]: t for t in TEMPLATES}
_DEPLOYABLE = tuple(p for p in PRODUCTS if p["availableDeploy"])
_SEED_PORTS = ((8888, "http"), (22, "tcp"))
