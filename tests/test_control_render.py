"""Golden renderings of `lanspan show` and `lanspan show macs`."""

from __future__ import annotations

from control_samples import peer_up

from lanspan.control.render import (
    fmt_age,
    fmt_bytes,
    fmt_duration,
    fmt_loss,
    fmt_rtt,
    render_macs,
    render_status,
    table,
)

DOC: dict[str, object] = {
    "node": "gra-hv1",
    "network": "acme",
    "public_key": "Zm9vYmFy",
    "listen_port": 51820,
    "uptime_s": 3723.4,
    "segments": [
        {"name": "lan", "vlan": 10, "vni": 10, "mtu": 1400, "macs": 3},
        {"name": "admin", "vlan": 200, "vni": 5000, "mtu": 1380, "macs": 12},
    ],
    "ports": [
        {
            "name": "vm1",
            "kind": "access",
            "device": "vm1",
            "segments": ["lan"],
            "rx_frames": 1,
            "tx_frames": 2,
            "rx_bytes": 100,
            "tx_bytes": 2000000,
        },
        {
            "name": "uplink",
            "kind": "trunk",
            "device": "eth1",
            "segments": ["lan", "admin"],
            "rx_frames": 12345,
            "tx_frames": 2,
            "rx_bytes": 1234567,
            "tx_bytes": 200,
        },
    ],
    "peers": [
        peer_up("rbx-db1"),
        {
            "name": "sbg-hv2",
            "public_key": "cXV4",
            "session": "handshaking",
            "endpoint": None,
            "via": "rbx-db1",
            "last_handshake_age": None,
            "rtt_ms": None,
            "loss": None,
            "rx_bytes": 0,
            "tx_bytes": 0,
            "rx_frames": 0,
            "tx_frames": 0,
            "paths": [],
        },
    ],
    "drops": {"replay": 3, "bad_mac1": 0},
    "counters": {"frames_in": 10, "flooded": 2},
    "udp": {"gso": True, "gro": False},
}

GOLDEN_STATUS = """\
network: acme
  node: gra-hv1
  public key: Zm9vYmFy
  listening port: 51820
  uptime: 1h 02m
  udp: gso=yes gro=no

segments:
  NAME   VLAN   VNI   MTU  MACS
  lan      10    10  1400     3
  admin   200  5000  1380    12

ports:
  NAME    KIND    DEVICE  SEGMENTS   RX FRAMES        RX  TX FRAMES        TX
  vm1     access  vm1     lan                1     100 B          2  1.91 MiB
  uplink  trunk   eth1    lan,admin      12345  1.18 MiB          2     200 B

peer: rbx-db1
  public key: YmFy
  session: up
  endpoint: 198.19.2.2:51820
  latest handshake: 4.2s ago
  rtt: 0.41 ms, loss 0.0%
  transfer: 1 B received, 2 B sent (1 / 2 frames)
  paths:
      ENDPOINT          STATE      RTT    LOSS
   *  198.19.2.2:51820  up     0.41 ms    0.0%
      [fd00::2]:51820   down         -  100.0%  learned

peer: sbg-hv2
  public key: cXV4
  session: handshaking
  endpoint: -
  via: rbx-db1
  latest handshake: never
  rtt: -, loss -
  transfer: 0 B received, 0 B sent (0 / 0 frames)

drops:
  replay  3
counters:
  frames_in  10
  flooded    2
"""

MACS: list[dict[str, object]] = [
    {
        "segment": "lan",
        "vlan": 10,
        "mac": "52:54:00:00:00:01",
        "where": "port vm1",
        "static": False,
        "age": 12.3,
    },
    {
        "segment": "admin",
        "vlan": 200,
        "mac": "52:54:00:00:00:02",
        "where": "peer rbx-db1",
        "static": True,
        "age": 0,
    },
]

GOLDEN_MACS = """\
SEGMENT  VLAN  MAC                WHERE         TYPE     AGE
lan        10  52:54:00:00:00:01  port vm1      learned  12s
admin     200  52:54:00:00:00:02  peer rbx-db1  static     -
"""


def test_status_golden() -> None:
    assert render_status(DOC) == GOLDEN_STATUS


def test_status_columns_are_aligned() -> None:
    lines = render_status(DOC).splitlines()
    seg = lines[lines.index("segments:") + 1 : lines.index("segments:") + 4]
    # right-aligned numeric columns end at the same offset on every row
    for header_word in ("VLAN", "VNI", "MTU", "MACS"):
        end = seg[0].index(header_word) + len(header_word)
        for row in seg[1:]:
            assert row[end - 1] != " "
            assert end == len(row) or row[end] == " "
    assert all(line == line.rstrip() for line in lines)


def test_status_of_empty_or_partial_document_does_not_crash() -> None:
    assert render_status({}) == (
        "network: -\n  node: -\n  public key: -\n  listening port: -\n  uptime: -\n\n"
        "segments: none\n\nports: none\n\npeers: none\n"
    )
    text = render_status({"peers": [{"name": "x", "paths": "garbage"}], "drops": {"a": 0}})
    assert "peer: x\n" in text
    assert "drops: none" in text


def test_macs_golden() -> None:
    assert render_macs(MACS) == GOLDEN_MACS


def test_macs_alternative_keys_and_empty() -> None:
    rows: list[dict[str, object]] = [
        {"segment": "lan", "mac": "52:54:00:00:00:03", "port": "vm2", "age_s": 75},
        {"segment": "lan", "mac": "52:54:00:00:00:04", "peer": "rbx-db1"},
    ]
    assert render_macs(rows) == (
        "SEGMENT  VLAN  MAC                WHERE         TYPE        AGE\n"
        "lan         -  52:54:00:00:00:03  port vm2      learned  1m 15s\n"
        "lan         -  52:54:00:00:00:04  peer rbx-db1  learned       -\n"
    )
    assert render_macs([]) == "no MAC addresses learned\n"


def test_formatters() -> None:
    assert [fmt_bytes(v) for v in (0, 1023, 1024, 1536, 5 * 2**30, None, "x")] == [
        "0 B",
        "1023 B",
        "1.00 KiB",
        "1.50 KiB",
        "5.00 GiB",
        "-",
        "-",
    ]
    assert [fmt_duration(v) for v in (0.25, 42, 187, 7500, 3 * 86400 + 7200, -1)] == [
        "0.2s",
        "42s",
        "3m 07s",
        "2h 05m",
        "3d 02h",
        "-",
    ]
    assert fmt_age(None) == "never"
    assert fmt_age(4.2) == "4.2s ago"
    assert fmt_rtt(0.414) == "0.41 ms"
    assert fmt_rtt(250.4) == "250 ms"
    assert fmt_loss(0.125) == "12.5%"
    assert fmt_loss(True) == "-"


def test_table_alignment() -> None:
    assert table(["A", "NUM"], [["xx", "1"], ["y", "100"]], frozenset({1}), "") == [
        "A   NUM",
        "xx    1",
        "y   100",
    ]
