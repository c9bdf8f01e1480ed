"""The one UDP socket of a node: dual-stack, big buffers, UDP GSO and GRO.

``send_batch`` hands the kernel up to 64 equal-size datagrams (the last may be
shorter) in one ``sendmsg`` with UDP_SEGMENT; ``recv_batch`` gets a GRO
buffer in one ``recvmsg`` and splits it by the segment size the kernel
reports. Where the kernel or the egress device refuses segmentation
offload, sending falls back to one ``sendto`` per datagram (logged once).

Replies leave from the local address the peer's datagrams arrive on
(IP_PKTINFO / IPV6_PKTINFO), not the kernel's default source: on a server
with two uplinks, a peer that reaches us through the second one gets its
answers from the second address, so the site's policy routing sends them
out the uplink that works. A sender reaching us on several local addresses
(it probes each of our endpoints, as a node of a two-provider site does)
gets the kernel's own choice whenever that is one of them: the kernel's
route is the one that works, and the source must not flip with whichever
probe came in last (issue 10: inside a two-provider site, sending from the
second address towards a first-provider address has no return path). A
sender's local addresses are remembered for good (in a bounded LRU table)
only once the agent says one of its datagrams authenticated
(`authenticated`); until then they serve only the replies of the same round
(`end_round` forgets them), so spoofed sources can neither fill the table
nor push real peers out of it.

Addresses are ``(host, port)`` with IPv4 as plain dotted strings: IPv4-mapped
IPv6 (``::ffff:a.b.c.d``) is normalised on receive and plain IPv4 is mapped
on send.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Sequence

from lanspan.addr import Addr
from lanspan.records import record

__all__ = ["MAX_GSO_BYTES", "MAX_GSO_SEGMENTS", "Addr", "UdpCounters", "UdpEndpoint", "chunks"]

log = logging.getLogger(__name__)


SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
# The kernel's arrival time of each datagram (CLOCK_REALTIME, struct timespec) as
# ancillary data: how long it waited in the receive buffer (`recv_batch` sets
# `last_arrival`). Python's socket module does not name them; the Linux values.
SO_TIMESTAMPNS = 35
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
_TIMESPEC = struct.Struct("=qq")

MAX_GSO_SEGMENTS = 64
MAX_GSO_BYTES = 65507  # largest IPv4 UDP payload; the kernel's limit per call
RECV_SIZE = 65536 + 1024
SOCKBUF = 8 << 20

IP_PKTINFO = 8
IPV6_RECVPKTINFO = 49
IPV6_PKTINFO = 50
_IN_PKTINFO = struct.Struct("=i4s4s")  # ifindex, spec_dst, addr
_IN6_PKTINFO = struct.Struct("=16si")  # addr, ifindex
_CMSG_SPACE = (
    socket.CMSG_SPACE(4)
    + socket.CMSG_SPACE(_TIMESPEC.size)
    + socket.CMSG_SPACE(_IN6_PKTINFO.size)
    + socket.CMSG_SPACE(_IN_PKTINFO.size)
)
# Authenticated remote addresses whose local address we remember (reply-from), LRU.
MAX_REPLY_FROM = 4096
# Senders of this round not (yet) authenticated: replies of the round leave from where
# they came in; beyond this many in one round, replies use the kernel's default source.
MAX_ROUND_SOURCES = 1024
# Local addresses remembered per remote (a node has a few endpoints, not more).
MAX_LOCALS = 4
# Addresses `recv_batch` keeps the printed form of (senders' hosts, packed local
# addresses): cleared when full, so a flood of spoofed sources costs a refill, not memory.
MAX_NAMES = 4096
# How long the kernel's default source towards a remote is trusted before it is
# looked up again (a route change, an uplink going dark, shows within this).
DEFAULT_SOURCE_TTL = 2.0
_PKTINFO_ERRNOS = frozenset({errno.EINVAL, errno.EADDRNOTAVAIL, errno.ENETUNREACH})
_SEG = struct.Struct("=H")
_INT = struct.Struct("=i")
_MAPPED = "::ffff:"
_GSO_OFF_ERRNOS = frozenset({errno.EIO, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOPROTOOPT})
# A plain int: `flags & socket.MSG_TRUNC` is IntFlag arithmetic in Python, ~2 us a read.
_MSG_TRUNC = int(socket.MSG_TRUNC)


@record(slots=True)
class UdpCounters:
    rx_calls: int = 0
    rx_datagrams: int = 0
    rx_bytes: int = 0
    rx_errors: int = 0
    tx_calls: int = 0
    tx_datagrams: int = 0
    tx_bytes: int = 0
    tx_errors: int = 0  # unreachable peers, full buffers...: never raised
    last_error: str = ""


def chunks(datagrams: Sequence[bytes]) -> list[list[bytes]]:
    """Group datagrams into runs one UDP_SEGMENT call can carry, in order.

    Each run: all of one size but the last, which may be shorter; at most
    MAX_GSO_SEGMENTS datagrams and MAX_GSO_BYTES bytes.
    """
    n = len(datagrams)
    if 0 < n <= MAX_GSO_SEGMENTS:  # the common case, checked at C speed: one run
        lens = list(map(len, datagrams))
        seg = lens[0]
        if lens[-1] <= seg and lens[:-1].count(seg) == n - 1 and sum(lens) <= MAX_GSO_BYTES:
            return [list(datagrams)]
    out: list[list[bytes]] = []
    run: list[bytes] = []
    seg = total = 0
    for d in datagrams:
        n = len(d)
        if run and n <= seg and len(run) < MAX_GSO_SEGMENTS and total + n <= MAX_GSO_BYTES:
            run.append(d)
            total += n
            if n < seg:  # a shorter one ends the run
                out.append(run)
                run = []
            continue
        if run:
            out.append(run)
        run, seg, total = [d], n, n
    if run:
        out.append(run)
    return out


def _unmap(host: str) -> str:
    if host.startswith(_MAPPED) and "." in host:
        return host[len(_MAPPED) :]
    return host


class UdpEndpoint:
    """A bound UDP socket that sends and receives datagrams in batches."""

    def __init__(self, sock: socket.socket, gro: bool, gso: bool) -> None:
        self._sock = sock
        self._v6 = sock.family == socket.AF_INET6
        self.gro = gro  # the kernel accepted UDP_GRO
        self.gso = gso  # UDP_SEGMENT in use (turned off after the first refusal)
        self.counters = UdpCounters()
        # authenticated remote -> local addresses it reached (latest last), LRU order
        self._reply_from: OrderedDict[Addr, list[str]] = OrderedDict()
        self._round: dict[Addr, str] = {}  # senders of this round, not authenticated
        # The kernel's arrival time (time.time() clock) of the last batch recv_batch
        # returned: SO_TIMESTAMPNS; None when it gave none.
        self.last_arrival: float | None = None
        # remote -> (the kernel's default source towards it or None, when to look again)
        self._default_source: dict[Addr, tuple[str | None, float]] = {}
        # authenticated remote -> (its sockaddr, the pktinfo to send with, valid until):
        # what `_sockaddr` and `_pktinfo` answer, kept while `_default_source` keeps its
        # answer; dropped whenever `_reply_from` changes for that remote (`authenticated`,
        # `_forget`), so a send costs a lookup, not four calls.
        self._names: dict[str | bytes, str] = {}  # see _name
        self._send_to: dict[Addr, tuple[tuple[str, int], list[tuple[int, int, bytes]], float]] = {}
        # Asks the kernel for its route's source (connect() sends nothing). Made
        # here, with the socket: in the same network namespace.
        self._route_probe = socket.socket(sock.family, socket.SOCK_DGRAM)

    @classmethod
    def bind(cls, port: int, host: str = "::") -> UdpEndpoint:
        """Bind one socket for IPv4 and IPv6 (AF_INET if the host has no IPv6).

        Raises OSError (errno kept) if the address cannot be bound.
        """
        sock: socket.socket
        if socket.has_ipv6 and ":" in host:
            try:
                sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            except OSError:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                host = "0.0.0.0" if host == "::" else _unmap(host)
        elif ":" in host and host != "::":
            raise OSError(errno.EAFNOSUPPORT, f"no IPv6 for {host}")
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            host = "0.0.0.0" if host == "::" else host
        try:
            if sock.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            for force, plain in (
                (SO_RCVBUFFORCE, socket.SO_RCVBUF),
                (SO_SNDBUFFORCE, socket.SO_SNDBUF),
            ):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, force, SOCKBUF)
                except OSError:
                    sock.setsockopt(socket.SOL_SOCKET, plain, SOCKBUF)
            for level, opt in (
                (socket.IPPROTO_IP, IP_PKTINFO),
                (socket.IPPROTO_IPV6, IPV6_RECVPKTINFO),
            ):
                if level == socket.IPPROTO_IPV6 and sock.family != socket.AF_INET6:
                    continue
                try:
                    sock.setsockopt(level, opt, 1)
                except OSError:
                    log.info("no packet info (level %d): replies use the default source", level)
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            except OSError:
                log.info("no receive timestamps: datagrams are never judged stale")
            try:
                sock.setsockopt(SOL_UDP, UDP_GRO, 1)
                gro = True
            except OSError:
                gro = False
            gso = True
            try:
                sock.getsockopt(SOL_UDP, UDP_SEGMENT)
            except OSError:
                gso = False
            sock.bind((host, port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return cls(sock, gro, gso)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def fileno(self) -> int:
        return self._sock.fileno()

    def recv_batch(self) -> tuple[list[bytes], Addr] | None:
        """Datagrams from one sender (one GRO buffer split), or None when none wait.

        `last_arrival` is then the kernel's arrival time of the batch (wall clock,
        `time.time()`), None when the kernel gave none."""
        while True:
            try:
                data, anc, flags, addr = self._sock.recvmsg(RECV_SIZE, _CMSG_SPACE)
            except BlockingIOError:
                return None
            except OSError as e:  # e.g. ECONNREFUSED reported from an earlier send
                self.counters.rx_errors += 1
                self.counters.last_error = f"recv: {e}"
                return None
            if not flags & _MSG_TRUNC:
                break
            self.counters.rx_errors += 1
            self.counters.last_error = f"recv: datagram truncated at {len(data)} bytes"
        seg = 0
        local = None
        self.last_arrival = None
        for level, typ, cdata in anc:
            if level == socket.SOL_SOCKET and typ == SCM_TIMESTAMPNS and len(cdata) >= 16:
                sec, nsec = _TIMESPEC.unpack_from(cdata)
                self.last_arrival = sec + nsec * 1e-9
            elif level == SOL_UDP and typ == UDP_GRO and len(cdata) >= 2:
                seg = _INT.unpack_from(cdata)[0] if len(cdata) >= 4 else _SEG.unpack(cdata)[0]
            elif level == socket.IPPROTO_IPV6 and typ == IPV6_PKTINFO and len(cdata) >= 16:
                raw = cdata[:16]
                local = self._names.get(raw)
                if local is None:
                    local = self._name(raw, _unmap(socket.inet_ntop(socket.AF_INET6, raw)))
            elif level == socket.IPPROTO_IP and typ == IP_PKTINFO and len(cdata) >= 12:
                raw = cdata[8:12]
                local = self._names.get(raw)
                if local is None:
                    local = self._name(raw, socket.inet_ntop(socket.AF_INET, raw))
        host = self._names.get(addr[0])
        if host is None:
            host = self._name(addr[0], _unmap(addr[0]))
        src = (host, addr[1])
        if local is not None and (src in self._round or len(self._round) < MAX_ROUND_SOURCES):
            self._round[src] = local
        n = len(data)
        if 0 < seg < n:
            mv = memoryview(data)
            datagrams = [bytes(mv[i : i + seg]) for i in range(0, n, seg)]
        else:
            datagrams = [data]
        c = self.counters
        c.rx_calls += 1
        c.rx_datagrams += len(datagrams)
        c.rx_bytes += n
        return datagrams, src

    def _name(self, key: str | bytes, name: str) -> str:
        """Remember `name` for `key` (a packed local address or a sender's host as the
        socket gave it): `recv_batch` names each address once, not per datagram."""
        if len(self._names) >= MAX_NAMES:
            self._names.clear()  # bounded; refilled as needed
        self._names[key] = name
        return name

    def authenticated(self, src: Addr) -> None:
        """A datagram from `src` of this round authenticated: remember where it came in."""
        local = self._round.get(src)
        if local is None:
            return
        table = self._reply_from
        locals_ = table.get(src)
        if locals_ is None:
            table[src] = [local]
            self._send_to.pop(src, None)
            if len(table) > MAX_REPLY_FROM:
                gone, _ = table.popitem(last=False)
                self._default_source.pop(gone, None)
                self._send_to.pop(gone, None)
        else:
            table.move_to_end(src)
            if locals_[-1] != local:
                if local in locals_:
                    locals_.remove(local)
                locals_.append(local)
                del locals_[:-MAX_LOCALS]
                self._send_to.pop(src, None)

    def end_round(self) -> None:
        """The round's replies are sent: forget the senders that did not authenticate."""
        if self._round:
            self._round.clear()

    def reply_from(self, addr: Addr) -> str | None:
        """The local address `addr` reached us on last (None: not known)."""
        locals_ = self._reply_from.get(addr)
        return locals_[-1] if locals_ is not None else self._round.get(addr)

    def source_for(self, addr: Addr) -> str | None:
        """The local address datagrams to `addr` leave from (None: the kernel chooses):
        where `addr` reached us, unless the kernel's own choice is one of those."""
        locals_ = self._reply_from.get(addr)
        if locals_ is None:
            local = self._round.get(addr)
            if local is None:
                return None
            locals_ = [local]
        if self._kernel_source(addr) in locals_:
            return None
        return locals_[-1]

    def _kernel_source(self, addr: Addr) -> str | None:
        """The source address the kernel's routes pick towards `addr` (cached briefly)."""
        now = time.monotonic()
        cached = self._default_source.get(addr)
        if cached is not None and now < cached[1]:
            return cached[0]
        source: str | None = None
        sa = self._sockaddr(addr)
        if sa is not None:
            try:
                # connect() on UDP sends nothing: it only resolves the route
                self._route_probe.connect(sa)
                source = _unmap(self._route_probe.getsockname()[0])
            except OSError:
                source = None
        if len(self._default_source) >= MAX_REPLY_FROM + MAX_ROUND_SOURCES:
            self._default_source.clear()  # bounded; refilled as needed
        self._default_source[addr] = (source, now + DEFAULT_SOURCE_TTL)
        return source

    def _forget(self, addr: Addr) -> None:
        self._reply_from.pop(addr, None)
        self._round.pop(addr, None)
        self._default_source.pop(addr, None)
        self._send_to.pop(addr, None)

    def _route(self, addr: Addr) -> tuple[tuple[str, int], list[tuple[int, int, bytes]]] | None:
        """`_sockaddr` and `_pktinfo` for `addr`, kept for an authenticated remote (see
        `_send_to`); None: no address family for it."""
        sa = self._sockaddr(addr)
        if sa is None:
            return None
        pktinfo = self._pktinfo(addr)
        if addr in self._reply_from:
            cached = self._default_source.get(addr)
            if cached is not None:  # _pktinfo asked the kernel's route: valid as long
                if len(self._send_to) >= MAX_REPLY_FROM:
                    self._send_to.clear()  # bounded; refilled as needed
                self._send_to[addr] = (sa, pktinfo, cached[1])
        return sa, pktinfo

    def send_batch(self, addr: Addr, datagrams: Sequence[bytes]) -> None:
        """Send datagrams to `addr`, segmentation-offloaded when possible; never raises."""
        if not datagrams:
            return
        hit = self._send_to.get(addr)
        if hit is not None and time.monotonic() < hit[2]:
            sa, pktinfo = hit[0], hit[1]
        else:
            route = self._route(addr)
            if route is None:
                return
            sa, pktinfo = route
        if len(datagrams) == 1:  # a lone datagram (a ping, an ACK): no run to find
            self._sendto(datagrams[0], sa, pktinfo, addr)
            return
        if not self.gso:
            for d in datagrams:
                self._sendto(d, sa, pktinfo, addr)
            return
        for run in chunks(datagrams):
            if len(run) == 1:
                self._sendto(run[0], sa, pktinfo, addr)
                continue
            cmsgs = [(SOL_UDP, UDP_SEGMENT, _SEG.pack(len(run[0]))), *pktinfo]
            try:
                self._sock.sendmsg(run, cmsgs, 0, sa)
            except OSError as e:
                if pktinfo and e.errno in _PKTINFO_ERRNOS:
                    # That local address went away (reconfiguration): let the kernel choose.
                    self._forget(addr)
                    self.send_batch(addr, run)
                    continue
                if e.errno == errno.EMSGSIZE:
                    # segments larger than the path MTU: the kernel may still
                    # fragment them one by one
                    for d in run:
                        self._sendto(d, sa, pktinfo, addr)
                    continue
                if e.errno in _GSO_OFF_ERRNOS and self.gso:
                    self.gso = False
                    log.warning("UDP GSO refused (%s); sending datagrams one by one", e)
                    for d in run:
                        self._sendto(d, sa, pktinfo, addr)
                    continue
                self._count_error(e, len(run))
                continue
            c = self.counters
            c.tx_calls += 1
            c.tx_datagrams += len(run)
            c.tx_bytes += sum(map(len, run))

    def send_one(self, addr: Addr, datagram: bytes) -> None:
        """`send_batch(addr, [datagram])`, shorter for an authenticated peer whose
        route is kept (`_send_to`): the agent's fast path; never raises."""
        hit = self._send_to.get(addr)
        if hit is None or time.monotonic() >= hit[2]:
            self.send_batch(addr, [datagram])
            return
        self._sendto(datagram, hit[0], hit[1], addr)

    def _sockaddr(self, addr: Addr) -> tuple[str, int] | None:
        host, port = addr
        if self._v6:
            if ":" not in host:
                host = _MAPPED + host
        elif ":" in host:
            host = _unmap(host)
            if ":" in host:
                self._count_error(OSError(errno.EAFNOSUPPORT, "no IPv6 socket"), 1)
                return None
        return (host, port)

    def _pktinfo(self, addr: Addr) -> list[tuple[int, int, bytes]]:
        """The ancillary data that makes a datagram to `addr` leave from where it reached us."""
        local = self.source_for(addr)
        if local is None:
            return []
        if self._v6:
            if ":" not in local:
                local = _MAPPED + local
            packed = socket.inet_pton(socket.AF_INET6, local)
            return [(socket.IPPROTO_IPV6, IPV6_PKTINFO, _IN6_PKTINFO.pack(packed, 0))]
        packed = socket.inet_pton(socket.AF_INET, local)
        return [(socket.IPPROTO_IP, IP_PKTINFO, _IN_PKTINFO.pack(0, packed, bytes(4)))]

    def _sendto(
        self,
        d: bytes,
        sa: tuple[str, int],
        pktinfo: list[tuple[int, int, bytes]] | None = None,
        addr: Addr | None = None,
    ) -> None:
        try:
            if pktinfo:
                self._sock.sendmsg([d], pktinfo, 0, sa)
            else:
                self._sock.sendto(d, sa)
        except OSError as e:
            if pktinfo and addr is not None and e.errno in _PKTINFO_ERRNOS:
                self._forget(addr)
                self._sendto(d, sa)
                return
            self._count_error(e, 1)
            return
        c = self.counters
        c.tx_calls += 1
        c.tx_datagrams += 1
        c.tx_bytes += len(d)

    def _count_error(self, e: OSError, n: int) -> None:
        self.counters.tx_errors += n
        self.counters.last_error = f"send: {e}"

    def close(self) -> None:
        self._sock.close()
        self._route_probe.close()

    def __enter__(self) -> UdpEndpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"UdpEndpoint(port={self.port}, gso={self.gso}, gro={self.gro})"
