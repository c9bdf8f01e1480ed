"""Carry a lab plan out: namespaces, links, agents — and remove exactly that again.

Everything the lab makes is recorded in `<run dir>/state.json` *before* it is
made (namespace names) or right after (PIDs), so `down` works after a crash,
a Ctrl-C or a SIGKILL of anything. Every device the lab creates lives inside
a namespace it created (veths are made directly inside their namespaces), so
deleting those namespaces removes every device; processes are ended by PID,
only when they still run in one of the lab's namespaces.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lanspan.config.keys import encode_key, generate_private_key, public_key, write_private_key
from lanspan.control.client import ControlUnavailable, request
from lanspan.errors import ConfigError
from lanspan.lab import impair, launcher, netns, tools
from lanspan.lab.model import Lab, load_lab
from lanspan.lab.state import STATE, State, alive_as, reap, spawn
from lanspan.lab.topology import Plan, default_prefix, expand


class LabError(RuntimeError):
    """The lab could not be built, reached or removed; the message says what and where."""


def run_dir_for(lab: Lab, run_dir: Path | None) -> Path:
    return run_dir if run_dir is not None else Path("lab-runs") / lab.name


class LabRun:
    """One lab on this machine: its file, plan, run directory and state."""

    def __init__(self, lab_file: Path, run_dir: Path | None = None, prefix: str | None = None):
        self.lab_file = Path(lab_file)
        self.lab = load_lab(self.lab_file)
        self.run_dir = run_dir_for(self.lab, run_dir)
        self.prefix = prefix or default_prefix(self.lab.name)
        self.network_file = self.run_dir / "network.toml"
        self.keys_dir = self.run_dir / "keys"
        self.log_dir = self.run_dir / "logs"

    # -- plan ---------------------------------------------------------------
    def _keys(self) -> dict[str, str]:
        self.keys_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.keys_dir, 0o700)
        pubs: dict[str, str] = {}
        for node in self.lab.node:
            kf = self.key_file(node.name)
            if kf.exists():
                from lanspan.config.keys import load_private_key

                priv = load_private_key(kf)
            else:
                priv = generate_private_key()
                write_private_key(kf, priv)
            pubs[node.name] = encode_key(public_key(priv))
        return pubs

    def key_file(self, node: str) -> Path:
        return self.keys_dir / f"{node}.key"

    def control(self, node: str) -> Path:
        return self.run_dir / "ctl" / f"{node}.sock"

    def plan(self) -> Plan:
        state = self.state()
        prefix = state.prefix if state and state.prefix else self.prefix
        pubs: dict[str, str] = {}
        if self.keys_dir.exists():
            from lanspan.config.keys import load_private_key

            for n in self.lab.node:
                if self.key_file(n.name).exists():
                    pubs[n.name] = encode_key(public_key(load_private_key(self.key_file(n.name))))
        for n in self.lab.node:
            pubs.setdefault(n.name, "")
        return expand(self.lab, prefix, pubs)

    def state(self) -> State | None:
        return State.load(self.run_dir)

    # -- up -----------------------------------------------------------------
    def up(self, log: Callable[[str], None] = print, timeout: float | None = None) -> Plan:
        why = tools.problem(tools.for_up(self.lab), "lanspan lab up")
        if why:
            raise LabError(why)
        old = self.state()
        if old is not None and any(ns in netns.existing() for ns in old.namespaces):
            raise LabError(
                f"lab {self.lab.name!r} is already up (state in {self.run_dir}); "
                f"run `lanspan lab down {self.lab_file}` first"
            )
        clash = [ns for ns in netns.existing() if ns.startswith(self.prefix + "-")]
        if clash:
            raise LabError(
                f"namespaces {clash} already exist with this lab's prefix {self.prefix!r} "
                "but are not recorded in its run directory; another lab or another run "
                "directory owns them: use --run-dir or --prefix"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for sub in ("ctl", "logs"):
            d = self.run_dir / sub
            if d.exists():
                shutil.rmtree(d)
            d.mkdir()
        pubs = self._keys()
        plan = expand(self.lab, self.prefix, pubs)
        self.network_file.write_text(plan.network_toml)
        (self.run_dir / "plan.json").write_text(json.dumps(plan.to_json(), indent=1))
        self._validate_network()
        state = State(
            path=self.run_dir / STATE,
            lab=self.lab.name,
            prefix=self.prefix,
            lab_file=str(self.lab_file.resolve()),
        )
        state.save()
        log(f"building lab {self.lab.name!r}: {len(plan.namespaces)} namespaces")
        try:
            self._build(plan, state)
        except BaseException:
            # Nothing half-built stays behind; `down` removes what the state records.
            self.down(log=lambda m: None)
            raise
        state.phase = "up"
        state.save()
        log(f"started {len(plan.nodes)} agents; waiting for sessions")
        missing = self.wait_sessions(plan, timeout or self.lab.lab.up_timeout)
        if missing:
            raise LabError(
                "sessions not up after "
                f"{timeout or self.lab.lab.up_timeout:.0f} s: "
                + "; ".join(f"{n}: {', '.join(ps)}" for n, ps in sorted(missing.items()))
                + f" (agent logs in {self.log_dir}; the lab stays up for a look, "
                f"`lanspan lab down {self.lab_file}` removes it)"
            )
        return plan

    def _build(self, plan: Plan, state: State) -> None:
        for ns in plan.namespaces:
            state.namespaces.append(ns)
            state.save()  # recorded before it exists: a crash in between is harmless
            try:
                netns.run(["ip", "netns", "add", ns])
            except netns.NetnsError:
                state.namespaces.remove(ns)  # not ours (it existed): never delete it
                state.save()
                raise
            netns.run(["ip", "link", "set", "lo", "up"], ns=ns)
        for ln in plan.links:
            netns.veth_between(
                ln.ns_a, ln.if_a, ln.ns_b, ln.if_b, mtu=ln.mtu, mac_a=ln.mac_a, mac_b=ln.mac_b
            )
        for ns, argv in plan.commands:
            netns.run(list(argv), ns=ns)
        self._start_helpers(plan, state)
        for site in self.lab.site:
            if not site.uplink.empty:
                impair.apply(plan, state, site.name, site.uplink, tag="uplink")
        compile_package()
        self.start_agents([node.name for node in plan.nodes], plan, state)

    def _validate_network(self) -> None:
        import importlib

        load_network = getattr(importlib.import_module("lanspan.config"), "load_network", None)
        if load_network is None:
            return
        try:
            load_network(self.network_file)
        except ConfigError as e:
            raise LabError(f"generated network file is invalid (a lab bug):\n{e.render()}") from e

    def _start_helpers(self, plan: Plan, state: State) -> None:
        for g in plan.guests:
            tagged = [i for i in g.interfaces if i.vlan is not None]
            if not tagged:
                continue
            argv = [sys.executable, "-m", "lanspan.lab.inside.vlantap", "eth0"]
            for i in tagged:
                argv.append(f"{i.vlan}:{i.ifname}:{i.mtu}:{','.join(i.addresses)}")
            pid = self.spawn(g.ns, argv, self.log_dir / f"vlantap-{g.name}.log")
            state.helpers.append(
                {"what": f"vlantap {g.name}", "ns": g.ns, "pid": pid, "argv": argv}
            )
            state.save()

            def made(
                ns: str = g.ns, names: tuple[str, ...] = tuple(i.ifname for i in tagged)
            ) -> bool:
                return all(
                    netns.run(["ip", "link", "show", n], ns=ns, check=False).returncode == 0
                    for n in names
                )

            netns.wait_for(
                made,
                10.0,
                f"VLAN interfaces of trunk guest {g.name}",
            )

    def spawn(self, ns: str, argv: list[str], log: Path) -> int:
        return spawn(ns, argv, log)

    def agent_argv(self, node: str) -> list[str]:
        return [
            sys.executable, "-m", "lanspan", "agent",
            "--network", str(self.network_file.resolve()),
            "--node", node,
            "--key", str(self.key_file(node).resolve()),
            "--control", str(self.control(node).resolve()),
            # per node: two agents on one machine must not share /run/lanspan/<network>
            "--run-dir", str((self.run_dir / "gw" / node).resolve()),
            "--state-dir", str((self.run_dir / "state" / node).resolve()),
            "--log-level", "debug",
        ]  # fmt: skip

    def start_agent(self, node: str, plan: Plan, state: State) -> int:
        argv = self.agent_argv(node)
        ns = plan.node(node).ns
        self.control(node).unlink(missing_ok=True)
        pid = self.spawn(ns, argv, self.log_dir / f"agent-{node}.log")
        state.agents[node] = {"pid": pid, "ns": ns, "argv": argv, "started": time.time()}
        state.save()
        return pid

    def start_agents(self, nodes: list[str], plan: Plan, state: State) -> None:
        """Start these agents at once: forked from one launcher that imported the agent
        once (`lanspan.lab.launcher`), or one exec each with `[lab] agent_start = "exec"`."""
        if self.lab.lab.agent_start == "exec" or len(nodes) < 2:
            for node in nodes:
                self.start_agent(node, plan, state)
            return
        requests: list[launcher.Request] = []
        for node in nodes:
            self.control(node).unlink(missing_ok=True)
            requests.append(
                {
                    "ns": plan.node(node).ns,
                    "argv": self.agent_argv(node)[4:],  # after `python -m lanspan agent`
                    "log": str(self.log_dir / f"agent-{node}.log"),
                }
            )
        started = time.time()
        try:
            pids = launcher.launch(requests, self.run_dir)
        except RuntimeError as e:
            raise LabError(str(e)) from e
        argv = launcher.launcher_argv(self.run_dir)  # what each forked agent's cmdline shows
        for node, req, pid in zip(nodes, requests, pids, strict=True):
            state.agents[node] = {
                "pid": pid,
                "ns": req["ns"],
                "argv": argv,
                "agent_argv": req["argv"],
                "started": started,
            }
        state.save()

    def kill_agent(self, node: str, state: State, sig: int = signal.SIGKILL) -> None:
        a = state.agents.get(node)
        if a and alive_as(a["pid"], a["argv"]):
            os.kill(a["pid"], sig)
            reap(a["pid"], 5.0)

    # -- sessions -----------------------------------------------------------
    def expected_peers(self, plan: Plan) -> dict[str, list[str]]:
        """Direct sessions every node should have: all but NAT-to-NAT pairs."""
        out: dict[str, list[str]] = {}
        for n in plan.nodes:
            out[n.name] = [
                m.name
                for m in plan.nodes
                if m.name != n.name and not (n.endpoint is None and m.endpoint is None)
            ]
        return out

    def _ask(self, node: str, op: str, timeout: float) -> dict[str, Any] | None:
        """`node`'s agent's answer to `op` when it is an object; None if it does not answer."""
        sock = self.control(node)
        if not sock.exists():
            return None
        try:
            response = request(sock, op, timeout=timeout)
        except ControlUnavailable:
            return None
        got = response.get("result")
        return got if response.get("ok") and isinstance(got, dict) else None

    def show(self, node: str, timeout: float = 5.0) -> dict[str, Any] | None:
        """`node`'s status document, asked in-process; None if the agent does not answer."""
        return self._ask(node, "status", timeout)

    def session_states(self, node: str, timeout: float = 5.0) -> dict[str, str] | None:
        """`node`'s peer -> session state (the `sessions` op: the status document's
        `session` fields, not the document); None if the agent does not answer."""
        got = self._ask(node, "sessions", timeout)
        return None if got is None else {str(p): str(s) for p, s in got.items()}

    def sessions(self, plan: Plan) -> dict[str, dict[str, str]]:
        """node -> peer -> session state, every agent asked at once ({} when one does not
        answer). A lab of 100 waiting for its sessions asks this every 0.3 s: a whole
        status at 99 peers costs each agent ~3 ms and this process ~1 ms to parse."""
        nodes = [n.name for n in plan.nodes]
        if not nodes:
            return {}
        with ThreadPoolExecutor(max_workers=min(len(nodes), 64)) as ex:
            got = ex.map(self.session_states, nodes)
            return {n: s or {} for n, s in zip(nodes, got, strict=True)}

    def missing_sessions(self, plan: Plan) -> dict[str, list[str]]:
        state = self.state()
        sess = self.sessions(plan)
        missing: dict[str, list[str]] = {}
        for node, peers in self.expected_peers(plan).items():
            a = state.agents.get(node) if state else None
            if a is None or not alive_as(a["pid"], a["argv"]):
                missing[node] = ["agent not running"]
                continue
            if not sess.get(node):
                missing[node] = ["control socket not answering"]
                continue
            down = [
                f"{p} ({sess[node].get(p, 'absent')})" for p in peers if sess[node].get(p) != "up"
            ]
            if down:
                missing[node] = down
        return missing

    def wait_sessions(self, plan: Plan, timeout: float) -> dict[str, list[str]]:
        deadline = time.monotonic() + timeout
        while True:
            missing = self.missing_sessions(plan)
            if not missing or time.monotonic() >= deadline:
                return missing
            time.sleep(0.3)

    # -- down ---------------------------------------------------------------
    def down(self, log: Callable[[str], None] = print) -> list[str]:
        """Remove what the state records (and only that); return what was removed."""
        return remove_recorded(self.run_dir, log)

    # -- status / exec ------------------------------------------------------
    def status(self) -> dict[str, Any]:
        state = self.state()
        present = netns.existing()
        if state is None:
            return {"lab": self.lab.name, "up": False, "run_dir": str(self.run_dir)}
        plan = self.plan()
        sess = self.sessions(plan) if state.phase == "up" else {}
        expected = self.expected_peers(plan)
        nodes = []
        for n in plan.nodes:
            a = state.agents.get(n.name)
            running = bool(a and alive_as(a["pid"], a["argv"]))
            peers = sess.get(n.name, {})
            nodes.append(
                {
                    "name": n.name,
                    "site": n.site,
                    "namespace": n.ns,
                    "underlay": n.underlay,
                    "endpoint": n.endpoint,
                    "endpoints": list(n.endpoints()),
                    "agent_pid": a["pid"] if a else None,
                    "agent_running": running,
                    "sessions": peers,
                    "sessions_up": sum(1 for p in expected[n.name] if peers.get(p) == "up"),
                    "sessions_extra": sorted(
                        p for p, s in peers.items() if s == "up" and p not in expected[n.name]
                    ),
                    "sessions_expected": len(expected[n.name]),
                }
            )
        guests = [
            {
                "name": g.name,
                "node": g.node,
                "namespace": g.ns,
                "kind": g.kind,
                "interfaces": [
                    {"ifname": i.ifname, "segment": i.segment, "addresses": list(i.addresses)}
                    for i in g.interfaces
                ],
            }
            for g in plan.guests
        ]
        helpers = [
            {
                "what": h["what"],
                "namespace": h.get("ns"),
                "pid": h["pid"],
                "running": alive_as(h["pid"], h["argv"]),
            }
            for h in state.helpers
        ]
        return {
            "lab": self.lab.name,
            "up": any(ns in present for ns in state.namespaces),
            "helpers": helpers,
            "impairments": state.impairments,
            "phase": state.phase,
            "run_dir": str(self.run_dir),
            "namespaces": [{"name": ns, "exists": ns in present} for ns in state.namespaces],
            "nodes": nodes,
            "guests": guests,
        }

    def namespace_of(self, name: str) -> str:
        plan = self.plan()
        for g in plan.guests:
            if g.name == name:
                return g.ns
        for n in plan.nodes:
            if n.name == name:
                return n.ns
        for s in plan.sites:
            if name in (s.name, f"r-{s.name}"):
                return s.ns
        if name in ("core", "internet"):
            return plan.core_ns
        names = [g.name for g in plan.guests] + [n.name for n in plan.nodes]
        raise LabError(f"no guest or node named {name!r} in lab {self.lab.name!r} ({names})")


