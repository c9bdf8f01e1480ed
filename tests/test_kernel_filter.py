"""The kernel filter (lanspan/agent/nftables.py) without a kernel: golden ruleset text,
the receiver-index prefix's byte order, probing and fallbacks, and the counters (read
away from the loop), through a fake `nft`."""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Callable
from dataclasses import replace
from ipaddress import ip_network
from pathlib import Path

import pytest

from lanspan.agent.nftables import (
    DROP_REASONS,
    FilterSpec,
    KernelFilter,
    parse_counters,
    prefix_element,
    render,
    render_remove,
    table_name,
)
from lanspan.control.document import status_json, to_json
from lanspan.control.metrics import render_prometheus
from lanspan.control.render import render_status
from lanspan.wire import messages

DATA = Path(__file__).resolve().parent / "data"
FULL = FilterSpec(
    "acme-prod",
    51820,
    receiver_prefix=0x1A2B,
    vxlan_port=4789,
    underlay=(ip_network("198.18.0.0/24"), ip_network("fd00:1::/64")),
)


class FakeNft:
    """Records every call; answers from `refuse` (a substring of the script -> error)."""

    def __init__(self, refuse: tuple[str, ...] = (), tables: set[str] | None = None) -> None:
        self.calls: list[tuple[list[str], str | None]] = []
        self.refuse = refuse
        self.tables = tables if tables is not None else set()
        self.counters: dict[str, int] = {}

    def __call__(self, argv: list[str], stdin: str | None) -> tuple[int, str, str]:
        self.calls.append((argv, stdin))
        if stdin is not None and any(r in stdin for r in self.refuse):
            return 1, "", "Error: syntax error, unexpected something\nmore\n"
        if argv[1:3] == ["list", "table"]:
            return (0 if argv[-1] in self.tables else 1), "", ""
        if argv[1:3] == ["-j", "list"]:
            items = [{"metainfo": {"version": "1.0.6"}}] + [
                {
                    "counter": {
                        "family": "inet",
                        "name": k,
                        "table": argv[-1],
                        "packets": v,
                        "bytes": 64 * v,
                    }
                }
                for k, v in self.counters.items()
            ]
            return 0, json.dumps({"nftables": items}), ""
        return 0, "", ""

    def scripts(self) -> list[str]:
        return [s for argv, s in self.calls if argv[1:] == ["-f", "-"] and s is not None]


def start(
    fake: FakeNft,
    spec: FilterSpec = FULL,
    clock: list[float] | None = None,
    jobs: list[Callable[[], None]] | None = None,
) -> KernelFilter:
    """A filter on the fake; counter reads run at once, or wait in `jobs` when given."""
    t = clock if clock is not None else [0.0]
    kf = KernelFilter.start(
        spec,
        fake,
        which=lambda _: "/usr/sbin/nft",
        clock=lambda: t[0],
        spawn=(lambda job: job()) if jobs is None else jobs.append,
    )
    assert kf is not None
    return kf


def test_render_matches_golden_text() -> None:
    assert render(FULL) == (DATA / "kernel_filter.nft").read_text()
    plain = FilterSpec("acme", 51821, handshake_v6_prefix=False)
    assert render(plain) == (DATA / "kernel_filter_plain.nft").read_text()


def test_shapes_in_the_ruleset_are_the_wire_formats() -> None:
    text = render(FilterSpec("n", 1))
    for kind, length in (
        (messages.TYPE_INITIATION, messages.INITIATION_LEN),
        (messages.TYPE_RESPONSE, messages.RESPONSE_LEN),
        (messages.TYPE_COOKIE_REPLY, messages.COOKIE_REPLY_LEN),
    ):
        word = int.from_bytes(struct.pack("<I", kind), "big")
        assert f"@th,64,32 0x{word:08x} udp length {8 + length} jump handshake" in text
    assert f"udp length >= {8 + messages.MIN_TRANSPORT_LEN} jump transport" in text
    assert messages.MIN_TRANSPORT_LEN == 32


def test_table_names_are_sanitized() -> None:
    assert table_name("acme-prod.eu", 51820) == "lanspan_acme_prod_eu_51820"
    assert table_name("a b;}x", 1) == "lanspan_a_b__x_1"


