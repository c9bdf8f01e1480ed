"""The guests' frames are queued from the agent's first milliseconds (issue 10, cold start).

At a cold start every agent of a host starts at once, and each spends ~100 ms
of CPU importing and validating before its loop runs: with 13 agents on 2
cores, over a second. A guest's ARP request sent meanwhile on the interface
its port attaches to was lost, and the guest's kernel asks again only a second
later (`retrans_time_ms` 1000): up to a second added to the cold start after
the sessions were up.

`open_early(network_file, node)` runs before anything heavy is imported: it
reads the network file with `tomllib` alone and attaches, for each of the
node's ports that names an existing interface (`interface = "..."`), the
AF_PACKET socket the agent would attach later. The kernel queues the guests'
frames in it from then on; the loop reads them as soon as it runs, and the
session queues what it floods until the handshake completes (QUEUE_MAX_AGE).

Nothing here judges the file: whatever does not look as expected opens
nothing (the agent's validation says what is wrong), and an attach that fails
is left to the agent's own attach, which reports it. The agent adopts a socket
only for a port the validated file gives the same interface (`take`); the
others are closed (`close`). TAP ports are not created here: their device
does not exist before the agent creates it, so no frame is lost meanwhile.
"""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path
from typing import Any

from lanspan.dataplane.packet import PacketPort
from lanspan.dataplane.ports import FramePort

__all__ = ["EarlyPorts", "open_early", "preload"]

log = logging.getLogger("lanspan.agent")

# path -> (the text read, its TOML document), kept by `preload`: the lab's launcher
# reads its network file once before it forks every agent (as `preload_network`)
_PRELOADED: dict[str, tuple[str, dict[str, Any]]] = {}


def preload(network_file: Path) -> None:
    """Read `network_file` now for later `open_early`s of it (same text: no parse)."""
    try:
        text = network_file.read_text()
        _PRELOADED[str(network_file)] = (text, tomllib.loads(text))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        _PRELOADED.pop(str(network_file), None)


class EarlyPorts:
    """AF_PACKET sockets attached before the agent was set up, by interface name."""

    def __init__(self, ports: dict[str, FramePort] | None = None) -> None:
        self._ports: dict[str, FramePort] = dict(ports or {})

    def devices(self) -> list[str]:
        return list(self._ports)

    def take(self, device: str, name: str) -> FramePort | None:
        """The socket attached to `device`, now port `name`'s (None: none was)."""
        port = self._ports.pop(device, None)
        if port is not None:
            port.name = name
        return port

    def close(self) -> list[str]:
        """Close the sockets no port took; the interfaces they were on."""
        left = list(self._ports)
        for port in self._ports.values():
            port.close()
        self._ports.clear()
        return left


def open_early(network_file: Path, node: str) -> EarlyPorts:
    """Attach the interfaces `node`'s ports name in `network_file` (best effort)."""
    devices = _interfaces(network_file, node)
    ports: dict[str, FramePort] = {}
    for device in devices:
        try:
            ports[device] = PacketPort.attach(device)
        except (OSError, ValueError):
            continue  # the agent's own attach says why, naming the port
    return EarlyPorts(ports)


def _interfaces(network_file: Path, node: str) -> list[str]:
    """The interfaces of `node`'s access and trunk ports, as the file names them;
    [] for a file that cannot be read or does not look as expected."""
    try:
        text = network_file.read_text()
        kept = _PRELOADED.get(str(network_file))
        doc = kept[1] if kept is not None and kept[0] == text else tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    nodes = doc.get("node")
    if not isinstance(nodes, list):
        return []
    mine = [n for n in nodes if isinstance(n, dict) and n.get("name") == node]
    if len(mine) != 1:
        return []
    ports: Any = mine[0].get("port", [])
    if not isinstance(ports, list):
        return []
    out: list[str] = []
    for p in ports:
        if not isinstance(p, dict) or p.get("kind") not in ("access", "trunk"):
            continue
        dev = p.get("interface")
        if isinstance(dev, str) and dev and "tap" not in p and dev not in out:
            out.append(dev)
    return out
