"""Issue 10, session layer: a configured peer is never given up.

Sans-IO reproductions: nodes pumped into each other through a fake link that
can be cut; the node's part (probe established peers, send a Transmit to the
peer's candidate addresses, call retry_soon on a sign of life) is played by
tests/sessionlib.py.
"""

from __future__ import annotations

import itertools

import pytest
from sessionlib import Mesh

from lanspan.session import (
    FIRST_RETRY,
    REKEY_ATTEMPT_TIME,
    RETRY_MAX,
    RETRY_MAX_JITTER,
    RETRY_SOON_INTERVAL,
    SessionTable,
    Transmit,
)
from lanspan.session.table import _MAX_PENDINGS

# After a heal, the next initiation from either side goes out within one capped
# retry interval; it then takes one round trip (2 x 10 ms) and the next probe (1 s).
HEAL_BOUND = RETRY_MAX + RETRY_MAX_JITTER + 0.1 + 1.0


def _both_ways(mesh: Mesh, a: str, b: str, since: float) -> bool:
    return bool(mesh.probes_delivered(b, a, since) and mesh.probes_delivered(a, b, since))


@pytest.mark.parametrize("outage", [100.0, 200.0, 280.0, 400.0])
def test_two_nodes_heal_after_outage(outage: float) -> None:
    mesh = Mesh(("a", "b"), seed=int(outage))
    mesh.run(5.0)
    assert mesh.established("a", "b") and mesh.established("b", "a")
    mesh.cut_node("b")
    mesh.run(5.0 + outage)
    if outage > REKEY_ATTEMPT_TIME + 15:
        assert mesh.kinds("a", "handshake_failed") and mesh.kinds("b", "handshake_failed")
    if outage >= 200:  # the keys expired during the outage
        assert not mesh.established("a", "b") and mesh.kinds("a", "down")
    healed = mesh.now
    mesh.heal()
    back = mesh.run_until(lambda: _both_ways(mesh, "a", "b", healed), healed + 60)
    assert back is not None, "never came back"
    assert back - healed <= HEAL_BOUND, back - healed
    # Retries went on for the whole outage, at the capped rate at most.
    initiations = [t for t, _, _, d in mesh.tap if d[0] == 1 and 5.0 < t < healed]
    assert initiations and initiations[-1] > healed - (RETRY_MAX + RETRY_MAX_JITTER + 5.4)
    assert len(initiations) <= 2 * outage / RETRY_MAX + 20


def test_three_nodes_one_isolated_for_400_s() -> None:
    mesh = Mesh(("a", "b", "c"), seed=3)
    mesh.run(5.0)
    mesh.cut_node("c")
    mesh.run(405.0)
    assert mesh.established("a", "b")
    assert not mesh.established("a", "c") and not mesh.established("c", "b")
    mesh.heal()
    pairs = [("a", "c"), ("b", "c"), ("a", "b")]
    back = mesh.run_until(lambda: all(_both_ways(mesh, x, y, 405.0) for x, y in pairs), 465.0)
    assert back is not None and back - 405.0 <= HEAL_BOUND


def _initiations(table: SessionTable) -> int:
    return sum(isinstance(o, Transmit) and o.data[0] == 1 for o in table.take_outputs())


def test_reach_toggles_never_overflow_nor_spin() -> None:
    """A member alternating REACH {X} / {} made the victim call retry_soon(X) at each
    toggle; after ~1000 the backoff exponent overflowed out of handle_timer."""
    mesh = Mesh(("a", "b"), seed=4, probe_interval=None, initiate=False)
    a = mesh.tables["a"]
    a.add_peer("x", bytes(range(32)))  # never answers
    now, sent = 0.0, 0
    for i in range(20_000):  # 20 000 toggles, one every 5 ms: 100 s
        now = i * 0.005
        a.retry_soon("x", now)
        a.retry_soon("x", now)  # idempotent
        deadline = a.next_timer()
        if deadline is not None and deadline <= now:
            a.handle_timer(now)
        sent += _initiations(a)
    peer = a._peers["x"]
    assert peer.backoff <= 3 and len(peer.queue) == 0
    # Its last few initiations stay answerable, never more.
    assert len(a._pendings) == len(peer.pendings) == _MAX_PENDINGS
    # Rate-limited: a restart of the backoff at most once per RETRY_SOON_INTERVAL,
    # never two initiations within FIRST_RETRY.
    per_interval = 1 + int(RETRY_SOON_INTERVAL / FIRST_RETRY)
    assert sent <= (now / RETRY_SOON_INTERVAL + 1) * per_interval
    assert sent >= now / (RETRY_MAX + RETRY_MAX_JITTER)  # and it kept trying


