"""Seeded fuzzing of every `_untrusted` parser, the node core, the control and metrics parsers.

`bench/fuzz` is the command; this module is importable so that tests can run
it in-process and plant bugs to show the oracles are not vacuous.

Targets and their oracles
-------------------------
- ``parse.*`` (one per `_untrusted` function of the package): the input goes to
  the function as bytes; anything raised but `BadPacket` is a failure, a
  `BadPacket` reason must be named ``layer.reason``; where the format has a
  builder, what parses must build back to the same bytes; for the AEAD and
  Noise readers, mutated ciphertext that still decrypts is a forgery.
- ``node.*``: three `NodeCore`s (na, nb, nc) with real sessions between them,
  pumped into each other in-process. An input of a node target is one
  operation, a small byte program (see `_Fixture.op`), so any hex string is a
  valid input; operations run one after the other on the same three cores for
  an *episode* of `--episode` inputs, then the cores are rebuilt. After every
  operation: no exception escaped any core; every frame a core wrote leaves on
  a port of the segment it entered on (port and 802.1Q tag on the way in,
  VNI from a peer; trunk tags on the way out), and no frame is written whose
  ingress the switch rules must drop; no tagged frame (outer TPID 0x8100,
  0x88a8, 0x9100) on an untagged port (access, host, a trunk's native VLAN);
  reassembly buffers, learned paths, MAC tables, session queues and the other
  tables fed by the network stay under the caps their modules declare.
- ``control.request``: one request line through the control server's parser
  and dispatcher (and its line framing), backed by a real core: never raises,
  always one JSON line with a boolean ``ok``.
- ``metrics.request``: bytes through the metrics server's HTTP request
  handler: never raises, exactly one ``HTTP/1.0 NNN`` response whose
  Content-Length is its body's.

A failure prints with its reproducer: the seed and input index, and the hex
of the input (for node targets, the inputs of its episode that still fail,
joined by ``.``). ``bench/fuzz --replay TARGET HEX`` replays it.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import re
import struct
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lanspan
from lanspan.addr import Addr
from lanspan.config import encode_key, parse_network, public_key
from lanspan.config.model import Network, TrunkPort
from lanspan.errors import BadPacket
from lanspan.node import paths as node_paths
from lanspan.node import relays as node_relays
from lanspan.node.core import NodeCore, host_port_mac
from lanspan.wire import control, ethernet, messages, parity, payload, vnet

__all__ = [
    "TARGETS",
    "Failure",
    "Report",
    "Target",
    "main",
    "replay",
    "run",
    "take_outputs",
    "untrusted_functions",
]

PACKAGE = Path(__file__).resolve().parent.parent / "lanspan"
REASON_RE = re.compile(r"^[a-z0-9_]+\.[a-z0-9_]+$")
TPIDS = frozenset(ethernet.TAG_TPIDS)


class Oracle(Exception):
    """An oracle saw something wrong (not an exception from the code under test)."""


@dataclass(frozen=True)
class Failure:
    target: str
    index: int  # input index within the target
    seed: int
    kind: str  # "exception", "segment", "tag", "bound", "roundtrip", "forgery", ...
    message: str
    where: str  # file:line of the raising frame, for exceptions
    reproducer: str  # hex, inputs of one episode joined by "."
    count: int = 1  # occurrences of the same signature in this run

    @property
    def signature(self) -> tuple[str, str, str]:
        return _signature(self.target, self.kind, self.message, self.where)

    def replay_command(self) -> str:
        return f"bench/fuzz --replay {self.target} {self.reproducer}"

    def to_json(self) -> dict[str, object]:
        return {
            "target": self.target,
            "seed": self.seed,
            "index": self.index,
            "kind": self.kind,
            "message": self.message,
            "where": self.where,
            "count": self.count,
            "reproducer": self.reproducer,
            "replay": self.replay_command(),
        }


def _where(exc: BaseException) -> str:
    """The innermost frame inside lanspan (else the innermost one) as path:line in func."""
    frames = traceback.extract_tb(exc.__traceback__)
    # the package's own directory: a checkout may itself be in a folder named lanspan
    pkg = os.path.dirname(os.path.abspath(lanspan.__file__)) + os.sep
    inside = [f for f in frames if os.path.abspath(f.filename).startswith(pkg)]
    if not frames:
        return ""
    f = (inside or frames)[-1]
    path = os.path.abspath(f.filename)
    rel = "lanspan" + os.sep + path[len(pkg) :] if path.startswith(pkg) else path
    where = f"{rel}:{f.lineno} in {f.name}"
    # who called into lanspan: the harness itself (then a harness bug) or the code under test
    entry = next((i for i, g in enumerate(frames) if inside and g is inside[0]), None)
    if entry is not None and entry > 0:
        caller = frames[entry - 1]
        where += f" <- {inside[0].name} <- {Path(caller.filename).name}:{caller.lineno}"
    return where


def _classify(exc: BaseException) -> tuple[str, str, str]:
    if isinstance(exc, Oracle):
        kind, _, msg = str(exc).partition(": ")
        return kind, msg, ""
    return "exception", f"{type(exc).__name__}: {exc}"[:300], _where(exc)


# ----------------------------------------------------------------- mutation


def mutate(rng: random.Random, data: bytes, max_len: int = 4096) -> bytes:
    """A few byte-level mutations: flips, boundary values, truncation, appends, splices."""
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 5))):
        op = rng.randrange(8)
        if op == 0 and b:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[rng.randrange(len(b))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2 and b:
            del b[rng.randrange(len(b) + 1) :]
        elif op == 3:
            b += rng.randbytes(rng.choice((1, 2, 4, 16, rng.randrange(64))))
        elif op == 4 and len(b) >= 2:
            i = rng.randrange(len(b) - 1)
            b[i : i + 2] = rng.choice((b"\x00\x00", b"\xff\xff", b"\x80\x00", rng.randbytes(2)))
        elif op == 5 and b:
            i = rng.randrange(len(b))
            del b[i : i + rng.randrange(1, 9)]
        elif op == 6 and b:
            i = rng.randrange(len(b))
            b[i:i] = rng.randbytes(rng.randrange(1, 9))
        elif op == 7 and len(b) >= 4:
            i = rng.randrange(len(b) - 3)
            b[i : i + 4] = struct.pack("<I", rng.choice((0, 1, 0xFFFFFFFF, rng.getrandbits(32))))
    return bytes(b[:max_len])


def _random_bytes(rng: random.Random) -> bytes:
    n = rng.choice((0, 1, 3, 4, 8, 13, 14, 17, 18, 31, 32, 63, 64, 91, 92, 147, 148, 149))
    if rng.random() < 0.3:
        n = rng.randrange(600)
    return rng.randbytes(n)


def _corpus_input(rng: random.Random, corpus: Sequence[bytes]) -> bytes:
    r = rng.random()
    if r < 0.2 or not corpus:
        return _random_bytes(rng)
    base = rng.choice(corpus)
    if r < 0.3:
        return base
    if r < 0.4 and len(corpus) > 1:  # splice two samples
        other = rng.choice(corpus)
        return base[: rng.randrange(len(base) + 1)] + other[rng.randrange(len(other) + 1) :]
    return mutate(rng, base)


# ------------------------------------------------------------------ targets


class Target:
    """One thing to fuzz. `covers` names the `_untrusted` functions it drives."""

    name: str = ""
    covers: tuple[str, ...] = ()
    stateful: bool = False  # inputs of an episode share state (node targets)

    def generate(self, rng: random.Random) -> bytes:
        raise NotImplementedError

    def run(self, data: bytes) -> None:
        """Feed one input; raise Oracle (or anything) on a failure."""
        raise NotImplementedError

    def reset(self) -> None:
        """Start a new episode (stateful targets)."""


def _check_bad_packet(e: BadPacket) -> None:
    if not REASON_RE.match(e.reason):
        raise Oracle(f"reason: BadPacket reason {e.reason!r} is not named layer.reason")


class ParserTarget(Target):
    """A stateless parser: anything but BadPacket is a failure; optional extra check."""

    def __init__(
        self,
        name: str,
        covers: tuple[str, ...],
        fn: Callable[[bytes], object],
        corpus: Callable[[], list[bytes]] = list,
        check: Callable[[bytes, object], None] | None = None,
    ) -> None:
        self.name = name
        self.covers = covers
        self._fn = fn
        self._corpus_fn = corpus
        self._corpus: list[bytes] | None = None
        self._check = check

    def generate(self, rng: random.Random) -> bytes:
        if self._corpus is None:
            self._corpus = self._corpus_fn()
        return _corpus_input(rng, self._corpus)

    def run(self, data: bytes) -> None:
        try:
            out = self._fn(data)
        except BadPacket as e:
            _check_bad_packet(e)
            return
        if self._check is not None:
            self._check(data, out)


# -- the kernel filter's counter dump (netlink) ----------------------------

_NFT_SEQ = 7  # the sequence number of the captured dump (tests/data/nft_counters_dump.bin)


def _nft_counters_corpus() -> list[bytes]:
    from lanspan.agent import nft_counters

    dump = Path(__file__).resolve().parent.parent / "tests" / "data" / "nft_counters_dump.bin"
    error = struct.pack("=IHHII", 36, 2, 0, _NFT_SEQ, 0) + struct.pack("=i", -1) + bytes(16)
    return [nft_counters.request("lanspan_x_1", _NFT_SEQ), error] + (
        [dump.read_bytes()] if dump.exists() else []
    )


def _nft_counters(data: bytes) -> None:
    """What the kernel answers a counter dump with: only BadReply (its own error type:
    the agent falls back to nft on it), counters as non-negative ints."""
    from lanspan.agent import nft_counters

    out: dict[str, int] = {}
    try:
        nft_counters.parse_counters_untrusted(data, _NFT_SEQ, out)
    except nft_counters.BadReply:
        return
    if not all(isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in out.items()):
        raise Oracle(f"nft_counters: counters {out!r}")


# -- wire samples -----------------------------------------------------------

_R = random.Random(20240601)  # corpus samples: fixed, independent of the run's seed


def _wire_corpus() -> list[bytes]:
    r = _R
    return [
        messages.build(
            messages.HandshakeInitiation(
                r.getrandbits(32), r.randbytes(32), r.randbytes(48), r.randbytes(28)
            )
        ),
        messages.build(
            messages.HandshakeResponse(
                r.getrandbits(32), r.getrandbits(32), r.randbytes(32), r.randbytes(16)
            )
        ),
        messages.build(messages.CookieReply(r.getrandbits(32), r.randbytes(24), r.randbytes(32))),
        messages.build(messages.TransportData(r.getrandbits(32), 7, r.randbytes(16))),
        messages.build(messages.TransportData(1, 2**64 - 1, r.randbytes(200))),
    ]


def _roundtrip_message(data: bytes, msg: object) -> None:
    assert isinstance(msg, messages.HandshakeInitiation | messages.HandshakeResponse
                      | messages.CookieReply | messages.TransportData)  # fmt: skip
    if messages.build(msg) != data:
        raise Oracle("roundtrip: build(parse_untrusted(x)) != x")


def _check_transport_header(data: bytes, out: object) -> None:
    assert isinstance(out, tuple)
    receiver, counter = out
    if data[0] != messages.TYPE_TRANSPORT or struct.unpack_from("<IQ", data, 4) != (
        receiver,
        counter,
    ):
        raise Oracle("roundtrip: transport header fields do not match the bytes")


def _check_receiver_index(data: bytes, out: object) -> None:
    if out is not None and not (isinstance(out, int) and 0 <= out < 2**32):
        raise Oracle(f"range: receiver index {out!r}")


def _control_corpus() -> list[bytes]:
    r = _R
    return [
        control.build_probe(control.Probe(False, 1, 77, 123456789)),
        control.build_probe(control.Probe(True, 0, 2**32 - 1, 2**64 - 1)),
        control.build_relay(control.Relay(False, "nc", r.randbytes(48))),
        control.build_relay(control.Relay(True, "n\u00e9", r.randbytes(3))),
        control.build_reach(control.Reach((("na", 10), ("nb", 2**32 - 1)))),
        control.build_reach(control.Reach(())),
        control.build_reach_part(control.ReachPart(7, 1, 3, (("na", 10), ("nb", 2**32 - 1)))),
        control.build_planes(control.Planes(True, (("lan", "kernel"), ("api", "userspace")))),
    ]


def _roundtrip_control(data: bytes, msg: object) -> None:
    if isinstance(msg, control.Probe):
        again = control.build_probe(msg)
    elif isinstance(msg, control.Relay):
        again = control.build_relay(msg)
    elif isinstance(msg, control.ReachPart):
        again = control.build_reach_part(msg)
    elif isinstance(msg, control.Planes):
        again = control.build_planes(msg)
    else:
        assert isinstance(msg, control.Reach)
        again = control.build_reach(msg)
    if again != data:
        raise Oracle("roundtrip: build(parse_untrusted(x)) != x")


def _frame_corpus() -> list[bytes]:
    r = _R
    mac1, mac2 = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
    return [
        ethernet.build(mac1, mac2, 0x0800, r.randbytes(46)),
        ethernet.build(ethernet.BROADCAST, mac2, 0x0806, r.randbytes(28), vlan=10),
        ethernet.build(mac1, mac2, 0x8100, b"\x00\x14\x08\x00" + r.randbytes(20), vlan=20),
        ethernet.build(mac1, mac2, 0x88A8, r.randbytes(8)),
    ]


def _check_ethernet(data: bytes, out: object) -> None:
    assert isinstance(out, ethernet.EthernetHeader)
    if out.header_len > len(data) or (out.vlan is not None and not 0 <= out.vlan <= 4095):
        raise Oracle("range: header longer than the frame or VID out of range")


def _payload_corpus() -> list[bytes]:
    r = _R
    body = r.randbytes(300)
    out = [
        payload.build_frame(10, _frame_corpus()[0]),
        payload.build_frame(20, _frame_corpus()[1], vnet.ZERO_HEADER),
        payload.build_control(control.build_probe(control.Probe(False, 0, 1, 2))),
    ]
    out += payload.build_fragments(10, body, False, 9, 120)[:2]
    out += payload.build_parities(10, True, 9, 3, 40, parity.xors(body, 104, 2))
    return out


def _check_payload(data: bytes, out: object) -> None:
    assert isinstance(out, payload.Payload)
    if out.is_fragment and not 0 <= out.frag_index < out.frag_count <= payload.MAX_FRAGMENTS:
        raise Oracle("range: fragment index outside its count")
    if out.is_parity:
        groups, last, xor = payload.parity_header(out)
        if not (out.frag_index < groups <= out.frag_count and 1 <= last <= len(xor)):
            raise Oracle("range: parity group or last length outside its bounds")
    if not 0 <= out.vni < 2**24:
        raise Oracle("range: VNI outside 24 bits")


def _vnet_corpus() -> list[bytes]:
    return [
        vnet.ZERO_HEADER,
        vnet.build(vnet.VnetHeader(vnet.NEEDS_CSUM, vnet.GSO_TCPV4, 66, 1448, 34, 16)),
        vnet.build(vnet.VnetHeader(vnet.NEEDS_CSUM, vnet.GSO_UDP_L4, 42, 1400, 34, 6)),
        vnet.build(vnet.VnetHeader(vnet.DATA_VALID)),
    ]


def _validate_corpus() -> list[bytes]:
    # 10-byte header, then the frame length (u32le) it is validated against
    out = []
    for h in _vnet_corpus():
        for n in (0, 14, 60, 1514, 65535, 65535 + 4 + 14):
            out.append(h + struct.pack("<I", n))
    hi = vnet.build(vnet.VnetHeader(vnet.NEEDS_CSUM, vnet.GSO_TCPV4, 65535, 1448, 65500, 16))
    out.append(hi + struct.pack("<I", 65535 + 4 + 14))
    return out


def _run_validate(data: bytes) -> object:
    hdr = vnet.parse_untrusted(data)
    frame_len = struct.unpack_from("<I", data.ljust(14, b"\0"), 10)[0] % (payload.MAX_BODY + 1)
    vnet.validate_untrusted(hdr, frame_len)
    return (hdr, frame_len)


def _check_validated(data: bytes, out: object) -> None:
    """A header that passed validation must survive every later use the node makes of it:
    on egress to a trunk port an 802.1Q tag is pushed (+4)."""
    assert isinstance(out, tuple)
    hdr, frame_len = out
    try:
        vnet.build(hdr.shifted(4))
    except (ValueError, struct.error) as e:
        raise Oracle(
            f"validated: header accepted for a {frame_len}-byte frame fails when a trunk tag "
            f"is pushed: {e}"
        ) from None


# -- crypto readers ----------------------------------------------------------


class _AeadTarget(Target):
    """CipherState.decrypt_with_ad_untrusted / xchacha20poly1305_decrypt_untrusted / Noise
    decrypt_and_hash_untrusted: garbage and mutated ciphertexts; a mutation that still
    decrypts is a forgery."""

    def __init__(self, name: str, covers: tuple[str, ...], kind: str) -> None:
        self.name = name
        self.covers = covers
        self._kind = kind
        self._key = bytes(range(32))
        self._corpus: list[bytes] | None = None

    # input layout: ad_len u8, ad, then (xchacha) nonce 24, then ciphertext
    def _encrypt(self, ad: bytes, nonce: bytes, plain: bytes) -> bytes:
        from lanspan.noise.primitives import CipherState
        from lanspan.session.cookie import xchacha20poly1305_encrypt

        if self._kind == "xchacha":
            return xchacha20poly1305_encrypt(self._key, nonce, plain, ad)
        cs = CipherState("chachapoly" if self._kind == "chacha" else "aesgcm", self._key)
        if self._kind == "hash":
            return bytes(self._symmetric().encrypt_and_hash(plain))
        return cs.encrypt_with_ad(ad, plain)

    def _symmetric(self) -> Any:
        from lanspan.noise.handshake import SymmetricState

        ss = SymmetricState(b"Noise_IKpsk2_25519_AESGCM_BLAKE2s", "aesgcm")
        ss.mix_key(self._key)
        return ss

    def _split(self, data: bytes) -> tuple[bytes, bytes, bytes]:
        n = data[0] if data else 0
        ad = data[1 : 1 + n]
        rest = data[1 + n :]
        nonce = b""
        if self._kind == "xchacha":
            nonce, rest = rest[:24].ljust(24, b"\0"), rest[24:]
        return ad, nonce, rest

    def generate(self, rng: random.Random) -> bytes:
        if self._corpus is None:
            self._corpus = []
            for plain in (b"", b"x" * 32, _R.randbytes(100)):
                ad = b"" if self._kind == "hash" else _R.randbytes(_R.choice((0, 16, 32)))
                nonce = _R.randbytes(24) if self._kind == "xchacha" else b""
                ct = self._encrypt(ad, nonce, plain)
                self._corpus.append(bytes([len(ad)]) + ad + nonce + ct)
        return _corpus_input(rng, self._corpus)

    def run(self, data: bytes) -> None:
        from lanspan.noise.primitives import CipherState
        from lanspan.session.cookie import xchacha20poly1305_decrypt_untrusted

        ad, nonce, ct = self._split(data)
        try:
            if self._kind == "xchacha":
                plain = xchacha20poly1305_decrypt_untrusted(self._key, nonce, ct, ad)
            elif self._kind == "hash":
                plain = self._symmetric().decrypt_and_hash_untrusted(ct)
                ad = b""
            else:
                cs = CipherState("chachapoly" if self._kind == "chacha" else "aesgcm", self._key)
                plain = cs.decrypt_with_ad_untrusted(ad, ct)
        except BadPacket as e:
            _check_bad_packet(e)
            return
        if self._encrypt(ad, nonce, plain) != ct:
            raise Oracle("forgery: a ciphertext that is not ours decrypted")


class _HandshakeTarget(Target):
    """Noise read_message_untrusted and the session's consume_*_untrusted, on garbage and
    on mutated valid handshake messages; a mutated Noise part that verifies is a forgery."""

    def __init__(self, name: str, covers: tuple[str, ...], kind: str) -> None:
        self.name = name
        self.covers = covers
        self._kind = kind
        self._ready = False

    def _prepare(self) -> None:
        from lanspan.session.cookie import CookieChecker, CookieJar
        from lanspan.session.handshake import create_initiation, create_response

        self._i_priv, self._r_priv = bytes([7]) * 32, bytes([9]) * 32
        self._r_pub = public_key(self._r_priv)
        jar = CookieJar(self._r_pub)
        self._init, self._hs_i = create_initiation(
            cipher="aesgcm", static_private=self._i_priv, peer_public=self._r_pub, psk=None,
            ephemeral_private=bytes([11]) * 32, sender_index=5, timestamp=bytes(12),
            jar=jar, now=1.0,
        )  # fmt: skip
        from lanspan.session.handshake import consume_initiation_untrusted

        msg = messages.parse_untrusted(self._init)
        assert isinstance(msg, messages.HandshakeInitiation)
        hs_r, _ = consume_initiation_untrusted(
            cipher="aesgcm", static_private=self._r_priv, msg=msg
        )
        self._resp = create_response(
            hs=hs_r, psk=None, ephemeral_private=bytes([13]) * 32, sender_index=6,
            receiver_index=5, jar=CookieJar(public_key(self._i_priv)), now=1.0,
        )  # fmt: skip
        checker = CookieChecker(self._r_pub, random.Random(3).randbytes)
        self._cookie = checker.cookie_reply(
            self._init, messages.MAC1_OFFSET_INITIATION, 5, ("198.18.0.9", 1), 1.0
        )
        self._jar = jar
        self._ready = True

    def _valid(self) -> bytes:
        if self._kind in ("initiation", "noise"):
            return self._init
        if self._kind == "response":
            return self._resp
        return self._cookie

    def generate(self, rng: random.Random) -> bytes:
        if not self._ready:
            self._prepare()
        valid = self._valid()
        if self._kind == "noise":
            valid = valid[8 : messages.MAC1_OFFSET_INITIATION]
        r = rng.random()
        if r < 0.15:
            return _random_bytes(rng)
        if r < 0.25:
            return valid
        out = bytearray(valid)
        if r < 0.8 and len(out) > 8:  # flip bytes in place: lengths stay valid
            for _ in range(rng.choice((1, 1, 2, 4))):
                out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
            return bytes(out)
        return mutate(rng, valid, 400)

    def run(self, data: bytes) -> None:
        from lanspan.noise import HandshakeState
        from lanspan.session.handshake import (
            IDENTIFIER,
            consume_initiation_untrusted,
            consume_response_untrusted,
            protocol_name,
        )

        if not self._ready:
            self._prepare()
        try:
            if self._kind == "noise":
                hs = HandshakeState(
                    protocol_name("aesgcm"), initiator=False, prologue=IDENTIFIER,
                    static_private=self._r_priv,
                )  # fmt: skip
                hs.read_message_untrusted(data)
                forged = data != self._init[8 : messages.MAC1_OFFSET_INITIATION]
            else:
                msg = messages.parse_untrusted(data)
                if self._kind == "initiation" and isinstance(msg, messages.HandshakeInitiation):
                    consume_initiation_untrusted(
                        cipher="aesgcm", static_private=self._r_priv, msg=msg
                    )
                    forged = data[8:116] != self._init[8:116]
                elif self._kind == "response" and isinstance(msg, messages.HandshakeResponse):
                    consume_response_untrusted(self._hs_i, msg)
                    forged = data[12:60] != self._resp[12:60]
                elif self._kind == "cookie" and isinstance(msg, messages.CookieReply):
                    self._jar.consume_reply_untrusted(msg, 2.0)
                    forged = data[8:] != self._cookie[8:]
                else:
                    return
        except BadPacket as e:
            _check_bad_packet(e)
            return
        if forged:
            raise Oracle("forgery: a mutated handshake message verified")


# -------------------------------------------------------------- node fixture

NODES = ("na", "nb", "nc")
ADDRS: dict[str, Addr] = {n: (f"198.18.0.{i}", 51820) for i, n in enumerate(NODES, 1)}
BY_ADDR = {a: n for n, a in ADDRS.items()}
EPOCH = 1_700_000_000.0
FIXTURE_SEED = 424242
STATIC_MAC = bytes.fromhex("02aa00000001")


def _key(name: str) -> bytes:
    return bytes([NODES.index(name) + 1]) * 32


def _network_text() -> str:
    pub = {n: encode_key(public_key(_key(n))) for n in NODES}
    return f"""
