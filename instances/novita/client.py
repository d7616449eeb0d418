"""The one module that talks to Novita's GPU-instance API.

Everything else in the gateway calls these methods and sees only the dataclasses in schemas.py and
the exceptions in errors.py. HTTP concerns live here, once: auth headers, (connect, read) timeouts,
error mapping and sanitising, retries of idempotent reads, the circuit breaker, and one metrics
hook per HTTP attempt.

Retries: only GETs are retried. A POST that failed in flight may still have happened upstream
(a create that timed out can leave a paid instance behind), so the caller decides what to do.
"""

from __future__ import annotations

import contextvars
import email.utils
import json
import logging
import os
import queue
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pybreaker
import requests

from ops.netsafety import DeadlineAdapter, deadline

from .errors import (
    NovitaCircuitOpenError,
    NovitaError,
    NovitaMisconfiguredError,
    NovitaNotConfiguredError,
    NovitaNotFoundError,
    NovitaPermanentError,
    NovitaRateLimitedError,
    NovitaTimeoutError,
    NovitaTransientError,
)
from .schemas import (
    Cluster,
    Job,
    MigrationResult,
    Page,
    Product,
    Template,
    UpstreamInstance,
    any_id,
    as_dict,
    as_int,
)

logger = logging.getLogger(__name__)

OnCall = Callable[[str, float, str], None]

DEFAULT_BASE_URL = "https://api.novita.ai/gpu-instance/openapi"
# Upstream reports "not found" on GPU resources as HTTP 400 with one of these reasons.
# INSTANCE_NOT_FOUND is not documented; accepted in case a newer API spells it that way.
NOT_FOUND_REASONS = frozenset({"RESOURCE_NOT_FOUND", "INSTANCE_NOT_FOUND", "TEMPLATE_NOT_FOUND"})
# A 404 with one of these reasons (or none) is about the route, not about a resource.
ROUTE_NOT_FOUND_REASONS = frozenset({"", "API_NOT_FOUND", "NOT_FOUND", "ROUTE_NOT_FOUND"})
MAX_ERROR_TEXT = 300
# A safety net against an upstream that ignores pageNum and never returns an empty page.
MAX_PAGES = 1000

_SECRET_FIELD_RE = re.compile(
    r"(?i)((?:password|passwd|pwd|token|secret|api[_-]?key|access[_-]?key|authorization)"
    r"[\"']?\s*[:=]\s*[\"']?)(?:bearer\s+)?[^\s\"',;&}]+"
)
_BEARER_RE = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+")
_URL_CREDENTIALS_RE = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@")
_REASON_RE = re.compile(r"[^A-Za-z0-9_.-]")
_WHITESPACE_RE = re.compile(r"\s+")


def _snake_to_camel(name: str) -> str:
    if "_" not in name:
        return name
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _items(operation: str, data: Any, *keys: str) -> list:
    """The list inside a response body: upstream wraps lists under varying keys.

    A missing or null list means "none" (upstream may omit empty fields), but a body that is not
    an object at all is malformed: reading it as "no instances" could make a reconcile believe
    everything was deleted.
    """
    if isinstance(data, list):
        return data
    if not isinstance(data, dict):
        raise NovitaPermanentError(
            "upstream answered a listing with a body that is not an object", operation=operation
        )
    for key in keys:
        value = data.get(key)
        if isinstance(value, list):
            return value
    if data and "total" not in data and not any(key in data for key in keys):
        # An object that is no listing at all (another service behind a wrong base URL): taking
        # it for "nothing there" would make instances look gone.
        raise NovitaMisconfiguredError(
            "upstream answered a listing with an object that holds no list", operation=operation
        )
    return []