def compile_package(root: Path | None = None) -> bool:
    """Byte-compile lanspan's modules (those whose cached code is missing or stale).

    The lab starts every agent with this interpreter's environment: with
    PYTHONDONTWRITEBYTECODE set (or a tree edited since its install), each agent
    would compile the stale modules from source at each start, tens of ms of CPU
    an installed agent never spends, times every agent of a cold start (issue 10).
    False when some could not be written (a read-only install: they stay as they are).
    """
    import compileall

    where = root or Path(__file__).resolve().parents[1]
    try:
        return bool(compileall.compile_dir(str(where), quiet=2))
    except OSError:
        return False


def remove_recorded(run_dir: Path, log: Callable[[str], None] = print) -> list[str]:
    """Remove what `run_dir`'s state records, and only that (needs no lab file)."""
    state = State.load(run_dir)
    if state is None:
        log(f"nothing recorded in {run_dir}: nothing to remove")
        return []
    done: list[str] = []
    ours = set(state.namespaces)
    present = netns.existing()
    # 1. recorded processes, by PID, while they still run what we started
    recorded = [
        r
        for r in list(state.agents.values()) + list(state.helpers)
        if alive_as(r["pid"], r["argv"])
    ]
    for rec in recorded:
        os.kill(rec["pid"], signal.SIGTERM)
    for rec in recorded:
        if not reap(rec["pid"], 5.0) and alive_as(rec["pid"], rec["argv"]):
            os.kill(rec["pid"], signal.SIGKILL)
            reap(rec["pid"], 5.0)
        done.append(f"process {rec['pid']}")
    # 2. anything still running inside our namespaces was started by the lab
    for ns in state.namespaces:
        if ns not in present:
            continue
        for pid in netns.pids_in(ns):
            try:
                os.kill(pid, signal.SIGKILL)
                done.append(f"process {pid} (in {ns})")
            except ProcessLookupError:
                pass
    # 3. namespaces (their devices go with them)
    for ns in reversed(state.namespaces):
        if ns in present and ns in ours:
            netns.run(["ip", "netns", "delete", ns], check=False)
            done.append(f"namespace {ns}")
    left = [ns for ns in state.namespaces if ns in netns.existing()]
    if left:
        raise LabError(f"could not delete namespaces {left}")
    (run_dir / STATE).unlink(missing_ok=True)
    for sub in ("ctl",):
        shutil.rmtree(run_dir / sub, ignore_errors=True)
    return done


__all__ = ["STATE", "LabError", "LabRun", "State", "compile_package", "remove_recorded"]
