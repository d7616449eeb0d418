"""The gateway's REST API over HTTP, for the `ngw` command line. Knows nothing of Django."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote

import requests

CONNECT_TIMEOUT = 3.05


class ExitCode:
    """Exit codes by class of failure (documented in the README and `ngw --help`)."""

    OK = 0
    ERROR = 1  # anything not below
    USAGE = 2  # bad command line (click's own)
    NOT_FOUND = 3  # 404: no such instance (or an endpoint this gateway does not have)
    CONFLICT = 4  # 409: impossible in the current state, name taken
    INVALID = 5  # 400/413/422: the gateway rejected the request's content
    AUTH = 6  # 401/403: API key missing, wrong or revoked
    RATE_LIMITED = 7  # 429
    GATEWAY = 8  # 5xx: the gateway or Novita behind it failed, or /health is unhealthy
    UNREACHABLE = 9  # no answer from NGW_URL (connection refused, timeout)
    WAIT_TIMEOUT = 10  # --wait gave up before the instance got there
    INSTANCE_FAILED = 11  # --wait saw the instance end in failed (or terminated)
    INTERRUPTED = 130  # Ctrl-C while --wait followed an instance (it carries on)


def exit_code_for(status: int) -> int:
    if status == 404:
        return ExitCode.NOT_FOUND
    if status == 409:
        return ExitCode.CONFLICT
    if status in (400, 413, 415, 422):
        return ExitCode.INVALID
    if status in (401, 403):
        return ExitCode.AUTH
    if status == 429:
        return ExitCode.RATE_LIMITED
    if status >= 500 or status == 408:
        return ExitCode.GATEWAY
    return ExitCode.ERROR


@dataclass
class ApiError(Exception):
    """An error answer (the contract's envelope) or no answer at all."""

    message: str
    status: int | None = None
    code: str = ""
    details: object = None
    request_id: str = ""
    exit_code: int = ExitCode.ERROR
    retry_after: str = ""
    extra: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message

    @classmethod
    def from_response(cls, response: requests.Response) -> ApiError:
        try:
            body = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            text = response.text.strip()[:300] or response.reason
            error = {"message": f"HTTP {response.status_code}: {text}"}
        return cls(
            message=str(error.get("message") or f"HTTP {response.status_code}"),
            status=response.status_code,
            code=str(error.get("code") or ""),
            details=error.get("details"),
            request_id=str(error.get("requestId") or response.headers.get("X-Request-ID") or ""),
            exit_code=exit_code_for(response.status_code),
            retry_after=response.headers.get("Retry-After", ""),
        )

    @property
    def missing_route(self) -> bool:
        """A 404 for a path the gateway does not route (older gateway), not a missing record."""
        return self.status == 404 and self.code == "NOT_FOUND"


class Gateway:
    """One method per API call the CLI makes; every call has a bounded (connect, read) timeout."""

    def __init__(self, url: str, api_key: str = "", timeout: float = 15.0):
        self.url = url.rstrip("/")
        self.timeout = (CONNECT_TIMEOUT, timeout)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "ngw"
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    def request(self, method: str, path: str, *, ok=(200, 201, 202), **kwargs):
        try:
            response = self.session.request(method, self.url + path, timeout=self.timeout, **kwargs)
        except requests.Timeout:
            raise ApiError(
                f"{self.url} did not answer within {self.timeout[1]:g} s",
                exit_code=ExitCode.UNREACHABLE,
            ) from None
        except requests.ConnectionError:
            raise ApiError(
                f"cannot reach the gateway at {self.url} (is it running? is NGW_URL right?)",
                exit_code=ExitCode.UNREACHABLE,
            ) from None
        if response.status_code not in ok:
            raise ApiError.from_response(response)
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                f"{self.url}{path} answered something that is not JSON (is NGW_URL the gateway?)",
                status=response.status_code,
            ) from None

    # --- catalog -------------------------------------------------------------------------------

    def regions(self):
        return self.request("GET", "/api/regions")

    def products(self, region: str | None = None, gpus: int | None = None):
        params = {k: v for k, v in {"region": region, "gpuNum": gpus}.items() if v}
        return self.request("GET", "/api/products", params=params)

    def templates(self):
        return self.request("GET", "/api/templates")

    # --- instances -----------------------------------------------------------------------------

    def list(self) -> list[dict]:
        return self.request("GET", "/api/instances").get("instances") or []

    def get(self, instance_id: str) -> dict:
        return self.request("GET", f"/api/instances/{quote(instance_id, safe='')}")

    def create(self, body: dict) -> dict:
        return self.request("POST", "/api/instances", json=body)

    def start(self, instance_id: str) -> dict:
        return self.request("POST", f"/api/instances/{quote(instance_id, safe='')}/start", json={})

    def stop(self, instance_id: str) -> dict:
        return self.request("POST", f"/api/instances/{quote(instance_id, safe='')}/stop", json={})

    def delete(self, instance_id: str) -> dict:
        return self.request("DELETE", f"/api/instances/{quote(instance_id, safe='')}")

    def touch(self, instance_id: str) -> dict:
        return self.request(
            "PUT", f"/api/instances/{quote(instance_id, safe='')}/last-used", json={}
        )

    def events(self, instance_id: str, page_size: int = 50) -> dict:
        return self.request(
            "GET",
            f"/api/instances/{quote(instance_id, safe='')}/events",
            params={"pageSize": page_size},
        )

    def autostop_stats(self) -> dict:
        return self.request("GET", "/api/instances/auto-stop/stats")

    def autostop_trigger(self, dry_run: bool) -> dict:
        return self.request("POST", "/api/instances/auto-stop/trigger", json={"dryRun": dry_run})

    def health(self) -> dict:
        # 503 still carries the health report: it is the answer, not an error.
        return self.request("GET", "/health", ok=(200, 503))