class ReadAhead:
    """Pages of a listing, each requested before the previous one is handed over.

    A thread walks the pages while the caller works on the last one it got: upstream's time to
    answer the next page overlaps the caller's work on this one (and whatever the caller does
    before its first next()). The thread only does HTTP (no database), starts at once, and
    stops after its current page once close() is called. An error ends the iteration, raised
    in the caller's thread.
    """

    def __init__(self, pages: Iterator[Page]):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = threading.Event()
        # The copied context keeps the request id on the thread's log lines.
        context = contextvars.copy_context()
        thread = threading.Thread(
            target=context.run, args=(self._fetch, pages), name="novita-read-ahead", daemon=True
        )
        thread.start()

    def _fetch(self, pages: Iterator[Page]) -> None:
        try:
            for page in pages:
                self._queue.put((page, None))
                if self._closed.is_set():
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there
            self._queue.put((None, exc))
            return
        self._queue.put((None, None))

    def __iter__(self) -> ReadAhead:
        return self

    def __next__(self) -> Page:
        page, error = self._queue.get()
        if error is not None:
            self.close()
            raise error
        if page is None:
            self.close()
            raise StopIteration
        return page

    def close(self) -> None:
        self._closed.set()


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _raise(exc: BaseException) -> None:
    raise exc


def _noop() -> None:
    return None


