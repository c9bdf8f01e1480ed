"""Start the agents of a lab at once from one interpreter that imported the agent once.

`lab up` and a cold-start fault start every agent of a lab in the same instant.
Each `python -m lanspan agent` first imports the agent: 80-300 ms of CPU here,
by the machine's hour. Servers that boot together import side by side, each on
its own CPUs; 13 agents of a lab on this 2-core machine queue their imports behind
each other, and that queue, not the network, was most of an example's cold start
(2.3-3.9 s on slow days, issue 10). The launcher imports the agent's modules once,
reads and validates the network file once (`_prepare`: half of what an agent's
start spent after the fork; each child still reads the file and gets the parse
only if the bytes are the same), then forks one child per agent; the child
enters its node's network namespace and runs `lanspan.agent.start.run` with the
options `lanspan agent` was given (`lanspan.agent.start.parse`: the same table, the
same checks). The one import is
paid inside the measured time: the lab starts its clock before the launcher. Each
child waits on a pipe until the launcher has forked the last one, so all start in
one instant: started as they were forked, the first agents' handshakes took both
cores while the launcher forked the rest, and the last of 100 started 6.9-8.5 s
after the first, against 1.1-1.6 s with the pipe (100-node cold starts alternated
in one lab, session 19: 22.9-24.2 s without it, 19.7-23.6 s with it).

What differs from `ip netns exec NS python -m lanspan agent ...` (the lab's `exec`
start, `[lab] agent_start = "exec"`, and every single restart): the process's
command line is the launcher's, no mount namespace is made (the agent reads no
/sys, and /proc/sys/net is the caller's network namespace's), and the start-up CPU
an agent logs counts from the fork, the import and the file's parse not included.

Protocol: stdin holds one JSON list of {"ns", "argv", "log"} (argv: the options
after `lanspan agent`); stdout gets one line per agent, its PID, in order; then the
launcher exits, and init reaps its children.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TypedDict

__all__ = ["Request", "launch", "launcher_argv", "main"]


class Request(TypedDict):
    ns: str
    argv: list[str]
    log: str


def launcher_argv(run_dir: Path) -> list[str]:
    """The launcher's command line: what /proc/PID/cmdline of each agent it forks shows."""
    return [sys.executable, "-m", "lanspan.lab.launcher", "--run-dir", str(run_dir)]


def launch(requests: list[Request], run_dir: Path, timeout: float = 60.0) -> list[int]:
    """Start every agent of `requests` from one launcher; their PIDs, in order.
    RuntimeError (naming its log) when it could not start them all."""
    err = run_dir / "logs" / "launcher.log"
    err.parent.mkdir(parents=True, exist_ok=True)
    with open(err, "ab") as log:
        try:
            proc = subprocess.run(
                launcher_argv(run_dir),
                input=json.dumps(requests).encode(),
                stdout=subprocess.PIPE,
                stderr=log,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"the agent launcher did not finish within {timeout:g} s") from e
    pids = [int(x) for x in proc.stdout.split()]
    if proc.returncode != 0 or len(pids) != len(requests):
        # The run directory (and this log) may be gone by the time anyone reads it.
        tail = err.read_text(errors="replace").strip().splitlines()[-1:]
        raise RuntimeError(
            f"the agent launcher exited {proc.returncode} after starting {len(pids)} of "
            f"{len(requests)} agents: {tail[0] if tail else 'no error output'} (all in {err})"
        )
    return pids


def _child(req: Request, gate: int) -> None:
    """In the forked child: a session of its own, its log, its namespace, then (once
    the launcher has forked every child: `gate` reads end of file) the agent."""
    code = 1
    try:
        os.setsid()
        fd = os.open(req["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        os.close(null)
        from lanspan.agent.start import parse, run
        from lanspan.lab.netns import join

        join(req["ns"])
        kwargs = parse(req["argv"])
        if kwargs is None:
            print(f"launcher: not plain `lanspan agent` options: {req['argv']}", file=sys.stderr)
        else:
            sys.argv = [sys.executable, "-m", "lanspan", "agent", *req["argv"]]
            os.read(gate, 1)  # end of file once every agent is forked: all start at once
            os.close(gate)
            run(**kwargs)  # type: ignore[arg-type]
            code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # the child must never return into the launcher's loop
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _prepare(requests: list[Request]) -> None:
    """What every agent would otherwise do alike after the fork, done once before it:
    read and validate the network files (`preload_network`: the children load the
    same bytes), and load `cryptography`'s OpenSSL backend (imported on the first
    key loaded: ~4 ms of CPU per agent)."""
    from lanspan.agent.early import preload
    from lanspan.agent.start import parse
    from lanspan.config import generate_private_key, public_key
    from lanspan.config.load import preload_network

    public_key(generate_private_key())
    files = {str(kw["network_file"]) for r in requests if (kw := parse(r["argv"])) is not None}
    for f in sorted(files):
        preload(Path(f))
        preload_network(Path(f))


# What `lanspan agent` imports before and while it starts, imported once for every
# child; and what its control socket's first answer imports (the lab asks every agent
# while it starts): ~10 % of 32 agents' CPU in their first 2.5 s of a cold start went
# to importing orjson (and uuid, platform, zoneinfo with it) in each child.
PRELOADED_MODULES = (
    "lanspan.agent.early",
    "lanspan.agent.loop",
    "lanspan.agent.start",
    "lanspan.config",
    "lanspan.config.keys",
    "lanspan.lab.netns",
    "lanspan.node.core",
    "lanspan.control.document",
    "lanspan.node.status",
    "orjson",
)


def main() -> None:
    for name in PRELOADED_MODULES:
        importlib.import_module(name)

    requests: list[Request] = json.loads(sys.stdin.read())
    _prepare(requests)
    gc.collect()
    gc.freeze()  # the imported objects stay shared with the children, not copied
    gate, opened = os.pipe()
    for req in requests:
        pid = os.fork()
        if pid == 0:
            os.close(opened)
            _child(req, gate)
        print(pid, flush=True)
    os.close(opened)


if __name__ == "__main__":
    main()
