"""A fake Novita for unit tests, on top of `responses`: catalogue, instances, call counts."""

import json
from urllib.parse import parse_qs, urlsplit

import responses

from tests.conftest import UPSTREAM

V1 = UPSTREAM + "/v1"

CLUSTERS = [
    {"id": "CN-HK-01", "name": "CN-HK-01 (Hong Kong)"},
    {"id": "US-WEST-01", "name": "US-WEST-01 (Oregon)"},
]
PRODUCTS = [
    {
        "id": "p-4090-expensive",
        "name": "RTX 4090 24GB",
        "availableDeploy": True,
        "regions": ["CN-HK-01"],
        "price": 50000,
    },
    {
        "id": "p-4090-cheap",
        "name": "RTX 4090 24GB",
        "availableDeploy": True,
        "regions": ["CN-HK-01"],
        "price": 35000,
    },
    {
        "id": "p-4090-cheapest-but-full",
        "name": "RTX 4090 24GB",
        "availableDeploy": False,
        "regions": ["CN-HK-01"],
        "price": 10000,
    },
]
TEMPLATE = {
    "Id": "pytorch-jupyter",
    "name": "PyTorch",
    "image": "pytorch/pytorch:latest",
    "startCommand": "jupyter lab",
    "rootfsSize": 60,
    "ports": [{"type": "http", "ports": [8888]}, {"type": "tcp", "ports": [22]}],
    "envs": [{"key": "A", "value": "1"}],
}


def remote_instance(upstream_id="nov-1", name="my-gpu", status="running", **extra):
    data = {
        "id": upstream_id,
        "name": name,
        "status": status,
        "clusterId": "CN-HK-01",
        "clusterName": "Hong Kong",
        "gpuNum": "1",
        "cpuNum": "8",
        "memory": "32",
        "imageUrl": "pytorch/pytorch:latest",
        "portMappings": [
            {"port": 8888, "endpoint": "https://abc.novita.test:8888", "type": "http"},
            {"port": 22, "endpoint": "abc.novita.test:22", "type": "tcp"},
        ],
        "connectComponentSSH": {
            "sshCommand": "ssh root@abc.novita.test -p 22",
            "password": "hunter2-ssh",
        },
    }
    data.update(extra)
    return data


# The page numberings public sources disagree on: pages counted from 0, from 1 (page 0 is
# empty), or from 1 with 0 read as 1.
PAGE_CONVENTIONS = ("zero", "one", "zero-as-one")


def page_of(items, convention, page_num, page_size):
    """The slice of `items` upstream would answer for pageNum under a page numbering."""
    if convention == "zero":
        index = page_num
    elif convention == "one":
        if page_num < 1:
            return []
        index = page_num - 1
    else:
        index = max(page_num, 1) - 1
    return items[index * page_size : (index + 1) * page_size]


def paged(items, convention="zero", key="instances", with_total=True):
    """A `responses` callback serving `items` (a list the test may change later) page by page."""

    def callback(request):
        query = parse_qs(urlsplit(request.url).query)
        size = int(query["pageSize"][0])
        num = int(query["pageNum"][0])
        body = {key: page_of(items, convention, num, size)}
        if with_total:
            body["total"] = len(items)
        return 200, {}, json.dumps(body)

    return callback


class FakeNovita:
    """Registers upstream routes on a RequestsMock; tests read `.calls(path)`."""

    def __init__(self, mock: responses.RequestsMock):
        self.mock = mock

    def catalogue(self):
        self.mock.get(f"{V1}/clusters", json={"data": CLUSTERS})
        self.mock.get(f"{V1}/products", json={"data": PRODUCTS})
        self.mock.get(f"{V1}/template", json={"template": TEMPLATE})
        return self

    def create_returns(self, upstream_id="nov-1", status=200, body=None):
        self.mock.post(
            f"{V1}/gpu/instance/create",
            json=body if body is not None else {"id": upstream_id},
            status=status,
        )

    def get_returns(self, data=None, status=200, body=None):
        self.mock.get(f"{V1}/gpu/instance", json=body if body is not None else data, status=status)

    def action_returns(self, action, status=200, body=None):
        self.mock.post(f"{V1}/gpu/instance/{action}", json=body or {}, status=status)

    def list_returns(self, instances, convention="zero"):
        self.mock.add_callback("GET", f"{V1}/gpu/instances", callback=paged(instances, convention))

    def calls(self, path, method=None):
        return [
            c
            for c in self.mock.calls
            if c.request.url.split("?")[0].endswith(path)
            and (method is None or c.request.method == method)
        ]

    def bodies(self, path):
        return [json.loads(c.request.body) for c in self.calls(path, "POST")]