class NovitaClient:
    """A thread-safe client for one Novita account. Build it once per process (get_client())."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        internal_base_url: str = "",
        internal_api_key: str = "",
        connect_timeout: float = 3.05,
        read_timeout: float = 10.0,
        total_timeout: float | None = None,
        read_retries: int = 2,
        retry_base_delay: float = 0.25,
        retry_max_delay: float = 2.0,
        max_retry_after: float = 5.0,
        failure_threshold: int = 5,
        reset_timeout: float = 60,
        redis_url: str = "",
        breaker_namespace: str = "novita",
        on_call: OnCall | None = None,
        session: requests.Session | None = None,
    ):
        base = (base_url or "").strip().rstrip("/")
        # Accept a base given with or without the version segment.
        if base.endswith("/v1"):
            base = base[: -len("/v1")]
        self.base_url = base
        self._v1 = base + "/v1" if base else ""
        self._api_key = api_key or ""

        internal_base = (internal_base_url or "").strip().rstrip("/")
        # The console backend is used for jobs only when a deployment configures both halves.
        if internal_base and internal_api_key:
            self._jobs_url = internal_base + "/api/v1/jobs"
            self._jobs_headers: dict[str, str] | None = {
                "Authorization": f"Bearer {internal_api_key}"
            }
        else:
            self._jobs_url = self._v1 + "/jobs"
            self._jobs_headers = None
        self._secrets = tuple(s for s in (self._api_key, internal_api_key or "") if len(s) >= 4)
        # Listing URLs whose page 0 turned out not to be a page of its own (see _pages).
        self._page_zero_not_first: set[str] = set()

        self.timeout = (float(connect_timeout), float(read_timeout))
        # The (connect, read) pair bounds each socket operation only; this bounds one attempt
        # in wall-clock time, so an upstream (or a proxy) that trickles its answer cannot hold a
        # worker past it. Default: the two timeouts added up.
        self.total_timeout = float(total_timeout or sum(self.timeout))
        self.read_retries = max(0, int(read_retries))
        self.retry_base_delay = retry_base_delay
        self.retry_max_delay = retry_max_delay
        self.max_retry_after = max_retry_after
        # Public so the metrics module can hook in after get_client() built the client.
        self.on_call = on_call

        self._session = session or requests.Session()
        for prefix in ("http://", "https://"):
            self._session.mount(prefix, DeadlineAdapter())
        # requests re-reads proxy and CA settings from os.environ (and ~/.netrc) on every call;
        # read them once here instead. trust_env=False also keeps a ~/.netrc entry from
        # silently replacing our Authorization header.
        self._session.trust_env = False
        self._env_settings = {
            url: self._session_settings_from_env(url) for url in {self._v1, self._jobs_url}
        }
        self._session.headers.update(
            {
                "Authorization": f"Bearer {self._api_key}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": "novita-gateway/1.0",
            }
        )

        self._storage = self._make_storage(redis_url, breaker_namespace)
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=max(1, int(failure_threshold)),
            reset_timeout=reset_timeout,
            # Permanent errors (4xx, not found, bad bodies) say nothing about upstream health.
            exclude=[NovitaPermanentError],
            state_storage=self._storage,
            name="novita",
            # The call that trips the breaker raises its own (more informative) error.
            throw_new_error_on_trip=False,
        )

    @staticmethod
    def _session_settings_from_env(url: str) -> dict:
        if not url:
            return {}
        settings: dict[str, Any] = {"proxies": requests.utils.get_environ_proxies(url)}
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            settings["verify"] = bundle
        return settings

    def _settings_for(self, url: str) -> dict:
        for prefix, settings in self._env_settings.items():
            if prefix and url.startswith(prefix):
                return settings
        return {}

    @staticmethod
    def _make_storage(redis_url: str, namespace: str) -> pybreaker.CircuitBreakerStorage:
        if redis_url:
            try:
                import redis

                conn = redis.Redis.from_url(
                    redis_url, socket_connect_timeout=0.5, socket_timeout=0.5
                )
                return pybreaker.CircuitRedisStorage(
                    pybreaker.STATE_CLOSED, conn, namespace=namespace
                )
            except Exception as exc:
                # Redis down at start-up must not stop the gateway; each process then keeps
                # its own breaker until it is rebuilt.
                logger.warning(
                    "novita circuit breaker: redis unavailable (%s), using in-memory state",
                    type(exc).__name__,
                )
        return pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)

    # --- circuit breaker ------------------------------------------------------------------

    @property
    def breaker_state(self) -> str:
        """Circuit state: "closed", "open", or "half-open" (open, next call goes through)."""
        state = self._storage.state
        if state == pybreaker.STATE_OPEN and not self._open_and_waiting():
            return pybreaker.STATE_HALF_OPEN
        return state

    def reset_breaker(self) -> None:
        """Close the circuit and zero its counters (shared ones too, when kept in Redis)."""
        self._breaker.close()

    def _open_and_waiting(self) -> bool:
        opened_at = self._storage.opened_at
        if opened_at is None:
            return False
        return datetime.now(UTC) < opened_at + timedelta(seconds=self._breaker.reset_timeout)

    def _record(self, error: NovitaError | None) -> None:
        """Feed one attempt's outcome to pybreaker's state machine.

        The HTTP call itself runs outside pybreaker, because CircuitBreaker.call holds a
        process-wide lock for the whole call and would serialise every upstream request.
        """
        try:
            if error is None:
                self._breaker.call(_noop)
            else:
                self._breaker.call(_raise, error)
        except (pybreaker.CircuitBreakerError, NovitaError):
            pass

    # --- HTTP core ------------------------------------------------------------------------

    def _request(
        self,
        operation: str,
        method: str,
        url: str,
        *,
        params: dict | None = None,
        body: dict | None = None,
        headers: dict | None = None,
    ) -> Any:
        if not self.base_url:
            raise NovitaNotConfiguredError(
                "NOVITA_API_BASE_URL is not configured", operation=operation
            )
        if not self._api_key:
            raise NovitaNotConfiguredError("NOVITA_API_KEY is not configured", operation=operation)

        retries = self.read_retries if method == "GET" else 0
        attempt = 0
        while True:
            try:
                return self._attempt(operation, method, url, params, body, headers)
            except (NovitaCircuitOpenError, NovitaMisconfiguredError):
                raise
            except NovitaTransientError as exc:
                delay = self._retry_delay(attempt, exc) if attempt < retries else None
                if delay is None:
                    raise
                attempt += 1
                logger.debug("novita %s retry %d/%d in %.2fs", operation, attempt, retries, delay)
                time.sleep(delay)

    def _retry_delay(self, attempt: int, exc: NovitaTransientError) -> float | None:
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            # Waiting less than upstream asked would just earn another 429; longer waits belong
            # to the caller (a task retry), not to a sleeping worker.
            return retry_after if retry_after <= self.max_retry_after else None
        delay = min(self.retry_base_delay * (2**attempt), self.retry_max_delay)
        return random.uniform(delay / 2, delay)

    def _attempt(
        self,
        operation: str,
        method: str,
        url: str,
        params: dict | None,
        body: dict | None,
        headers: dict | None,
    ) -> Any:
        if self._storage.state == pybreaker.STATE_OPEN and self._open_and_waiting():
            self._report(operation, 0.0, "circuit_open")
            raise NovitaCircuitOpenError(
                "upstream circuit breaker is open; not calling Novita", operation=operation
            )

        error: NovitaError | None = None
        status: int | None = None
        data: Any = None
        start = time.perf_counter()
        try:
            with deadline(self.total_timeout):
                response = self._session.request(
                    method,
                    url,
                    params=params,
                    json=body,
                    headers=headers,
                    timeout=self.timeout,
                    allow_redirects=False,
                    **self._settings_for(url),
                )
        except requests.Timeout as exc:  # DeadlineExceeded included
            error = NovitaTimeoutError(
                f"no answer within {self.timeout[0]}s connect / {self.timeout[1]}s read / "
                f"{self.total_timeout:g}s in all ({type(exc).__name__})",
                operation=operation,
            )
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema) as exc:
            error = NovitaNotConfiguredError(
                f"invalid upstream URL ({type(exc).__name__})", operation=operation
            )
        except requests.RequestException as exc:
            error = NovitaTransientError(
                f"connection failed: {self._sanitise(str(exc))}", operation=operation
            )
        else:
            status = response.status_code
            try:
                data = self._parse(operation, response)
            except NovitaError as exc:
                error = exc
        elapsed = time.perf_counter() - start

        self._record(error)
        outcome = "ok" if error is None else self._outcome(error)
        self._report(operation, elapsed, outcome)
        logger.debug(
            "novita %s %s status=%s outcome=%s %.1fms",
            operation,
            method,
            status,
            outcome,
            elapsed * 1000,
        )
        if error is not None:
            raise error
        return data

    @staticmethod
    def _outcome(error: NovitaError) -> str:
        if isinstance(error, NovitaTimeoutError):
            return "timeout"
        if isinstance(error, NovitaRateLimitedError):
            return "rate_limited"
        if isinstance(error, NovitaTransientError):
            return "transient"
        return "permanent"

    def _report(self, operation: str, seconds: float, outcome: str) -> None:
        hook = self.on_call
        if hook is None:
            return
        try:
            hook(operation, seconds, outcome)
        except Exception:
            # Metrics must never break a call to upstream.
            logger.warning("novita on_call hook failed", exc_info=True)

    def _parse(self, operation: str, response: requests.Response) -> Any:
        status = response.status_code
        if 200 <= status < 300:
            content = response.content
            if not content or not content.strip():
                return {}  # action endpoints may answer with an empty body
            try:
                # orjson decodes a listing page about twice as fast; it refuses NaN and
                # Infinity, which the standard parser tolerates, so that gets a second try.
                return orjson.loads(content)
            except orjson.JSONDecodeError:
                pass
            try:
                return json.loads(content)
            except ValueError:
                # The API always answers JSON: a page of HTML with a 200 is a proxy, a login
                # page or a wrong base URL, not an API answer.
                raise NovitaMisconfiguredError(
                    "upstream returned a body that is not JSON (is NOVITA_API_BASE_URL right?)",
                    operation=operation,
                    status_code=status,
                ) from None

        reason, message, is_json = self._error_details(response)
        kwargs = {"operation": operation, "status_code": status, "reason": reason}
        if status == 429:
            retry_after = _parse_retry_after(response.headers.get("Retry-After"))
            raise NovitaRateLimitedError(message, retry_after=retry_after, **kwargs)
        if status >= 500 or status == 408:
            raise NovitaTransientError(message, **kwargs)
        if status in (401, 403):
            raise NovitaMisconfiguredError(message, **kwargs)
        if status == 404:
            # Novita answers an unknown instance with 400; a 404 is only believed to be about
            # the resource when its JSON body says which resource is missing. Anything else (a
            # proxy page, API_NOT_FOUND, a wrong base URL) is about the route.
            code = reason.upper()
            if is_json and code not in ROUTE_NOT_FOUND_REASONS and code.endswith("NOT_FOUND"):
                raise NovitaNotFoundError(message, **kwargs)
            raise NovitaMisconfiguredError(message, **kwargs)
        if reason.upper() in NOT_FOUND_REASONS:
            raise NovitaNotFoundError(message, **kwargs)
        raise NovitaPermanentError(message, **kwargs)

    def _error_details(self, response: requests.Response) -> tuple[str, str, bool]:
        """(reason, message, is_json) from an error body of unknown shape, sanitised.

        Kratos-style {code, reason, message} is the likeliest shape; {error: {message, code}} is
        what Novita's LLM APIs use; anything else falls back to the raw text.
        """
        reason: Any = None
        message: Any = None
        try:
            body = json.loads(response.content) if response.content else None
        except ValueError:
            body = None
        is_json = isinstance(body, dict)
        if is_json:
            reason = body.get("reason")
            code = body.get("code")
            if not reason and isinstance(code, str) and not code.isdigit():
                reason = code
            message = body.get("message") or body.get("msg")
            nested = body.get("error")
            if isinstance(nested, dict):
                message = message or nested.get("message")
                nested_code = nested.get("code") or nested.get("reason")
                if not reason and isinstance(nested_code, str) and not nested_code.isdigit():
                    reason = nested_code
            elif isinstance(nested, str):
                message = message or nested
        if not isinstance(message, str) or not message.strip():
            message = response.text if response.content else ""
            if not message.strip():
                message = response.reason or f"HTTP {response.status_code}"
        reason_text = ""
        if isinstance(reason, str):
            reason_text = _REASON_RE.sub("", self._sanitise(reason))[:64]
        return reason_text, self._sanitise(message), is_json

    def _sanitise(self, text: str) -> str:
        """Make upstream text safe to store in an exception, a log line or an API response."""
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        text = _URL_CREDENTIALS_RE.sub(r"\1[redacted]@", text)
        text = _SECRET_FIELD_RE.sub(r"\1[redacted]", text)
        text = _BEARER_RE.sub("Bearer [redacted]", text)
        text = _WHITESPACE_RE.sub(" ", text).strip()
        if len(text) > MAX_ERROR_TEXT:
            text = text[: MAX_ERROR_TEXT - 3] + "..."
        return text

    def _pages(
        self,
        operation: str,
        url: str,
        params: dict,
        keys: tuple[str, ...],
        parse: Callable[[Any], Any] | None,
        page_size: int,
        headers: dict | None = None,
    ) -> Iterator[Page]:
        """Every page of a pageNum/pageSize listing, whatever upstream's page numbering.

        Public sources disagree on whether Novita counts pages from 0 or from 1 (and an upstream
        may read 0 as 1), so this starts at pageNum 0 and keeps only items whose id it has not
        seen yet. It stops once `total` distinct items are in, or on an empty page, or on a short
        page when no `total` says more remain. An empty or refused (4xx) page 0 is not the end:
        under 1-based numbering the listing starts at page 1.

        Once a complete walk of this URL has shown that page 0 is not a page of its own
        (refused, empty before a page 1 with items, or repeated whole by page 1), later walks
        start at page 1 and so read one page fewer. Such a walk is only taken as complete when
        `total` distinct items came in; otherwise it reads page 0 last, and if that page brings
        anything new the numbering was 0-based after all and walks start at 0 again. Correct
        under every numbering; the saving holds while upstream sends `total`.

        Every fetched page is yielded, empty ones included, so callers can count requests; a
        page's items are the ones not seen before (without `parse`, as upstream sent them). The
        last page says whether the listing ran to its end (`complete`): it is not when the page
        cap was hit or upstream kept answering the same page.
        """
        seen_ids: set[str] = set()
        unique = 0
        repeated = 0  # consecutive full pages that brought nothing new
        skipping_zero = url in self._page_zero_not_first
        page_num = 1 if skipping_zero else 0
        closing_zero = False  # reading the skipped page 0 last, to check the walk
        zero_not_first = False  # this walk's evidence that page 0 is not a page of its own
        page_zero_len: int | None = None
        total: int | None = None
        for _ in range(MAX_PAGES):
            try:
                data = self._request(
                    operation,
                    "GET",
                    url,
                    params={**params, "pageSize": page_size, "pageNum": page_num},
                    headers=headers,
                )
            except NovitaPermanentError as exc:
                if page_num != 0 or isinstance(exc, NovitaNotFoundError):
                    raise
                # Some 1-based APIs reject pageNum=0 outright; page 1 then is the first page.
                logger.info("novita %s: page 0 refused (%s); trying page 1", operation, exc)
                if closing_zero:
                    complete = total is None or unique >= total
                    yield Page(items=[], page_num=0, total=total, complete=complete)
                    if not complete:
                        self._warn_partial(operation, unique, total)
                    return
                zero_not_first = True
                yield Page(items=[], page_num=0, total=None)
                page_num = 1
                continue
            raw = _items(operation, data, *keys)
            total = as_int(data.get("total")) if isinstance(data, dict) else None
            fresh = []
            for item in raw:
                item_id = any_id(item) if type(item) is dict else None
                if item_id is not None:
                    if item_id in seen_ids:
                        continue
                    seen_ids.add(item_id)
                fresh.append(item)
            unique += len(fresh)
            items = fresh if parse is None else [parse(item) for item in fresh]
            more_by_total = total is not None and unique < total
            if closing_zero:
                if fresh:
                    # Page 0 held items of its own: 0-based numbering, so start there again.
                    self._page_zero_not_first.discard(url)
                yield Page(items=items, page_num=0, total=total, complete=not more_by_total)
                if more_by_total:
                    self._warn_partial(operation, unique, total)
                return
            if page_num == 0:
                page_zero_len = len(raw)
            elif page_num == 1 and raw and page_zero_len is not None:
                # Page 1 has items: page 0 was either empty or the same page over again.
                zero_not_first = zero_not_first or page_zero_len == 0 or not fresh
            repeated = repeated + 1 if raw and not fresh else 0
            if not raw and page_num == 0:
                # An empty page 0 (whatever its total says) may just mean "pages start at 1".
                done = False
            elif not raw or (total is not None and unique >= total):
                done = True
            else:
                done = len(raw) < page_size and not more_by_total
            stuck = repeated >= 2  # 0-as-1 repeats one page; more means pageNum is ignored
            # An empty page while `total` says more remain ends the walk but proves nothing
            # about the missing ones (they may have moved between pages while we read).
            complete = done and not more_by_total
            # A walk that skipped page 0 proves itself only by `total` (and not by an empty
            # answer, which 0-based numbering would also give for page 1).
            check_zero = done and skipping_zero and not (complete and total is not None and unique)
            yield Page(
                items=items, page_num=page_num, total=total, complete=complete and not check_zero
            )
            if check_zero:
                closing_zero = True
                page_num = 0
                continue
            if done:
                if not complete:
                    self._warn_partial(operation, unique, total)
                elif zero_not_first:
                    self._page_zero_not_first.add(url)
                return
            if stuck:
                self._page_zero_not_first.discard(url)
                logger.warning(
                    "novita %s: upstream answered the same page again at pageNum %d; "
                    "treating the listing as partial",
                    operation,
                    page_num,
                )
                return
            page_num += 1
        self._page_zero_not_first.discard(url)
        logger.warning(
            "novita %s: stopped after %d pages (the page cap); treating the listing as partial",
            operation,
            MAX_PAGES,
        )

    @staticmethod
    def _warn_partial(operation: str, unique: int, total: int | None) -> None:
        logger.warning(
            "novita %s: listing ended at %d of %d items; treating it as partial",
            operation,
            unique,
            total,
        )

    @staticmethod
    def _query(**values: Any) -> dict:
        return {k: v for k, v in values.items() if v is not None and v != ""}

    # --- catalog --------------------------------------------------------------------------

    def list_clusters(self) -> list[Cluster]:
        data = self._request("list_clusters", "GET", self._v1 + "/clusters")
        return [
            Cluster.from_api(item) for item in _items("list_clusters", data, "data", "clusters")
        ]

    def list_products(
        self,
        cluster_id: str | None = None,
        gpu_num: int | None = None,
        product_name: str | None = None,
        billing_method: str | None = None,
    ) -> list[Product]:
        params = self._query(
            clusterId=cluster_id,
            gpuNum=gpu_num,
            productName=product_name,
            billingMethod=billing_method,
        )
        data = self._request("list_products", "GET", self._v1 + "/products", params=params)
        return [
            Product.from_api(item) for item in _items("list_products", data, "data", "products")
        ]

    def iter_template_pages(
        self,
        name: str | None = None,
        type: str | None = None,
        channel: str | None = None,
        page_size: int = 100,
    ) -> Iterator[Page]:
        params = self._query(name=name, type=type, channel=channel)
        return self._pages(
            "list_templates",
            self._v1 + "/templates",
            params,
            ("template", "templates", "data"),
            Template.from_api,
            page_size,
        )

    def list_templates(
        self,
        name: str | None = None,
        type: str | None = None,
        channel: str | None = None,
        page_size: int = 100,
    ) -> list[Template]:
        pages = self.iter_template_pages(name=name, type=type, channel=channel, page_size=page_size)
        return [template for page in pages for template in page.items]

    def get_template(self, template_id: str) -> Template:
        data = self._request(
            "get_template",
            "GET",
            self._v1 + "/template",
            params={"templateId": template_id},
        )
        template = as_dict(data).get("template")
        return Template.from_api(template if isinstance(template, dict) else data)

    # --- instances ------------------------------------------------------------------------

    def create_instance(self, **fields: Any) -> str:
        """Create an instance; returns upstream's instance id.

        Takes upstream's field names, in camelCase (productId) or snake_case (product_id);
        None values are dropped. Never retried: on a timeout the instance may exist upstream,
        so look it up by name before trying again.
        """
        body = {_snake_to_camel(k): v for k, v in fields.items() if v is not None}
        body.setdefault("kind", "gpu")
        data = self._request(
            "create_instance", "POST", self._v1 + "/gpu/instance/create", body=body
        )
        instance_id = any_id(as_dict(data))
        if not instance_id:
            raise NovitaPermanentError(
                "create answered without an instance id; the instance may still exist upstream",
                operation="create_instance",
            )
        return instance_id

    def get_instance(self, instance_id: str) -> UpstreamInstance:
        data = self._request(
            "get_instance",
            "GET",
            self._v1 + "/gpu/instance",
            params={"instanceId": instance_id},
        )
        if not isinstance(data, dict):
            raise NovitaPermanentError(
                "get_instance answered with a body that is not an object",
                operation="get_instance",
            )
        # The documented body is the bare instance; tolerate a wrapped one too.
        wrapped = data.get("instance")
        if isinstance(wrapped, dict) and "id" not in data:
            data = wrapped
        return UpstreamInstance.from_api(data)

    def iter_instance_pages(
        self,
        name: str | None = None,
        status: str | None = None,
        page_size: int = 100,
        product_name: str | None = None,
        raw: bool = False,
        read_ahead: bool = False,
    ) -> Iterator[Page]:
        """Pages of UpstreamInstance, or with `raw` of the items as upstream sent them (for a
        reader that picks a few fields from thousands of items and parses them itself).
        With `read_ahead`, a ReadAhead: fetching starts now; close() it when done."""
        params = self._query(name=name, status=status, productName=product_name)
        pages = self._pages(
            "list_instances",
            self._v1 + "/gpu/instances",
            params,
            ("instances", "data"),
            None if raw else UpstreamInstance.from_api,
            page_size,
        )
        return ReadAhead(pages) if read_ahead else pages

    def list_instances(
        self,
        name: str | None = None,
        status: str | None = None,
        page_size: int = 100,
        product_name: str | None = None,
    ) -> list[UpstreamInstance]:
        pages = self.iter_instance_pages(
            name=name, status=status, page_size=page_size, product_name=product_name
        )
        return [instance for page in pages for instance in page.items]

    def _instance_action(self, operation: str, path: str, instance_id: str) -> Any:
        return self._request(operation, "POST", self._v1 + path, body={"instanceId": instance_id})

    def start_instance(self, instance_id: str) -> None:
        self._instance_action("start_instance", "/gpu/instance/start", instance_id)

    def stop_instance(self, instance_id: str) -> None:
        self._instance_action("stop_instance", "/gpu/instance/stop", instance_id)

    def delete_instance(self, instance_id: str) -> None:
        self._instance_action("delete_instance", "/gpu/instance/delete", instance_id)

    def migrate_instance(self, instance_id: str) -> MigrationResult:
        data = self._instance_action("migrate_instance", "/gpu/instance/migrate", instance_id)
        return MigrationResult.from_api(data)

    # --- jobs -----------------------------------------------------------------------------

    def iter_job_pages(
        self,
        type: str | None = None,
        state: str | None = None,
        page_size: int = 100,
    ) -> Iterator[Page]:
        params = self._query(type=type, state=state)
        return self._pages(
            "list_jobs",
            self._jobs_url,
            params,
            ("jobs", "data"),
            Job.from_api,
            page_size,
            headers=self._jobs_headers,
        )

    def list_jobs(
        self,
        type: str | None = None,
        instance_id: str | None = None,
        state: str | None = None,
        page_size: int = 100,
    ) -> list[Job]:
        # /jobs documents no instanceId filter, so that one is applied here.
        jobs = [
            job
            for page in self.iter_job_pages(type=type, state=state, page_size=page_size)
            for job in page.items
        ]
        if instance_id is not None:
            jobs = [job for job in jobs if job.instance_id == instance_id]
        return jobs


# --- per-process client ---------------------------------------------------------------------

_client: NovitaClient | None = None
_client_pid: int | None = None
_client_lock = threading.Lock()


def get_client() -> NovitaClient:
    """The process's client, built from Django settings on first use.

    Rebuilt after a fork (Celery prefork, gunicorn) so children never share the parent's sockets.
    """
    global _client, _client_pid
    client = _client
    if client is not None and _client_pid == os.getpid():
        return client
    with _client_lock:
        if _client is None or _client_pid != os.getpid():
            _client = _build_client_from_settings()
            _client_pid = os.getpid()
        return _client


def reset_client() -> None:
    """Forget the cached client (tests, or after changing settings)."""
    global _client, _client_pid
    with _client_lock:
        _client = None
        _client_pid = None


def _build_client_from_settings() -> NovitaClient:
    from django.conf import settings

    from ops.metrics import observe_upstream

    return NovitaClient(
        base_url=getattr(settings, "NOVITA_API_BASE_URL", "") or "",
        api_key=getattr(settings, "NOVITA_API_KEY", "") or "",
        internal_base_url=getattr(settings, "NOVITA_INTERNAL_API_BASE_URL", "") or "",
        internal_api_key=getattr(settings, "NOVITA_INTERNAL_API_KEY", "") or "",
        connect_timeout=float(getattr(settings, "NOVITA_CONNECT_TIMEOUT", 3.05)),
        read_timeout=float(getattr(settings, "NOVITA_READ_TIMEOUT", 10.0)),
        total_timeout=getattr(settings, "NOVITA_TOTAL_TIMEOUT", None),
        read_retries=int(getattr(settings, "NOVITA_READ_RETRIES", 2)),
        failure_threshold=int(getattr(settings, "NOVITA_CIRCUIT_FAILURE_THRESHOLD", 5)),
        reset_timeout=float(getattr(settings, "NOVITA_CIRCUIT_RESET_SECONDS", 60)),
        redis_url=getattr(settings, "REDIS_URL", "") or "",
        on_call=observe_upstream,
    )
