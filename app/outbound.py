"""Where the server may send requests on a tenant's behalf (webhook tools, agent webhooks).

A tenant names the URL, so the server must not become its way into the machine or the
network it runs in. A URL is refused when its host is, or resolves to, a loopback,
link-local (cloud metadata), private, shared, unique-local, multicast, reserved or
unspecified address — IPv4 or IPv6, IPv4-mapped and other IPv6 forms that embed an IPv4
address, the decimal/hex/octal IPv4 spellings resolvers accept, and `localhost`/`*.localhost`.

Two checks: :func:`url_refusal` when a URL is stored (no DNS: the name may not resolve
yet), and :func:`client` for every request, whose connections resolve the name, vet every
address and connect to the vetted one (Host and TLS SNI stay the name, so a second DNS
answer can't swap in another address), following no redirects and no proxy.

The operator's `SWITCHBOARD_OUTBOUND_ALLOW` lists host names, addresses and networks
(CIDR) that may be reached all the same, e.g. on-premise tools.
"""

import asyncio
import ipaddress
import socket
from typing import Annotated

import httpcore
import httpx
from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from app.settings import Settings, get_settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class OutboundRefused(httpcore.ConnectError):
    """A request the outbound policy refused before connecting."""


def parse_ip(host: str) -> Address | None:
    """The address a host spells, in any form a resolver takes (`127.1`, `0x7f000001`,
    `0177.0.0.1`, `2130706433`, `[::1]`, `fe80::1%eth0`); None for a name."""
    host = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefABCDEFxX." for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries: IPv4-mapped, 6to4, NAT64 or IPv4-compatible."""
    if ip.ipv4_mapped or ip.sixtofour:
        return ip.ipv4_mapped or ip.sixtofour
    if ip in NAT64 or (int(ip) >> 32 == 0 and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(ip: Address) -> str | None:
    """Why the server may not connect to `ip` (a non-public range), or None."""
    if isinstance(ip, ipaddress.IPv6Address) and (embedded := _embedded_ipv4(ip)) is not None:
        reason = address_refusal(embedded)
        return f"{reason} (embedded in {ip})" if reason else None
    for kind, matches in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("site-local", getattr(ip, "is_site_local", False)),
    ):
        if matches:
            return f"{ip} is not public ({kind})"
    if not ip.is_global:
        return f"{ip} is not public"
    return None


def _allowed_names(settings: Settings) -> set[str]:
    return {
        entry.lower().rstrip(".")
        for entry in settings.outbound_allow
        if parse_network(entry) is None
    }


def parse_network(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """An allow-list entry as a network (an address is a /32 or /128), or None for a host name."""
    try:
        return ipaddress.ip_network(entry.strip("[]"), strict=False)
    except ValueError:
        return None


def _allowed_address(settings: Settings, ip: Address) -> bool:
    networks = (parse_network(entry) for entry in settings.outbound_allow)
    return any(
        network is not None and ip.version == network.version and ip in network
        for network in networks
    )


def _local_name(name: str) -> bool:
    return name == "localhost" or name.endswith(".localhost")


def host_refusal(settings: Settings, host: str) -> str | None:
    """Why a URL's host is refused without resolving it (an address or a local name), or None."""
    name = host.lower().rstrip(".")
    if name in _allowed_names(settings):
        return None
    if (ip := parse_ip(name)) is not None:
        return None if _allowed_address(settings, ip) else address_refusal(ip)
    if _local_name(name):
        return f"{host} is the local machine"
    return None


def url_refusal(settings: Settings, url: str) -> str | None:
    """Why the server won't send requests to `url` (checked when the URL is stored), or None."""
    try:
        parts = httpx.URL(
            url
        )  # parsed as the client will: international names become their ASCII form
    except httpx.InvalidURL as exc:
        return f"not a valid URL ({exc})"
    host = parts.raw_host.decode("ascii")
    if parts.scheme not in ("http", "https") or not host:
        return "must be an http or https URL with a host"
    if parts.userinfo:
        return "must not carry a user name or password"
    reason = host_refusal(settings, host)
    return (
        f"{reason}; the server sends no requests to private or local addresses" if reason else None
    )


def _allowed_url(url: str) -> str:
    if reason := url_refusal(get_settings(), url):
        raise PydanticCustomError("url_not_allowed", reason)
    return url


OutboundUrl = Annotated[
    str, Field(pattern=r"^https?://[^\s/]+\S*$", max_length=2000), AfterValidator(_allowed_url)
]
"""A URL the server will send requests to (a field type of every model that takes one)."""


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to."""
    try:
        answers = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise httpcore.ConnectError(f"could not resolve {host}: {exc}") from None
    return [str(answer[4][0]) for answer in answers]


async def vetted_address(settings: Settings, host: str, port: int) -> str:
    """The address to connect to for `host`: resolved, every answer checked; OutboundRefused otherwise."""
    if reason := host_refusal(settings, host):
        raise OutboundRefused(f"refused to connect to {host}: {reason}")
    addresses = [parse_ip(address) for address in await resolve(host, port)]
    if host.lower().rstrip(".") not in _allowed_names(settings):
        for ip in addresses:
            if ip is None or (not _allowed_address(settings, ip) and address_refusal(ip)):
                raise OutboundRefused(f"refused to connect to {host}: {ip} is not public")
    if not addresses:
        raise httpcore.ConnectError(f"could not resolve {host}")
    return str(addresses[0])


class _VettingBackend(httpcore.AsyncNetworkBackend):
    """Connects to the vetted address of each host; the TLS layer above still uses the name."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        address = await vetted_address(self._settings, host, port)
        return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise OutboundRefused("unix sockets are not an outbound destination")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _VettingTransport(httpx.AsyncHTTPTransport):
    def __init__(self, settings: Settings):
        super().__init__()
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(), network_backend=_VettingBackend(settings)
        )


def client(settings: Settings, timeout: float) -> httpx.AsyncClient:
    """The HTTP client for every request a tenant's URL directs: vetted addresses, no redirects, no proxy."""
    return httpx.AsyncClient(
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        transport=_VettingTransport(settings),
    )


def refused(exc: Exception) -> bool:
    """Whether a request failed because the outbound policy refused its address."""
    return isinstance(exc.__cause__, OutboundRefused)
