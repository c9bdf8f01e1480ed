"""Real labs in namespaces: up, test --json, down; and down after SIGKILL.

Each test copies examples/small.toml under a unique lab name (so its namespace
prefix is unique), uses its own run directory, and checks afterwards that no
namespace, process or device of it is left.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lanspan.lab import netns

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parent.parent
LAB = [sys.executable, "-c", "from lanspan.lab.commands import lab; lab()"]


def _agent_available() -> bool:
    proc = subprocess.run(
        [sys.executable, "-m", "lanspan", "agent", "--help"], capture_output=True, check=False
    )
    return proc.returncode == 0


@pytest.fixture
def small_lab(tmp_path: Path) -> tuple[Path, Path, str]:
    if netns.require_root():
        pytest.skip("needs root")
    if not _agent_available():
        pytest.skip("`lanspan agent` is not there yet")
    name = f"t{secrets.token_hex(3)}"
    text = (ROOT / "examples" / "small.toml").read_text()
    lab_file = tmp_path / "small.toml"
    lab_file.write_text(text.replace('name = "small"', f'name = "{name}"', 1))
    run_dir = tmp_path / "run"
    return lab_file, run_dir, f"lsl-{name}-"


def lab(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*LAB, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"lab {args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _root_links() -> set[str]:
    out = netns.run(["ip", "-o", "link", "show"]).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def _assert_gone(prefix: str, pids: list[int]) -> None:
    assert not [ns for ns in netns.existing() if ns.startswith(prefix)]
    for pid in pids:
        alive = Path(f"/proc/{pid}").exists()
        if alive:
            stat = Path(f"/proc/{pid}/stat").read_text()
            alive = stat.split(")")[-1].split()[0] != "Z"
        assert not alive, f"process {pid} still runs"


def _pids(run_dir: Path) -> list[int]:
    state = json.loads((run_dir / "state.json").read_text())
    return [a["pid"] for a in state["agents"].values()] + [h["pid"] for h in state["helpers"]]


def _assert_in_their_namespaces(run_dir: Path, *, forked: bool) -> None:
    """Each agent runs in its node's namespace, started as `[lab] agent_start` says."""
    state = json.loads((run_dir / "state.json").read_text())
    for node, a in state["agents"].items():
        assert os.stat(f"/proc/{a['pid']}/ns/net").st_ino == os.stat(f"/run/netns/{a['ns']}").st_ino
        cmd = Path(f"/proc/{a['pid']}/cmdline").read_bytes().split(b"\0")
        assert (b"lanspan.lab.launcher" in cmd) is forked, (node, cmd)
        if forked:
            assert a["agent_argv"][:4] == ["--network", a["agent_argv"][1], "--node", node], a


def test_agents_started_one_exec_each(small_lab: tuple[Path, Path, str]) -> None:
    """`[lab] agent_start = "exec"`: each agent its own `python -m lanspan agent`."""
    lab_file, run_dir, prefix = small_lab
    text = lab_file.read_text()
    lab_file.write_text(text.replace("[lab]\n", '[lab]\nagent_start = "exec"\n', 1))
    pids: list[int] = []
    try:
        lab("up", str(lab_file), "--run-dir", str(run_dir))
        pids = _pids(run_dir)
        _assert_in_their_namespaces(run_dir, forked=False)
        st = json.loads(lab("status", str(lab_file), "--run-dir", str(run_dir), "--json").stdout)
        assert all(n["agent_running"] and n["sessions_up"] == 1 for n in st["nodes"]), st
    finally:
        down = lab("down", str(lab_file), "--run-dir", str(run_dir), check=False)
    assert down.returncode == 0, down.stderr
    _assert_gone(prefix, pids)


