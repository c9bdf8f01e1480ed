"""docs/control-api.md lists exactly the fields of the typed status, in order.

Each `<!-- fields: Class -->` marker is followed by a table whose rows start
with a backquoted field name; the test compares them with the dataclasses of
`lanspan/node/status.py` and with the JSON the control socket sends.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from lanspan.config import encode_key, generate_private_key, parse_network, public_key
from lanspan.control.document import mac_rows_json, status_json
from lanspan.node import status
from lanspan.node.core import NodeCore
from lanspan.wire import vnet

DOC = Path(__file__).resolve().parents[1] / "docs" / "control-api.md"
MARKER = re.compile(r"^<!-- fields: (\w+) -->$")
ROW = re.compile(r"^\| `(\w+)` \|")
# Maps of name -> count in JSON, not objects with fields.
NOT_OBJECTS = {"Counts", "KernelLocation"}  # KernelLocation: a string, like the switch's


def documented() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in DOC.read_text().splitlines():
        m = MARKER.match(line)
        if m is not None:
            assert m.group(1) not in out, f"{m.group(1)} documented twice"
            current = out[m.group(1)] = []
            continue
        if current is None:
            continue
        if not line.startswith("|"):
            if current:
                current = None  # the table ended
            continue
        row = ROW.match(line)
        if row is not None:
            current.append(row.group(1))
    return out


def status_classes() -> dict[str, type]:
    return {
        name: cls
        for name in status.__all__
        if dataclasses.is_dataclass(cls := getattr(status, name)) and name not in NOT_OBJECTS
    }


def test_every_status_dataclass_is_documented_field_by_field() -> None:
    docs = documented()
    classes = status_classes()
    assert set(docs) == set(classes), "docs/control-api.md field tables vs lanspan/node/status.py"
    for name, cls in classes.items():
        assert docs[name] == [f.name for f in dataclasses.fields(cls)], name


def network_text(keys: list[bytes]) -> str:
    text = '[network]\nname = "t"\n[[segment]]\nname = "lan"\nvlan = 10\n'
    for i, key in enumerate(keys, 1):
        text += (
            f'[[node]]\nname = "n{i}"\nsite = "s{i}"\n'
            f'public_key = "{encode_key(public_key(key))}"\n'
            f'endpoints = ["198.18.0.{i}:51820"]\nsegments = ["lan"]\n'
            '  [[node.port]]\n  kind = "access"\n  name = "vm1"\n  segment = "lan"\n'
        )
    return text


def test_the_json_the_socket_sends_has_the_documented_keys() -> None:
    keys = [generate_private_key(), generate_private_key()]
    network = parse_network(network_text(keys), "t.toml")
    node = NodeCore(
        network, "n1", keys[0], random_bytes=lambda n: bytes(n), wall_time=lambda: 0.0, now=0.0
    )
    frame = bytes.fromhex("ffffffffffff0200000000010800") + bytes(46)
    node.frame_from_port("vm1", bytes(vnet.VNET_HDR_LEN) + frame, 1.0)
    gateways = status.GatewayStatus(
        instances=(
            status.InstanceStatus(
                "gw_lan", "gateway", "segment lan", ("198.18.0.254",), 100, False, "master", 0.0
            ),
        ),
        leases=(status.Lease("lan", "02:00:00:00:00:01", "198.18.0.10", None, None),),
    )
    kf = status.KernelFilterStatus(
        "inet lanspan_t_51820", "0x1a2b", status.Counts.of({"kernel.bad_shape": 3})
    )
    st = dataclasses.replace(
        node.status(1.0), udp=status.UdpStatus(True, False), gateways=gateways, kernel_filter=kf
    )
    docs = documented()
    doc = status_json(st)
    assert list(doc) == docs["NodeStatus"]
    assert [list(s) for s in doc["segments"]] == [docs["SegmentStatus"]]  # type: ignore[attr-defined]
    assert [list(p) for p in doc["ports"]] == [docs["PortStatus"]]  # type: ignore[attr-defined]
    peer = doc["peers"][0]  # type: ignore[index]
    assert list(peer) == docs["PeerStatus"]
    assert all(list(p) == docs["PathStatus"] for p in peer["paths"]) and peer["paths"]
    gw = doc["gateways"]
    assert list(gw) == docs["GatewayStatus"]  # type: ignore[call-overload]
    assert [list(i) for i in gw["instances"]] == [docs["InstanceStatus"]]  # type: ignore[index]
    assert [list(i) for i in gw["leases"]] == [docs["Lease"]]  # type: ignore[index]
    assert list(doc["kernel_filter"]) == docs["KernelFilterStatus"]  # type: ignore[call-overload]
    rows = mac_rows_json(node.mac_rows(None, 1.0))
    assert rows and all(list(r) == docs["MacRow"] for r in rows)
    assert rows[0]["where"] == "port:vm1"
