"""The agent's one executor: read, feed the node, carry out its actions, re-arm one timer.

Single-threaded on `selectors`. Signals arrive through a wakeup fd so that
SIGTERM/SIGINT end the loop cleanly (every device we created is removed)
and SIGHUP reloads the network file.

Failures are contained to the event that met them: an exception while
handling one datagram, frame, timer, control request, reload or round of
outputs drops that event, is counted as ``agent.internal_error_<where>``
(see docs/drops.md) and logged once with its traceback; the loop goes on.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import select
import selectors
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from lanspan import __version__
from lanspan.agent.early import EarlyPorts
from lanspan.agent.kernel_plane import KernelPlane
from lanspan.agent.nft_counters import read_counters
from lanspan.agent.nftables import FilterSpec, KernelFilter, remove_leftover
from lanspan.agent.services import GatewayServices, ServiceError
from lanspan.config import load_network
from lanspan.config.model import HostPort, Network, Port
from lanspan.control.server import ControlError, ControlServer
from lanspan.dataplane.packet import PacketPort
from lanspan.dataplane.ports import FramePort
from lanspan.dataplane.tap import TapPort
from lanspan.dataplane.udp import UdpEndpoint
from lanspan.errors import ConfigError
from lanspan.logs import RateLimitedLog
from lanspan.node.core import (
    PARITY_GROUP,
    InternalError,
    NodeCore,
    TcpSegmentation,
    host_port_mac,
)
from lanspan.node.outputs import Send, Write
from lanspan.records import record

if TYPE_CHECKING:
    from lanspan.control.metrics import MetricsServer
    from lanspan.node.status import MacRow, NodeStatus

log = logging.getLogger("lanspan.agent")

# Rounds of one read (a frame or a GRO batch) from each ready data fd, taken in
# turn (a poll between rounds adds the fds that became ready), before the loop
# looks at its timers and other fds: a busy fd never holds a frame on another
# for more than one of its reads.
READ_ROUNDS = 8
# After a timer round failed, the next one waits this long (no busy loop on a stuck timer).
TIMER_RETRY = 0.05
# The loop's housekeeping (gateway services' children, idle control clients, the drop
# log) runs when one of them is due and otherwise at most this often, never per wake.
HOUSEKEEPING = 0.25
_INF = float("inf")
# The kernel filter is installed this long after the start, in the loop: never
# before the first round of initiations has left (`_first_round`). Its rule is a
# constant (this run's receiver-index prefix), so nothing moves it afterwards.
KERNEL_FILTER_AFTER = 0.0
# A datagram that waited in the UDP socket's receive buffer (the kernel's arrival
# time, SO_TIMESTAMPNS) longer than these is dropped unread: counted as
# agent.stale_handshake (an initiation, response or cookie reply: no X25519 spent on
# it) or agent.stale_datagram (transport data). The 16 MiB buffer turns an
# overloaded machine's backlog into delay instead of loss: 100 agents on 2 cores
# restarted at once (issue 10) held up to 16 MB each, ~60 s of work, and answered
# initiations their initiators had given up long before (they remember the last 3,
# spaced ~0.25-10 s), so no session came up while the backlog lasted. Dropped at
# the cost of a recvmsg, the backlog is cut and what is answered is fresh; the peers
# retry what was lost. Data goes first (the bulk of a backlog: a guest's floods and
# probes), so the queue stays within STALE_DATA_AFTER and a handshake behind it is
# still answered. A datagram waits milliseconds on a machine that keeps up: nothing
# is dropped then.
STALE_DATA_AFTER = 1.0
STALE_HANDSHAKE_AFTER = 2.0
# The UDP socket gets one read per round as every data fd does, and while its last
# batch had waited UDP_BEHIND or more (a backlog: the machine is overloaded) up to
# UDP_CATCH_UP_READS more. A frame from a local port costs a send to every peer when
# it floods (99 at 100 nodes) and a datagram one handling: taken one for one, a node
# whose guest kept flooding (the lab's cold-start probers) read its socket at the
# port's pace, fell behind and dropped its peers' handshakes as stale while the
# nodes without guests came up (issue 10). Without a backlog nothing changes: a lone
# frame on a port never waits behind more than one read of the socket.
UDP_BEHIND = 0.1
UDP_CATCH_UP_READS = 15
_HANDSHAKE_TYPES = (b"\x01", b"\x02", b"\x03")  # initiation, response, cookie reply
# Where a failure can be contained: each is a drop reason agent.internal_error_<where>.
ENTRY_POINTS: tuple[InternalError, ...] = get_args(InternalError)


@record(frozen=True, slots=True)
class AgentOptions:
    network_file: Path
    node: str
    private_key: bytes = field(repr=False)  # key material is never in a repr or a log
    control: Path | None = None
    metrics: str | None = None
    run_dir: Path | None = None  # gateway services' files; None: /run/lanspan/<network>
    state_dir: Path | None = None  # DHCP lease files; None: the file's or /var/lib/lanspan/<net>
    kernel_filter: bool = False  # nftables filter on the UDP port (`lanspan agent` turns it on)
    tcp_segmentation: TcpSegmentation = "parity"  # NodeCore: how superframes cross loss
    parity_group: int = PARITY_GROUP  # NodeCore: fragments per parity ("parity" mode)


class DataReader:
    """A data-path fd on the selector (a port, the UDP socket): `once()` reads and
    handles one frame or GRO batch and says whether there was one. The loop takes
    them in turn (`Agent._read_rounds`), straight from the wake's epoll events."""

    __slots__ = ("once",)

    def __init__(self, once: Callable[[], bool]) -> None:
        self.once = once


