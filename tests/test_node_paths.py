"""Path liveness, failover, hold-down and roaming, with a fake clock."""

from __future__ import annotations

import itertools
from dataclasses import replace

from lanspan.addr import Target
from lanspan.config.model import Timers
from lanspan.node.paths import LATE_MAX, LATE_WINDOW, PROBE_GAP, PeerPaths

A = ("198.18.0.1", 51820)
B = ("198.18.1.1", 51820)
T = Timers(probe_interval=0.2, probe_multiplier=3, hold_down=2.0)


def run(
    paths: PeerPaths,
    start: float,
    end: float,
    dead: set[Target],
    rtt: dict[Target, float],
) -> float:
    """Probe every interval; answer probes on live paths after their RTT."""
    now = start
    while now < end:
        paths.check(now)
        for addr, probe in paths.probes(now):
            if addr not in dead:
                paths.ack(replace(probe, ack=True), now + rtt.get(addr, 0.001))
        now = round(now + T.probe_interval, 6)
    return now


def test_first_path_up_becomes_active_and_lowest_rtt_wins() -> None:
    p = PeerPaths([A, B], T)
    assert p.destination() == A and p.candidates(0.0) == [A, B]
    run(p, 0.0, 5.0, set(), {A: 0.010, B: 0.001})
    assert p.active is not None and p.active.target == B
    kinds = [e.kind for e in p.take_outputs()]
    assert kinds.count("path_up") == 2 and "path_switch" in kinds


def test_dead_active_path_fails_over_within_detection_time() -> None:
    p = PeerPaths([A, B], T)
    now = run(p, 0.0, 5.0, set(), {A: 0.001, B: 0.005})
    assert p.active is not None and p.active.target == A
    cut = now
    while p.active is not None and p.active.target == A:
        now = run(p, now, now + T.probe_interval, {A}, {B: 0.005})
    assert p.active is not None and p.active.target == B
    # detection within interval x multiplier plus one probe period
    assert now - cut <= T.probe_interval * (T.probe_multiplier + 2)
    run(p, now, now + 1.0, {A}, {B: 0.005})
    assert not p.paths[0].up and p.paths[0].loss > 0


def test_recovered_path_waits_out_hold_down() -> None:
    p = PeerPaths([A, B], T)
    now = run(p, 0.0, 5.0, set(), {A: 0.001, B: 0.005})
    now = run(p, now, now + 2.0, {A}, {B: 0.005})
    assert p.active is not None and p.active.target == B
    back = now
    while p.active is not None and p.active.target == B:
        now = run(p, now, now + T.probe_interval, set(), {A: 0.001, B: 0.005})
    assert now - back >= T.hold_down


def test_only_path_back_is_used_at_once() -> None:
    p = PeerPaths([A], T)
    now = run(p, 0.0, 1.0, set(), {})
    now = run(p, now, now + 2.0, {A}, {})
    assert p.active is not None and not p.active.up
    run(p, now, now + 0.4, set(), {})
    assert p.active is not None and p.active.up


def test_roaming_peer_without_endpoints_follows_its_newest_address() -> None:
    p = PeerPaths([], T)
    assert p.destination() is None
    p.seen(A, 0.0)
    assert p.destination() == A
    p.seen(B, 1.0)
    assert p.destination() == B
    assert [e.kind for e in p.take_outputs()].count("path_learned") == 2


def test_set_endpoints_keeps_state_of_paths_that_stay() -> None:
    p = PeerPaths([A, B], T)
    run(p, 0.0, 3.0, set(), {})
    kept = p.find(A)
    p.set_endpoints([A])
    assert p.find(A) is kept and kept is not None and kept.configured
    dropped = p.find(B)  # still up: demoted to a learned path, not thrown away
    assert dropped is not None and not dropped.configured
    p2 = PeerPaths([A, B], T)
    run(p2, 0.0, 3.0, {B}, {})  # B never answered
    p2.set_endpoints([A])
    assert p2.find(B) is None  # a dropped endpoint that is down goes at once


def test_a_configured_path_wins_over_a_learned_one() -> None:
    # After a reload moved the endpoint, the peer still speaks from its old address.
    p = PeerPaths([A], T)
    p.set_endpoints([B])
    p.seen(A, 0.0)  # learned
    now = run(p, 0.0, 0.4, set(), {A: 0.0001, B: 0.005})  # the old one answers faster
    run(p, now, now + 3.0, set(), {A: 0.0001, B: 0.005})
    assert p.active is not None and p.active.target == B and p.active.configured