[network]
name = "fuzz"
[[segment]]
name = "a"
vlan = 10
[[segment]]
name = "b"
vlan = 20
vni = 2000
[[segment]]
name = "c"
vlan = 30
[[node]]
name = "na"
site = "s1"
public_key = "{pub["na"]}"
endpoints = ["{ADDRS["na"][0]}:51820"]
segments = ["a", "b"]
  [[node.port]]
  kind = "access"
  name = "pa"
  segment = "a"
  mac_limit = 8
  [[node.port]]
  kind = "access"
  name = "pb"
  segment = "b"
  [[node.port]]
  kind = "trunk"
  name = "tr"
  vlans = [10, 20]
  native_vlan = 20
  mac_limit = 16
  [[node.port]]
  kind = "host"
  name = "hb"
  segment = "b"
[[node]]
name = "nb"
site = "s2"
public_key = "{pub["nb"]}"
endpoints = ["{ADDRS["nb"][0]}:51820"]
segments = ["a", "b", "c"]
  [[node.port]]
  kind = "trunk"
  name = "tr"
  vlans = [10, 20, 30]
  [[node.port]]
  kind = "access"
  name = "pc"
  segment = "c"
[[node]]
name = "nc"
site = "s3"
public_key = "{pub["nc"]}"
endpoints = ["{ADDRS["nc"][0]}:51820"]
segments = ["a"]
relay = false
  [[node.port]]
  kind = "host"
  name = "ha"
  segment = "a"
  [[node.port]]
  kind = "trunk"
  name = "tn"
  vlans = [10]
  native_vlan = 10
