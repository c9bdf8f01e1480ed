"""The names and aliases of this namespace's links, read with one netlink dump.

Every agent start looks for devices an earlier run left (`kernel.leftovers`);
that look needs only two attributes of each link, and importing pyroute2 for
it costs some 90 ms of CPU and 11 MiB of memory in every agent, most of which
never programs the kernel. This is that one request, on a plain
``AF_NETLINK`` socket of the calling thread's namespace; pyroute2 stays the
library for everything that changes the kernel.

Request: ``RTM_GETLINK`` with ``NLM_F_REQUEST | NLM_F_DUMP``, an empty
``struct ifinfomsg``. Answers, until ``NLMSG_DONE``::

    struct nlmsghdr { u32 len; u16 type; u16 flags; u32 seq; u32 pid; }  16 bytes
    struct ifinfomsg { u8 family; u8 pad; u16 type; s32 index;
                       u32 flags; u32 change; }                          16 bytes
    struct rtattr { u16 len; u16 type; } + value, padded to 4 bytes     (repeated)

Only ``IFLA_IFNAME`` (3) and ``IFLA_IFALIAS`` (20) are read, both
NUL-terminated strings. ``NLMSG_ERROR`` raises OSError with the kernel's errno.
"""

from __future__ import annotations

import os
import socket
import struct

__all__ = ["link_aliases"]

_NETLINK_ROUTE = 0
_RTM_GETLINK = 18
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_IFLA_IFNAME = 3
_IFLA_IFALIAS = 20
_HDR = struct.Struct("=IHHII")
_IFINFO = 16
_RTA = struct.Struct("=HH")


def _text(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode(errors="replace")


def _parse_link(msg: bytes) -> tuple[str, str | None] | None:
    """(name, alias) of one RTM_NEWLINK message body (after nlmsghdr)."""
    name: str | None = None
    alias: str | None = None
    off = _IFINFO
    while off + _RTA.size <= len(msg):
        length, kind = _RTA.unpack_from(msg, off)
        if length < _RTA.size or off + length > len(msg):
            break
        value = msg[off + _RTA.size : off + length]
        kind &= 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
        if kind == _IFLA_IFNAME:
            name = _text(value)
        elif kind == _IFLA_IFALIAS:
            alias = _text(value) or None
        off += (length + 3) & ~3
    return (name, alias) if name is not None else None


def link_aliases() -> dict[str, str | None]:
    """Link name -> ifalias (None when unset) of every link in this thread's namespace."""
    seq = 1
    request = _HDR.pack(_HDR.size + _IFINFO, _RTM_GETLINK, _NLM_F_REQUEST | _NLM_F_DUMP, seq, 0)
    request += bytes(_IFINFO)
    out: dict[str, str | None] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_ROUTE) as s:
        s.bind((0, 0))
        s.sendall(request)
        while True:
            data = s.recv(1 << 16)
            if not data:
                raise OSError(0, "netlink: the link dump ended early")
            off = 0
            while off + _HDR.size <= len(data):
                length, kind, _flags, got_seq, _pid = _HDR.unpack_from(data, off)
                if length < _HDR.size or off + length > len(data):
                    raise OSError(0, "netlink: a truncated message in the link dump")
                body = data[off + _HDR.size : off + length]
                off += (length + 3) & ~3
                if got_seq != seq:
                    continue
                if kind == _NLMSG_DONE:
                    return out
                if kind == _NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", body)
                    if code:
                        raise OSError(-code, f"netlink link dump: {os.strerror(-code)}")
                    continue
                link = _parse_link(body)
                if link is not None:
                    out[link[0]] = link[1]
