"""The flood fault without namespaces: the flooder's datagrams, its sender on loopback,
the fault's validation in the lab model, and the figures computed from a probe."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from lanspan.config.keys import encode_key, generate_private_key, public_key
from lanspan.errors import BadPacket, ConfigError
from lanspan.lab.flood import meets, p99, probe_stats
from lanspan.lab.inside import flooder
from lanspan.lab.model import parse_lab
from lanspan.lab.probe import ProbeResult
from lanspan.session.cookie import CookieChecker
from lanspan.wire.messages import (
    INITIATION_LEN,
    MAC1_OFFSET_INITIATION,
    HandshakeInitiation,
    TransportData,
    parse_untrusted,
    receiver_index_untrusted,
)

ROOT = Path(__file__).resolve().parent.parent
N = 300


def _checker(pub: bytes) -> CookieChecker:
    return CookieChecker(pub, random_bytes=lambda n: bytes(n))


def test_random_junk_is_no_lanspan_message() -> None:
    pool = flooder.build_pool("random", N, seed=1)
    lengths = {len(d) for d in pool}
    assert min(lengths) >= flooder.RANDOM_MIN and max(lengths) <= flooder.RANDOM_MAX
    assert len(lengths) > 20  # lengths vary
    for d in pool:
        assert not (d[0] in (1, 2, 3, 4) and d[1:4] == b"\0\0\0"), d[:4]
    assert len(set(pool)) == N


def test_initiation_junk_is_initiation_shaped_with_bogus_mac1() -> None:
    pub = public_key(generate_private_key())
    checker = _checker(pub)
    pool = flooder.build_pool("initiation", N, seed=2)
    for d in pool:
        assert len(d) == INITIATION_LEN
        assert isinstance(parse_untrusted(d), HandshakeInitiation)
        assert not checker.check_mac1(d, MAC1_OFFSET_INITIATION)
    assert len(set(pool)) == N


def test_transport_junk_is_transport_shaped_to_random_receivers() -> None:
    pool = flooder.build_pool("transport", N, seed=3)
    receivers = set()
    for d in pool:
        assert len(d) == flooder.TRANSPORT_LEN
        msg = parse_untrusted(d)
        assert isinstance(msg, TransportData)
        receivers.add(receiver_index_untrusted(d))
    assert len(receivers) > N - 3


def test_mac1_initiation_passes_the_session_mac1_check() -> None:
    pub = public_key(generate_private_key())
    pool = flooder.build_pool("mac1-initiation", N, seed=4, public_key=pub)
    checker = _checker(pub)
    other = _checker(public_key(generate_private_key()))
    for d in pool:
        assert len(d) == INITIATION_LEN
        msg = parse_untrusted(d)
        assert isinstance(msg, HandshakeInitiation)
        assert checker.check_mac1(d, MAC1_OFFSET_INITIATION)
        assert not other.check_mac1(d, MAC1_OFFSET_INITIATION)  # valid for that key only
        assert msg.mac2 == bytes(16)
    assert len({d[4:8] for d in pool}) > N - 3  # sender indexes vary: no replay cache hit
    assert len(set(pool)) == N


def test_pool_is_seeded_and_kinds_are_checked() -> None:
    assert flooder.build_pool("transport", 5, seed=9) == flooder.build_pool("transport", 5, 9)
    assert flooder.build_pool("transport", 5, seed=9) != flooder.build_pool("transport", 5, 10)
    with pytest.raises(ValueError, match="public key"):
        flooder.builder("mac1-initiation")
    with pytest.raises(ValueError, match="unknown junk"):
        flooder.builder("bogus")
    rng = random.Random(0)
    with pytest.raises(BadPacket):
        parse_untrusted(flooder.random_junk(rng)[:3])


@pytest.mark.parametrize("procs", [1, 2])
def test_flooder_sends_at_its_rate_and_stops_by_itself(procs: int) -> None:
    """On loopback: 2000 pps for 0.5 s (over `procs` senders), every datagram counted."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    rx.bind(("127.0.0.1", 0))
    port = rx.getsockname()[1]
    pub = encode_key(public_key(generate_private_key()))
    proc = subprocess.run(
        [sys.executable, "-m", "lanspan.lab.inside.flooder", "127.0.0.1", str(port),
         "--junk", "mac1-initiation", "--public-key", pub, "--rate", "2000", "--seconds", "0.5",
         "--procs", str(procs)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("start ")
    done = json.loads(lines[-1].removeprefix("done "))
    assert 0.45 < done["seconds"] < 1.5
    assert 900 <= done["sent"] <= 1100 + 2  # 2000/s for 0.5 s (+ at most one burst)
    assert done["rate_pps"] == round(done["sent"] / done["seconds"])
    assert done["procs"] == procs and done["errors"] == done["blocked"] == 0
    rx.setblocking(False)
    got = []
    while True:
        try:
            got.append(rx.recv(2048))
        except BlockingIOError:
            break
    rx.close()
    assert len(got) == done["sent"]
    assert {len(d) for d in got} == {INITIATION_LEN}


# -- the fault in the lab model ---------------------------------------------------


def _small(**fault: Any) -> dict[str, Any]:
    data = tomllib.loads((ROOT / "examples" / "small.toml").read_text())
    data["fault"] = [dict({"name": "flood-gra", "kind": "flood"}, **fault)]
    return data


def _problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        parse_lab(data, "lab.toml")
    return ei.value.problems


def test_flood_fault_parses_with_defaults() -> None:
    lab = parse_lab(_small(node="gra-hv1", junk="transport"), "lab.toml")
    f = lab.fault[0]
    assert (f.kind, f.node, f.junk, f.rate, f.seconds) == (
        "flood", "gra-hv1", "transport", 40_000, 5.0)  # fmt: skip
    probe = {"source": "rbx-lan", "target": "gra-lan"}
    data = _small(node="gra-hv1", junk="mac1-initiation", rate=2000, seconds=2, probe=probe)
    f = parse_lab(data, "x").fault[0]
    assert (f.rate, f.seconds) == (2000, 2.0)


@pytest.mark.parametrize(
    ("fault", "needle"),
    [
        ({"junk": "random"}, "needs `node`"),
        ({"node": "gra-hv1"}, "needs `junk"),
        ({"node": "gra-hv1", "junk": "bytes"}, "junk"),
        ({"node": "gra-hv1", "junk": "random", "rate": 0}, "rate"),
        ({"node": "gra-hv1", "junk": "random", "seconds": 0}, "seconds"),
        ({"node": "gra-hv1", "junk": "random", "seconds": 61}, "seconds"),
        ({"node": "gra-hv1", "junk": "random", "duration": 3}, "lasts `seconds`"),
        ({"node": "nope", "junk": "random"}, "unknown node 'nope'"),
    ],
)  # fmt: skip
def test_flood_fault_refused(fault: dict[str, Any], needle: str) -> None:
    problems = _problems(_small(**fault))
    assert any(needle in p for p in problems), problems


def test_flood_probe_must_cross_the_node() -> None:
    data = _small(node="gra-hv1", junk="random", probe={"source": "rbx-lan", "target": "rbx-2"})
    data["guest"].append(
        {"name": "rbx-2", "node": "rbx-hv1", "segment": "lan", "address": ["198.18.10.23/24"]}
    )
    problems = _problems(data)
    assert any("never crosses node 'gra-hv1'" in p for p in problems), problems
    data["fault"][0]["probe"] = {"source": "rbx-2", "target": "gra-lan"}
    assert parse_lab(data, "x").fault[0].probe is not None


def test_flood_fields_only_on_flood_faults() -> None:
    data = _small(node="gra-hv1", junk="random")
    data["fault"][0].update(kind="kill-agent")
    problems = _problems(data)
    assert any("`junk` are for flood faults" in p for p in problems), problems


def test_flood_of_a_node_behind_nat_is_refused() -> None:
    data = _small(node="gra-hv1", junk="random")
    data["site"][0]["nat"] = True
    problems = _problems(data)
    assert any("behind the NAT of site 'gra'" in p for p in problems), problems


# -- the figures -------------------------------------------------------------------


def _probe(timeline: list[int], rtts: dict[int, float]) -> ProbeResult:
    return ProbeResult("a", "b", 10.0, len(timeline), sum(timeline), 0.0, 0.0, timeline, rtts)


def test_p99_is_nearest_rank() -> None:
    assert p99([]) is None
    assert p99([5.0]) == 5.0
    assert p99([float(i) for i in range(1, 101)]) == 99.0
    assert p99([float(i) for i in range(1, 201)]) == 198.0
    assert p99([1.0] * 98 + [50.0, 60.0]) == 50.0


def test_probe_stats_of_a_window() -> None:
    # 300 probes, 10 ms apart: quiet 0-1 s (1 ms), flood 1-3 s: 5 % lost, slow ones
    timeline = [1] * 100 + [0 if i % 20 == 0 else 1 for i in range(200)]
    rtts = {s: 1.0 for s in range(1, 101)}
    rtts.update({s: 2.0 + (s % 50) for s in range(101, 301) if timeline[s - 1]})
    pr = _probe(timeline, rtts)
    quiet = probe_stats(pr, 0, 1000)
    assert quiet == {"probes": 100, "loss_pct": 0.0, "rtt_p99_ms": 1.0}
    flood = probe_stats(pr, 1000, 3000)
    assert flood["probes"] == 200 and flood["loss_pct"] == 5.0
    assert flood["rtt_p99_ms"] == 51.0
    assert probe_stats(pr, 5000, 6000)["loss_pct"] is None


def test_meets_the_issue_bounds() -> None:
    assert meets(40_000, 40_000, 1.0, 21.0, 1.0)
    assert not meets(40_000, 40_000, 1.1, 2.0, 1.0)  # loss
    assert not meets(40_000, 40_000, 0.0, 21.1, 1.0)  # p99
    assert not meets(30_000, 40_000, 0.0, 2.0, 1.0)  # the rate was not reached
    assert not meets(40_000, 40_000, None, 2.0, 1.0)
