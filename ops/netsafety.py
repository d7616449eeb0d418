"""Outbound HTTP that a peer cannot stall, and that cannot be aimed at internal networks.

Wall-clock deadlines. requests' timeouts are per socket operation: a peer that sends one header
byte every few seconds never trips them. Every outbound call (webhook deliveries, readiness
probes, Novita) therefore runs inside `deadline(seconds)`: connections opened or reused inside it
register with it, and when it passes, one watchdog thread per process shuts their sockets down,
which ends any blocked read at once. The call then raises DeadlineExceeded (a requests.Timeout),
also when a body was cut short without an error. Name lookups count too: getaddrinfo has no
socket to shut and cannot be interrupted, so `resolve` runs it in a worker thread and stops
waiting when the time is up (a resolver that hangs holds a pool thread, never the call).
`DeadlineAdapter` is the requests adapter whose connections take part; `http_status` and
`tcp_connects` are the readiness probes' two calls.
(No library offers this for requests: urllib3's Timeout(total=...) still bounds each read, and
signal-based timeouts work only in a main thread.)

SSRF. A webhook URL is checked twice: when a client submits it (`validate_webhook_url`) and again
at delivery (`post_json`), because DNS may answer differently by then. At delivery the host is
resolved once, every address is checked, and the connection is pinned to the checked address,
so a second lookup (DNS rebinding) can never redirect it. TLS still verifies the certificate
against the host name. Hosts listed in settings.WEBHOOK_ALLOWED_HOSTS skip the address check.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import heapq
import ipaddress
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError
from urllib3.util.connection import allowed_gai_family

logger = logging.getLogger(__name__)

MAX_URL_LENGTH = 2000
MAX_RESPONSE_BYTES = 64 * 1024
MAX_CONNECT_TIMEOUT = 10.0
# `verify` for TLS: True means requests' CA bundle. Tests point it at a throwaway CA.
CA_BUNDLE: bool | str = True

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Carrier-grade NAT space: not "private" to the ipaddress module, but never a public receiver.
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")
# NAT64 prefixes embed an IPv4 address that a NAT64 gateway would reach for us.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_READ_CHUNK = 8192
# Lookups running at once, per process; more queue (and time out unstarted). A hung lookup holds
# its thread for the system resolver's own timeout (tens of seconds), while a caller gives up
# after its deadline: room for a few dozen such lookups before others have to queue.
_RESOLVER_THREADS = 64


# --- wall-clock deadlines -----------------------------------------------------------------


class DeadlineExceeded(requests.Timeout):
    """The whole exchange (connect, headers and body) did not finish within its deadline."""


class Deadline:
    """One call's deadline: the sockets it uses, shut down together when it passes."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.at = time.monotonic() + self.seconds
        self.expired = False
        self.done = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def attach(self, sock: socket.socket) -> None:
        """Watch `sock`. A duplicate descriptor is kept: shutdown acts on the socket itself,
        so it reaches the connection even after urllib3 hands the socket to a response or wraps
        it in TLS (which detaches the original object)."""
        try:
            # fromfd duplicates the descriptor as a plain socket (SSLSocket.dup() refuses).
            watched = socket.fromfd(sock.fileno(), sock.family, sock.type)
        except (OSError, ValueError):
            return
        with self._lock:
            if not self.done:
                self._sockets.append(watched)
                watched = None
            expired = self.expired
        if watched is not None:
            watched.close()
        elif expired:
            _shut_down(self._sockets[-1])

    def expire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut_down(sock)

    def finish(self) -> None:
        with self._lock:
            self.done = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()


def _shut_down(sock: socket.socket) -> None:
    # Ends a read blocked in another thread at once (it sees end of stream).
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """One thread per process that expires deadlines when they pass (started after a fork)."""

    def __init__(self):
        self._heap: list = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._pid = None

    def add(self, item: Deadline) -> None:
        with self._cond:
            if self._pid != os.getpid():
                self._heap.clear()
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="outbound-deadlines", daemon=True).start()
            heapq.heappush(self._heap, (item.at, next(self._order), item))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                at, _, item = self._heap[0]
                wait = at - time.monotonic()
                if wait > 0 and not item.done:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            if not item.done:
                item.expire()


