"""Which data plane carries each segment on this node, and the kernel segments it owns.

At start the agent removes what an earlier run of (network, node) left in the
kernel (`cleanup_leftovers`), then decides per segment it carries:

- **kernel** when its site is trusted, it has a VXLAN address there, another
  member of the site (agent or plain VTEP) carries the segment, its local
  ports are access ports or trunks the kernel can take (an existing interface,
  the segment's VLAN tagged on it, and 802.1Q sub-interfaces in the kernel:
  `KernelCapabilities.missing_for_trunks`), and the kernel offers what the
  kernel plane needs (`KernelCapabilities.missing_for_access`);
- **userspace** otherwise, with the first reason that ruled the kernel out.

One log line per segment says which and why. A kernel segment that fails to
build is removed whole (`KernelSegment.create` is all or nothing) and the
segment falls back to userspace, with its own log line.

The node core never sees the kernel's ports: `core_view` hands it a network
in which, per kernel segment, the node's access ports of that segment are
replaced by the one mesh TAP (``lsm<vni>``, the way to other sites), and the
site members reached over plain VXLAN no longer carry that segment (so the
core neither floods it to them nor accepts it from them: nothing twice).
Static MACs pinned to such a site member become per-MAC FDB entries.

Plain VXLAN is sent only to addresses inside the site's declared underlay:
`peer_address` refuses anything else, whatever the path state says.

**Site members agree.** Each agent of a trusted site tells the other members
its plane per segment (`advertised`, carried by the node core's PLANES control
message). A member that carries a segment in userspace (its kernel lacks
something, its build failed, a trunk port) cannot take plain VXLAN for it: on
hearing so (`peer_planes`), every kernel member removes it from that segment's
flood list and FDB and hands it back to the node core, which then reaches it
over the encrypted mesh through the mesh TAP (`core_view` with ``mesh``). The
mesh TAP is an isolated bridge port, so what that member sends reaches only
local ports; the other kernel members get it from the member itself. A member
that says kernel again is moved back. Plain VTEPs say nothing: kernel.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from ipaddress import ip_address
from typing import TYPE_CHECKING, Literal

from lanspan.config.model import (
    AccessPort,
    IPAddress,
    Network,
    Node,
    Port,
    Segment,
    StaticMac,
    TrunkPort,
)
from lanspan.dataplane.kernel import (
    KernelAccessPort,
    KernelMac,
    KernelPlaneError,
    KernelSegment,
    KernelSegmentSpec,
    KernelTrunkVlan,
    SegmentDevices,
    cleanup_leftovers,
)
from lanspan.dataplane.kernel_probe import KernelCapabilities, probe
from lanspan.dataplane.tap import TapPort
from lanspan.records import record

if TYPE_CHECKING:
    from lanspan.node.core import NodeCore
    from lanspan.node.status import NodeStatus, PeerSegment

__all__ = ["KernelPlane", "PlaneChoice", "choose_planes", "core_view", "site_members"]

log = logging.getLogger("lanspan.agent.kernel")

Plane = Literal["kernel", "userspace"]


@record(frozen=True, slots=True)
class PlaneChoice:
    """The data plane of one segment on this node, and why."""

    segment: str
    plane: Plane
    reason: str

    def log_line(self) -> str:
        return f"segment {self.segment}: {self.plane} data plane — {self.reason}"


def _path_host(path: str) -> IPAddress | None:
    """The address of a direct path as the core formats it ("h:p", "[h6]:p"); None: a relay."""
    if path.startswith("via "):
        return None
    host = path[1:].split("]", 1)[0] if path.startswith("[") else path.rsplit(":", 1)[0]
    try:
        return ip_address(host)
    except ValueError:
        return None


def _vxlan_on_endpoints(node: Node) -> bool:
    """Its VXLAN rides its mesh endpoints (the default): then VXLAN follows its active path.

    A `vxlan_address` set apart from every endpoint is a VTEP of its own and stays put.
    """
    return any(e.host == node.vxlan_address for e in node.endpoints)


def _other_than(addr: IPAddress) -> Callable[[IPAddress], bool]:
    def allowed(a: IPAddress) -> bool:
        return a != addr

    return allowed


def _mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def site_members(network: Network, me: Node, segment: str) -> dict[str, IPAddress]:
    """Other members of my site carrying `segment`, by name, with their VXLAN address."""
    out: dict[str, IPAddress] = {}
    for n in network.nodes:
        mine = n.name != me.name and n.site == me.site and segment in n.segments
        if mine and n.vxlan_address is not None:
            out[n.name] = n.vxlan_address
    for v in network.vteps:
        if v.site == me.site and segment in v.segments:
            out[v.name] = v.address
    return out


def _ports_in(me: Node, seg: Segment) -> list[Port]:
    out: list[Port] = []
    for p in me.ports:
        if isinstance(p, TrunkPort):
            if seg.vlan in p.vlans:
                out.append(p)
        elif p.segment == seg.name:
            out.append(p)
    return out


def _eligible(network: Network, me: Node, seg: Segment) -> str | None:
    """Why the config alone rules the kernel out for `seg` (None: it does not).

    The same on every node of the site, so every member makes the same choice
    unless its own kernel lacks something.
    """
    site = network.site(me.site)
    if not site.trusted:
        return f"site {me.site} is not trusted"
    if me.vxlan_address is None:
        return f"node {me.name} has no VXLAN address in site {me.site}"
    if not site_members(network, me, seg.name):
        return f"no other member of site {me.site} carries it"
    return None


def _trunk_reason(p: TrunkPort, seg: Segment, caps: KernelCapabilities) -> str | None:
    """Why trunk `p` keeps `seg` in userspace (None: its VLAN can join the kernel bridge)."""
    if caps.missing_for_trunks():
        missing = "; ".join(str(f) for f in caps.missing_for_trunks())
        return f"trunk port {p.name} carries it and the kernel lacks {missing}"
    if p.create:
        return (
            f"trunk port {p.name} is a TAP lanspan makes (trunks in the kernel: "
            "existing interfaces only)"
        )
    if p.native_vlan == seg.vlan:
        return f"trunk port {p.name} carries it untagged (native VLAN: in userspace)"
    return None


def _port_reason(me: Node, seg: Segment, caps: KernelCapabilities) -> str | None:
    for p in _ports_in(me, seg):
        if isinstance(p, TrunkPort):
            why = _trunk_reason(p, seg, caps)
            if why is not None:
                return why
            continue
        if p.kind == "host":
            return f"host port {p.name} is in it (host ports in the kernel: not implemented yet)"
    return None


def choose_planes(
    network: Network, node: str, caps: Callable[[], KernelCapabilities] = probe
) -> list[PlaneChoice]:
    """Decide per segment the node carries; probes the kernel only if a segment could use it."""
    me = network.node(node)
    out: list[PlaneChoice] = []
    probed: KernelCapabilities | None = None
    for name in me.segments:
        seg = network.segment(name)
        why = _eligible(network, me, seg)
        if why is None:
            if probed is None:
                probed = caps()
                log.info("kernel capabilities: %s", probed.summary())
            why = _port_reason(me, seg, probed)
            if why is None and probed.missing_for_access():
                missing = "; ".join(str(f) for f in probed.missing_for_access())
                why = f"the kernel lacks {missing}"
        if why is not None:
            out.append(PlaneChoice(name, "userspace", why))
            continue
        site = network.site(me.site)
        members = site_members(network, me, name)
        out.append(
            PlaneChoice(
                name,
                "kernel",
                f"trusted site {me.site}: plain VXLAN (vni {seg.vni}, udp {site.vxlan_port}) "
                f"to {len(members)} site member(s) ({', '.join(sorted(members))}); "
                "other sites through the encrypted mesh",
            )
        )
    return out


def mesh_port_name(seg: Segment) -> str:
    return SegmentDevices.for_vni(seg.vni).mesh


def core_view(
    network: Network,
    node: str,
    kernel: set[str],
    mesh: Mapping[str, set[str]] | None = None,
) -> Network:
    """The network as the node core must see it once `kernel` segments are in the kernel.

    `mesh`: per kernel segment, site members that carry it in userspace: the
    core keeps carrying it to them (over the mesh), they get no plain VXLAN.
    """
    if not kernel:
        return network
    mesh = mesh or {}
    me = network.node(node)
    segs = {s: network.segment(s) for s in kernel}
    vlans = {seg.vlan for seg in segs.values()}
    ports: list[Port] = []
    for p in me.ports:
        if isinstance(p, TrunkPort):
            # the kernel's VLANs leave the trunk as the core sees it (it would see their
            # tagged frames too: never twice); a trunk left with none is the kernel's
            keep = tuple(v for v in p.vlans if v not in vlans)
            if keep:
                ports.append(replace(p, vlans=keep) if keep != p.vlans else p)
        elif p.segment not in kernel:
            ports.append(p)
    for s in me.segments:  # in the node's own order, so the view is stable
        if s in kernel:
            dev = mesh_port_name(segs[s])
            ports.append(AccessPort(name=dev, segment=s, device=dev, create=True))
    reached = {s: set(site_members(network, me, s)) - mesh.get(s, set()) for s in kernel}
    nodes: list[Node] = []
    for n in network.nodes:
        if n.name == me.name:
            nodes.append(replace(n, ports=tuple(ports)))
            continue
        drop = {s for s in kernel if n.name in reached[s]}
        nodes.append(replace(n, segments=tuple(s for s in n.segments if s not in drop)))
    statics: list[StaticMac] = []
    for m in network.static_macs:
        if m.segment in kernel and (m.node in reached[m.segment] or m.node == me.name):
            continue  # in the kernel's FDB (site members) or learned by the bridge (local)
        statics.append(m)
    return replace(network, nodes=tuple(nodes), static_macs=tuple(statics))


class KernelPlane:
    """The kernel segments of one agent: built at start, followed, removed at stop."""

    def __init__(self, network: Network, node: str) -> None:
        self.network = network
        self.node = node
        self.choices: dict[str, PlaneChoice] = {}
        self.segments: dict[str, KernelSegment] = {}
        self._refused: set[tuple[str, IPAddress]] = set()
        self._at: dict[str, dict[str, IPAddress]] = {}  # segment -> site member -> VTEP now
        # (network, VTEPs, rows per peer) `_peer_segments` last made
        self._rows: (
            tuple[Network, dict[str, dict[str, IPAddress]], dict[str, tuple[PeerSegment, ...]]]
            | None
        ) = None
        self._caps: KernelCapabilities | None = None
        self._failed: set[str] = set()  # segments whose kernel build failed: userspace
        # segment -> site members that said they carry it in userspace: over the mesh
        self._mesh: dict[str, set[str]] = {}
        self.view_changed = False  # core_view changed since the agent last applied it
        self.startup_log: list[tuple[int, str]] = []

    @classmethod
    def start(
        cls,
        network: Network,
        node: str,
        caps: Callable[[], KernelCapabilities] = probe,
    ) -> KernelPlane:
        """Remove leftovers of an earlier run, choose per segment, build the kernel ones."""
        plane = cls(network, node)

        def caps_once() -> KernelCapabilities:
            if plane._caps is None:
                plane._caps = caps()
            return plane._caps

        # What start decided is logged once the agent is up (`take_startup_log`): an
        # agent that then fails to start prints its one error line and nothing else.
        notes = plane.startup_log
        try:
            removed = cleanup_leftovers(network.name, node)
        except KernelPlaneError as e:
            notes.append((logging.WARNING, f"could not remove leftovers of an earlier run: {e}"))
            removed = []
        if removed:
            notes.append(
                (logging.INFO, f"removed leftovers of an earlier run: {', '.join(removed)}")
            )
        for choice in choose_planes(network, node, caps_once):
            if choice.plane == "kernel":
                choice = plane._build(choice)
            plane.choices[choice.segment] = choice
            notes.append((logging.INFO, choice.log_line()))
        return plane

    def take_startup_log(self) -> list[tuple[int, str]]:
        """(level, line) for what start() did, to log once the agent is up."""
        out, self.startup_log = self.startup_log, []
        return out

    def _build(self, choice: PlaneChoice) -> PlaneChoice:
        net, me = self.network, self.network.node(self.node)
        seg = net.segment(choice.segment)
        assert me.vxlan_address is not None  # checked by choose_planes
        access = tuple(
            KernelAccessPort(p.name, p.device, p.create)
            for p in _ports_in(me, seg)
            if isinstance(p, AccessPort)
        )
        trunks = tuple(
            KernelTrunkVlan(p.name, p.device, seg.vlan)
            for p in _ports_in(me, seg)
            if isinstance(p, TrunkPort)
        )
        spec = KernelSegmentSpec(
            network=net.name,
            node=me.name,
            segment=seg.name,
            vni=seg.vni,
            mtu=seg.mtu,
            local=me.vxlan_address,
            vxlan_port=net.site(me.site).vxlan_port,
            access=access,
            trunks=trunks,
            ageing=net.mac_ageing,
        )
        try:
            ks = KernelSegment.create(spec)
            try:
                ks.set_site_peers(site_members(net, me, seg.name).values())
                self._program_statics(ks, seg.name)
            except (KernelPlaneError, ValueError):
                ks.close()
                raise
        except (KernelPlaneError, ValueError) as e:
            self._failed.add(seg.name)
            return PlaneChoice(seg.name, "userspace", f"the kernel segment failed to build: {e}")
        self.segments[seg.name] = ks
        self._at[seg.name] = site_members(net, me, seg.name)
        return choice

    def _vxlan_members(self, segment: str, network: Network | None = None) -> dict[str, IPAddress]:
        """Site members reached over plain VXLAN for `segment`: not those on the mesh."""
        net = network or self.network
        members = site_members(net, net.node(self.node), segment)
        return {n: a for n, a in members.items() if n not in self._mesh.get(segment, set())}

    def _program_statics(self, ks: KernelSegment, segment: str, only: str | None = None) -> None:
        members = self._vxlan_members(segment)
        for m in self.network.static_macs:
            if m.segment == segment and m.node in members and only in (None, m.node):
                ks.set_mac(_mac_text(m.mac), members[m.node])

    # -- what the agent asks --------------------------------------------------

    @property
    def kernel_segments(self) -> set[str]:
        return set(self.segments)

    def core_view(self, network: Network | None = None) -> Network:
        return core_view(network or self.network, self.node, self.kernel_segments, self._mesh)

    def advertised(self) -> dict[str, str]:
        """What this node tells its site members: the plane of each of its segments.

        Empty outside a trusted site (nothing to agree on there).
        """
        me = self.network.node(self.node)
        if not self.network.site(me.site).trusted:
            return {}
        return {
            s: c.plane if (c := self.choices.get(s)) is not None else "userspace"
            for s in me.segments
        }

    def peer_planes(self, peer: str, planes: Mapping[str, object]) -> bool:
        """Site member `peer` said which plane carries each of its segments.

        For each kernel segment of ours it carries: "userspace" moves it to
        the mesh (its flood entry and pinned MACs removed, the core carries
        the segment to it), "kernel" moves it back. True when the core's view
        changed (`view_changed` is set too; the agent applies `core_view()`).
        """
        me = self.network.node(self.node)
        changed = False
        for name, ks in self.segments.items():
            plane = planes.get(name)
            members = site_members(self.network, me, name)
            if peer not in members or plane not in ("userspace", "kernel"):
                continue
            on_mesh = self._mesh.setdefault(name, set())
            if plane == "userspace" and peer not in on_mesh:
                on_mesh.add(peer)
                gone = self._at[name].pop(peer, None)
                for m in self.network.static_macs:
                    if m.segment == name and m.node == peer:
                        ks.remove_mac(_mac_text(m.mac))
                ks.set_site_peers(self._at[name].values())
                if gone is not None:  # what the kernel learned behind it (it was kernel once)
                    ks.prune_foreign(_other_than(gone))
                log.info(
                    "segment %s: site member %s carries it in userspace: reached over the "
                    "encrypted mesh, no plain VXLAN to it", name, peer,
                )  # fmt: skip
                changed = True
            elif plane == "kernel" and peer in on_mesh:
                on_mesh.discard(peer)
                self._at[name][peer] = members[peer]
                ks.set_site_peers(self._at[name].values())
                self._program_statics(ks, name, only=peer)
                log.info("segment %s: site member %s carries it in the kernel: plain VXLAN "
                         "to it again", name, peer)  # fmt: skip
                changed = True
        self.view_changed = self.view_changed or changed
        return changed

    def port(self, name: str) -> TapPort | None:
        """The mesh TAP behind core-view port `name`, if it is one of ours."""
        for seg_name, ks in self.segments.items():
            if mesh_port_name(self.network.segment(seg_name)) == name:
                return ks.mesh_port
        return None

    def peer_address(self, peer: str, address: IPAddress) -> bool:
        """Site member `peer` is now reached at `address`: move its FDB entries there.

        Refused (False, logged once) when `address` is outside the site's
        declared underlay: plain VXLAN goes nowhere else.
        """
        me = self.network.node(self.node)
        site = self.network.site(me.site)
        if not site.allows(address):
            if (peer, address) not in self._refused:
                self._refused.add((peer, address))
                log.warning(
                    "plain VXLAN to %s (%s) refused: outside site %s's underlay %s",
                    peer, address, me.site, ", ".join(str(n) for n in site.underlay),
                )  # fmt: skip
            return False
        moved = False
        for name, ks in self.segments.items():
            at = self._at[name]
            old = at.get(peer)
            if old is None or old == address:
                continue
            ks.move_destination(old, address)
            at[peer] = address
            moved = True
            log.info("segment %s: VXLAN to %s moved %s → %s", name, peer, old, address)
        return moved

    def follow(self, kind: str, fields: Mapping[str, object]) -> bool:
        """Follow one of the core's Log outputs: a site member's active path moved.

        On ``path_switch`` to a direct path, that member's FDB entries move to
        the new underlay address (`peer_address`, which refuses anything outside
        the site's underlay). Relay paths and other kinds are ignored: plain
        VXLAN is never relayed. True when an entry moved.
        """
        if kind == "peer_planes" and self.segments:
            peer, planes = fields.get("peer"), fields.get("planes")
            if not isinstance(peer, str) or not isinstance(planes, Mapping):
                return False
            try:
                return self.peer_planes(peer, planes)
            except (KernelPlaneError, ValueError) as e:  # contained: that member keeps its entries
                log.warning("segment planes of %s could not be followed: %s", peer, e)
                return False
        if kind != "path_switch" or not self.segments:
            return False
        peer, path = fields.get("peer"), fields.get("path")
        if not isinstance(peer, str) or not isinstance(path, str):
            return False
        host = _path_host(path)
        node = next((n for n in self.network.nodes if n.name == peer), None)
        if host is None or node is None or not _vxlan_on_endpoints(node):
            return False
        try:
            return self.peer_address(peer, host)
        except (KernelPlaneError, ValueError) as e:  # contained: the old entries stay
            log.warning("VXLAN to %s could not follow its path to %s: %s", peer, host, e)
            return False

    def node_status(self, core: NodeCore, now: float) -> NodeStatus:
        """`core`'s status with the plane of each segment, and per peer the plane of each
        segment shared with it."""
        status = core.status(now, self._peer_segments())
        if not self.choices:
            return status
        segs = tuple(
            replace(s, plane=c.plane, plane_reason=c.reason)
            if (c := self.choices.get(s.name)) is not None
            else s
            for s in status.segments
        )
        return replace(status, segments=segs)

    def _peer_segments(self) -> Callable[[str], tuple[PeerSegment, ...]]:
        """Per peer, (segment, plane[, VTEP]) of each segment shared with it: made again
        only when the network or a VTEP changed (every status asks, issue 10)."""
        # imported when asked: the status types cost an agent's start (issue 10)
        from lanspan.node.status import PeerSegment

        made = self._rows
        if made is None or made[0] is not self.network or made[1] != self._at:
            me = self.network.node(self.node)
            rows: dict[str, tuple[PeerSegment, ...]] = {}
            for other in self.network.nodes:
                out = []
                for s in me.segments:
                    if s in other.segments:
                        vtep = self._at.get(s, {}).get(other.name)
                        out.append(
                            PeerSegment(s, "mesh")
                            if vtep is None
                            else PeerSegment(s, "kernel_vxlan", str(vtep))
                        )
                rows[other.name] = tuple(out)
            made = self._rows = (self.network, {k: dict(v) for k, v in self._at.items()}, rows)
        return lambda peer: made[2].get(peer, ())

    def macs(self, segment: str | None = None) -> list[tuple[str, KernelMac]]:
        """(segment, entry) for what the kernel bridges learned: local ports and site members.

        Entries behind the mesh TAP are left out: the node core knows which
        peer they are behind.
        """
        out = []
        for name, ks in sorted(self.segments.items()):
            if segment is None or segment == name:
                out += [(name, m) for m in ks.macs() if m.where != "mesh"]
        return out

    def check_reload(self, new: Network) -> None:
        """Refuse a reload that would move a segment between data planes (restart instead)."""
        caps = self._caps or KernelCapabilities.unavailable(None, "not probed")
        want = {
            c.segment for c in choose_planes(new, self.node, lambda: caps) if c.plane == "kernel"
        } - self._failed
        if want != self.kernel_segments:
            raise ValueError(
                "the kernel data plane's segments would change "
                f"({sorted(self.kernel_segments)} → {sorted(want)}): restart the agent"
            )

    def reload(self, new: Network) -> None:
        """Follow a reload: site members and static MACs of each kernel segment."""
        self.check_reload(new)
        self.network = new
        for name, ks in self.segments.items():
            members = self._vxlan_members(name, new)
            ks.set_site_peers(members.values())
            self._at[name] = members
            self._program_statics(ks, name)

    def close(self) -> None:
        for name in list(self.segments):
            self.segments.pop(name).close()