def test_relay_paths_only_without_a_direct_one_and_the_fastest_relay_wins() -> None:
    from lanspan.addr import Relay

    p = PeerPaths([A], T)
    assert p.set_relays({"r1", "r2"})
    slow, fast = Relay("r1"), Relay("r2")
    now = run(p, 0.0, 3.0, set(), {A: 0.004, slow: 0.003, fast: 0.001})
    assert p.active is not None and p.active.target == A  # direct wins over faster relays
    now = run(p, now, now + 3.0, {A}, {slow: 0.003, fast: 0.001})
    assert p.active is not None and p.active.target == fast  # the relay with the lowest RTT
    assert not p.set_relays({"r1", "r2"})  # nothing new: paths keep their history
    p.set_relays({"r1"})
    run(p, now, now + 0.2, {A}, {slow: 0.003})
    assert p.active is not None and p.active.target == slow


def test_a_moved_endpoint_keeps_carrying_traffic_until_the_new_one_takes_over() -> None:
    p = PeerPaths([A], T)
    now = run(p, 0.0, 3.0, set(), {})
    old = p.active
    assert old is not None and old.target == A
    p.set_endpoints([B])  # a reload moved the peer to B; A still answers for now
    assert p.active is old and not old.configured and p.destination() == A
    start = now
    while p.active is old:
        now = run(p, now, now + T.probe_interval, set(), {})
    assert p.active is not None and p.active.target == B
    assert now - start >= T.hold_down
    now = run(p, now, now + 1.0, {A}, {})  # the old address goes away: it just goes down
    assert p.active is not None and p.active.target == B and not old.up


def test_an_answer_past_the_deadline_still_brings_the_path_up_and_counts_lost() -> None:
    """Issue 10, 100 agents on 2 cores: probes were answered after 15-20 s, past the
    deadline, so no path ever came up. A late answer proves the path works; the
    probe still counts as lost, and answers older than LATE_WINDOW are ignored."""
    p = PeerPaths([A], T)
    sent = p.probes(0.0)
    assert len(sent) == 1
    (_, probe), dead = sent[0], p.dead_after
    p.check(dead + 0.1)  # past the deadline: lost
    assert p.paths[0].results[-1] is False and not p.paths[0].up
    p.ack(replace(probe, ack=True), dead + 5.0)  # the answer, late
    assert p.paths[0].up and p.active is not None and p.active.target == A
    assert list(p.paths[0].results) == [False]
    assert p.paths[0].rtt is not None and p.paths[0].rtt > dead
    # bounded: at most LATE_MAX remembered, none older than LATE_WINDOW
    q = PeerPaths([B], T)
    probes = [q.probes(float(i))[0][1] for i in range(LATE_MAX + 4)]
    q.check(LATE_MAX + 4 + q.dead_after)
    assert len(q.paths[0].late) <= LATE_MAX
    q.check(LATE_WINDOW + LATE_MAX + 10.0)
    assert not q.paths[0].late
    q.ack(replace(probes[-1], ack=True), LATE_WINDOW + LATE_MAX + 10.0)
    assert not q.paths[0].up


def test_relays_wait_until_the_direct_paths_had_their_chance() -> None:
    from lanspan.addr import Relay
    from lanspan.node.paths import RELAY_PROBE_AFTER

    p = PeerPaths([A], T)
    p.set_relays({"r1", "r2"})
    assert not p.direct_tried(0.0)  # nothing asked yet
    [(target, probe)] = p.probes(0.0, relays=False)
    assert target == A
    assert not p.direct_tried(RELAY_PROBE_AFTER / 2)  # asked, not yet late
    assert p.direct_tried(RELAY_PROBE_AFTER)  # outstanding that long: try the relays
    p.ack(replace(probe, ack=True), RELAY_PROBE_AFTER + 0.1)  # a late answer
    assert p.direct_up() and not p.direct_tried(RELAY_PROBE_AFTER + 0.1)
    lossy = PeerPaths([A], T)
    lossy.probes(0.0, relays=False)
    lossy.check(10.0)  # the probe is lost
    assert lossy.direct_tried(10.0)
    nat = PeerPaths([], T)  # a peer behind NAT: only relays (and learned paths) reach it
    nat.set_relays({"r1"})
    assert nat.direct_tried(0.0) and [t for t, _ in nat.probes(0.0)] == [Relay("r1")]


