"""The flood fault on a real small lab: `lab test --json` runs it, reports its figures,
and the sender stops by itself after `seconds` (2 s at 2000 datagrams/s: bounded)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from lanspan.lab import netns

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parent.parent
LAB = [sys.executable, "-c", "from lanspan.lab.commands import lab; lab()"]

FLOOD = """
[[fault]]
name = "flood-gra"
kind = "flood"
node = "gra-hv1"
junk = "mac1-initiation"
rate = 2000
seconds = 2
probe = { source = "rbx-lan", target = "gra-lan" }
"""


def lab(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LAB, *args], capture_output=True, text=True, timeout=timeout)


def test_flood_fault_runs_reports_and_stops(tmp_path: Path) -> None:
    if netns.require_root():
        pytest.skip("needs root")
    name = f"f{secrets.token_hex(3)}"
    text = (ROOT / "examples" / "small.toml").read_text()
    text = text.replace('name = "small"', f'name = "{name}"', 1)
    text = text.replace("throughput_seconds = 2", "throughput_seconds = 1", 1)
    text = text[: text.index("[[fault]]")] + FLOOD  # the flood alone
    lab_file = tmp_path / "flood.toml"
    lab_file.write_text(text)
    run_dir = tmp_path / "run"
    prefix = f"lsl-{name}-"
    pids: list[int] = []
    try:
        up = lab("up", str(lab_file), "--run-dir", str(run_dir))
        assert up.returncode == 0, up.stdout + up.stderr
        state = json.loads((run_dir / "state.json").read_text())
        pids = [a["pid"] for a in state["agents"].values()]
        res = lab("test", str(lab_file), "--run-dir", str(run_dir), "--json", timeout=180)
        assert res.stdout.strip(), res.stderr
        (tmp_path / "result.json").write_text(res.stdout)
        result = json.loads(res.stdout)
        [f] = result["faults"]
        assert (f["name"], f["kind"], f["target"], f["junk"]) == (
            "flood-gra", "flood", "gra-hv1", "mac1-initiation")  # fmt: skip
        assert f["probe"] == "rbx-lan -> gra-lan"
        # the sender stopped by itself after its 2 s (the lab waits 15 s more before it would
        # end it) and sent at the asked rate
        assert 1.9 <= f["flood_seconds"] <= 3.0, f
        assert 1800 <= f["rate_pps"] <= 2100, f
        assert f["flood_sent"] >= 3600, f
        for key in ("loss_pct", "rtt_p99_ms", "quiet_rtt_p99_ms", "quiet_loss_pct",
                    "agent_cpu_pct", "quiet_agent_cpu_pct"):  # fmt: skip
            assert isinstance(f[key], float | int), (key, f)
        assert 0 <= f["loss_pct"] <= 100 and f["rtt_p99_ms"] > 0 and f["agent_cpu_pct"] >= 0
        assert isinstance(f["met"], bool)
        assert f["probes"] >= 150  # 2 s of 10 ms probes
        # the agent saw the flood: its drop counters grew (by reason) during it
        assert f["agent_dropped"] > 0 and f["agent_drops"], f
        assert f["recovered"] is True, f
        m = f["markers"]
        assert m["quiet"] < m["quiet_end"] <= m["fault"] < m["cleared"] < m["recovered"]
        # no flooder left: the helpers recorded are the lab's own again
        state = json.loads((run_dir / "state.json").read_text())
        assert not [h for h in state["helpers"] if h["what"].startswith("flooder")]
        assert not [p for p in netns.pids_in(state["namespaces"][0])], "a process in the core"
    finally:
        down = lab("down", str(lab_file), "--run-dir", str(run_dir))
    assert down.returncode == 0, down.stderr
    assert not [ns for ns in netns.existing() if ns.startswith(prefix)]
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}/cmdline").exists()
            or not Path(f"/proc/{pid}/cmdline").read_bytes()
        )
