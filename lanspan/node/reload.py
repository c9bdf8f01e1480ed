"""Reload: what a new network file changes for a running node, decided without touching it.

`check_reload` refuses what needs a restart; `plan_reload` lists what the core
applies (peers removed, added, re-keyed or updated; timers; whether the switch
is rebuilt) and the human-readable changes, in the order they are reported.
"""

from __future__ import annotations

from dataclasses import field
from typing import Literal

from lanspan.config.model import Network, Node
from lanspan.records import record

__all__ = ["PeerChange", "ReloadPlan", "check_reload", "plan_reload", "switch_view"]


def check_reload(old: Network, me: str, new: Network) -> None:
    """Raise ValueError when `new` cannot be applied without a restart."""
    if me not in {n.name for n in new.nodes}:
        raise ValueError(f"node {me!r} is no longer in the network file")
    was, mine = old.node(me), new.node(me)
    restart = {
        "network name": (old.name, new.name),
        "port": (old.port, new.port),
        "cipher": (old.cipher, new.cipher),
        "listen_port": (was.listen_port, mine.listen_port),
        "public_key": (was.public_key, mine.public_key),
    }
    for what, (before, after) in restart.items():
        if before != after:
            raise ValueError(f"{what} changed: restart the agent to apply it")
    for seg in old.segments:
        if seg.name in {s.name for s in new.segments}:
            n = new.segment(seg.name)
            if (n.vlan, n.vni) != (seg.vlan, seg.vni):
                raise ValueError(f"segment {seg.name!r} changed VLAN/VNI: restart to apply")


@record(frozen=True, slots=True)
class PeerChange:
    """add: a new peer; rekey: same name, new key (new session); update: same key."""

    kind: Literal["add", "rekey", "update"]
    node: Node
    endpoints_changed: bool = False


@record(slots=True)
class ReloadPlan:
    removed: list[str] = field(default_factory=list)
    peers: list[PeerChange] = field(default_factory=list)
    timers_changed: bool = False
    rebuild_switch: bool = False
    changes: list[str] = field(default_factory=list)


def plan_reload(old: Network, me: str, new: Network) -> ReloadPlan:
    """What applying `new` (already checked) changes; sessions of unchanged peers stay up."""
    plan = ReloadPlan()
    old_peers = {n.name: n for n in old.nodes if n.name != me}
    new_peers = {n.name: n for n in new.nodes if n.name != me}
    for name in old_peers.keys() - new_peers.keys():
        plan.removed.append(name)
        plan.changes.append(f"peer {name} removed")
    for name, node in new_peers.items():
        was = old_peers.get(name)
        if was is None:
            plan.peers.append(PeerChange("add", node))
            plan.changes.append(f"peer {name} added")
        elif was.public_key != node.public_key:
            plan.peers.append(PeerChange("rekey", node))
            plan.changes.append(f"peer {name} key changed: new session")
        else:
            moved = was.endpoints != node.endpoints
            plan.peers.append(PeerChange("update", node, moved))
            if moved:
                plan.changes.append(f"peer {name} endpoints now {[str(e) for e in node.endpoints]}")
            if was.segments != node.segments:
                plan.changes.append(f"peer {name} segments now {list(node.segments)}")
    old_segments = {s.name for s in old.segments}
    new_segments = {s.name for s in new.segments}
    plan.changes += [f"segment {n} added" for n in sorted(new_segments - old_segments)]
    plan.changes += [f"segment {n} removed" for n in sorted(old_segments - new_segments)]
    if old.timers != new.timers:
        plan.timers_changed = True
        plan.changes.append(f"timers now {new.timers}")
    if switch_view(old, me) != switch_view(new, me):
        # Rebuilt from the new file; learned MACs are relearned from traffic
        # (unknown unicast is flooded meanwhile, nothing is dropped).
        plan.rebuild_switch = True
        plan.changes.append("switch rebuilt: MAC tables relearn")
    return plan


def switch_view(network: Network, me: str) -> tuple[object, ...]:
    """What the switch is built from: when it is unchanged, a reload keeps the MAC tables."""
    return (
        network.segments,
        network.static_macs,
        network.mac_ageing,
        network.node(me).ports,
        tuple(sorted((n.name, n.segments, n.ports) for n in network.nodes)),
    )
