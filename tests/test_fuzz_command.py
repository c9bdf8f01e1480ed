"""bench/fuzz: a short fixed-seed run in CI, and planted bugs its oracles must catch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lanspan.errors import BadPacket
from lanspan.switch.core import Switch

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import fuzzlib  # noqa: E402


@pytest.fixture(scope="module")
def ci_run() -> dict[str, object]:
    """The CI run: `bench/fuzz --inputs 2000 --seed 1 --json`, as a command."""
    out = subprocess.run(
        [sys.executable, str(BENCH / "fuzz"), "--inputs", "2000", "--seed", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode in (0, 1), out.stderr
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert isinstance(doc, dict)
    doc["_stderr"] = out.stderr
    doc["_rc"] = out.returncode
    return doc


def test_ci_run_gives_every_target_inputs(ci_run: dict[str, object]) -> None:
    targets = ci_run["targets"]
    assert isinstance(targets, dict)
    assert set(targets) == set(fuzzlib.TARGETS)
    assert all(t["inputs"] > 0 for t in targets.values())
    assert ci_run["inputs"] == 2000 == sum(t["inputs"] for t in targets.values())
    assert ci_run["uncovered_untrusted"] == []
    assert ci_run["failures"] == sum(t["failures"] for t in targets.values())


def test_ci_run_has_no_failures(ci_run: dict[str, object]) -> None:
    assert ci_run["failures"] == 0, ci_run["_stderr"]
    assert ci_run["_rc"] == 0


def test_every_untrusted_function_is_driven_by_a_target() -> None:
    found = fuzzlib.untrusted_functions()
    assert "lanspan.wire.messages.parse_untrusted" in found
    assert "lanspan.noise.handshake.HandshakeState.read_message_untrusted" in found
    assert len(found) >= 16
    covered = {c for t in fuzzlib._targets() for c in t.covers}
    assert found <= covered, found - covered


def _fake_parser(data: bytes) -> object:
    if len(data) > 40:
        raise ValueError("planted: a parser that raises something else than BadPacket")
    if len(data) == 13:
        raise BadPacket("Not A Reason")
    raise BadPacket("fake.short")


def test_a_planted_parser_bug_is_reported_with_a_reproducer_that_replays() -> None:
    target = fuzzlib.ParserTarget("fake.parser", (), _fake_parser, lambda: [bytes(60)])
    report = fuzzlib.run(300, 1, targets=[target])
    kinds = {f.kind: f for f in report.failures}
    assert set(kinds) == {"exception", "reason"}
    assert report.per_target["fake.parser"][0] == 300
    bug = kinds["exception"]
    assert "ValueError: planted" in bug.message and bug.count > 1
    assert len(bytes.fromhex(bug.reproducer)) > 40
    replayed = fuzzlib.replay("fake.parser", bug.reproducer, targets=[target])
    assert replayed is not None and "ValueError" in replayed
    assert fuzzlib.replay("fake.parser", "00", targets=[target]) is None
    assert json.loads(json.dumps(report.to_json()))["failures"] == report.failure_count


def _node_target() -> fuzzlib.Target:
    return fuzzlib.NodeTarget("node.frames", (fuzzlib.OP_FRAME,))


def _forging(
    monkeypatch: pytest.MonkeyPatch, forge: fuzzlib.Callable[[str, bytes], list[tuple[str, bytes]]]
) -> None:
    """Make the core's outputs, as the fuzzer sees them, carry extra writes."""
    real = fuzzlib.take_outputs

    def forged(core: fuzzlib.NodeCore, now: float) -> fuzzlib.Outputs:
        out = real(core, now)
        if core._me.name == "na":
            out.writes += [w for port, data in out.writes for w in forge(port, data)]
        return out

    monkeypatch.setattr(fuzzlib, "take_outputs", forged)


