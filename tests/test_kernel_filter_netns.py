"""The kernel filter on real agents: junk from a third namespace dies in the kernel
(the table's counters grow, the agent's own drop counters do not, or only by the
allowed handshake rate), real traffic passes, also across new sessions; the table
goes with a clean exit and there is exactly one after kill -9 and a restart."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest
from agentlib import PORT, Cluster, make_cluster

from lanspan.agent.nftables import HANDSHAKE_BURST, HANDSHAKE_RATE, table_name
from lanspan.lab.netns import Netns, run, wait_for

pytestmark = pytest.mark.netns

TABLE = table_name("optest", PORT)
JUNK = """
import os, socket, struct, sys
kind, n, port, other = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4], 16)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
bad = [bytes([1, 0, 0, 0]) + bytes(96), bytes([9, 0, 0, 0]) + bytes(60), bytes(7),
       bytes([4, 1, 0, 0]) + bytes(60), bytes([2, 0, 0, 0]) + bytes(100)]
for i in range(n):
    if kind == "shape":  # a wrong length for its type, or no type at all
        d = bad[i % len(bad)]
    elif kind == "initiation":
        d = bytes([1, 0, 0, 0]) + os.urandom(144)
    else:  # transport naming a receiver index nobody holds (another run's prefix)
        d = struct.pack("<IIQ", 4, other << 16 | i, i) + os.urandom(48)
    s.sendto(d, ("198.18.0.1", port))
"""


def tables(c: Cluster, name: str) -> list[str]:
    out = run(["nft", "list", "tables"], ns=c.members[name].ns).stdout
    return [line for line in out.splitlines() if "lanspan_" in line]


def kernel_drops(doc: dict[str, Any]) -> dict[str, int]:
    kf = doc.get("kernel_filter")
    assert isinstance(kf, dict), f"no kernel filter in the status: {doc.keys()}"
    return dict(kf["drops"])


def test_kernel_filter_drops_junk_and_passes_traffic(tmp_path: Path) -> None:
    if sys.platform != "linux":
        pytest.skip("linux only")
    with Netns() as ns:
        c = make_cluster(ns, tmp_path, ["n1", "n2"])
        x = ns.add("x")
        ns.veth(x, "up0", c.core, "px")
        run(["ip", "link", "set", "px", "master", "br0"], ns=c.core)
        ns.address(x, "up0", "198.18.0.99/24")
        c.start("n1")
        c.start("n2")
        wait_for(lambda: c.mesh_up(), 30, "sessions up")
        assert c.ping("n1", "n2", count=2)
        # installed KERNEL_FILTER_AFTER the start (the cold start's handshakes go first)
        wait_for(lambda: tables(c, "n1") == [f"table inet {TABLE}"], 15, "n1's filter")
        wait_for(lambda: "kernel_filter" in c.show("n1"), 15, "n1's filter in its status")
        doc = c.show("n1")
        kf = doc["kernel_filter"]
        assert kf["table"] == f"inet {TABLE}"
        prefix = int(kf["receiver_prefix"], 16)
        other = f"{prefix ^ 0x5A5A:04x}"
        before_k, before_py = kernel_drops(doc), dict(doc["drops"])

        started = time.monotonic()
        for kind, n in (("shape", 500), ("initiation", 2000), ("transport", 500)):
            run([sys.executable, "-c", JUNK, kind, str(n), str(PORT), other], ns=x)

        def grown() -> dict[str, int]:
            now = kernel_drops(c.show("n1"))
            return {k: now[k] - before_k.get(k, 0) for k in now}

        wait_for(
            lambda: (
                (g := grown())["kernel.bad_shape"] >= 500
                and g["kernel.unknown_receiver"] >= 500
                and g["kernel.handshake_rate"] >= 2000 - HANDSHAKE_BURST - 200
            ),
            10,
            "the kernel counted the junk",
        )
        elapsed = time.monotonic() - started
        after = c.show("n1")
        py = {k: v - before_py.get(k, 0) for k, v in after["drops"].items()}
        py = {k: v for k, v in py.items() if v}
        for reason in ("wire.short_datagram", "wire.bad_type", "wire.bad_reserved",
                       "wire.bad_length", "session.unknown_receiver"):  # fmt: skip
            assert reason not in py, py
        allowed = HANDSHAKE_BURST + HANDSHAKE_RATE * (elapsed + 2)
        assert sum(py.values()) <= allowed, (py, allowed)
        assert c.ping("n1", "n2", count=2)

        # new sessions (new receiver indexes on both sides): traffic still passes, and
        # every index n1 holds carries the prefix its rule checks
        c.stop("n2")
        c.start("n2")
        wait_for(lambda: c.mesh_up(), 30, "sessions up again")
        wait_for(lambda: c.ping("n1", "n2"), 15, "ping after new sessions")
        assert c.show("n1")["kernel_filter"]["receiver_prefix"] == f"0x{prefix:04x}"

        # kill -9 leaves the table; the next start replaces it: exactly one
        proc = c.agents.pop("n1")
        proc.kill()
        proc.wait(5)
        assert tables(c, "n1") == [f"table inet {TABLE}"]
        c.sock("n1").unlink(missing_ok=True)
        c.start("n1")
        wait_for(lambda: c.mesh_up(), 30, "sessions up after kill -9")
        assert "left by an earlier run" in c.log("n1").read_text()  # removed at the start
        assert tables(c, "n1") in ([], [f"table inet {TABLE}"])
        wait_for(lambda: tables(c, "n1") == [f"table inet {TABLE}"], 15, "n1's new filter")
        wait_for(lambda: c.ping("n1", "n2"), 15, "ping after kill -9")

        c.stop_all()
        assert tables(c, "n1") == [] and tables(c, "n2") == []


def test_no_kernel_filter_flag_installs_nothing(tmp_path: Path) -> None:
    with Netns() as ns:
        c = make_cluster(ns, tmp_path, ["n1"])
        c.start("n1", "--no-kernel-filter")
        wait_for(lambda: "peers" in c.show("n1"), 10, "agent answers")
        assert "kernel_filter" not in c.show("n1")
        assert tables(c, "n1") == []
        c.stop_all()
