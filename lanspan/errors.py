"""Exceptions shared across lanspan's layers.

Whose fault it is decides the class: `BadPacket` is a peer's (dropped and
counted, never escapes the agent), `ConfigError` is the operator's (printed,
exit 1), anything else is a bug in lanspan.
"""

from __future__ import annotations


class BadPacket(Exception):
    """Bytes from the network that do not parse; `reason` names the counter."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class ConfigError(Exception):
    """A network or lab file that fails validation; holds every problem found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems

    def render(self) -> str:
        lines = [f"{self.source}: {len(self.problems)} error(s)"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)
