"""Network file text -> validated `Network`, reporting every problem at once.

Pure: no file access. Three passes:

1. TOML syntax (tomllib), then each table's field types on its own (pydantic,
   `lanspan.config._raw`): unknown fields, missing fields, wrong types;
2. each object's own values: ranges, addresses, keys, device names;
3. rules across objects: uniqueness, references, subnets, ports.

Every problem is a line `<object> <field>: <bad value> <what is wrong> — <fix>`,
where the object is named as the file names it (`node "gra-hv1" port "vm1"`,
or `segment[2]` when it has no usable name). They are collected and raised
together in one `ConfigError(source, problems)`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from dataclasses import field
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
    ip_address,
    ip_interface,
)
from typing import Any, TypeVar, cast, get_args

from lanspan.config._addressing import AddressingChecker
from lanspan.config._raw import (
    RAW_PORTS,
    RawAccessPort,
    RawHostPort,
    RawNetworkTable,
    RawNode,
    RawSegment,
    RawSite,
    RawStaticMac,
    RawTrunkPort,
    RawVtep,
    _Raw,
    fast_validate,
    show,
    toml_type,
)
from lanspan.config._raw import (
    label as _label,
)
from lanspan.config._raw import (
    suggest as _suggest,
)
from lanspan.config.keys import KeyFormatError, decode_key
from lanspan.config.model import (
    DEFAULT_FLOOD_RATE,
    DEFAULT_MAC_LIMIT,
    AccessPort,
    Cipher,
    Endpoint,
    HostPort,
    IPAddress,
    IPInterface,
    Network,
    Node,
    Port,
    Segment,
    Site,
    StaticMac,
    Timers,
    TrunkPort,
    Uplink,
    Vtep,
)
from lanspan.errors import ConfigError
from lanspan.records import record

VLAN_MIN, VLAN_MAX = 1, 4094
VNI_MIN, VNI_MAX = 1, 2**24 - 1
MTU_MIN, MTU_MAX, MTU_MIN_IPV6 = 576, 9000, 1280
PORT_MIN, PORT_MAX = 1, 65535
IFNAME_MAX = 15  # IFNAMSIZ - 1
CIPHERS: tuple[str, ...] = get_args(Cipher)
TOP_LEVEL = (
    "network",
    "segment",
    "site",
    "node",
    "static_mac",
    "pool",
    "gateway",
    "floating",
    "allow",
    "dhcp",
)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_IFNAME = re.compile(r"[A-Za-z0-9_.-]+\Z")
_MAC = re.compile(r"[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(?:\1[0-9a-fA-F]{2}){4}\Z")
_HOSTNAME = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.?\Z")
_TOML_POS = re.compile(r"^(?P<msg>.*) \(at line (?P<line>\d+), column (?P<col>\d+)\)$", re.S)

_M = TypeVar("_M", bound=_Raw)


def parse_network(text: str, source: str) -> Network:
    """Validate a network file's text; `source` names it in messages.

    Returns the frozen `Network`, or raises `ConfigError(source, problems)`
    listing every problem found.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(source, [_toml_problem(e)]) from None
    except RecursionError:
        raise ConfigError(source, ["the file is nested too deeply to be a network file"]) from None
    checker = _Checker()
    network = checker.run(doc)
    if checker.problems or network is None:
        raise ConfigError(source, checker.problems or ["the file describes no network"])
    return network


def _toml_problem(e: tomllib.TOMLDecodeError) -> str:
    text = str(e)
    m = _TOML_POS.match(text)
    if m:
        return f"line {m['line']}, column {m['col']}: invalid TOML: {m['msg']}"
    return f"invalid TOML: {text.replace('(at end of document)', 'at the end of the file')}"


# ------------------------------------------------------------ value parsers


def ifname_problem(name: str) -> str | None:
    """Why `name` is not a usable Linux interface name, or None if it is."""
    if not name:
        return "is empty"
    if len(name.encode()) > IFNAME_MAX:
        return f"is {len(name.encode())} characters long; Linux allows at most {IFNAME_MAX}"
    if name in (".", "..") or not _IFNAME.match(name):
        return "is not a valid interface name (use letters, digits, '-', '_' or '.')"
    return None


def parse_mac(text: str) -> bytes | None:
    """6 bytes from "02:aa:00:00:00:01" (or with '-'), None if malformed."""
    if not _MAC.match(text):
        return None
    return bytes.fromhex(text.replace(":", "").replace("-", ""))


