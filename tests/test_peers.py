"""Which peers may tell us the original request (forward_auth/peers.py)."""

from __future__ import annotations

from ipaddress import ip_network

from forward_auth.peers import TrustedPeers


def test_an_ipv4_peer_of_a_dual_stack_listener_is_the_address_it_maps() -> None:
    """A listener on ``[::]`` reads an IPv4 client as ``::ffff:a.b.c.d``: it is trusted as a.b.c.d."""
    peers = TrustedPeers((ip_network("127.0.0.0/8"), ip_network("10.1.0.0/16")))
    assert peers("127.0.0.1") and peers("::ffff:127.0.0.1") and peers("::ffff:10.1.2.3")
    assert not peers("::ffff:10.2.0.1") and not peers("::ffff:192.168.0.1") and not peers("10.2.0.1")
    assert not peers("::1")  # not listed here
    assert not peers("not an address")
    assert peers("")  # a unix socket's peer is local


def test_a_network_written_as_mapped_addresses_still_holds_them() -> None:
    peers = TrustedPeers((ip_network("::ffff:10.0.0.0/104"),))
    assert peers("::ffff:10.9.9.9")
    assert not peers("::ffff:11.0.0.1")
