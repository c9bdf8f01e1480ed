"""The lab's trusted sites (pure): the network file it writes, and what the agents choose."""

from __future__ import annotations

from pathlib import Path

import pytest

from lanspan.agent.kernel_plane import choose_planes
from lanspan.config import encode_key, generate_private_key, parse_network, public_key
from lanspan.dataplane.kernel_probe import Feature, KernelCapabilities
from lanspan.errors import ConfigError
from lanspan.lab.model import load_lab, parse_lab
from lanspan.lab.topology import expand

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "trusted-site.toml"


def full() -> KernelCapabilities:
    caps = KernelCapabilities.unavailable(None, "")
    return KernelCapabilities(
        **{f.name: Feature(f.name, True) for f in caps.features()}  # type: ignore[arg-type]
    )


def test_a_trusted_lab_site_becomes_a_trusted_site_with_the_labs_own_prefix() -> None:
    lab = load_lab(EXAMPLE)
    keys = {n.name: encode_key(public_key(generate_private_key())) for n in lab.node}
    plan = expand(lab, "lsl-t", keys)
    text = plan.network_toml
    gra = plan.site("gra")
    assert '[[site]]\nname = "gra"\ntrusted = true\nunderlay = ["198.19.1.0/24"]\n' in text
    assert gra.prefixes() == ("198.19.1.0/24",)
    assert 'name = "rbx"\ntrusted' not in text  # rbx is not trusted: no [[site]] for it
    net = parse_network(text, "lab.toml")
    for n in ("gra-hv1", "gra-hv2", "gra-hv3"):
        planes = {c.segment: c for c in choose_planes(net, n, full)}
        want_api = "kernel" if n == "gra-hv1" else None
        assert planes["lan"].plane == "kernel", planes
        if want_api is None:
            assert "api" not in planes
        else:  # only gra-hv1 carries api in gra: userspace, and it says why
            assert planes["api"].plane == "userspace"
            assert planes["api"].reason == "no other member of site gra carries it"
    assert {c.plane for c in choose_planes(net, "rbx-hv1", full)} == {"userspace"}


def test_a_trusted_site_behind_nat_is_refused() -> None:
    data = {
        "lab": {"name": "t"},
        "segment": [{"name": "lan", "vlan": 10, "ipv4": "198.18.10.0/24"}],
        "site": [{"name": "gra", "trusted": True, "nat": True}],
        "node": [{"name": "gra-hv1", "site": "gra"}],
    }
    with pytest.raises(ConfigError) as e:
        parse_lab(data, "t.toml")
    assert "trusted site cannot be behind NAT" in str(e.value.render())