def parse_endpoint(text: str, default_port: int = 51820) -> Endpoint | str:
    """An `Endpoint` from "1.2.3.4:51820" or "[fd00::1]:51820", else why not."""
    ex4, ex6 = f'"1.2.3.4:{default_port}"', f'"[fd00::1]:{default_port}"'
    host: str
    port: str | None
    addr: IPAddress
    if text.startswith("["):
        m = re.fullmatch(r"\[([^\]]*)\](?::(.*))?", text)
        if m is None:
            return f"{show(text)} is not an address:port — write {ex6}"
        host, port = m.group(1), m.group(2)
        try:
            addr = IPv6Address(host)
        except ValueError:
            return f"{show(host)} is not an IPv6 address — write {ex6} or {ex4}"
        if port is None:
            return f'{show(text)} has no port — write "[{addr}]:{default_port}"'
    else:
        if text.count(":") > 1:
            try:
                addr = IPv6Address(text)
            except ValueError:
                return f"{show(text)} is not an address:port — write {ex4} or {ex6}"
            return f'{show(text)} needs brackets and a port — write "[{addr}]:{default_port}"'
        host, sep, p = text.partition(":")
        port = p if sep else None
        try:
            addr = IPv4Address(host)
        except ValueError:
            if _HOSTNAME.match(host):
                return (
                    f"{show(text)}: hostnames are not accepted, use an address — "
                    f"write {ex4} or {ex6}"
                )
            return f"{show(text)} is not an address:port — write {ex4} or {ex6}"
        if port is None:
            return f'{show(text)} has no port — write "{addr}:{default_port}" or {ex6}'
    if not re.fullmatch(r"[0-9]{1,5}", port):
        return f"{show(text)}: port {show(port)} is not a number"
    number = int(port)
    if not PORT_MIN <= number <= PORT_MAX:
        return f"{show(text)}: port {number} is outside {PORT_MIN}..{PORT_MAX}"
    if addr.is_unspecified or addr.is_multicast:
        return f"{show(text)}: {addr} cannot be a peer's address (unspecified or multicast)"
    return Endpoint(addr, number)


# ------------------------------------------------------------ the checker


@record
class _Seg:
    where: str
    raw: RawSegment
    ipv4: IPv4Network | None = None
    ipv6: IPv6Network | None = None
    built: Segment | None = None


