"""A junk-datagram flooder, run in the lab's internet core by `lanspan.lab.flood`.

`python -m lanspan.lab.inside.flooder HOST PORT --junk KIND --rate PPS --seconds S`
sends pre-built datagrams of one junk kind to HOST:PORT at PPS datagrams a
second for S seconds, then stops by itself (also on SIGTERM/SIGINT). It is an
ordinary unprivileged sender: started as root, it drops to `--user` (default
nobody) before it opens its plain UDP socket, so it can spoof no address and
use no raw socket. Junk kinds (`JUNK`):

- `random`: random bytes, 32-256 long;
- `initiation`: shaped like a handshake initiation (type 1, 148 bytes) with
  random fields and bogus MACs;
- `transport`: shaped like transport data (type 4, 128 bytes) to a random
  receiver index;
- `mac1-initiation`: initiations with a valid mac1 for `--public-key` (what
  anyone who read the network file can build), the rest random: each passes
  the cheap check and asks for the receiver's handshake work.

Every datagram in a run differs from the others (up to `POOL_MAX`, then the
pool repeats): a replay cache does not make them free. Python has no
sendmmsg; one process reaches the rate with a connected non-blocking socket
and a tight `send` loop paced every millisecond; `--procs N` splits the rate
over N forked processes. It prints `start <wall time>` when the first datagram
leaves and, at the end, `done <json>`: `sent`, `blocked` (EAGAIN/ENOBUFS:
the socket buffer was full), `errors` (other OSErrors, e.g. ECONNREFUSED
from an ICMP port unreachable), `start`, `end` (wall times), `seconds`,
`rate_pps` (achieved: sent / seconds), `procs`, `pool`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Callable

from lanspan.session.cookie import CookieJar
from lanspan.wire.messages import (
    INITIATION_LEN,
    MAC1_OFFSET_INITIATION,
    TYPE_INITIATION,
    TYPE_TRANSPORT,
)

JUNK = ("random", "initiation", "transport", "mac1-initiation")
TRANSPORT_LEN = 128
RANDOM_MIN, RANDOM_MAX = 32, 256
POOL_MAX = 200_000  # distinct datagrams built before a run (about 30 MB at most)

_TYPE1 = TYPE_INITIATION.to_bytes(4, "little")
_TYPE4 = TYPE_TRANSPORT.to_bytes(4, "little")


def random_junk(rng: random.Random) -> bytes:
    """Random bytes of a random length; the type word is kept off the real message types."""
    data = bytearray(rng.randbytes(rng.randint(RANDOM_MIN, RANDOM_MAX)))
    if data[0] in (1, 2, 3, 4) and not any(data[1:4]):
        data[1] = 0xFF  # astronomically rare; keeps "random" from ever being a real shape
    return bytes(data)


def initiation_junk(rng: random.Random) -> bytes:
    """Type 1, 148 bytes, every field random, mac1 and mac2 bogus."""
    return _TYPE1 + rng.randbytes(INITIATION_LEN - 4)


def transport_junk(rng: random.Random) -> bytes:
    """Type 4, 128 bytes: random receiver index, counter and ciphertext."""
    return _TYPE4 + rng.randbytes(TRANSPORT_LEN - 4)


def mac1_initiation(rng: random.Random, jar: CookieJar) -> bytes:
    """Type 1, 148 bytes, random sender/ephemeral/static/timestamp, valid mac1, zero mac2."""
    msg = bytearray(_TYPE1 + rng.randbytes(INITIATION_LEN - 4))
    return jar.add_macs(msg, MAC1_OFFSET_INITIATION, now=0.0)


def builder(kind: str, public_key: bytes | None = None) -> Callable[[random.Random], bytes]:
    """The datagram builder of junk `kind`; `mac1-initiation` needs the target's public key."""
    if kind == "random":
        return random_junk
    if kind == "initiation":
        return initiation_junk
    if kind == "transport":
        return transport_junk
    if kind == "mac1-initiation":
        if public_key is None or len(public_key) != 32:
            raise ValueError("mac1-initiation needs the target's 32-byte public key")
        jar = CookieJar(public_key)
        return lambda rng: mac1_initiation(rng, jar)
    raise ValueError(f"unknown junk kind {kind!r} (one of {', '.join(JUNK)})")


