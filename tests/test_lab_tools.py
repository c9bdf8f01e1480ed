"""Missing programs are named once, with their Debian package, before the lab starts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from lanspan.lab import netns, tools
from lanspan.lab.commands import lab
from lanspan.lab.model import load_lab

ROOT = Path(__file__).resolve().parent.parent


def test_problem_names_each_missing_program_and_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    msg = tools.problem(["nft", "iperf3", "ping", "nft"], "lanspan lab test")
    assert msg == (
        "lanspan lab test needs nft (Debian package nftables), iperf3 (Debian package iperf3), "
        "ping (Debian package iputils-ping), not found on PATH: "
        "apt-get install nftables iperf3 iputils-ping"
    )


def test_nothing_missing_is_no_problem() -> None:
    assert tools.problem(["sh"], "x") is None


def test_needs_follow_the_lab() -> None:
    small = load_lab(ROOT / "examples" / "small.toml")
    nat = load_lab(ROOT / "examples" / "hubs-nat.toml")
    assert tools.for_up(small) == ["ip"]
    assert "nft" in tools.for_up(nat)
    assert {"ping", "iperf3", "nft"} <= set(tools.for_test(small))
    assert "nft" not in tools.for_test(small, faults=False)


def test_lab_up_without_nft_names_the_package_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0:
        pytest.skip("lab up checks root first")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    res = CliRunner().invoke(
        lab,
        ["up", str(ROOT / "examples" / "hubs-nat.toml"), "--run-dir", str(tmp_path / "run")],
        env={"PATH": str(bin_dir)},
    )
    assert res.exit_code == 1, res.output
    assert res.output.count("nft (Debian package nftables)") == 1, res.output
    assert "ip (Debian package iproute2)" in res.output
    assert "exec of" not in res.output
    assert not (tmp_path / "run").exists()  # nothing made


def test_a_program_missing_inside_a_run_is_named_with_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(netns.NetnsError) as e:
        netns.run(["nft", "list", "tables"])
    assert (
        str(e.value) == "nft is not installed (Debian package nftables: apt-get install nftables)"
    )
