"""The daemons a gateway node drives: keepalived, dnsmasq, the nftables policy.

`GatewayServices` is the agent's adapter for them. It renders every file
with `lanspan.gateway` into a run directory, starts keepalived (VRRPv3) in
the foreground as a child, learns master/backup/fault from keepalived's
notify FIFO (registered in the agent's selector), runs one dnsmasq per
segment with DHCP while this node is master of that segment's gateway,
installs the nftables policy (atomically replaced on reload, removed on
exit), and warns when the node's forwarding settings are wrong.

Children are tracked by their `Popen` (PID), never by name; a child that
dies is restarted with a backoff (1 s doubling to 30 s). Gratuitous ARPs and
unsolicited neighbour advertisements need nothing here: keepalived sends
them on the host port's TAP when it becomes master, and the agent floods
them through the mesh like any broadcast (see `lanspan.gateway.keepalived`).

The agent calls: `start(sel)` once its ports are open, `poll(now)` each loop
turn, `reload(network)` after a reload was accepted, `stop()` on exit, and
`status()` for `lanspan show`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import shutil
import signal
import subprocess
import time
from dataclasses import field
from pathlib import Path

from lanspan.config.model import Network
from lanspan.gateway.dnsmasq import render_dnsmasq, segments_served
from lanspan.gateway.keepalived import KeepalivedConfig, render_keepalived
from lanspan.gateway.policy import (
    forwarding_warnings,
    policy_table,
    remove_policy,
    render_policy,
    sysctl_keys,
)
from lanspan.gateway.status import GatewayStatus, Lease, VrrpTracker, gateway_status, parse_leases
from lanspan.records import record

__all__ = ["GatewayServices", "MissingPackage", "ServiceError"]

log = logging.getLogger("lanspan.gateway")

# dnsmasq-base: the binary without the system service (which would serve DNS host-wide);
# keepalived's own service starts only with /etc/keepalived/keepalived.conf (never written)
PACKAGES = {"keepalived": "keepalived", "dnsmasq": "dnsmasq-base", "nft": "nftables"}
RESTART_MIN, RESTART_MAX = 1.0, 30.0
STOP_TIMEOUT = 3.0


class ServiceError(Exception):
    """A gateway service could not be set up (the message says what to do)."""


class MissingPackage(ServiceError):
    def __init__(self, binary: str) -> None:
        package = PACKAGES.get(binary, binary)
        super().__init__(
            f"{binary} is not installed, and this node's network file needs it — "
            f"install the Debian package: apt-get install {package}"
        )
        self.binary = binary
        self.package = package


def _which(binary: str) -> str:
    path = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin:/usr/bin")
    if path is None:
        raise MissingPackage(binary)
    return path


def _write_atomic(path: Path, text: str, mode: int = 0o644) -> bool:
    """Write if different; True when the file changed."""
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return True


@record
class _Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restart_at: float | None = None
    backoff: float = RESTART_MIN

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, start_new_session=True)
        self.restart_at = None
        log.info("%s started (pid %d)", self.name, self.proc.pid)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(sig)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        self.restart_at = None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.info("%s stopped (pid %d)", self.name, proc.pid)


@record
class GatewayServices:
    network: Network
    node: str
    run_dir: Path  # FIFO, configurations, check scripts, pid files
    state_dir: Path | None = None  # lease files (None: the file's or /var/lib/lanspan/<net>)
    tracker: VrrpTracker = field(default_factory=VrrpTracker)
    warnings: list[str] = field(default_factory=list)
    _keepalived: _Child | None = None
    _dnsmasq: dict[str, _Child] = field(default_factory=dict)
    _fifo_r: int | None = None
    _fifo_w: int | None = None
    _sel: selectors.BaseSelector | None = None
    _buf: bytes = b""
    _policy: bool = False

    @classmethod
    def default_run_dir(cls, network: Network) -> Path:
        return Path("/run/lanspan") / network.name

    # ---- what this node needs

    def _holds(self, network: Network) -> bool:
        return any(self.node in g.nodes for g in network.gateways) or any(
            self.node in f.nodes for f in network.floating
        )

    def active(self) -> bool:
        """This node holds a gateway or floating address of the running file."""
        return self._holds(self.network)

    def _is_gateway(self, network: Network) -> bool:
        return self.node in network.gateway_nodes()

    def check_packages(self, network: Network) -> None:
        """Raise `MissingPackage` for the first binary this node's part of the file needs."""
        if self._holds(network):
            _which("keepalived")
        if segments_served(network, self.node):
            _which("dnsmasq")
        if self._is_gateway(network):
            _which("nft")

    # ---- life cycle

    def start(self, sel: selectors.BaseSelector) -> None:
        self.check_packages(self.network)
        self._sel = sel
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._check_forwarding(self.network)
        if self._is_gateway(self.network):
            self._install_policy(self.network)
        if self._holds(self.network):
            self._open_fifo()
            self._start_keepalived(self.network)

    def _start_keepalived(self, network: Network) -> None:
        conf = self._write_keepalived(network)
        self.tracker.reset(conf.instances)
        self._keepalived = _Child(
            "keepalived",
            [
                _which("keepalived"),
                "--dont-fork",
                "--log-console",
                "--vrrp",
                f"--use-file={self.run_dir / 'keepalived.conf'}",
                f"--pid={self.run_dir / 'keepalived.pid'}",
                f"--vrrp_pid={self.run_dir / 'vrrp.pid'}",
            ],
        )
        self._keepalived.start()

    def stop(self) -> None:
        for seg in list(self._dnsmasq):
            self._dnsmasq.pop(seg).stop()
        if self._keepalived is not None:
            self._keepalived.stop()
            self._keepalived = None
            self.tracker.stopped(time.time())
        if self._policy:
            self._remove_policy()
        self._close_fifo()

    def reload(self, network: Network) -> list[str]:
        """Apply an accepted network file; returns what changed (for the reload log)."""
        self.check_packages(network)
        changes: list[str] = []
        old = self.network
        self.network = network
        self._check_forwarding(network)
        if self._is_gateway(network):
            if (
                render_policy(network, self.node) != render_policy(old, self.node)
                or not self._policy
            ):
                try:
                    self._install_policy(network)
                except ServiceError as e:  # the old table stays: nft -f is one transaction
                    log.warning("%s; the previous policy stays", e)
                    changes.append("gateway policy NOT replaced (nft refused it)")
                else:
                    changes.append("gateway policy replaced")
        elif self._policy:
            self._remove_policy()
            changes.append("gateway policy removed")
        if self._holds(network):
            if self._sel is not None and self._fifo_r is None:
                self._open_fifo()
            conf_path = self.run_dir / "keepalived.conf"
            before = conf_path.read_text() if conf_path.exists() else ""
            conf = self._write_keepalived(network)
            self.tracker.reset(conf.instances)
            if self._keepalived is None:
                self._start_keepalived(network)
                changes.append("keepalived started")
            elif conf.text != before:
                self._keepalived.signal(signal.SIGHUP)
                changes.append("keepalived reloaded")
        elif self._keepalived is not None:
            self._keepalived.stop()
            self._keepalived = None
            changes.append("keepalived stopped")
        served = set(segments_served(network, self.node))
        for seg in list(self._dnsmasq):
            child = self._dnsmasq[seg]
            if seg not in served or not self.tracker.is_master(f"gw_{seg}"):
                self._dnsmasq.pop(seg).stop()
                changes.append(f"dnsmasq {seg} stopped")
            elif self._write_dnsmasq(network, seg):
                child.stop()
                child.start()
                changes.append(f"dnsmasq {seg} restarted")
        return changes

    def poll(self, now: float) -> None:
        """Restart children that died (with backoff); call once per loop turn."""
        children = [c for c in (self._keepalived, *self._dnsmasq.values()) if c is not None]
        for child in children:
            if child.proc is not None and child.proc.poll() is not None:
                code = child.proc.returncode
                child.proc = None
                child.restart_at = now + child.backoff
                log.warning(
                    "%s exited (status %s); restarting in %.0f s", child.name, code, child.backoff
                )
                child.backoff = min(RESTART_MAX, child.backoff * 2)
                if child is self._keepalived:
                    self.tracker.stopped(time.time())
                    self._serve_dhcp()
            elif child.proc is None and child.restart_at is not None and now >= child.restart_at:
                child.start()

    def status(self) -> GatewayStatus:
        leases: list[Lease] = []
        for seg in segments_served(self.network, self.node):
            path = Path(render_dnsmasq(self.network, self.node, seg, self._state()).lease_file)
            with contextlib.suppress(OSError):
                leases += parse_leases(path.read_text(), seg)
        return gateway_status(
            self.network,
            self.node,
            self.tracker,
            tuple(leases),
            tuple(s for s, c in self._dnsmasq.items() if c.running),
            tuple(self.warnings),
        )

    # ---- keepalived and its FIFO

    def _write_keepalived(self, network: Network) -> KeepalivedConfig:
        conf = render_keepalived(network, self.node, str(self.run_dir))
        for name, text in conf.scripts.items():
            _write_atomic(self.run_dir / name, text, 0o700)
        _write_atomic(self.run_dir / "keepalived.conf", conf.text, 0o600)
        return conf

    def _open_fifo(self) -> None:
        path = self.run_dir / "vrrp.fifo"
        with contextlib.suppress(FileNotFoundError):
            if not path.is_fifo():
                path.unlink()
        with contextlib.suppress(FileExistsError):
            os.mkfifo(path, 0o600)
        self._fifo_r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        # our own writer keeps the FIFO from reading as end-of-file between keepalived's opens
        self._fifo_w = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        assert self._sel is not None
        self._sel.register(self._fifo_r, selectors.EVENT_READ, self._on_fifo)

    def _close_fifo(self) -> None:
        if self._fifo_r is not None:
            if self._sel is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self._sel.unregister(self._fifo_r)
            os.close(self._fifo_r)
            self._fifo_r = None
        if self._fifo_w is not None:
            os.close(self._fifo_w)
            self._fifo_w = None
        with contextlib.suppress(OSError):
            (self.run_dir / "vrrp.fifo").unlink()

    def _on_fifo(self, mask: int) -> None:
        assert self._fifo_r is not None
        try:
            data = os.read(self._fifo_r, 4096)
        except BlockingIOError:
            return
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        self._buf = self._buf[-1024:]  # bounded: a line longer than this is junk anyway
        now = time.time()
        for raw in lines:
            change = self.tracker.feed(raw.decode("utf-8", "replace"), now)
            if change is not None:
                log.info(
                    "vrrp %s: %s -> %s",
                    change.instance,
                    change.old,
                    change.new,
                    extra={"fields": {"instance": change.instance, "state": change.new}},
                )
        self._serve_dhcp()

    # ---- dnsmasq on the master of each segment's gateway

    def _state(self) -> str | None:
        return str(self.state_dir) if self.state_dir is not None else None

    def _write_dnsmasq(self, network: Network, seg: str) -> bool:
        conf = render_dnsmasq(network, self.node, seg, self._state())
        Path(conf.lease_file).parent.mkdir(parents=True, exist_ok=True)
        return _write_atomic(self.run_dir / f"dnsmasq-{seg}.conf", conf.text)

    def _serve_dhcp(self) -> None:
        for seg in segments_served(self.network, self.node):
            master = self.tracker.is_master(f"gw_{seg}")
            child = self._dnsmasq.get(seg)
            if master and child is None:
                self._write_dnsmasq(self.network, seg)
                child = _Child(
                    f"dnsmasq {seg}",
                    [
                        _which("dnsmasq"),
                        "--keep-in-foreground",
                        "--log-facility=-",
                        f"--conf-file={self.run_dir / f'dnsmasq-{seg}.conf'}",
                        f"--pid-file={self.run_dir / f'dnsmasq-{seg}.pid'}",
                    ],
                )
                self._dnsmasq[seg] = child
                child.start()
            elif not master and child is not None:
                self._dnsmasq.pop(seg).stop()

    # ---- nftables and sysctl

    def _nft(self, script: str) -> None:
        out = subprocess.run(
            [_which("nft"), "-f", "-"], input=script, capture_output=True, text=True, check=False
        )
        if out.returncode != 0:
            raise ServiceError(f"nft refused the gateway policy: {out.stderr.strip()}")

    def _install_policy(self, network: Network) -> None:
        self._nft(render_policy(network, self.node))
        self._policy = True
        log.info("gateway policy installed (table inet %s)", policy_table(network.name))

    def _remove_policy(self) -> None:
        try:
            self._nft(remove_policy(self.network))
        except ServiceError as e:
            log.warning("%s", e)
        self._policy = False

    def _check_forwarding(self, network: Network) -> None:
        values: dict[str, str] = {}
        for key in sysctl_keys(network, self.node):
            try:
                values[key] = (Path("/proc/sys") / key).read_text()
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.EACCES):
                    raise
        self.warnings = forwarding_warnings(network, self.node, values)
        for w in self.warnings:
            log.warning("%s", w)
