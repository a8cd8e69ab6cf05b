"""Which network an address belongs to, for limits that one host or one network must not
be able to dodge by changing its port or its address within the network it controls."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

__all__ = ["address_key", "host_key", "prefix_key"]

# protocol.md 4 and 6.5: for handshake limits one host is an IPv4 address or an IPv6 /64 (what
# one IPv6 host is usually given); members are counted per address and per network, an IPv4
# /24 or an IPv6 /64. All of 127.0.0.0/8 (and ::1) is one machine for all three.
IPV4_PREFIX = 24
IPV6_HOST_PREFIX = 64
IPV6_PREFIX = 64


def _parse(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@lru_cache(maxsize=8192)
def address_key(host: str) -> str:
    """The key of the address ``host``, in one spelling."""
    address = _parse(host)
    if address is None:
        return host
    return "loopback" if address.is_loopback else str(address)


def _network_key(host: str, ipv4_prefix: int, ipv6_prefix: int) -> str:
    """The network of ``prefix`` bits that ``host`` is in, loopback as one machine."""
    address = _parse(host)
    if address is None:
        return host
    if address.is_loopback:
        return "loopback"
    prefix = ipv4_prefix if isinstance(address, ipaddress.IPv4Address) else ipv6_prefix
    return str(ipaddress.ip_network((address, prefix), strict=False))


@lru_cache(maxsize=8192)
def host_key(host: str) -> str:
    """The key of the host behind ``host``: the IPv4 address, or the IPv6 /64."""
    key = _network_key(host, 32, IPV6_HOST_PREFIX)
    return key.removesuffix("/32")


@lru_cache(maxsize=8192)
def prefix_key(host: str) -> str:
    """The key of the network behind ``host``: the IPv4 /24, or the IPv6 /64."""
    return _network_key(host, IPV4_PREFIX, IPV6_PREFIX)
