"""A constant-rate ICMP echo prober, run in a guest's namespace by `lanspan.lab.probe`.

`python -m lanspan.lab.inside.prober ADDR [--interval S]` sends one echo request every
interval on an absolute schedule (unlike ping, it never slows down while
replies are missing), prints `R <seq> <sent wall time> <received wall time>`
per first reply and, on SIGINT/SIGTERM, `S <sent>`. With `--also ADDR` (any
number) it echoes those addresses too, on the same schedule, and prints
`F <addr> <received wall time>` once for the first reply from each address
(ADDR included): the lab's cold-start measurement. SIGUSR1 re-arms that: it
prints `A <wall time>` and from then on `F` once more for each address's first
reply (the lab's heal check, started while a fault still holds). Needs a raw
socket (root).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import socket
import struct
import sys
import time


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def echo(ident: int, seq: int, payload: bytes) -> bytes:
    head = struct.pack("!BBHHH", 8, 0, 0, ident, seq & 0xFFFF)
    return struct.pack("!BBHHH", 8, 0, checksum(head + payload), ident, seq & 0xFFFF) + payload


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lanspan.lab.inside.prober")
    ap.add_argument("address")
    ap.add_argument("--interval", type=float, default=0.01)
    ap.add_argument("--also", action="append", default=[], help="more addresses (first reply)")
    a = ap.parse_args(argv)
    multi = bool(a.also)
    pending = {a.address, *a.also} if multi else set()  # no reply yet from these
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setblocking(False)
    ident = os.getpid() & 0xFFFF
    stop, rearm = [False], [False]

    def on_signal(*_: object) -> None:
        stop[0] = True

    def on_rearm(*_: object) -> None:
        rearm[0] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGUSR1, on_rearm)  # before "T": the lab may signal once it saw it
    sent_at: dict[int, float] = {}
    seen: set[int] = set()
    seq = 0
    start = time.monotonic()
    wall0 = time.time() - start
    out = sys.stdout
    print(f"T {time.time():.6f}", file=out, flush=True)
    while not stop[0]:
        if rearm[0]:
            rearm[0] = False
            pending = {a.address, *a.also} if multi else set()
            print(f"A {time.time():.6f}", file=out, flush=True)
        now = time.monotonic()
        due = start + seq * a.interval
        if now >= due:
            seq += 1
            sent_at[seq] = wall0 + now
            payload = struct.pack("!d", sent_at[seq]) + b"lanspan-lab-probe".ljust(48, b".")
            for addr in [a.address, *sorted(pending - {a.address})]:
                with contextlib.suppress(OSError):  # unreachable for now: counted as unanswered
                    sock.sendto(echo(ident, seq, payload), (addr, 0))
            continue
        ready, _, _ = select.select([sock], [], [], min(due - now, 0.05))
        if not ready:
            continue
        while True:
            try:
                pkt = sock.recv(2048)
            except BlockingIOError:
                break
            ihl = (pkt[0] & 0x0F) * 4
            if len(pkt) < ihl + 8:
                continue
            typ, _, _, rid, rseq = struct.unpack_from("!BBHHH", pkt, ihl)
            if typ != 0 or rid != ident:
                continue
            if multi:
                src = socket.inet_ntoa(pkt[12:16])
                if src in pending:
                    pending.discard(src)
                    print(f"F {src} {time.time():.6f}", file=out, flush=True)
                if src != a.address:
                    continue
            # seqs wrap at 65536: map back to the most recent one with these bits
            full = seq - ((seq - rseq) & 0xFFFF)
            if full in sent_at and full not in seen:
                seen.add(full)
                print(f"R {full} {sent_at[full]:.6f} {time.time():.6f}", file=out, flush=True)
    print(f"S {seq}", file=out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