def test_prefix_element_is_the_high_half_of_the_index_on_the_wire() -> None:
    for prefix in (0, 1, 0x1A2B, 0xFFFF, 0x8000):
        for low in (0, 0x0102, 0xFFFF):
            wire = messages.build(messages.TransportData(prefix << 16 | low, 7, bytes(16)))
            # @th,112,16: bytes 6-7 of the UDP payload (the index's last two), big-endian
            assert prefix_element(prefix) == int.from_bytes(wire[6:8], "big")
    assert prefix_element(0x1A2B) == 0x2B1A
    assert "@th,112,16 != 0x2b1a counter name unknown_receiver drop" in render(FULL)


def test_the_session_table_allocates_every_index_with_the_prefix() -> None:
    import random

    from lanspan.session import SessionTable

    rng = random.Random(3)
    t = SessionTable(
        rng.randbytes(32), random_bytes=rng.randbytes, wall_time=lambda: 0.0, index_prefix=0x1A2B
    )
    indexes = {t._new_index() for _ in range(500)}
    assert len(indexes) > 400 and all(i >> 16 == 0x1A2B for i in indexes)
    with pytest.raises(ValueError, match="index_prefix"):
        SessionTable(
            bytes(32), random_bytes=rng.randbytes, wall_time=lambda: 0.0, index_prefix=1 << 16
        )


