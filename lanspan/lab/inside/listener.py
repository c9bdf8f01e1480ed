"""Tiny TCP/UDP listeners and a connect test, run inside a lab namespace.

    python -m lanspan.lab.inside.listener serve tcp:8080 udp:53 ...   (prints "ready")
    python -m lanspan.lab.inside.listener connect tcp ADDR PORT [--timeout S]

`connect` exits 0 when the TCP connection is accepted (or a UDP datagram is
echoed back), 1 when it is refused or times out. Lab addresses only.
"""

from __future__ import annotations

import argparse
import selectors
import socket
import sys


def serve(specs: list[str]) -> None:
    sel = selectors.DefaultSelector()
    for spec in specs:
        proto, _, port = spec.partition(":")
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        s = socket.socket(socket.AF_INET, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", int(port)))
        if proto == "tcp":
            s.listen(16)
        sel.register(s, selectors.EVENT_READ, proto)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if key.data == "tcp":
                conn, _ = sock.accept()
                conn.close()
            else:
                data, addr = sock.recvfrom(2048)
                sock.sendto(data, addr)


def connect(proto: str, addr: str, port: int, timeout: float) -> int:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.settimeout(timeout)
        try:
            if proto == "tcp":
                s.connect((addr, port))
            else:
                s.sendto(b"lanspan-lab", (addr, port))
                s.recvfrom(2048)
        except OSError:
            return 1
    return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    sv = sub.add_parser("serve")
    sv.add_argument("specs", nargs="+")
    co = sub.add_parser("connect")
    co.add_argument("proto", choices=["tcp", "udp"])
    co.add_argument("addr")
    co.add_argument("port", type=int)
    co.add_argument("--timeout", type=float, default=1.0)
    a = ap.parse_args()
    if a.cmd == "serve":
        serve(a.specs)
    else:
        sys.exit(connect(a.proto, a.addr, a.port, a.timeout))


if __name__ == "__main__":
    main()
