"""What an agent holds in memory: none of the libraries only other paths need.

A fresh interpreter does what `lanspan agent` does before its loop — the
command's and the loop's modules, the network file read and validated, the
look for leftovers of an earlier run, the node core built — and must not
have imported pydantic (only an invalid file needs it, for its messages),
pyroute2 (only the kernel plane, TAP set-up and removing leftovers), the lab
or the test libraries. Checked by `sys.modules`, not by time or memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

NOT_IN_AN_AGENT = (
    "pydantic",
    "pydantic_core",
    "lanspan.config._pydantic",
    "pyroute2",
    "lanspan.lab",
    "hypothesis",
    "pytest",
    "click",  # the agent's entry (lanspan.agent.start) has no click: tests/test_agent_entry.py
    "difflib",  # only a mistake in the file needs its suggestions
    # the typed status and its JSON form: built when a control or metrics client asks
    # (their dataclasses, ~5 ms of CPU, at every agent's start: issue 10, cold start)
    "lanspan.node.status",
    "lanspan.control.document",
    "lanspan.control.metrics",  # only with --metrics
)

_PROBE = """
import json, os, sys, time
from pathlib import Path
import lanspan.agent.start
from lanspan.agent import loop
from lanspan.config import generate_private_key, load_network
from lanspan.dataplane.kernel import cleanup_leftovers
from lanspan.node.core import NodeCore

net = load_network(Path(sys.argv[1]))
node = net.nodes[0].name
assert cleanup_leftovers(net.name, "no-such-node-here") == []
core = NodeCore(net, node, generate_private_key(), random_bytes=os.urandom,
                wall_time=time.time, now=time.monotonic())
assert core.peer_count() == len(net.nodes) - 1
print(json.dumps(sorted(sys.modules)))
"""


def test_an_agent_imports_no_pydantic_pyroute2_lab_or_test_libraries() -> None:
    r = subprocess.run(
        [sys.executable, "-c", _PROBE, str(ROOT / "examples/network.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    mods = set(json.loads(r.stdout.strip().splitlines()[-1]))
    assert "lanspan.agent.loop" in mods and "lanspan.config.parse" in mods
    found = sorted(m for m in mods if any(m == x or m.startswith(x + ".") for x in NOT_IN_AN_AGENT))
    assert found == []


def test_an_invalid_file_still_gets_pydantics_judgement(tmp_path: Path) -> None:
    bad = tmp_path / "net.toml"
    bad.write_text('[network]\nname = "n"\nport = "51820"\n')
    probe = (
        "import sys\nfrom pathlib import Path\nfrom lanspan.config import load_network\n"
        "from lanspan.errors import ConfigError\n"
        "try:\n    load_network(Path(sys.argv[1]))\nexcept ConfigError as e:\n"
        "    print(e.render()); print('pydantic' in sys.modules)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", probe, str(bad)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert '[network] port: expected an integer, got "51820" (a string)' in r.stdout
    assert r.stdout.strip().endswith("True")