def test_up_test_down(small_lab: tuple[Path, Path, str], tmp_path: Path) -> None:
    lab_file, run_dir, prefix = small_lab
    links_before = _root_links()
    try:
        up = lab("up", str(lab_file), "--run-dir", str(run_dir))
        assert "gra-hv1" in up.stdout and "1/1" in up.stdout
        pids = _pids(run_dir)
        st = json.loads(lab("status", str(lab_file), "--run-dir", str(run_dir), "--json").stdout)
        assert {n["name"] for n in st["nodes"]} == {"gra-hv1", "rbx-hv1"}, st
        assert all(n["agent_running"] and n["sessions_up"] == 1 for n in st["nodes"])
        _assert_in_their_namespaces(run_dir, forked=True)
        ex = lab("exec", str(lab_file), "--run-dir", str(run_dir), "gra-lan", "--",
                 "ip", "-br", "addr", "show", "eth0")  # fmt: skip
        assert "198.18.10.11/24" in ex.stdout
        # in a node's namespace, `lanspan show` talks to that node's agent
        shown = lab("exec", str(lab_file), "--run-dir", str(run_dir), "gra-hv1", "--",
                    sys.executable, "-m", "lanspan", "show", "--json")  # fmt: skip
        doc = json.loads(shown.stdout)
        assert [p["name"] for p in doc["peers"]] == ["rbx-hv1"], doc
        assert doc["peers"][0]["session"] == "up", doc

        report = tmp_path / "report"
        res = lab("test", str(lab_file), "--run-dir", str(run_dir), "--json",
                  "--report", str(report), check=False)  # fmt: skip
        assert res.stdout.strip(), res.stderr
        result = json.loads(res.stdout)
        (tmp_path / "result.json").write_text(res.stdout)  # kept for a look when it fails
        failing = [c for c in result["checks"] if not c["passed"]]
        assert result["passed"] is True, (failing, result["faults"])
        assert res.returncode == 0
        kinds = {c["kind"] for c in result["checks"]}
        assert {"reachability", "isolation", "mtu", "throughput"} <= kinds, result["checks"]
        iso = [c for c in result["checks"] if c["kind"] == "isolation"]
        assert iso and all(c["passed"] for c in iso)
        mtu = [c for c in result["checks"] if c["kind"] == "mtu"]
        assert all(c["measured"] == c["advertised"] == 1400 for c in mtu)
        names = {f["name"] for f in result["faults"]}
        assert names == {"cut-gra", "restart-rbx", "lossy-rbx"}, result["faults"]
        for f in result["faults"]:
            assert f["recovered"] is True, f
            assert isinstance(f["outage_ms"], float | int) and f["outage_ms"] > 0
        html = (report / "index.html").read_text()
        assert html.count("<svg") == 1 + len(result["faults"])

        # ARP suppression, with a guest's own kernel: gra-lan forgets rbx-lan's MAC and
        # asks again; gra-hv1 answers from the binding rbx-lan's ARP taught it.
        def exec_(where: str, *cmd: str) -> str:
            return lab("exec", str(lab_file), "--run-dir", str(run_dir), where, "--", *cmd).stdout

        def suppressed() -> int:
            doc = json.loads(exec_("gra-hv1", sys.executable, "-m", "lanspan", "show", "--json"))
            return int(doc["counters"].get("arp_suppressed", 0))

        before = suppressed()
        exec_("gra-lan", "ip", "neigh", "flush", "dev", "eth0")
        exec_("gra-lan", "ping", "-c", "1", "-W", "2", "198.18.10.21")
        assert suppressed() > before
        neigh = exec_("gra-lan", "ip", "neigh", "show", "198.18.10.21")
        assert "lladdr" in neigh, neigh
    finally:
        down = lab("down", str(lab_file), "--run-dir", str(run_dir), check=False)
    assert down.returncode == 0, down.stderr
    _assert_gone(prefix, pids)
    assert _root_links() <= links_before


def test_nd_suppression_with_guest_kernels(small_lab: tuple[Path, Path, str]) -> None:
    """A guest's own kernel solicits, advertises and takes an answer the node gives."""
    lab_file, run_dir, prefix = small_lab
    text = lab_file.read_text()
    text = text.replace(
        'ipv4 = "198.18.10.0/24"\nmtu', 'ipv4 = "198.18.10.0/24"\nipv6 = "fd00:10::/64"\nmtu', 1
    )
    for g in ("11", "21"):
        text = text.replace(f'["198.18.10.{g}/24"]', f'["198.18.10.{g}/24", "fd00:10::{g}/64"]')
    lab_file.write_text(text)

    def exec_(where: str, *cmd: str) -> str:
        return lab("exec", str(lab_file), "--run-dir", str(run_dir), where, "--", *cmd).stdout

    def suppressed() -> int:
        doc = json.loads(exec_("gra-hv1", sys.executable, "-m", "lanspan", "show", "--json"))
        return int(doc["counters"].get("nd_suppressed", 0))

    def answers(where: str, addr: str) -> bool:  # the first echo after a start may be lost
        for _ in range(10):
            r = lab("exec", str(lab_file), "--run-dir", str(run_dir), where, "--",
                    "ping", "-6", "-c", "1", "-W", "1", addr, check=False)  # fmt: skip
            if r.returncode == 0:
                return True
        return False

    pids: list[int] = []
    try:
        lab("up", str(lab_file), "--run-dir", str(run_dir))
        pids = _pids(run_dir)
        # each guest solicits the other, and each advertises itself in its answer
        assert answers("gra-lan", "fd00:10::21")
        exec_("rbx-lan", "ip", "-6", "neigh", "flush", "dev", "eth0")
        assert answers("rbx-lan", "fd00:10::11")
        before = suppressed()
        exec_("gra-lan", "ip", "-6", "neigh", "flush", "dev", "eth0")
        assert answers("gra-lan", "fd00:10::21")
        assert suppressed() > before
        neigh = exec_("gra-lan", "ip", "-6", "neigh", "show", "fd00:10::21")
        assert "lladdr" in neigh, neigh
    finally:
        down = lab("down", str(lab_file), "--run-dir", str(run_dir), check=False)
    assert down.returncode == 0, down.stderr
    _assert_gone(prefix, pids)