[[static_mac]]
segment = "a"
mac = "02:aa:00:00:00:01"
node = "na"
port = "pa"
"""


_NETWORK: Network | None = None


def network() -> Network:
    global _NETWORK
    if _NETWORK is None:
        _NETWORK = parse_network(_network_text(), "fuzz.toml")
    return _NETWORK


@dataclass(frozen=True)
class _PortView:
    """What the oracle knows about a port, straight from the network file."""

    name: str
    trunk: bool
    untagged: str | None  # segment of untagged frames (access/host; trunk: native VLAN)
    native_vid: int | None
    vids: dict[int, str]  # trunk: VID -> segment, for VLANs allowed and carried


def _port_views(net: Network, node: str) -> dict[str, _PortView]:
    me = net.node(node)
    carried = set(me.segments)
    out = {}
    for p in me.ports:
        if isinstance(p, TrunkPort):
            vids = {}
            for vid in (*p.vlans, *(() if p.native_vlan is None else (p.native_vlan,))):
                seg = net.segment_by_vlan(vid).name
                if seg in carried:
                    vids[vid] = seg
            native = None if p.native_vlan is None else vids.get(p.native_vlan)
            out[p.name] = _PortView(p.name, True, native, p.native_vlan, vids)
        else:
            untagged = p.segment if p.segment in carried else None
            out[p.name] = _PortView(p.name, False, untagged, None, {})
    return out


def ingress_segment(view: _PortView, frame: bytes) -> str | None:
    """The segment a frame from this port belongs to, or None when the rules drop it."""
    if len(frame) < 14:
        return None
    tagged = frame[12:14] == b"\x81\x00"
    if tagged and len(frame) < 18:
        return None
    vid = (int.from_bytes(frame[14:16], "big") & 0x0FFF) if tagged else None
    inner = int.from_bytes(frame[16:18] if tagged else frame[12:14], "big")
    if not view.trunk:
        if (vid is not None and vid != 0) or inner in TPIDS:
            return None
        return view.untagged
    if vid is None or vid == 0:
        return view.untagged if view.native_vid is not None else None
    return view.vids.get(vid)


def mesh_form(frame: bytes) -> bytes:
    """The frame as it travels inside the mesh: without its outer 802.1Q tag."""
    return ethernet.pop_tag(frame)


# ---- the one adapter to the core's outputs ----------------------------------


@dataclass
class Outputs:
    sends: list[tuple[Addr, bytes]]
    writes: list[tuple[str, bytes]]


def take_outputs(core: NodeCore, now: float) -> Outputs:
    """Everything the core wants done after an input: datagrams to send, frames to write.

    The only place that knows how the core hands out its outputs.
    """
    c: Any = core
    if hasattr(c, "take_outputs"):  # the reshaped node: one list of typed outputs
        out = Outputs([], [])
        for o in c.take_outputs():
            if hasattr(o, "port"):
                out.writes.append((o.port, bytes(o.data if hasattr(o, "data") else o.frame)))
            elif hasattr(o, "batch"):
                out.sends += [(o.target, bytes(d)) for d in o.batch]
        return out
    c.flush(now)
    sends = [(dst, d) for dst, batch in c.take_sends() for d in batch]
    writes = c.take_writes()
    c.take_log()
    return Outputs(sends, writes)


def bound_violations(core: NodeCore) -> list[str]:
    """Tables fed by the network that exceed the caps their modules declare."""
    bad = []
    r = core._reassembly
    pending = getattr(r, "_pending", {})
    cap = getattr(r, "max_pending", None)
    per_peer = getattr(r, "per_peer", None) or getattr(r, "max_per_peer", None)
    if isinstance(cap, int) and len(pending) > cap * (len(core._peers) if per_peer else 1):
        bad.append(f"reassembly: {len(pending)} buffers pending, cap {cap}")
    for peer, pp in core._paths.items():
        learned = [p for p in pp.paths if not p.configured and p.relay is None]
        relays = [p for p in pp.paths if p.relay is not None]
        if len(learned) > node_paths.MAX_LEARNED:
            bad.append(
                f"paths: {len(learned)} learned paths to {peer}, cap {node_paths.MAX_LEARNED}"
            )
        if len(relays) > node_relays.MAX_RELAYS:
            bad.append(f"paths: {len(relays)} relay paths to {peer}, cap {node_relays.MAX_RELAYS}")
        most = core.timers.probe_multiplier + 3
        for p in pp.paths:
            if len(p.outstanding) > most:
                bad.append(f"paths: {len(p.outstanding)} probes outstanding on a path to {peer}")
    sw = core._switch
    table = getattr(sw, "_table", {})
    limits = {p.where: p.mac_limit for p in getattr(sw, "_ports", {}).values()}
    limits.update({p.where: p.mac_limit for p in getattr(sw, "_peers", {}).values()})
    for where, keys in getattr(sw, "_by_where", {}).items():
        if where in limits and len(keys) > limits[where]:
            bad.append(f"macs: {len(keys)} MACs behind {where}, cap {limits[where]}")
    if len(table) > sum(limits.values()):
        bad.append(f"macs: {len(table)} learned MACs, caps sum to {sum(limits.values())}")
    if len(getattr(sw, "_moves", {})) > len(table):
        bad.append("macs: move histories for MACs no longer learned")
    from lanspan.switch import core as switch_core

    if len(getattr(sw, "_events", [])) > switch_core.MAX_PENDING_EVENTS:
        bad.append("switch: pending events above MAX_PENDING_EVENTS")
    from lanspan.session import table as session_table

    st = core._sessions
    for name, p in getattr(st, "_peers", {}).items():
        if len(p.queue) > session_table.MAX_QUEUED:
            bad.append(f"session: {len(p.queue)} payloads queued for {name}, cap MAX_QUEUED")
    seen = getattr(st, "_seen", None)
    if seen is not None and len(seen) > session_table._SEEN_SIZE:
        bad.append(f"session: {len(seen)} initiations remembered, cap {session_table._SEEN_SIZE}")
    from lanspan.session import ratelimit

    limiter = getattr(st, "_limiter", None)
    if limiter is not None and len(limiter) > ratelimit.MAX_SOURCES:
        bad.append(f"session: {len(limiter)} rate-limited sources, cap {ratelimit.MAX_SOURCES}")
    # Each peer holds its current keypair, its previous ones and the ones it offered
    # as responder (a handshake both ends began at once makes those its previous):
    # at most 1 + 2 x _MAX_NEXT; the index map holds nothing else.
    held = {kp.local_index for p in getattr(st, "_peers", {}).values() for kp in p.keypairs()}
    if set(getattr(st, "_keypairs", {})) - held:
        bad.append(f"session: {len(set(st._keypairs) - held)} keypairs no peer holds")
    for name, p in getattr(st, "_peers", {}).items():
        if len(p.keypairs()) > 1 + 2 * session_table._MAX_NEXT:
            bad.append(f"session: {len(p.keypairs())} keypairs for {name}")
    if len(core._reach.offers) > len(core._peers):
        bad.append("reach: entries for nodes that are not peers")
    return bad


class _Reader:
    """Reads fields off an operation; past the end everything reads as zero."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def u8(self) -> int:
        v = self.data[self.at] if self.at < len(self.data) else 0
        self.at += 1
        return v

    def u16(self) -> int:
        return self.u8() << 8 | self.u8()

    def take(self, n: int) -> bytes:
        out = self.data[self.at : self.at + n]
        self.at += n
        return out.ljust(n, b"\0")

    def rest(self) -> bytes:
        out = self.data[self.at :]
        self.at = len(self.data)
        return out


