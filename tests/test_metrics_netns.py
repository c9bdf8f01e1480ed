"""Prometheus metrics of a real agent, scraped from inside its namespace and parsed."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest
from agentlib import make_cluster

from lanspan.lab.netns import Netns, require_root, run, wait_for

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(require_root() is not None, reason=str(require_root())),
]

ADDR = "127.0.0.1:9474"  # the node's own namespace: its loopback is private to the test

SCRAPE = """
import json, sys, urllib.request
with urllib.request.urlopen("http://%s/metrics", timeout=10) as r:
    print(json.dumps({"status": r.status, "type": r.headers["Content-Type"],
                      "body": r.read().decode()}))
"""

Labels = tuple[tuple[str, str], ...]
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


def parse_exposition(text: str) -> tuple[dict[str, str], dict[tuple[str, Labels], float]]:
    """Text format 0.0.4, strictly: every sample's family has HELP and TYPE before it."""
    types: dict[str, str] = {}
    helps: set[str] = set()
    samples: dict[tuple[str, Labels], float] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helps.add(line.split(" ", 3)[2])
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge"), line
            assert name not in types, f"TYPE twice: {line}"
            types[name] = kind
            continue
        assert line and not line.startswith("#"), f"unexpected line {line!r}"
        m = _SAMPLE.match(line)
        assert m is not None, f"bad sample line {line!r}"
        name, raw_labels, value = m.groups()
        assert name in types and name in helps, f"{name} has no TYPE/HELP before it"
        assert name.startswith("lanspan_")
        if types[name] == "counter":
            assert name.endswith("_total"), name
        labels: list[tuple[str, str]] = []
        rest = raw_labels or ""
        while rest:
            lm = _LABEL.match(rest)
            assert lm is not None, f"bad labels in {line!r}"
            labels.append((lm.group(1), lm.group(2)))
            rest = rest[lm.end() :]
        key = (name, tuple(sorted(labels)))
        assert key not in samples, f"duplicate sample {line!r}"
        v = float(value)
        assert not math.isnan(v), line
        samples[key] = v
    return types, samples


def value(samples: dict[tuple[str, Labels], float], name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"no sample {key}; have {sorted(k for k in samples if k[0] == name)}"
    return samples[key]


def test_metrics_scraped_parsed_and_counting(tmp_path: Path) -> None:
    with Netns() as ns:
        c = make_cluster(ns, tmp_path, ["n1", "n2"])
        try:
            c.start("n1", "--metrics", ADDR)
            c.start("n2")
            wait_for(c.mesh_up, 30, "n1 <-> n2 session up")

            def scrape() -> dict[tuple[str, Labels], float]:
                r = run([sys.executable, "-c", SCRAPE % ADDR], ns=c.members["n1"].ns)
                got = json.loads(r.stdout)
                assert got["status"] == 200
                assert got["type"].startswith("text/plain; version=0.0.4"), got["type"]
                types, samples = parse_exposition(got["body"])
                assert types["lanspan_peer_rx_bytes_total"] == "counter"
                assert types["lanspan_peer_up"] == "gauge"
                return samples

            before = scrape()
            info = [k for k in before if k[0] == "lanspan_info"]
            assert len(info) == 1 and dict(info[0][1])["node"] == "n1"
            assert dict(info[0][1])["network"] == "optest"
            assert value(before, "lanspan_peer_up", peer="n2") == 1
            assert value(before, "lanspan_segment_info", segment="a", vlan="100", vni="100") == 1
            assert value(before, "lanspan_path_up", peer="n2", endpoint="198.18.0.2:51820") == 1
            assert value(before, "lanspan_uptime_seconds") >= 0

            assert c.ping("n1", "n2", count=5)
            wait_for(
                lambda: (
                    value(scrape(), "lanspan_peer_rx_bytes_total", peer="n2")
                    >= value(before, "lanspan_peer_rx_bytes_total", peer="n2") + 5 * 98
                ),
                30,
                "n1 counting the replies from n2",
            )
            after = scrape()
            for d in ("rx", "tx"):
                for unit, least in (("bytes", 5 * 98), ("frames", 5)):
                    name = f"lanspan_peer_{d}_{unit}_total"
                    grew = value(after, name, peer="n2") - value(before, name, peer="n2")
                    assert grew >= least, (name, grew)
                    port = f"lanspan_port_{d}_{unit}_total"
                    labels = {"port": "ga", "kind": "access", "device": "ga"}
                    grew = value(after, port, **labels) - value(before, port, **labels)
                    assert grew >= least, (port, grew)
            assert value(after, "lanspan_uptime_seconds") >= value(before, "lanspan_uptime_seconds")
            # Counters never go down between scrapes.
            for key, v in before.items():
                if key[0].endswith("_total") and key in after:
                    assert after[key] >= v, key
        finally:
            c.stop_all()