def test_an_overloaded_node_gives_the_direct_paths_its_patience() -> None:
    from lanspan.addr import Relay
    from lanspan.node.paths import RELAY_PROBE_AFTER

    p = PeerPaths([A], T)
    p.set_relays({"r1"})
    p.probes(0.0, relays=False)
    assert p.direct_tried(RELAY_PROBE_AFTER)  # not overloaded
    assert not p.direct_tried(RELAY_PROBE_AFTER, patience=3.0)  # the machine is slow
    assert p.direct_tried(3.0, patience=3.0)
    # The peer's datagrams come through a relay, none directly: it found no direct
    # path, so the relays are worth probing now, patience or not.
    heard = PeerPaths([A], T)
    heard.set_relays({"r1"})
    heard.probes(0.0, relays=False)
    heard.seen(Relay("r1"), 0.1)
    assert heard.direct_tried(0.1, patience=3.0)
    heard.seen(A, 0.2)  # then directly: back to waiting
    assert not heard.direct_tried(0.3, patience=3.0)


def test_a_handshake_tries_the_direct_paths_before_the_relays() -> None:
    """At a cold start of 100 nodes every initiation went through three relays too as
    soon as their REACH came (a third of each node's datagrams, issue 10)."""
    from lanspan.addr import Relay
    from lanspan.node.paths import RELAY_HANDSHAKE_AFTER as AFTER
    from lanspan.session.table import FIRST_RETRY

    assert AFTER < FIRST_RETRY  # the first retry goes through the relays too
    p = PeerPaths([A, B], T)
    p.set_relays({"r1", "r2"})
    everything = [A, B, Relay("r1"), Relay("r2")]
    assert p.candidates(10.0) == [A, B]  # the first attempt: direct only
    assert p.candidates(10.0 + AFTER / 2) == [A, B]
    assert p.candidates(10.0 + AFTER) == everything  # the retries: through the relays too
    now = run(p, 20.0, 25.0, {A, B, Relay("r1")}, {})  # only r2 answers: it alone
    assert p.active is not None and p.candidates(now) == [Relay("r2")]
    p.set_relays({"r1"})  # r2 was active: gone with its path, so direct first again
    assert p.active is None
    assert p.candidates(now) == [A, B]
    assert p.candidates(now + AFTER) == [A, B, Relay("r1")]
    nat = PeerPaths([], T)  # no direct path to wait for: the relays at once
    nat.set_relays({"r1"})
    assert nat.candidates(0.0) == [Relay("r1")]
    plain = PeerPaths([A], T)  # no relays: the direct paths, whenever
    assert plain.candidates(0.0) == plain.candidates(100.0) == [A]


def test_a_peers_session_word_follows_its_paths() -> None:
    """A peer with no path to try is "down"; once one appears (a relay offers it, or a
    datagram from it is learned) it is "handshaking", whatever was shown before."""
    from lanspan.node.core import _session_word

    nat = PeerPaths([], T)  # no endpoint, no relay yet
    assert _session_word(False, nat) == "down"
    nat.set_relays({"r1"})
    assert _session_word(False, nat) == "handshaking"
    assert _session_word(True, nat) == "up"
    nat.set_relays(set())
    assert _session_word(False, nat) == "down"


def test_a_path_is_asked_at_most_once_an_interval_however_often_probes_are_due() -> None:
    # Signs of life from down paths (a member sealing from ever new source addresses)
    # asked for the peer's probes every 10 ms: each path had a probe per round.
    p = PeerPaths([A, B], T)
    sent: list[tuple[float, Target]] = []
    for i in range(60):
        now = i * 0.01
        p.check(now)
        sent += [(now, addr) for addr, _ in p.probes(now)]
    for addr in (A, B):
        times = [t for t, a in sent if a == addr]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(times) == 4 and min(gaps) >= T.probe_interval * PROBE_GAP - 1e-9, times
    # the regular rounds, a whole interval apart, are not held back
    q = PeerPaths([A], T)
    assert [len(q.probes(round(i * T.probe_interval, 6))) for i in range(5)] == [1] * 5
