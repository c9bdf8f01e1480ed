"""SessionTable: every peer's WireGuard-design session, sans-IO.

Fed datagrams and `now` (a monotonic clock chosen by the caller), it hands
back plaintext, and queues `Transmit`s and `SessionEvent`s in an outbox.
Timers follow the WireGuard paper §6 (constants below); the handshake
itself is `handshake.py`, its state table `machine.py`.

Hot paths (`seal`, transport `receive`) touch a cached AEAD object, a
precompiled struct and a few attributes; everything else is off them.
"""

from __future__ import annotations

import collections
import heapq
from collections.abc import Callable
from typing import Literal

from cryptography.exceptions import InvalidTag

from lanspan.addr import Target as Addr
from lanspan.errors import BadPacket
from lanspan.noise import CipherName, HandshakeState, aead_for, nonce_struct, public_key
from lanspan.records import record
from lanspan.session.cookie import CookieChecker, CookieJar
from lanspan.session.handshake import (
    TAI64N_LEN,
    CipherChoice,
    consume_initiation_untrusted,
    consume_response_untrusted,
    create_initiation,
    create_response,
    tai64n,
)
from lanspan.session.machine import HsAction, HsInput, HsState, step
from lanspan.session.ratelimit import InitiationBudget, InitiationCache, SourceRateLimiter
from lanspan.session.replay import ReplayWindow
from lanspan.wire.messages import (
    MAC1_OFFSET_INITIATION,
    MAC1_OFFSET_RESPONSE,
    MAC2_OFFSET_INITIATION,
    MIN_TRANSPORT_LEN,
    TRANSPORT_HEADER,
    TRANSPORT_HEADER_LEN,
    TYPE_TRANSPORT,
    CookieReply,
    HandshakeInitiation,
    HandshakeResponse,
    parse_untrusted,
    receiver_index_untrusted,
)

__all__ = [
    "FIRST_RETRY",
    "INITIATIONS_PER_SECOND",
    "INITIATIONS_PER_SECOND_SLOW",
    "INITIATION_BURST_EXTRA",
    "KEEPALIVE_TIMEOUT",
    "MAX_QUEUED",
    "QUEUE_MAX_AGE",
    "REJECT_AFTER_MESSAGES",
    "REJECT_AFTER_TIME",
    "REKEY_AFTER_MESSAGES",
    "REKEY_AFTER_TIME",
    "REKEY_ATTEMPT_TIME",
    "REKEY_DEFER",
    "REKEY_SPREAD",
    "REKEY_TIMEOUT",
    "REKEY_TIMEOUT_JITTER",
    "RETRY_MAX",
    "RETRY_MAX_BEHIND_NAT",
    "RETRY_MAX_JITTER",
    "RETRY_SOON_INTERVAL",
    "Addr",
    "Delivered",
    "PeerStatus",
    "SessionEvent",
    "SessionTable",
    "Transmit",
]

REKEY_AFTER_MESSAGES = 2**60
REJECT_AFTER_MESSAGES = 2**64 - 2**13 - 1
REKEY_AFTER_TIME = 120.0
REJECT_AFTER_TIME = 180.0
REKEY_ATTEMPT_TIME = 90.0
REKEY_TIMEOUT = 5.0
REKEY_TIMEOUT_JITTER = 1 / 3  # up to 333 ms added to each retry
# An initiator's timed rekey comes up to this much before REKEY_AFTER_TIME, at
# random: 100 agents whose 4 950 sessions came up within a minute rekeyed them
# all within the next, on the same two cores (issue 10); spread, the wave is
# lower, and of two sides that both initiated, one usually goes first (its new
# keypair then makes the other one the responder, which does not rekey on time).
REKEY_SPREAD = 20.0
# Both sides of a pair initiated at once (every pair of a cold start does): each then
# holds its own initiator keypair as current, and both would rekey on time, twice
# the work of the rekey wave (issue 10: 100 agents restarted at once). The side with
# the greater public key waits REKEY_DEFER more: the other side's rekey makes it the
# responder of the new keypair before then (and it never rekeys on time again); if
# that rekey has not come through by then, it rekeys itself, still REJECT_AFTER_TIME
# - REKEY_AFTER_TIME - REKEY_DEFER (30 s, six REKEY_TIMEOUT retries) before its keys
# expire.
REKEY_DEFER = 30.0
# With no session (cold start, a peer that went away), lanspan wants the peer back
# within a second or two of the moment it can be reached, forever: the retry timer
# runs out after 0.25, 0.5, 1 s, then every RETRY_MAX + [0, RETRY_MAX_JITTER) s for
# as long as the peer is configured. A retry is an initiation (148 bytes, three
# X25519 here, five at the peer, two more for its response), so it is not free:
#  - A retry does not forget the initiations before it: a response to any of the
#    last _MAX_PENDINGS is accepted (issue 10: with 100 nodes on 2 cores, responses
#    came back after the next retry and each was refused as unknown_receiver, for
#    ever). The responder likewise keeps its last _MAX_NEXT offered keypairs.
#  - All retries and initiations of this node share one token bucket refilled at
#    INITIATIONS_PER_SECOND, holding one token per peer plus INITIATION_BURST_EXTRA.
#    It is full at its first take, and a NodeCore adds its peers one by one, each
#    initiated as it is added: its first wave is INITIATION_BURST_EXTRA + 1 (a few
#    more if peers it does not dial come first), the rest go at the rate (faster
#    while answers are prompt: PROMPT_ANSWER_TOKENS), and most
#    pairs come up first by the peer's initiation (answered at once, never
#    budgeted). A node behind NAT, whom no peer can dial, gives each of its first
#    initiations its own token (`initiate(own_token=True)`): its whole first wave.
#    Tried in session 19 and dropped for every node: a whole first wave
#    (a token added with each peer) to the half of the peers this node was to dial
#    first, the other half 0.5 s later unless they dialed. 100 agents restarted
#    together on 2 cores then dropped 6 400-9 000 handshakes that had waited over 2 s
#    in their sockets, against 1-460, and came up in 32.6 and 38.3 s against 33.0 and
#    18.5 s (alternated in one lab). A retry that finds no token
#    waits, not lost; the next token goes to a peer with a sign of life
#    (retry_soon) first, then to one with payloads queued, then to one heard from
#    lately, and last to peers that never answered: so while tokens are short, a
#    peer that gives no response at all is the one that backs off further (to its
#    share of the budget: its rank among the waiting peers / INITIATIONS_PER_SECOND).
#  - Why the per-peer cap stays ~2 s and is not raised to "a few seconds" for a
#    silent peer: after an outage heals (a site cut off for 5 minutes, say), the
#    pair is back one round trip after the first initiation from EITHER side that
#    crosses (any initiation is answered at once, never budgeted). Both sides'
#    timers run at the cap, in unrelated phases, so the worst case is the cap
#    itself; a cap of 4 s would make some pairs wait 4 s where the goal is 2 s. The
#    budget only stretches it when this node has more peers to retry than tokens,
#    i.e. not in an outage of a few peers with the rest up.
# The jitter keeps a healed site's nodes from retrying in lockstep. A rekey (old keys
# still work) keeps WireGuard's REKEY_TIMEOUT.
FIRST_RETRY = 0.25
_BACKOFF = (FIRST_RETRY, 2 * FIRST_RETRY, 4 * FIRST_RETRY)  # then RETRY_MAX
RETRY_MAX = 1.5
RETRY_MAX_JITTER = 0.5
# A node no peer can dial (behind NAT: no endpoints) heals each of its pairs alone:
# the worst case is its own cap and jitter, not the sooner of two sides' timers.
# RETRY_MAX_BEHIND_NAT + RETRY_MAX_JITTER = 1.5 s leaves a healed pair a round trip
# and a busy machine within the 2 s goal (chaos, seed 20: a NAT'd branch's agent
# restarted during a 4 s cut of its uplink answered 2.03 s after the heal).
RETRY_MAX_BEHIND_NAT = 1.0
# retry_soon() (a sign of life: a REACH naming the peer, a path back) restarts the
# backoff at most this often per peer, so a member toggling REACH cannot make us spin.
RETRY_SOON_INTERVAL = 1.0
KEEPALIVE_TIMEOUT = 10.0
# This node's own initiations, all peers together, at most INITIATIONS_PER_SECOND
# while they are answered within FIRST_RETRY (what the retry schedule assumes);
# answered later, the rate falls in proportion (latency L: 20 x 0.25 / L), never
# below INITIATIONS_PER_SECOND_SLOW. An initiation given up unanswered by a peer
# heard from since it went out counts as an answer that took at least that long.
# Before any answer the rate starts at INITIATIONS_PER_SECOND and halves every
# second. So 100 agents sharing 2 cores, whose answers take seconds, soon retry
# at most ~500 initiations a second together (10 X25519 of ~60 us per handshake,
# both sides: ~0.3 of the 2 cores), while a small mesh answering in milliseconds
# keeps 20 a second (tests/test_node_coldstart.py, worst pair of 13 nodes over
# seeds 0-2: 0.63/0.72/0.63 s; 0.63/1.13/0.63 s with a flat 5 a second).
INITIATIONS_PER_SECOND = 20.0
INITIATIONS_PER_SECOND_SLOW = 5.0
_LATENCY_GAIN = 1 / 4  # EWMA weight of each new answer's latency
_SILENCE_HALVING = 1.0  # before any answer, the rate halves every this many seconds
# The bucket holds one initiation per peer plus this many: a cold start's first wave
# goes to every peer at once, and only a few retries more before the rate applies
# (a sim of 40 nodes on one CPU, tests/test_session_scale.py: a burst of 128 let
# three more waves of retries out before any response could come back, and took
# 32 s to converge instead of 6 s).
INITIATION_BURST_EXTRA = 8.0
# Each answer that came within FIRST_RETRY gives the budget this many tokens (never
# past its capacity): the rate holds back only while answers are slow, as TCP's slow
# start grows its window with each prompt acknowledgement. A node restarted alone
# into a running mesh (its peers keep their old sessions, so none dials it) otherwise
# made its first INITIATION_BURST_EXTRA + 1 initiations at once and the rest at
# INITIATIONS_PER_SECOND: 100 nodes on a fake underlay answering in a millisecond
# (tests/test_session_budget.py), its last session up 4.5 s after the restart; in
# `lanspan lab chaos` on the 100-node lab, a guest node's pairs answered 2.2-3.3 s
# after its agent restarted. A prompt answer gives back its own token and one more:
# the wave doubles each round trip, 99 peers in seven.
PROMPT_ANSWER_TOKENS = 2
_MAX_PENDINGS = 3  # our initiations per peer whose response we still accept
# ... and this many older ones per peer, whose response is not accepted but, once
# authenticated, tells how long answers take (`_Peer.answer_latency`). Without them,
# a peer whose answers all came after _MAX_PENDINGS more retries was never heard
# from, its latency never learned, and retries kept their pace for ever: a relayed
# pair on an overloaded machine (answers 2.4 s late, retries restarted by every
# sign of life) never got its session (issue 10, tests/test_session_scale.py).
_MAX_GIVEN_UP = 3
# No retry to a peer sooner than RETRY_LATENCY_FACTOR x the time its answers take
# (`_Peer.answer_latency`; at most RETRY_LATENCY_CAP): on a loaded machine answers
# took 6-12 s while retries went every ~2 s, so each answer came for an initiation
# no longer among the last _MAX_PENDINGS, refused as unknown_receiver, until the
# keys expired (issue 10, 32 agents on 2 cores). Spaced by the latency, the last
# _MAX_PENDINGS cover 4.5 x it. Answers in milliseconds leave the schedule as is.
RETRY_LATENCY_FACTOR = 1.5
RETRY_LATENCY_CAP = 10.0
_MAX_NEXT = 3  # keypairs per peer we offered as responder, not yet confirmed
# A peer whose initiation we answered (an offer in `nexts`, unconfirmed) is about to
# confirm it with its first data: our own initiation to it then waits up to a round
# trip after that offer (OFFER_HOLD_FACTOR x how long its answers take, or ours if it
# has none yet, in [FIRST_RETRY, OFFER_HOLD_MAX]) instead of starting a second
# handshake. Measured before it: in a 100-node cold start on 2 cores 1 327 of 6 283
# first dials went to a peer just answered (872 with it: the machine's answers took
# over a second); sans-IO, 32 nodes started within 0.2 s (tests/test_node_coldstart.py,
# seeds 0-2), 532/533/536 handshakes for 496 pairs and the worst pair 0.88/0.83/0.85 s,
# with it 502/501/505 and 0.84/0.76/0.77 s. Held at most that long after the oldest
# offer, so a response that cannot reach the initiator delays our own dial by at most
# OFFER_HOLD_MAX, however often the peer retries.
OFFER_HOLD_FACTOR = 1.5
OFFER_HOLD_MAX = 1.0
_HEARD_RECENTLY = 2 * REKEY_TIMEOUT  # "heard from lately" when tokens are shared
# An initiator that receives data on a keypair this old rekeys now, so the
# keypair is replaced before REJECT_AFTER_TIME even if it never sends.
_REKEY_ON_RECEIVE_AGE = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
MAX_QUEUED = 1024  # payloads held per peer while a handshake runs
# ... and for at most this long: older ones are dropped (session.queue_stale) when
# the session comes up, or as new ones arrive. A guest's ARP, ping or SYN retries
# within a second or two, so an older payload is one its sender has sent again; a
# cold start of 100 agents (issue 10) took minutes per session, every guest's
# floods and probes queued towards each of 99 peers, and each session that came up
# flushed its full MAX_QUEUED of them (~2 million datagrams for the whole lab),
# work for nothing that kept the other sessions from coming up.
QUEUE_MAX_AGE = 2.0
_LOAD_WINDOW = 1.0  # seconds over which initiations are counted
# "Under load" (cookies first) by default: more fresh initiations in _LOAD_WINDOW
# than _LOAD_BASE + _LOAD_PER_PEER x peers. An honest peer sends at most ~3 in
# its first second (0.25 s, 0.5 s backoff) and ~1 a second after, so a 100-node
# cold start (99 peers, ~99-300 initiations in the first second) stays below
# 50 + 4 x 99 = 446 and costs no extra round trip; a flood above it still meets
# the cookie and the per-source limit. A fixed number can be given instead.
_LOAD_BASE = 50
_LOAD_PER_PEER = 4
# WireGuard's INITIATIONS_PER_SECOND: a peer replaying its own fresh
# initiations cannot make us do DH work more often than this.
_MIN_INITIATION_INTERVAL = 1 / 50
# Initiations that cost a DH, remembered by their bytes (see ratelimit.py).
_SEEN_SIZE = 1024
_SEEN_AGE = 30.0
# A duplicate initiation from a new source address gets the same response, at most
# to this many addresses per initiation (a node has a few endpoints, not more).
_MAX_RESPONSE_ADDRS = 4

_INF = float("inf")
_HEADER = TRANSPORT_HEADER  # struct "<IIQ": type+reserved as u32le, receiver, counter
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from


@record(frozen=True, slots=True)
class Transmit:
    """Send `data` to `peer`; `to` set => to that address (a handshake reply)."""

    peer: str | None
    data: bytes
    to: Addr | None = None


@record(frozen=True, slots=True)
class SessionEvent:
    """kind: "up" (new keypair confirmed), "down" (keys expired / peer removed),
    "handshake_failed" (REKEY_ATTEMPT_TIME passed without a response: queued
    payloads dropped, said once per outage; the handshake keeps being retried).
    `src`: for "up" as initiator, where the response came from (a path that works
    both ways, so the node sends there before any probe has answered); as responder,
    where our response went, when the confirming datagram came from there. `rtt`,
    then, how long after our initiation the response came, or after our response
    the confirmation (seconds)."""

    peer: str
    kind: str
    detail: str = ""
    src: Addr | None = None
    rtt: float | None = None


@record(frozen=True, slots=True)
class Delivered:
    """Authenticated plaintext from `peer`; `src` is where it came from; b"" = keepalive."""

    peer: str
    payload: bytes
    src: Addr


@record(frozen=True, slots=True)
class PeerStatus:
    peer: str
    established: bool
    last_handshake: float | None
    rx_bytes: int
    tx_bytes: int
    rx_messages: int
    tx_messages: int
    last_received: float | None


class _Keypair:
    """Transport keys from one handshake. Never repr'd with its keys."""

    __slots__ = (
        "answered_to",
        "cipher",
        "created",
        "decrypt",
        "encrypt",
        "initiator",
        "local_index",
        "nonce",
        "peer",
        "reject_at",
        "rekey_at",
        "rekey_on_receive_at",
        "rekey_timer_at",
        "remote_index",
        "replay",
        "send_counter",
        "send_key",
    )

    def __init__(
        self,
        peer: _Peer,
        cipher: CipherChoice,
        keys: tuple[bytes, bytes],
        *,
        initiator: bool,
        local_index: int,
        remote_index: int,
        now: float,
        rekey_early: float = 0.0,
    ) -> None:
        name: CipherName = cipher
        self.peer = peer
        # The send cipher is made on the first send, and dropped once the keypair is
        # `previous` (receive only): each cipher object holds ~4 KiB of OpenSSL
        # state, and a responder's offers never send (RSS, issue 10).
        self.cipher = name
        self.send_key: bytes | None = keys[0]
        self.encrypt: _Seal | None = None
        self.decrypt = aead_for(name, keys[1]).decrypt
        self.nonce = nonce_struct(name).pack
        self.initiator = initiator
        self.local_index = local_index
        self.remote_index = remote_index
        self.send_counter = 0
        self.replay = ReplayWindow()
        self.created = now
        self.answered_to: Addr | None = None  # a responder's: where its response went
        self.reject_at = now + REJECT_AFTER_TIME
        # Only the initiator rekeys on time, so both sides do not race (paper §6.2).
        self.rekey_at = now + REKEY_AFTER_TIME - rekey_early if initiator else _INF
        self.rekey_on_receive_at = now + _REKEY_ON_RECEIVE_AGE if initiator else _INF
        # A deferred rekey (REKEY_DEFER: both initiated) is due whether or not we send.
        self.rekey_timer_at = self.rekey_at if rekey_early < 0 else _INF

    def __repr__(self) -> str:
        return f"_Keypair(local={self.local_index:#x}, initiator={self.initiator})"

    def sender(self) -> _Seal:
        """The send cipher's encrypt, made now if this is the first send."""
        enc = self.encrypt
        if enc is None:
            if self.send_key is None:
                raise RuntimeError("a retired keypair never sends")
            enc = self.encrypt = aead_for(self.cipher, self.send_key).encrypt
        return enc

    def retire(self) -> None:
        """Receive only from now on (it is `previous`): the send key and cipher go."""
        self.encrypt = self.send_key = None


_Seal = Callable[[bytes, bytes, bytes | None], bytes]


def _retire(keypairs: list[_Keypair]) -> None:
    for kp in keypairs:
        kp.retire()


class _Pending:
    """Our initiation in flight (one of the last _MAX_PENDINGS to the peer)."""

    __slots__ = ("hs", "local_index", "peer", "sent")

    def __init__(self, peer: _Peer, hs: HandshakeState, local_index: int, sent: float) -> None:
        self.peer = peer
        self.hs = hs
        self.local_index = local_index
        self.sent = sent

    def __repr__(self) -> str:
        return f"_Pending(local={self.local_index:#x})"


class _Answered:
    """An initiation we answered: its response and the keypair it offers."""

    __slots__ = ("addrs", "kp", "peer", "response")

    def __init__(self, peer: _Peer, kp: _Keypair, response: bytes, src: Addr) -> None:
        self.peer = peer
        self.kp = kp
        self.response = response
        self.addrs = [src]  # where the response went (at most _MAX_RESPONSE_ADDRS)


class _Deferred:
    """A decrypted initiation refused as too soon (initiation_flood): no DH again."""

    __slots__ = ("hs", "peer", "sender", "timestamp")

    def __init__(self, peer: _Peer, hs: HandshakeState, timestamp: bytes, sender: int) -> None:
        self.peer = peer
        self.hs = hs
        self.timestamp = timestamp
        self.sender = sender


# What became of an initiation: answered, deferred, or refused for good (the reason).
_Seen = _Answered | _Deferred | str


class _Peer:
    __slots__ = (
        "answer_latency",
        "attempt_started",
        "backoff",
        "current",
        "failed_reported",
        "given_up",
        "hurry",
        "jar",
        "keepalive_at",
        "last_handshake",
        "last_heard",
        "last_initiation",
        "last_initiation_sent",
        "last_received",
        "last_sent",
        "last_timestamp",
        "name",
        "new_handshake_at",
        "nexts",
        "pendings",
        "persistent_keepalive",
        "previous",
        "psk",
        "public",
        "queue",
        "queued_at",
        "retry_at",
        "retry_soon_until",
        "rx_bytes",
        "rx_messages",
        "state",
        "suspected",
        "tx_bytes",
        "tx_messages",
        "up",
        "waiting_since",
    )

    def __init__(
        self, name: str, public: bytes, psk: bytes | None, persistent_keepalive: float | None
    ) -> None:
        self.name = name
        self.public = public
        self.psk = psk
        self.persistent_keepalive = persistent_keepalive
        self.jar = CookieJar(public)
        self.state = HsState.IDLE
        # Our initiations in flight, oldest first (at most _MAX_PENDINGS); empty
        # in INITIATION_SENT while we wait for a token (then waiting_since is set).
        self.pendings: list[_Pending] = []
        self.given_up: list[_Pending] = []  # before those, oldest first (_MAX_GIVEN_UP)
        self.waiting_since: float | None = None
        self.hurry = False  # a sign of life: first in line for the next token
        # Every path went silent with the session up (suspect()): retry as if there
        # were no session (0.25, 0.5, 1, ~2 s), not every REKEY_TIMEOUT, until one
        # completes: the peer may have restarted and be waiting for us.
        self.suspected = False
        self.retry_at: float | None = None
        self.attempt_started: float | None = None
        self.backoff = 0  # index into _BACKOFF; len(_BACKOFF) = at the cap (never more)
        self.failed_reported = False  # handshake_failed already said for this outage
        self.last_initiation_sent = -_INF
        # How long this peer's answers to our initiations take (EWMA; None: none yet).
        self.answer_latency: float | None = None
        self.retry_soon_until = -_INF
        self.current: _Keypair | None = None
        # Still receivable, never current again: the one before current, or (both
        # sides initiated) the ones we offered as responder (at most _MAX_NEXT).
        self.previous: list[_Keypair] = []
        # Offered as responder, not yet confirmed, oldest first (at most _MAX_NEXT):
        # whichever the initiator sends on first becomes current.
        self.nexts: list[_Keypair] = []
        self.last_timestamp = bytes(TAI64N_LEN)
        self.queue: collections.deque[bytes] = collections.deque()
        self.queued_at: collections.deque[float] = collections.deque()  # one per payload
        self.keepalive_at: float | None = None  # passive keepalive due
        self.new_handshake_at: float | None = None  # sent data, no answer by then
        self.last_sent: float | None = None
        self.last_handshake: float | None = None
        self.last_initiation = -_INF  # when we last answered one of its initiations
        self.last_received: float | None = None
        self.last_heard = -_INF  # last authenticated message of any kind from the peer
        self.rx_bytes = self.tx_bytes = self.rx_messages = self.tx_messages = 0
        self.up = False

    def __repr__(self) -> str:
        return f"_Peer({self.name!r}, state={self.state})"

    def keypairs(self) -> list[_Keypair]:
        current = [self.current] if self.current is not None else []
        return [*self.previous, *current, *self.nexts]


class SessionTable:
    """All sessions of one node (one static key). Single-threaded, sans-IO."""

    def __init__(
        self,
        private_key: bytes,
        *,
        cipher: Literal["aesgcm", "chachapoly"] = "aesgcm",
        random_bytes: Callable[[int], bytes],
        wall_time: Callable[[], float],
        handshakes_per_second_under_load: int | None = None,
        initiations_per_second: float = INITIATIONS_PER_SECOND,
        initiation_burst_extra: float = INITIATION_BURST_EXTRA,
        index_prefix: int | None = None,
        retry_max: float = RETRY_MAX,
    ) -> None:
        if len(private_key) != 32:
            raise ValueError("private_key must be 32 bytes")
        if cipher not in ("aesgcm", "chachapoly"):
            raise ValueError(f"cipher must be 'aesgcm' or 'chachapoly', not {cipher!r}")
        if not retry_max > 0:
            raise ValueError(f"retry_max must be positive, not {retry_max!r}")
        if index_prefix is not None and not 0 <= index_prefix <= 0xFFFF:
            raise ValueError(f"index_prefix must be 0..0xffff, not {index_prefix!r}")
        # With a prefix, every local index is prefix << 16 | 16 random bits: the agent's
        # kernel filter drops transport datagrams without it, and never needs updating.
        self._index_prefix = index_prefix
        self.retry_max = retry_max  # RETRY_MAX, or RETRY_MAX_BEHIND_NAT
        self._private = private_key
        self.public_key: bytes = public_key(private_key)
        self._cipher: CipherChoice = cipher
        self._random_bytes = random_bytes
        self._wall_time = wall_time
        self._load_fixed = handshakes_per_second_under_load  # None: by the peer count
        self._load_limit = _LOAD_BASE if self._load_fixed is None else self._load_fixed
        self._load_times: collections.deque[float] = collections.deque()
        self._under_load_until = -_INF
        self._checker = CookieChecker(self.public_key, random_bytes)
        self._limiter = SourceRateLimiter()
        self._seen: InitiationCache[_Seen] = InitiationCache(_SEEN_SIZE, _SEEN_AGE)
        self.responses_resent = 0  # duplicates of an initiation answered from the cache
        self._peers: dict[str, _Peer] = {}
        self._by_public: dict[bytes, _Peer] = {}
        self._keypairs: dict[int, _Keypair] = {}
        self._pendings: dict[int, _Pending] = {}
        self._given_up: dict[int, _Pending] = {}  # every peer's `given_up`, by index
        self._burst_extra = initiation_burst_extra
        self._rate_max = initiations_per_second
        # How long our initiations take to be answered (EWMA over every response);
        # None until the first. It sets the budget's rate: see INITIATIONS_PER_SECOND.
        self._latency: float | None = None
        self._first_sent: float | None = None  # our first initiation, while none answered
        self._budget = InitiationBudget(initiations_per_second, initiation_burst_extra)
        # Set by the node: False while nothing can carry a datagram to the peer (a NAT'd
        # peer before any relay that reaches it is up). See _send_initiation.
        self.dialable: Callable[[str], bool] | None = None
        # Peers whose next initiation waits for a token (insertion order, bounded by
        # the peers): served by _serve_waiting in priority order.
        self._waiting: dict[str, _Peer] = {}
        self._outbox: list[Transmit | SessionEvent] = []
        # Timers: each peer's earliest deadline (_peer_deadline) sits in a heap, so
        # next_timer() is O(1) and handle_timer() touches only the peers due. Anything
        # that may move a peer's deadline marks it touched (_touched: names); the next
        # next_timer()/handle_timer() recomputes those few. A heap entry (due, name)
        # whose due is not _due[name] is stale and skipped.
        self._heap: list[tuple[float, str]] = []
        self._due: dict[str, float] = {}
        self._touched: set[str] = set()
        # Latest `now` seen off the hot path: "due at once" for next_timer(),
        # which has no `now` of its own (a finite value, never -inf).
        self._clock = 0.0
        self.drops: collections.Counter[str] = collections.Counter()

    def __repr__(self) -> str:
        return f"SessionTable(peers={len(self._peers)}, cipher={self._cipher})"

    # ---- peers -------------------------------------------------------------

    def add_peer(
        self,
        peer: str,
        public_key: bytes,
        psk: bytes | None = None,
        persistent_keepalive: float | None = None,
    ) -> None:
        if peer in self._peers:
            raise ValueError(f"peer {peer!r} already added")
        if len(public_key) != 32:
            raise ValueError("public_key must be 32 bytes")
        if public_key in self._by_public or public_key == self.public_key:
            raise ValueError(f"public key of {peer!r} is already in use")
        if psk is not None and len(psk) != 32:
            raise ValueError("psk must be 32 bytes")
        if persistent_keepalive is not None and persistent_keepalive <= 0:
            raise ValueError("persistent_keepalive must be positive")
        p = _Peer(peer, public_key, psk, persistent_keepalive)
        self._peers[peer] = p
        self._by_public[public_key] = p
        self._touched.add(peer)
        self._peers_changed()

    def _peers_changed(self) -> None:
        self._budget.resize(self._burst_extra + len(self._peers))
        if self._load_fixed is None:
            self._load_limit = _LOAD_BASE + _LOAD_PER_PEER * len(self._peers)
        while len(self._load_times) > self._load_limit + 1:
            self._load_times.popleft()

    def remove_peer(self, peer: str) -> None:
        p = self._peer(peer)
        self._hs(p, HsInput.REMOVE, 0.0)

    def _peer(self, peer: str) -> _Peer:
        try:
            return self._peers[peer]
        except KeyError:
            raise KeyError(f"unknown peer {peer!r}") from None

    # ---- sending -----------------------------------------------------------

    def initiate(self, peer: str, now: float, *, own_token: bool = False) -> None:
        """Start a handshake with `peer`. With `own_token`, the first initiation brings
        its own token to the budget (see INITIATION_BURST_EXTRA)."""
        self._clock = max(self._clock, now)
        if own_token:
            self._budget.grant(now)
        self._hs(self._peer(peer), HsInput.WANT_HANDSHAKE, now)

    def no_answer_owed(self, peer: str, now: float) -> None:
        """What `peer` just sent (at `now`) expects no answer (a probe's ack, a REACH;
        sealed with `no_answer=True`): it arms no passive keepalive.

        Idle peers are probed about every 20 s at 99 peers, past the keepalive
        timeout, and relays refresh their REACH every 60 s: a keepalive after each ack or
        REACH was a sixth of an idle agent's datagrams and wake-ups (issue 10).
        Only a keepalive armed by this very datagram is dropped; one owed for
        earlier data still goes.
        """
        p = self._peers.get(peer)
        if p is not None and p.keepalive_at == now + KEEPALIVE_TIMEOUT:
            p.keepalive_at = None
            self._touched.add(p.name)

    def seal(self, peer: str, payload: bytes, now: float) -> bytes | None:
        p = self._peers[peer]
        kp = p.current
        if kp is None or now >= kp.reject_at or kp.send_counter >= REJECT_AFTER_MESSAGES:
            self._enqueue(p, payload, now)
            self._hs(p, HsInput.WANT_HANDSHAKE, now)
            return None
        n = kp.send_counter
        kp.send_counter = n + 1
        out = _pack_header(TYPE_TRANSPORT, kp.remote_index, n) + (kp.encrypt or kp.sender())(
            kp.nonce(n), payload, None
        )
        p.tx_bytes += len(out)
        p.tx_messages += 1
        p.last_sent = now
        if p.keepalive_at is not None or p.persistent_keepalive is not None:  # see seal_many
            self._touched.add(p.name)
            p.keepalive_at = None
        if payload and p.new_handshake_at is None:
            p.new_handshake_at = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT
            self._touched.add(p.name)
        if (now >= kp.rekey_at or n >= REKEY_AFTER_MESSAGES) and p.state is HsState.IDLE:
            self._hs(p, HsInput.WANT_HANDSHAKE, now)
        return out

    def seal_many(
        self, peer: str, payloads: list[bytes], now: float, *, no_answer: bool = False
    ) -> list[bytes] | None:
        """Seal `payloads` for `peer` (None: queued until a session is up).

        `no_answer`: these expect no answer (a probe's ack, a REACH), so they do not
        arm the "sent data, heard nothing" handshake; the receiver owes no keepalive
        for them (`no_answer_owed`).
        """
        p = self._peers[peer]
        kp = p.current
        count = len(payloads)
        if kp is None or now >= kp.reject_at or kp.send_counter + count > REJECT_AFTER_MESSAGES:
            for payload in payloads:
                self._enqueue(p, payload, now)
            self._hs(p, HsInput.WANT_HANDSHAKE, now)
            return None
        n = kp.send_counter
        kp.send_counter = n + count
        encrypt, nonce, receiver = kp.encrypt or kp.sender(), kp.nonce, kp.remote_index
        out = [
            _pack_header(TYPE_TRANSPORT, receiver, n + i) + encrypt(nonce(n + i), payload, None)
            for i, payload in enumerate(payloads)
        ]
        p.tx_bytes += sum(map(len, out))
        p.tx_messages += count
        p.last_sent = now
        # The peer's deadline (`_peer_deadline`) moves only if one of its inputs does:
        # a passive keepalive no longer due, the "no answer" deadline armed, or the
        # persistent keepalive (it counts from last_sent). Otherwise the heap is right
        # as it is and the next wake has nothing to recompute.
        if p.keepalive_at is not None or p.persistent_keepalive is not None:
            self._touched.add(p.name)
            p.keepalive_at = None
        if count and not no_answer and p.new_handshake_at is None:
            p.new_handshake_at = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT
            self._touched.add(p.name)
        if (now >= kp.rekey_at or n + count > REKEY_AFTER_MESSAGES) and p.state is HsState.IDLE:
            self._hs(p, HsInput.WANT_HANDSHAKE, now)
        return out

    def _enqueue(self, p: _Peer, payload: bytes, now: float) -> None:
        self._drop_stale(p, now)
        if len(p.queue) >= MAX_QUEUED:
            p.queue.popleft()
            p.queued_at.popleft()
            self.drops["session.queue_full"] += 1
        p.queue.append(payload)
        p.queued_at.append(now)

    def _drop_stale(self, p: _Peer, now: float) -> None:
        """Drop the payloads queued more than QUEUE_MAX_AGE ago (oldest first)."""
        queue, times, limit = p.queue, p.queued_at, now - QUEUE_MAX_AGE
        while times and times[0] < limit:
            times.popleft()
            queue.popleft()
            self.drops["session.queue_stale"] += 1

    def _clear_queue(self, p: _Peer) -> int:
        """Empty `p`'s queue; how many payloads it held."""
        n = len(p.queue)
        p.queue.clear()
        p.queued_at.clear()
        return n

    def _flush(self, p: _Peer, now: float, *, keepalive_if_empty: bool) -> None:
        self._drop_stale(p, now)
        if not p.queue:
            if keepalive_if_empty:
                self._send_keepalive(p, now)
            return
        queued = list(p.queue)
        self._clear_queue(p)
        sealed = self.seal_many(p.name, queued, now)
        if sealed is not None:
            self._outbox.extend(Transmit(p.name, data) for data in sealed)

    def _send_keepalive(self, p: _Peer, now: float) -> None:
        data = self.seal(p.name, b"", now)
        if data is not None:
            self._outbox.append(Transmit(p.name, data))

    # ---- receiving ---------------------------------------------------------

    def receive(self, datagram: bytes, src: Addr, now: float) -> Delivered | None:
        if len(datagram) >= MIN_TRANSPORT_LEN:
            kind, index, counter = _unpack_header(datagram)
            if kind == TYPE_TRANSPORT:
                kp = self._keypairs.get(index)
                if kp is None:
                    self.drops["session.unknown_receiver"] += 1
                    return None
                if now >= kp.reject_at or counter >= REJECT_AFTER_MESSAGES:
                    self.drops["session.expired"] += 1
                    return None
                replay = kp.replay
                # In-order traffic (the common case) skips the bitmap lookup.
                if counter <= replay.greatest and not replay.check(counter):
                    self.drops["session.replay"] += 1
                    return None
                try:
                    payload = kp.decrypt(
                        kp.nonce(counter), memoryview(datagram)[TRANSPORT_HEADER_LEN:], None
                    )
                except InvalidTag:
                    self.drops["session.bad_auth"] += 1
                    return None
                if not replay.update(counter):
                    self.drops["session.replay"] += 1
                    return None
                p = kp.peer
                p.rx_bytes += len(datagram)
                p.rx_messages += 1
                p.last_received = p.last_heard = now
                # touched only when the deadline moves (see seal_many)
                if p.new_handshake_at is not None:
                    p.new_handshake_at = None
                    self._touched.add(p.name)
                if payload and p.keepalive_at is None:
                    p.keepalive_at = now + KEEPALIVE_TIMEOUT
                    self._touched.add(p.name)
                if kp is not p.current:
                    self._received_on_other(p, kp, now, src)
                elif now >= kp.rekey_on_receive_at and p.state is HsState.IDLE:
                    self._hs(p, HsInput.WANT_HANDSHAKE, now)
                return Delivered(p.name, payload, src)
        try:
            self._receive_handshake(datagram, src, now)
        except BadPacket as exc:
            self.drops[exc.reason] += 1
        return None

    def receive_many(self, batch: list[bytes], src: Addr, now: float) -> list[Delivered]:
        """`receive` for each datagram of `batch` (one GRO buffer, one sender), in order;
        what authenticated, in order.

        A transport message for the keypair the previous one of the batch
        authenticated under (which that `receive` confirmed if it was on offer),
        strictly in order, skips what that one
        already did (the keypair lookup, expiry, the replay bitmap, the peer's
        timers at this same `now`): one superframe's 46 fragments cost one full
        `receive` and 45 short ones. Anything else goes through `receive`.
        """
        out: list[Delivered] = []
        kp: _Keypair | None = None
        index = -1
        rx_bytes = rx_messages = 0
        for datagram in batch:
            if kp is not None and len(datagram) >= MIN_TRANSPORT_LEN:
                kind, idx, counter = _unpack_header(datagram)
                replay = kp.replay
                if (
                    kind == TYPE_TRANSPORT
                    and idx == index
                    and replay.greatest < counter < REJECT_AFTER_MESSAGES
                ):
                    try:
                        payload = kp.decrypt(
                            kp.nonce(counter), memoryview(datagram)[TRANSPORT_HEADER_LEN:], None
                        )
                    except InvalidTag:
                        self.drops["session.bad_auth"] += 1
                        continue
                    replay.update(counter)  # greater than any seen: always accepted
                    rx_bytes += len(datagram)
                    rx_messages += 1
                    p = kp.peer
                    if payload and p.keepalive_at is None:
                        p.keepalive_at = now + KEEPALIVE_TIMEOUT
                        self._touched.add(p.name)
                    out.append(Delivered(p.name, payload, src))
                    continue
            if rx_messages and kp is not None:
                kp.peer.rx_bytes += rx_bytes
                kp.peer.rx_messages += rx_messages
                rx_bytes = rx_messages = 0
            kp, index = None, -1
            got = self.receive(datagram, src, now)
            if got is None:
                continue
            out.append(got)
            # the keypair it authenticated under: the next ones of this batch use it
            idx = _unpack_header(datagram)[1]
            nxt = self._keypairs.get(idx)
            if nxt is not None and nxt.peer.name == got.peer:
                kp, index = nxt, idx
        if rx_messages and kp is not None:
            kp.peer.rx_bytes += rx_bytes
            kp.peer.rx_messages += rx_messages
        return out

    def _received_on_other(self, p: _Peer, kp: _Keypair, now: float, src: Addr) -> None:
        if kp in p.nexts:
            # The initiator used one of the keypairs we offered: it is confirmed (paper
            # §5.4.6). The other offers answered initiations it no longer waits for.
            for other in p.nexts:
                if other is not kp:
                    self._free(other)
            for old in p.previous:
                self._free(old)
            p.previous = [p.current] if p.current is not None else []
            _retire(p.previous)
            p.current, p.nexts = kp, []
            self._hs(p, HsInput.PEER_CONFIRMED, now)
            if src == kp.answered_to:
                # From where our response went: it arrived (the initiator uses the keys
                # it carried), so that path works both ways, as for the initiator.
                self._went_up(p, now, "responder", src, now - kp.created)
            else:
                self._went_up(p, now, "responder")
            self._flush(p, now, keepalive_if_empty=False)

    def _receive_handshake(self, datagram: bytes, src: Addr, now: float) -> None:
        msg = parse_untrusted(datagram)
        if isinstance(msg, HandshakeInitiation):
            self._on_initiation(datagram, msg, src, now)
        elif isinstance(msg, HandshakeResponse):
            self._on_response(datagram, msg, src, now)
        elif isinstance(msg, CookieReply):
            self._on_cookie(msg, now)
        else:  # a transport message that did not take the fast path cannot parse
            raise BadPacket("session.unexpected_transport")

    def _under_load(self, now: float) -> bool:
        times = self._load_times
        times.append(now)
        while times and times[0] <= now - _LOAD_WINDOW:
            times.popleft()
        if len(times) > self._load_limit:
            self._under_load_until = now + _LOAD_WINDOW
            while len(times) > self._load_limit + 1:  # bound memory under a flood
                times.popleft()
        return now < self._under_load_until

    def _on_initiation(
        self, datagram: bytes, msg: HandshakeInitiation, src: Addr, now: float
    ) -> None:
        # Cheapest checks first; the Diffie-Hellman (consume) only for a fresh
        # initiation from a source within its budget (WireGuard's order).
        if not self._checker.check_mac1(datagram, MAC1_OFFSET_INITIATION):
            raise BadPacket("session.bad_mac1")
        key = datagram[:MAC2_OFFSET_INITIATION]  # mac2 aside: it does not change the DH
        seen = self._seen.get(key, now)
        if seen is not None:
            self._on_duplicate(key, seen, src, now)
            return
        if self._under_load(now):
            # Under load, a source gets at most PER_SECOND (burst BURST) of our
            # handshake work, cookie replies included, and needs a valid mac2 (a
            # cookie proving it receives at `src`) before any DH.
            if not self._limiter.allow(src, now):
                raise BadPacket("session.rate_limited")
            if not self._checker.check_mac2(datagram, MAC2_OFFSET_INITIATION, src, now):
                reply = self._checker.cookie_reply(
                    datagram, MAC1_OFFSET_INITIATION, msg.sender, src, now
                )
                self._outbox.append(Transmit(None, reply, to=src))
                raise BadPacket("session.under_load")
        try:
            hs, timestamp = consume_initiation_untrusted(
                cipher=self._cipher, static_private=self._private, msg=msg
            )
        except BadPacket:  # not "bad_auth": keep that counter for transport data
            self._seen.put(key, "session.bad_handshake", now)
            raise BadPacket("session.bad_handshake") from None
        remote = hs.remote_static
        p = self._by_public.get(remote) if remote is not None else None
        if p is None:
            self._seen.put(key, "session.unknown_peer", now)
            raise BadPacket("session.unknown_peer")
        self._answer(key, p, hs, timestamp, msg.sender, src, now)

    def _answer(
        self,
        key: bytes,
        p: _Peer,
        hs: HandshakeState,
        timestamp: bytes,
        sender: int,
        src: Addr,
        now: float,
    ) -> None:
        """A decrypted initiation from `p`: respond, or say why not (and remember)."""
        if timestamp <= p.last_timestamp:
            self._seen.put(key, "session.stale_initiation", now)
            raise BadPacket("session.stale_initiation")
        if now - p.last_initiation < _MIN_INITIATION_INTERVAL:
            # Too soon after the last one we answered: refused for now, and kept
            # decrypted so that a copy arriving later costs no DH.
            self._seen.put(key, _Deferred(p, hs, timestamp, sender), now)
            raise BadPacket("session.initiation_flood")
        action, p.state = step(p.state, HsInput.VALID_INITIATION)
        assert action is HsAction.RESPOND
        index = self._new_index()
        response = create_response(
            hs=hs,
            psk=p.psk,
            ephemeral_private=self._random_bytes(32),
            sender_index=index,
            receiver_index=sender,
            jar=p.jar,
            now=now,
        )
        p.last_timestamp = timestamp
        p.last_initiation = now
        kp = _Keypair(
            p,
            self._cipher,
            hs.split_keys(),
            initiator=False,
            local_index=index,
            remote_index=sender,
            now=now,
        )
        p.last_heard = now
        p.nexts.append(kp)
        if len(p.nexts) > _MAX_NEXT:  # the oldest offer: its initiator moved on
            self._free(p.nexts.pop(0))
        self._touched.add(p.name)
        self._keypairs[index] = kp
        kp.answered_to = src
        self._seen.put(key, _Answered(p, kp, response, src), now)
        self._outbox.append(Transmit(p.name, response, to=src))

    def _on_duplicate(self, key: bytes, seen: _Seen, src: Addr, now: float) -> None:
        """A byte-identical copy of an initiation we already paid a DH for.

        The initiator sends its initiation to every candidate endpoint of ours, so
        copies arrive from several of its source addresses, and the return path of
        the one we answered first may not work (issue 10, two-provider sites). So
        while the keypair we offered is still unconfirmed, the same response (same
        bytes, same keypair, no new DH) goes back over each new source address, up
        to _MAX_RESPONSE_ADDRS per initiation. Any other copy is dropped."""
        if isinstance(seen, str):
            raise BadPacket("session.replayed_initiation")
        p = seen.peer
        if self._peers.get(p.name) is not p:  # removed (perhaps re-added) since
            self._seen.discard(key)
            raise BadPacket("session.replayed_initiation")
        if isinstance(seen, _Deferred):
            self._answer(key, p, seen.hs.clone(), seen.timestamp, seen.sender, src, now)
            return
        if seen.kp not in p.nexts or src in seen.addrs:
            raise BadPacket("session.replayed_initiation")
        if len(seen.addrs) >= _MAX_RESPONSE_ADDRS:
            raise BadPacket("session.resend_limit")
        seen.addrs.append(src)
        self.responses_resent += 1
        self._outbox.append(Transmit(p.name, seen.response, to=src))

    def _on_response(self, datagram: bytes, msg: HandshakeResponse, src: Addr, now: float) -> None:
        if not self._checker.check_mac1(datagram, MAC1_OFFSET_RESPONSE):
            raise BadPacket("session.bad_mac1")
        pending = self._pendings.get(msg.receiver)
        if pending is None:
            self._on_late_response(msg, now)
            raise BadPacket("session.unknown_receiver")
        p = pending.peer
        try:
            done = consume_response_untrusted(pending.hs, msg)
        except BadPacket:
            raise BadPacket("session.bad_handshake") from None
        p.last_heard = now
        self._answered(now - pending.sent, now)
        _peer_answered(p, now - pending.sent)
        self._hs(
            p,
            HsInput.VALID_RESPONSE,
            now,
            completed=done,
            remote_index=msg.sender,
            to=pending,
            src=src,
        )

    def _on_late_response(self, msg: HandshakeResponse, now: float) -> None:
        """A response to an initiation we gave up (`_MAX_GIVEN_UP`): too late to use,
        but, authenticated, it says how long the peer's answers take."""
        late = self._given_up.get(msg.receiver)
        if late is None:
            return  # the caller counts it unknown_receiver
        try:
            consume_response_untrusted(late.hs, msg)
        except BadPacket:
            raise BadPacket("session.bad_handshake") from None
        p = late.peer
        del self._given_up[msg.receiver]
        p.given_up.remove(late)
        p.last_heard = now
        self._answered(now - late.sent, now)
        _peer_answered(p, now - late.sent)
        raise BadPacket("session.late_response")

    def _on_cookie(self, msg: CookieReply, now: float) -> None:
        pending = self._pendings.get(msg.receiver)
        if pending is None:
            raise BadPacket("session.unknown_receiver")
        p = pending.peer
        p.jar.consume_reply_untrusted(msg, now)
        self._hs(p, HsInput.VALID_COOKIE, now)

    # ---- the handshake state machine --------------------------------------

    def _hs(
        self,
        p: _Peer,
        event: HsInput,
        now: float,
        *,
        completed: HandshakeState | None = None,
        remote_index: int = 0,
        to: _Pending | None = None,
        src: Addr | None = None,
    ) -> None:
        self._touched.add(p.name)
        action, p.state = step(p.state, event)
        if action is HsAction.SEND_INITIATION:
            self._send_initiation(p, now)
        elif action is HsAction.CONFIRM:
            assert completed is not None and to is not None and to in p.pendings
            self._confirm(p, completed, to.local_index, remote_index, now, src, now - to.sent)
        elif action is HsAction.FAIL_AND_RETRY:
            self.drops["session.handshake_failed"] += self._clear_queue(p)
            if not p.failed_reported:  # once per outage, not every REKEY_ATTEMPT_TIME
                p.failed_reported = True
                self._outbox.append(
                    SessionEvent(
                        p.name, "handshake_failed", f"no response in {REKEY_ATTEMPT_TIME:g} s"
                    )
                )
            p.attempt_started = now  # a new attempt window; the backoff stays where it is
            self._send_initiation(p, now)
        elif action is HsAction.FORGET:
            self._forget(p)
        elif action is HsAction.CANCEL:
            self._clear_pending(p)
        # NOTHING, STORE_COOKIE (stored by the caller), RESPOND (done by the caller)

    def _send_initiation(self, p: _Peer, now: float) -> None:
        """Send the next initiation to `p` now if a token is free and nobody waits
        for one; else `p` waits in line (see FIRST_RETRY), its older initiations
        still in flight."""
        if p.attempt_started is None:
            p.attempt_started = now
        p.retry_at = None
        if p.waiting_since is not None:
            return  # already in line
        if self._held_for_offer(p, now):
            return
        if self.dialable is not None and not self.dialable(p.name):
            # Nothing could carry it: it would be dropped unsent, and at a cold start
            # such initiations (to every NAT'd peer, before any REACH) took the tokens
            # the peers that can answer needed (their retries came 0.2-0.3 s late in
            # tests/test_node_coldstart.py). Looked at again on the backoff's schedule;
            # the REACH that names the peer hurries it (retry_soon).
            p.retry_at = now + self._retry_delay(p)
            return
        if self._latency is None:
            self._budget.set_rate(self._rate(now), now)
        if not self._waiting and self._budget.take(now):
            self._initiate_now(p, now)
        else:
            p.waiting_since = now
            self._waiting[p.name] = p

    def _held_for_offer(self, p: _Peer, now: float) -> bool:
        """Whether our initiation to `p` waits for the peer to confirm the oldest offer
        we made it (OFFER_HOLD_FACTOR); if so, its retry timer is set to the hold's end."""
        if not p.nexts:
            return False
        latency = p.answer_latency if p.answer_latency is not None else self._latency
        hold = OFFER_HOLD_FACTOR * latency if latency is not None else FIRST_RETRY
        until = p.nexts[0].created + min(OFFER_HOLD_MAX, max(FIRST_RETRY, hold))
        if now >= until:
            return False
        p.retry_at = until
        self._touched.add(p.name)  # retry_at moved
        return True

    def _rate(self, now: float) -> float:
        slow = min(self._rate_max, INITIATIONS_PER_SECOND_SLOW)
        if self._latency is not None:
            fast = self._rate_max * FIRST_RETRY / max(self._latency, 1e-3)
        else:  # nothing answered yet: halve the rate every _SILENCE_HALVING s
            if self._first_sent is None:
                self._first_sent = now
            silence = (now - self._first_sent) / _SILENCE_HALVING
            fast = self._rate_max * 0.5 ** min(silence, 64.0)
        return max(slow, min(self._rate_max, fast))

    def _answered(self, latency: float, now: float, *, at_least: bool = False) -> None:
        """One of our initiations was answered `latency` s after we sent it (or, with
        `at_least`, given up unanswered, had not been in that time): the budget's rate
        follows the latency, and a prompt answer gives tokens (PROMPT_ANSWER_TOKENS)."""
        latency = max(0.0, latency)
        if self._latency is None:
            self._latency = latency
        else:
            self._latency += (latency - self._latency) * _LATENCY_GAIN
        self._budget.set_rate(self._rate(now), now)
        if not at_least and latency <= FIRST_RETRY:
            self._budget.grant(now, PROMPT_ANSWER_TOKENS)

    def _priority(self, p: _Peer, now: float) -> tuple[int, float]:
        if p.hurry:
            rank = 0  # a sign of life
        elif p.queued_at and now - p.queued_at[-1] <= QUEUE_MAX_AGE:
            rank = 1  # payloads wait for this session (not only stale ones)
        elif now - p.last_heard < _HEARD_RECENTLY:
            rank = 2  # alive, just slow to answer
        else:
            rank = 3  # no response at all lately: it is the one to back off
        assert p.waiting_since is not None
        return rank, p.waiting_since

    def _serve_waiting(self, now: float) -> None:
        if not self._waiting:
            return
        if self._latency is None:
            self._budget.set_rate(self._rate(now), now)
        # One pick per token (most rounds have none: no scan of the waiting peers then).
        while self._waiting and self._budget.take(now):
            p = min(self._waiting.values(), key=lambda p: self._priority(p, now))
            del self._waiting[p.name]
            p.waiting_since = None
            if self._held_for_offer(p, now):
                self._budget.grant(now)  # the token goes back: no initiation sent
                continue
            self._initiate_now(p, now)

    def _initiate_now(self, p: _Peer, now: float) -> None:
        self._touched.add(p.name)  # retry_at moves (called from _serve_waiting too)
        p.last_initiation_sent = now
        p.hurry = False
        if len(p.pendings) >= _MAX_PENDINGS:  # the oldest: its response is given up
            oldest = p.pendings.pop(0)
            self._pendings.pop(oldest.local_index, None)
            p.given_up.append(oldest)
            self._given_up[oldest.local_index] = oldest
            if len(p.given_up) > _MAX_GIVEN_UP:
                del self._given_up[p.given_up.pop(0).local_index]
            if p.last_heard > oldest.sent:
                # The peer is alive (its initiations or data reached us after we sent
                # this one) and did not answer it in all that time: answers take at
                # least as long. Heard from only before (a peer that went away right
                # after it last spoke), it says nothing of how long answers take: the
                # retry floor grew with the outage (issue 10, chaos: 2.9 s apart).
                self._answered(now - oldest.sent, now, at_least=True)
                _peer_answered(p, now - oldest.sent, at_least=True)
        index = self._new_index()
        data, hs = create_initiation(
            cipher=self._cipher,
            static_private=self._private,
            peer_public=p.public,
            psk=p.psk,
            ephemeral_private=self._random_bytes(32),
            sender_index=index,
            timestamp=tai64n(self._wall_time()),
            jar=p.jar,
            now=now,
        )
        pending = _Pending(p, hs, index, now)
        p.pendings.append(pending)
        self._pendings[index] = pending
        p.retry_at = now + self._retry_delay(p)
        self._outbox.append(Transmit(p.name, data))

    def _retry_delay(self, p: _Peer) -> float:
        """How long after this initiation (sent or, undialable, not) the next one is due:
        a rekey's REKEY_TIMEOUT, or the no-session backoff (advanced one step)."""
        unit = int.from_bytes(self._random_bytes(2), "little") / 65536  # in [0, 1)
        if p.current is not None and not p.suspected:
            timeout = REKEY_TIMEOUT + unit * REKEY_TIMEOUT_JITTER
        elif p.backoff < len(_BACKOFF):  # no session (or a suspected one): see FIRST_RETRY
            timeout = _BACKOFF[p.backoff]
            timeout += unit * REKEY_TIMEOUT_JITTER * timeout / REKEY_TIMEOUT
            p.backoff += 1  # bounded: stops at len(_BACKOFF)
        else:
            timeout = self.retry_max + unit * RETRY_MAX_JITTER
        return max(timeout, _retry_floor(p))

    def _confirm(
        self,
        p: _Peer,
        done: HandshakeState,
        index: int,
        remote_index: int,
        now: float,
        src: Addr | None,
        rtt: float,
    ) -> None:
        self._clear_pending(p)  # the response to one answers them all
        if p.nexts and self.public_key > p.public:
            early = -REKEY_DEFER  # both initiated: the peer rekeys this pair (REKEY_DEFER)
        else:
            early = REKEY_SPREAD * int.from_bytes(self._random_bytes(2), "little") / 65536
        kp = _Keypair(
            p,
            self._cipher,
            done.split_keys(),
            initiator=True,
            local_index=index,
            remote_index=remote_index,
            now=now,
            rekey_early=early,
        )
        self._keypairs[index] = kp
        for old in p.previous:
            self._free(old)
        if p.nexts:
            # Both sides initiated at once: the peer may already send on a keypair we
            # offered as responder (any of them: it accepts a response to any of its
            # last initiations), so keep them receivable as `previous`, never current
            # (as WireGuard does with its one `next`): we are the initiator here.
            self._free(p.current)
            p.previous, p.current, p.nexts = p.nexts, kp, []
            _retire(p.previous)
        else:
            p.previous = [p.current] if p.current is not None else []
            _retire(p.previous)
            p.current = kp
        self._went_up(p, now, "initiator", src, rtt)
        # The responder may only send once it saw us use the keypair: say something.
        self._flush(p, now, keepalive_if_empty=True)

    def _went_up(
        self, p: _Peer, now: float, detail: str, src: Addr | None = None, rtt: float | None = None
    ) -> None:
        p.suspected = False
        p.last_handshake = now
        p.failed_reported = False
        p.new_handshake_at = None  # a handshake answered: the peer is alive
        p.up = True
        self._outbox.append(SessionEvent(p.name, "up", detail, src, rtt))

    def _clear_pending(self, p: _Peer) -> None:
        for pending in p.pendings:
            self._pendings.pop(pending.local_index, None)
        for pending in p.given_up:
            self._given_up.pop(pending.local_index, None)
        p.pendings, p.given_up = [], []
        if p.waiting_since is not None:
            del self._waiting[p.name]
            p.waiting_since = None
        p.retry_at = None
        p.hurry = False
        p.attempt_started = None
        p.backoff = 0

    def _forget(self, p: _Peer) -> None:
        self._clear_pending(p)
        for kp in p.keypairs():
            self._free(kp)
        p.previous, p.current, p.nexts = [], None, []
        self.drops["session.peer_removed"] += self._clear_queue(p)
        del self._peers[p.name]
        del self._by_public[p.public]
        self._peers_changed()
        if p.up:
            p.up = False
            self._outbox.append(SessionEvent(p.name, "down", "removed"))

    def _free(self, kp: _Keypair | None) -> None:
        if kp is not None:
            self._keypairs.pop(kp.local_index, None)

    def _new_index(self) -> int:
        while True:
            if self._index_prefix is None:
                index = int.from_bytes(self._random_bytes(4), "little")
            else:
                index = self._index_prefix << 16 | int.from_bytes(self._random_bytes(2), "little")
            if (
                index not in self._keypairs
                and index not in self._pendings
                and index not in self._given_up
            ):
                return index

    # ---- timers ------------------------------------------------------------

    def _peer_deadline(self, p: _Peer) -> float:
        """When `p`'s timers (`_peer_timers`) next have something to do; inf: never."""
        best = _INF
        for deadline in (p.retry_at, p.keepalive_at, p.new_handshake_at):
            if deadline is not None and deadline < best:
                best = deadline
        current = p.current  # p.keypairs(), without building the list (once per wake)
        if current is not None:
            if current.reject_at < best:
                best = current.reject_at
            if current.rekey_timer_at < best and p.state is HsState.IDLE:
                best = current.rekey_timer_at  # a deferred rekey (`_peer_timers`)
        for kps in (p.previous, p.nexts):
            for kp in kps:
                if kp.reject_at < best:
                    best = kp.reject_at
        if p.persistent_keepalive is not None:
            due = self._clock if p.last_sent is None else p.last_sent + p.persistent_keepalive
            best = min(best, due)
        return best

    def _refresh_timers(self) -> None:
        """Put the touched peers' deadlines in the heap (stale entries stay, skipped)."""
        touched, peers, due, heap = self._touched, self._peers, self._due, self._heap
        for name in touched:
            p = peers.get(name)
            if p is None:
                due.pop(name, None)  # removed
                continue
            at = self._peer_deadline(p)
            if due.get(name) != at:
                if at == _INF:
                    due.pop(name, None)
                else:
                    due[name] = at
                    heapq.heappush(heap, (at, name))
        touched.clear()
        if len(heap) > 2 * len(due) + 64:  # mostly stale: rebuild (bounded size)
            self._heap = heap = [(at, name) for name, at in due.items()]
            heapq.heapify(heap)
        while heap and due.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)

    def next_timer(self) -> float | None:
        if self._touched:
            self._refresh_timers()
        heap, due = self._heap, self._due
        while heap and due.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        best = heap[0][0] if heap else _INF
        if self._waiting:  # the budget's next token, outside the heap
            best = min(best, max(self._clock, self._budget.next_token()))
        return None if best == _INF else best

    def _scan_next_timer(self) -> float | None:
        """next_timer() the slow way, over every peer (tests compare the two)."""
        best = min((self._peer_deadline(p) for p in self._peers.values()), default=_INF)
        if self._waiting:
            best = min(best, max(self._clock, self._budget.next_token()))
        return None if best == _INF else best

    def retry_soon(self, peer: str, now: float) -> None:
        """A sign of life from `peer` (a REACH naming it, a path back): retry its
        handshake now and restart the backoff from FIRST_RETRY; start one if it has no
        session. Idempotent and rate-limited here (at most one restart per
        RETRY_SOON_INTERVAL, never two initiations within FIRST_RETRY), so callers may
        call it on every such sign; nothing it touches grows."""
        p = self._peer(peer)
        self._clock = max(self._clock, now)
        self._touched.add(p.name)
        if p.state is HsState.IDLE and p.current is not None:
            return  # a session is up: nothing to hurry
        if now < p.retry_soon_until:
            return
        p.retry_soon_until = now + RETRY_SOON_INTERVAL
        if p.current is None:
            p.backoff = 0
        p.hurry = True  # first in line if it has to wait for a token
        if p.waiting_since is not None:
            pass  # in line already: it moved to the front
        elif p.retry_at is not None:
            soonest = p.last_initiation_sent + max(FIRST_RETRY, _retry_floor(p))
            p.retry_at = min(p.retry_at, max(now, soonest))
        else:
            self._hs(p, HsInput.WANT_HANDSHAKE, now)

    def suspect(self, peer: str, now: float) -> None:
        """Every path to `peer` went silent while its session is up: it may have
        restarted and lost our keys (its drops say `session.unknown_receiver`, and
        it cannot reach a NAT'd node first). Start a handshake now instead of
        waiting for the 15 s "sent, nothing received" rule; at most once per
        RETRY_SOON_INTERVAL; a handshake already in flight is retried sooner, and
        until one completes the retries back off as with no session."""
        p = self._peer(peer)
        self._clock = max(self._clock, now)
        if p.current is None or now < p.retry_soon_until:
            return
        p.retry_soon_until = now + RETRY_SOON_INTERVAL
        p.hurry = True  # first in line if it has to wait for a token
        if not p.suspected:
            p.suspected, p.backoff = True, 0
        self._touched.add(p.name)
        if p.state is HsState.IDLE:
            self._hs(p, HsInput.WANT_HANDSHAKE, now)
        elif p.retry_at is not None:  # a rekey in flight, retried every REKEY_TIMEOUT
            soonest = p.last_initiation_sent + max(FIRST_RETRY, _retry_floor(p))
            p.retry_at = min(p.retry_at, max(now, soonest))

    def handle_timer(self, now: float) -> None:
        """Run the timers of the peers that are due (only those: see _heap)."""
        self._clock = max(self._clock, now)
        if self._touched:
            self._refresh_timers()
        heap, due = self._heap, self._due
        names = []
        while heap and heap[0][0] <= now:
            at, name = heapq.heappop(heap)
            if due.get(name) == at:
                del due[name]
                names.append(name)
        self._touched.update(names)  # first: a failure below loses no peer's timer
        for name in names:
            p = self._peers.get(name)
            if p is not None:
                self._peer_timers(p, now)
        self._serve_waiting(now)

    def _peer_timers(self, p: _Peer, now: float) -> None:
        self._expire_keypairs(p, now)
        current = p.current
        if current is not None and now >= current.rekey_timer_at and p.state is HsState.IDLE:
            # A side that deferred its rekey (REKEY_DEFER, both initiated) to a peer
            # that meanwhile became the responder of this keypair (its confirmation
            # crossed ours: the peer never rekeys it on time) rekeyed on its first send
            # after 150 s; with idle probes ~20 s apart at 100 nodes, 55 of 4 674
            # sessions expired first (issue 10, session 11). On time, the 30 s margin
            # (six REKEY_TIMEOUT retries) is all there. Other rekeys wait for a send.
            current.rekey_timer_at = _INF  # once per keypair: no spin if it cannot start
            self._hs(p, HsInput.WANT_HANDSHAKE, now)
        if p.retry_at is not None and now >= p.retry_at:
            assert p.attempt_started is not None
            if now - p.attempt_started >= REKEY_ATTEMPT_TIME:  # drop the queue, go on
                self._hs(p, HsInput.ATTEMPTS_EXHAUSTED, now)
            else:
                self._hs(p, HsInput.RETRY_TIMER, now)
        if p.new_handshake_at is not None and now >= p.new_handshake_at:
            # We sent data and heard nothing back: the session may be dead.
            p.new_handshake_at = None
            self._hs(p, HsInput.WANT_HANDSHAKE, now)
        if p.keepalive_at is not None and now >= p.keepalive_at:
            p.keepalive_at = None
            if p.current is not None:
                self._send_keepalive(p, now)
        if p.persistent_keepalive is not None and (
            p.last_sent is None or now >= p.last_sent + p.persistent_keepalive
        ):
            if p.current is not None:
                self._send_keepalive(p, now)
            else:
                self._hs(p, HsInput.WANT_HANDSHAKE, now)
            p.last_sent = now  # even if nothing could be sealed: never spin on this timer

    def _expire_keypairs(self, p: _Peer, now: float) -> None:
        for group in (p.previous, p.nexts):
            for kp in [kp for kp in group if now >= kp.reject_at]:
                self._free(kp)
                group.remove(kp)
        if p.current is not None and now >= p.current.reject_at:
            self._free(p.current)
            p.current = None
            p.keepalive_at = p.new_handshake_at = None
            if p.up:
                p.up = False
                self._outbox.append(SessionEvent(p.name, "down", "keys expired"))

    # ---- outputs -----------------------------------------------------------

    def take_outputs(self) -> list[Transmit | SessionEvent]:
        out, self._outbox = self._outbox, []
        return out

    def has_outputs(self) -> bool:
        """Whether `take_outputs` has anything (the node's fast path asks)."""
        return bool(self._outbox)

    def handshake_state(self, peer: str) -> tuple[bool, float | None]:
        """(whether a session is established, when the last handshake completed): what
        a node's status shows of `status`, without building it."""
        p = self._peer(peer)
        return p.current is not None, p.last_handshake

    def status(self, peer: str) -> PeerStatus:
        p = self._peer(peer)
        return PeerStatus(
            peer=p.name,
            established=p.current is not None,
            last_handshake=p.last_handshake,
            rx_bytes=p.rx_bytes,
            tx_bytes=p.tx_bytes,
            rx_messages=p.rx_messages,
            tx_messages=p.tx_messages,
            last_received=p.last_received,
        )

    def receiver_indexes(self) -> frozenset[int]:
        """Every receiver index that is ours right now (keypairs, initiations in flight
        or given up): a datagram naming any other is dropped as unknown_receiver. The
        agent mirrors it into the kernel (an nftables set) to drop junk before Python."""
        return frozenset(self._keypairs.keys() | self._pendings.keys() | self._given_up.keys())

    def receiver_peer(self, datagram: bytes) -> str | None:
        index = receiver_index_untrusted(datagram)
        if index is None:
            return None
        kp = self._keypairs.get(index)
        if kp is not None:
            return kp.peer.name
        pending = self._pendings.get(index) or self._given_up.get(index)
        return pending.peer.name if pending is not None else None


def _peer_answered(p: _Peer, latency: float, *, at_least: bool = False) -> None:
    """Fold one answer's latency into `p.answer_latency` (`at_least`: an initiation
    given up unanswered by a live peer, so its answers take at least that long)."""
    latency = min(max(0.0, latency), RETRY_LATENCY_CAP)
    old = p.answer_latency
    if old is None:
        p.answer_latency = latency
    elif not at_least or latency > old:
        p.answer_latency = old + (latency - old) * _LATENCY_GAIN


def _retry_floor(p: _Peer) -> float:
    """The soonest a retry to `p` may follow the last initiation (RETRY_LATENCY_FACTOR)."""
    if p.answer_latency is None:
        return 0.0
    return min(RETRY_LATENCY_CAP, RETRY_LATENCY_FACTOR * p.answer_latency)
