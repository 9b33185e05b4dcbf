"""Which TCP peers may tell us the original request (``trusted_proxies``)."""

from __future__ import annotations

import functools
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address


class TrustedPeers:
    """Whether the TCP peer may tell us the original request (a unix socket is local); remembered
    per address, as a proxy reconnects from the same few."""

    def __init__(self, networks: tuple[IPv4Network | IPv6Network, ...]) -> None:
        self._networks = networks
        self._remembered = functools.lru_cache(maxsize=1024)(self._trusted)

    def __call__(self, address: str) -> bool:
        """Whether the peer at ``address`` (empty on a unix socket) is trusted."""
        return not address or self._remembered(address)

    def _trusted(self, address: str) -> bool:
        """In a listed network; an IPv4 peer of a dual-stack listener (``[::]``, where it reads
        ``::ffff:10.0.0.1``) is the IPv4 address it maps."""
        try:
            peer = ip_address(address)
        except ValueError:
            return False
        mapped = peer.ipv4_mapped if isinstance(peer, IPv6Address) else None
        return any(peer in network or (mapped is not None and mapped in network) for network in self._networks)
