"""The programs the lab runs, and the Debian package each comes from.

`lab up` and `lab test` check for what they will need before they start, and
name every missing program once, with its package, instead of failing later
with `exec of "nft" failed` from deep inside a build.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable

from lanspan.lab.model import Lab
from lanspan.lab.netns import PACKAGES

_NFT_FAULTS = ("cut-uplink", "block", "impair")


def for_up(lab: Lab) -> list[str]:
    """What `lab up` runs: ip always; nft for NAT sites and impaired uplinks."""
    need = ["ip"]
    if any(s.nat or not s.uplink.empty for s in lab.site) or lab.internet is not None:
        need.append("nft")
    if lab.gateway or lab.floating:
        need += ["keepalived", "nft"]
    if lab.dhcp:
        need.append("dnsmasq")
    return need


def for_test(lab: Lab, faults: bool = True) -> list[str]:
    """What `lab test` runs: ping and iperf3; nft for cuts, blocks and impairments."""
    need = ["ip", "ping", "iperf3"]
    if faults and any(f.kind in _NFT_FAULTS for f in lab.fault):
        need.append("nft")
    if any(g.dhcp for g in lab.guest):
        need.append("busybox")  # its udhcpc is the guests' DHCP client
    return need


def missing(names: Iterable[str]) -> list[str]:
    """The programs among `names` that are not on PATH, each once, in order."""
    return [n for n in dict.fromkeys(names) if shutil.which(n) is None]


def problem(names: Iterable[str], what: str) -> str | None:
    """One message naming every missing program and its Debian package; None if all are there."""
    gone = missing(names)
    if not gone:
        return None
    listed = ", ".join(f"{n} (Debian package {PACKAGES.get(n, n)})" for n in gone)
    pkgs = " ".join(dict.fromkeys(PACKAGES.get(n, n) for n in gone))
    return f"{what} needs {listed}, not found on PATH: apt-get install {pkgs}"


def package_of(program: str) -> str:
    return PACKAGES.get(program, program)


__all__ = ["PACKAGES", "for_test", "for_up", "missing", "package_of", "problem"]