class AgentSetupError(Exception):
    """What stops the agent from starting, said in one line (the command prints it as is)."""


def _why(e: BaseException) -> str:
    """An OS or netlink error as `strerror (errno N)`; anything else as its message."""
    code = getattr(e, "errno", None) or getattr(e, "code", None)
    text = getattr(e, "strerror", None) or str(e)
    return f"{text} (errno {code})" if isinstance(code, int) and code > 0 else str(text)


_NO_SUCH_INTERFACE = (
    'no such interface: create it first, or give the port tap = "NAME" for a TAP lanspan creates'
)


def _port_error(port: Port, e: BaseException) -> OSError:
    """An error opening `port`, naming the port, its device and the likely fix."""
    code = getattr(e, "errno", None) or getattr(e, "code", None)
    code = code if isinstance(code, int) and code > 0 else errno.EINVAL
    if isinstance(port, HostPort) or port.create:
        what = f"cannot create TAP device {port.device!r}"
        hints = {
            errno.EBUSY: "a device of that name is in use (another agent?)",
            errno.EINVAL: "a device of that name exists and is not a TAP",
            errno.EEXIST: "a device of that name exists",
            errno.EPERM: "the agent needs CAP_NET_ADMIN",
        }
    else:
        what = f"cannot attach interface {port.device!r}"
        hints = {
            errno.ENODEV: _NO_SUCH_INTERFACE,
            errno.ENXIO: _NO_SUCH_INTERFACE,
            errno.ENETDOWN: "the interface is down",
            errno.EPERM: "the agent needs CAP_NET_RAW",
        }
    hint = hints.get(code)
    return OSError(code, f"port {port.name}: {what}: {_why(e)}" + (f"; {hint}" if hint else ""))


def port_mtu(network: Network, port: Port) -> int:
    if port.kind == "trunk":
        return max(network.segment_by_vlan(v).mtu for v in port.vlans)
    return network.segment(port.segment).mtu


def open_port(network: Network, node: str, port: Port) -> FramePort:
    """Create the TAP or attach the interface a port names (OSError keeps its errno)."""
    try:
        return _open_port(network, node, port)
    except (OSError, ValueError) as e:
        raise _port_error(port, e) from e
    except Exception as e:  # pyroute2's NetlinkError is no OSError; it carries .code
        if not isinstance(getattr(e, "code", None), int):
            raise
        raise _port_error(port, e) from e


def _open_port(network: Network, node: str, port: Port) -> FramePort:
    mtu = port_mtu(network, port)
    if isinstance(port, HostPort):
        tap = TapPort.create(port.name, mtu, host_port_mac(node, port), device=port.device)
        tap.addresses(str(a) for a in port.addresses)
        return tap
    if port.create:
        return TapPort.create(port.name, mtu, device=port.device)
    return PacketPort.attach(port.device, name=port.name)


def _filter_spec(
    network: Network, node: str, port: int, kernel_vxlan: bool, prefix: int
) -> FilterSpec:
    """The kernel filter for the UDP port (transport indexes with this run's `prefix`);
    plain VXLAN too when the kernel plane carries it."""
    spec = FilterSpec(network.name, port, receiver_prefix=prefix)
    site = network.site(network.node(node).site)
    if kernel_vxlan and site.trusted and site.underlay:
        return dataclasses.replace(spec, vxlan_port=site.vxlan_port, underlay=site.underlay)
    return spec


class Agent:
    """The running agent for one node of `network`.

    The constructor takes the control socket (refusing a path another agent
    listens on) and the UDP port; `start` opens the metrics server and the
    ports. Both raise AgentSetupError, after releasing what they took.
    """

    def __init__(
        self, opts: AgentOptions, network: Network, early: EarlyPorts | None = None
    ) -> None:
        self.opts = opts
        # Interfaces attached before the set-up (`lanspan.agent.early`): taken by the
        # ports that name them, the rest closed once the ports are open.
        self._early = early if early is not None else EarlyPorts()
        self.sel = selectors.DefaultSelector()
        # The data fds alone, polled between read rounds without the selector's
        # per-event Python (`_read_rounds`); fd -> its reader's `once`.
        self._data_poll = select.epoll()
        # What a wake waits on: the data fds and the selector's own epoll fd (readable
        # when a control, signal or service fd is). A wake with only data ready runs
        # the readers straight from its events, without the selector's Python per
        # event; the selector is asked (timeout 0) only when one of its fds is ready.
        self._wait_poll = select.epoll()
        self._sel_fd = self.sel.fileno()
        self._wait_poll.register(self._sel_fd, select.EPOLLIN)
        self._readers: dict[int, Callable[[], bool]] = {}
        self.ports: dict[str, FramePort] = {}
        self.running = True
        self._reload_requested = False
        self._started = False
        self.control: ControlServer | None = None
        self.metrics: MetricsServer | None = None
        if opts.control is not None:
            try:
                self.control = ControlServer(opts.control, self, on_error=self._control_failed)
            except ControlError as e:
                self._close_polls()
                raise AgentSetupError(str(e)) from e
        me = network.node(opts.node)
        port = me.listen_port or network.port
        try:
            self.udp = UdpEndpoint.bind(port)
        except OSError as e:
            if self.control is not None:
                self.control.close()
            self._close_polls()
            hint = (
                f"; another program (or agent) has UDP port {port}: stop it or set listen_port"
                if e.errno == errno.EADDRINUSE
                else ""
            )
            raise AgentSetupError(f"cannot open UDP port {port}: {_why(e)}{hint}") from e
        # Only now, with the control socket and the UDP port ours (no other agent of
        # this network and node runs here), may leftovers of an earlier run be removed.
        # Kernel data plane (trusted sites): the core sees the mesh TAPs, not bridged ports.
        try:
            self.kernel = KernelPlane.start(network, opts.node)
        except Exception:
            self.udp.close()
            if self.control is not None:
                self.control.close()
            self._close_polls()
            raise
        real = network
        network = self.kernel.core_view(network)
        self.network = network
        # This run's receiver-index prefix: the kernel filter's constant (nftables.py).
        self.index_prefix = int.from_bytes(os.urandom(2), "little")
        self.node = NodeCore(
            network,
            opts.node,
            opts.private_key,
            random_bytes=os.urandom,
            wall_time=time.time,
            now=time.monotonic(),
            index_prefix=self.index_prefix,
            tcp_segmentation=opts.tcp_segmentation,
            parity_group=opts.parity_group,
        )
        self.node.set_planes(self.kernel.advertised())  # told to the site's other members
        self._real_network = real  # the file as written (the filter needs the real ports)
        self.kernel_filter: KernelFilter | None = None  # installed once the agent is up
        self._filter_at: float | None = None  # when to install it (KERNEL_FILTER_AFTER)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._drop_log = RateLimitedLog(log)
        # The loop's own drops (stale datagrams), beside the node's in status and logs.
        self.drops: Counter[str] = Counter()
        self._udp_waited = 0.0  # how long the last UDP batch read had waited (s)
        self._drops_seen: dict[str, int] = {}
        self._drops_checked = 0.0
        self._timer_hold = 0.0  # no timer round before this (after one failed)
        self._servers: tuple[ControlServer | MetricsServer, ...] = ()  # set in start()
        self._house_at = 0.0  # housekeeping runs once the loop wakes at or after this
        self._house_wake = 0.0  # the loop wakes for housekeeping at this (inf: never)
        self.services = GatewayServices(
            network,
            opts.node,
            opts.run_dir or GatewayServices.default_run_dir(network),
            state_dir=opts.state_dir,
        )  # keepalived, dnsmasq, nftables: started in run(), once the ports exist

    # -- StatusSource for the control socket and metrics ------------------------

    def drop_counts(self) -> Counter[str]:
        """The node's drops and the loop's own (stale datagrams), by reason."""
        drops = self.node.drop_counts()
        drops.update(self.drops)
        return drops

    def status(self) -> NodeStatus:
        # imported when asked: the status types cost an agent's start (issue 10)
        from lanspan.node.status import Counts, UdpStatus

        status = self.kernel.node_status(self.node, time.monotonic())
        return dataclasses.replace(
            status,
            drops=Counts.of(self.drop_counts()) if self.drops else status.drops,
            udp=UdpStatus(self.udp.gso, self.udp.gro),
            gateways=self.services.status() if self.services.active() else None,
            kernel_filter=self.kernel_filter.status() if self.kernel_filter is not None else None,
        )

    def sessions(self) -> Mapping[str, str]:
        return self.node.session_states()

    def macs(self, segment: str | None) -> list[MacRow]:
        from lanspan.node.status import KernelLocation, MacRow

        rows = self.node.mac_rows(segment, time.monotonic())
        for seg, m in self.kernel.macs(segment):
            remote = None if m.remote is None else str(m.remote)
            where = KernelLocation(m.port, remote if m.where == "site" else None)
            rows.append(MacRow(seg, self.network.segment(seg).vlan, m.mac, where, m.static, None))
        return rows

    def reload(self) -> dict[str, object]:
        """Re-read the network file and apply it; a failure keeps the running config."""
        try:
            return self._reload()
        except Exception as e:  # a reload bug must not take the running network down
            self._contain("reload", e)
            return {"ok": False, "changes": [], "error": f"internal error in the agent: {e}"}

    def _reload(self) -> dict[str, object]:
        try:
            new = load_network(self.opts.network_file)
        except ConfigError as e:
            log.warning("reload rejected, running config kept: %s", "; ".join(e.problems))
            return {"ok": False, "changes": [], "error": e.render()}
        except OSError as e:
            return {"ok": False, "changes": [], "error": f"{self.opts.network_file}: {e}"}
        try:
            changes = self._apply(new)
        except (ValueError, OSError) as e:
            log.warning("reload rejected, running config kept: %s", e)
            return {"ok": False, "changes": [], "error": str(e)}
        for c in changes:
            log.info("reload: %s", c)
        self._flush()
        return {"ok": True, "changes": changes, "error": None}

    def _apply(self, new: Network) -> list[str]:
        """Open new ports first (a failure leaves everything as it was), then switch over."""
        real = new
        self.kernel.check_reload(real)
        new = self.kernel.core_view(real)
        self.node.check_reload(new)
        self.services.check_packages(new)  # a missing daemon rejects the reload up front
        old_ports = {p.name: p for p in self.network.node(self.opts.node).ports}
        new_ports = {p.name: p for p in new.node(self.opts.node).ports}
        # A port's MTU comes from its segments: a segment MTU change re-creates the port too.
        changed = [
            n
            for n, p in new_ports.items()
            if n in old_ports
            and (old_ports[n] != p or port_mtu(self.network, old_ports[n]) != port_mtu(new, p))
        ]
        added = [n for n in new_ports if n not in old_ports]
        removed = [n for n in old_ports if n not in new_ports]
        for name in changed:
            self.remove_port(name)  # same device name: the old one must go first
        opened: list[str] = []
        try:
            for name in changed + added:
                self.network = new  # port MTU comes from the new segments
                self.add_port(new_ports[name])
                opened.append(name)
        except OSError:
            for name in opened:
                self.remove_port(name)
            self.network = self.node.network
            for name in changed:
                self.add_port(old_ports[name])
            raise
        changes = self.node.reconfigure(new, time.monotonic())
        self.network = new
        changes += self.services.reload(new)
        for name in removed:
            self.remove_port(name)
        changes += [f"port {n} removed" for n in removed]
        changes += [f"port {n} added" for n in added] + [f"port {n} changed" for n in changed]
        self.kernel.reload(real)
        return changes

    # -- set-up and tear-down --------------------------------------------------

    def open_ports(self) -> None:
        try:
            for port in self.network.node(self.opts.node).ports:
                self.add_port(port, announce=False)
        finally:
            for device in self._early.close():  # a kernel-plane port's, or a stale file's
                log.debug("interface %s attached early, not a userspace port: closed", device)

    def add_port(self, port: Port, announce: bool = True) -> None:
        """Open `port`; OSError names the port and its device (errno kept)."""
        dev = (
            self.kernel.port(port.name)
            or self._early_port(port)
            or open_port(self.network, self.opts.node, port)
        )
        self.ports[port.name] = dev
        self._watch(dev.fileno(), self._port_reader(port.name, dev))
        if announce:
            log.info("port %s (%s) on %s", port.name, port.kind, dev.device)

    def _early_port(self, port: Port) -> FramePort | None:
        """The socket `lanspan.agent.early` attached to the interface `port` names."""
        if isinstance(port, HostPort) or port.create:
            return None
        return self._early.take(port.device, port.name)

    def remove_port(self, name: str, announce: bool = True) -> None:
        dev = self.ports.pop(name)
        self._unwatch(dev.fileno())
        dev.close()
        if announce:
            log.info("port %s removed", name)

    def close(self) -> None:
        """Release everything; quiet when the agent never started (its error says why)."""
        self.services.stop()
        self._early.close()
        for name in list(self.ports):
            self.remove_port(name, announce=self._started)
        self.kernel.close()
        if self.kernel_filter is not None:
            self.kernel_filter.close()
            self.kernel_filter = None
        if self.control is not None:
            self.control.close()
        if self.metrics is not None:
            self.metrics.close()
        self.udp.close()
        self._wake_r.close()
        self._wake_w.close()
        self._close_polls()

    def _close_polls(self) -> None:
        self._wait_poll.close()
        self._data_poll.close()
        self.sel.close()

    # -- the loop --------------------------------------------------------------

    def _watch(self, fd: int, reader: DataReader) -> None:
        self._data_poll.register(fd, select.EPOLLIN)
        self._wait_poll.register(fd, select.EPOLLIN)
        self._readers[fd] = reader.once

    def _unwatch(self, fd: int) -> None:
        self._data_poll.unregister(fd)
        self._wait_poll.unregister(fd)
        del self._readers[fd]

    def _contain(self, where: InternalError, exc: Exception) -> None:
        """A lanspan bug met one event: drop it, count it, log it once, keep serving."""
        reason = f"agent.internal_error_{where}"
        if self.node.count_internal_error(where) == 1:
            log.error(
                "internal error handling a %s (dropped; counted as %s, logged once)",
                where,
                reason,
                exc_info=exc,
                extra={"fields": {"reason": reason}},
            )

    def _control_failed(self, exc: Exception) -> None:
        self._contain("control", exc)

    def _port_reader(self, name: str, dev: FramePort) -> DataReader:
        node, udp = self.node, self.udp

        def once() -> bool:
            data = dev.read()
            if data is None:
                return False
            try:
                one = node.frame_to_peer(name, data, time.monotonic())
            except Exception as e:
                one = None
                self._contain("frame", e)
            if one is not None:  # the fast path: one datagram, nothing else to carry out
                try:
                    udp.send_one(one[0], one[1])
                except Exception as e:
                    self._contain("output", e)
                return True
            self._send_now()
            return True

        return DataReader(once)

    def _udp_turn(self) -> bool:
        """The UDP socket's turn in a read round: one batch, more while behind."""
        if not self._udp_once():
            return False
        for _ in range(UDP_CATCH_UP_READS):
            if self._udp_waited < UDP_BEHIND or not self._udp_once():
                break
        return True

    def _udp_once(self) -> bool:
        """Read and handle one GRO batch (one sender); False when none waited."""
        node, udp = self.node, self.udp
        got = udp.recv_batch()
        if got is None:
            return False
        datagrams, src = got
        arrived = udp.last_arrival
        self._udp_waited = waited = 0.0 if arrived is None else time.time() - arrived
        if waited > STALE_DATA_AFTER:
            if datagrams[0][:1] not in _HANDSHAKE_TYPES:
                self.drops["agent.stale_datagram"] += len(datagrams)
                return True
            if waited > STALE_HANDSHAKE_AFTER:
                self.drops["agent.stale_handshake"] += len(datagrams)
                return True
        now = time.monotonic()
        done: tuple[str, bytes] | bool
        try:
            if len(datagrams) == 1:
                done = node.datagram_to_port(datagrams[0], src, now)
            else:  # a GRO batch: one pass (a failure drops the rest of the batch)
                done = node.datagrams(datagrams, src, now)
        except Exception as e:
            done = False
            self._contain("datagram", e)
        if done is False:
            self._send_now()
            return True
        udp.authenticated(src)
        if done is True:
            self._send_now()
            return True
        # the fast path: one frame for one port, nothing else to carry out
        dev = self.ports.get(done[0])
        if dev is not None:
            try:
                dev.write(done[1])
            except Exception as e:
                self._contain("output", e)
        return True

    def _read_rounds(self, ready: list[Callable[[], bool]]) -> None:
        """Take one read from each ready data fd in turn, for up to READ_ROUNDS rounds.

        Each read's outputs leave before the next read (`_send_now`), so a lone
        frame waits for no batch. After each round one poll (timeout 0) says
        which data fds are readable now: those with more waiting, and those the
        round's own sends made ready (a local guest's reply to what was just
        written to it is read at once, not after the loop's timers). No fd is
        read only to hear EAGAIN. Other fds wait for the loop's next poll.
        """
        poll, readers = self._data_poll.poll, self._readers
        for _ in range(READ_ROUNDS):
            for once in ready:
                try:
                    once()
                except Exception as e:  # each event is contained; this is the read itself
                    self._contain("read", e)
            ready = [readers[fd] for fd, _ in poll(0)]
            if not ready:
                return

    def _on_wake(self, mask: int) -> None:
        try:
            data = self._wake_r.recv(64)
        except BlockingIOError:
            return
        for signum in data:
            if signum in (signal.SIGTERM, signal.SIGINT):
                log.info("signal %s: stopping", signal.Signals(signum).name)
                self.running = False
            elif signum == signal.SIGHUP:
                self._reload_requested = True

    def _send_now(self) -> None:
        """Carry out what one read decided at once: nothing waits for the round's end.

        The core emits one batch per frame or GRO buffer read, so sending it
        right away loses no batching and a lone packet is never held back by
        the next reads, the timers or the services of the round.
        """
        try:
            self._flush()
        except Exception as e:
            self._contain("output", e)

    def _flush(self) -> None:
        ports = self.ports
        for out in self.node.take_outputs():
            if isinstance(out, Send):
                self.udp.send_batch(out.target, out.batch)
            elif isinstance(out, Write):
                dev = ports.get(out.port)
                if dev is not None:
                    dev.write(out.data)
            else:
                log.info(out.kind, extra={"fields": out.fields})
                self.kernel.follow(out.kind, out.fields)  # a site member's path moved: FDB too
                if self.kernel.view_changed:  # a site member's plane: who the core carries to
                    self._kernel_view()

    def _kernel_view(self) -> None:
        """A site member said it carries a kernel segment in userspace (or no longer):
        the core now carries that segment to it over the mesh (or no longer)."""
        self.kernel.view_changed = False
        new = self.kernel.core_view()
        for change in self.node.reconfigure(new, time.monotonic()):
            log.info("kernel plane: %s", change)
        self.network = new

    def start(self) -> None:
        """Open the metrics server and the ports; register everything on the selector.

        Raises AgentSetupError (one line) on what cannot be set up; the caller
        then `close()`s, which removes what was created, quietly.
        """
        self.sel.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        self._watch(self.udp.fileno(), DataReader(self._udp_turn))
        if self.control is not None:
            self.control.register(self.sel)
        self._first_round()  # initiations leave now; the ports, services, filter come after
        if self.opts.metrics is not None:
            from lanspan.control.metrics import MetricsServer  # only with --metrics

            try:
                self.metrics = MetricsServer(self.opts.metrics, self)
            except ValueError as e:
                raise AgentSetupError(f"--metrics: {e}") from e
            except OSError as e:
                raise AgentSetupError(e.strerror or str(e)) from e
            self.metrics.register(self.sel)
        self._servers = tuple(s for s in (self.control, self.metrics) if s is not None)
        try:
            self.open_ports()
        except OSError as e:
            raise AgentSetupError(e.strerror or str(e)) from e
        try:
            self.services.start(self.sel)
        except ServiceError as e:
            raise AgentSetupError(str(e)) from e
        self._started = True
        for level, line in self.kernel.take_startup_log():
            log.log(level, "%s", line)
        if self.opts.kernel_filter:  # after the start can no longer fail: its lines are logged
            remove_leftover(self._kernel_filter_spec())
            self._filter_at = time.monotonic() + KERNEL_FILTER_AFTER
        for name, dev in self.ports.items():
            kind = self.network.node(self.opts.node).port(name).kind
            log.info("port %s (%s) on %s", name, kind, dev.device)
        me = self.network.node(self.opts.node)
        # The process's CPU so far (interpreter, imports, set-up): what a cold start of
        # many agents on few cores waits for (issue 10); `bench/cold_start` reads it.
        log.info(
            "agent %s up (lanspan %s): network %s, udp port %d (gso %s, gro %s), "
            "%d peer(s), cipher %s, start-up cpu %.0f ms",
            me.name,
            __version__,
            self.network.name,
            me.listen_port or self.network.port,
            self.udp.gso,
            self.udp.gro,
            self.node.peer_count(),
            self.network.cipher,
            time.process_time() * 1000,
        )

    def _kernel_filter_spec(self) -> FilterSpec:
        me = self.network.node(self.opts.node)
        return _filter_spec(
            self._real_network,
            self.opts.node,
            me.listen_port or self.network.port,
            self.kernel.segments != {},
            self.index_prefix,
        )

    def _install_kernel_filter(self) -> None:
        """Install the filter (KERNEL_FILTER_AFTER): every index in use has the prefix."""
        self._filter_at = None
        try:
            spec = self._kernel_filter_spec()
            self.kernel_filter = KernelFilter.start(spec, read=read_counters)
        except Exception as e:
            self._contain("timer", e)

    def _first_round(self) -> None:
        """The node's first timer round and its sends, before the slow part of the set-up.

        At a cold start every agent starts at once: the sooner each sends its
        initiations, the sooner the peers that are up answer. Nothing here
        needs the ports (no frames yet), the metrics, the gateway services or
        the kernel filter (its rule takes every index this run allocates).
        """
        now = time.monotonic()
        if self._timer_due() <= now:
            try:
                self.node.handle_timer(now)
            except Exception as e:
                self._timer_hold = now + TIMER_RETRY
                self._contain("timer", e)
        self._send_now()

    def run(self) -> int:
        old_wakeup = signal.set_wakeup_fd(self._wake_w.fileno())
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: None)
        try:
            self.start()
            while self.running:
                self.step()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            started = self._started
            self.close()
            if started:
                log.info("agent stopped; devices removed")
        return 0

    def _log_drops(self, now: float) -> None:
        """Once a second: a line for a new drop reason, then rate-limited summaries."""
        if now - self._drops_checked < 1.0:
            return
        self._drops_checked = now
        for reason, total in self.drop_counts().items():
            new = total - self._drops_seen.get(reason, 0)
            if new > 0:
                self._drops_seen[reason] = total
                self._drop_log.drop(reason, f"{new} in the last second, {total} in all")
        self._drop_log.flush()

    def _timer_due(self) -> float:
        """When the node's timer round is due (held back a little after one failed)."""
        try:
            return max(self.node.next_timer(), self._timer_hold)
        except Exception as e:
            self._timer_hold = time.monotonic() + TIMER_RETRY
            self._contain("timer", e)
            return self._timer_hold

    def _house_due(self) -> float:
        """When housekeeping must run (a control or metrics client to close, the kernel
        filter to install); inf: only when the loop wakes anyway (`HOUSEKEEPING`)."""
        due = _INF
        for server in self._servers:
            at = server.next_timer()
            if at is not None and at < due:
                due = at
        if self._filter_at is not None and self._filter_at < due:
            due = self._filter_at
        return due

    def _housekeeping(self, now: float) -> None:
        """What is not per packet: the kernel filter, the gateway services' children,
        idle control clients, the drop log. Run when due (`_house_due`) and otherwise
        at most every HOUSEKEEPING seconds of a loop that wakes anyway, never per
        wake: work between a packet's send and the loop's sleep delays the process
        that send woke (the peer agent, the guest) when both share a CPU."""
        if self._filter_at is not None and self._filter_at <= now:
            self._install_kernel_filter()
        try:
            self.services.poll(now)  # children that died: restarted (with backoff)
        except Exception as e:
            self._contain("timer", e)
        for server in self._servers:
            try:
                server.handle_timer(now)  # idle clients
            except Exception as e:
                self._contain("control", e)
        try:
            if now - self._drops_checked >= 1.0:
                self._log_drops(now)
        except Exception as e:
            self._contain("output", e)
        self._house_at = min(now + HOUSEKEEPING, self._house_due())
        self._house_wake = self._house_due()

    def step(self, max_wait: float | None = None) -> None:
        """One round: wait for I/O or the timer, handle what is ready, carry out the outputs.

        Per wake only the node's timer deadline is asked; the rest (`_housekeeping`)
        runs when due. Data reads send their outputs at once (`_send_now`), so the
        round's own flush runs only after a timer round or another handler.
        """
        node = self.node
        # once per round: what the reads schedule for "now" runs next round (timeout 0)
        try:  # _timer_due(), inlined: asked every wake
            node_due = node.next_timer()
            if node_due < self._timer_hold:
                node_due = self._timer_hold
        except Exception as e:
            self._timer_hold = node_due = time.monotonic() + TIMER_RETRY
            self._contain("timer", e)
        deadline = node_due
        if self._house_wake < deadline:
            deadline = self._house_wake
        timeout = deadline - time.monotonic()
        if timeout < 0.0:
            timeout = 0.0
        if max_wait is not None and max_wait < timeout:
            timeout = max_wait
        ready: list[Callable[[], bool]] = []
        other = False
        readers = self._readers
        for fd, _ in self._wait_poll.poll(timeout):
            once = readers.get(fd)
            if once is not None:
                ready.append(once)
                continue
            for key, mask in self.sel.select(0):  # fd is the selector's: what is ready there
                other = True
                try:
                    key.data(mask)
                except Exception as e:  # the handlers contain each event; this is the read
                    self._contain("read", e)
        if other:  # a client came or went, a request was answered: its timer moved
            due = self._house_due()
            self._house_wake = due
            if due < self._house_at:
                self._house_at = due
        if ready:
            self._read_rounds(ready)
            self.udp.end_round()
        now = time.monotonic()
        if node_due <= now:
            other = True
            try:
                node.handle_timer(now)
            except Exception as e:
                self._timer_hold = now + TIMER_RETRY
                self._contain("timer", e)
        if self._house_at <= now:
            other = True
            self._housekeeping(now)
        if self._reload_requested:
            other = True
            self._reload_requested = False
            self.reload()
        if other:
            try:
                self._flush()
            except Exception as e:
                self._contain("output", e)
            self.udp.end_round()
