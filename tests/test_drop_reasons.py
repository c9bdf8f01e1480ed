"""Every drop reason the code can emit is documented in docs/drops.md, once, under its layer.

Reasons are collected from the source, not from a list: the first argument of
every `BadPacket(...)`, the key of every `<...>.drops[...] += n`, and the values
of a `DROP_REASONS = {...}` table (the kernel filter's counters, which Python
never increments). A key that
is neither a string literal (or a choice between literals) nor a propagated
`exc.reason` fails the test, so a reason cannot hide from it.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "drops.md"

# Which reason prefixes (layers) each package may emit.
LAYERS: dict[str, frozenset[str]] = {
    "wire": frozenset({"wire", "ethernet", "vnet", "payload", "control"}),
    "noise": frozenset({"session"}),
    "session": frozenset({"session"}),
    "switch": frozenset({"switch"}),
    "node": frozenset({"node", "relay", "reassembly", "agent"}),
    "agent": frozenset({"agent", "kernel"}),
}

REASON = re.compile(r"^([a-z0-9]+)\.[a-z0-9_]+$")
DOC_LINE = re.compile(r"^- `([^`]+)` — \S")


def _literals(expr: ast.expr) -> list[str] | None:
    """The string literals `expr` can evaluate to, None when it is not just literals."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return [expr.value]
    if isinstance(expr, ast.IfExp):
        a, b = _literals(expr.body), _literals(expr.orelse)
        return None if a is None or b is None else a + b
    return None


def _is_drops(expr: ast.expr) -> bool:
    return (isinstance(expr, ast.Attribute) and expr.attr in ("drops", "_drops")) or (
        isinstance(expr, ast.Name) and expr.id in ("drops", "_drops")
    )


def _propagated(expr: ast.expr) -> bool:
    """`exc.reason`: a BadPacket's reason counted where it is caught (collected at its raise)."""
    return isinstance(expr, ast.Attribute) and expr.attr == "reason"


def emitted() -> tuple[dict[str, set[str]], list[str]]:
    """reason -> packages emitting it; and the places whose reason cannot be read."""
    found: dict[str, set[str]] = defaultdict(set)
    opaque: list[str] = []
    for path in sorted((ROOT / "lanspan").rglob("*.py")):
        rel = path.relative_to(ROOT)
        package = rel.parts[1] if len(rel.parts) > 2 else rel.stem
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            key: ast.expr | None = None
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "BadPacket"
            ):
                key = node.args[0] if node.args else None
                if key is None:
                    opaque.append(f"{rel}:{node.lineno}: BadPacket() without a reason")
                    continue
            elif (
                isinstance(node, ast.AugAssign)
                and isinstance(node.target, ast.Subscript)
                and _is_drops(node.target.value)
            ):
                key = node.target.slice
                if _propagated(key):
                    continue
            elif (
                isinstance(node, ast.AnnAssign | ast.Assign)
                and any(
                    isinstance(t, ast.Name) and t.id == "DROP_REASONS"
                    for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                )
                and node.value is not None
            ):
                if not isinstance(node.value, ast.Dict):
                    opaque.append(f"{rel}:{node.lineno}: DROP_REASONS is not a dict literal")
                    continue
                for v in node.value.values:
                    for r in _literals(v) or []:
                        found[r].add(package)
                    if _literals(v) is None:
                        opaque.append(f"{rel}:{node.lineno}: {ast.unparse(v)}")
                continue
            if key is None:
                continue
            values = _literals(key)
            if values is None:
                opaque.append(f"{rel}:{node.lineno}: {ast.unparse(key)}")
                continue
            for v in values:
                found[v].add(package)
    return found, opaque


def documented() -> tuple[dict[str, str], list[str]]:
    """reason -> its `## layer` heading in docs/drops.md; and reasons listed twice."""
    out: dict[str, str] = {}
    twice: list[str] = []
    heading = ""
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
            continue
        m = DOC_LINE.match(line)
        if m is None:
            assert not line.startswith("- `"), f"docs/drops.md: malformed line {line!r}"
            continue
        reason = m.group(1)
        if reason in out:
            twice.append(reason)
        out[reason] = heading
    return out, twice


def test_every_reason_is_collectable() -> None:
    _, opaque = emitted()
    assert not opaque, "drop reasons the test cannot read (use a literal):\n" + "\n".join(opaque)


def test_collector_finds_reasons_of_every_layer() -> None:
    found, _ = emitted()
    # A collector that silently found nothing would make the other tests pass.
    for reason in ("wire.short_datagram", "ethernet.short_frame", "switch.unknown_peer",
                   "relay.no_direct_path", "reassembly.timeout", "node.no_endpoint",
                   "agent.internal_error_datagram", "kernel.bad_shape"):  # fmt: skip
        assert reason in found, reason


def test_every_emitted_reason_is_documented_and_every_documented_one_emitted() -> None:
    found, _ = emitted()
    docs, twice = documented()
    assert not twice, f"listed more than once in docs/drops.md: {sorted(twice)}"
    missing = sorted(set(found) - set(docs))
    assert not missing, f"emitted but not in docs/drops.md: {missing}"
    stale = sorted(set(docs) - set(found))
    assert not stale, f"in docs/drops.md but emitted nowhere: {stale}"


def test_reasons_are_unique_and_named_by_their_layer() -> None:
    found, _ = emitted()
    docs, _ = documented()
    for reason, packages in sorted(found.items()):
        layers = {frozenset(LAYERS.get(p, {p})) for p in packages}
        assert len(layers) == 1, f"{reason!r} emitted by several layers: {sorted(packages)}"
        m = REASON.match(reason)
        assert m, f"{reason!r} (from {sorted(packages)}) is not named layer.reason"
        for p in packages:
            assert m.group(1) in LAYERS.get(p, ()), f"{reason!r} emitted by lanspan/{p}"
        assert docs.get(reason) == m.group(1), f"{reason!r} must be under ## {m.group(1)}"
