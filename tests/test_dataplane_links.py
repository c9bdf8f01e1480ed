"""The one netlink dump the agent makes at every start without pyroute2 (`links.py`)."""

from __future__ import annotations

import struct

from lanspan.dataplane import links


def _attr(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + bytes(-len(raw) % 4)


def test_a_link_message_gives_its_name_and_alias() -> None:
    body = (
        bytes(16)  # struct ifinfomsg
        + _attr(links._IFLA_IFNAME, b"lsb10\0")
        + _attr(13, struct.pack("=I", 1500))  # IFLA_MTU, skipped
        + _attr(links._IFLA_IFALIAS, b"lanspan:net:n1:bridge:lan\0")
    )
    assert links._parse_link(body) == ("lsb10", "lanspan:net:n1:bridge:lan")


def test_no_alias_is_none_and_a_cut_attribute_ends_the_parse() -> None:
    body = bytes(16) + _attr(links._IFLA_IFNAME, b"eth0\0")
    assert links._parse_link(body) == ("eth0", None)
    assert links._parse_link(body + struct.pack("=HH", 40, links._IFLA_IFALIAS) + b"x") == (
        "eth0",
        None,
    )
    assert links._parse_link(bytes(16)) is None  # no name: not a link


def test_the_dump_agrees_with_pyroute2() -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        expected = {
            str(link.get("IFLA_IFNAME")): link.get("IFLA_IFALIAS") or None
            for link in ipr.get_links()
        }
    assert links.link_aliases() == expected
    assert "lo" in expected