def test_down_after_sigkill(small_lab: tuple[Path, Path, str]) -> None:
    lab_file, run_dir, prefix = small_lab
    try:
        lab("up", str(lab_file), "--run-dir", str(run_dir))
        pids = _pids(run_dir)
        # a stray process the lab started inside one of its namespaces
        state = json.loads((run_dir / "state.json").read_text())
        guest_ns = next(ns for ns in state["namespaces"] if ns.endswith("g-gra-lan"))
        stray = subprocess.Popen(
            ["ip", "netns", "exec", guest_ns, "sleep", "300"], start_new_session=True
        )
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        st = json.loads(lab("status", str(lab_file), "--run-dir", str(run_dir), "--json").stdout)
        assert not any(n["agent_running"] for n in st["nodes"])
        # and the lab file is gone bad meanwhile: the run directory is enough
        lab_file.write_text("[lab\n")
    finally:
        down = lab("down", str(lab_file), "--run-dir", str(run_dir), check=False)
    assert down.returncode == 0, down.stderr
    stray.wait(10)
    _assert_gone(prefix, [*pids, stray.pid])
    assert "removing what" in down.stderr
    # a second down finds nothing to do
    again = lab("down", str(lab_file), "--run-dir", str(run_dir), check=False)
    assert again.returncode == 1 and "not valid TOML" in again.stderr


def test_down_after_up_was_killed_midway(small_lab: tuple[Path, Path, str]) -> None:
    lab_file, run_dir, prefix = small_lab
    up = subprocess.Popen(
        [*LAB, "up", str(lab_file), "--run-dir", str(run_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state = run_dir / "state.json"
    try:
        netns.wait_for(
            lambda: state.exists() and len(json.loads(state.read_text())["namespaces"]) >= 4,
            60.0,
            "lab up to create some namespaces",
            interval=0.01,
        )
    finally:
        up.kill()
        up.wait(10)
    assert [ns for ns in netns.existing() if ns.startswith(prefix)]
    pids = _pids(run_dir)
    down = lab("down", str(lab_file), "--run-dir", str(run_dir), check=False)
    assert down.returncode == 0, down.stderr
    _assert_gone(prefix, pids)


def test_chaos_short_bounded(small_lab: tuple[Path, Path, str], tmp_path: Path) -> None:
    """A short seeded chaos run on the small lab heals after every episode, leaks nothing."""
    lab_file, run_dir, prefix = small_lab
    pids: list[int] = []
    try:
        lab("up", str(lab_file), "--run-dir", str(run_dir))
        pids = _pids(run_dir)
        report = tmp_path / "chaos"
        res = lab("chaos", str(lab_file), "--run-dir", str(run_dir), "--minutes", "0.1",
                  "--seed", "3", "--json", "--report", str(report), check=False,
                  timeout=120)  # fmt: skip
        lines = res.stdout.splitlines()
        assert len(lines) == 1, res.stdout + res.stderr
        result = json.loads(lines[0])
        assert result["seed"] == 3 and result["faults"], result
        assert result["passed"] is True, (result["violations"], res.stderr)
        assert res.returncode == 0
        checked = [e for e in result["timeline"] if e["event"] == "checked"]
        assert len(checked) == result["episodes"] >= 1
        # timed from each episode's clear, on the replies' own timestamps
        assert all(0 < e["heal_ms"] <= 2000 for e in checked), checked
        assert result["heal_ms_max"] == max(e["heal_ms"] for e in checked)
        assert json.loads((report / "chaos.json").read_text()) == result
        assert "PASSED" in (report / "index.html").read_text()
    finally:
        pids = pids + (_pids(run_dir) if (run_dir / "state.json").exists() else [])
        down = lab("down", str(lab_file), "--run-dir", str(run_dir), check=False)
    assert down.returncode == 0, down.stderr
    _assert_gone(prefix, pids)
