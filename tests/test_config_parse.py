"""The network file loader: every rule, and the exact message each one gives."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path

import pytest

from lanspan.config import (
    AccessPort,
    Endpoint,
    HostPort,
    Network,
    TrunkPort,
    decode_key,
    load_network,
    parse_endpoint,
    parse_network,
)
from lanspan.errors import ConfigError

DATA = Path(__file__).parent / "data" / "config"
BASE = (DATA / "base.toml").read_text()
KEY_A = "sGC8mXFbN0Wf+S6UUw7wh3Cy9p7Ldu6Bo9dHOZAZ6Ws="
KEY_B = "Bzrs0s0Cr2bmJPFOeHGjJ0CkT9jTIu0DphlN3NOuXg8="
assert KEY_A in BASE and KEY_B in BASE


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        parse_network(text, "net.toml")
    assert ei.value.source == "net.toml"
    return ei.value.problems


def edit(old: str, new: str, count: int = 1) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, count)


def bad(old: str, new: str, count: int = 1) -> list[str]:
    return problems(edit(old, new, count))


# ------------------------------------------------------------------ valid


def test_base_builds_the_model() -> None:
    net = parse_network(BASE, "net.toml")
    assert isinstance(net, Network)
    assert (net.name, net.port, net.cipher, net.mac_ageing) == ("acme", 51820, "aesgcm", 300.0)
    lan, api = net.segments
    assert lan.ipv4 == IPv4Network("198.18.10.0/24")
    assert lan.ipv6 == IPv6Network("fd00:10::/64")
    assert lan.gateway == IPv4Address("198.18.10.1")
    assert (api.vlan, api.vni, api.mtu, api.ipv6) == (11, 11, 1400, None)
    hv1 = net.node("gra-hv1")
    assert hv1.public_key == decode_key(KEY_A)
    assert hv1.endpoints == (
        Endpoint(IPv4Address("198.19.1.2"), 51820),
        Endpoint(IPv6Address("fd00:1::2"), 51820),
    )
    assert hv1.port("vm1") == AccessPort("vm1", "lan", "vm1", create=True)
    assert hv1.port("vm2") == AccessPort("vm2", "api", "veth-vm2", create=False)
    assert hv1.port("uplink") == TrunkPort("uplink", "eth1", False, (10, 11), 10)
    host = hv1.port("lan0")
    assert isinstance(host, HostPort)
    assert host.device == "ls-lan"
    assert host.addresses[0] == IPv4Interface("198.18.10.11/24")
    assert net.node("rbx-db1").relay is False
    assert net.static_macs[0].mac == bytes.fromhex("02aa00000001")
    assert net.timers.probe_multiplier == 3


def test_example_file_is_valid() -> None:
    example = Path(__file__).parent.parent / "examples" / "network.toml"
    net = load_network(example)
    assert net.name == "acme"
    assert len({n.public_key for n in net.nodes}) == len(net.nodes)


def test_defaults() -> None:
    net = parse_network(
        f"""
        [network]
        name = "n"
        [[segment]]
        name = "lan"
        vlan = 7
        [[node]]
        name = "a"
        site = "s"
        public_key = "{KEY_A}"
        segments = ["lan"]
        [[node.port]]
        kind = "access"
        name = "p"
        segment = "lan"
        [[node.port]]
        kind = "host"
        name = "h"
        segment = "lan"
        """,
        "x",
    )
    assert (net.port, net.cipher, net.mac_ageing) == (51820, "aesgcm", 300.0)
    assert net.segments[0].vni == 7
    a = net.node("a")
    assert a.endpoints == () and a.relay is True and a.listen_port is None
    assert a.port("p") == AccessPort("p", "lan", "p", create=True)
    assert a.port("h") == HostPort("h", "lan", "ls-lan")


def test_host_tap_default_is_truncated() -> None:
    text = edit('name = "api"', 'name = "api-production"')
    text = text.replace('segments = ["lan", "api"]', 'segments = ["lan", "api-production"]')
    text = text.replace('segment = "api"', 'segment = "api-production"')
    text = text.replace(
        '  [[node.port]]\n  kind = "host"\n  name = "lan0"',
        '  [[node.port]]\n  kind = "host"\n  name = "api0"\n  segment = "api-production"\n'
        '  address = ["198.18.11.5/24"]\n\n'
        '  [[node.port]]\n  kind = "host"\n  name = "lan0"',
        1,
    )
    net = parse_network(text, "x")
    assert net.node("gra-hv1").port("api0").device == "ls-api-producti"


# ------------------------------------------------------------------ syntax and schema


def test_toml_syntax_error_has_line_and_column() -> None:
    assert bad('name = "acme"', 'name = "acme"\nname = "x"') == [
        "line 4, column 11: invalid TOML: Cannot overwrite a value"
    ]
    assert problems('[network]\nname = "x"\nport = = 3\n') == [
        "line 3, column 8: invalid TOML: Invalid value"
    ]


def test_toml_error_at_end_of_file() -> None:
    (msg,) = problems('[network]\nname = "unterminated')
    assert msg.startswith("invalid TOML: Unterminated string")
    assert "at the end of the file" in msg


def test_unknown_field_with_suggestion() -> None:
    assert bad('endpoints = ["198.19.2.2:51820"]', 'endpoint = ["198.19.2.2:51820"]') == [
        'node "rbx-db1": unknown field "endpoint" — did you mean "endpoints"?'
    ]
    assert bad("[network.timers]", "[network.timer]") == [
        '[network]: unknown field "timer" — did you mean "timers"?'
    ]
    assert bad("keepalive = 10.0", "keepalife = 10.0") == [
        '[network] timers: unknown field "keepalife" — did you mean "keepalive"?'
    ]
    assert bad("[[static_mac]]", "[[static_macs]]") == [
        'unknown top-level field "static_macs" — did you mean "static_mac"?'
    ]


def test_unknown_field_in_port() -> None:
    assert bad("native_vlan = 10", "native_vlan = 10\n  untagged = 10") == [
        'node "gra-hv1" port "uplink": unknown field "untagged" (known fields: kind, name, '
        "vlans, native_vlan, tap, interface, mac_limit, flood_rate)"
    ]


def test_missing_required_fields() -> None:
    assert bad('site = "rbx"\n', "") == ['node "rbx-db1": missing required field "site"']
    assert bad('name = "acme"\n', "") == ['[network]: missing required field "name"']
    assert bad("[network]\nname", "[networks]\nname") == [
        'unknown top-level field "networks" — did you mean "network"?',
        '[network]: missing required field "name"',  # [network.timers] still opens [network]
    ]
    assert problems("") == ['missing the [network] table — add [network] with name = "..."']


def test_missing_field_in_unnamed_segment() -> None:
    # references to the unnamed segment then fail too: they really name no segment
    assert bad('name = "api"\n', "")[0] == 'segment[1]: missing required field "name"'


def test_wrong_types_are_described_without_pydantic_jargon() -> None:
    msgs = bad("vlan = 10", 'vlan = "10"') + bad("relay = false", 'relay = "no"')
    assert msgs == [
        'segment "lan" vlan: expected an integer, got "10" (a string)',
        'node "rbx-db1" relay: expected true or false, got "no" (a string)',
    ]
    for m in msgs:
        assert "Input should" not in m and "pydantic" not in m


def test_wrong_type_in_list_names_the_index() -> None:
    assert bad("vlans = [10, 11]", 'vlans = [10, "11"]') == [
        'node "gra-hv1" port "uplink" vlans[1]: expected an integer, got "11" (a string)'
    ]


def test_list_expected() -> None:
    assert bad('endpoints = ["198.19.2.2:51820"]', 'endpoints = "198.19.2.2:51820"') == [
        'node "rbx-db1" endpoints: expected a list, got "198.19.2.2:51820" (a string)'
        ' — write ["198.19.2.2:51820"]'
    ]
    assert bad(
        '  [[node.port]]\n  kind = "host"\n  name = "lan0"\n  segment = "lan"\n'
        '  address = ["198.18.10.21/24"]',
        '  [node.port]\n  kind = "host"',
    ) == [
        'node "rbx-db1" port: expected a list, got {kind = "host"} (a table)'
        " — write one [[node.port]] table per entry"
    ]


def test_single_table_instead_of_array() -> None:
    text = BASE.split("[[node]]")[0].replace("[[segment]]", "[segment]", 1)
    text = text.replace('[[segment]]\nname = "api"\nvlan = 11\nipv4 = "198.18.11.0/24"\n', "")
    assert problems(text) == [
        '"segment" must be written [[segment]] (one per segment), not [segment]'
    ]


def test_every_problem_is_reported() -> None:
    text = edit("vlan = 11", "vlan = 5000")
    text = text.replace('cipher = "aesgcm"', 'cipher = "des"')
    text = text.replace('"198.19.2.2:51820"', '"198.19.2.2"')
    text = text.replace('mac = "02:aa:00:00:00:01"', 'mac = "ff:ff:ff:ff:ff:ff"')
    assert problems(text) == [
        '[network] cipher: "des" is not a cipher — use "aesgcm" or "chachapoly"',
        'segment "api" vlan: 5000 is outside 1..4094 (802.1Q VLAN ids)',
        'node "gra-hv1" port "uplink" vlans[1]: 11 is not the VLAN of any segment '
        '(10 "lan", 5000 "api")',
        'node "rbx-db1" endpoints[0]: "198.19.2.2" has no port — write "198.19.2.2:51820" '
        'or "[fd00::1]:51820"',
        'static_mac[0] mac: "ff:ff:ff:ff:ff:ff" is a multicast/broadcast MAC (odd first byte)'
        ' — use a unicast one, e.g. "02:aa:00:00:00:01"',
    ]


# ------------------------------------------------------------------ [network]


def test_bad_cipher() -> None:
    assert bad('cipher = "aesgcm"', 'cipher = "aes"') == [
        '[network] cipher: "aes" is not a cipher — use "aesgcm" or "chachapoly"'
    ]


def test_chachapoly_cipher_accepted() -> None:
    assert parse_network(edit('"aesgcm"', '"chachapoly"'), "x").cipher == "chachapoly"


@pytest.mark.parametrize(
    ("old", "new", "msg"),
    [
        ("keepalive = 10.0", "keepalive = 0", "[network] timers.keepalive: 0.0"),
        ("hold_down = 2.0", "hold_down = -1.0", "[network] timers.hold_down: -1.0"),
        ("probe_interval = 0.2", "probe_interval = inf", "[network] timers.probe_interval: inf"),
        ("mac_ageing = 300", "mac_ageing = -5", "[network] mac_ageing: -5.0"),
    ],
)
def test_timers_must_be_positive(old: str, new: str, msg: str) -> None:
    assert bad(old, new) == [f"{msg} must be a positive number of seconds"]


def test_probe_multiplier_at_least_one() -> None:
    assert bad("probe_multiplier = 3", "probe_multiplier = 0") == [
        "[network] timers.probe_multiplier: 0 must be 1 or more"
    ]


def test_network_port_range() -> None:
    assert bad("port = 51820", "port = 0") == ["[network] port: 0 is outside 1..65535"]
    assert bad("port = 51820", "port = 65536") == ["[network] port: 65536 is outside 1..65535"]


# ------------------------------------------------------------------ [[segment]]


@pytest.mark.parametrize("vlan", [0, 4095, -1])
def test_vlan_range(vlan: int) -> None:
    text = edit("vlan = 11", f"vlan = {vlan}").replace("vlans = [10, 11]", "vlans = [10]")
    assert problems(text) == [f'segment "api" vlan: {vlan} is outside 1..4094 (802.1Q VLAN ids)']


@pytest.mark.parametrize("vni", [0, 16777216])
def test_vni_range(vni: int) -> None:
    assert bad("vni = 10", f"vni = {vni}") == [
        f'segment "lan" vni: {vni} is outside 1..16777215 (24-bit VNI)'
    ]


def test_vni_max_accepted() -> None:
    assert parse_network(edit("vni = 10", "vni = 16777215"), "x").segments[0].vni == 16777215


def test_duplicate_vlan() -> None:
    assert bad("vlan = 11", "vlan = 10") == [
        'segment "api" vlan: 10 is already used by segment "lan"',
        # and no segment has VLAN 11 any more
        'node "gra-hv1" port "uplink" vlans[1]: 11 is not the VLAN of any segment (10 "lan")',
    ]


def test_duplicate_vni_explicit_and_defaulted() -> None:
    assert bad("vni = 10", "vni = 11") == [
        'segment "api" vni (defaults to the vlan): 11 is already used by segment "lan"'
        " — give each segment its own vni"
    ]


def test_duplicate_segment_name() -> None:
    msgs = bad('name = "api"', 'name = "lan"')
    assert msgs[0] == (
        'segment[1] name: "lan" is already used by segment[0] — segment names must be unique'
    )


@pytest.mark.parametrize(
    ("old", "new", "msg"),
    [
        (
            'ipv4 = "198.18.11.0/24"',
            'ipv4 = "198.18.10.128/25"',
            'segment "api" ipv4: 198.18.10.128/25 overlaps 198.18.10.0/24 of segment "lan"',
        ),
        (
            'ipv4 = "198.18.11.0/24"',
            'ipv4 = "198.18.11.0/24"\nipv6 = "fd00:10::/56"',
            'segment "api" ipv6: fd00:10::/56 overlaps fd00:10::/64 of segment "lan"',
        ),
    ],
)
def test_overlapping_subnets(old: str, new: str, msg: str) -> None:
    assert bad(old, new) == [msg]


@pytest.mark.parametrize(
    ("value", "msg"),
    [
        ('"198.18.11.1/24"', '"198.18.11.1/24" has host bits set — did you mean "198.18.11.0/24"?'),
        ('"198.18.11.0"', '"198.18.11.0" has no prefix length — write e.g. "198.18.10.0/24"'),
        ('"fd00:11::/64"', '"fd00:11::/64" is an IPv6 subnet — put it in ipv6'),
        ('"lan/24"', '"lan/24" is not a subnet — write e.g. "198.18.10.0/24"'),
    ],
)
def test_bad_subnet(value: str, msg: str) -> None:
    text = edit('ipv4 = "198.18.11.0/24"', f"ipv4 = {value}")
    assert problems(text) == [f'segment "api" ipv4: {msg}']


@pytest.mark.parametrize(("mtu", "ok"), [(575, False), (576, True), (9000, True), (9001, False)])
def test_mtu_range(mtu: int, ok: bool) -> None:
    text = edit("vlan = 11", f"vlan = 11\nmtu = {mtu}")
    if ok:
        assert parse_network(text, "x").segment("api").mtu == mtu
    else:
        assert problems(text) == [f'segment "api" mtu: {mtu} is outside 576..9000']


def test_ipv6_segment_needs_mtu_1280() -> None:
    assert bad("mtu = 1400", "mtu = 1279") == [
        'segment "lan" mtu: 1279 is below 1280, which IPv6 requires'
    ]


def test_gateway_outside_subnet_or_family_missing() -> None:
    assert bad('gateway = "198.18.10.1"', 'gateway = "198.18.11.1"') == [
        'segment "lan" gateway: 198.18.11.1 is outside the segment\'s ipv4 198.18.10.0/24'
    ]
    assert bad('ipv4 = "198.18.11.0/24"', 'ipv4 = "198.18.11.0/24"\ngateway = "fd00::1"') == [
        'segment "api" gateway: fd00::1 needs the segment\'s ipv6 subnet — add ipv6 = ...'
    ]
    assert bad('gateway = "198.18.10.1"', 'gateway = "router"') == [
        'segment "lan" gateway: "router" is not an IP address'
    ]


def test_bad_segment_name() -> None:
    assert bad('name = "api"', 'name = "api net"', 1)[0] == (
        'segment[1] name: "api net" is not a valid name (start with a letter or digit; '
        "then letters, digits, '-', '_', '.')"
    )


# ------------------------------------------------------------------ [[node]]


def test_duplicate_node_name() -> None:
    assert bad('name = "rbx-db1"', 'name = "gra-hv1"') == [
        'node[1] name: "gra-hv1" is already used by node[0] — node names must be unique'
    ]


@pytest.mark.parametrize(
    ("key", "why"),
    [
        (
            "not a key!",
            "not valid base64 (a key is 44 characters of A-Z a-z 0-9 + / ending in '=')",
        ),
        (KEY_B[:40], "decodes to 30 bytes, a key is 32 (44 base64 characters ending in '=')"),
    ],
)
def test_bad_public_key(key: str, why: str) -> None:
    assert bad(KEY_B, key) == [
        f'node "rbx-db1" public_key: "{key}" is not a public key: {why}'
        " — print one with `lanspan pubkey < private.key`"
    ]


def test_duplicate_public_key() -> None:
    assert bad(KEY_B, KEY_A) == [
        'node "rbx-db1" public_key: same key as node "gra-hv1" — every node needs its own key '
        "(lanspan genkey)"
    ]


@pytest.mark.parametrize(
    ("endpoint", "msg"),
    [
        ("1.2.3.4", '"1.2.3.4" has no port — write "1.2.3.4:51820" or "[fd00::1]:51820"'),
        ("[fd00::1]", '"[fd00::1]" has no port — write "[fd00::1]:51820"'),
        ("fd00::1", '"fd00::1" needs brackets and a port — write "[fd00::1]:51820"'),
        (
            "gw.example.com:51820",
            '"gw.example.com:51820": hostnames are not accepted, use an address — '
            'write "1.2.3.4:51820" or "[fd00::1]:51820"',
        ),
        ("1.2.3.4:70000", '"1.2.3.4:70000": port 70000 is outside 1..65535'),
        ("1.2.3.4:0", '"1.2.3.4:0": port 0 is outside 1..65535'),
        ("1.2.3.4:http", '"1.2.3.4:http": port "http" is not a number'),
        (
            "[fd00::zz]:1",
            '"fd00::zz" is not an IPv6 address — write "[fd00::1]:51820" or "1.2.3.4:51820"',
        ),
        (
            "1.2.3:5",
            '"1.2.3:5" is not an address:port — write "1.2.3.4:51820" or "[fd00::1]:51820"',
        ),
        (
            "0.0.0.0:5",
            '"0.0.0.0:5": 0.0.0.0 cannot be a peer\'s address (unspecified or multicast)',
        ),
    ],
)
def test_bad_endpoint(endpoint: str, msg: str) -> None:
    assert bad('"198.19.2.2:51820"', f'"{endpoint}"') == [f'node "rbx-db1" endpoints[0]: {msg}']


def test_endpoint_parsing() -> None:
    assert parse_endpoint("[fd00::1]:1") == Endpoint(IPv6Address("fd00::1"), 1)
    assert parse_endpoint("1.2.3.4:65535") == Endpoint(IPv4Address("1.2.3.4"), 65535)
    assert str(parse_endpoint("[fd00::1]:1")) == "[fd00::1]:1"


def test_duplicate_endpoint() -> None:
    assert bad('"[fd00:1::2]:51820"', '"198.19.1.2:51820"') == [
        'node "gra-hv1" endpoints[1]: "198.19.1.2:51820" is listed twice'
    ]


def test_listen_port_range() -> None:
    assert bad("relay = false", "relay = false\nlisten_port = 70000") == [
        'node "rbx-db1" listen_port: 70000 is outside 1..65535'
    ]


def test_node_in_unknown_segment() -> None:
    assert bad('segments = ["lan"]', 'segments = ["lan", "lna"]') == [
        'node "rbx-db1" segments[1]: "lna" is not a defined segment — did you mean "lan"?'
    ]


def test_port_in_segment_node_does_not_carry() -> None:
    assert bad('segments = ["lan", "api"]', 'segments = ["lan"]') == [
        'node "gra-hv1" port "vm2" segment: "api" is not carried by node "gra-hv1"'
        " — add it to the node's segments",
        'node "gra-hv1" port "uplink" vlans[1]: 11 is segment "api", which node "gra-hv1" '
        'does not carry — add "api" to its segments',
    ]


def test_port_in_unknown_segment() -> None:
    assert bad('segment = "api"\n  interface', 'segment = "lab"\n  interface') == [
        'node "gra-hv1" port "vm2" segment: "lab" is not a defined segment — did you mean "lan"?'
    ]


def test_trunk_unknown_vlan_and_native() -> None:
    assert bad("vlans = [10, 11]", "vlans = [10, 12]") == [
        'node "gra-hv1" port "uplink" vlans[1]: 12 is not the VLAN of any segment '
        '(10 "lan", 11 "api")'
    ]
    text = edit("vlans = [10, 11]", "vlans = [11]")
    assert problems(text) == [
        'node "gra-hv1" port "uplink" native_vlan: 10 is not in vlans [11] — add it to vlans'
    ]


def test_trunk_duplicate_and_empty_vlans() -> None:
    assert bad("vlans = [10, 11]", "vlans = [10, 11, 10]") == [
        'node "gra-hv1" port "uplink" vlans[2]: 10 is listed twice'
    ]
    assert bad("vlans = [10, 11]\n  native_vlan = 10", "vlans = []") == [
        'node "gra-hv1" port "uplink" vlans: the list is empty — list the VLAN ids this trunk '
        "carries"
    ]


def test_duplicate_port_name_and_device() -> None:
    assert bad('name = "vm2"', 'name = "vm1"') == [
        'node "gra-hv1" port[1] name: "vm1" is already used by port[0] on this node'
    ]
    assert bad('interface = "veth-vm2"', 'interface = "vm1"') == [
        'node "gra-hv1" port "vm2": device "vm1" is already used by node "gra-hv1" port "vm1"'
        " — give each port its own device"
    ]


def test_default_device_names_collide() -> None:
    # a second host port in "lan" gets the same default TAP "ls-lan"
    text = edit(
        '  address = ["198.18.10.21/24"]',
        '  address = ["198.18.10.21/24"]\n\n  [[node.port]]\n  kind = "host"\n'
        '  name = "lan1"\n  segment = "lan"\n',
    )
    assert problems(text) == [
        'node "rbx-db1" port "lan1": device "ls-lan" is already used by node "rbx-db1" port '
        '"lan0" — give each port its own device'
    ]


@pytest.mark.parametrize(
    ("dev", "why"),
    [
        ("veth-vm2-abcdefghij", "is 19 characters long; Linux allows at most 15"),
        ("veth vm2", "is not a valid interface name (use letters, digits, '-', '_' or '.')"),
        ("eth0/1", "is not a valid interface name (use letters, digits, '-', '_' or '.')"),
        ("..", "is not a valid interface name (use letters, digits, '-', '_' or '.')"),
        ("", "is empty"),
    ],
)
def test_bad_interface_name(dev: str, why: str) -> None:
    assert bad('interface = "veth-vm2"', f'interface = "{dev}"') == [
        f'node "gra-hv1" port "vm2" interface: device "{dev}" {why}'
    ]


def test_default_tap_from_long_port_name() -> None:
    text = edit(
        'name = "vm1"\n  segment = "lan"\n  tap = "vm1"',
        'name = "vm1-long-port-name"\n  segment = "lan"',
    )
    text = text.replace('port = "vm1"', 'port = "vm1-long-port-name"')
    assert problems(text) == [
        'node "gra-hv1" port "vm1-long-port-name" name: device name "vm1-long-port-name" is 18 '
        'characters long; Linux allows at most 15 — set tap = "..." to a valid device name'
    ]


def test_tap_and_interface_are_exclusive() -> None:
    assert bad('tap = "vm1"', 'tap = "vm1"\n  interface = "eth9"') == [
        'node "gra-hv1" port "vm1": give either tap (a TAP lanspan creates) or interface '
        "(an existing device), not both"
    ]


def test_bad_port_kind() -> None:
    assert bad('kind = "access"', 'kind = "acess"') == [
        'node "gra-hv1" port "vm1" kind: "acess" is not a port kind — did you mean "access"?'
    ]
    assert bad('kind = "access"\n', "") == [
        'node "gra-hv1" port "vm1": missing required field "kind" (access, trunk or host)'
    ]


def test_host_port_takes_no_interface() -> None:
    msgs = bad(
        'name = "lan0"\n  segment = "lan"\n  address = ["198.18.10.21/24"]',
        'name = "lan0"\n  segment = "lan"\n  interface = "eth0"',
    )
    assert msgs == [
        'node "rbx-db1" port "lan0": unknown field "interface" (known fields: kind, name, '
        "segment, address, tap, mac)"
    ]


@pytest.mark.parametrize(
    ("addr", "msg"),
    [
        ("198.18.11.21/24", '198.18.11.21 is outside 198.18.10.0/24 of segment "lan"'),
        (
            "198.18.10.21/16",
            'prefix /16 differs from 198.18.10.0/24 of segment "lan" — write "198.18.10.21/24"',
        ),
        (
            "198.18.10.21",
            '"198.18.10.21" has no prefix length — write it with the segment\'s prefix, '
            'e.g. "198.18.10.11/24"',
        ),
        ("198.18.10.255/24", "198.18.10.255 is the network or broadcast address of 198.18.10.0/24"),
        ("banana/24", '"banana/24" is not an address — write e.g. "198.18.10.11/24"'),
    ],
)
def test_host_address_must_fit_segment(addr: str, msg: str) -> None:
    assert bad('["198.18.10.21/24"]', f'["{addr}"]') == [
        f'node "rbx-db1" port "lan0" address[0]: {msg}'
    ]


def test_host_address_family_without_subnet() -> None:
    text = edit('segments = ["lan"]', 'segments = ["lan", "api"]')
    text = text.replace(
        'segment = "lan"\n  address = ["198.18.10.21/24"]',
        'segment = "api"\n  address = ["fd00:11::5/64"]',
    )
    assert problems(text) == [
        'node "rbx-db1" port "lan0" address[0]: fd00:11::5/64 is IPv6 but segment "api" has no '
        "ipv6 subnet — add ipv6 = ... to the segment"
    ]


def test_duplicate_host_address() -> None:
    assert bad('["198.18.10.21/24"]', '["198.18.10.11/24"]') == [
        'node "rbx-db1" port "lan0" address[0]: 198.18.10.11 is already used by '
        'node "gra-hv1" port "lan0" address[0]'
    ]


def test_host_mac() -> None:
    ok = edit(
        'address = ["198.18.10.21/24"]',
        'address = ["198.18.10.21/24"]\n  mac = "02:00:00:00:00:09"',
    )
    assert parse_network(ok, "x").node("rbx-db1").port("lan0").mac == bytes.fromhex("020000000009")  # type: ignore[union-attr]
    assert bad(
        'address = ["198.18.10.21/24"]',
        'address = ["198.18.10.21/24"]\n  mac = "03:00:00:00:00:09"',
    ) == [
        'node "rbx-db1" port "lan0" mac: "03:00:00:00:00:09" is a multicast/broadcast MAC (odd '
        'first byte) — use a unicast one, e.g. "02:aa:00:00:00:01"'
    ]


# ------------------------------------------------------------------ [[static_mac]]


@pytest.mark.parametrize(
    ("old", "new", "msg"),
    [
        (
            'mac = "02:aa:00:00:00:01"',
            'mac = "02:aa:00:00:00"',
            'static_mac[0] mac: "02:aa:00:00:00" is not a MAC address — write e.g. '
            '"02:aa:00:00:00:01"',
        ),
        (
            'mac = "02:aa:00:00:00:01"',
            'mac = "01:00:5e:00:00:01"',
            'static_mac[0] mac: "01:00:5e:00:00:01" is a multicast/broadcast MAC (odd first byte)'
            ' — use a unicast one, e.g. "02:aa:00:00:00:01"',
        ),
        (
            'node = "gra-hv1"\nport',
            'node = "gra-hv9"\nport',
            'static_mac[0] node: "gra-hv9" is not a defined node — did you mean "gra-hv1"?',
        ),
        (
            'port = "vm1"',
            'port = "vm9"',
            'static_mac[0] port: "vm9" is not a port of node "gra-hv1" — did you mean "vm2"?',
        ),
        (
            'port = "vm1"',
            'port = "vm2"',
            'static_mac[0] port: port "vm2" of node "gra-hv1" is not in segment "lan"',
        ),
        (
            'node = "gra-hv1"\nport = "vm1"',
            'node = "rbx-db1"\nport = "lan0"\nsegment_ = 1',
            'static_mac[0]: unknown field "segment_" — did you mean "segment"?',
        ),
    ],
)
def test_bad_static_mac(old: str, new: str, msg: str) -> None:
    assert bad(old, new) == [msg]


def test_static_mac_segment_not_carried() -> None:
    text = BASE + '\n[[static_mac]]\nsegment = "api"\nmac = "02:aa:00:00:00:02"\nnode = "rbx-db1"\n'
    assert problems(text) == ['static_mac[1] segment: "api" is not carried by node "rbx-db1"']


def test_static_mac_on_trunk_and_duplicate() -> None:
    extra = (
        '\n[[static_mac]]\nsegment = "api"\nmac = "02:aa:00:00:00:02"\n'
        'node = "gra-hv1"\nport = "uplink"\n'
    )
    net = parse_network(BASE + extra, "x")
    assert net.static_macs[1].port == "uplink"
    dup = extra.replace("api", "lan").replace(":02", ":01")
    assert problems(BASE + dup) == [
        'static_mac[1] mac: "02:aa:00:00:00:01" is already pinned by static_mac[0]'
    ]


# ------------------------------------------------------------------ load_network


def test_load_network_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as ei:
        load_network(missing)
    assert (ei.value.source, ei.value.problems) == (str(missing), ["no such file"])
    with pytest.raises(ConfigError) as ei:
        load_network(tmp_path)
    assert ei.value.problems == ["is a directory, not a network file"]
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b'[network]\nname = "a\xff"\n')
    with pytest.raises(ConfigError) as ei:
        load_network(binary)
    assert ei.value.problems == [
        "line 2, column 10: byte 0xff is not UTF-8 — save the file as UTF-8 text"
    ]


def test_load_network_accepts_bom(tmp_path: Path) -> None:
    p = tmp_path / "n.toml"
    p.write_bytes(b"\xef\xbb\xbf" + BASE.encode())
    assert load_network(p).name == "acme"


def test_load_network_reports_path_as_source(tmp_path: Path) -> None:
    p = tmp_path / "n.toml"
    p.write_text(BASE.replace("vlan = 11", "vlan = 0"))
    with pytest.raises(ConfigError) as ei:
        load_network(p)
    assert ei.value.source == str(p)
    assert str(ei.value).startswith(f'{p}: segment "api" vlan: 0 is outside 1..4094')


def test_a_preloaded_file_is_parsed_once_while_its_bytes_stay_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lanspan.config import load

    p = tmp_path / "n.toml"
    p.write_text(BASE)
    monkeypatch.setattr(load, "_PRELOADED", {})
    load.preload_network(p)
    parsed: list[str] = []
    real = load.parse_network

    def counting(text: str, source: str) -> Network:
        parsed.append(source)
        return real(text, source)

    monkeypatch.setattr(load, "parse_network", counting)
    first = load_network(p)
    assert load_network(p) is first and parsed == []  # the lab launcher's children
    p.write_text(BASE.replace('name = "acme"', 'name = "acme2"'))
    assert load_network(p).name == "acme2" and parsed == [str(p)]  # changed: read afresh
    p.write_text(BASE.replace("vlan = 11", "vlan = 0"))
    with pytest.raises(ConfigError):  # and judged afresh
        load_network(p)
    bad = tmp_path / "bad.toml"
    bad.write_text("[network\n")
    load.preload_network(bad)  # a file with a problem is not kept; its load says why
    assert str(bad) not in load._PRELOADED
    with pytest.raises(ConfigError):
        load_network(bad)


# ------------------------------------------------------------------ nothing hidden


def test_a_type_error_does_not_hide_the_tables_other_problems() -> None:
    text = edit("[network.timers]", "[network.timers]\nturbo = true")
    text = text.replace("port = 51820", "port = 0").replace("keepalive = 10.0", "keepalive = -1")
    text = text.replace("relay = false", 'relay = "no"').replace(
        '"198.19.2.2:51820"', '"198.19.2.2"'
    )
    assert problems(text) == [
        '[network] timers: unknown field "turbo" (known fields: keepalive, probe_interval, '
        "probe_multiplier, hold_down)",
        "[network] port: 0 is outside 1..65535",
        "[network] timers.keepalive: -1.0 must be a positive number of seconds",
        'node "rbx-db1" relay: expected true or false, got "no" (a string)',
        'node "rbx-db1" endpoints[0]: "198.19.2.2" has no port — write "198.19.2.2:51820" or '
        '"[fd00::1]:51820"',
    ]


def test_duplicates_are_named_by_index() -> None:
    text = edit('name = "rbx-db1"', 'name = "gra-hv1"')
    text = text.replace('["198.18.10.21/24"]', '["198.18.10.11/24"]')
    assert problems(text) == [
        'node[1] name: "gra-hv1" is already used by node[0] — node names must be unique',
        'node[1] port "lan0" address[0]: 198.18.10.11 is already used by node "gra-hv1" '
        'port "lan0" address[0]',
    ]


def test_same_address_twice_on_one_port() -> None:
    assert bad('["198.18.10.21/24"]', '["198.18.10.21/24", "198.18.10.21/24"]') == [
        'node "rbx-db1" port "lan0" address[1]: 198.18.10.21 is already used by '
        'node "rbx-db1" port "lan0" address[0]'
    ]
