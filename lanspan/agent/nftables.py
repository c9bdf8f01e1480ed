"""The kernel filter: nftables rules that drop junk on the agent's UDP port before Python.

The agent installs one table, ``inet lanspan_<network>_<port>``, in one
``nft -f -`` transaction (which also replaces a table of that name left by a
crash), and deletes it on exit. For the mesh port it accepts only datagrams
shaped like one of the four WireGuard messages (lanspan/wire/messages.py)::

    type word (u32le on the wire)  UDP payload length
    1 0 0 0  initiation            148
    2 0 0 0  response               92
    3 0 0 0  cookie reply           64
    4 0 0 0  transport             >= 32 (16-byte header + 16-byte tag)

nft compares raw header bytes, so the type word ``01 00 00 00`` is the
number 0x01000000.

Handshake messages (types 1-3) are rate-limited per source: per IPv4
address and per IPv6 /64 (dynamic sets with ``limit rate``). Transport
datagrams must name a receiver index of this agent run: every index the
agent allocates carries the run's random 16-bit prefix in its high half
(`SessionTable(index_prefix=...)`), and the kernel compares those two wire
bytes (``@th,112,16``, `prefix_element`) with a constant. The rule never
changes while the agent runs: an exact set of live indexes had to be moved
with an ``nft`` process per handshake, which at 100 peers cost more CPU
than the agent itself and stalled its loop (issue 10). A blind flood passes
with probability 2^-16; what passes is dropped in Python, exactly. On a
trusted site with the kernel data plane, UDP to the site's VXLAN port is
accepted first thing from the site's underlay prefixes and dropped from
anywhere else.

What the installed nft cannot express is left out (the fullest table it
installs, tried in turn at start, logged); where nft is missing or refuses the
table the agent logs one line and runs without the filter. Each drop rule has a
named counter; `KernelFilter.status` reads them (at most once a second,
in a thread: a status request never waits for nft) as the drop reasons of
docs/drops.md ``## kernel``.

The module-level functions are pure: `render` is tested against golden text.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from ipaddress import IPv4Network, IPv6Network
from typing import TYPE_CHECKING

from lanspan.agent.nft_counters import BadReply
from lanspan.records import record
from lanspan.wire.messages import (
    COOKIE_REPLY_LEN,
    INITIATION_LEN,
    MIN_TRANSPORT_LEN,
    RESPONSE_LEN,
    TYPE_COOKIE_REPLY,
    TYPE_INITIATION,
    TYPE_RESPONSE,
    TYPE_TRANSPORT,
)

if TYPE_CHECKING:
    from lanspan.node.status import KernelFilterStatus

__all__ = [
    "DROP_REASONS",
    "CounterRead",
    "FilterSpec",
    "KernelFilter",
    "Runner",
    "Spawn",
    "prefix_element",
    "render",
    "render_remove",
    "table_name",
]

log = logging.getLogger("lanspan.agent")

# nft counter name -> drop reason (each listed in docs/drops.md under ## kernel).
DROP_REASONS: dict[str, str] = {
    "bad_shape": "kernel.bad_shape",
    "handshake_rate": "kernel.handshake_rate",
    "unknown_receiver": "kernel.unknown_receiver",
    "vxlan_outside_underlay": "kernel.vxlan_outside_underlay",
}

# Handshake messages accepted per source (IPv4 address, IPv6 /64): WireGuard
# allows 20 a second per source with a small burst; a burst of 50 lets a
# few dozen nodes behind one NAT address start at once.
HANDSHAKE_RATE = 20
HANDSHAKE_BURST = 50
# Sources remembered by the rate limiter (each forgotten a minute after its last handshake).
HANDSHAKE_SOURCES = 65536
# Counters are read from the kernel at most this often.
COUNTERS_EVERY = 1.0
UDP_HEADER = 8

# (a command line, its stdin) -> (exit code, stdout, stderr)
Runner = Callable[[list[str], str | None], tuple[int, str, str]]
# Runs a job away from the agent loop (tests run it at once).
Spawn = Callable[[Callable[[], None]], None]
# A table name -> packets by counter name, read in-process (raises OSError or BadReply).
CounterRead = Callable[[str], dict[str, int]]


def _in_thread(job: Callable[[], None]) -> None:
    threading.Thread(target=job, name="nft-counters", daemon=True).start()


def table_name(network: str, port: int) -> str:
    """`lanspan_<network>_<port>`, with anything nft would not take as a name made `_`."""
    return f"lanspan_{re.sub(r'[^A-Za-z0-9_]', '_', network)}_{port}"


def prefix_element(prefix: int) -> int:
    """What nft reads at ``@th,112,16`` for receiver indexes with high half `prefix`:
    the index is u32le on the wire, so its high half is bytes 2-3, read big-endian."""
    return int.from_bytes(prefix.to_bytes(2, "little"), "big")


def _type_word(kind: int) -> str:
    return f"0x{int.from_bytes(bytes([kind, 0, 0, 0]), 'big'):08x}"


@record(frozen=True, slots=True)
class FilterSpec:
    """What the table filters: the mesh port, and plain VXLAN on a trusted site."""

    network: str
    port: int
    receiver_prefix: int | None = None  # transport indexes must carry it (high 16 bits)
    handshake_v6_prefix: bool = True  # rate-limit IPv6 per /64 (else per address)
    vxlan_port: int | None = None  # the trusted site's plain VXLAN port, when in use
    underlay: tuple[IPv4Network | IPv6Network, ...] = ()  # the site's prefixes
    handshake_rate: int = HANDSHAKE_RATE
    handshake_burst: int = HANDSHAKE_BURST

    @property
    def table(self) -> str:
        return table_name(self.network, self.port)

    def features(self) -> tuple[str, ...]:
        """What this spec does, in words for the log and `lanspan show`."""
        out = ["shape", "handshake rate per IPv4 address and IPv6 " +
               ("/64" if self.handshake_v6_prefix else "address")]  # fmt: skip
        if self.receiver_prefix is not None:
            out.append("receiver index prefix")
        if self.vxlan_port is not None:
            out.append(f"vxlan port {self.vxlan_port} from the site underlay only")
        return tuple(out)


def _limit(spec: FilterSpec) -> str:
    return f"limit rate over {spec.handshake_rate}/second burst {spec.handshake_burst} packets"


def _prefixes(nets: list[str]) -> str:
    """One prefix as is (a masked compare), several as an anonymous interval set."""
    return nets[0] if len(nets) == 1 else f"{{ {', '.join(nets)} }}"


def _vxlan_rules(spec: FilterSpec) -> list[str]:
    """Plain VXLAN: accepted at once from the site's underlay, dropped from anywhere else.

    First in the input chain, no jump: inside a trusted site nearly every packet
    is VXLAN (GRO hands them over as superframes of up to 64 KiB), and each one
    costs one port compare and one prefix compare before it is accepted.
    """
    if spec.vxlan_port is None:
        return []
    dport = f"udp dport {spec.vxlan_port}"
    v4 = [str(n) for n in spec.underlay if isinstance(n, IPv4Network)]
    v6 = [str(n) for n in spec.underlay if isinstance(n, IPv6Network)]
    out = []
    if v4:
        out.append(f"\t\t{dport} ip saddr {_prefixes(v4)} accept")
    if v6:
        out.append(f"\t\t{dport} ip6 saddr {_prefixes(v6)} accept")
    out.append(f"\t\t{dport} counter name vxlan_outside_underlay drop")
    return out


def render(spec: FilterSpec) -> str:
    """The `nft -f -` script installing the table, replacing one of that name if present."""
    t = spec.table
    v6 = "ip6 saddr and ffff:ffff:ffff:ffff::" if spec.handshake_v6_prefix else "ip6 saddr"
    shapes = [
        (TYPE_INITIATION, f"udp length {UDP_HEADER + INITIATION_LEN}"),
        (TYPE_RESPONSE, f"udp length {UDP_HEADER + RESPONSE_LEN}"),
        (TYPE_COOKIE_REPLY, f"udp length {UDP_HEADER + COOKIE_REPLY_LEN}"),
    ]
    transport = (
        f"@th,64,32 {_type_word(TYPE_TRANSPORT)} udp length >= {UDP_HEADER + MIN_TRANSPORT_LEN}"
    )
    lines = [
        f"table inet {t} {{}}",
        f"delete table inet {t}",
        f"table inet {t} {{",
        *(f"\tcounter {name} {{}}" for name in DROP_REASONS),
    ]
    for family, addr in (("4", "ipv4_addr"), ("6", "ipv6_addr")):
        lines.append(
            f"\tset handshake{family} {{ type {addr}; size {HANDSHAKE_SOURCES}; "
            "flags dynamic,timeout; timeout 1m; }"
        )
    lines += [
        "\tchain input {",
        "\t\ttype filter hook input priority filter - 10; policy accept;",
        *_vxlan_rules(spec),
        f"\t\tudp dport {spec.port} jump mesh",
        "\t}",
        "\tchain mesh {",
        f"\t\t{transport} jump transport",
        *(f"\t\t@th,64,32 {_type_word(k)} {length} jump handshake" for k, length in shapes),
        "\t\tcounter name bad_shape drop",
        "\t}",
        "\tchain transport {",
    ]
    if spec.receiver_prefix is not None:
        mine = f"0x{prefix_element(spec.receiver_prefix):04x}"
        lines.append(f"\t\t@th,112,16 != {mine} counter name unknown_receiver drop")
    lines += [
        "\t\taccept",  # well shaped: not back into `mesh`, whose last rule drops
        "\t}",
        "\tchain handshake {",
        f"\t\tmeta nfproto ipv4 update @handshake4 {{ ip saddr {_limit(spec)} }} "
        "counter name handshake_rate drop",
        f"\t\tmeta nfproto ipv6 update @handshake6 {{ {v6} {_limit(spec)} }} "
        "counter name handshake_rate drop",
        "\t\taccept",
        "\t}",
    ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_remove(table: str) -> str:
    """Delete the table if it is there (no error when it is not)."""
    return f"table inet {table} {{}}\ndelete table inet {table}\n"


def parse_counters(text: str) -> dict[str, int]:
    """`nft -j list counters table ...` -> packets by counter name (malformed: empty)."""
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    out: dict[str, int] = {}
    items = doc.get("nftables", []) if isinstance(doc, Mapping) else []
    for item in items if isinstance(items, list) else []:
        c = item.get("counter") if isinstance(item, Mapping) else None
        if isinstance(c, Mapping) and isinstance(c.get("packets"), int):
            out[str(c.get("name"))] = c["packets"]
    return out


def run_nft(argv: list[str], stdin: str | None) -> tuple[int, str, str]:
    """Run nft; an nft that cannot be started is exit code 127 with the reason."""
    try:
        out = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 127, "", str(e)
    return out.returncode, out.stdout, out.stderr


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else "no message"


def remove_leftover(
    spec: FilterSpec,
    runner: Runner = run_nft,
    which: Callable[[str], str | None] = shutil.which,
) -> bool:
    """Delete the table of `spec`'s name an earlier run left (kill -9); True if there was one.

    One nft call. The agent makes it at once when it starts and installs its
    own table a little later (`KernelFilter.start`): a leftover's receiver prefix
    (an earlier run's) would drop the traffic of the new sessions meanwhile.
    """
    nft = which("nft")
    if nft is None:
        return False
    code = runner([nft, "delete", "table", "inet", spec.table], None)[0]
    if code == 0:
        log.info("kernel filter: removed table inet %s left by an earlier run", spec.table)
    return code == 0


class KernelFilter:
    """The installed table; `start` returns None (after one log line) when there is none."""

    def __init__(
        self,
        spec: FilterSpec,
        nft: str,
        runner: Runner,
        clock: Callable[[], float],
        spawn: Spawn,
        read: CounterRead | None = None,
    ) -> None:
        self.spec = spec
        self._nft = nft
        self._run = runner
        self._clock = clock
        self._spawn = spawn
        self._read = read
        self._counters: dict[str, int] = {}
        self._read_at: float | None = None
        self._reading = False
        self.active = True  # False once the table was removed

    @classmethod
    def start(
        cls,
        spec: FilterSpec,
        runner: Runner = run_nft,
        which: Callable[[str], str | None] = shutil.which,
        clock: Callable[[], float] = time.monotonic,
        spawn: Spawn | None = None,
        read: CounterRead | None = None,
    ) -> KernelFilter | None:
        """Install the fullest table nft can express (replacing a leftover of its name).

        `read` reads the table's counters in-process (the agent: over netlink,
        `nft_counters.read_counters`, well under a millisecond); without one, or
        once it failed, `nft -j list counters` runs through `spawn` (default: a
        daemon thread each, so that a status request never waits for an nft
        process).
        """
        nft = which("nft")
        if nft is None:
            log.warning(
                "kernel filter off: nft not found (install the Debian package nftables); "
                "junk on udp port %d is dropped in Python only",
                spec.port,
            )
            return None
        # Each candidate is installed at once (`nft -f`: one transaction, which also
        # replaces a table of that name): one that nft cannot express changes
        # nothing, and the next is tried. A check first (`nft -c`) and a look for a
        # leftover (`remove_leftover` removed it at the start) were two more nft
        # processes that the loop's first round waited for in every agent's start.
        chosen, why = None, ""
        for candidate in (
            spec,
            replace(spec, receiver_prefix=None),
            replace(spec, handshake_v6_prefix=False),
            replace(spec, receiver_prefix=None, handshake_v6_prefix=False),
        ):
            code, _, err = runner([nft, "-f", "-"], render(candidate))
            if code == 0:
                chosen = candidate
                break
            why = why or _first_line(err)
        if chosen is None:
            log.warning(
                "kernel filter off: nft refused the table (%s); junk on udp port %d is "
                "dropped in Python only",
                why,
                spec.port,
            )
            return None
        left_out = []
        if spec.receiver_prefix is not None and chosen.receiver_prefix is None:
            left_out.append("receiver index prefix (nft cannot express it)")
        if spec.handshake_v6_prefix and not chosen.handshake_v6_prefix:
            left_out.append("IPv6 /64 rate limit (per address instead)")
        log.info(
            "kernel filter on: table inet %s: %s%s",
            chosen.table,
            ", ".join(chosen.features()),
            f"; left out: {', '.join(left_out)}" if left_out else "",
        )
        return cls(chosen, nft, runner, clock, spawn or _in_thread, read)

    @property
    def table(self) -> str:
        return self.spec.table

    def _read_counters(self) -> None:
        try:
            code, out, _ = self._run(
                [self._nft, "-j", "list", "counters", "table", "inet", self.table], None
            )
            if code == 0:
                self._counters = parse_counters(out)
        finally:
            self._reading = False

    def status(self) -> KernelFilterStatus | None:
        """The table's drop counters as last read from the kernel, read again when
        the last read is COUNTERS_EVERY old: in-process (`read`, at once) or, without
        it, by an nft process through `spawn` (one at a time, never waited for)."""
        # imported when asked: the status types cost an agent's start (issue 10)
        from lanspan.node.status import Counts, KernelFilterStatus

        if not self.active:
            return None
        now = self._clock()
        if not self._reading and (self._read_at is None or now - self._read_at >= COUNTERS_EVERY):
            self._read_at = now
            if self._read is not None:
                try:
                    self._counters = self._read(self.table)
                except (OSError, BadReply) as e:
                    log.warning(
                        "kernel filter: cannot read the counters of inet %s over netlink (%s);"
                        " reading them with nft from now on",
                        self.table,
                        e,
                    )
                    self._read = None
            if self._read is None:
                self._reading = True
                self._spawn(self._read_counters)
        drops = {r: self._counters.get(name, 0) for name, r in DROP_REASONS.items()}
        prefix = self.spec.receiver_prefix
        return KernelFilterStatus(
            table=f"inet {self.table}",
            receiver_prefix=None if prefix is None else f"0x{prefix:04x}",
            drops=Counts.of(drops),
        )

    def close(self) -> None:
        """Delete the table (logged when nft cannot)."""
        if not self.active:
            return
        self.active = False
        code, _, err = self._run([self._nft, "-f", "-"], render_remove(self.table))
        if code != 0:
            log.warning("kernel filter: could not delete table inet %s: %s", self.table,
                        _first_line(err))  # fmt: skip
