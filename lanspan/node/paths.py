"""Underlay paths to one peer: probed liveness, RTT, loss, and the active choice.

Each configured endpoint of a peer is one path; an authenticated packet from
an address we did not know adds a learned path (roaming, NAT rebinding); a
node that says it reaches the peer adds a relay path through itself. Direct
paths win over relay paths whenever one is up.
A path is up while probe acks keep arriving: `probe_multiplier` intervals
without one takes it down (BFD-like). Authenticated traffic from a path is a
sign of life too: it keeps an up path up (it does not bring one up: only an
ack measures the round trip; a direct path that is down gets probed at once).
The node chooses the rate (fast for peers with traffic, slow for idle ones) and
passes the matching `dead_after` to `check`.
A learned path with no authenticated traffic for `LEARNED_EXPIRY` seconds is
removed (a replayed datagram from a spoofed source adds one that never answers).
Traffic uses the best up path; a path that comes back must stay up for
`hold_down` seconds before it is preferred again, unless nothing else is up.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import field
from enum import StrEnum
from typing import TYPE_CHECKING

from lanspan.addr import Addr, Relay, Target, format_target
from lanspan.config.model import Timers
from lanspan.records import record
from lanspan.wire.control import Probe

if TYPE_CHECKING:  # built only when a status is asked
    from lanspan.node.status import PathStatus

MAX_LEARNED = 4
LEARNED_EXPIRY = 60.0  # seconds without authenticated traffic before a learned path goes
LOSS_WINDOW = 20
_NEVER = float("-inf")
# A probe not answered within the path's deadline counts as lost, but its answer
# still proves the path works if it comes later (a loaded machine, issue 10: 100
# agents on 2 cores answered after 15-20 s, so no path ever came up and every
# peer's relays were probed too). At most LATE_MAX such probes per path, for
# LATE_WINDOW seconds.
LATE_MAX = 8
LATE_WINDOW = 60.0
# Relay paths of a peer are probed once its direct paths had this long to answer
# (a probe outstanding this long, or lost): at a cold start nearly every peer is
# reached directly, and probing three relays of each from the start quadrupled
# the probe traffic of 100 agents (issue 10).
RELAY_PROBE_AFTER = 1.0
# With no active path, a peer's first handshake attempt goes over its direct paths
# only; its retries (the first FIRST_RETRY, 0.25 s, later) through the relays too.
RELAY_HANDSHAKE_AFTER = 0.2
# A path is asked at most once per this fraction of a probe interval, however often
# its peer's probes are due: a sign of life from one down path probes every path of
# the peer at once, and a member sealing datagrams from ever new source addresses
# (each a learned path, never asked) made a probe of each of its paths per datagram,
# each outstanding until it expired (bench/fuzz, node.sealed, seed 20: 7 probes
# outstanding on one path within 75 ms). The regular rounds come a whole interval
# apart and are not held back.
PROBE_GAP = 0.9
# A better path must beat the active one by this factor to take over.
SWITCH_FACTOR = 0.7


class LossWindow:
    """The last LOSS_WINDOW probe results (True: answered), oldest first, as two ints.

    Every path of every peer has one: a `deque(maxlen=20)` of bools was ~630 bytes
    a path, ~250 KiB per agent at 99 peers with their relay paths (issue 10).
    """

    __slots__ = ("_lost", "_n")

    def __init__(self) -> None:
        self._lost = 0  # bit i: the i-th most recent result was a loss
        self._n = 0

    def append(self, ok: bool) -> None:
        self._lost = ((self._lost << 1) | (not ok)) & _WINDOW_MASK
        self._n = min(self._n + 1, LOSS_WINDOW)

    def clear(self) -> None:
        self._lost = self._n = 0

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> bool:
        if not -self._n <= i < self._n:
            raise IndexError("loss window index out of range")
        back = -1 - i if i < 0 else self._n - 1 - i  # 0: the most recent
        return not (self._lost >> back) & 1

    def __iter__(self) -> Iterator[bool]:
        return (not (self._lost >> back) & 1 for back in range(self._n - 1, -1, -1))

    def any_lost(self) -> bool:
        """Whether a result of the window is a loss (`Path.loss > 0`, in one call)."""
        return self._lost != 0

    def count(self, value: bool) -> int:
        lost = self._lost.bit_count()
        return self._n - lost if value else lost

    def loss(self) -> float:
        """The fraction of the window lost (0.0 when empty), in one call."""
        return self._lost.bit_count() / self._n if self._n else 0.0

    def __repr__(self) -> str:
        return f"LossWindow({list(self)})"


_WINDOW_MASK = (1 << LOSS_WINDOW) - 1


@record(slots=True)
class Path:
    target: Target  # an underlay address (direct) or a relay node
    configured: bool
    up: bool = False
    up_since: float | None = None
    last_ack: float | None = None
    last_seen: float | None = None
    rtt: float | None = None  # smoothed, seconds
    outstanding: dict[int, float] = field(default_factory=dict)  # seq -> sent at
    late: dict[int, float] = field(default_factory=dict)  # past the deadline, seq -> sent
    results: LossWindow = field(default_factory=LossWindow)
    added: float = 0.0  # when the path was added (learned paths expire from here)
    text: str = field(init=False, repr=False)  # `format_target(target)`: every status shows it
    # The relaying node's name for a relay path, None for a direct one (read for every
    # path of every peer a REACH changes: a property's isinstance was ~6 % of a cold start).
    relay: str | None = field(init=False, repr=False)
    # (what the status was made of, the PathStatus made): `NodeCore._path_status`
    shown: tuple[tuple[bool, float | None, float, bool, bool], PathStatus] | None = field(
        default=None, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        self.text = format_target(self.target)
        self.relay = self.target.node if isinstance(self.target, Relay) else None

    def alive_at(self) -> float | None:
        """The last sign of life: a probe ack or authenticated traffic from the path."""
        if self.last_ack is None:
            return self.last_seen
        if self.last_seen is None:
            return self.last_ack
        return max(self.last_ack, self.last_seen)

    @property
    def loss(self) -> float:
        return self.results.loss()


class PathEventKind(StrEnum):
    UP = "path_up"
    DOWN = "path_down"
    SWITCH = "path_switch"
    LEARNED = "path_learned"
    EXPIRED = "path_expired"


@record(frozen=True, slots=True)
class PathEvent:
    kind: PathEventKind
    target: Target
    detail: str = ""


class PeerPaths:
    def __init__(self, endpoints: Sequence[Addr], timers: Timers) -> None:
        self.timers = timers
        self.paths: list[Path] = [Path(a, configured=True) for a in endpoints]
        self.active: Path | None = None
        # The relay paths in `paths`, by relaying node: only `set_relays` adds or removes one.
        self._relays: dict[str, Path] = {}
        # Since when handshakes went out with no active path (`candidates`).
        self._no_active_since: float | None = None
        self._seq = 0
        self._events: list[PathEvent] = []

    @property
    def dead_after(self) -> float:
        return self.timers.probe_interval * self.timers.probe_multiplier

    def take_outputs(self) -> list[PathEvent]:
        """Path state changes since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    def set_endpoints(self, endpoints: Sequence[Addr]) -> None:
        """New configured endpoints; paths that stay keep their state.

        A dropped endpoint that still works stays as a learned path, so traffic
        keeps flowing until a configured one is up and past its hold-down.
        """
        keep = {p.target: p for p in self.paths}
        others = [
            p for p in self.paths if p.target not in endpoints and (not p.configured or p.up)
        ]  # learned, relays, and dropped endpoints still up
        for p in others:
            p.configured = False
        self.paths = [keep.get(a) or Path(a, configured=True) for a in endpoints] + others
        for p in self.paths[: len(endpoints)]:
            p.configured = True
        if self.active is not None and self.active not in self.paths:
            self.active = None

    def relays(self) -> set[str]:
        return set(self._relays)

    def set_relays(self, relays: set[str]) -> bool:
        """Relay paths through exactly these nodes (others are removed); True if one was added."""
        have = self._relays
        if have.keys() == relays:
            return False
        for gone in have.keys() - relays:
            path = have.pop(gone)
            self.paths.remove(path)
            if self.active is path:
                self.active = None
        new = sorted(relays - have.keys())
        for name in new:
            path = have[name] = Path(Relay(name), configured=False)
            self.paths.append(path)
        return bool(new)

    def find(self, target: Target) -> Path | None:
        for p in self.paths:
            if p.target == target:
                return p
        return None

    def destination(self) -> Target | None:
        """Where data goes now: the active path, else the freshest sign of life."""
        if self.active is not None:
            return self.active.target
        seen = [p for p in self.paths if p.last_seen is not None]
        if seen:
            return max(seen, key=lambda p: p.last_seen or 0.0).target
        return self.paths[0].target if self.paths else None

    def candidates(self, now: float) -> list[Target]:
        """Where a handshake goes: the active path; with none, the direct paths, and the
        relay paths too from RELAY_HANDSHAKE_AFTER on (at once if there are no direct
        paths). At a cold start of 100 nodes every initiation also went through up to
        three relays as soon as their REACH came: a third of each node's datagrams,
        when nearly every pair reaches the other directly (issue 10)."""
        if self.active is not None:
            self._no_active_since = None
            return [self.active.target]
        direct = [p.target for p in self.paths if p.relay is None]
        if not direct or len(direct) == len(self.paths):
            return [p.target for p in self.paths]
        since = self._no_active_since
        if since is None:
            since = self._no_active_since = now
        if now >= since + RELAY_HANDSHAKE_AFTER:
            return [p.target for p in self.paths]
        return direct

    def direct_up(self) -> bool:
        return any(p.up and p.relay is None for p in self.paths)

    def direct_tried(self, now: float, patience: float = 0.0) -> bool:
        """The direct paths had their chance: there are none, or one lost a probe,
        or one has had a probe outstanding for RELAY_PROBE_AFTER (or `patience`, an
        overloaded node's, if longer), or the peer's last datagram came through a
        relay (it found no direct path; in tests/test_node_twocore.py an overloaded
        relay-only pair's relay path came up 7.2 s after its session when it waited
        out `patience` first, 4.8 s with this)."""
        direct = [p for p in self.paths if p.relay is None]
        if not direct:
            return True
        relayed = max((p.last_seen or _NEVER for p in self.paths if p.relay), default=_NEVER)
        if relayed > max(p.alive_at() or _NEVER for p in direct):
            return True
        after = max(RELAY_PROBE_AFTER, patience)
        for p in direct:
            if p.late or (p.results and p.results[-1] is False):
                return True
            if any(now - sent >= after for sent in p.outstanding.values()):
                return True
        return False

    def dead_at(self, dead_after: float, since: float | None = None) -> float | None:
        """When `check(now, dead_after, since)` would first take the active path down
        if nothing more came from it; None without an up active path."""
        a = self.active
        if a is None or not a.up:
            return None
        alive = a.alive_at()
        if since is not None and (alive is None or alive < since):
            alive = since
        return None if alive is None else alive + dead_after

    def direct_lossy(self, now: float) -> bool:
        """The direct path in use shows trouble: down, losses in its window, or a probe
        unanswered for longer than a probe interval (so relays get probed early)."""
        a = self.active
        if a is None or a.relay is not None or not a.up:
            return True
        if a.results and a.results[-1] is False:
            return True
        late = now - self.timers.probe_interval * 1.5
        return any(sent < late for sent in a.outstanding.values())

    def probes(
        self, now: float, *, relays: bool = True, quiet_since: float | None = None
    ) -> list[tuple[Target, Probe]]:
        """Probes to send now: every path, or without relay paths (`relays=False`);
        with `quiet_since`, only paths that are down or silent since then."""
        out = []
        stamp = int(now * 1e9)
        soonest = now - self.timers.probe_interval * PROBE_GAP
        for index, p in enumerate(self.paths):
            if not relays and p.relay is not None:
                continue
            if p.outstanding and max(p.outstanding.values()) > soonest:
                continue  # asked within the interval: its answer is on its way
            if quiet_since is not None and p.up:
                alive = p.alive_at()
                if alive is not None and alive >= quiet_since:
                    continue  # heard from lately: no need to ask (a down one is asked)
            self._seq = (self._seq + 1) & 0xFFFFFFFF
            p.outstanding[self._seq] = now
            out.append((p.target, Probe(False, index, self._seq, stamp)))
        return out

    def ack(self, probe: Probe, now: float) -> None:
        # Sequence numbers are unique per peer, so they name the path: paths may come
        # and go (relays, reloads) without crediting an ack to the wrong one.
        late = False
        for p in self.paths:
            sent = p.outstanding.pop(probe.seq, None)
            if sent is None:
                sent = p.late.pop(probe.seq, None)
                late = sent is not None
            if sent is not None:
                break
        else:
            return  # duplicated, too late, or for a path that was removed
        if not late:
            p.results.append(True)  # a late one was counted lost already
        sample = now - sent
        p.rtt = sample if p.rtt is None else 0.8 * p.rtt + 0.2 * sample
        p.last_ack = now
        if not p.up:
            p.up, p.up_since = True, now
            self._events.append(
                PathEvent(PathEventKind.UP, p.target, f"rtt {sample * 1000:.2f} ms")
            )
        self._choose(now)

    def proven(self, src: Target, rtt: float, now: float) -> None:
        """A handshake completed over `src`, `rtt` after our message went out: our
        initiation was answered from there (the responder answers from the address it
        reached), or our response was confirmed from where it went. Either way the
        path works both ways, as a probe's ack shows, and is up from now (at a cold
        start of 100 nodes every new session's first probe exchanges were a third of
        the agents' datagrams, and what a node offers to relay waited for them,
        issue 10)."""
        p = self.find(src)
        if p is None or p.up:
            return
        p.rtt = rtt
        p.last_ack = now
        p.up, p.up_since = True, now
        self._events.append(
            PathEvent(PathEventKind.UP, p.target, f"rtt {rtt * 1000:.2f} ms, handshake")
        )
        self._choose(now)

    def seen(self, src: Target, now: float) -> bool:
        """An authenticated datagram arrived from `src`. True: it came over a direct path
        that is down and had no probe for a probe interval, so the node probes it now,
        not at its idle time (a restarted peer, a path back: up to ~5 s otherwise; the
        probe it sends is then outstanding, so this is at most once an interval)."""
        a = self.active
        if a is not None and a.target == src and a.up:  # the common case
            a.last_seen = now
            return False
        p = self.find(src)
        if p is None and isinstance(src, Relay):
            # Relay paths come from REACH offers only; a datagram relayed by a node that
            # does not offer the peer (yet) is answered that way but does not add a path.
            return False
        if p is None:
            p = Path(src, configured=False, added=now)
            learned = [q for q in self.paths if not q.configured and q.relay is None]
            if len(learned) >= MAX_LEARNED:
                self.paths.remove(min(learned, key=lambda q: q.last_seen or 0.0))
            self.paths.append(p)
            self._events.append(PathEvent(PathEventKind.LEARNED, src))
            if not any(q.configured for q in self.paths):
                # A peer we cannot dial (behind NAT): its newest address is the way back.
                self._activate(p, now, "roamed")
        p.last_seen = now
        if self.active is None:
            self._choose(now, fallback=p)
        if p.up or p.relay is not None:
            return False  # relay paths are probed only while they may be needed
        asked = max(p.outstanding.values(), default=None)
        return asked is None or now - asked >= self.timers.probe_interval

    def check(
        self, now: float, dead_after: float | None = None, since: float | None = None
    ) -> None:
        """Expire outstanding probes, declare silent paths down, drop stale learned ones.

        `dead_after` (default: the fast rate's) is how long a path may stay silent;
        `since` is when that rate started (a peer that just got busy gets one full
        fast window from then, not judged by the slow rate's older acks)."""
        dead = self.dead_after if dead_after is None else dead_after
        for p in self.paths:
            if p.outstanding:
                for seq in [s for s, t in p.outstanding.items() if now - t > dead]:
                    p.late[seq] = p.outstanding.pop(seq)
                    p.results.append(False)
            if p.late:
                for seq in [s for s, t in p.late.items() if now - t > LATE_WINDOW]:
                    del p.late[seq]
                while len(p.late) > LATE_MAX:
                    del p.late[next(iter(p.late))]  # the oldest (insertion order)
            if p.up:
                alive = p.alive_at()
                if since is not None and (alive is None or alive < since):
                    alive = since
                if alive is None or now - alive > dead:
                    p.up, p.up_since = False, None
                    self._events.append(
                        PathEvent(PathEventKind.DOWN, p.target, "probes unanswered")
                    )
        stale = [
            p
            for p in self.paths
            if not p.configured
            and p.relay is None
            and now - (p.alive_at() or p.added) > LEARNED_EXPIRY
        ]
        for p in stale:
            self.paths.remove(p)
            self._events.append(PathEvent(PathEventKind.EXPIRED, p.target, "no traffic"))
            if self.active is p:
                self.active = None
        self._choose(now)

    def _eligible(self, p: Path, now: float) -> bool:
        return p.up and p.up_since is not None and now - p.up_since >= self.timers.hold_down

    def _choose(self, now: float, fallback: Path | None = None) -> None:
        up = [p for p in self.paths if p.up]
        # Configured paths first, then learned ones (roaming), relays only when neither is up.
        pool = [p for p in up if p.configured] or [p for p in up if p.relay is None] or up
        eligible = [p for p in pool if self._eligible(p, now)] or pool
        best = min(eligible, key=_rtt_key, default=None)
        cur = self.active
        if best is None:
            if fallback is not None and cur is None:
                self._activate(fallback, now, "first sign of life")
            return  # else keep sending where we last could: nothing better is known
        if cur is None or not cur.up:
            self._activate(best, now, "active path down" if cur else "first path up")
        elif best is cur or not self._eligible(best, now):
            return
        elif cur.relay is not None and best.relay is None:
            self._activate(best, now, "direct path back")
        elif not cur.configured and best.configured:
            self._activate(best, now, "configured path back")
        elif cur.rtt is not None and best.rtt is not None and best.rtt < SWITCH_FACTOR * cur.rtt:
            self._activate(best, now, f"rtt {best.rtt * 1000:.2f} ms < {cur.rtt * 1000:.2f}")

    def _activate(self, p: Path, now: float, why: str) -> None:
        if self.active is not p and p.relay is not None:
            why = f"{why}; through relay {p.relay}"
        if self.active is p:
            return
        self.active = p
        self._events.append(PathEvent(PathEventKind.SWITCH, p.target, why))


def _rtt_key(p: Path) -> float:
    return p.rtt if p.rtt is not None else 1e9
