"""Every drop reason lanspan/session and lanspan/noise can emit is `session.*`,
unique, and documented under `## session` in docs/drops.md (and nothing more)."""

from __future__ import annotations

import re
from pathlib import Path

import lanspan.noise
import lanspan.session

ROOT = Path(__file__).resolve().parents[1]
_LITERAL = re.compile(r"""["']([a-z]+\.[a-z0-9_]+)["']""")
_REASON_CALL = re.compile(r"""(?:BadPacket\(|drops\[)\s*["']([^"']+)["']""")


def _sources() -> list[Path]:
    out: list[Path] = []
    for pkg in (lanspan.session, lanspan.noise):
        out += sorted(Path(pkg.__file__ or "").parent.glob("*.py"))
    return out


def _documented() -> list[str]:
    text = (ROOT / "docs" / "drops.md").read_text()
    section = text.split("## session", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^- `([^`]+)` — \S", section, flags=re.M)


def test_every_reason_is_session_and_documented() -> None:
    emitted: set[str] = set()
    for path in _sources():
        text = path.read_text()
        for reason in _REASON_CALL.findall(text):
            assert reason.startswith("session."), f"{path.name}: {reason!r}"
        emitted |= {r for r in _LITERAL.findall(text) if r.startswith("session.")}
    documented = _documented()
    assert len(documented) == len(set(documented)), "a reason is listed twice"
    assert emitted == set(documented)
    for reason in documented:
        assert re.fullmatch(r"session\.[a-z0-9_]+", reason)
