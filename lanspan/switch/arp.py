"""ARP suppression: a guest's ARP request answered by its own node, from bindings.

EVPN's ARP suppression (RFC 7432 section 10; RFC 9161): the switch keeps the
IPv4 -> MAC bindings it sees in ARP frames crossing it (a sender's address and
MAC, from local ports and from peers), and answers a local guest's request for
an address it knows with the reply the owner would send, instead of flooding
the request to every peer of the segment. Every flood is sealed and sent once
per peer and opened by each; a guest resolving a dozen neighbours after a cold
start of 100 nodes made each guest node send thousands of datagrams a second
and kept the machine too busy to heal (issue 10).

A binding is used only while it is fresh (seen within the MAC ageing time) and
its MAC is in the MAC table somewhere else than the asker, where it was when it
spoke for the address: behind a peer that is up, or another local port; and only
for an asker whose own address is bound to its MAC already (a request also tells
every guest that hears it where its sender is). Anything else floods as before: the owner answers,
and the answer teaches the binding. Never answered: probes (sender 0.0.0.0,
address conflict detection must hear the owner itself) and gratuitous requests
(sender = target: an address announcing where it now is, which every node must
see and learn from). Only a sender whose ARP MAC is the frame's source teaches.
"""

from __future__ import annotations

from typing import Final

from lanspan.records import record

__all__ = ["ARP_ETHERTYPE", "Arp", "answerable", "arp_reply", "parse_arp", "teaches"]

ARP_ETHERTYPE: Final = 0x0806
# Ethernet hardware, IPv4 protocol, 6-byte and 4-byte addresses: the one kind answered.
_ETHER_IPV4: Final = b"\x00\x01\x08\x00\x06\x04"
_ARP_LEN: Final = 14 + 28
_MIN_FRAME: Final = 60  # an Ethernet frame's minimum without its FCS; replies are padded
REQUEST: Final = 1
REPLY: Final = 2
_NO_IP: Final = b"\x00\x00\x00\x00"


@record(frozen=True, slots=True)
class Arp:
    """The fields of an Ethernet/IPv4 ARP packet."""

    op: int
    sender_mac: bytes
    sender_ip: bytes
    target_mac: bytes
    target_ip: bytes


def parse_arp(frame: bytes) -> Arp | None:
    """The ARP packet of an untagged frame, or None: not ARP, or not Ethernet/IPv4."""
    if len(frame) < _ARP_LEN or frame[12:14] != b"\x08\x06" or frame[14:20] != _ETHER_IPV4:
        return None
    return Arp((frame[20] << 8) | frame[21], frame[22:28], frame[28:32], frame[32:38], frame[38:42])


def arp_reply(request: Arp, mac: bytes) -> bytes:
    """The untagged frame the owner of `request.target_ip`, at `mac`, answers with."""
    frame = b"".join((
        request.sender_mac, mac, b"\x08\x06", _ETHER_IPV4, REPLY.to_bytes(2, "big"),
        mac, request.target_ip, request.sender_mac, request.sender_ip,
    ))  # fmt: skip
    return frame.ljust(_MIN_FRAME, b"\x00")


def teaches(arp: Arp, src: bytes) -> bool:
    """Whether `arp`, in a frame from MAC `src`, tells where its sender's address is."""
    return arp.sender_mac == src and arp.sender_ip != _NO_IP


def answerable(arp: Arp) -> bool:
    """Whether a request may be answered from a binding (no probe, no announcement)."""
    return arp.op == REQUEST and arp.sender_ip != _NO_IP and arp.target_ip != arp.sender_ip