# op kinds (first byte, modulo)
OP_FRAME, OP_UNAUTH, OP_SEALED, OP_TIMER, OP_SUPER, OP_RELAY, OP_STATUS = range(7)
N_OPS = 7
# sealed modes
SEAL_PLAIN, SEAL_MUTATE, SEAL_REPLAY, SEAL_SPOOF = range(4)


class _Fixture:
    """Three node cores with sessions up, a fake link between them and a fake clock."""

    def __init__(self) -> None:
        net = network()
        self.net = net
        self.now = 100.0
        rng = random.Random(FIXTURE_SEED)
        self.cores = {
            n: NodeCore(
                net,
                n,
                _key(n),
                random_bytes=rng.randbytes,
                wall_time=lambda: EPOCH + self.now,
                now=self.now,
            )
            for n in NODES
        }
        self.views = {n: _port_views(net, n) for n in NODES}
        self.vni_seg = {s.vni: s.name for s in net.segments}
        self.origins: dict[bytes, set[str]] = {}
        self.loose: set[str] = set()  # segments of fragments we could not attribute
        self.history: list[tuple[Addr, str, bytes]] = []  # (src, dst node, datagram)
        self.loss = 0.0
        self.cut: set[str] = set()
        self._loss_rng = random.Random(FIXTURE_SEED + 1)
        for _ in range(40):  # handshakes, probes: paths up, reach gossiped
            self.now = round(self.now + 0.05, 6)
            self.timers()
            self.pump()
        self.origins.clear()

    # -- driving ------------------------------------------------------------

    def timers(self) -> None:
        for c in self.cores.values():
            if c.next_timer() <= self.now:
                c.handle_timer(self.now)

    def pump(self, rounds: int = 6) -> None:
        """Carry outputs between the cores until quiet (at most `rounds` exchanges)."""
        for _ in range(rounds):
            queue: list[tuple[Addr, str, bytes]] = []  # (src, dst node, datagram)
            for name, c in self.cores.items():
                out = take_outputs(c, self.now)
                for port, data in out.writes:
                    self.check_write(name, port, data)
                for dst, d in out.sends:
                    target = BY_ADDR.get(dst) if isinstance(dst, tuple) else None
                    if target is None or target in self.cut or name in self.cut:
                        continue
                    if self.loss and self._loss_rng.random() < self.loss:
                        continue
                    queue.append((ADDRS[name], target, d))
            if not queue:
                return
            for src, to, d in queue:
                self.remember(src, to, d)
                self.cores[to].datagram(d, src, self.now)

    def remember(self, src: Addr, dst: str, d: bytes) -> None:
        self.history.append((src, dst, d))
        if len(self.history) > 64:
            del self.history[:16]

    def check_bounds(self) -> None:
        for name, c in self.cores.items():
            bad = bound_violations(c)
            if bad:
                raise Oracle(f"bound: {name}: " + "; ".join(bad))

    # -- oracles ------------------------------------------------------------

    def check_write(self, node: str, port: str, data: bytes) -> None:
        view = self.views[node].get(port)
        if view is None:
            raise Oracle(f"port: {node} wrote to {port!r}, not one of its ports")
        if len(data) < vnet.VNET_HDR_LEN + 14:
            raise Oracle(f"short: {node} wrote {len(data)} bytes to {port}")
        frame = data[vnet.VNET_HDR_LEN :]
        first = int.from_bytes(frame[12:14], "big")
        if view.trunk and first == ethernet.TPID_8021Q:
            vid = int.from_bytes(frame[14:16], "big") & 0x0FFF
            seg = view.vids.get(vid)
            if seg is None:
                raise Oracle(f"segment: {node} wrote VLAN {vid} to trunk {port}, not allowed there")
            mesh = mesh_form(frame)
        else:
            if first in TPIDS:
                raise Oracle(
                    f"tag: {node} wrote a frame with TPID {first:#06x} untagged to {port} "
                    f"({frame[:18].hex()})"
                )
            seg = view.untagged
            if seg is None:
                raise Oracle(f"segment: {node} wrote an untagged frame to {port}: no segment")
            mesh = frame
        origin = self.origins.get(mesh)
        if origin is not None:
            if seg not in origin:
                raise Oracle(
                    f"segment: a frame that entered on {sorted(origin)} left {node} port {port} "
                    f"on segment {seg}"
                )
        elif seg not in self.loose:
            raise Oracle(
                f"segment: {node} wrote to {port} (segment {seg}) a frame that entered nowhere "
                f"on that segment, or entered where it must be dropped ({mesh[:24].hex()}...)"
            )

    def record(self, seg: str | None, frame: bytes) -> None:
        if seg is not None:
            self.origins.setdefault(frame, set()).add(seg)

    def record_payload(self, plain: bytes) -> None:
        try:
            p = payload.parse_untrusted(plain)
        except BadPacket:
            return
        if p.is_control:
            return  # relayed frames are recorded where their inner datagram is sealed
        seg = self.vni_seg.get(p.vni)
        if p.is_fragment:
            if seg is not None:
                self.loose.add(seg)
            return
        body = p.body[vnet.VNET_HDR_LEN :] if p.has_offload else p.body
        self.record(seg, body)

    # -- one operation --------------------------------------------------------

    def op(self, data: bytes) -> None:
        r = _Reader(data)
        kind = r.u8() % N_OPS
        self.now = round(self.now + 0.001, 6)
        self.timers()
        if kind == OP_FRAME:
            self._frame(r)
        elif kind == OP_UNAUTH:
            node = NODES[r.u8() % 3]
            self.cores[node].datagram(r.rest(), self._src(r.u8(), r.take(4)), self.now)
        elif kind == OP_SEALED:
            self._sealed(r)
        elif kind == OP_TIMER:
            x = r.u16() / 65535
            self.loss = (r.u8() % 4) * 0.25 if r.u8() & 1 else 0.0
            cut = r.u8()
            self.cut = {NODES[cut % 3]} if cut & 0x80 else set()
            self.now = round(self.now + 200.0 * x**6, 6)  # median 3 s, 10 % above 100 s
            self.timers()
        elif kind == OP_SUPER:
            self._superframe(r)
        elif kind == OP_RELAY:
            self._relay(r)
        else:
            c = self.cores[NODES[r.u8() % 3]]
            from lanspan.control.document import status_json

            status_json(c.status(self.now))
            c.mac_rows(None, self.now)
            c.drop_counts()
        self.pump()
        self.loss, self.cut = 0.0, set()
        self.check_bounds()

    def _src(self, sel: int, raw: bytes) -> Addr:
        if sel % 4 == 0:
            return ADDRS[NODES[sel // 4 % 3]]  # a member's address, spoofed
        if sel % 4 == 1:
            return (f"198.{18 + (raw[0] & 1)}.{raw[1]}.{raw[2]}", 1024 + raw[3] * 4)
        if sel % 4 == 2:
            return (f"fd00::{raw[0]:x}:{raw[1]:x}", 51820)
        return (f"198.19.{raw[0]}.{raw[1]}", 51820 + raw[2] % 3)

    def _frame(self, r: _Reader) -> None:
        node = NODES[r.u8() % 3]
        ports = list(self.views[node])
        sel = r.u8() % (len(ports) + 1)
        port = ports[sel] if sel < len(ports) else "no-such-port"
        hdr = r.take(vnet.VNET_HDR_LEN) if r.u8() & 1 else vnet.ZERO_HEADER
        frame = r.rest()
        view = self.views[node].get(port)
        if view is not None:
            self.record(ingress_segment(view, frame), mesh_form(frame))
        self.cores[node].frame_from_port(port, hdr + frame, self.now)

    def _pair(self, r: _Reader) -> tuple[str, str]:
        sender = NODES[r.u8() % 3]
        others = [n for n in NODES if n != sender]
        return sender, others[r.u8() % 2]

    def _sealed(self, r: _Reader) -> None:
        sender, receiver = self._pair(r)
        mode = r.u8() % 4
        if mode == SEAL_REPLAY:
            if self.history:
                src, dst, d = self.history[r.u8() % len(self.history)]
                if r.u8() & 1:
                    src = self._src(r.u8(), r.take(4))
                self.cores[dst].datagram(d, src, self.now)
            return
        nmut = r.u8() % 4 if mode == SEAL_MUTATE else 0
        muts = [(r.u16(), r.u8()) for _ in range(nmut)]
        spoof = self._src(r.u8(), r.take(4)) if mode == SEAL_SPOOF else ADDRS[sender]
        plain = r.rest()
        # Recorded first: without a session the payload is queued and delivered later.
        self.record_payload(plain)
        sealed = self.cores[sender]._sessions.seal(receiver, plain, self.now)
        if sealed is None:
            return
        if mode == SEAL_MUTATE:
            b = bytearray(sealed)
            for pos, x in muts:
                b[pos % len(b)] ^= x or 1
            sealed = bytes(b)
        self.cores[receiver].datagram(sealed, spoof, self.now)

    def _superframe(self, r: _Reader) -> None:
        """A whole (offload) superframe, fragmented like the sender does, then tampered."""
        sender, receiver = self._pair(r)
        vni = (10, 2000, 30, 0, 99)[r.u8() % 5]
        size = max(14, r.u16() + (r.u8() & 1) * 65536) % (payload.MAX_BODY - 14)
        fill = random.Random(r.u16()).randbytes(size)
        head = r.take(14)
        frame = head + fill[14:]
        offload = r.u8() & 1
        hdr = vnet.VnetHeader(r.u8(), r.u8(), r.u16(), r.u16(), r.u16(), r.u16())
        if r.u8() & 1:  # keep it valid-looking: sizes near the frame's
            hdr = vnet.VnetHeader(
                vnet.NEEDS_CSUM, vnet.GSO_TCPV4, min(0xFFFF, max(0, len(frame) - hdr.hdr_len % 64)),
                1448, min(0xFFFF, 14 + hdr.csum_start % 64), 16,
            )  # fmt: skip
        body = (vnet.build(hdr) if offload else b"") + frame
        chunk = r.u16() % 1400 + 64
        tamper, which = r.u8() % 6, r.u8()
        count = -(-len(body) // chunk)
        if count > payload.MAX_FRAGMENTS:
            chunk = -(-len(body) // payload.MAX_FRAGMENTS)
        fid = r.u16()
        frags = payload.build_fragments(vni, body, bool(offload), fid, chunk + 12)
        groups = r.u8() % 4  # 0: no parity; else with parity, as a lossy peer gets them
        if groups and len(frags) > 1:
            groups = min(groups, len(frags))
            last = len(body) - (len(frags) - 1) * chunk
            xs = parity.xors(body, chunk, groups)
            frags += payload.build_parities(vni, bool(offload), fid, len(frags), last, xs)
        if tamper == 1:
            del frags[which % len(frags)]
        elif tamper == 2:
            frags.append(frags[which % len(frags)])
        elif tamper == 3:
            random.Random(which).shuffle(frags)
        elif tamper == 4:
            b = bytearray(frags[which % len(frags)])
            b[which % len(b)] ^= 0xFF
            frags[which % len(frags)] = bytes(b)
        seg = self.vni_seg.get(vni)
        if tamper == 4 and seg is not None:
            self.loose.add(seg)
        self.record(seg, frame)
        sealed = self.cores[sender]._sessions.seal_many(receiver, frags, self.now)
        for d in sealed or ():
            self.cores[receiver].datagram(d, ADDRS[sender], self.now)

    def _relay(self, r: _Reader) -> None:
        """A RELAY (or RELAYED) control message with an inner datagram sealed end to end."""
        sender, via = self._pair(r)
        dest = NODES[r.u8() % 3]
        names = (dest, "", "x" * r.u8(), "n\u00e9", sender)
        name = names[r.u8() % len(names)] or dest
        delivered = bool(r.u8() & 1)
        inner_plain = r.rest()
        inner: bytes | None
        if dest != sender:
            inner = self.cores[sender]._sessions.seal(dest, inner_plain, self.now)
            self.record_payload(inner_plain)
        else:
            inner = inner_plain
        if inner is None or not inner:
            return
        try:
            msg = control.build_relay(control.Relay(delivered, name, inner))
        except ValueError:
            return  # a name the builder refuses: not what a member can send either
        sealed = self.cores[sender]._sessions.seal(via, payload.build_control(msg), self.now)
        if sealed is not None:
            self.cores[via].datagram(sealed, ADDRS[sender], self.now)


# ---- node op generators (random, independent of the fixture's state) --------

_MACS = [
    bytes.fromhex(m)
    for m in ("020000000001", "020000000002", "020000000003", "0200000000a0", "02aa00000001")
]


def _fixture_macs() -> list[bytes]:
    net = network()
    out = list(_MACS)
    for n in net.nodes:
        for p in n.ports:
            if p.kind == "host":
                out.append(host_port_mac(n.name, p))
    return out


def _mac(rng: random.Random, src: bool) -> bytes:
    r = rng.random()
    if r < 0.55:
        return rng.choice(_fixture_macs())
    if r < 0.65 and not src:
        return ethernet.BROADCAST
    if r < 0.7:
        return bytes.fromhex("01005e000001")
    if r < 0.73:
        return bytes(6)
    m = bytearray(rng.randbytes(6))
    m[0] &= 0xFE if rng.random() < 0.9 else 0xFF
    return bytes(m)


def gen_frame(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.05:
        return rng.randbytes(rng.randrange(20))
    dst, src = _mac(rng, False), _mac(rng, True)
    et = rng.choice((0x0800, 0x0806, 0x86DD, 0x88B5, 0x88A8, 0x9100, 0x8100, rng.getrandbits(16)))
    tags = b""
    t = rng.random()
    vids = (0, 10, 20, 30, 4095, 1, rng.randrange(4096))
    if t < 0.35:
        tags = struct.pack("!HH", 0x8100, rng.getrandbits(4) << 12 | rng.choice(vids))
    if t < 0.1:
        tags += struct.pack("!HH", rng.choice((0x8100, 0x88A8)), rng.choice(vids))
    body = rng.randbytes(rng.choice((0, 4, 28, 46, rng.randrange(1500))))
    frame = dst + src + tags + struct.pack("!H", et) + body
    return mutate(rng, frame, 4096) if rng.random() < 0.1 else frame


def gen_vnet(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.5:
        return vnet.ZERO_HEADER
    if r < 0.85:
        gso = rng.choice((vnet.GSO_NONE, vnet.GSO_TCPV4, vnet.GSO_TCPV6, vnet.GSO_UDP_L4))
        flags = vnet.NEEDS_CSUM if gso or rng.random() < 0.5 else rng.choice((0, vnet.DATA_VALID))
        return vnet.build(
            vnet.VnetHeader(
                flags, gso, rng.choice((0, 54, 66, 74)), rng.choice((0, 1448, 64)),
                rng.choice((0, 14, 18, 34, 54)), rng.choice((0, 6, 16)),
            )
        )  # fmt: skip
    return rng.randbytes(vnet.VNET_HDR_LEN)


def gen_plaintext(rng: random.Random) -> bytes:
    """What a hostile member may seal: frames, offload frames, fragments, control, junk."""
    r = rng.random()
    vni = rng.choice((10, 2000, 30, 0, 99, 20, rng.getrandbits(24)))
    if r < 0.3:
        out = payload.build_frame(vni, gen_frame(rng))
    elif r < 0.45:
        out = payload.build_frame(vni, gen_frame(rng), gen_vnet(rng))
    elif r < 0.55:
        count = rng.choice((1, 2, 3, 64, 65, 0, 255))
        par = rng.choice((0, 0, payload.FLAG_P))
        flags = payload.FLAG_I | payload.FLAG_F | par | rng.choice((0, payload.FLAG_O))
        out = payload.header(flags, vni)
        out += struct.pack("!HBB", rng.randrange(4), rng.randrange(max(1, count + 1)), count)
        if par:  # groups, version, last length
            out += struct.pack("!BBH", rng.choice((1, 2, count, 0)), rng.choice((0, 0, 1)),
                               rng.randrange(300))  # fmt: skip
        out += rng.randbytes(rng.randrange(200))
    elif r < 0.7:
        out = payload.build_control(
            control.build_probe(
                control.Probe(rng.random() < 0.5, rng.randrange(8), rng.getrandbits(32),
                              rng.getrandbits(64))
            )
        )  # fmt: skip
    elif r < 0.8:
        names = [*NODES, "zz", "na" * 20]
        peers = tuple((rng.choice(names), rng.getrandbits(32)) for _ in range(rng.randrange(6)))
        out = payload.build_control(control.build_reach(control.Reach(peers)))
    elif r < 0.85:
        out = payload.build_control(
            control.build_relay(
                control.Relay(rng.random() < 0.5, rng.choice(NODES), _random_bytes(rng) or b"x")
            )
        )
    elif r < 0.9:
        out = b""  # a keepalive
    else:
        out = _random_bytes(rng)
    return mutate(rng, out, 2000) if rng.random() < 0.2 else out


def gen_op(rng: random.Random, kind: int) -> bytes:
    b = bytes([kind])
    if kind == OP_FRAME:
        return b + bytes([rng.randrange(3), rng.randrange(8)]) + (
            (b"\x01" + gen_vnet(rng)) if rng.random() < 0.5 else b"\x00"
        ) + gen_frame(rng)  # fmt: skip
    if kind == OP_UNAUTH:
        r = rng.random()
        if r < 0.3:
            d = _random_bytes(rng)
        elif r < 0.8:
            d = mutate(rng, rng.choice(_wire_corpus()), 600)
            if rng.random() < 0.3:  # a valid mac1 for the target: costs it DH work
                d = _with_mac1(d, rng)
        else:
            d = messages.build(
                messages.TransportData(rng.getrandbits(32), rng.getrandbits(64), rng.randbytes(
                    rng.choice((16, 40, 100)))))  # fmt: skip
        return b + bytes([rng.randrange(3), rng.randrange(256)]) + rng.randbytes(4) + d
    if kind == OP_SEALED:
        mode = rng.choice(
            (SEAL_PLAIN, SEAL_PLAIN, SEAL_PLAIN, SEAL_MUTATE, SEAL_REPLAY, SEAL_SPOOF)
        )
        head = bytes([rng.randrange(3), rng.randrange(2), mode])
        if mode == SEAL_REPLAY:
            return b + head + rng.randbytes(7)
        if mode == SEAL_MUTATE:
            n = rng.randrange(1, 4)
            head += bytes([n]) + rng.randbytes(3 * n)
        if mode == SEAL_SPOOF:
            head += rng.randbytes(5)
        return b + head + gen_plaintext(rng)
    if kind == OP_TIMER:
        return b + rng.randbytes(2) + bytes([rng.randrange(256), rng.randrange(256),
                                             rng.choice((0, 0, 0, 0x80, 0x81, 0x82))])  # fmt: skip
    if kind == OP_SUPER:
        size = rng.choice((rng.randrange(3000), rng.randrange(65536), 65535 + 4, 65500))
        head = _mac(rng, False) + _mac(rng, True) + struct.pack("!H", rng.choice((0x0800, 0x8100)))
        return (
            b + bytes([rng.randrange(3), rng.randrange(2), rng.randrange(5)])
            + struct.pack("!HB", size & 0xFFFF, size >> 16) + rng.randbytes(2) + head
            + bytes([rng.randrange(2)]) + rng.randbytes(10) + bytes([rng.randrange(2)])
            + struct.pack("!H", rng.choice((1400, 1000, 64, rng.randrange(1400))))
            + bytes([rng.randrange(6), rng.randrange(256)]) + rng.randbytes(2)
        )  # fmt: skip
    if kind == OP_RELAY:
        return b + bytes([rng.randrange(3), rng.randrange(2), rng.randrange(3),
                          rng.randrange(5), rng.randrange(256), rng.randrange(2)]) \
            + gen_plaintext(rng)  # fmt: skip
    return b + bytes([rng.randrange(3)])


def _with_mac1(d: bytes, rng: random.Random) -> bytes:
    from lanspan.session.cookie import LABEL_MAC1, mac

    target = public_key(_key(rng.choice(NODES)))
    key = __import__("hashlib").blake2s(LABEL_MAC1 + target).digest()
    if len(d) == messages.INITIATION_LEN:
        off = messages.MAC1_OFFSET_INITIATION
    elif len(d) == messages.RESPONSE_LEN:
        off = messages.MAC1_OFFSET_RESPONSE
    else:
        return d
    d = bytes([d[0]]) + bytes(3) + d[4:]
    return d[:off] + mac(key, d[:off]) + d[off + 16 :]


class NodeTarget(Target):
    """The node core: operations of the kinds in `kinds`, on three cores in one episode."""

    stateful = True

    def __init__(self, name: str, kinds: tuple[int, ...], weights: tuple[int, ...] = ()) -> None:
        self.name = name
        self.kinds = kinds
        self.weights = weights or tuple(1 for _ in kinds)
        self._fx: _Fixture | None = None

    def reset(self) -> None:
        self._fx = None

    def generate(self, rng: random.Random) -> bytes:
        return gen_op(rng, rng.choices(self.kinds, self.weights)[0])

    def run(self, data: bytes) -> None:
        if self._fx is None:
            self._fx = _Fixture()
        self._fx.op(data)


class ControlTarget(Target):
    """One control request line (the server's line framing, parser and dispatcher)."""

    name = "control.request"

    def __init__(self) -> None:
        self._fx: _Fixture | None = None

    def generate(self, rng: random.Random) -> bytes:
        r = rng.random()
        ops = ["status", "macs", "ping", "reload", "nope", "", "STATUS"]
        if r < 0.4:
            req: Any = {"op": rng.choice(ops)}
            if rng.random() < 0.5:
                req["segment"] = rng.choice(
                    ["a", "b", "zz", None, 1, [], {}, True, "\u00e9", "x" * 300, 1e308]
                )
            if rng.random() < 0.1:
                req = rng.choice([[req], "status", 3, None, [], {"op": ["status"]}])
            text = json.dumps(req)
        elif r < 0.55:
            depth = rng.choice((10, 100, 999, 1500, 30000))
            text = rng.choice(("[", "[", '{"a":')) * depth
        elif r < 0.65:
            text = rng.choice(('{"op":"macs","segment":', '{"op":"status","x":')) + rng.choice(
                ("NaN", "1e999999", "-0", '"\\ud800"', '"\\u0000"', "9" * 5000)
            ) + "}"  # fmt: skip
        else:
            base = rng.choice(('{"op":"status"}', '{"op":"macs","segment":"a"}', '{"op":"ping"}'))
            return bytes([rng.randrange(256)]) + mutate(rng, base.encode(), 70000)
        line = text.encode()
        if rng.random() < 0.2:
            line += b"\n" + line
        return bytes([rng.randrange(256)]) + line

    def run(self, data: bytes) -> None:
        if self._fx is None:
            self._fx = _Fixture()
        for resp in control_answers(self._fx, data[1:], data[0] if data else 0):
            try:
                doc = json.loads(resp)
            except ValueError as e:
                raise Oracle(f"response: not one JSON document: {e}") from None
            if not resp.endswith(b"\n") or resp.count(b"\n") != 1:
                raise Oracle("response: not exactly one line")
            if not isinstance(doc, dict) or not isinstance(doc.get("ok"), bool):
                raise Oracle(f"response: no boolean 'ok': {resp[:80]!r}")


class _Conn:
    """Stands in for a control/metrics connection: what the handlers touch, no socket."""

    def __init__(self) -> None:
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.closed = False
        self.close_when_flushed = False
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self) -> None:
        self.closed = True


class _Source:
    def __init__(self, fx: _Fixture) -> None:
        self._fx = fx

    def status(self) -> Any:
        return self._fx.cores["na"].status(self._fx.now)

    def macs(self, segment: str | None) -> Any:
        return self._fx.cores["na"].mac_rows(segment, self._fx.now)

    def reload(self) -> dict[str, object]:
        return {"ok": True, "changes": [], "error": None}


def control_answers(fx: _Fixture, data: bytes, split: int) -> list[bytes]:
    """Feed `data` (in two reads, split at `split`) to the control server's request handler."""
    from lanspan.control import server

    srv: Any = object.__new__(server.ControlServer)  # no socket: only what _on_data uses
    srv._source = _Source(fx)
    srv._on_error = None  # the agent's hook for failures, when the server has one
    conn = _Conn()
    cut = split % (len(data) + 1)
    for chunk in (data[:cut], data[cut:] + b"\n"):
        conn.inbuf += chunk
        srv._on_data(conn)
    return conn.sent


class MetricsTarget(Target):
    """Bytes a metrics client sends, through the metrics server's HTTP request handler."""

    name = "metrics.request"

    def __init__(self) -> None:
        self._fx: _Fixture | None = None

    def generate(self, rng: random.Random) -> bytes:
        methods = ("GET", "HEAD", "POST", "get", "", "GET GET")
        paths = ("/metrics", "/", "/metrics?x=1", "/nope", "", "*", "/metrics/../", "%00")
        versions = ("HTTP/1.0", "HTTP/1.1", "HTTP/", "FTP/1", "", "HTTP/1.1 extra")
        line = f"{rng.choice(methods)} {rng.choice(paths)} {rng.choice(versions)}".encode()
        end = rng.choice((b"\r\n\r\n", b"\n\n", b"\r\n", b"", b"\r\nHost: x\r\n\r\n"))
        data = line + end
        r = rng.random()
        if r < 0.15:
            data = _random_bytes(rng) + end
        elif r < 0.2:
            data = line + b"\r\nX: " + b"y" * rng.choice((8000, 9000, 20000)) + end
        elif r < 0.4:
            data = mutate(rng, data, 20000)
        return bytes([rng.randrange(256)]) + data

    def run(self, data: bytes) -> None:
        if self._fx is None:
            self._fx = _Fixture()
        sent = metrics_answers(self._fx, data[1:], data[0] if data else 0)
        if len(sent) > 1:
            raise Oracle(f"response: {len(sent)} responses on one connection")
        for resp in sent:
            head, sep, body = resp.partition(b"\r\n\r\n")
            if not re.match(rb"HTTP/1\.[01] [1-5][0-9][0-9] ", head) or not sep:
                raise Oracle(f"response: not an HTTP response: {resp[:60]!r}")
            m = re.search(rb"\r\nContent-Length: ([0-9]+)", head)
            if m is None:
                raise Oracle("response: no Content-Length")
            if body and int(m.group(1)) != len(body):
                raise Oracle("response: Content-Length is not the body's length")


def metrics_answers(fx: _Fixture, data: bytes, split: int) -> list[bytes]:
    """Feed `data` (in two reads, split at `split`) to the metrics server's request handler."""
    from lanspan.control import metrics

    srv: Any = object.__new__(metrics.MetricsServer)  # no socket: only what _on_data uses
    srv._source = _Source(fx)
    srv._on_error = None  # the agent's hook for failures, when the server has one
    conn = _Conn()
    cut = split % (len(data) + 1)
    for chunk in (data[:cut], data[cut:]):
        conn.inbuf += chunk
        srv._on_data(conn)
    return conn.sent


# ------------------------------------------------------------- the target set


def _targets() -> list[Target]:
    w = "lanspan.wire."
    return [
        ParserTarget("parse.messages", (w + "messages.parse_untrusted",),
                     messages.parse_untrusted, _wire_corpus, _roundtrip_message),
        ParserTarget("parse.transport_header", (w + "messages.parse_transport_header_untrusted",),
                     messages.parse_transport_header_untrusted, _wire_corpus,
                     _check_transport_header),
        ParserTarget("parse.receiver_index", (w + "messages.receiver_index_untrusted",),
                     messages.receiver_index_untrusted, _wire_corpus, _check_receiver_index),
        ParserTarget("parse.control", (w + "control.parse_untrusted",),
                     control.parse_untrusted, _control_corpus, _roundtrip_control),
        ParserTarget("parse.ethernet", (w + "ethernet.parse_untrusted",),
                     ethernet.parse_untrusted, _frame_corpus, _check_ethernet),
        ParserTarget("parse.payload", (w + "payload.parse_untrusted",),
                     payload.parse_untrusted, _payload_corpus, _check_payload),
        ParserTarget("parse.vnet", (w + "vnet.parse_untrusted", w + "vnet.split_untrusted"),
                     vnet.split_untrusted, _vnet_corpus),
        ParserTarget("parse.vnet_validate", (w + "vnet.validate_untrusted",),
                     _run_validate, _validate_corpus, _check_validated),
        _AeadTarget("parse.aead_aesgcm", ("lanspan.noise.primitives."
                    "CipherState.decrypt_with_ad_untrusted",), "aesgcm"),
        _AeadTarget("parse.aead_chachapoly", ("lanspan.noise.primitives."
                    "CipherState.decrypt_with_ad_untrusted",), "chacha"),
        _AeadTarget("parse.noise_decrypt_and_hash", ("lanspan.noise.handshake."
                    "SymmetricState.decrypt_and_hash_untrusted",), "hash"),
        _AeadTarget("parse.cookie_xchacha", ("lanspan.session.cookie."
                    "xchacha20poly1305_decrypt_untrusted",), "xchacha"),
        _HandshakeTarget("parse.noise_read_message", ("lanspan.noise.handshake."
                         "HandshakeState.read_message_untrusted",), "noise"),
        _HandshakeTarget("parse.initiation", ("lanspan.session.handshake."
                         "consume_initiation_untrusted",), "initiation"),
        _HandshakeTarget("parse.response", ("lanspan.session.handshake."
                         "consume_response_untrusted",), "response"),
        _HandshakeTarget("parse.cookie_reply", ("lanspan.session.cookie."
                         "CookieJar.consume_reply_untrusted",), "cookie"),
        ParserTarget("parse.nft_counters", ("lanspan.agent.nft_counters.parse_counters_untrusted",),
                     _nft_counters, _nft_counters_corpus),
        NodeTarget("node.unauthenticated", (OP_UNAUTH, OP_FRAME), (9, 1)),
        NodeTarget("node.sealed", (OP_SEALED, OP_SUPER, OP_RELAY, OP_FRAME), (6, 2, 2, 1)),
        NodeTarget("node.frames", (OP_FRAME, OP_TIMER), (12, 1)),
        NodeTarget("node.timers", (OP_TIMER, OP_FRAME, OP_SEALED), (4, 2, 1)),
        NodeTarget("node.mixed", tuple(range(N_OPS))),
        ControlTarget(),
        MetricsTarget(),
    ]  # fmt: skip


TARGETS: tuple[str, ...] = tuple(t.name for t in _targets())


_UNTRUSTED: dict[Path, set[str]] = {}


def untrusted_functions(package: Path = PACKAGE) -> set[str]:
    """Every function or method named *_untrusted in the package, as module[.Class].name."""
    if package not in _UNTRUSTED:
        _UNTRUSTED[package] = _find_untrusted(package)
    return set(_UNTRUSTED[package])


def _find_untrusted(package: Path) -> set[str]:
    found = set()
    for path in sorted(package.rglob("*.py")):
        module = ".".join(path.relative_to(package.parent).with_suffix("").parts)
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.endswith("_untrusted"):
                found.add(f"{module}.{node.name}")
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and item.name.endswith("_untrusted"):
                        found.add(f"{module}.{node.name}.{item.name}")
    return found


# ------------------------------------------------------------------- running


@dataclass
class Report:
    seed: int
    inputs: int = 0
    seconds: float = 0.0
    per_target: dict[str, list[int]] = field(default_factory=dict)  # name -> [inputs, failures]
    failures: list[Failure] = field(default_factory=list)  # distinct signatures
    uncovered: list[str] = field(default_factory=list)

    @property
    def failure_count(self) -> int:
        return sum(f.count for f in self.failures)

    def to_json(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            "inputs": self.inputs,
            "failures": self.failure_count,
            "seconds": round(self.seconds, 3),
            "inputs_per_second": round(self.inputs / self.seconds) if self.seconds else None,
            "targets": {n: {"inputs": i, "failures": f} for n, (i, f) in self.per_target.items()},
            "found": [f.to_json() for f in self.failures],
            "uncovered_untrusted": self.uncovered,
        }


def _signature(target: str, kind: str, msg: str, where: str) -> tuple[str, str, str]:
    """What makes two failures the same: where it raised, else the message without numbers."""
    return (target, kind, where or re.sub(r"[0-9]+", "N", msg)[:60])


def _attempt(target: Target, episode: Sequence[bytes]) -> BaseException | None:
    """Run an episode on a fresh target state; the exception of its last input, if any."""
    target.reset()
    for i, data in enumerate(episode):
        try:
            target.run(data)
        except Exception as e:
            return e if i == len(episode) - 1 else None
    return None


def _reduce(target: Target, episode: list[bytes], sig: tuple[str, str, str]) -> list[bytes]:
    """A shorter episode that still fails the same way (greedy, bounded number of replays)."""

    def same(ep: list[bytes]) -> bool:
        e = _attempt(target, ep)
        if e is None:
            return False
        kind, msg, where = _classify(e)
        return _signature(target.name, kind, msg, where) == sig

    if len(episode) > 1 and same(episode[-1:]):
        return episode[-1:]
    budget = 24
    chunk = max(1, (len(episode) - 1) // 2)
    while chunk >= 1 and budget > 0:
        i = 0
        while i < len(episode) - 1 and budget > 0:
            trial = episode[:i] + episode[i + chunk :]
            if len(trial) < len(episode) and trial[-1] == episode[-1]:
                budget -= 1
                if same(trial):
                    episode = trial
                    continue
            i += chunk
        chunk //= 2
    return episode


def run(
    inputs: int,
    seed: int,
    *,
    targets: Sequence[Target] | None = None,
    only: Iterable[str] | None = None,
    episode: int = 256,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Fuzz `inputs` inputs in total, spread evenly over the targets; deterministic per seed."""
    chosen = list(targets) if targets is not None else _targets()
    if only is not None:
        names = set(only)
        unknown = names - {t.name for t in chosen}
        if unknown:
            raise ValueError(f"unknown targets: {', '.join(sorted(unknown))}")
        chosen = [t for t in chosen if t.name in names]
    report = Report(seed)
    covered = {c for t in _targets() for c in t.covers}
    report.uncovered = sorted(untrusted_functions() - covered)
    start = time.perf_counter()
    for k, target in enumerate(chosen):
        n = inputs // len(chosen) + (1 if k < inputs % len(chosen) else 0)
        rng = random.Random(f"{seed}/{target.name}")
        stats = report.per_target.setdefault(target.name, [0, 0])
        seen: dict[tuple[str, str, str], int] = {}
        ep: list[bytes] = []
        target.reset()
        t0 = time.perf_counter()
        for i in range(n):
            data = target.generate(rng)
            if target.stateful:
                if len(ep) >= episode:
                    target.reset()
                    ep = []
                ep.append(data)
            stats[0] += 1
            try:
                target.run(data)
            except Exception as e:
                stats[1] += 1
                kind, msg, where = _classify(e)
                sig = _signature(target.name, kind, msg, where)
                if sig in seen:
                    old = report.failures[seen[sig]]
                    report.failures[seen[sig]] = Failure(**{**old.__dict__, "count": old.count + 1})
                else:
                    repro = _reduce(target, ep, sig) if target.stateful else [data]
                    seen[sig] = len(report.failures)
                    report.failures.append(
                        Failure(target.name, i, seed, kind, msg, where,
                                ".".join(d.hex() for d in repro))
                    )  # fmt: skip
                    if progress is not None:
                        progress(_failure_text(report.failures[-1]))
                target.reset()  # state after a failure is not worth building on
                ep = []
        if progress is not None:
            dt = time.perf_counter() - t0
            progress(f"  {target.name:30} {n:9} inputs {stats[1]:6} failures  {dt:7.1f} s")
    report.inputs = sum(i for i, _ in report.per_target.values())
    report.seconds = time.perf_counter() - start
    return report


def replay(target_name: str, hexes: str, targets: Sequence[Target] | None = None) -> str | None:
    """Replay a reproducer; the failure it shows as text, or None when it passes."""
    by_name = {t.name: t for t in (targets if targets is not None else _targets())}
    if target_name not in by_name:
        raise ValueError(f"unknown target {target_name!r}; one of {', '.join(by_name)}")
    target = by_name[target_name]
    episode = [bytes.fromhex(h) for h in hexes.split(".")] if hexes else [b""]
    target.reset()
    for i, data in enumerate(episode):
        try:
            target.run(data)
        except Exception as e:
            kind, msg, where = _classify(e)
            tb = "".join(traceback.format_exception(e))
            return f"input {i}: {kind}: {msg} {where}\n{tb}"
    return None


def _failure_text(f: Failure) -> str:
    where = f" at {f.where}" if f.where else ""
    short = f.reproducer if len(f.reproducer) <= 4000 else f.reproducer[:4000] + "...(cut)"
    return (
        f"FAIL {f.target} [{f.kind}] seed {f.seed} input #{f.index} (x{f.count}): "
        f"{f.message}{where}\n  replay: bench/fuzz --replay {f.target} {short}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=100_000, help="inputs in total (all targets)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="last line: one JSON object")
    ap.add_argument("--only", default=None, help="comma-separated target names")
    ap.add_argument("--episode", type=int, default=256, help="node inputs per fresh fixture")
    ap.add_argument("--list", action="store_true", help="list the targets and what they cover")
    ap.add_argument("--replay", nargs=2, metavar=("TARGET", "HEX"), help="replay a reproducer")
    ap.add_argument("--full-reproducers", action="store_true", help="print reproducers uncut")
    args = ap.parse_args(argv)
    if args.list:
        for t in _targets():
            print(f"{t.name:30} {', '.join(t.covers)}")
        return 0
    if args.replay:
        result = replay(args.replay[0], args.replay[1])
        if args.json:
            print(json.dumps({"target": args.replay[0], "failure": result}))
        else:
            print(result if result else "no failure")
        return 1 if result else 0
    only = args.only.split(",") if args.only else None
    say = (lambda s: print(s, file=sys.stderr, flush=True)) if args.json else print
    say(f"bench/fuzz: {args.inputs} inputs, seed {args.seed}")
    report = run(args.inputs, args.seed, only=only, episode=args.episode, progress=say)
    say(f"{report.inputs} inputs in {report.seconds:.1f} s, {report.failure_count} failures "
        f"({len(report.failures)} distinct)")  # fmt: skip
    if args.full_reproducers:
        for f in report.failures:
            say(f"  full reproducer {f.target}: {f.reproducer}")
    if report.uncovered:
        say("untrusted functions no target drives: " + ", ".join(report.uncovered))
    if args.json:
        print(json.dumps(report.to_json()))
    return 1 if report.failures or report.uncovered else 0