def test_a_planted_frame_across_segments_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    _forging(monkeypatch, lambda port, data: [("pb", data)] if port == "pa" else [])
    report = fuzzlib.run(300, 1, targets=[_node_target()])
    leaks = [f for f in report.failures if f.kind == "segment"]
    assert leaks and "left na port pb on segment b" in leaks[0].message


def test_a_planted_tagged_frame_on_an_access_port_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def tag(port: str, data: bytes) -> list[tuple[str, bytes]]:
        frame = data[10:]
        return [("pa", data[:10] + frame[:12] + b"\x81\x00\x00\x14" + frame[12:])]

    _forging(monkeypatch, tag)
    report = fuzzlib.run(300, 1, targets=[_node_target()])
    assert "tag" in {f.kind for f in report.failures}


def test_a_planted_exception_in_the_core_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    real = Switch.from_port

    def buggy(self: Switch, port: str, frame: bytes, now: float, hold: bool = False) -> object:
        if len(frame) % 7 == 3:
            raise KeyError("planted")
        return real(self, port, frame, now, hold)

    monkeypatch.setattr(Switch, "from_port", buggy)
    report = fuzzlib.run(200, 1, targets=[_node_target()])
    bug = next(f for f in report.failures if "KeyError" in f.message)
    assert bug.kind == "exception" and "from_port" in bug.where
    assert fuzzlib.replay("node.frames", bug.reproducer, targets=[_node_target()]) is not None


def test_state_over_its_cap_is_caught() -> None:
    fx = fuzzlib._Fixture()
    core = fx.cores["na"]
    assert fuzzlib.bound_violations(core) == []
    where = next(p.where for p in core._switch._ports.values() if p.name == "pa")
    core._switch._by_where[where].update((10, bytes([2, 0, 0, 0, 1, i])) for i in range(9))
    core._paths["nb"].paths += [
        fuzzlib.node_paths.Path((f"198.18.9.{i}", 1), configured=False) for i in range(5)
    ]
    # a keypair left in the index map after its peer let it go (a leak), and one peer
    # holding more than current + previous + offered ones (1 + 2 x _MAX_NEXT)
    st = core._sessions
    held = next(kp for p in st._peers.values() for kp in p.keypairs())
    st._keypairs[0xDEAD] = held
    peer = st._peers["nb"]
    peer.nexts = [held] * 3
    peer.previous = [held] * 4
    bad = fuzzlib.bound_violations(core)
    assert any(b.startswith("macs: 9 MACs behind port:pa, cap 8") for b in bad), bad
    assert any(b.startswith("paths: 5 learned paths to nb") for b in bad), bad
    assert "session: 1 keypairs no peer holds" in bad, bad
    assert any(b.startswith("session: 8 keypairs for nb") for b in bad), bad


def test_a_run_is_deterministic_for_a_seed() -> None:
    only = ["parse.payload", "node.mixed", "metrics.request"]
    a = fuzzlib.run(240, 7, only=only, episode=40)
    b = fuzzlib.run(240, 7, only=only, episode=40)
    assert a.per_target == b.per_target
    assert [f.to_json() for f in a.failures] == [f.to_json() for f in b.failures]


@pytest.mark.parametrize(
    ("target", "reproducer"),
    [
        # vnet header valid for a 64 KiB frame (hdr_len 65 535): the trunk tag push raised
        ("parse.vnet_validate", "0000ffff000000000000ffff0000"),
        # a local port's vnet header with csum_start < 4 on a frame losing its tag: raised
        (
            "node.frames",
            "0002040101040000a8050000000070ecb77c5a19ccac539546ce810070004ecd98311cb1",
        ),
        # ~1 500 nested "[" on the control socket: RecursionError out of handle_request
        ("control.request", "00" + "5b" * 1500),
        # a 5 000-digit integer on the control socket: ValueError out of json.loads
        ("control.request", "00" + "7b226f70223a" + "39" * 5000 + "7d"),
    ],
)
def test_the_bugs_the_fuzzer_found_stay_fixed(target: str, reproducer: str) -> None:
    assert fuzzlib.replay(target, reproducer) is None
