"""The lab file bench/scale generates loads and has the shape issue 10 asks for (pure)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from lanspan.lab.model import load_lab
from lanspan.lab.topology import expand

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _scale_lab() -> ModuleType:
    spec = importlib.util.spec_from_file_location("scale_lab", BENCH / "scale_lab.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("scale_lab", mod)
    spec.loader.exec_module(mod)
    return mod


scale_lab = _scale_lab()


def test_hundred_nodes_load_with_the_shape_of_the_issue(tmp_path: Path) -> None:
    spec = scale_lab.generate(100)
    path = tmp_path / "scale100.toml"
    path.write_text(spec.text)
    lab = load_lab(path)

    assert len(lab.node) == 100
    assert len(lab.site) >= 10
    assert len(lab.segment) == 2
    per_site = {s.name: [n for n in lab.node if n.site == s.name] for s in lab.site}
    assert max(len(v) for v in per_site.values()) <= 63
    nat = [s for s in lab.site if s.nat]
    assert len(nat) >= 2
    assert sum(len(per_site[s.name]) for s in nat) >= 6  # several NAT'd nodes, several sites
    dual = [s for s in lab.site if s.uplinks == 2]
    assert len(dual) == 1 and len(per_site[dual[0].name]) >= 3
    public = [s for s in lab.site if not s.nat]
    assert len(public) >= 3  # hubs for the NAT'd sites, a third site to relay a block
    # every node carries both segments; guests sample every site and both segments
    assert all(set(lab.node_segments(n)) == {"lan", "api"} for n in lab.node)
    guest_sites = {lab.node_by_name(g.node).site for g in lab.guest}
    assert guest_sites == set(per_site)
    assert {g.segment for g in lab.guest} == {"lan", "api"}
    assert any(lab.node_by_name(g.node).site == dual[0].name for g in lab.guest)
    assert any(lab.node_by_name(g.node).site in {s.name for s in nat} for g in lab.guest)
    # the faults the benchmark reads back
    kinds = {f.name: f.kind for f in lab.fault}
    assert kinds == {
        scale_lab.FAULT_CUT: "cut-uplink",
        scale_lab.FAULT_BLOCK: "block",
        scale_lab.FAULT_COLD: "cold-start",
    }
    cut = next(f for f in lab.fault if f.name == scale_lab.FAULT_CUT)
    assert cut.site == dual[0].name and cut.uplink == "active"
    assert cut.probe is not None
    assert lab.node_by_name(lab.guest_by_name(cut.probe.target).node).site == dual[0].name
    block = next(f for f in lab.fault if f.name == scale_lab.FAULT_BLOCK)
    assert block.sites is not None and block.probe is not None
    src = lab.node_by_name(lab.guest_by_name(block.probe.source).node).site
    dst = lab.node_by_name(lab.guest_by_name(block.probe.target).node).site
    assert (src, dst) == block.sites  # the probe crosses the blocked pair
    # the expansion accepts it: unique addresses, one namespace per site, node and guest
    plan = expand(lab, "lsl-t", {n.name: "" for n in lab.node})
    assert len(plan.namespaces) == 1 + len(lab.site) + 100 + len(lab.guest)
    addrs = [a for g in plan.guests for i in g.interfaces for a in i.addresses]
    assert len(addrs) == len(set(addrs)) == len(lab.guest)


@pytest.mark.parametrize("nodes", [4, 12, 32, 63 * 4])
def test_other_sizes_load(tmp_path: Path, nodes: int) -> None:
    spec = scale_lab.generate(nodes)
    path = tmp_path / "lab.toml"
    path.write_text(spec.text)
    lab = load_lab(path)
    assert len(lab.node) == nodes == spec.nodes
    assert len(lab.site) == scale_lab.default_sites(nodes) >= 4
    assert any(s.uplinks == 2 for s in lab.site) and any(s.nat for s in lab.site)


def test_without_faults_and_impossible_sizes(tmp_path: Path) -> None:
    spec = scale_lab.generate(12, faults=False)
    path = tmp_path / "lab.toml"
    path.write_text(spec.text)
    assert load_lab(path).fault == ()
    with pytest.raises(ValueError, match="at most 63"):
        scale_lab.generate(64 * 4, 4)
    with pytest.raises(ValueError, match="one node per site"):
        scale_lab.generate(5, 6)
    with pytest.raises(ValueError, match="sites must be"):
        scale_lab.generate(12, 3)


def test_expected_sessions_leave_out_nat_to_nat_pairs() -> None:
    spec = scale_lab.generate(12)
    peers = spec.expected_peers()
    nat = {n for s in spec.nat_sites for n in spec.sites[s]}
    assert len(nat) == 3 and len(peers) == 12
    for n, ps in peers.items():
        assert n not in ps
        assert ps == (set(peers) - {n} - (nat if n in nat else set()))
