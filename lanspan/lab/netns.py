"""Network namespaces, veth links and processes in them — removing only what was made.

Used by the lab, the namespace tests and the benchmarks. A `Netns` set names
everything it creates with one unique prefix, records it, and on `close()`
ends exactly the processes it started (by PID) and deletes exactly the
namespaces it added. Nothing here matches by pattern.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


class NetnsError(RuntimeError):
    """A command run to build or inspect namespaces failed."""


def run(
    argv: Sequence[str],
    *,
    ns: str | None = None,
    check: bool = True,
    timeout: float = 30.0,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` (inside namespace `ns` if given); raise NetnsError naming it on failure."""
    full = ["ip", "netns", "exec", ns, *argv] if ns else list(argv)
    try:
        proc = subprocess.run(
            full, capture_output=True, text=True, timeout=timeout, input=input, check=False
        )
    except FileNotFoundError:
        raise NetnsError(_not_installed(full[0])) from None
    if check and proc.returncode != 0:
        if ns and f'exec of "{argv[0]}" failed' in proc.stderr:
            raise NetnsError(_not_installed(argv[0]))
        raise NetnsError(
            f"{' '.join(full)} exited {proc.returncode}: "
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc


# the programs the lab runs -> the Debian package each comes from
PACKAGES = {"ip": "iproute2", "tc": "iproute2", "nft": "nftables", "ping": "iputils-ping",
            "iperf3": "iperf3", "keepalived": "keepalived", "dnsmasq": "dnsmasq-base",
            "busybox": "busybox"}  # fmt: skip


def _not_installed(program: str) -> str:
    pkg = PACKAGES.get(program, program)
    return f"{program} is not installed (Debian package {pkg}: apt-get install {pkg})"


def existing() -> set[str]:
    """Names of the namespaces that exist now."""
    out = run(["ip", "netns", "list"]).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll `predicate` until true; raise TimeoutError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


def terminate(proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 5.0) -> int:
    """SIGTERM a process we started; SIGKILL it if it is still there after `timeout`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode


class Netns:
    """A set of namespaces and processes created under one unique prefix."""

    def __init__(self, prefix: str | None = None) -> None:
        # Short: interface names derived from it must stay within 15 bytes.
        self.prefix = prefix or f"ls{secrets.token_hex(2)}"
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    def name(self, short: str) -> str:
        return f"{self.prefix}-{short}"

    def add(self, short: str) -> str:
        """Create namespace `<prefix>-<short>` with loopback up; return its name."""
        ns = self.name(short)
        run(["ip", "netns", "add", ns])
        self.namespaces.append(ns)
        run(["ip", "link", "set", "lo", "up"], ns=ns)
        return ns

    def veth(self, ns_a: str, if_a: str, ns_b: str, if_b: str, mtu: int | None = None) -> None:
        """Create a veth pair with one end in each namespace, both up."""
        tmp_a, tmp_b = f"t{secrets.token_hex(5)}", f"t{secrets.token_hex(5)}"
        run(["ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b])
        for tmp, ns, ifname in ((tmp_a, ns_a, if_a), (tmp_b, ns_b, if_b)):
            run(["ip", "link", "set", tmp, "netns", ns])
            run(["ip", "link", "set", tmp, "name", ifname], ns=ns)
            if mtu:
                run(["ip", "link", "set", ifname, "mtu", str(mtu)], ns=ns)
            run(["ip", "link", "set", ifname, "up"], ns=ns)

    def address(self, ns: str, ifname: str, cidr: str) -> None:
        flags = ["nodad"] if ":" in cidr else []
        run(["ip", "addr", "add", cidr, "dev", ifname, *flags], ns=ns)

    def exec(self, ns: str, argv: Sequence[str], **kw: object) -> subprocess.CompletedProcess[str]:
        return run(argv, ns=ns, **kw)  # type: ignore[arg-type]

    def spawn(
        self,
        ns: str,
        argv: Sequence[str],
        log: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `argv` in `ns`, remembered so `close()` ends it by PID."""
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        finally:
            if log:
                out.close()  # type: ignore[union-attr]
        self.processes.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> int:
        """SIGTERM then, after `timeout`, SIGKILL one process we started."""
        return terminate(proc, timeout)

    def close(self) -> None:
        """End our processes, then delete our namespaces (their devices go with them)."""
        for proc in reversed(self.processes):
            self.stop(proc)
        self.processes.clear()
        for ns in reversed(self.namespaces):
            # A process we did not start may hold the namespace; deleting the
            # name is still right: the kernel frees it when that process exits.
            run(["ip", "netns", "delete", ns], check=False)
        self.namespaces.clear()

    def __enter__(self) -> Netns:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextmanager
def entered(ns: str) -> Iterator[None]:
    """Run the calling thread inside namespace `ns` for the `with` block.

    Sockets and devices opened inside keep living in `ns` after the block;
    the thread returns to the namespace it came from.
    """
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        join(ns)
        try:
            yield
        finally:
            _setns(back)
    finally:
        os.close(back)


def join(ns: str) -> None:
    """Move the calling thread into namespace `ns` (the whole process when it has one
    thread, as a freshly forked child does); `entered` comes back, this does not."""
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
    finally:
        os.close(target)


def require_root() -> str | None:
    """None when namespaces can be made here; otherwise why not."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, TAP devices); run it with sudo"
    return None


def veth_between(
    ns_a: str,
    if_a: str,
    ns_b: str,
    if_b: str,
    *,
    mtu: int | None = None,
    mac_a: str | None = None,
    mac_b: str | None = None,
) -> None:
    """Create a veth pair directly inside two namespaces (never visible in the caller's), up."""
    opt_a = (["address", mac_a] if mac_a else []) + (["mtu", str(mtu)] if mtu else [])
    opt_b = (["address", mac_b] if mac_b else []) + (["mtu", str(mtu)] if mtu else [])
    run(
        ["ip", "link", "add", if_a, "netns", ns_a, *opt_a, "type", "veth",
         "peer", "name", if_b, "netns", ns_b, *opt_b]
    )  # fmt: skip
    run(["ip", "link", "set", if_a, "up"], ns=ns_a)
    run(["ip", "link", "set", if_b, "up"], ns=ns_b)


def pids_in(ns: str) -> list[int]:
    """PIDs of the processes whose network namespace is `ns` (empty if it is gone)."""
    proc = run(["ip", "netns", "pids", ns], check=False)
    if proc.returncode != 0:
        return []
    return [int(x) for x in proc.stdout.split() if x.isdigit()]
