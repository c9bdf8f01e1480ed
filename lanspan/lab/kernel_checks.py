"""`lab test` for trusted sites: inside the site through the kernel, to other sites encrypted.

Per trusted site and segment with guests on two of its nodes (check kind
``kernel-path``): pings between those guests must raise the receiving node's
VXLAN device counters (``lsx<vni>``) while the sending agent's mesh frame
counters towards that peer stay still. Per trusted site with a guest in
another site on the same segment (check kind ``site-encrypted``): pings out
of the site must send no UDP to the site's VXLAN port past the site router
(an nftables counter on the router's uplink) and must send lanspan transport
messages (type 4, the first byte of the datagram) to the mesh port.

The nftables table this adds to the site router (``inet lanspan_lab_kernel``)
is removed when the check ends.
"""

from __future__ import annotations

import json
from typing import Any

from lanspan.dataplane.kernel import DEFAULT_VXLAN_PORT, SegmentDevices
from lanspan.lab import netns
from lanspan.lab.runner import LabRun
from lanspan.lab.topology import GuestPlan, Plan

Check = dict[str, Any]

PINGS = 5
TABLE = "lanspan_lab_kernel"
TRANSPORT = 4  # the message type of lanspan's (WireGuard's) transport data


def _v4(g: GuestPlan, segment: str) -> str | None:
    i = g.on(segment)
    if i is None:
        return None
    return next((a.split("/")[0] for a in i.addresses if ":" not in a), None)


def _pings(src: GuestPlan, addr: str) -> bool:
    argv = ["ping", "-n", "-q", "-c", str(PINGS), "-i", "0.2", "-W", "1", addr]
    return netns.run(argv, ns=src.ns, check=False, timeout=30).returncode == 0


def vxlan_counters(ns: str, device: str) -> tuple[int, int] | None:
    """(rx, tx) packets of a kernel device in `ns`; None when it does not exist."""
    r = netns.run(["ip", "-s", "-j", "link", "show", "dev", device], ns=ns, check=False)
    if r.returncode != 0:
        return None
    st = json.loads(r.stdout)[0]["stats64"]
    return int(st["rx"]["packets"]), int(st["tx"]["packets"])


def _mesh_frames(run: LabRun, node: str, peer: str) -> int | None:
    shown = run.show(node)
    if shown is None:
        return None
    p = next((p for p in shown.get("peers", []) if p.get("name") == peer), None)
    return None if p is None else int(p.get("tx_frames", 0)) + int(p.get("rx_frames", 0))


def _plane(run: LabRun, node: str, segment: str) -> str | None:
    shown = run.show(node) or {}
    s = next((s for s in shown.get("segments", []) if s.get("name") == segment), None)
    return None if s is None else s.get("plane")


def _guests_by_site(plan: Plan, segment: str) -> dict[str, list[GuestPlan]]:
    site = {n.name: n.site for n in plan.nodes}
    out: dict[str, list[GuestPlan]] = {}
    for g in plan.guests:
        if g.kind == "access" and _v4(g, segment) is not None:
            out.setdefault(site[g.node], []).append(g)
    return out


def kernel_path(run: LabRun, plan: Plan, site: str, segment: str, vni: int) -> Check | None:
    guests = _guests_by_site(plan, segment).get(site, [])
    pair = next(((a, b) for a in guests for b in guests if a.node != b.node), None)
    if pair is None:
        return None
    a, b = pair
    dev = SegmentDevices.for_vni(vni).vxlan
    b_ns = plan.node(b.node).ns
    before = vxlan_counters(b_ns, dev)
    mesh_before = _mesh_frames(run, a.node, b.node)
    addr = _v4(b, segment)
    assert addr is not None
    ok = _pings(a, addr)
    after = vxlan_counters(b_ns, dev)
    mesh_after = _mesh_frames(run, a.node, b.node)
    planes = (_plane(run, a.node, segment), _plane(run, b.node, segment))
    grew = None if before is None or after is None else after[0] - before[0]
    mesh = None if mesh_before is None or mesh_after is None else mesh_after - mesh_before
    passed = ok and grew is not None and grew >= PINGS and mesh == 0 and planes == ("kernel",) * 2
    return {
        "name": f"{segment}: {a.name} -> {b.name} through the kernel (site {site})",
        "kind": "kernel-path",
        "passed": passed,
        "vxlan_rx_packets": grew,
        "mesh_frames": mesh,
        "detail": (
            f"pings {'ok' if ok else 'FAILED'}; {dev} on {b.node} received {grew} packet(s); "
            f"{a.node}'s mesh frames with {b.node}: {mesh} more; planes {planes[0]}/{planes[1]}"
        ),
    }


def _uplink_counters(ns: str) -> tuple[int, int]:
    """(UDP to the VXLAN port, lanspan transport messages) that left the site by the router."""
    r = netns.run(["nft", "-j", "list", "table", "inet", TABLE], ns=ns)
    counts = []
    for item in json.loads(r.stdout)["nftables"]:
        rule = item.get("rule")
        if rule is None:
            continue
        counter = next((e["counter"] for e in rule["expr"] if "counter" in e), None)
        if counter is not None:
            counts.append(int(counter["packets"]))
    return counts[0], counts[1]


def site_encrypted(run: LabRun, plan: Plan, site: str, segment: str) -> Check | None:
    by_site = _guests_by_site(plan, segment)
    inside = by_site.get(site, [])
    outside = [g for s, gs in by_site.items() if s != site for g in gs]
    if not inside or not outside:
        return None
    a, b = inside[0], outside[0]
    router = plan.site(site).ns
    port = run.lab.lab.port
    out = 'oifname { "up0", "up1" }'  # the router's uplinks (the second: uplinks = 2)
    rules = (
        f"add table inet {TABLE}\n"
        f"add chain inet {TABLE} out {{ type filter hook forward priority 0; policy accept; }}\n"
        f"add rule inet {TABLE} out {out} udp dport {DEFAULT_VXLAN_PORT} counter\n"
        f"add rule inet {TABLE} out {out} udp dport {port} @th,64,8 {TRANSPORT} counter\n"
    )
    netns.run(["nft", "-f", "-"], ns=router, input=rules)
    try:
        before = _uplink_counters(router)
        addr = _v4(b, segment)
        assert addr is not None
        ok = _pings(a, addr)
        after = _uplink_counters(router)
    finally:
        netns.run(["nft", "delete", "table", "inet", TABLE], ns=router, check=False)
    vxlan, transport = after[0] - before[0], after[1] - before[1]
    return {
        "name": f"{segment}: {a.name} -> {b.name} leaves site {site} encrypted",
        "kind": "site-encrypted",
        "passed": ok and vxlan == 0 and transport >= PINGS,
        "vxlan_packets_out": vxlan,
        "transport_messages_out": transport,
        "detail": (
            f"pings {'ok' if ok else 'FAILED'}; out of {site}'s router: {vxlan} UDP "
            f"{DEFAULT_VXLAN_PORT} packet(s), {transport} lanspan transport message(s) to "
            f"port {port}"
        ),
    }


def trusted_sites(run: LabRun, plan: Plan) -> list[Check]:
    """Both checks for every trusted site and segment where guests allow them."""
    out: list[Check] = []
    for site in run.lab.site:
        if not site.trusted:
            continue
        for seg in run.lab.segment:
            for c in (
                kernel_path(run, plan, site.name, seg.name, seg.vni or seg.vlan),
                site_encrypted(run, plan, site.name, seg.name),
            ):
                if c is not None:
                    out.append(c)
    return out


__all__ = ["kernel_path", "site_encrypted", "trusted_sites", "vxlan_counters"]
