"""The lab's own layout: no import cycle between its modules; the tools run inside
namespaces (`lanspan.lab.inside`) import none of the orchestration."""

from __future__ import annotations

import ast
from pathlib import Path

LAB = Path(__file__).resolve().parent.parent / "lanspan" / "lab"


def _module(path: Path) -> str:
    rel = path.relative_to(LAB.parent.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every lanspan.lab module `path` imports, lazy imports inside functions included."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in out if m.startswith("lanspan.lab.")}


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in LAB.rglob("*.py")}
    return {m: {i for i in _imports(p) if i in files and i != m} for m, p in files.items()}


def test_no_import_cycle_in_the_lab() -> None:
    graph = _graph()
    done: set[str] = set()

    def visit(m: str, stack: list[str]) -> None:
        if m in stack:
            raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(m) :], m]))
        if m in done:
            return
        for n in sorted(graph[m]):
            visit(n, [*stack, m])
        done.add(m)

    for m in sorted(graph):
        visit(m, [])


def test_inside_tools_import_no_orchestration() -> None:
    graph = _graph()
    inside = [m for m in graph if m.startswith("lanspan.lab.inside")]
    assert {"lanspan.lab.inside.prober", "lanspan.lab.inside.vlantap",
            "lanspan.lab.inside.impairer"} <= set(inside)  # fmt: skip
    allowed = {"lanspan.lab.model"}
    for m in inside:
        bad = {i for i in graph[m] if not i.startswith("lanspan.lab.inside") and i not in allowed}
        assert not bad, f"{m} imports {sorted(bad)}"