def test_retry_soon_restarts_backoff_once() -> None:
    mesh = Mesh(("a", "b"), seed=5, probe_interval=None, initiate=False)
    a = mesh.tables["a"]
    a.add_peer("x", bytes(range(32)))
    a.initiate("x", 0.0)
    now = 0.0
    while now < 30.0:  # deep into the capped backoff
        now = a.next_timer() or now
        a.handle_timer(now)
    a.take_outputs()
    gap = (a.next_timer() or 0) - now
    assert RETRY_MAX <= gap <= RETRY_MAX + RETRY_MAX_JITTER
    t = now + 0.5
    a.retry_soon("x", t)
    assert a.next_timer() == t
    a.handle_timer(t)
    assert _initiations(a) == 1
    nxt = a.next_timer()
    assert nxt is not None and nxt - t <= FIRST_RETRY * (1 + 1 / 15)
    for k in range(100):  # more signs of life inside the interval change nothing
        a.retry_soon("x", t + k * 0.001)
    assert a.next_timer() == nxt


def test_nat_node_lost_first_handshake_retries_fast() -> None:
    """Issue 10 cold start: two NAT'd branch nodes (persistent keepalive, no endpoint
    for each other) start handshakes into nowhere at once; their backoff grows while
    no way exists. When a relay appears (retry_soon) the first initiation over it is
    lost, and the next retry used to wait the backoff reached meanwhile (4-5 s, the
    REKEY_TIMEOUT cap). It must come within FIRST_RETRY of the sign of life."""
    mesh = Mesh(
        ("n1", "n2"), seed=6, persistent_keepalive=10.0, initiate=False, probe_interval=None
    )
    mesh.known = {"n1": {"n2": []}, "n2": {"n1": []}}  # no endpoint: nothing leaves
    mesh.run(6.0)
    assert not mesh.established("n1", "n2")
    assert mesh.tables["n1"]._peers["n2"].state == "initiation_sent"
    # A relay appears at 6.0; the first initiation each way over it is lost.
    mesh.known = {"n1": {"n2": list(mesh.addrs["n2"])}, "n2": {"n1": list(mesh.addrs["n1"])}}
    mesh.cut_node("n2")
    for name, peer in (("n1", "n2"), ("n2", "n1")):
        mesh.tables[name].retry_soon(peer, mesh.now)
    mesh.run(mesh.now + 0.05)
    lost = [t for t, _, _, d in mesh.tap if d[0] == 1 and t >= 6.0]
    assert len(lost) == 2
    mesh.heal()
    up = mesh.run_until(lambda: mesh.established("n1", "n2"), 20.0, step=0.005)
    assert up is not None and up - 6.0 <= 2 * FIRST_RETRY, up


def test_a_suspected_peer_is_retried_as_if_there_were_no_session() -> None:
    """Issue 10, chaos: a rekey in flight when the peer restarts was retried only
    every REKEY_TIMEOUT (pairs back after 5.1 s). Once every path went silent
    (suspect), retries back off from FIRST_RETRY as with no session, until a
    handshake completes."""
    m = Mesh(["a", "b"], probe_interval=None)
    m.run(1.0)
    assert m.established("a", "b")
    m.cut_node("b")
    a = m.tables["a"]
    start = m.now
    a.initiate("b", start)  # a rekey, now in flight
    m.run(start + 0.3)
    a.suspect("b", m.now)
    m.run(start + 4.0)
    sent = [
        t
        for t, src, dst, data in m.tap
        if data[0] == 1 and t >= start and src[0] == m.addrs["a"][0][0]
    ]
    assert len(sent) >= 4  # 0, then ~0.55, ~0.8, ~1.3, ~2.3 s: not one per 5 s
    m.heal()
    m.run(m.now + 3.0)
    assert m.established("a", "b") and not a._peers["b"].suspected


def test_retries_to_a_peer_gone_silent_are_not_spaced_by_unanswered_initiations() -> None:
    """Issue 10, chaos: a peer killed right after it last spoke. Each initiation given
    up unanswered counted as an answer that took at least its age (the peer counted as
    alive: heard from within _HEARD_RECENTLY, but before that initiation was sent), so
    the retry floor (RETRY_LATENCY_FACTOR x the answer latency) grew with the outage:
    retries 2.9-4.7 s apart after 6 s, and the pair back seconds after the peer was.
    Only a peer heard from after an initiation went out shows it answers late."""
    m = Mesh(["a", "b"], probe_interval=None)
    m.run(1.0)
    assert m.established("a", "b")
    m.cut_node("b")  # b is gone (a restarted agent is deaf until it listens)
    a = m.tables["a"]
    a.suspect("b", m.now)
    start = m.now
    m.run(start + 9.0)
    sent = [
        t
        for t, src, dst, data in m.tap
        if data[0] == 1 and t >= start and src[0] == m.addrs["a"][0][0]
    ]
    gaps = [round(y - x, 2) for x, y in itertools.pairwise(sent)]
    assert max(gaps) <= RETRY_MAX + RETRY_MAX_JITTER + 0.01, gaps
