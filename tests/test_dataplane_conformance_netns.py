"""One conformance suite for both data planes: the same behaviour, the same assertions.

Underlay: one bridge, 198.18.0.0/24. Site "s" holds agents a1 (.1), a2 (.2)
and a3 (.3); site "r" holds b1 (.4). `plane` is the data plane of site s:
"kernel" marks s trusted with underlay 198.18.0.0/30 (bridge + plain VXLAN
inside s, the encrypted mesh to r), "userspace" leaves it untrusted (every
frame through the agents). Every agent has a guest on segment "a" (VNI 100,
198.18.100.0/24, MTU 1400); a2 also has guest "x" on segment "b" (VNI 200)
with an address in the SAME subnet, so a leak between segments answers.

Asserted on both planes alike: each agent says which plane it chose;
reachability inside s and across to r; isolation between segments; a broadcast
reaches each member's guest exactly once and no non-member; a MAC that moves
from one node to another is reached at its new place; the segment MTU passes
unfragmented and one byte more does not; a reload loses no ping.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentlib import PORT, Cluster, ContinuousPing

from lanspan.config import encode_key, public_key
from lanspan.lab.netns import Netns, require_root, run, wait_for

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(require_root() is not None, reason=str(require_root())),
]

WAIT = 30.0
SITE = ("a1", "a2", "a3")
AGENTS = (*SITE, "b1")
X_IP = "198.18.100.50"  # guest x on segment b, same subnet as segment a
MTU = 1400


def network_file(c: Cluster, trusted: bool, probe: float = 0.2) -> str:
    out = [
        f'[network]\nname = "conf"\nport = {PORT}\n',
        f"[network.timers]\nprobe_interval = {probe}\nhold_down = 1.0\n",
        f'[[segment]]\nname = "a"\nvlan = 100\nipv4 = "198.18.100.0/24"\nmtu = {MTU}\n',
        f'[[segment]]\nname = "b"\nvlan = 200\nmtu = {MTU}\n',  # same subnet as a: no ipv4
    ]
    if trusted:
        out.append('[[site]]\nname = "s"\ntrusted = true\nunderlay = ["198.18.0.0/30"]\n')
    for name in AGENTS:
        m = c.members[name]
        site = "r" if name == "b1" else "s"
        segs = '["a", "b"]' if name in ("a1", "a2") else '["a"]'
        text = (
            f'[[node]]\nname = "{name}"\nsite = "{site}"\n'
            f'public_key = "{encode_key(public_key(m.key))}"\n'
            f'endpoints = ["{m.endpoints[0]}:{PORT}"]\nsegments = {segs}\n'
            '  [[node.port]]\n  kind = "access"\n  name = "ga"\n  segment = "a"\n'
            '  interface = "ga"\n'
        )
        if name == "a2":
            text += '  [[node.port]]\n  kind = "access"\n  name = "gx"\n  segment = "b"\n'
            text += '  interface = "gx"\n'
        out.append(text)
    return "\n".join(out)


@pytest.fixture(scope="module", params=["userspace", "kernel"])
def lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Cluster, str]]:
    plane: str = request.param
    tmp: Path = tmp_path_factory.mktemp(f"conf-{plane}")
    with Netns() as nn:
        c = Cluster(nn, tmp)
        c.setup_core()
        for name in AGENTS:
            c.add_member(name)  # underlay 198.18.0.1-4 in this order
        gx = nn.add("a2x")
        nn.veth(gx, "eth0", c.members["a2"].ns, "gx")
        nn.address(gx, "eth0", f"{X_IP}/24")
        for ns in [gx, *(c.members[n].guest for n in AGENTS)]:
            run(["sysctl", "-q", "-w", "net.ipv4.icmp_echo_ignore_broadcasts=0"], ns=ns)
            run(["ip", "link", "set", "eth0", "mtu", str(MTU)], ns=ns)  # guests use the segment's
        c.network_file.write_text(network_file(c, plane == "kernel"))
        try:
            for name in AGENTS:
                c.start(name)
            wait_for(lambda: c.mesh_up(list(AGENTS)), WAIT, "sessions between all agents")
            yield c, plane
        finally:
            c.stop_all()


def guest_ns(c: Cluster, name: str) -> str:
    return c.members[name].guest


def test_each_agent_says_which_plane_carries_the_segment(lab: tuple[Cluster, str]) -> None:
    c, plane = lab
    for name in AGENTS:
        want = plane if name in SITE else "userspace"
        assert f"segment a: {want} data plane" in c.log(name).read_text(), name
        segs = {s["name"]: s for s in c.show(name)["segments"]}
        assert segs["a"]["plane"] == want and segs["a"]["plane_reason"], segs
    peers = c.peers("a1")
    to = {p: {x["segment"]: x["plane"] for x in peers[p]["segments"]} for p in peers}
    inside = "kernel_vxlan" if plane == "kernel" else "mesh"
    assert to["a2"]["a"] == inside and to["a3"]["a"] == inside
    assert to["b1"] == {"a": "mesh"}


def test_reachability_inside_the_site_and_across(lab: tuple[Cluster, str]) -> None:
    c, _ = lab
    for src in AGENTS:
        for dst in AGENTS:
            if src != dst:
                wait_for(lambda s=src, d=dst: c.ping(s, d), WAIT, f"{src} → {dst}")  # type: ignore[misc]


def test_segments_are_isolated(lab: tuple[Cluster, str]) -> None:
    c, _ = lab
    wait_for(lambda: c.ping("a1", "a2"), WAIT, "a1 → a2 on a")
    for src in AGENTS:  # x is on b, in a's subnet: any answer is a leak
        r = run(["ping", "-c", "2", "-W", "1", "-i", "0.2", X_IP], ns=guest_ns(c, src), check=False)
        assert r.returncode != 0, f"{src}'s guest on a reached x on b:\n{r.stdout}"


def broadcast_replies(c: Cluster, src: str) -> list[str]:
    """Sources of the replies (repeats included) to one broadcast echo request from `src`."""
    r = run(["ping", "-b", "-c", "100", "-i", "10", "-w", "2", "198.18.100.255"],
            ns=guest_ns(c, src), check=False)  # fmt: skip
    return re.findall(r"bytes from ([0-9.]+): icmp_seq=1 ", r.stdout)


def test_flooding_reaches_each_member_once_and_no_one_else(lab: tuple[Cluster, str]) -> None:
    c, _ = lab
    for src in AGENTS:
        for dst in AGENTS:
            if src != dst:
                wait_for(lambda s=src, d=dst: c.ping(s, d), WAIT, f"{src} → {dst}")  # type: ignore[misc]
    for src in ("a1", "b1"):
        replies = broadcast_replies(c, src)
        want = sorted(c.members[n].guest_ip for n in AGENTS)  # each answers, itself included
        assert sorted(replies) == want, f"{src}: replies {replies}, want each of {want} once"
        assert X_IP not in replies


def test_a_mac_that_moves_is_reached_at_its_new_place(lab: tuple[Cluster, str]) -> None:
    c, _ = lab
    a2, a3 = c.members["a2"], c.members["a3"]
    mac = run(["cat", "/sys/class/net/eth0/address"], ns=a2.guest).stdout.strip()
    wait_for(lambda: c.ping("a1", "a2") and c.ping("b1", "a2"), WAIT, "a2 reached first")
    old3 = run(["cat", "/sys/class/net/eth0/address"], ns=a3.guest).stdout.strip()
    try:
        # The guest "migrates": a2's guest goes dark, a3's guest takes its MAC and address.
        run(["ip", "link", "set", "eth0", "down"], ns=a2.guest)
        run(["ip", "link", "set", "eth0", "down"], ns=a3.guest)
        run(["ip", "link", "set", "eth0", "address", mac], ns=a3.guest)
        run(["ip", "addr", "add", f"{a2.guest_ip}/24", "dev", "eth0"], ns=a3.guest)
        run(["ip", "link", "set", "eth0", "up"], ns=a3.guest)
        # It speaks from its new place (as a migrated VM announces itself).
        wait_for(lambda: c.ping("a3", "a1"), WAIT, "the moved guest speaks")
        wait_for(lambda: c.ping("a3", "b1"), WAIT, "the moved guest speaks across")
        for src in ("a1", "b1"):
            wait_for(lambda s=src: c.ping(s, "a2"), WAIT, f"{src} reaches the moved MAC")  # type: ignore[misc]
    finally:
        run(["ip", "addr", "del", f"{a2.guest_ip}/24", "dev", "eth0"], ns=a3.guest, check=False)
        run(["ip", "link", "set", "eth0", "down"], ns=a3.guest)
        run(["ip", "link", "set", "eth0", "address", old3], ns=a3.guest)
        run(["ip", "link", "set", "eth0", "up"], ns=a3.guest)
        run(["ip", "link", "set", "eth0", "up"], ns=a2.guest)
    # Moved back: reached at a2 again once it speaks.
    wait_for(lambda: c.ping("a2", "a1") and c.ping("a2", "b1"), WAIT, "back at a2")
    wait_for(lambda: c.ping("a1", "a2") and c.ping("b1", "a2"), WAIT, "a2 reached again")


def sized_ping(c: Cluster, src: str, dst: str, size: int, df: bool = True) -> bool:
    argv = ["ping", "-c", "1", "-W", "1", "-s", str(size), c.members[dst].guest_ip]
    return (
        run([*argv, *(["-M", "do"] if df else [])], ns=guest_ns(c, src), check=False).returncode
        == 0
    )


def test_frames_of_the_segment_mtu_pass_whole(lab: tuple[Cluster, str]) -> None:
    """Packets of exactly the MTU pass unfragmented both ways; bigger ones, fragmented, too."""
    c, _ = lab
    for src, dst in (("a1", "a2"), ("a2", "a1"), ("a1", "b1"), ("b1", "a3")):
        wait_for(lambda s=src, d=dst: sized_ping(c, s, d, MTU - 28), WAIT, f"{src} → {dst} at MTU")  # type: ignore[misc]
        assert sized_ping(c, src, dst, 4000, df=False), f"{src} → {dst}: 4000 bytes, fragmented"


def test_a_reload_loses_no_ping(lab: tuple[Cluster, str]) -> None:
    c, plane = lab
    targets = [("a1", "a2"), ("a1", "b1")]
    for src, dst in targets:
        wait_for(lambda s=src, d=dst: c.ping(s, d), WAIT, f"{src} → {dst}")  # type: ignore[misc]
    pings = [
        ContinuousPing(c.ns, guest_ns(c, s), c.members[d].guest_ip, c.tmp / f"reload-{s}-{d}.log")
        for s, d in targets
    ]
    for p in pings:
        p.wait_replies(10)
    c.network_file.write_text(network_file(c, plane == "kernel", probe=0.25))  # a real change
    for name in AGENTS:
        r = c.reload(name)
        assert r.returncode == 0, f"{name}: {r.stdout}{r.stderr}"
    for p in pings:
        p.wait_replies(20)
    for p, (s, d) in zip(pings, targets, strict=True):
        result = p.finish()
        assert result.missing == [] and result.duplicates == 0, (
            f"{s} → {d} across the reload:\n{p.story(result)}"
        )
    for name in AGENTS:  # the reload kept each segment on its plane
        want = plane if name in SITE else "userspace"
        assert {s["name"]: s["plane"] for s in c.show(name)["segments"]}["a"] == want