def test_start_installs_and_logs_what_it_chose(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeNft()
    with caplog.at_level(logging.INFO, "lanspan.agent"):
        kf = start(fake)
    assert [argv[1:] for argv, _ in fake.calls] == [["-f", "-"]]  # one nft process
    assert fake.scripts() == [render(FULL)]
    assert kf.spec == FULL
    assert "kernel filter on: table inet lanspan_acme_prod_51820" in caplog.text
    assert "receiver index prefix" in caplog.text and "left out" not in caplog.text


def test_start_leaves_out_what_nft_cannot_express(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeNft(refuse=("@th,112,16",))
    with caplog.at_level(logging.INFO, "lanspan.agent"):
        kf = start(fake)
    assert kf.spec.receiver_prefix is None and kf.spec.handshake_v6_prefix
    assert "left out: receiver index prefix" in caplog.text
    assert fake.scripts() == [render(FULL), render(kf.spec)]  # the first one refused
    st = kf.status()
    assert st is not None and st.receiver_prefix is None


def test_start_replaces_a_leftover_table() -> None:
    fake = FakeNft(tables={FULL.table})
    start(fake)
    # one transaction: the (possibly leftover) table is deleted and the new one created
    [script] = fake.scripts()
    assert script.startswith(render_remove(FULL.table))


def test_missing_nft_is_said_once_and_names_the_package(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, "lanspan.agent"):
        kf = KernelFilter.start(FULL, FakeNft(), which=lambda _: None)
    assert kf is None
    [record] = caplog.records
    assert "nft not found" in record.message and "nftables" in record.message


def test_nft_refusing_everything_leaves_the_filter_off(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeNft(refuse=("table",))
    with caplog.at_level(logging.INFO, "lanspan.agent"):
        kf = KernelFilter.start(FULL, fake, which=lambda _: "/usr/sbin/nft")
    assert kf is None
    [record] = caplog.records
    assert "kernel filter off" in record.message and "syntax error" in record.message
    assert len(fake.scripts()) == 4  # each candidate tried once, each refused whole


def test_the_rule_never_changes_while_the_agent_runs() -> None:
    fake = FakeNft()
    kf = start(fake)
    for _ in range(5):
        kf.status()
    assert fake.scripts() == [render(FULL)]  # installed once; reads are not scripts
    assert not hasattr(kf, "sync")


def test_counters_are_read_at_most_once_a_second() -> None:
    fake = FakeNft()
    clock = [100.0]
    kf = start(fake, clock=clock)
    fake.counters = {"bad_shape": 5, "unknown_receiver": 2}
    st = kf.status()
    assert st is not None
    assert dict(st.drops) == {
        "kernel.bad_shape": 5,
        "kernel.handshake_rate": 0,
        "kernel.unknown_receiver": 2,
        "kernel.vxlan_outside_underlay": 0,
    }
    assert (st.table, st.receiver_prefix) == ("inet lanspan_acme_prod_51820", "0x1a2b")
    fake.counters["bad_shape"] = 9
    clock[0] += 0.5
    st = kf.status()
    assert st is not None and st.drops["kernel.bad_shape"] == 5  # cached
    clock[0] += 0.6
    st = kf.status()
    assert st is not None and st.drops["kernel.bad_shape"] == 9
    reads = [a for a, _ in fake.calls if a[1:3] == ["-j", "list"]]
    assert len(reads) == 2


def test_a_status_never_waits_for_the_counter_read() -> None:
    fake = FakeNft()
    clock = [100.0]
    jobs: list[Callable[[], None]] = []
    kf = start(fake, clock=clock, jobs=jobs)
    fake.counters = {"bad_shape": 5}
    st = kf.status()
    assert st is not None and st.drops["kernel.bad_shape"] == 0  # the read is under way
    assert len(jobs) == 1
    clock[0] += 5.0
    kf.status()
    assert len(jobs) == 1  # one read at a time
    jobs.pop()()
    st = kf.status()
    assert st is not None and st.drops["kernel.bad_shape"] == 5
    assert len(jobs) == 1  # stale again: the next read started


def test_every_counter_has_a_drop_rule_and_a_reason() -> None:
    text = render(FULL)
    for name, reason in DROP_REASONS.items():
        assert f"counter {name} {{}}" in text and f"counter name {name} drop" in text
        assert reason == f"kernel.{name}"


def test_parse_counters_tolerates_junk() -> None:
    assert parse_counters("not json") == {}
    assert parse_counters('{"nftables": 3}') == {}
    assert parse_counters("[1]") == {}
    assert parse_counters('{"nftables": [{"counter": {"name": "x", "packets": 4}}, 5]}') == {"x": 4}


def test_close_removes_the_table_once() -> None:
    fake = FakeNft()
    kf = start(fake)
    kf.close()
    kf.close()
    assert fake.scripts()[1:] == [render_remove(kf.table)]


def test_show_and_metrics_report_kernel_drops() -> None:
    from lanspan.node.status import Counts, KernelFilterStatus

    st = KernelFilterStatus("inet lanspan_t_1", "0x1a2b", Counts.of({"kernel.bad_shape": 12}))
    doc = {"node": "n1", "network": "t", "drops": {}, "kernel_filter": to_json(st)}
    text = render_status(doc)
    assert "kernel filter: inet lanspan_t_1 (receiver prefix 0x1a2b)" in text
    assert "kernel drops:" in text and "kernel.bad_shape" in text
    prom = render_prometheus(doc)
    assert 'lanspan_kernel_drops_total{reason="kernel.bad_shape"} 12' in prom


def test_status_document_leaves_the_filter_out_when_off() -> None:
    from lanspan.config import encode_key, generate_private_key, parse_network, public_key
    from lanspan.node.core import NodeCore

    key = generate_private_key()
    text = (
        '[network]\nname = "t"\n[[segment]]\nname = "lan"\nvlan = 10\n[[node]]\nname = "n1"\n'
        f'site = "s"\npublic_key = "{encode_key(public_key(key))}"\n'
        'endpoints = ["198.18.0.1:51820"]\nsegments = ["lan"]\n'
    )
    node = NodeCore(
        parse_network(text, "t.toml"), "n1", key,
        random_bytes=lambda n: bytes(n), wall_time=lambda: 0.0, now=0.0,
    )  # fmt: skip
    assert node.receiver_indexes() == frozenset()
    assert "kernel_filter" not in status_json(node.status(1.0))


def test_plain_vxlan_is_filtered_only_with_the_kernel_plane_on_a_trusted_site() -> None:
    from test_kernel_config import SITE, net_with

    from lanspan.agent.loop import _filter_spec
    from lanspan.config import parse_network

    net = parse_network(net_with(SITE), "net.toml")
    spec = _filter_spec(net, "gra-hv1", 51820, kernel_vxlan=True, prefix=7)
    assert spec.receiver_prefix == 7
    assert (spec.vxlan_port, spec.underlay) == (4790, (ip_network("198.19.1.0/24"),))
    assert "udp dport 4790 ip saddr 198.19.1.0/24 accept" in render(spec)
    text = render(spec)
    accept = text.index("udp dport 4790 ip saddr 198.19.1.0/24 accept")
    drop = text.index("udp dport 4790 counter name vxlan_outside_underlay drop")
    # first in the input chain: VXLAN from the underlay is accepted before anything else
    assert accept < drop < text.index("udp dport 51820 jump mesh")
    two = replace(spec, underlay=(ip_network("198.19.1.0/24"), ip_network("198.19.2.0/24")))
    assert "udp dport 4790 ip saddr { 198.19.1.0/24, 198.19.2.0/24 } accept" in render(two)
    assert _filter_spec(net, "gra-hv1", 51820, kernel_vxlan=False, prefix=7).vxlan_port is None
    assert _filter_spec(net, "rbx-db1", 51820, kernel_vxlan=True, prefix=7).vxlan_port is None
