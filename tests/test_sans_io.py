"""The protocol and switching cores import no I/O: they are driven with an injected clock."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = ("config", "wire", "noise", "session", "switch", "node", "gateway")
FORBIDDEN = {"socket", "asyncio", "os", "time", "select", "selectors", "subprocess", "threading"}
# Reading the network file and checking a key file's mode is the config package's I/O edge.
ALLOWED = {"lanspan/config/load.py": {"os"}, "lanspan/config/keys.py": {"os"}}

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", CORE)
def test_core_package_imports_no_io(package: str) -> None:
    files = sorted((ROOT / "lanspan" / package).glob("*.py"))
    assert files, f"lanspan/{package} has no modules"
    for f in files:
        rel = str(f.relative_to(ROOT))
        bad = (imported_modules(f) & FORBIDDEN) - ALLOWED.get(rel, set())
        assert not bad, f"{rel} imports {sorted(bad)}"
