"""The agent's one executor: read, feed the node, carry out its actions, re-arm one timer.

Single-threaded on `selectors`. Signals arrive through a wakeup fd so that
SIGTERM/SIGINT end the loop cleanly (every device we created is removed)
and SIGHUP reloads the network file.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lanspan.agent.kernel_plane import KernelPlane
from lanspan.config import load_network
from lanspan.config.model import HostPort, Network, Port
from lanspan.control.metrics import MetricsServer
from lanspan.control.server import ControlServer
from lanspan.dataplane.packet import PacketPort
from lanspan.dataplane.ports import FramePort
from lanspan.dataplane.tap import TapPort
from lanspan.dataplane.udp import UdpEndpoint
from lanspan.errors import ConfigError
from lanspan.logs import RateLimitedLog
from lanspan.node.core import NodeCore, host_port_mac

log = logging.getLogger("lanspan.agent")

# Frames or GRO batches taken from one ready fd before looking at the others.
READ_BUDGET = 64


@dataclass(frozen=True, slots=True)
class AgentOptions:
    network_file: Path
    node: str
    private_key: bytes
    control: Path | None = None
    metrics: str | None = None


def port_mtu(network: Network, port: Port) -> int:
    if port.kind == "trunk":
        return max(network.segment_by_vlan(v).mtu for v in port.vlans)
    return network.segment(port.segment).mtu


def open_port(network: Network, node: str, port: Port) -> FramePort:
    """Create the TAP or attach the interface a port names (OSError keeps its errno)."""
    mtu = port_mtu(network, port)
    if isinstance(port, HostPort):
        tap = TapPort.create(port.name, mtu, host_port_mac(node, port), device=port.device)
        tap.addresses(str(a) for a in port.addresses)
        return tap
    if port.create:
        return TapPort.create(port.name, mtu, device=port.device)
    return PacketPort.attach(port.device, name=port.name)


class Agent:
    def __init__(self, opts: AgentOptions, network: Network) -> None:
        # Kernel data plane (trusted sites): the core sees the mesh TAPs, not bridged ports.
        self.kernel = KernelPlane.start(network, opts.node)
        network = self.kernel.core_view(network)
        self.opts = opts
        self.network = network
        self.sel = selectors.DefaultSelector()
        self.ports: dict[str, FramePort] = {}
        self.running = True
        self._reload_requested = False
        now = time.monotonic()
        self.node = NodeCore(
            network,
            opts.node,
            opts.private_key,
            random_bytes=os.urandom,
            wall_time=time.time,
            now=now,
        )
        me = network.node(opts.node)
        self.udp = UdpEndpoint.bind(me.listen_port or network.port)
        self.control: ControlServer | None = None
        self.metrics: MetricsServer | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._drop_log = RateLimitedLog(log)
        self._drops_seen: dict[str, int] = {}
        self._drops_checked = 0.0

    # -- StatusSource for the control socket and metrics ------------------------

    def status(self) -> dict[str, object]:
        doc = self.node.status(time.monotonic())
        doc["udp"] = {"gso": self.udp.gso, "gro": self.udp.gro}
        return doc

    def macs(self, segment: str | None) -> list[dict[str, object]]:
        return [
            {
                "segment": e.segment,
                "vlan": e.vlan,
                "mac": e.mac,
                "where": e.where,
                "static": e.static,
                "age": round(e.age, 1),
            }
            for e in self.node.switch.mac_table(segment, time.monotonic())
        ] + [
            {
                "segment": seg,
                "vlan": self.network.segment(seg).vlan,
                "mac": m.mac,
                "where": f"kernel:{m.port}" if m.remote is None else f"kernel:vxlan {m.remote}",
                "static": m.static,
                "age": None,
            }
            for seg, m in self.kernel.macs(segment)
        ]

    def reload(self) -> dict[str, object]:
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
        for name in removed:
            self.remove_port(name)
        changes += [f"port {n} removed" for n in removed]
        changes += [f"port {n} added" for n in added] + [f"port {n} changed" for n in changed]
        self.kernel.reload(real)
        return changes

    # -- set-up and tear-down --------------------------------------------------

    def open_ports(self) -> None:
        for port in self.network.node(self.opts.node).ports:
            self.add_port(port)

    def add_port(self, port: Port) -> None:
        dev = self.kernel.port(port.name) or open_port(self.network, self.opts.node, port)
        self.ports[port.name] = dev
        self.sel.register(dev.fileno(), selectors.EVENT_READ, self._port_reader(port.name, dev))
        log.info("port %s (%s) on %s", port.name, port.kind, dev.device)

    def remove_port(self, name: str) -> None:
        dev = self.ports.pop(name)
        self.sel.unregister(dev.fileno())
        dev.close()
        log.info("port %s removed", name)

    def close(self) -> None:
        for name in list(self.ports):
            self.remove_port(name)
        self.kernel.close()
        if self.control is not None:
            self.control.close()
        if self.metrics is not None:
            self.metrics.close()
        self.udp.close()
        self._wake_r.close()
        self._wake_w.close()
        self.sel.close()

    # -- the loop --------------------------------------------------------------

    def _contain(self, where: str, exc: Exception) -> None:
        """A lanspan bug met one frame or datagram: drop it, count it, keep serving."""
        self.node.drops[f"internal_error_{where}"] += 1
        if self.node.drops[f"internal_error_{where}"] == 1:
            log.exception("internal error handling a %s (dropped; logged once)", where)

    def _port_reader(self, name: str, dev: FramePort) -> Callable[[int], None]:
        node = self.node

        def on_readable(mask: int) -> None:
            now = time.monotonic()
            for _ in range(READ_BUDGET):
                data = dev.read()
                if data is None:
                    return
                try:
                    node.frame_from_port(name, data, now)
                except Exception as e:
                    self._contain("frame", e)

        return on_readable

    def _on_udp(self, mask: int) -> None:
        node, udp = self.node, self.udp
        now = time.monotonic()
        for _ in range(READ_BUDGET):
            got = udp.recv_batch()
            if got is None:
                return
            datagrams, src = got
            for d in datagrams:
                try:
                    node.datagram(d, src, now)
                except Exception as e:
                    self._contain("datagram", e)

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

    def _flush(self) -> None:
        node = self.node
        node.flush(time.monotonic())
        for addr, batch in node.take_sends():
            self.udp.send_batch(addr, batch)
        ports = self.ports
        for name, data in node.take_writes():
            dev = ports.get(name)
            if dev is not None:
                dev.write(data)
        for ev in node.take_log():
            log.info(ev.kind, extra={"fields": ev.fields})

    def run(self) -> int:
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        old_wakeup = signal.set_wakeup_fd(self._wake_w.fileno())
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: None)
        try:
            self.sel.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
            self.sel.register(self.udp.fileno(), selectors.EVENT_READ, self._on_udp)
            if self.opts.control is not None:
                self.control = ControlServer(self.opts.control, self)
                self.control.register(self.sel)
            if self.opts.metrics is not None:
                self.metrics = MetricsServer(self.opts.metrics, self)
                self.metrics.register(self.sel)
            self.open_ports()
            me = self.network.node(self.opts.node)
            log.info(
                "agent %s up: network %s, udp port %d (gso %s, gro %s), %d peer(s), cipher %s",
                me.name,
                self.network.name,
                me.listen_port or self.network.port,
                self.udp.gso,
                self.udp.gro,
                len(self.node.peers),
                self.network.cipher,
            )
            self._loop()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            self.close()
            log.info("agent stopped; devices removed")
        return 0

    def _log_drops(self, now: float) -> None:
        """Once a second: a line for a new drop reason, then rate-limited summaries."""
        if now - self._drops_checked < 1.0:
            return
        self._drops_checked = now
        for reason, total in self.node.drop_counts().items():
            new = total - self._drops_seen.get(reason, 0)
            if new > 0:
                self._drops_seen[reason] = total
                self._drop_log.drop(reason, f"{new} in the last second, {total} in all")
        self._drop_log.flush()

    def _loop(self) -> None:
        node, sel = self.node, self.sel
        while self.running:
            timeout = max(0.0, node.next_timer() - time.monotonic())
            for key, mask in sel.select(timeout):
                key.data(mask)
            now = time.monotonic()
            if node.next_timer() <= now:
                node.handle_timer(now)
            if self._reload_requested:
                self._reload_requested = False
                try:
                    self.reload()
                except Exception:  # a reload bug must not take the running network down
                    log.exception("reload failed; running config kept")
            self._flush()
            self._log_drops(now)