_WATCHDOG = _Watchdog()
_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "outbound_deadline", default=None
)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[Deadline]:
    """Bound everything inside to `seconds` of wall-clock time (connections made through a
    DeadlineAdapter, or attached by hand). Raises DeadlineExceeded when it passed, whether the
    work inside failed because its socket was shut or came back with a truncated answer."""
    if seconds <= 0:
        raise ValueError("a deadline must be positive")
    item = Deadline(seconds)
    token = _current.set(item)
    _WATCHDOG.add(item)
    try:
        yield item
    except Exception as exc:
        # Whatever a shut socket made the HTTP stack raise (urllib3's ProtocolError, a
        # requests ConnectionError, an SSL error...), it was the deadline.
        if item.expired and not isinstance(exc, DeadlineExceeded):
            raise DeadlineExceeded(_deadline_message(item)) from exc
        raise
    finally:
        item.finish()
        _current.reset(token)
    if item.expired:
        raise DeadlineExceeded(_deadline_message(item))


def _deadline_message(item: Deadline) -> str:
    return f"timed out: no complete answer within {item.seconds:g} s (connect, headers and body)"


def current_deadline() -> Deadline | None:
    return _current.get()


# --- name resolution within a time limit ---------------------------------------------------

_resolver: tuple[int, concurrent.futures.ThreadPoolExecutor] | None = None
_resolver_lock = threading.Lock()


def _resolver_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _resolver
    with _resolver_lock:
        if _resolver is None or _resolver[0] != os.getpid():
            pool = concurrent.futures.ThreadPoolExecutor(
                _RESOLVER_THREADS, thread_name_prefix="outbound-dns"
            )
            _resolver = (os.getpid(), pool)
        return _resolver[1]


def resolve(host: str, port: int, seconds: float, family: int = 0) -> list:
    """socket.getaddrinfo(host, port, family, SOCK_STREAM), waited for at most `seconds`.

    Raises TimeoutError when the resolver has not answered by then, or what getaddrinfo raises.
    """
    future = _resolver_pool().submit(socket.getaddrinfo, host, port, family, socket.SOCK_STREAM)
    try:
        return future.result(timeout=max(seconds, 0.0))
    except concurrent.futures.TimeoutError:
        future.cancel()  # still queued behind hung lookups: it never starts
        raise TimeoutError(f"no answer for {host} from the resolver within {seconds:g} s") from None


def _resolve_within(item: Deadline, host: str, port: int, family: int = 0) -> list:
    """`resolve` inside a deadline: running out of time expires the deadline (DeadlineExceeded)."""
    try:
        return resolve(host, port, item.remaining(), family)
    except TimeoutError:
        item.expire()
        raise DeadlineExceeded(_deadline_message(item)) from None


class _DeadlineAware:
    """A urllib3 connection whose socket the running deadline watches (new or reused)."""

    def _new_conn(self):
        item = _current.get()
        if item is not None and (self.timeout is None or self.timeout > item.remaining()):
            self.timeout = max(item.remaining(), 0.001)
        if item is None:
            return super()._new_conn()
        sock = self._connect_within(item)
        item.attach(sock)  # before any TLS handshake, so a trickled handshake is cut too
        return sock

    def _connect_within(self, item: Deadline):
        # urllib3 would look the name up itself, out of the deadline's reach: look it up within
        # it, then let urllib3 connect to each address in turn (its error handling unchanged).
        name = self._dns_host
        try:
            infos = _resolve_within(item, name.strip("[]"), self.port, allowed_gai_family())
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        except UnicodeError:
            return super()._new_conn()  # urllib3's own error for a name IDNA refuses
        failure = None
        try:
            for *_, sockaddr in infos:
                self._dns_host = sockaddr[0]  # `host` (TLS name, Host header) is restored below
                try:
                    return super()._new_conn()
                except ConnectTimeoutError as exc:  # NewConnectionError included
                    failure = exc
        finally:
            self._dns_host = name
        raise failure

    def request(self, *args, **kwargs):
        item = _current.get()
        if item is not None and self.sock is not None:
            item.attach(self.sock)  # a kept-alive connection taken from the pool
        return super().request(*args, **kwargs)


class _HTTPConnection(_DeadlineAware, HTTPConnection):
    pass


class _HTTPSConnection(_DeadlineAware, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_DEADLINE_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """A requests adapter whose connections obey `deadline(...)` (and behave as usual outside)."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_DEADLINE_POOLS)

    def proxy_manager_for(self, *args, **kwargs):
        manager = super().proxy_manager_for(*args, **kwargs)
        manager.pool_classes_by_scheme = dict(_DEADLINE_POOLS)
        return manager


# --- readiness probes ---------------------------------------------------------------------

_probe_session: tuple[int, requests.Session] | None = None


def _session_for_probes() -> requests.Session:
    global _probe_session
    if _probe_session is None or _probe_session[0] != os.getpid():
        session = requests.Session()
        session.trust_env = False
        adapter = DeadlineAdapter(max_retries=0, pool_maxsize=32)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        _probe_session = (os.getpid(), session)
    return _probe_session[1]


def http_status(url: str, timeout: float, *, verify: bool | str = True) -> int:
    """GET `url` (no redirects) and return its status; the whole exchange up to the status line
    and headers is bounded by `timeout` seconds. The body is never read. Raises
    requests.RequestException (DeadlineExceeded when the deadline cut it)."""
    with deadline(timeout):
        response = _session_for_probes().get(
            url,
            timeout=(min(timeout, MAX_CONNECT_TIMEOUT), timeout),
            allow_redirects=False,
            stream=True,
            verify=verify,
            headers={"Connection": "close"},
        )
        response.close()
    return response.status_code


def tcp_connects(host: str, port: int, timeout: float) -> None:
    """Open and close a TCP connection within `timeout` seconds in all (the name lookup and
    every address it gives share it). Raises OSError (TimeoutError when the time ran out)."""
    ends = time.monotonic() + timeout
    last: OSError = TimeoutError(f"no connection within {timeout:g} s")
    for family, kind, proto, _canon, address in resolve(host, port, timeout):
        left = ends - time.monotonic()
        if left <= 0:
            break
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(left)
            sock.connect(address)
            return
        except OSError as exc:
            last = exc
        finally:
            sock.close()
    raise last


# --- webhook destinations -----------------------------------------------------------------


class BlockedDestination(Exception):
    """The URL may not be contacted: malformed, or its host resolves to a non-public address."""


class _Unresolvable(Exception):
    pass


@dataclass(frozen=True)
class SafeResponse:
    """What a delivery needs to know about the answer: its status and the start of its body."""

    status_code: int
    text_snippet: str


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # lower-case, ASCII (IDNA), IPv6 without brackets
    port: int
    explicit_port: bool
    path_query: str


def is_public_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether a webhook may be sent to this address without an allow-list entry."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public_address(ip.ipv4_mapped)
        if ip.teredo is not None:
            return False  # a tunnel endpoint is never a legitimate receiver
        embedded = ip.sixtofour
        if embedded is None and any(ip in net for net in _NAT64):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and not is_public_address(embedded):
            return False
        if ip.is_site_local:
            return False
    if (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (ip.version == 4 and ip in _SHARED_ADDRESS_SPACE)
    ):
        return False
    return ip.is_global


def _parse(url) -> _Target:
    if not isinstance(url, str) or not url:
        raise BlockedDestination("The URL is empty")
    if len(url) > MAX_URL_LENGTH:
        raise BlockedDestination(f"The URL is longer than {MAX_URL_LENGTH} characters")
    # Different parsers disagree about URLs with whitespace or control characters; refuse them.
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in url):
        raise BlockedDestination("The URL must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise BlockedDestination("The URL must use http or https")
        if "@" in parts.netloc or parts.username is not None or parts.password is not None:
            raise BlockedDestination("The URL must not contain credentials")
        host = parts.hostname
        port = parts.port
    except ValueError as exc:
        raise BlockedDestination(f"The URL is malformed: {exc}") from None
    if not host:
        raise BlockedDestination("The URL must include a host")
    if port == 0:
        raise BlockedDestination("The URL's port is invalid")
    try:
        host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise BlockedDestination("The URL's host name is invalid") from None
    path_query = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(
        scheme=scheme,
        host=host,
        port=port or _DEFAULT_PORTS[scheme],
        explicit_port=port is not None,
        path_query=path_query,
    )


def _allowed_hosts() -> set[str]:
    return {
        h.strip().lower().strip("[]") for h in settings.WEBHOOK_ALLOWED_HOSTS or [] if h.strip()
    }


def _resolve(
    target: _Target, within: Deadline
) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        infos = _resolve_within(within, target.host, target.port)
    except DeadlineExceeded:
        raise
    except (OSError, UnicodeError):
        raise _Unresolvable(target.host) from None
    addresses = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        # A zone id ("fe80::1%eth0") is not part of the address itself.
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise _Unresolvable(target.host)
    return addresses


def _checked_addresses(target: _Target, within: Deadline):
    """Resolve the host once; every address must be public unless the host is allow-listed."""
    addresses = _resolve(target, within)
    if target.host in _allowed_hosts():
        return addresses
    blocked = [ip for ip in addresses if not is_public_address(ip)]
    if blocked:
        # The address goes to our log only: telling a client what an internal name resolves
        # to would map the internal network for them.
        logger.warning(
            "blocked outbound request to %s: resolves to non-public %s",
            target.host,
            ", ".join(str(ip) for ip in blocked),
        )
        raise BlockedDestination(
            "The URL's host resolves to a private or otherwise non-public address"
        )
    return addresses


def validate_webhook_url(url: str) -> None:
    """Raise django ValidationError unless `url` is a webhook URL we are willing to call.

    The lookup gets as long as a delivery would (WEBHOOK_TIMEOUT_SECONDS): a client's slow
    resolver must not hold the request either."""
    try:
        target = _parse(url)
        with deadline(settings.WEBHOOK_TIMEOUT_SECONDS) as item:
            _checked_addresses(target, item)
    except BlockedDestination as exc:
        raise ValidationError(str(exc), code="blocked_destination") from None
    except _Unresolvable:
        raise ValidationError("The URL's host could not be resolved", code="unresolvable") from None
    except DeadlineExceeded:
        raise ValidationError(
            "The URL's host could not be resolved in time", code="unresolvable"
        ) from None


class _PinnedAdapter(DeadlineAdapter):
    """Talks to an IP literal but presents and verifies the original host name over TLS."""

    def __init__(self, hostname: str):
        self._hostname = hostname
        super().__init__(max_retries=0)

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = self._hostname  # SNI
            pool_kwargs["assert_hostname"] = self._hostname  # certificate check
        return host_params, pool_kwargs


def _host_header(target: _Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    if target.explicit_port and target.port != _DEFAULT_PORTS[target.scheme]:
        host = f"{host}:{target.port}"
    return host


def _read_capped(raw, limit: int) -> bytes:
    data = bytearray()
    # read1 returns what one receive brings (read() would wait for the whole amount); the
    # caller's deadline shuts the socket if a trickle outlasts it.
    while len(data) < limit:
        chunk = raw.read1(min(_READ_CHUNK, limit - len(data)), decode_content=False)
        if not chunk:
            break
        data.extend(chunk)
    return bytes(data)


def post_json(url: str, body: bytes, headers: dict, timeout: float) -> SafeResponse:
    """POST `body` to `url` without following redirects, connecting only to a checked address.

    `timeout` bounds the whole exchange (name lookup, connect, headers, the start of the body)
    in wall-clock seconds. Raises BlockedDestination when the URL is malformed or its host
    resolves to a non-public address (and is not in WEBHOOK_ALLOWED_HOSTS);
    requests.ConnectionError when the host does not resolve; DeadlineExceeded when the deadline
    passed (the lookup included); any other
    requests.RequestException (ConnectionError, SSLError...) from the exchange itself.
    """
    target = _parse(url)
    send_headers = {k: v for k, v in (headers or {}).items() if k.lower() != "host"}
    send_headers["Host"] = _host_header(target)
    send_headers.setdefault("Content-Type", "application/json")
    # The body is only read for a diagnostic snippet: no compression, so the cap is real bytes.
    send_headers["Accept-Encoding"] = "identity"

    read_timeout = float(timeout)
    if read_timeout <= 0:
        raise ValueError("timeout must be positive")
    connect_timeout = min(read_timeout, MAX_CONNECT_TIMEOUT)

    with requests.Session() as session, deadline(read_timeout) as item:
        try:
            addresses = _checked_addresses(target, item)
        except _Unresolvable:
            raise requests.ConnectionError(f"could not resolve {target.host}") from None
        address = addresses[0]
        netloc = f"[{address}]" if address.version == 6 else str(address)
        pinned_url = f"{target.scheme}://{netloc}:{target.port}{target.path_query}"
        # Environment proxies would resolve the name themselves, and .netrc could add
        # credentials: neither may touch a client-chosen URL.
        session.trust_env = False
        adapter = _PinnedAdapter(target.host)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        response = session.post(
            pinned_url,
            data=body,
            headers=send_headers,
            timeout=(connect_timeout, read_timeout),
            allow_redirects=False,
            stream=True,
            verify=CA_BUNDLE,
        )
        try:
            data = _read_capped(response.raw, MAX_RESPONSE_BYTES)
        finally:
            response.close()
    return SafeResponse(
        status_code=response.status_code, text_snippet=data.decode("utf-8", errors="replace")
    )
