"""Who a request comes from: the peer, or the client a trusted proxy names.

Behind the shipped nginx every request's peer is 127.0.0.1; the client is
the last hop of ``X-Forwarded-For``, which nginx sets. That header is
believed only from the addresses in ``TRUSTED_PROXIES``: anyone else could
write whatever they like in it.

Every per-client cap and budget counts a *client*: an IPv4 address, or the
IPv6 prefix (/64 by default, CLIENT_IPV6_PREFIX) its address is in, since
one IPv6 host normally holds a whole /64.
"""

from __future__ import annotations

import functools
import ipaddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(items: list[str]) -> tuple[Network, ...]:
    """``["127.0.0.1", "10.0.0.0/8"]`` -> networks; ValueError names a bad one."""
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"not an address or network: {item!r}") from exc
    return tuple(networks)


# The longest address text worth remembering (an IPv6 address with an
# IPv4 tail); anything longer is no address, and parsed (refused) each time.
_ADDRESS_CHARS = 45


@functools.lru_cache(maxsize=4096)
def _remembered(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(address)


def parse_address(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``ipaddress.ip_address``, remembered for the last 4,096 addresses:
    every connection's peer is parsed two or three times, mostly the same
    few (a proxy's). ValueError for anything else."""
    if len(address) > _ADDRESS_CHARS:
        return ipaddress.ip_address(address)
    return _remembered(address)


def in_networks(address: str, networks: tuple[Network, ...]) -> bool:
    """True if ``address`` (text) is in one of ``networks``; False if unparsable."""
    try:
        ip = parse_address(address)
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


def client_address(environ: dict, trusted: tuple[Network, ...]) -> str:
    """The client's address: REMOTE_ADDR, or XFF's last hop from a trusted peer."""
    peer = environ.get("REMOTE_ADDR") or ""
    if trusted and in_networks(peer, trusted):
        forwarded = environ.get("HTTP_X_FORWARDED_FOR", "")
        last_hop = forwarded.rsplit(",", 1)[-1].strip()
        if last_hop:
            return last_hop
    return peer


def client_key(address: str, ipv6_prefix: int = 64) -> str:
    """The client an address counts as: IPv4 itself (also when mapped into
    IPv6), IPv6 by its prefix; anything unparsable as it is."""
    try:
        ip = parse_address(address)
    except ValueError:
        return address
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/{ipv6_prefix}", strict=False))
    return str(ip)
