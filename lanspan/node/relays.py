"""Relays and reachability gossip: who may carry a peer's traffic for us, and what we offer.

A relay node sends every peer it reaches over a direct path a REACH listing
those peers with their RTT (`ReachGossip` decides when: good news at once,
the rest damped). A node keeps what each relay offered (`ReachTable`) and
gives each peer relay paths through the best few relays that reach it.

Relaying itself is one hop: RELAY asks a relay to forward an inner datagram
sealed end to end; the relay hands it on as RELAYED, naming the origin. A
relay forwards only over a direct path, so a datagram crosses at most two.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container
from typing import NamedTuple

from lanspan.errors import BadPacket
from lanspan.wire import control, payload

__all__ = [
    "MAX_RELAYS",
    "NATD_FIRST_GAP",
    "REACH_EXPIRY",
    "REACH_FLAP_LIMIT",
    "REACH_FLAP_WINDOW",
    "REACH_INTERVAL",
    "REACH_REFRESH",
    "REACH_REFRESH_LATE",
    "REACH_RIDE",
    "ReachGossip",
    "ReachParts",
    "ReachTable",
    "ReachTimes",
    "relay_request",
    "relayed",
]

# Reachability gossip: news goes to every peer, at most one REACH per interval
# (damping). Besides, each peer gets a relay's whole offer again about every
# REACH_REFRESH (what a lost REACH missed, RTTs): on the first probe or probe's answer
# that goes to that peer REACH_RIDE after its last one, so the peer handles it in a
# wake-up it has anyway (100 relays refreshing everyone at once were 3.4 wake-ups a
# second per idle agent, issue 10). An idle pair exchanges a probe every 13-25 s at
# 100 nodes (one end asks, IDLE_QUIET), so a ride comes 23-48 s after the last one
# (a REACH to each peer every ~32 s: with REACH_RIDE 15 s, every ~20 s, 1.5 times as
# many) and before REACH_REFRESH_LATE, past which the refresh goes alone. What a
# relay said is forgotten after REACH_EXPIRY, or at once when its session goes.
# Past 50 nodes all four grow with the network (`ReachTimes.of`): at 100 nodes, with
# idle probes every ~20 s, 30 s refreshes went alone more often than they rode, and
# an idle agent used 0.80-0.83 % of a core; with 60 s ones, 0.50-0.67 % (session 11).
REACH_INTERVAL = 1.0
REACH_REFRESH = 30.0
REACH_REFRESH_PER_NODE = 0.6  # seconds: 60 s at 100 nodes
REACH_RIDE = 0.75 * REACH_REFRESH
REACH_REFRESH_LATE = 2 * REACH_REFRESH
REACH_EXPIRY = 3 * REACH_REFRESH + 5.0
# First appearances go out at once, but at most one REACH per REACH_FIRST_GAP: at a
# cold start a hub's 99 peers come up one by one, and a REACH (to every peer, each
# listing all) per appearance was ~10 000 messages per relay (issue 10).
REACH_FIRST_GAP = 0.25
# ... but 0.1 s to peers behind NAT (only those hear news at once; `NodeCore._gossip`):
# few peers and few rounds (a peer behind NAT is news to them, not every peer), and a
# pair of them waits for it to reach each other at all (tests/test_node_coldstart.py).
NATD_FIRST_GAP = 0.1
# ... or longer in a large network: each REACH of news goes to every peer, so the gap
# is what keeps a relay's news at about REACH_NEWS_PER_SECOND datagrams a second (at
# 100 nodes a second: a cold start's growth went out ~4 times a second to 99 peers,
# ~460 REACH per node in the first seconds of a simulated cold start, issue 10).
REACH_NEWS_PER_SECOND = 100.0
# Losses (and comebacks past the flap budget) wait REACH_INTERVAL, or longer in a large
# network: about REACH_CHANGES_PER_SECOND datagrams a second per relay (10 s at 100
# nodes). Each change went to all 99 peers once a second per relay: with paths
# flapping on an overloaded machine (100 agents on 2 cores, a cold start with guests
# pinging, issue 10) 66 relays sent each agent ~66 REACH a second, which kept the
# overload going after the guests had stopped. A relay path that stops working is
# seen by its probes meanwhile; comebacks within the flap budget go after the news gap.
REACH_CHANGES_PER_SECOND = 10.0
# More than this many immediate "newly reachable" REACHes in the window: back to the interval.
REACH_FLAP_LIMIT = 3
REACH_FLAP_WINDOW = 10.0
# Relay paths kept (and probed) per peer: the best few by estimated RTT, not all N.
MAX_RELAYS = 3


def relay_request(dest: str, sealed: bytes) -> bytes:
    """The control payload asking a relay to forward `sealed` to `dest`."""
    return payload.build_control(control.build_relay(control.Relay(False, dest, sealed)))


def relayed(origin: str, inner: bytes) -> bytes:
    """The control payload a relay hands on: `inner`, sealed by `origin`."""
    return payload.build_control(control.build_relay(control.Relay(True, origin, inner)))


def news_gap(peers: int, first_gap: float = REACH_FIRST_GAP) -> float:
    """The least time between two REACHes of news to every one of `peers` peers."""
    return max(first_gap, peers / REACH_NEWS_PER_SECOND)


def change_interval(peers: int) -> float:
    """The least time between two REACHes of losses to every one of `peers` peers."""
    return max(REACH_INTERVAL, peers / REACH_CHANGES_PER_SECOND)


class ReachGossip:
    """When our own offer goes out to an audience of peers: at once when it grows by a
    peer that is news to them (unless growth flaps; at most once per `news_gap`), other
    changes at most once per `change_interval`. RTT changes alone wait for each peer's
    refresh (`NodeCore._ride_reach`)."""

    def __init__(self, first_gap: float = REACH_FIRST_GAP) -> None:
        self.first_gap = first_gap
        self.sent: dict[str, int] = {}
        self.sent_at = -1e9
        self._growth: deque[float] = deque()
        # Peers ever offered: a first appearance is news that cannot flap (each peer
        # is new once), so it goes out at once even at a cold start, when every peer
        # of a hub appears within a second; only a comeback uses the flap budget.
        self._ever: set[str] = set()
        self.held_until: float | None = None  # news held back by the news gap, until

    def due(
        self,
        reach: dict[str, int],
        now: float,
        peers: int = 0,
        news: Container[str] | None = None,
    ) -> bool:
        """True when `reach` should be sent now (to `peers` peers); it is then recorded
        as sent. News (a newly reachable peer, of `news` if given) waits `news_gap` after
        the last send; other growth, losses and RTT changes `change_interval`."""
        gap, interval = news_gap(peers, self.first_gap), change_interval(peers)
        self.held_until = None  # set again below if news is held
        # Good news goes out at once (a peer newly reachable), unless growth itself
        # flaps; losses and RTT changes wait for the interval: one flapping link
        # cannot make a storm. RTT wiggles alone only ride on the refresh.
        grown = reach.keys() - self.sent.keys()
        new = grown if news is None else {n for n in grown if n in news}
        first = not new <= self._ever
        while self._growth and now - self._growth[0] > REACH_FLAP_WINDOW:
            self._growth.popleft()
        urgent = first or (bool(new) and len(self._growth) < REACH_FLAP_LIMIT)
        if not urgent and now < self.sent_at + interval:
            return False
        if urgent and now < self.sent_at + gap:  # as the hold ends: `since` may round below
            self.held_until = self.sent_at + gap  # news waits for the gap
            return False
        if reach.keys() == self.sent.keys():
            return False
        if urgent and not first:
            self._growth.append(now)
        self._ever |= new
        self.sent, self.sent_at = reach, now
        return True


class ReachParts:
    """REACH_PARTs put back together: per relay, the parts of its newest generation.

    A relay's offer is applied only whole, so a lost part leaves the last whole offer
    in place until the next one. Bounded whatever a member sends: one generation per
    relay, at most 255 parts, and no more entries than `limit` (the network's size).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._parts: dict[str, tuple[int, int, dict[int, tuple[tuple[str, int], ...]]]] = {}

    def add(self, relay: str, part: control.ReachPart) -> tuple[tuple[str, int], ...] | None:
        """The whole offer once `part` completes it, else None. Raises BadPacket for an
        offer naming more peers than there are (its parts are then forgotten)."""
        held = self._parts.get(relay)
        if held is None or held[0] != part.gen or held[1] != part.total:
            held = self._parts[relay] = (part.gen, part.total, {})
        got = held[2]
        got[part.index] = part.peers
        if sum(map(len, got.values())) > self.limit:
            del self._parts[relay]
            raise BadPacket("relay.reach_parts_too_many", f"over {self.limit} peers")
        if len(got) < part.total:
            return None
        del self._parts[relay]
        return tuple(e for i in range(part.total) for e in got[i])

    def forget(self, relay: str) -> None:
        self._parts.pop(relay, None)


class ReachTimes(NamedTuple):
    """The refresh times of a network's size (seconds): every node of the network
    computes the same ones from the same file, senders and receivers alike."""

    refresh: float = REACH_REFRESH
    ride: float = REACH_RIDE
    late: float = REACH_REFRESH_LATE
    expiry: float = REACH_EXPIRY

    @classmethod
    def of(cls, nodes: int) -> ReachTimes:
        refresh = max(REACH_REFRESH, nodes * REACH_REFRESH_PER_NODE)
        return cls(refresh, 0.75 * refresh, 2 * refresh, 3 * refresh + 5.0)


class ReachTable:
    """What each relay offered, and the candidates per peer it adds up to.

    `offers` holds each relay's last REACH as received (relay -> peer -> RTT µs
    from the relay, and when). `apply(relay, usable)` folds one relay's offer into
    the per-peer candidates (`candidates[peer][relay]`), or withdraws it when the
    relay is not usable, and returns the peers whose candidate set changed: the
    cost is the diff between what was applied and what is offered, never a scan
    of every peer for every relay. `work` counts peers touched, for tests.
    """

    def __init__(self, expiry: float = REACH_EXPIRY) -> None:
        self.expiry = expiry
        self.offers: dict[str, tuple[dict[str, int], float]] = {}
        self.candidates: dict[str, dict[str, int]] = {}
        self._applied: dict[str, dict[str, int]] = {}
        # At or before every offer's time (a lower bound: a replaced offer only gets
        # newer), so `expire` scans only when one may have expired.
        self._oldest = float("inf")
        self.work = 0

    def offer(self, relay: str, peers: dict[str, int], now: float) -> None:
        """Keep `peers` (not copied: the caller hands over a dict it no longer changes)."""
        self.offers[relay] = (peers, now)
        self._oldest = min(self._oldest, now)

    def offered_by(self, relay: str) -> list[str]:
        """The peers `relay`'s applied offer names."""
        return list(self._applied.get(relay, ()))

    def forget(self, relay: str) -> set[str]:
        """The relay's offer is gone (its session went down); peers whose candidates changed."""
        self.offers.pop(relay, None)
        return self.apply(relay, usable=False)

    def expire(self, now: float) -> list[str]:
        """Relays whose offer is older than `expiry` (removed; `apply` them next)."""
        if now - self._oldest <= self.expiry:
            # No offer can be that old: the scan of every offer at every gossip round
            # was 4-5 % of a sans-IO 100-node cold start's CPU (issue 10).
            return []
        old = [r for r, (_, at) in self.offers.items() if now - at > self.expiry]
        for relay in old:
            del self.offers[relay]
        self._oldest = min((at for _, at in self.offers.values()), default=float("inf"))
        return old

    def apply(self, relay: str, usable: bool) -> set[str]:
        offered = self.offers.get(relay)
        want = offered[0] if usable and offered is not None else {}
        have = self._applied.get(relay, {})
        if want == have:
            if want:
                self._applied[relay] = want  # the one kept in `offers`: not two copies
            return set()
        changed: set[str] = set()
        for peer in have.keys() - want.keys():
            cands = self.candidates.get(peer)
            if cands is not None:
                cands.pop(relay, None)
                if not cands:
                    del self.candidates[peer]
            changed.add(peer)
        for peer, rtt in want.items() ^ have.items():  # C-speed diff of the two offers
            if want.get(peer) == rtt:  # from the new offer: added, or its RTT changed
                self.candidates.setdefault(peer, {})[relay] = rtt
                if peer not in have:
                    changed.add(peer)
        if want:
            self._applied[relay] = want  # the offer itself, never changed in place: no copy
        else:
            self._applied.pop(relay, None)
        self.work += len(changed)
        return changed
