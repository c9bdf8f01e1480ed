"""The layers of lanspan, held by one table: which part may import which.

Every import in the package counts: module level, lazy ones inside
functions, `if TYPE_CHECKING:` blocks and `importlib.import_module("...")`
with a literal name. A failure names the file, the line and the import.

    cli                      the command line, on top of everything
    lab                      namespaces, checks, faults (runs real agents)
    agent                    composes: node core + dataplane adapters + control servers
    control                  control socket, show, metrics: typed status at the edge
    dataplane                I/O adapters (TAP, AF_PACKET, UDP): wire formats only
    node                     the composing core (pure)
    session  switch          per-peer state machine; VLAN-aware switch (pure)
    noise    wire   config   Noise on `cryptography`; byte formats; the network file (pure)
    lanspan (version), errors, addr, records, logs: leaves

The pure layers also import no I/O from the standard library (sans-IO,
as tests/test_sans_io.py has it), and no package has an import cycle
between its own modules.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "lanspan"

# Leaves everyone may import: the version (lanspan/__init__), the exception
# classes, the one address type and `record` (lanspan's dataclass decorator).
# An entry names a module or a package (the package entry covers its modules);
# `lanspan` itself means only its __init__.
LEAVES = ("lanspan", "lanspan.errors", "lanspan.addr", "lanspan.records")
PURE_BELOW_NODE = (
    "lanspan.wire",
    "lanspan.noise",
    "lanspan.session",
    "lanspan.switch",
    "lanspan.config.model",
    "lanspan.gateway",
)
EVERYTHING_PURE = (*PURE_BELOW_NODE, "lanspan.node")

LAYERS: dict[str, tuple[str, ...]] = {
    # leaves
    "lanspan": (),
    "lanspan.errors": (),
    "lanspan.records": (),
    "lanspan.addr": ("lanspan.errors", "lanspan.records"),
    "lanspan.logs": ("lanspan.records",),
    # pure cores: config and wire are independent bases (neither imports the other)
    "lanspan.config": LEAVES,
    "lanspan.wire": LEAVES,
    # noise and session take the one cipher type from the network model
    "lanspan.noise": (*LEAVES, "lanspan.config.model"),
    "lanspan.session": (*LEAVES, "lanspan.wire", "lanspan.noise", "lanspan.config.model"),
    # renderers of keepalived/dnsmasq/nftables configuration from the model (pure)
    "lanspan.gateway": (*LEAVES, "lanspan.config.model"),
    # the switch reads the network model, never the loader
    "lanspan.switch": (*LEAVES, "lanspan.wire", "lanspan.config.model"),
    "lanspan.node": (*LEAVES, *PURE_BELOW_NODE),
    # adapters: wire formats and leaves; nothing of node, control, agent, config
    "lanspan.dataplane": (*LEAVES, "lanspan.logs", "lanspan.wire"),
    # control renders the core's typed status; it reaches the agent only
    # through the interface it declares (StatusSource), never by import
    "lanspan.control": (*LEAVES, "lanspan.logs", *EVERYTHING_PURE),
    # the agent composes everything below it
    "lanspan.agent": (
        *LEAVES,
        "lanspan.logs",
        "lanspan.config",
        *EVERYTHING_PURE,
        "lanspan.dataplane",
        "lanspan.control",
    ),
    # the lab is on top: it may use any layer (it runs agents as processes)
    "lanspan.lab": (
        *LEAVES,
        "lanspan.logs",
        "lanspan.config",
        *EVERYTHING_PURE,
        "lanspan.dataplane",
        "lanspan.control",
        "lanspan.agent",
    ),
    "lanspan.cli": (
        *LEAVES,
        "lanspan.logs",
        "lanspan.config",
        "lanspan.control",
        "lanspan.agent",
        "lanspan.lab",
    ),
    # the entry: click's group, or straight to the agent's click-free start (issue 10)
    "lanspan.__main__": ("lanspan.cli", "lanspan.agent"),
}

# Sans-IO: the pure layers import none of these (lazily neither).
PURE = ("config", "wire", "noise", "session", "switch", "node", "gateway")
IO_MODULES = frozenset(
    {"socket", "asyncio", "os", "time", "select", "selectors", "subprocess", "threading"}
)
# Reading the network file and checking a key file's mode is the config package's I/O edge.
IO_ALLOWED = {"lanspan/config/load.py": {"os"}, "lanspan/config/keys.py": {"os"}}


@dataclass(frozen=True)
class Import:
    file: Path
    line: int
    text: str  # the statement as written
    target: str  # the module it loads, as specific as the tree tells


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def unit_of(name: str) -> str:
    """The row of the table a module belongs to: lanspan, or lanspan.<first part>."""
    parts = name.split(".")
    return ".".join(parts[:2])


def _resolve_from(src: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = src.split(".")
    if not is_pkg:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports(path: Path, text: str | None = None) -> Iterator[Import]:
    """Every import in `path` (or in `text`, read as if it were `path`), lazy ones included."""
    src = module_name(path)
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text() if text is None else text, str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield Import(path, node.lineno, ast.unparse(node), a.name)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(src, is_pkg, node)
            for a in node.names:
                sub = f"{base}.{a.name}"
                target = sub if base.startswith("lanspan") and is_module(sub) else base
                yield Import(path, node.lineno, ast.unparse(node), target)
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id == "__import__")
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield Import(path, node.lineno, ast.unparse(node), node.args[0].value)


def package_files() -> list[Path]:
    return sorted(PKG.rglob("*.py"))


def allowed(unit: str, target: str) -> bool:
    if unit_of(target) == unit:
        return True
    for entry in LAYERS[unit]:
        if entry == "lanspan":
            if target == "lanspan":
                return True
        elif target == entry or target.startswith(entry + "."):
            return True
    return False


def where(imp: Import) -> str:
    return f"{imp.file.relative_to(ROOT)}:{imp.line}: {imp.text}"


def test_every_module_has_a_row() -> None:
    missing = sorted(
        str(f.relative_to(ROOT)) for f in package_files() if unit_of(module_name(f)) not in LAYERS
    )
    assert not missing, f"modules in no row of the layer table (add one): {missing}"


def test_table_is_layered() -> None:
    """The table itself has no cycle between rows (so no import cycle across packages)."""
    deps = {u: {unit_of(e) for e in es} - {u} for u, es in LAYERS.items()}
    assert all(d in LAYERS for ds in deps.values() for d in ds)
    done: set[str] = set()

    def visit(u: str, stack: tuple[str, ...]) -> None:
        assert u not in stack, f"the layer table has a cycle: {' -> '.join((*stack, u))}"
        if u in done:
            return
        for d in sorted(deps[u]):
            visit(d, (*stack, u))
        done.add(u)

    for u in LAYERS:
        visit(u, ())


@pytest.mark.parametrize("unit", sorted(LAYERS))
def test_imports_follow_the_table(unit: str) -> None:
    bad = [
        f"{where(imp)}  ({unit} may not import {imp.target})"
        for f in package_files()
        if unit_of(module_name(f)) == unit
        for imp in imports(f)
        if imp.target.split(".")[0] == "lanspan" and not allowed(unit, imp.target)
    ]
    assert not bad, "imports against the layer table:\n" + "\n".join(bad)


@pytest.mark.parametrize("package", PURE)
def test_pure_layers_import_no_io(package: str) -> None:
    files = sorted((PKG / package).rglob("*.py"))
    assert files, f"lanspan/{package} has no modules"
    bad = []
    for f in files:
        rel = str(f.relative_to(ROOT))
        for imp in imports(f):
            top = imp.target.split(".")[0]
            if top in IO_MODULES and top not in IO_ALLOWED.get(rel, set()):
                bad.append(where(imp))
    assert not bad, "I/O imported by a sans-IO layer:\n" + "\n".join(bad)


def test_sans_io_rule_is_the_same_here_and_in_test_sans_io() -> None:
    import test_sans_io

    assert set(test_sans_io.CORE) == set(PURE)
    assert test_sans_io.FORBIDDEN == IO_MODULES
    assert test_sans_io.ALLOWED == IO_ALLOWED
    assert {f"lanspan.{p}" for p in PURE} <= set(LAYERS)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


@pytest.mark.parametrize("unit", sorted(u for u in LAYERS if (PKG / u[8:]).is_dir()))
def test_no_import_cycle_inside_a_package(unit: str) -> None:
    edges: dict[str, set[str]] = {}
    seen: dict[tuple[str, str], Import] = {}
    for f in package_files():
        src = module_name(f)
        if unit_of(src) != unit:
            continue
        edges.setdefault(src, set())
        for imp in imports(f):
            if unit_of(imp.target) == unit and imp.target != src and is_module(imp.target):
                edges[src].add(imp.target)
                seen.setdefault((src, imp.target), imp)
    problems = []
    for comp in _cycles(edges):
        members = set(comp)
        lines = [where(i) for (a, b), i in sorted(seen.items()) if a in members and b in members]
        problems.append(f"cycle between {', '.join(comp)}:\n  " + "\n  ".join(lines))
    assert not problems, "\n".join(problems)


def test_the_checker_sees_lazy_and_type_checking_imports() -> None:
    """The walker finds imports wherever they are written (a test of the test)."""
    text = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from lanspan.node.core import NodeCore\n"
        "def f() -> None:\n"
        "    from ..control import server\n"
        "    import importlib\n"
        "    importlib.import_module('lanspan.agent.loop')\n"
        "    from lanspan.wire import vnet\n"
    )
    found = imports(PKG / "dataplane" / "udp.py", text)
    bad = [
        (i.line, i.target)
        for i in found
        if i.target.startswith("lanspan") and not allowed("lanspan.dataplane", i.target)
    ]
    assert bad == [
        (3, "lanspan.node.core"),
        (5, "lanspan.control.server"),
        (7, "lanspan.agent.loop"),
    ]
