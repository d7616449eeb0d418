"""Outbound HTTP to client-supplied URLs (webhooks) that cannot be aimed at internal networks.

A webhook URL is checked twice: when a client submits it (`validate_webhook_url`) and again at
delivery (`post_json`), because DNS may answer differently by then. At delivery the host is
resolved once, every address is checked, and the connection is pinned to the checked address,
so a second lookup (DNS rebinding) can never redirect it. TLS still verifies the certificate
against the host name. Hosts listed in settings.WEBHOOK_ALLOWED_HOSTS skip the address check.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from requests.adapters import HTTPAdapter

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


def _resolve(target: _Target) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
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


def _checked_addresses(target: _Target):
    """Resolve the host once; every address must be public unless the host is allow-listed."""
    addresses = _resolve(target)
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
    """Raise django ValidationError unless `url` is a webhook URL we are willing to call."""
    try:
        _checked_addresses(_parse(url))
    except BlockedDestination as exc:
        raise ValidationError(str(exc), code="blocked_destination") from None
    except _Unresolvable:
        raise ValidationError("The URL's host could not be resolved", code="unresolvable") from None


class _PinnedAdapter(HTTPAdapter):
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


def _read_capped(raw, limit: int, deadline: float) -> bytes:
    data = bytearray()
    # read1 returns what one receive brings (read() would wait for the whole amount), so each
    # step is bounded by the read timeout and the deadline bounds a slow trickle overall.
    while len(data) < limit and time.monotonic() < deadline:
        chunk = raw.read1(min(_READ_CHUNK, limit - len(data)), decode_content=False)
        if not chunk:
            break
        data.extend(chunk)
    return bytes(data)


def post_json(url: str, body: bytes, headers: dict, timeout: float) -> SafeResponse:
    """POST `body` to `url` without following redirects, connecting only to a checked address.

    Raises BlockedDestination when the URL is malformed or its host resolves to a non-public
    address (and is not in WEBHOOK_ALLOWED_HOSTS); requests.ConnectionError when the host does
    not resolve; any other requests.RequestException (Timeout, ConnectionError, SSLError...)
    from the exchange itself.
    """
    target = _parse(url)
    try:
        addresses = _checked_addresses(target)
    except _Unresolvable:
        raise requests.ConnectionError(f"could not resolve {target.host}") from None
    address = addresses[0]
    netloc = f"[{address}]" if address.version == 6 else str(address)
    pinned_url = f"{target.scheme}://{netloc}:{target.port}{target.path_query}"

    send_headers = {k: v for k, v in (headers or {}).items() if k.lower() != "host"}
    send_headers["Host"] = _host_header(target)
    send_headers.setdefault("Content-Type", "application/json")
    # The body is only read for a diagnostic snippet: no compression, so the cap is real bytes.
    send_headers["Accept-Encoding"] = "identity"

    read_timeout = float(timeout)
    if read_timeout <= 0:
        raise ValueError("timeout must be positive")
    connect_timeout = min(read_timeout, MAX_CONNECT_TIMEOUT)

    with requests.Session() as session:
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
            data = _read_capped(response.raw, MAX_RESPONSE_BYTES, time.monotonic() + read_timeout)
        finally:
            response.close()
    return SafeResponse(
        status_code=response.status_code, text_snippet=data.decode("utf-8", errors="replace")
    )
