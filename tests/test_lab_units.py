"""Pure parts of the lab: probe outage, impairer decisions, report, CLI errors."""

from __future__ import annotations

import base64
import ipaddress
import os
import struct
import sys
import xml.dom.minidom
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from lanspan.lab import checks, report
from lanspan.lab.commands import lab
from lanspan.lab.impair import routes_of
from lanspan.lab.inside.impairer import VNET_LEN, Impairer, Route
from lanspan.lab.model import Impairment, load_lab
from lanspan.lab.probe import outage
from lanspan.lab.topology import expand

ROOT = Path(__file__).resolve().parent.parent


def test_outage_is_longest_unanswered_run() -> None:
    answered = set(range(1, 101)) - set(range(20, 31)) - {50, 51}
    assert outage(answered, 100, 10.0) == (110.0, 130.0)
    assert outage(set(range(1, 11)), 10, 10.0) == (0.0, 0.0)
    assert outage(set(), 5, 10.0) == (50.0, 50.0)
    assert outage(set(range(1, 6)), 8, 10.0) == (30.0, 30.0)  # not back at the end


def _plan() -> Any:
    lab_ = load_lab(ROOT / "examples" / "three-datacenters.toml")
    keys = {n.name: base64.b64encode(bytes(32)).decode() for n in lab_.node}
    return expand(lab_, "p", keys)


def _frame(src: str, dst: str, payload: bytes = b"x" * 40) -> bytes:
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45, 0, 20 + 8 + len(payload), 0, 0, 64, 17, 0,
        ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed,
    )  # fmt: skip
    udp = struct.pack("!HHHH", 51820, 51820, 8 + len(payload), 0)
    eth = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"
    return bytes(VNET_LEN) + eth + ip + udp + payload


class FakeImpairer(Impairer):
    def __init__(self, imp: Impairment, seed: int = 1) -> None:
        plan = _plan()
        routes = []
        for r in routes_of(plan):
            net, ifname, mac = r.split("=")
            routes.append(
                Route(ipaddress.IPv4Network(net), ifname, bytes.fromhex(mac.replace(":", "")))
            )
        own = {s.core_if: bytes.fromhex(s.core_mac.replace(":", "")) for s in plan.sites}
        super().__init__(routes, {"to-rbx": imp}, seed, own_macs=own)
        self.sent: list[tuple[str, bytes]] = []

    def send(self, ifname: str, data: bytes) -> None:
        self.sent.append((ifname, data))

    def flush(self, now: float = 1e9) -> None:
        while self.queue:
            import heapq

            _, _, ifname, data = heapq.heappop(self.queue)
            self.send(ifname, data)


def test_impairer_forwards_only_what_crosses_the_impaired_uplink() -> None:
    imp = FakeImpairer(Impairment(delay_ms=10))
    imp.handle("to-gra", _frame("198.19.1.2", "198.19.2.2"), now=0.0)  # gra -> rbx: impaired
    imp.handle("to-gra", _frame("198.19.1.2", "198.19.3.2"), now=0.0)  # gra -> sbg: kernel's
    imp.handle("to-rbx", _frame("198.19.2.2", "198.19.3.2"), now=0.0)  # rbx -> sbg: impaired
    assert [q[0] for q in imp.queue] == [0.01, 0.01]
    imp.flush()
    out = dict(imp.sent)
    assert set(out) == {"to-rbx", "to-sbg"}
    plan = _plan()
    rbx = plan.site("rbx")
    frame = out["to-rbx"][VNET_LEN:]
    assert frame[0:6] == bytes.fromhex(rbx.router_mac.replace(":", ""))
    assert frame[6:12] == bytes.fromhex(rbx.core_mac.replace(":", ""))
    assert frame[12:] == _frame("198.19.1.2", "198.19.2.2")[VNET_LEN + 12 :]


def test_impairer_loss_duplicate_corrupt_reorder_rates() -> None:
    n = 4000
    for field, check in (
        ("loss", lambda imp: n - len(imp.sent)),
        ("duplicate", lambda imp: len(imp.sent) - n),
        ("corrupt", lambda imp: sum(1 for _, d in imp.sent if d[-40:] != b"x" * 40)),
        ("reorder", lambda imp: imp.counts["reordered"]),
    ):
        imp = FakeImpairer(Impairment(**{field: 10.0}), seed=7)
        for k in range(n):
            imp.handle("to-gra", _frame("198.19.1.2", "198.19.2.2"), now=k * 0.001)
        for direction in list(imp.held):
            _, (ifname, data, _) = direction, imp.held.pop(direction)
            imp.schedule(1e9, ifname, data)
        imp.flush()
        got = check(imp)
        assert 0.07 * n < got < 0.13 * n, (field, got)


