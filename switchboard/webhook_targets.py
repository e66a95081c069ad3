"""Where Switchboard may send a webhook: an http(s) URL whose host resolves to public addresses only.

Loopback, private, link-local and reserved targets are refused unless explicitly allowed (local
development): a misconfigured target must not turn Switchboard into a way into the internal network.
Checked before every delivery, since an address may change.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import SplitResult, urlsplit


class TargetRefused(Exception):  # noqa: N818 - a refusal, not a crash
    """The configured target may not be called (loopback or private, or not http(s))."""


def checked_url(url: str) -> SplitResult:
    """`url`'s parts when it is an http(s) URL with a host (and a port from 1 to 65535, if any)."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port out of range
    except ValueError as exc:
        raise TargetRefused("the target must be an http(s) URL with a port from 1 to 65535") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        raise TargetRefused("the target must be an http(s) URL with a host")
    return parts


async def check_target(url: str, *, allow_private: bool) -> None:
    """Refuse a URL that is not http(s) or whose host resolves to a non-public address."""
    parts = checked_url(url)
    if allow_private:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, parts.port or 443,
                                                             type=socket.SOCK_STREAM)
    except OSError as exc:
        raise TargetRefused(f"cannot resolve {parts.hostname}") from exc
    for info in infos:
        if not _public(ipaddress.ip_address(info[4][0])):
            raise TargetRefused(f"{parts.hostname} resolves to a non-public address")


# IPv6 prefixes whose last 32 bits are an IPv4 address a gateway reaches: NAT64's well-known prefix (RFC
# 6052) and the deprecated IPv4-compatible form; `is_global` judges the IPv6 address, not the one inside
_CARRYING_IPV4 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("::/96"))
# NAT64 for local use (RFC 8215): whatever it maps to is the operator's own network
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        if (inside := _ipv4_inside(address)) is not None:
            return _public(inside)
        if address in _LOCAL_NAT64:
            return False
    return address.is_global and not address.is_multicast


def _ipv4_inside(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries to a gateway: mapped, 6to4, Teredo's client, NAT64 or
    IPv4-compatible."""
    if carried := address.ipv4_mapped or address.sixtofour or (address.teredo and address.teredo[1]):
        return carried
    if any(address in network for network in _CARRYING_IPV4):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None
