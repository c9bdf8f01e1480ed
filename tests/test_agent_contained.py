"""A failure at any entry point of a running agent is contained to that event.

Two real agents run in this process (tests/agent_inproc.py: loopback UDP,
socketpair ports). A failure is injected at each entry point — a datagram,
a frame, a timer round, a control request, a reload, a round of outputs, a
read — and the agent must count it as `agent.internal_error_<where>`, log it
once, and keep forwarding frames both ways.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from agent_inproc import Pair, agent_pair, frame

from lanspan.agent.loop import ENTRY_POINTS, TIMER_RETRY, Agent

ROOT = Path(__file__).resolve().parents[1]


class Boom(Exception):
    """The injected failure."""


def failing(times: int, real: Callable[..., Any]) -> Callable[..., Any]:
    """`real`, except that its first `times` calls raise Boom."""
    left = [times]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if left[0] > 0:
            left[0] -= 1
            raise Boom("injected")
        return real(*args, **kwargs)

    return wrapper


def up(pair: Pair) -> None:
    pair.forwards("n1", "n2", b"warm-up one")
    pair.forwards("n2", "n1", b"warm-up two")


def keeps_forwarding(pair: Pair, tag: str) -> None:
    pair.forwards("n1", "n2", f"after {tag} 1".encode())
    pair.forwards("n2", "n1", f"after {tag} 2".encode())


def errors_logged(caplog: pytest.LogCaptureFixture, where: str) -> int:
    return sum(
        1
        for r in caplog.records
        if r.name == "lanspan.agent"
        and r.getMessage().startswith(f"internal error handling a {where}")
    )


def control_request(pair: Pair, name: str, request: dict[str, object]) -> dict[str, Any]:
    """One request on `name`'s control socket, answered while the agents keep stepping."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(pair.tmp / f"{name}.sock"))
    sock.setblocking(False)
    sock.sendall(json.dumps(request).encode() + b"\n")
    buf = bytearray()

    def answered() -> bool:
        with contextlib.suppress(BlockingIOError):
            buf.extend(sock.recv(1 << 20))
        return buf.endswith(b"\n")

    try:
        pair.pump(answered, f"control answer to {request}")
    finally:
        sock.close()
    answer: dict[str, Any] = json.loads(buf)
    return answer


@pytest.mark.parametrize("where", ["datagram", "frame", "timer", "output", "read"])
def test_failure_in_the_loop_is_contained(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "lanspan")
    with agent_pair(tmp_path, monkeypatch) as pair:
        up(pair)
        victim: Agent = pair.agents["n2"]
        reason = f"agent.internal_error_{where}"
        assert pair.drops("n2").get(reason, 0) == 0
        if where == "datagram":
            node = victim.node  # the agent's entry points (each with its fast path)
            monkeypatch.setattr(node, "datagram_to_port", failing(2, node.datagram_to_port))
        elif where == "frame":
            monkeypatch.setattr(victim.node, "frame_to_peer", failing(2, victim.node.frame_to_peer))
        elif where == "timer":
            monkeypatch.setattr(victim.node, "handle_timer", failing(2, victim.node.handle_timer))
        elif where == "output":
            monkeypatch.setattr(victim, "_flush", failing(2, victim._flush))
        else:
            port = victim.ports["g"]
            monkeypatch.setattr(port, "read", failing(2, port.read))
        # the failing events happen while traffic flows (frames both ways, probes)...
        last = [0.0]

        def traffic() -> None:
            if time.monotonic() - last[0] >= 0.05:
                last[0] = time.monotonic()
                pair.ports["n1"].inject(frame(1, b"during"))
                pair.ports["n2"].inject(frame(2, b"during"))

        pair.extra_steps.append(traffic)
        pair.pump(lambda: pair.drops("n2").get(reason, 0) >= 2, f"two {where} failures")
        pair.extra_steps.remove(traffic)
        # ...and the agent goes on forwarding both ways
        keeps_forwarding(pair, where)
        assert pair.drops("n2")[reason] == 2
        assert errors_logged(caplog, where) == 1, "logged once, not once per failure"
        assert all(a.running for a in pair.agents.values())


def test_failing_control_request_and_reload_are_contained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "lanspan")
    with agent_pair(tmp_path, monkeypatch, control=True) as pair:
        up(pair)
        victim = pair.agents["n2"]
        monkeypatch.setattr(victim, "status", failing(2, victim.status))
        for _ in range(2):
            answer = control_request(pair, "n2", {"op": "status"})
            assert answer["ok"] is False and "internal error" in answer["error"]
        assert control_request(pair, "n2", {"op": "status"})["ok"] is True
        assert pair.drops("n2")["agent.internal_error_control"] == 2
        assert errors_logged(caplog, "control") == 1
        keeps_forwarding(pair, "control")

        monkeypatch.setattr(victim, "_reload", failing(1, victim._reload))
        answer = control_request(pair, "n2", {"op": "reload"})
        assert answer["ok"] is True and answer["result"]["ok"] is False
        assert "internal error" in answer["result"]["error"]
        assert pair.drops("n2")["agent.internal_error_reload"] == 1
        assert errors_logged(caplog, "reload") == 1
        keeps_forwarding(pair, "reload")
        # and the next reload works again
        answer = control_request(pair, "n2", {"op": "reload"})
        assert answer["result"]["ok"] is True, answer


def test_a_timer_that_keeps_failing_does_not_spin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A timer round that always fails is retried every TIMER_RETRY, not in a busy loop."""
    with agent_pair(tmp_path, monkeypatch) as pair:
        up(pair)
        victim = pair.agents["n2"]
        monkeypatch.setattr(victim.node, "handle_timer", failing(10**9, victim.node.handle_timer))
        deadline = time.monotonic() + 10.0  # an idle pair's next timer may be seconds away
        while not pair.drops("n2").get("agent.internal_error_timer"):
            assert time.monotonic() < deadline, "no timer round came due"
            victim.step(1.0)
        first = pair.drops("n2")["agent.internal_error_timer"]
        start = time.monotonic()
        steps = 0
        while time.monotonic() - start < 0.5:
            victim.step(1.0)
            steps += 1
        failures = pair.drops("n2")["agent.internal_error_timer"] - first
        assert 1 <= failures <= 0.5 / TIMER_RETRY + 2, (failures, steps)
        keeps_forwarding(pair, "a stuck timer")


def test_every_entry_point_reason_is_documented() -> None:
    text = (ROOT / "docs" / "drops.md").read_text()
    section = text.split("## agent", 1)[1].split("\n## ", 1)[0]
    for where in ENTRY_POINTS:
        assert f"- `agent.internal_error_{where}` — " in section, where