def _result(passed: bool) -> dict[str, Any]:
    plan = _plan()
    return {
        "lab": "three-dc",
        "passed": passed,
        "checks": [
            {"name": "lan: a -> b", "kind": "reachability", "passed": True, "detail": "answers"},
            {"name": "lan -/-> api <x>", "kind": "isolation", "passed": passed, "detail": "&"},
        ],
        "faults": [
            {
                "name": "cut-gra",
                "kind": "cut-uplink",
                "outage_ms": 1100.0,
                "recovery_ms": 12.0,
                "recovered": True,
                "interval_ms": 10.0,
                "timeline": [1] * 100 + [0] * 110 + [1] * 90,
                "markers": {"fault": 1000.0, "cleared": 2000.0, "recovered": 2120.0},
            }
        ],
        "topology": plan.to_json(),
    }


def test_report_is_html_with_wellformed_svg(tmp_path: Path) -> None:
    page = report.render(_result(False))
    assert page.startswith("<!doctype html>") and "FAILED" in page
    svgs = page.split("<svg")[1:]
    assert len(svgs) == 2
    for s in svgs:
        xml.dom.minidom.parseString("<svg" + s.split("</svg>")[0] + "</svg>")
    for name in ("gra-hv1", "sbg-db", "internet core", "cut-gra"):
        assert name in page
    assert "&lt;x&gt;" in page  # escaped


def test_table_says_what_failed() -> None:
    t = checks.table(_result(False))
    assert "FAIL" in t and "FAILED (1 failing)" in t and "1100" in t
    assert checks.table(_result(True)).endswith("PASSED")


def test_cli_refuses_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    res = CliRunner().invoke(lab, ["up", str(ROOT / "examples" / "small.toml")])
    assert res.exit_code == 1
    assert "needs root" in res.output
    assert "Traceback" not in res.output


def test_cli_names_the_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[lab]\nname = "x"\n')
    res = CliRunner().invoke(lab, ["status", str(bad)])
    assert res.exit_code == 1
    assert str(bad) in res.output and "segment: missing" in res.output


def test_netem_arguments() -> None:
    from lanspan.lab.impair import netem_args

    imp = Impairment(delay_ms=30, jitter_ms=10, duplicate=2, reorder=5, corrupt=1, loss=3)
    assert netem_args(imp) == [
        "delay", "30.0ms", "10.0ms", "loss", "3.0%", "duplicate", "2.0%",
        "reorder", "5.0%", "corrupt", "1.0%",
    ]  # fmt: skip
    assert netem_args(Impairment(reorder=5)) == ["delay", "1.0ms", "reorder", "5.0%"]


def test_impairments_of_two_uplinks_add_up() -> None:
    imp = FakeImpairer(Impairment(delay_ms=10))
    imp.impaired["to-sbg"] = Impairment(delay_ms=5)
    imp.handle("to-rbx", _frame("198.19.2.2", "198.19.3.2"), now=0.0)  # rbx -> sbg: both
    imp.handle("to-gra", _frame("198.19.1.2", "198.19.3.2"), now=0.0)  # gra -> sbg: sbg only
    assert sorted(round(q[0], 3) for q in imp.queue) == [0.005, 0.015]


def test_probe_window_statistics() -> None:
    from lanspan.lab.probe import ProbeResult, window

    r = ProbeResult(
        source="a",
        target="b",
        interval_ms=10.0,
        sent=100,
        received=90,
        outage_ms=100.0,
        lost_ms_total=100.0,
        timeline=[1] * 50 + [0] * 10 + [1] * 40,
        rtt_ms={s: (1.0 if s <= 50 else 30.0) for s in range(1, 101) if not 51 <= s <= 60},
    )
    assert window(r, 0, 500) == {"loss_pct": 0.0, "rtt_ms_median": 1.0}
    assert window(r, 500, 1000) == {"loss_pct": 20.0, "rtt_ms_median": 30.0}


def test_the_lab_byte_compiles_lanspan_before_it_starts_agents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With PYTHONDONTWRITEBYTECODE (or an edited tree) every agent would compile the
    stale modules at each start: CPU an installed agent never spends (issue 10)."""
    import importlib.util

    from lanspan.lab import runner

    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text("X = 1\n")
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    cached = Path(importlib.util.cache_from_source(str(pkg / "mod.py")))
    assert not cached.exists()
    assert runner.compile_package(pkg)
    assert cached.exists()
    src = Path(runner.__file__).read_text()
    build = src[src.index("    def _build(") : src.index("    def _validate_network(")]
    assert build.index("compile_package()") < build.index("self.start_agents(")


def test_all_pairs_probers_share_a_bounded_echo_rate() -> None:
    """Every pair at 50 Hz up to PAIRS_RATE echoes a second in all, then slower: 198
    pairs at 100 nodes sent ~10 000 a second through the agents they measured."""
    from lanspan.lab.probe import PAIRS_INTERVAL, PAIRS_RATE, pairs_interval

    assert pairs_interval(1) == pairs_interval(20) == PAIRS_INTERVAL
    for pairs in (26, 40, 198, 1000):
        assert pairs / pairs_interval(pairs) <= PAIRS_RATE + 1e-6
    assert pairs_interval(26) < 0.03  # the examples' largest check: ~40 echoes a second
    assert pairs_interval(198) <= 0.2  # still five echoes a second per pair