def build_pool(kind: str, count: int, seed: int, public_key: bytes | None = None) -> list[bytes]:
    """`count` datagrams of `kind` (distinct but for astronomically rare collisions)."""
    make = builder(kind, public_key)
    rng = random.Random(seed)
    return [make(rng) for _ in range(count)]


class _Stop:
    def __init__(self) -> None:
        self.now = False

    def __call__(self, *_: object) -> None:
        self.now = True


def send_loop(
    sock: socket.socket,
    pool: list[bytes],
    rate: float,
    seconds: float,
    stop: _Stop,
    offset: int = 0,
) -> dict[str, float]:
    """Send `pool` round-robin on connected `sock` at `rate`/s for `seconds`; the counts."""
    n = len(pool)
    i = offset % n
    sent = blocked = errors = 0
    send = sock.send
    mono = time.monotonic
    t0 = mono()
    wall0 = time.time()
    end = t0 + seconds
    burst = max(1, int(rate / 1000))  # ~1 ms of datagrams ahead of the schedule at most
    while not stop.now:
        now = mono()
        if now >= end:
            break
        due = int((now - t0) * rate) + burst
        tried = sent + blocked + errors
        if tried >= due:
            time.sleep(0.0005)
            continue
        for _ in range(min(due - tried, 512)):  # then look at the clock again
            try:
                send(pool[i])
                sent += 1
            except BlockingIOError:
                blocked += 1  # the buffer is full: that datagram is not sent; never wait
            except OSError:
                errors += 1
            i += 1
            if i == n:
                i = 0
    elapsed = max(1e-9, mono() - t0)
    return {"sent": sent, "blocked": blocked, "errors": errors, "start": wall0,
            "end": wall0 + elapsed, "seconds": elapsed}  # fmt: skip


def _drop_privileges(user: str) -> None:
    if os.geteuid() != 0 or not user:
        return
    import pwd

    pw = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)


def _socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.connect((host, port))
    return sock


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lanspan.lab.inside.flooder")
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--junk", choices=JUNK, required=True)
    ap.add_argument("--rate", type=float, default=40_000, help="datagrams per second")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--public-key", default=None, help="base64 (mac1-initiation)")
    ap.add_argument("--procs", type=int, default=1, help="sending processes (forked)")
    ap.add_argument("--user", default="nobody", help="drop to this user when started as root")
    ap.add_argument("--seed", type=int, default=None)
    a = ap.parse_args(argv)
    if a.rate <= 0 or a.seconds <= 0 or not 1 <= a.procs <= 16:
        ap.error("--rate and --seconds must be positive, --procs 1..16")
    pub = None
    if a.public_key is not None:
        from lanspan.config.keys import decode_key

        pub = decode_key(a.public_key)
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    _drop_privileges(a.user)
    seed = a.seed if a.seed is not None else int.from_bytes(os.urandom(8), "little")
    count = max(1, min(POOL_MAX, int(a.rate * a.seconds) + 1))
    pool = build_pool(a.junk, count, seed, pub)
    sock = _socket(a.host, a.port)
    share = a.rate / a.procs
    children: list[tuple[int, int]] = []  # (pid, read end of its result pipe)
    for k in range(1, a.procs):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: its own share, its own part of the pool
            os.close(r)
            res = send_loop(sock, pool, share, a.seconds, stop, offset=k * count // a.procs)
            os.write(w, json.dumps(res).encode())
            os._exit(0)
        os.close(w)
        children.append((pid, r))
    print(f"start {time.time():.6f}", flush=True)
    total = send_loop(sock, pool, share, a.seconds, stop)
    for pid, r in children:
        if stop.now:
            os.kill(pid, signal.SIGTERM)
        chunks = []
        while chunk := os.read(r, 4096):
            chunks.append(chunk)
        os.close(r)
        os.waitpid(pid, 0)
        if chunks:
            res = json.loads(b"".join(chunks))
            for key in ("sent", "blocked", "errors"):
                total[key] += res[key]
            total["start"] = min(total["start"], res["start"])
            total["end"] = max(total["end"], res["end"])
    total["seconds"] = max(1e-9, total["end"] - total["start"])
    out = dict(total, rate_pps=round(total["sent"] / total["seconds"]), procs=a.procs, pool=count)
    print("done " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
