"""lanspan.lab: a lanspan network on one machine, in network namespaces.

A lab file (`load_lab`) expands purely into a plan (`expand`): namespaces for
the internet core, each site's router, each node and each guest; veth links;
addresses, routes, NAT; and the network file the agents read. `LabRun` carries
a plan out, keeps what it made in a run directory and removes exactly that;
`lanspan.lab.checks` tests it and injects faults; `lanspan.lab.commands` is the
`lanspan lab` command group.

`lanspan.lab.state` records what a run made (shared by the runner, the faults
and the impairments, so none of them import each other for it).
`lanspan.lab.inside` holds the tools that run inside the namespaces (prober,
VLAN tap, underlay impairer), each started as `python -m lanspan.lab.inside.<tool>`.

`lanspan.lab.netns` (namespace helpers shared with the tests and benchmarks)
is imported without pulling any of the rest in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lanspan.lab.model import Lab, load_lab
    from lanspan.lab.runner import LabError, LabRun
    from lanspan.lab.topology import Plan, expand

_EXPORTS = {
    "Lab": "lanspan.lab.model",
    "load_lab": "lanspan.lab.model",
    "LabError": "lanspan.lab.runner",
    "LabRun": "lanspan.lab.runner",
    "Plan": "lanspan.lab.topology",
    "expand": "lanspan.lab.topology",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)


__all__ = ["Lab", "LabError", "LabRun", "Plan", "expand", "load_lab"]
