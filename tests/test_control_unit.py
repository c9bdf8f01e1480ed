"""packaging/lanspan@.service: parses as INI, runs the right command, is hardened."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "packaging" / "lanspan@.service"


def load() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def values(section: str, key: str) -> list[str]:
    """Every value of a key systemd allows to repeat (configparser keeps only the last)."""
    found: list[str] = []
    current = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            continue
        name, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {raw!r}"
        assert not value.endswith("\\"), "no continuation lines expected"
        if current == section and name.strip() == key:
            found.append(value.strip())
    return found


def test_sections() -> None:
    assert load().sections() == ["Unit", "Service", "Install"]


def test_exec_and_lifecycle() -> None:
    svc = load()["Service"]
    assert svc["ExecStart"] == (
        "/usr/bin/env lanspan agent --network /etc/lanspan/%i.toml --node ${LANSPAN_NODE} "
        "--key /etc/lanspan/%i.key --control /run/lanspan/%i.sock"
    )
    assert svc["EnvironmentFile"] == "/etc/lanspan/%i.env"
    assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert svc["Restart"] == "on-failure"
    assert svc["RuntimeDirectory"] == "lanspan"
    # several instances share /run/lanspan: one stopping must not delete the others' sockets
    assert svc["RuntimeDirectoryPreserve"] == "yes"
    assert load()["Install"]["WantedBy"] == "multi-user.target"


def test_hardening() -> None:
    svc = load()["Service"]
    assert set(svc["CapabilityBoundingSet"].split()) == {"CAP_NET_ADMIN", "CAP_NET_RAW"}
    assert set(svc["AmbientCapabilities"].split()) == {"CAP_NET_ADMIN", "CAP_NET_RAW"}
    assert svc["NoNewPrivileges"] == "yes"
    assert svc["ProtectSystem"] == "strict"
    assert svc["ProtectHome"] == "yes"
    assert svc["PrivateTmp"] == "yes"
    assert svc["DevicePolicy"] == "closed"
    assert values("Service", "DeviceAllow") == ["/dev/net/tun rw"]
    assert set(svc["RestrictAddressFamilies"].split()) == {
        "AF_UNIX",
        "AF_INET",
        "AF_INET6",
        "AF_NETLINK",
        "AF_PACKET",
    }
    assert "PrivateDevices" not in svc  # it would hide /dev/net/tun
    assert values("Service", "SystemCallFilter")[0] == "@system-service"


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze not installed")
    unit = tmp_path / "lanspan@acme.service"
    unit.write_text(UNIT.read_text())
    proc = subprocess.run(
        [exe, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    if "Failed to" in proc.stderr and "bus" in proc.stderr.lower():
        pytest.skip(f"systemd-analyze cannot run here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr
