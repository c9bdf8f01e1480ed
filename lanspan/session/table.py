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
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import InvalidTag

from lanspan.addr import Target as Addr
from lanspan.errors import BadPacket
from lanspan.noise import CipherName, HandshakeState, aead_for, nonce_struct, public_key
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
from lanspan.session.ratelimit import InitiationCache, SourceRateLimiter
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
    "KEEPALIVE_TIMEOUT",
    "MAX_QUEUED",
    "REJECT_AFTER_MESSAGES",
    "REJECT_AFTER_TIME",
    "REKEY_AFTER_MESSAGES",
    "REKEY_AFTER_TIME",
    "REKEY_ATTEMPT_TIME",
    "REKEY_TIMEOUT",
    "REKEY_TIMEOUT_JITTER",
    "RETRY_MAX",
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
# With no session (cold start, a peer that went away), lanspan wants the peer back
# within a second or two of the moment it can be reached, forever: retry after 0.25,
# 0.5, 1 s, then every RETRY_MAX + [0, RETRY_MAX_JITTER) s for as long as the peer is
# configured. The cap keeps "heal -> session" under ~2 s plus one round trip from
# either side alone (both sides retry, so usually far less), at the cost of one
# initiation (148 bytes, two X25519) every ~1.75 s per unreachable peer. The jitter
# keeps a healed site's nodes from retrying in lockstep. A rekey (old keys still
# work) keeps WireGuard's REKEY_TIMEOUT.
FIRST_RETRY = 0.25
_BACKOFF = (FIRST_RETRY, 2 * FIRST_RETRY, 4 * FIRST_RETRY)  # then RETRY_MAX
RETRY_MAX = 1.5
RETRY_MAX_JITTER = 0.5
# retry_soon() (a sign of life: a REACH naming the peer, a path back) restarts the
# backoff at most this often per peer, so a member toggling REACH cannot make us spin.
RETRY_SOON_INTERVAL = 1.0
KEEPALIVE_TIMEOUT = 10.0
# An initiator that receives data on a keypair this old rekeys now, so the
# keypair is replaced before REJECT_AFTER_TIME even if it never sends.
_REKEY_ON_RECEIVE_AGE = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
MAX_QUEUED = 1024  # payloads held per peer while a handshake runs
_LOAD_WINDOW = 1.0  # seconds over which initiations are counted
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


@dataclass(frozen=True, slots=True)
class Transmit:
    """Send `data` to `peer`; `to` set => to that address (a handshake reply)."""

    peer: str | None
    data: bytes
    to: Addr | None = None


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """kind: "up" (new keypair confirmed), "down" (keys expired / peer removed),
    "handshake_failed" (REKEY_ATTEMPT_TIME passed without a response: queued
    payloads dropped, said once per outage; the handshake keeps being retried)."""

    peer: str
    kind: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Delivered:
    """Authenticated plaintext from `peer`; `src` is where it came from; b"" = keepalive."""

    peer: str
    payload: bytes
    src: Addr


@dataclass(frozen=True, slots=True)
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
        "remote_index",
        "replay",
        "send_counter",
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
    ) -> None:
        name: CipherName = cipher
        self.peer = peer
        self.encrypt = aead_for(name, keys[0]).encrypt
        self.decrypt = aead_for(name, keys[1]).decrypt
        self.nonce = nonce_struct(name).pack
        self.initiator = initiator
        self.local_index = local_index
        self.remote_index = remote_index
        self.send_counter = 0
        self.replay = ReplayWindow()
        self.created = now
        self.reject_at = now + REJECT_AFTER_TIME
        # Only the initiator rekeys on time, so both sides do not race (paper §6.2).
        self.rekey_at = now + REKEY_AFTER_TIME if initiator else _INF
        self.rekey_on_receive_at = now + _REKEY_ON_RECEIVE_AGE if initiator else _INF

    def __repr__(self) -> str:
        return f"_Keypair(local={self.local_index:#x}, initiator={self.initiator})"


class _Pending:
    """Our initiation in flight."""

    __slots__ = ("hs", "local_index", "peer")

    def __init__(self, peer: _Peer, hs: HandshakeState, local_index: int) -> None:
        self.peer = peer
        self.hs = hs
        self.local_index = local_index


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
        "attempt_started",
        "backoff",
        "current",
        "failed_reported",
        "jar",
        "keepalive_at",
        "last_handshake",
        "last_initiation",
        "last_initiation_sent",
        "last_received",
        "last_sent",
        "last_timestamp",
        "name",
        "new_handshake_at",
        "next",
        "pending",
        "persistent_keepalive",
        "previous",
        "psk",
        "public",
        "queue",
        "retry_at",
        "retry_soon_until",
        "rx_bytes",
        "rx_messages",
        "state",
        "tx_bytes",
        "tx_messages",
        "up",
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
        self.pending: _Pending | None = None
        self.retry_at: float | None = None
        self.attempt_started: float | None = None
        self.backoff = 0  # index into _BACKOFF; len(_BACKOFF) = at the cap (never more)
        self.failed_reported = False  # handshake_failed already said for this outage
        self.last_initiation_sent = -_INF
        self.retry_soon_until = -_INF
        self.current: _Keypair | None = None
        self.previous: _Keypair | None = None
        self.next: _Keypair | None = None
        self.last_timestamp = bytes(TAI64N_LEN)
        self.queue: collections.deque[bytes] = collections.deque()
        self.keepalive_at: float | None = None  # passive keepalive due
        self.new_handshake_at: float | None = None  # sent data, no answer by then
        self.last_sent: float | None = None
        self.last_handshake: float | None = None
        self.last_initiation = -_INF  # when we last answered one of its initiations
        self.last_received: float | None = None
        self.rx_bytes = self.tx_bytes = self.rx_messages = self.tx_messages = 0
        self.up = False

    def __repr__(self) -> str:
        return f"_Peer({self.name!r}, state={self.state})"

    def keypairs(self) -> tuple[_Keypair | None, _Keypair | None, _Keypair | None]:
        return self.previous, self.current, self.next


class SessionTable:
    """All sessions of one node (one static key). Single-threaded, sans-IO."""

    def __init__(
        self,
        private_key: bytes,
        *,
        cipher: Literal["aesgcm", "chachapoly"] = "aesgcm",
        random_bytes: Callable[[int], bytes],
        wall_time: Callable[[], float],
        handshakes_per_second_under_load: int = 50,
    ) -> None:
        if len(private_key) != 32:
            raise ValueError("private_key must be 32 bytes")
        if cipher not in ("aesgcm", "chachapoly"):
            raise ValueError(f"cipher must be 'aesgcm' or 'chachapoly', not {cipher!r}")
        self._private = private_key
        self.public_key: bytes = public_key(private_key)
        self._cipher: CipherChoice = cipher
        self._random_bytes = random_bytes
        self._wall_time = wall_time
        self._load_limit = handshakes_per_second_under_load
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

    def remove_peer(self, peer: str) -> None:
        p = self._peer(peer)
        self._hs(p, HsInput.REMOVE, 0.0)

    def _peer(self, peer: str) -> _Peer:
        try:
            return self._peers[peer]
        except KeyError:
            raise KeyError(f"unknown peer {peer!r}") from None

    # ---- sending -----------------------------------------------------------

    def initiate(self, peer: str, now: float) -> None:
        self._clock = max(self._clock, now)
        self._hs(self._peer(peer), HsInput.WANT_HANDSHAKE, now)

    def seal(self, peer: str, payload: bytes, now: float) -> bytes | None:
        p = self._peers[peer]
        kp = p.current
        if kp is None or now >= kp.reject_at or kp.send_counter >= REJECT_AFTER_MESSAGES:
            self._enqueue(p, payload)
            self._hs(p, HsInput.WANT_HANDSHAKE, now)
            return None
        n = kp.send_counter
        kp.send_counter = n + 1
        out = _pack_header(TYPE_TRANSPORT, kp.remote_index, n) + kp.encrypt(
            kp.nonce(n), payload, None
        )
        p.tx_bytes += len(out)
        p.tx_messages += 1
        p.last_sent = now
        self._touched.add(p.name)
        p.keepalive_at = None
        if payload and p.new_handshake_at is None:
            p.new_handshake_at = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT
        if (now >= kp.rekey_at or n >= REKEY_AFTER_MESSAGES) and p.state is HsState.IDLE:
            self._hs(p, HsInput.WANT_HANDSHAKE, now)
        return out

    def seal_many(self, peer: str, payloads: list[bytes], now: float) -> list[bytes] | None:
        p = self._peers[peer]
        kp = p.current
        count = len(payloads)
        if kp is None or now >= kp.reject_at or kp.send_counter + count > REJECT_AFTER_MESSAGES:
            for payload in payloads:
                self._enqueue(p, payload)
            self._hs(p, HsInput.WANT_HANDSHAKE, now)
            return None
        n = kp.send_counter
        kp.send_counter = n + count
        encrypt, nonce, receiver = kp.encrypt, kp.nonce, kp.remote_index
        out = [
            _pack_header(TYPE_TRANSPORT, receiver, n + i) + encrypt(nonce(n + i), payload, None)
            for i, payload in enumerate(payloads)
        ]
        p.tx_bytes += sum(map(len, out))
        p.tx_messages += count
        p.last_sent = now
        self._touched.add(p.name)
        p.keepalive_at = None
        if count and p.new_handshake_at is None:
            p.new_handshake_at = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT
        if (now >= kp.rekey_at or n + count > REKEY_AFTER_MESSAGES) and p.state is HsState.IDLE:
            self._hs(p, HsInput.WANT_HANDSHAKE, now)
        return out

    def _enqueue(self, p: _Peer, payload: bytes) -> None:
        if len(p.queue) >= MAX_QUEUED:
            p.queue.popleft()
            self.drops["session.queue_full"] += 1
        p.queue.append(payload)

    def _flush(self, p: _Peer, now: float, *, keepalive_if_empty: bool) -> None:
        if not p.queue:
            if keepalive_if_empty:
                self._send_keepalive(p, now)
            return
        queued = list(p.queue)
        p.queue.clear()
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
                p.last_received = now
                p.new_handshake_at = None
                self._touched.add(p.name)
                if payload and p.keepalive_at is None:
                    p.keepalive_at = now + KEEPALIVE_TIMEOUT
                if kp is not p.current:
                    self._received_on_other(p, kp, now)
                elif now >= kp.rekey_on_receive_at and p.state is HsState.IDLE:
                    self._hs(p, HsInput.WANT_HANDSHAKE, now)
                return Delivered(p.name, payload, src)
        try:
            self._receive_handshake(datagram, src, now)
        except BadPacket as exc:
            self.drops[exc.reason] += 1
        return None

    def _received_on_other(self, p: _Peer, kp: _Keypair, now: float) -> None:
        if kp is p.next:
            # The initiator used the keypair we offered: it is confirmed (paper §5.4.6).
            self._free(p.previous)
            p.previous, p.current, p.next = p.current, kp, None
            self._hs(p, HsInput.PEER_CONFIRMED, now)
            self._went_up(p, now, "responder")
            self._flush(p, now, keepalive_if_empty=False)

    def _receive_handshake(self, datagram: bytes, src: Addr, now: float) -> None:
        msg = parse_untrusted(datagram)
        if isinstance(msg, HandshakeInitiation):
            self._on_initiation(datagram, msg, src, now)
        elif isinstance(msg, HandshakeResponse):
            self._on_response(datagram, msg, now)
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
        self._free(p.next)
        p.next = kp
        self._touched.add(p.name)
        self._keypairs[index] = kp
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
        if seen.kp is not p.next or src in seen.addrs:
            raise BadPacket("session.replayed_initiation")
        if len(seen.addrs) >= _MAX_RESPONSE_ADDRS:
            raise BadPacket("session.resend_limit")
        seen.addrs.append(src)
        self.responses_resent += 1
        self._outbox.append(Transmit(p.name, seen.response, to=src))

    def _on_response(self, datagram: bytes, msg: HandshakeResponse, now: float) -> None:
        if not self._checker.check_mac1(datagram, MAC1_OFFSET_RESPONSE):
            raise BadPacket("session.bad_mac1")
        pending = self._pendings.get(msg.receiver)
        if pending is None:
            raise BadPacket("session.unknown_receiver")
        p = pending.peer
        try:
            done = consume_response_untrusted(pending.hs, msg)
        except BadPacket:
            raise BadPacket("session.bad_handshake") from None
        self._hs(p, HsInput.VALID_RESPONSE, now, completed=done, remote_index=msg.sender)

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
    ) -> None:
        self._touched.add(p.name)
        action, p.state = step(p.state, event)
        if action is HsAction.SEND_INITIATION:
            self._send_initiation(p, now)
        elif action is HsAction.CONFIRM:
            assert completed is not None and p.pending is not None
            self._confirm(p, completed, remote_index, now)
        elif action is HsAction.FAIL_AND_RETRY:
            self.drops["session.handshake_failed"] += len(p.queue)
            p.queue.clear()
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
        if p.attempt_started is None:
            p.attempt_started = now
        p.last_initiation_sent = now
        self._clear_pending(p, keep_attempt=True)
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
        pending = _Pending(p, hs, index)
        p.pending = pending
        self._pendings[index] = pending
        unit = int.from_bytes(self._random_bytes(2), "little") / 65536  # in [0, 1)
        if p.current is not None:
            timeout = REKEY_TIMEOUT + unit * REKEY_TIMEOUT_JITTER
        elif p.backoff < len(_BACKOFF):  # no session: see FIRST_RETRY
            timeout = _BACKOFF[p.backoff]
            timeout += unit * REKEY_TIMEOUT_JITTER * timeout / REKEY_TIMEOUT
            p.backoff += 1  # bounded: stops at len(_BACKOFF)
        else:
            timeout = RETRY_MAX + unit * RETRY_MAX_JITTER
        p.retry_at = now + timeout
        self._outbox.append(Transmit(p.name, data))

    def _confirm(self, p: _Peer, done: HandshakeState, remote_index: int, now: float) -> None:
        pending = p.pending
        assert pending is not None
        index = pending.local_index
        self._clear_pending(p)
        kp = _Keypair(
            p,
            self._cipher,
            done.split_keys(),
            initiator=True,
            local_index=index,
            remote_index=remote_index,
            now=now,
        )
        self._keypairs[index] = kp
        if p.next is not None:
            # Both sides initiated at once: the peer may already send on the keypair we
            # offered as responder, so keep it receivable as `previous` (as WireGuard does).
            self._free(p.previous)
            self._free(p.current)
            p.previous, p.current, p.next = p.next, kp, None
        else:
            self._free(p.previous)
            p.previous, p.current = p.current, kp
        self._went_up(p, now, "initiator")
        # The responder may only send once it saw us use the keypair: say something.
        self._flush(p, now, keepalive_if_empty=True)

    def _went_up(self, p: _Peer, now: float, detail: str) -> None:
        p.last_handshake = now
        p.failed_reported = False
        p.new_handshake_at = None  # a handshake answered: the peer is alive
        p.up = True
        self._outbox.append(SessionEvent(p.name, "up", detail))

    def _clear_pending(self, p: _Peer, *, keep_attempt: bool = False) -> None:
        if p.pending is not None:
            self._pendings.pop(p.pending.local_index, None)
            p.pending = None
        p.retry_at = None
        if not keep_attempt:
            p.attempt_started = None
            p.backoff = 0

    def _forget(self, p: _Peer) -> None:
        self._clear_pending(p)
        for kp in p.keypairs():
            self._free(kp)
        p.previous = p.current = p.next = None
        self.drops["session.peer_removed"] += len(p.queue)
        p.queue.clear()
        del self._peers[p.name]
        del self._by_public[p.public]
        if p.up:
            p.up = False
            self._outbox.append(SessionEvent(p.name, "down", "removed"))

    def _free(self, kp: _Keypair | None) -> None:
        if kp is not None:
            self._keypairs.pop(kp.local_index, None)

    def _new_index(self) -> int:
        while True:
            index = int.from_bytes(self._random_bytes(4), "little")
            if index not in self._keypairs and index not in self._pendings:
                return index

    # ---- timers ------------------------------------------------------------

    def _peer_deadline(self, p: _Peer) -> float:
        """When `p`'s timers (`_peer_timers`) next have something to do; inf: never."""
        best = _INF
        for deadline in (p.retry_at, p.keepalive_at, p.new_handshake_at):
            if deadline is not None and deadline < best:
                best = deadline
        for kp in p.keypairs():
            if kp is not None and kp.reject_at < best:
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
        return heap[0][0] if heap else None

    def _scan_next_timer(self) -> float | None:
        """next_timer() the slow way, over every peer (tests compare the two)."""
        best = min((self._peer_deadline(p) for p in self._peers.values()), default=_INF)
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
        if p.retry_at is not None:
            p.retry_at = min(p.retry_at, max(now, p.last_initiation_sent + FIRST_RETRY))
        else:
            self._hs(p, HsInput.WANT_HANDSHAKE, now)

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

    def _peer_timers(self, p: _Peer, now: float) -> None:
        self._expire_keypairs(p, now)
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
        if p.previous is not None and now >= p.previous.reject_at:
            self._free(p.previous)
            p.previous = None
        if p.next is not None and now >= p.next.reject_at:
            self._free(p.next)
            p.next = None
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
        """Every receiver index that is ours right now (keypairs and initiations in
        flight): a datagram naming any other is dropped as unknown_receiver. The agent
        mirrors it into the kernel (an nftables set) to drop junk before Python."""
        return frozenset(self._keypairs.keys() | self._pendings.keys())

    def receiver_peer(self, datagram: bytes) -> str | None:
        index = receiver_index_untrusted(datagram)
        if index is None:
            return None
        kp = self._keypairs.get(index)
        if kp is not None:
            return kp.peer.name
        pending = self._pendings.get(index)
        return pending.peer.name if pending is not None else None
