"""Which network addresses a webhook may reach.

An endpoint's URL is checked when it is registered, as a courtesy, and the address actually dialled is
checked again at every delivery (``httpx-secure``), so neither a redirect (never followed) nor a DNS
answer that changes later reaches the service's own network. Private, loopback and link-local addresses
are allowed only with ``LEDGER_WEBHOOK_ALLOW_PRIVATE_NETWORKS`` (tests, private deployments).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Final
from urllib.parse import urlsplit

import httpx
from httpx_secure import httpx_ssrf_protection

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SIX_TO_FOUR: Final = ipaddress.IPv6Network("2002::/16")
MAX_URL_LENGTH: Final = 2_000
# A registration does not wait on a slow resolver: the check at delivery is the one that counts.
LOOKUP_TIMEOUT_SECONDS: Final = 2.0


def globally_reachable(address: IPAddress) -> bool:
    """The standard library's view, and the IPv4 address inside a 6to4, mapped or NAT64 one too."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped.is_global
        if address in SIX_TO_FOUR and address.sixtofour is not None and not address.sixtofour.is_global:
            return False
        if address in ipaddress.IPv6Network("64:ff9b::/96"):
            return ipaddress.IPv4Address(address.packed[-4:]).is_global
    return address.is_global


def url_problem(url: str) -> str | None:
    """Why a webhook URL cannot be registered, before looking up its host; None if it can."""
    if len(url) > MAX_URL_LENGTH:
        return f"must be at most {MAX_URL_LENGTH} characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a valid URL (its host or port)"
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return "must be an http or https URL with a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry a user name or password"
    if port == 0:
        return "must not name port 0"
    return _host_problem(parts.hostname)


def _host_problem(host: str) -> str | None:
    try:
        host.encode("idna")
    except UnicodeError:
        return "has a host name that is not valid (an empty label, or one over 63 characters)"
    return None


async def private_address_of(url: str) -> str | None:
    """The first address of the URL's host that is not globally reachable, or None. A host that does not
    resolve now is accepted: the check that counts is the one at delivery. Call it on a URL that
    ``url_problem`` accepted."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        return None if globally_reachable(ipaddress.ip_address(host)) else host
    except ValueError:
        pass
    try:
        async with asyncio.timeout(LOOKUP_TIMEOUT_SECONDS):
            infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError):
        return None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not globally_reachable(address):
            return str(address)
    return None


def guarded_client(*, timeout_seconds: float, allow_private: bool) -> httpx.AsyncClient:
    """An HTTP client that follows no redirect and, unless private networks are allowed, dials only
    globally reachable addresses."""
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_seconds),
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
    )
    if allow_private:
        return client
    return httpx_ssrf_protection(client, custom_validator=lambda _host, address, _port: globally_reachable(address))
