"""Who a request comes from: the peer, or the client a trusted proxy names.

Behind the shipped nginx every request's peer is 127.0.0.1; the client is
the last hop of ``X-Forwarded-For``, which nginx sets. That header is
believed only from the addresses in ``TRUSTED_PROXIES``: anyone else could
write whatever they like in it.
"""

from __future__ import annotations

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


def in_networks(address: str, networks: tuple[Network, ...]) -> bool:
    """True if ``address`` (text) is in one of ``networks``; False if unparsable."""
    try:
        ip = ipaddress.ip_address(address)
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
