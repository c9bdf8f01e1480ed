"""Typed status of a node's gateways, floating addresses and DHCP leases (pure).

keepalived reports state changes on its notify FIFO, one line each:

    INSTANCE "gw_lan" MASTER 250
    GROUP "gateways" BACKUP

`VrrpTracker.feed(line, now)` parses them (bad lines are counted, never
raised) and keeps, per instance, the state and since when; `parse_leases`
reads a dnsmasq lease file. `gateway_status(...)` builds the frozen record
`lanspan show` renders; `GatewayStatus.to_json()` is its JSON view.
"""

from __future__ import annotations

import shlex
from dataclasses import field
from ipaddress import ip_address
from typing import Literal

from lanspan.config.model import Network
from lanspan.gateway.keepalived import instance_name, priority
from lanspan.records import record

__all__ = [
    "GatewayStatus",
    "InstanceStatus",
    "Lease",
    "StateChange",
    "VrrpState",
    "VrrpTracker",
    "gateway_status",
    "parse_leases",
]

VrrpState = Literal["init", "backup", "master", "fault", "stopped"]
_STATES: dict[str, VrrpState] = {
    "MASTER": "master",
    "BACKUP": "backup",
    "FAULT": "fault",
    "STOP": "stopped",
    "DELETED": "stopped",
}
MAX_LINE = 512


@record(frozen=True, slots=True)
class StateChange:
    instance: str
    old: VrrpState
    new: VrrpState
    at: float  # wall-clock seconds


@record(frozen=True, slots=True)
class InstanceStatus:
    name: str  # the vrrp_instance: gw_<segment> or fl_<name>
    kind: Literal["gateway", "floating"]
    where: str  # "segment lan" or "uplink wan"
    addresses: tuple[str, ...]
    priority: int
    preempt: bool
    state: VrrpState
    since: float | None  # wall-clock seconds of the last change; None: never reported


@record(frozen=True, slots=True)
class Lease:
    segment: str
    mac: str
    address: str
    hostname: str | None
    expires: float | None  # wall-clock seconds; None: infinite


@record(frozen=True, slots=True)
class GatewayStatus:
    instances: tuple[InstanceStatus, ...] = ()
    leases: tuple[Lease, ...] = ()
    serving: tuple[str, ...] = ()  # segments whose DHCP/RA this node serves now
    warnings: tuple[str, ...] = ()  # forwarding settings, missing packages
    bad_reports: int = 0  # FIFO lines keepalived wrote that made no sense

    def to_json(self) -> dict[str, object]:
        return {
            "instances": [
                {
                    "name": i.name,
                    "kind": i.kind,
                    "where": i.where,
                    "addresses": list(i.addresses),
                    "priority": i.priority,
                    "preempt": i.preempt,
                    "state": i.state,
                    "since": i.since,
                }
                for i in self.instances
            ],
            "leases": [
                {
                    "segment": lease.segment,
                    "mac": lease.mac,
                    "address": lease.address,
                    "hostname": lease.hostname,
                    "expires": lease.expires,
                }
                for lease in self.leases
            ],
            "serving": list(self.serving),
            "warnings": list(self.warnings),
            "bad_reports": self.bad_reports,
        }


@record
class VrrpTracker:
    """State per vrrp_instance from keepalived's FIFO lines; sans-IO (`now` comes in)."""

    instances: tuple[str, ...] = ()
    states: dict[str, tuple[VrrpState, float | None]] = field(default_factory=dict)
    bad_lines: int = 0
    _changes: list[StateChange] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in self.instances:
            self.states.setdefault(name, ("init", None))

    def reset(self, instances: tuple[str, ...]) -> None:
        """A new configuration: keep the state of instances that stay."""
        self.instances = instances
        self.states = {n: self.states.get(n, ("init", None)) for n in instances}

    def stopped(self, now: float) -> None:
        """keepalived is gone: every instance is stopped."""
        for name in self.instances:
            self._set(name, "stopped", now)

    def feed(self, line: str, now: float) -> StateChange | None:
        if len(line) > MAX_LINE:
            self.bad_lines += 1
            return None
        try:
            words = shlex.split(line)
        except ValueError:
            self.bad_lines += 1
            return None
        if len(words) < 3 or words[0] not in ("INSTANCE", "GROUP"):
            if words and words[0] not in ("VS", "RS"):  # LVS lines: not ours, not an error
                self.bad_lines += 1
            return None
        if words[0] == "GROUP":
            return None  # the instances report themselves too
        name, state = words[1], _STATES.get(words[2])
        if state is None or name not in self.states:
            self.bad_lines += 1
            return None
        return self._set(name, state, now)

    def _set(self, name: str, state: VrrpState, now: float) -> StateChange | None:
        old = self.states.get(name, ("init", None))[0]
        if old == state:
            return None
        self.states[name] = (state, now)
        change = StateChange(name, old, state, now)
        self._changes.append(change)
        del self._changes[:-64]  # bounded: callers take them each loop turn
        return change

    def take_outputs(self) -> list[StateChange]:
        out, self._changes = self._changes, []
        return out

    def is_master(self, name: str) -> bool:
        return self.states.get(name, ("init", None))[0] == "master"


def parse_leases(text: str, segment: str) -> list[Lease]:
    """dnsmasq's lease file: `expiry mac ip hostname client-id` per line (IPv6 lines differ).

    Lines that do not parse are skipped (the file is dnsmasq's, rewritten as it runs).
    """
    out: list[Lease] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[0] == "duid":
            continue
        try:
            expiry = int(parts[0])
            address = str(ip_address(parts[2]))
        except ValueError:
            continue
        host = None if parts[3] == "*" else parts[3]
        out.append(Lease(segment, parts[1].lower(), address, host, float(expiry) or None))
    return out


def gateway_status(
    network: Network,
    node: str,
    tracker: VrrpTracker,
    leases: tuple[Lease, ...] = (),
    serving: tuple[str, ...] = (),
    warnings: tuple[str, ...] = (),
) -> GatewayStatus:
    """The record `lanspan show` renders for this node."""
    rows: list[InstanceStatus] = []
    for g in network.gateways:
        if node in g.nodes:
            state, since = tracker.states.get(instance_name(g), ("init", None))
            rows.append(
                InstanceStatus(
                    instance_name(g),
                    "gateway",
                    f"segment {g.segment}",
                    tuple(str(a.ip) for a in g.addresses),
                    priority(g.nodes, node),
                    g.preempt,
                    state,
                    since,
                )
            )
    for f in network.floating:
        if node in f.nodes:
            state, since = tracker.states.get(instance_name(f), ("init", None))
            rows.append(
                InstanceStatus(
                    instance_name(f),
                    "floating",
                    f"segment {f.segment}" if f.segment else f"uplink {f.uplink}",
                    tuple(str(a.ip) for a in f.addresses),
                    priority(f.nodes, node),
                    f.preempt,
                    state,
                    since,
                )
            )
    return GatewayStatus(tuple(rows), leases, serving, warnings, tracker.bad_lines)
