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


# IPv6 prefixes that carry an IPv4 address a gateway reaches: NAT64 (RFC 6052, RFC 8215), 6to4 (RFC 3056) and
# the deprecated IPv4-compatible form; `is_global` judges the IPv6 address, not the IPv4 one inside it
_CARRYING_IPV4 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"),
                  ipaddress.ip_network("2002::/16"), ipaddress.ip_network("::/96"))


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return _public(address.ipv4_mapped)
        if address.teredo is not None:
            return _public(address.teredo[1])
        if any(address in network for network in _CARRYING_IPV4):
            return False
    return address.is_global and not address.is_multicast