@record
class _NodeInfo:
    where: str
    name: str | None
    segments: set[str] | None = None  # None: unknown (the node's own fields are invalid)
    port_names: list[str] = field(default_factory=list)
    ports: dict[str, Port] = field(default_factory=dict)
    uplinks: dict[str, Uplink] = field(default_factory=dict)
    host_segments: set[str] = field(default_factory=set)  # of host ports, even invalid ones


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.port = 51820
        self.segs: list[_Seg] = []
        self.seg_names: list[str] = []  # every segment name written, even if invalid
        self.seg_by_vlan: dict[int, _Seg] = {}
        self.seg_by_name: dict[str, _Seg] = {}
        self.vlan_names: dict[int, str] = {}  # every VLAN id written, even in invalid segments
        self.vlans_complete = True  # False: some segment's VLAN is unreadable
        self.addresses: dict[IPAddress, str] = {}
        # kernel data plane: declared sites, plain VTEPs, VTEP addresses in use
        self.sites: dict[str, Site] = {}
        self.vteps: list[Vtep] = []
        self.vxlan_addresses: dict[IPAddress, str] = {}

    def err(self, msg: str) -> None:
        self.problems.append(msg)

    def validate(self, model: type[_M], data: object, where: str) -> _M | None:
        if not isinstance(data, dict):
            self.err(f"{where}: expected a table, got {show(data)} ({toml_type(data)})")
            return None
        table = fast_validate(model, data)
        if table is not None:
            return table
        from lanspan.config import _pydantic  # only for a table not exactly as written

        return _pydantic.validate(model, data, where, self.err)

    def tables(self, doc: dict[str, Any], key: str) -> list[Any]:
        value = doc.get(key, [])
        if isinstance(value, list):
            return value
        if isinstance(value, dict):
            self.err(f'"{key}" must be written [[{key}]] (one per {key}), not [{key}]')
        else:
            self.err(f'"{key}": expected [[{key}]] tables, got {show(value)}')
        return []

    # ---- the whole file

    def run(self, doc: dict[str, Any]) -> Network | None:
        for key in doc:
            if key not in TOP_LEVEL:
                self.err(f'unknown top-level field "{key}"' + _suggest(key, list(TOP_LEVEL)))
        net = self.network(doc)
        segments = self.segments(self.tables(doc, "segment"))
        self.site_tables(self.tables(doc, "site"))
        nodes = self.nodes(self.tables(doc, "node"))
        statics = self.static_macs(self.tables(doc, "static_mac"), nodes)
        name = net[0].name if net is not None else ""
        extra = AddressingChecker(self, name, segments, nodes).run(doc)
        if self.problems or net is None:
            return None
        raw, timers = net
        return Network(
            name=raw.name,
            port=raw.port,
            cipher=cast(Cipher, raw.cipher),
            segments=tuple(extra.segments.get(s.name, s) for s in segments),
            nodes=tuple(extra.nodes.get(n.name, n) for n, _ in nodes if n is not None),
            static_macs=tuple(statics),
            mac_ageing=raw.mac_ageing,
            timers=timers,
            gateways=tuple(extra.gateways),
            floating=tuple(extra.floating),
            allows=tuple(extra.allows),
            pools=tuple(extra.pools),
            assignments=tuple(extra.assignments),
            dhcp=tuple(extra.dhcp),
            sites=tuple(self.sites.values()),
            vteps=tuple(self.vteps),
        )

    def check_name(self, where: str, what: str, value: str) -> None:
        if not _NAME.match(value):
            self.err(
                f"{where} {what}: {show(value)} is not a valid name "
                "(start with a letter or digit; then letters, digits, '-', '_', '.')"
            )

    def check_range(self, where: str, value: int, lo: int, hi: int, what: str = "") -> bool:
        if lo <= value <= hi:
            return True
        self.err(f"{where}: {value} is outside {lo}..{hi}{what}")
        return False

    def check_positive(self, where: str, value: float) -> None:
        if not (math.isfinite(value) and value > 0):
            self.err(f"{where}: {show(value)} must be a positive number of seconds")

    # ---- [network]

    def network(self, doc: dict[str, Any]) -> tuple[RawNetworkTable, Timers] | None:
        if "network" not in doc:
            self.err('missing the [network] table — add [network] with name = "..."')
            return None
        raw = self.validate(RawNetworkTable, doc["network"], "[network]")
        if raw is None:
            return None
        self.check_name("[network]", "name", raw.name)
        if self.check_range("[network] port", raw.port, PORT_MIN, PORT_MAX):
            self.port = raw.port
        if raw.cipher not in CIPHERS:
            self.err(
                f"[network] cipher: {show(raw.cipher)} is not a cipher — use "
                + " or ".join(f'"{c}"' for c in CIPHERS)
            )
        self.check_positive("[network] mac_ageing", raw.mac_ageing)
        t = raw.timers
        for name in ("keepalive", "probe_interval", "hold_down"):
            self.check_positive(f"[network] timers.{name}", getattr(t, name))
        if t.probe_multiplier < 1:
            self.err(f"[network] timers.probe_multiplier: {t.probe_multiplier} must be 1 or more")
        timers = Timers(
            keepalive=t.keepalive,
            probe_interval=t.probe_interval,
            probe_multiplier=t.probe_multiplier,
            hold_down=t.hold_down,
        )
        return raw, timers

    # ---- [[segment]]

    def segments(self, items: list[Any]) -> list[Segment]:
        seen_names: dict[str, str] = {}
        for i, item in enumerate(items):
            where = _label("segment", i, item, seen_names)
            name = item.get("name") if isinstance(item, dict) else None
            if isinstance(name, str):
                if name in seen_names:
                    self.err(
                        f"segment[{i}] name: {show(name)} is already used by "
                        f"{seen_names[name]} — segment names must be unique"
                    )
                else:
                    seen_names[name] = f"segment[{i}]"
                    self.seg_names.append(name)
            vlan = item.get("vlan") if isinstance(item, dict) else None
            if type(vlan) is int and isinstance(name, str):
                self.vlan_names.setdefault(vlan, name)
            else:
                self.vlans_complete = False
            raw = self.validate(RawSegment, item, where)
            if raw is not None:
                self.segs.append(self.segment(where, raw))
        by_vni: dict[int, _Seg] = {}
        for s in self.segs:
            self.seg_by_name.setdefault(s.raw.name, s)
            vlan, vni = s.raw.vlan, s.raw.vni if s.raw.vni is not None else s.raw.vlan
            other = self.seg_by_vlan.setdefault(vlan, s)
            if other is not s:
                self.err(f"{s.where} vlan: {vlan} is already used by {other.where}")
            other = by_vni.setdefault(vni, s)
            if other is not s and (s.raw.vni is not None or other.raw.vlan != vlan):
                field_ = "vni" if s.raw.vni is not None else "vni (defaults to the vlan)"
                self.err(
                    f"{s.where} {field_}: {vni} is already used by {other.where}"
                    " — give each segment its own vni"
                )
        for i, a in enumerate(self.segs):
            for b in self.segs[:i]:
                for fam in ("ipv4", "ipv6"):
                    na, nb = getattr(a, fam), getattr(b, fam)
                    if na is not None and nb is not None and na.overlaps(nb):
                        self.err(f"{a.where} {fam}: {na} overlaps {nb} of {b.where}")
        return [s.built for s in self.segs if s.built is not None]

    def segment(self, where: str, raw: RawSegment) -> _Seg:
        mark = len(self.problems)
        s = _Seg(where, raw)
        self.check_name(where, "name", raw.name)
        self.check_range(f"{where} vlan", raw.vlan, VLAN_MIN, VLAN_MAX, " (802.1Q VLAN ids)")
        if raw.vni is not None:
            self.check_range(f"{where} vni", raw.vni, VNI_MIN, VNI_MAX, " (24-bit VNI)")
        if raw.ipv4 is not None:
            s.ipv4 = self.subnet(f"{where} ipv4", raw.ipv4, IPv4Network, "198.18.10.0/24")
        if raw.ipv6 is not None:
            s.ipv6 = self.subnet(f"{where} ipv6", raw.ipv6, IPv6Network, "fd00:10::/64")
        self.check_range(f"{where} mtu", raw.mtu, MTU_MIN, MTU_MAX)
        if raw.ipv6 is not None and raw.mtu < MTU_MIN_IPV6:
            self.err(f"{where} mtu: {raw.mtu} is below {MTU_MIN_IPV6}, which IPv6 requires")
        gateway: IPAddress | None = None
        if raw.gateway is not None:
            try:
                gateway = ip_address(raw.gateway)
            except ValueError:
                self.err(f"{where} gateway: {show(raw.gateway)} is not an IP address")
            else:
                fam = "ipv4" if gateway.version == 4 else "ipv6"
                net = s.ipv4 if gateway.version == 4 else s.ipv6
                if getattr(raw, fam) is None:
                    self.err(
                        f"{where} gateway: {gateway} needs the segment's {fam} subnet — "
                        f"add {fam} = ..."
                    )
                elif net is not None and gateway not in net:
                    self.err(f"{where} gateway: {gateway} is outside the segment's {fam} {net}")
        if len(self.problems) == mark:
            s.built = Segment(
                name=raw.name,
                vlan=raw.vlan,
                vni=raw.vni if raw.vni is not None else raw.vlan,
                ipv4=s.ipv4,
                ipv6=s.ipv6,
                mtu=raw.mtu,
                gateway=gateway,
            )
        return s

    def subnet(
        self,
        where: str,
        text: str,
        kind: type[IPv4Network] | type[IPv6Network],
        example: str,
    ) -> Any:
        if "/" not in text:
            self.err(f'{where}: {show(text)} has no prefix length — write e.g. "{example}"')
            return None
        try:
            return kind(text)
        except ValueError:
            pass
        try:
            loose = kind(text, strict=False)
        except ValueError:
            other = "IPv6" if kind is IPv4Network else "IPv4"
            try:
                (IPv6Network if kind is IPv4Network else IPv4Network)(text, strict=False)
            except ValueError:
                self.err(f'{where}: {show(text)} is not a subnet — write e.g. "{example}"')
            else:
                fam = "ipv6" if kind is IPv4Network else "ipv4"
                self.err(f"{where}: {show(text)} is an {other} subnet — put it in {fam}")
            return None
        self.err(f'{where}: {show(text)} has host bits set — did you mean "{loose}"?')
        return None

    # ---- [[node]]

    def nodes(self, items: list[Any]) -> list[tuple[Node | None, _NodeInfo]]:
        out: list[tuple[Node | None, _NodeInfo]] = []
        names: dict[str, str] = {}
        keys: dict[bytes, str] = {}
        for i, item in enumerate(items):
            where = _label("node", i, item, names)
            name = item.get("name") if isinstance(item, dict) else None
            info = _NodeInfo(where, name if isinstance(name, str) else None)
            if isinstance(name, str):
                if name in names:
                    self.err(
                        f"node[{i}] name: {show(name)} is already used by {names[name]}"
                        " — node names must be unique"
                    )
                else:
                    names[name] = f"node[{i}]"
            if isinstance(item, dict) and item.get("vtep") is True:
                self.vtep(where, item)
                continue
            mark = len(self.problems)
            raw = self.validate(RawNode, item, where)
            segs = item.get("segments") if isinstance(item, dict) else None
            if isinstance(segs, list):
                info.segments = {s for s in segs if isinstance(s, str)}
            ports = self.ports(where, item, info)
            node = self.node(where, raw, ports, keys, info) if raw is not None else None
            out.append((node if len(self.problems) == mark else None, info))
        return out

    def node(
        self,
        where: str,
        raw: RawNode,
        ports: list[Port],
        keys: dict[bytes, str],
        info: _NodeInfo,
    ) -> Node | None:
        self.check_name(where, "name", raw.name)
        self.check_name(where, "site", raw.site)
        key = b""
        try:
            key = decode_key(raw.public_key)
        except KeyFormatError as e:
            self.err(
                f"{where} public_key: {show(raw.public_key)} is not a public key: {e}"
                " — print one with `lanspan pubkey < private.key`"
            )
        else:
            other = keys.get(key)
            if other is None:
                keys[key] = where
            else:
                self.err(
                    f"{where} public_key: same key as {other} — every node needs its own key "
                    "(lanspan genkey)"
                )
        endpoints: list[Endpoint] = []
        for k, text in enumerate(raw.endpoints):
            ep = parse_endpoint(text, self.port)
            if isinstance(ep, str):
                self.err(f"{where} endpoints[{k}]: {ep}")
            elif ep in endpoints:
                self.err(f"{where} endpoints[{k}]: {show(text)} is listed twice")
            else:
                endpoints.append(ep)
        seen: set[str] = set()
        for k, seg in enumerate(raw.segments):
            if seg in seen:
                self.err(f"{where} segments[{k}]: {show(seg)} is listed twice")
            seen.add(seg)
            if seg not in self.seg_names:
                self.err(
                    f"{where} segments[{k}]: {show(seg)} is not a defined segment"
                    + _suggest(seg, self.seg_names)
                )
        if raw.listen_port is not None:
            self.check_range(f"{where} listen_port", raw.listen_port, PORT_MIN, PORT_MAX)
        vxlan = self.node_vxlan_address(where, raw, endpoints)
        return Node(
            name=raw.name,
            site=raw.site,
            public_key=key,
            endpoints=tuple(endpoints),
            segments=tuple(raw.segments),
            ports=tuple(ports),
            relay=raw.relay,
            listen_port=raw.listen_port,
            uplinks=tuple(self.uplinks(where, raw, ports, info)),
            vxlan_address=vxlan,
        )

    def uplinks(
        self, node_where: str, raw: RawNode, ports: list[Port], info: _NodeInfo
    ) -> list[Uplink]:
        out: list[Uplink] = []
        devices = {p.device: p.name for p in ports}
        for j, u in enumerate(raw.uplink):
            where = f'{node_where} uplink "{u.name}"'
            self.check_name(where, "name", u.name)
            if u.name in info.uplinks:
                self.err(f"{node_where} uplink[{j}] name: {show(u.name)} is listed twice")
                continue
            why = ifname_problem(u.interface)
            if why is not None:
                self.err(f"{where} interface: {show(u.interface)} {why}")
            elif u.interface in devices:
                self.err(
                    f"{where} interface: {show(u.interface)} is already port "
                    f'"{devices[u.interface]}" of the node — an uplink is outside the mesh'
                )
            addrs: list[IPInterface] = []
            for k, text in enumerate(u.address):
                try:
                    addrs.append(ip_interface(text))
                except ValueError:
                    self.err(
                        f"{where} address[{k}]: {show(text)} is not an address"
                        ' — write e.g. "198.19.1.2/24"'
                    )
                else:
                    if "/" not in text:
                        self.err(
                            f"{where} address[{k}]: {show(text)} has no prefix length"
                            ' — write e.g. "198.19.1.2/24"'
                        )
            up = Uplink(u.name, u.interface, tuple(addrs))
            info.uplinks[u.name] = up
            out.append(up)
        return out

    def ports(self, node_where: str, item: object, info: _NodeInfo) -> list[Port]:
        raw_ports = item.get("port") if isinstance(item, dict) else None
        if not isinstance(raw_ports, list):
            return []  # absent, or a type error RawNode already reported
        ports: list[Port] = []
        names: dict[str, str] = {}
        devices: dict[str, str] = {}
        for j, p in enumerate(raw_ports):
            if not isinstance(p, dict):
                continue  # RawNode reported it
            where = f"{node_where} {_label('port', j, p, names)}"
            pname = p.get("name")
            if isinstance(pname, str):
                info.port_names.append(pname)
                if pname in names:
                    self.err(
                        f"{node_where} port[{j}] name: {show(pname)} is already used by "
                        f"{names[pname]} on this node"
                    )
                else:
                    names[pname] = f"port[{j}]"
            kind = p.get("kind")
            if kind is None:
                self.err(f'{where}: missing required field "kind" (access, trunk or host)')
                continue
            if not isinstance(kind, str) or kind not in RAW_PORTS:  # [] or {}: unhashable
                import difflib  # a mistake only

                close = difflib.get_close_matches(str(kind), list(RAW_PORTS), n=1)
                fix = f'did you mean "{close[0]}"?' if close else 'use "access", "trunk" or "host"'
                self.err(f"{where} kind: {show(kind)} is not a port kind — {fix}")
                continue
            if kind == "host" and isinstance(p.get("segment"), str):
                info.host_segments.add(p["segment"])
            auto = kind == "host" and p.get("address") == "auto"
            if auto:
                p = {k: v for k, v in p.items() if k != "address"}
            elif kind == "host" and isinstance(p.get("address"), str):
                self.err(
                    f"{where} address: {show(p['address'])} is neither a list of addresses nor"
                    f' "auto" — write [{show(p["address"])}] or "auto"'
                )
                continue
            raw = self.validate(RAW_PORTS[kind], p, where)
            if raw is None:
                continue
            mark = len(self.problems)
            port = self.port_of(where, raw, info)
            if auto and isinstance(port, HostPort):
                port = dataclasses.replace(port, auto=True)
            if port is None:
                continue
            other = devices.get(port.device)
            if other is None:
                devices[port.device] = where
            else:
                self.err(
                    f"{where}: device {show(port.device)} is already used by {other}"
                    " — give each port its own device"
                )
            if len(self.problems) == mark:
                ports.append(port)
                info.ports.setdefault(port.name, port)
        return ports

    def port_of(self, where: str, raw: _Raw, info: _NodeInfo) -> Port | None:
        if isinstance(raw, RawAccessPort):
            return self.access_port(where, raw, info)
        if isinstance(raw, RawTrunkPort):
            return self.trunk_port(where, raw, info)
        assert isinstance(raw, RawHostPort)
        return self.host_port(where, raw, info)

    def carried(self, where: str, segment: str, info: _NodeInfo) -> bool:
        if segment not in self.seg_names:
            self.err(
                f"{where} segment: {show(segment)} is not a defined segment"
                + _suggest(segment, self.seg_names)
            )
            return False
        if info.segments is not None and segment not in info.segments:
            node = f'node "{info.name}"' if info.name else "the node"
            self.err(
                f"{where} segment: {show(segment)} is not carried by {node}"
                f" — add it to the node's segments"
            )
            return False
        return True

    def device(
        self, where: str, tap: str | None, interface: str | None, default: str, default_from: str
    ) -> tuple[str, bool] | None:
        if tap is not None and interface is not None:
            self.err(
                f"{where}: give either tap (a TAP lanspan creates) or interface "
                "(an existing device), not both"
            )
            return None
        if interface is not None:
            dev, fld, create = interface, "interface", False
        elif tap is not None:
            dev, fld, create = tap, "tap", True
        else:
            dev, fld, create = default, default_from, True
        why = ifname_problem(dev)
        if why is not None:
            hint = ' — set tap = "..." to a valid device name' if fld == default_from else ""
            what = "device name" if fld == default_from else "device"
            self.err(f"{where} {fld}: {what} {show(dev)} {why}{hint}")
            return None
        return dev, create

    def limits(self, where: str, mac_limit: int | None, flood_rate: float | None) -> None:
        if mac_limit is not None and mac_limit < 1:
            self.err(f"{where} mac_limit: {mac_limit} must be 1 or more")
        if flood_rate is not None and not (math.isfinite(flood_rate) and flood_rate > 0):
            self.err(f"{where} flood_rate: {show(flood_rate)} must be a positive number")

    def access_port(self, where: str, raw: RawAccessPort, info: _NodeInfo) -> Port | None:
        mark = len(self.problems)
        self.check_name(where, "name", raw.name)
        self.carried(where, raw.segment, info)
        dev = self.device(where, raw.tap, raw.interface, raw.name, "name")
        self.limits(where, raw.mac_limit, raw.flood_rate)
        if dev is None or len(self.problems) != mark:
            return None
        return AccessPort(
            name=raw.name,
            segment=raw.segment,
            device=dev[0],
            create=dev[1],
            mac_limit=raw.mac_limit if raw.mac_limit is not None else DEFAULT_MAC_LIMIT,
            flood_rate=raw.flood_rate if raw.flood_rate is not None else DEFAULT_FLOOD_RATE,
        )

    def trunk_port(self, where: str, raw: RawTrunkPort, info: _NodeInfo) -> Port | None:
        mark = len(self.problems)
        self.check_name(where, "name", raw.name)
        if not raw.vlans:
            self.err(f"{where} vlans: the list is empty — list the VLAN ids this trunk carries")
        known = ", ".join(f'{v} "{n}"' for v, n in sorted(self.vlan_names.items()))
        seen: set[int] = set()
        for k, vlan in enumerate(raw.vlans):
            if vlan in seen:
                self.err(f"{where} vlans[{k}]: {vlan} is listed twice")
            seen.add(vlan)
            seg = self.vlan_names.get(vlan)
            if seg is None and self.vlans_complete:
                self.err(f"{where} vlans[{k}]: {vlan} is not the VLAN of any segment ({known})")
            elif seg is not None and info.segments is not None and seg not in info.segments:
                node = f'node "{info.name}"' if info.name else "the node"
                self.err(
                    f'{where} vlans[{k}]: {vlan} is segment "{seg}", which {node} '
                    f'does not carry — add "{seg}" to its segments'
                )
        if raw.native_vlan is not None and raw.native_vlan not in raw.vlans:
            self.err(
                f"{where} native_vlan: {raw.native_vlan} is not in vlans {show(raw.vlans)}"
                " — add it to vlans"
            )
        dev = self.device(where, raw.tap, raw.interface, raw.name, "name")
        self.limits(where, raw.mac_limit, raw.flood_rate)
        if dev is None or len(self.problems) != mark:
            return None
        return TrunkPort(
            name=raw.name,
            device=dev[0],
            create=dev[1],
            vlans=tuple(raw.vlans),
            native_vlan=raw.native_vlan,
            mac_limit=raw.mac_limit if raw.mac_limit is not None else DEFAULT_MAC_LIMIT,
            flood_rate=raw.flood_rate if raw.flood_rate is not None else DEFAULT_FLOOD_RATE,
        )

    def host_port(self, where: str, raw: RawHostPort, info: _NodeInfo) -> Port | None:
        mark = len(self.problems)
        self.check_name(where, "name", raw.name)
        ok = self.carried(where, raw.segment, info)
        default_tap = f"ls-{raw.segment}"[:IFNAME_MAX]
        dev = self.device(where, raw.tap, None, default_tap, "segment")
        seg = self.seg_by_name.get(raw.segment) if ok else None
        addresses: list[IPInterface] = []
        for k, text in enumerate(raw.address):
            a = self.host_address(f"{where} address[{k}]", text, seg)
            if a is not None:
                addresses.append(a)
        mac: bytes | None = None
        if raw.mac is not None:
            mac = self.unicast_mac(f"{where} mac", raw.mac)
        if dev is None or len(self.problems) != mark:
            return None
        return HostPort(
            name=raw.name,
            segment=raw.segment,
            device=dev[0],
            addresses=tuple(addresses),
            mac=mac,
        )

    def host_address(self, where: str, text: str, seg: _Seg | None) -> IPInterface | None:
        if "/" not in text:
            self.err(
                f"{where}: {show(text)} has no prefix length — write it with the segment's "
                'prefix, e.g. "198.18.10.11/24"'
            )
            return None
        try:
            addr = ip_interface(text)
        except ValueError:
            self.err(f'{where}: {show(text)} is not an address — write e.g. "198.18.10.11/24"')
            return None
        if seg is None:
            return addr
        fam = "ipv4" if addr.version == 4 else "ipv6"
        net: IPv4Network | IPv6Network | None = seg.ipv4 if addr.version == 4 else seg.ipv6
        if getattr(seg.raw, fam) is None:
            self.err(
                f"{where}: {addr} is {fam.upper().replace('IPV', 'IPv')} but {seg.where} "
                f"has no {fam} subnet — add {fam} = ... to the segment"
            )
            return None
        if net is None:
            return addr  # the segment's subnet is itself invalid, already reported
        if addr.ip not in net:
            self.err(f"{where}: {addr.ip} is outside {net} of {seg.where}")
            return None
        if addr.network != net:
            self.err(
                f"{where}: prefix /{addr.network.prefixlen} differs from {net} of {seg.where}"
                f' — write "{addr.ip}/{net.prefixlen}"'
            )
        if addr.version == 4 and net.prefixlen < 31:
            assert isinstance(addr, IPv4Interface) and isinstance(net, IPv4Network)
            if addr.ip in (net.network_address, net.broadcast_address):
                self.err(f"{where}: {addr.ip} is the network or broadcast address of {net}")
        elif isinstance(addr, IPv6Interface) and addr.ip == net.network_address:
            self.err(f"{where}: {addr.ip} is the subnet-router anycast address of {net}")
        other = self.addresses.get(addr.ip)
        if other is None:
            self.addresses[addr.ip] = where
        else:
            self.err(f"{where}: {addr.ip} is already used by {other}")
        return addr

    def unicast_mac(self, where: str, text: str) -> bytes | None:
        mac = parse_mac(text)
        if mac is None:
            self.err(f'{where}: {show(text)} is not a MAC address — write e.g. "02:aa:00:00:00:01"')
            return None
        if mac[0] & 1:
            self.err(
                f"{where}: {show(text)} is a multicast/broadcast MAC (odd first byte) — "
                'use a unicast one, e.g. "02:aa:00:00:00:01"'
            )
            return None
        if mac == bytes(6):
            self.err(f"{where}: {show(text)} is the all-zero MAC, which no interface may use")
            return None
        return mac

    # ---- [[static_mac]]

    def static_macs(
        self, items: list[Any], nodes: list[tuple[Node | None, _NodeInfo]]
    ) -> list[StaticMac]:
        by_name = {info.name: info for _, info in reversed(nodes) if info.name is not None}
        out: list[StaticMac] = []
        seen: dict[tuple[str, bytes], str] = {}
        for i, item in enumerate(items):
            where = f"static_mac[{i}]"
            raw = self.validate(RawStaticMac, item, where)
            if raw is None:
                continue
            mark = len(self.problems)
            mac = self.unicast_mac(f"{where} mac", raw.mac)
            seg_ok = raw.segment in self.seg_names
            if not seg_ok:
                self.err(
                    f"{where} segment: {show(raw.segment)} is not a defined segment"
                    + _suggest(raw.segment, self.seg_names)
                )
            info = by_name.get(raw.node)
            if info is None:
                self.err(
                    f"{where} node: {show(raw.node)} is not a defined node"
                    + _suggest(raw.node, list(by_name))
                )
            else:
                if seg_ok and info.segments is not None and raw.segment not in info.segments:
                    self.err(
                        f'{where} segment: {show(raw.segment)} is not carried by node "{raw.node}"'
                    )
                if raw.port is not None:
                    self.static_port(where, raw, info)
            if mac is not None:
                other = seen.get((raw.segment, mac))
                if other is None:
                    seen[(raw.segment, mac)] = where
                else:
                    self.err(f"{where} mac: {show(raw.mac)} is already pinned by {other}")
            if mac is not None and len(self.problems) == mark:
                out.append(StaticMac(segment=raw.segment, mac=mac, node=raw.node, port=raw.port))
        return out

    def static_port(self, where: str, raw: RawStaticMac, info: _NodeInfo) -> None:
        assert raw.port is not None
        if raw.port not in info.port_names:
            self.err(
                f'{where} port: {show(raw.port)} is not a port of node "{raw.node}"'
                + _suggest(raw.port, info.port_names)
            )
            return
        port = info.ports.get(raw.port)
        seg = self.seg_by_name.get(raw.segment)
        if port is None or seg is None:
            return  # the port or segment is itself invalid, already reported
        if isinstance(port, TrunkPort):
            inside = seg.raw.vlan in port.vlans
        else:
            inside = port.segment == raw.segment
        if not inside:
            self.err(
                f'{where} port: port "{raw.port}" of node "{raw.node}" is not in '
                f"segment {show(raw.segment)}"
            )

    # ---- kernel data plane: [[site]], plain VTEPs, VXLAN addresses

    def site_tables(self, items: list[Any]) -> None:
        for i, item in enumerate(items):
            where = _label("site", i, item, {k: k for k in self.sites})
            raw = self.validate(RawSite, item, where)
            if raw is None:
                continue
            mark = len(self.problems)
            self.check_name(where, "name", raw.name)
            if raw.name in self.sites:
                self.err(f"site[{i}] name: {show(raw.name)} is declared twice")
            self.check_range(f"{where} vxlan_port", raw.vxlan_port, PORT_MIN, PORT_MAX)
            nets: list[IPv4Network | IPv6Network] = []
            for k, text in enumerate(raw.underlay):
                kind = IPv6Network if ":" in text else IPv4Network
                net = self.subnet(f"{where} underlay[{k}]", text, kind, "198.19.1.0/24")
                if net is not None:
                    nets.append(net)
            if raw.trusted and not raw.underlay:
                self.err(
                    f"{where} underlay: a trusted site needs its underlay prefixes — plain "
                    'VXLAN is sent only inside them; add underlay = ["198.19.1.0/24"]'
                )
            if not raw.trusted and raw.underlay:
                self.err(
                    f"{where} underlay: only used in a trusted site — add trusted = true "
                    "or remove underlay"
                )
            if len(self.problems) == mark:
                self.sites[raw.name] = Site(raw.name, raw.trusted, tuple(nets), raw.vxlan_port)

    def vxlan_address_in_site(self, where: str, text: str, site_name: str) -> IPAddress | None:
        """`text` as a VTEP address of `site_name`: refused outside its trusted underlay."""
        field_ = f"{where} vxlan_address"
        try:
            addr = ip_address(text)
        except ValueError:
            self.err(f"{field_}: {show(text)} is not an IP address")
            return None
        site = self.sites.get(site_name)
        if site is None or not site.trusted:
            self.err(
                f"{field_}: {show(text)}: plain VXLAN is only used in a trusted site, and site "
                f'{show(site_name)} is not one — declare [[site]] name = "{site_name}" '
                "with trusted = true and its underlay"
            )
            return None
        if not site.allows(addr):
            prefixes = ", ".join(str(n) for n in site.underlay)
            self.err(
                f"{field_}: {addr} is outside site {show(site_name)}'s underlay ({prefixes})"
                " — plain VXLAN is unauthenticated and is sent only inside a trusted underlay"
            )
            return None
        other = self.vxlan_addresses.setdefault(addr, where)
        if other != where:
            self.err(f"{field_}: {addr} is already the VXLAN address of {other}")
            return None
        return addr

    def node_vxlan_address(
        self, where: str, raw: RawNode, endpoints: list[Endpoint]
    ) -> IPAddress | None:
        site = self.sites.get(raw.site)
        if raw.vxlan_address is not None:
            return self.vxlan_address_in_site(where, raw.vxlan_address, raw.site)
        if site is None or not site.trusted:
            return None
        for ep in endpoints:
            if site.allows(ep.host):
                return self.vxlan_address_in_site(where, str(ep.host), raw.site)
        prefixes = ", ".join(str(n) for n in site.underlay)
        self.err(
            f"{where} vxlan_address: the node is in trusted site {show(raw.site)} but none of "
            f"its endpoints is inside the site's underlay ({prefixes}) — add "
            'vxlan_address = "<its address in the site>"'
        )
        return None

    def vtep(self, where: str, item: dict[str, Any]) -> None:
        raw = self.validate(RawVtep, item, where)
        if raw is None:
            return
        mark = len(self.problems)
        self.check_name(where, "name", raw.name)
        self.check_name(where, "site", raw.site)
        for k, seg in enumerate(raw.segments):
            if seg not in self.seg_names:
                self.err(
                    f"{where} segments[{k}]: {show(seg)} is not a defined segment"
                    + _suggest(seg, self.seg_names)
                )
        addr = self.vxlan_address_in_site(where, raw.vxlan_address, raw.site)
        if addr is not None and len(self.problems) == mark:
            self.vteps.append(Vtep(raw.name, raw.site, addr, tuple(raw.segments)))
