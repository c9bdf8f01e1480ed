"""The gateway services adapter, without namespaces: packages, FIFO, reload decisions."""

from __future__ import annotations

import os
import selectors
from pathlib import Path

import pytest

from lanspan.agent import services
from lanspan.agent.services import GatewayServices, MissingPackage
from lanspan.config import parse_network

BASE = (Path(__file__).parent / "data" / "config" / "gateways.toml").read_text()
NET = parse_network(BASE, "gateways.toml")


def test_missing_binary_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services.shutil, "which", lambda *a, **k: None)
    svc = GatewayServices(NET, "gra-gw1", Path("/nonexistent"))
    with pytest.raises(MissingPackage) as ei:
        svc.check_packages(NET)
    assert ei.value.package == "keepalived"
    assert "apt-get install keepalived" in str(ei.value)
    monkeypatch.setattr(services.shutil, "which", lambda b, **k: None if b == "dnsmasq" else b)
    with pytest.raises(MissingPackage) as ei:
        svc.check_packages(NET)
    assert "apt-get install dnsmasq-base" in str(ei.value)
    # a node that holds nothing needs nothing
    plain = parse_network(
        BASE.replace('nodes = ["gra-hv1", "rbx-gw1"]', 'nodes = ["rbx-gw1"]'), "x"
    )
    GatewayServices(plain, "gra-hv1", Path("/nonexistent")).check_packages(plain)


def test_fifo_reports_reach_the_tracker(tmp_path: Path) -> None:
    svc = GatewayServices(NET, "gra-hv1", tmp_path)  # holds floating "web" only, no DHCP
    sel = selectors.DefaultSelector()
    svc._sel = sel
    svc.tracker.reset(("fl_web",))
    svc._open_fifo()
    try:
        w = os.open(tmp_path / "vrrp.fifo", os.O_WRONLY | os.O_NONBLOCK)
        os.write(w, b'INSTANCE "fl_web" BACKUP 250\nINSTANCE "fl_web" MAS')
        os.write(w, b"TER 250\n")
        os.close(w)  # keepalived closing its end is no end of file for us
        for _ in range(3):
            for key, mask in sel.select(0.2):
                key.data(mask)
        assert svc.tracker.states["fl_web"][0] == "master"
        assert svc.status().instances[0].state == "master"
        assert not sel.select(0.05)  # no busy loop once keepalived's writer is gone
    finally:
        svc._close_fifo()
        sel.close()
    assert not (tmp_path / "vrrp.fifo").exists()
