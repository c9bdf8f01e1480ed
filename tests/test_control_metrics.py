"""Prometheus exposition parsed back line by line; MetricsServer scraped over loopback."""

from __future__ import annotations

import copy
import http.client
import re
import selectors
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from control_samples import peer_up

from lanspan.control.metrics import CONTENT_TYPE, MetricsServer, parse_addr, render_prometheus

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")

DOC: dict[str, object] = {
    "node": "gra-hv1",
    "network": "acme",
    "public_key": "Zm9v+YmFy/=",
    "listen_port": 51820,
    "uptime_s": 12.5,
    "segments": [{"name": "lan", "vlan": 10, "vni": 10, "mtu": 1400, "macs": 3}],
    "ports": [
        {
            "name": "vm1",
            "kind": "access",
            "device": "vm1",
            "segments": ["lan"],
            "rx_frames": 1,
            "tx_frames": 2,
            "rx_bytes": 100,
            "tx_bytes": 200,
        }
    ],
    "peers": [
        peer_up('odd"peer\\with\nnewline'),
        {"name": "sbg-hv2", "session": "handshaking", "last_handshake_age": None, "paths": []},
    ],
    "drops": {"replay": 7, "bad_mac1": 0},
    "counters": {"frames_in": 42},
}


@dataclass
class Family:
    help: str | None = None
    type: str | None = None
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


def unescape(v: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), v)


def parse(text: str) -> dict[str, Family]:
    """A strict reader of the 0.0.4 text format, enough to check what we emit."""
    assert text.endswith("\n")
    fams: dict[str, Family] = {}
    for line in text.splitlines():
        assert line, "no blank lines"
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            assert NAME.fullmatch(name)
            fam = fams.setdefault(name, Family())
            assert fam.help is None and not fam.samples, f"HELP for {name} repeated or late"
            fam.help = doc
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            fam = fams.setdefault(name, Family())
            assert fam.type is None and not fam.samples, f"TYPE for {name} repeated or late"
            assert kind in ("counter", "gauge")
            fam.type = kind
        else:
            m = SAMPLE.fullmatch(line)
            assert m, f"bad sample line {line!r}"
            name, labels_s, value_s = m.groups()
            assert name in fams, f"sample {name} without HELP/TYPE"
            labels: dict[str, str] = {}
            if labels_s:
                pos = 0
                while pos < len(labels_s):
                    lm = LABEL.match(labels_s, pos)
                    assert lm, f"bad labels {labels_s!r}"
                    assert lm.group(1) not in labels
                    labels[lm.group(1)] = unescape(lm.group(2))
                    pos = lm.end()
                    if pos < len(labels_s):
                        assert labels_s[pos] == ","
                        pos += 1
            fams[name].samples.append((labels, float(value_s)))
    return fams


def value(fams: dict[str, Family], name: str, **labels: str) -> float:
    hits = [v for ls, v in fams[name].samples if all(ls.get(k) == x for k, x in labels.items())]
    assert len(hits) == 1, (name, labels, fams[name].samples)
    return hits[0]


def test_exposition_is_well_formed() -> None:
    fams = parse(render_prometheus(DOC))
    assert len(fams) > 20
    for name, fam in fams.items():
        assert name.startswith("lanspan_")
        assert fam.help and fam.type, name
        assert fam.samples, name
        if fam.type == "counter":
            assert name.endswith("_total"), name
        else:
            assert not name.endswith("_total"), name
        # no two samples of one family share a label set
        keys = [tuple(sorted(ls.items())) for ls, _ in fam.samples]
        assert len(keys) == len(set(keys)), name


def test_values_and_units() -> None:
    fams = parse(render_prometheus(DOC))
    assert value(fams, "lanspan_info", node="gra-hv1", network="acme") == 1
    assert value(fams, "lanspan_uptime_seconds") == 12.5
    assert value(fams, "lanspan_segment_macs", segment="lan") == 3
    assert value(fams, "lanspan_segment_mtu_bytes", segment="lan") == 1400
    assert value(fams, "lanspan_port_tx_bytes_total", port="vm1") == 200
    odd = 'odd"peer\\with\nnewline'
    assert value(fams, "lanspan_peer_up", peer=odd) == 1
    assert value(fams, "lanspan_peer_up", peer="sbg-hv2") == 0
    assert value(fams, "lanspan_peer_rtt_seconds", peer=odd) == pytest.approx(0.00041)
    assert value(fams, "lanspan_path_up", endpoint="[fd00::2]:51820") == 0
    assert value(fams, "lanspan_path_active", endpoint="198.19.2.2:51820") == 1
    assert value(fams, "lanspan_path_loss_ratio", endpoint="[fd00::2]:51820") == 1.0
    assert value(fams, "lanspan_drops_total", reason="replay") == 7
    assert value(fams, "lanspan_drops_total", reason="bad_mac1") == 0
    assert value(fams, "lanspan_events_total", event="frames_in") == 42
    # unknown values are left out, not invented
    assert all(ls["peer"] != "sbg-hv2" for ls, _ in fams["lanspan_peer_rtt_seconds"].samples)
    assert [ls["peer"] for ls, _ in fams["lanspan_peer_last_handshake_age_seconds"].samples] == [
        odd
    ]


def test_label_escaping_is_exact() -> None:
    text = render_prometheus(DOC)
    assert 'peer="odd\\"peer\\\\with\\nnewline"' in text
    assert all(line.count("\n") == 0 for line in text.splitlines())


def test_empty_and_garbage_documents() -> None:
    fams = parse(render_prometheus({}))
    assert set(fams) == {"lanspan_info"}
    garbage = copy.deepcopy(DOC)
    garbage["peers"] = "nope"
    garbage["drops"] = {"x": "many"}
    garbage["uptime_s"] = float("nan")
    fams = parse(render_prometheus(garbage))
    assert "lanspan_peer_up" not in fams
    assert "lanspan_drops_total" not in fams
    assert render_prometheus(garbage).count("lanspan_uptime_seconds NaN") == 1


def test_parse_addr() -> None:
    assert parse_addr("127.0.0.1:9474") == (socket.AF_INET, ("127.0.0.1", 9474))
    assert parse_addr("[::1]:9474") == (socket.AF_INET6, ("::1", 9474))
    assert parse_addr(":9474") == (socket.AF_INET, ("0.0.0.0", 9474))
    for bad in ("9474", "127.0.0.1", "127.0.0.1:x", "127.0.0.1:70000", "[::1]"):
        with pytest.raises(ValueError, match="expected HOST:PORT"):
            parse_addr(bad)


class Source:
    def __init__(self) -> None:
        self.fail = False

    def status(self) -> dict[str, object]:
        if self.fail:
            raise RuntimeError("boom")
        return DOC

    def macs(self, segment: str | None) -> list[dict[str, object]]:
        return []

    def reload(self) -> dict[str, object]:
        return {"ok": True, "changes": [], "error": None}


@pytest.fixture
def served() -> Iterator[tuple[MetricsServer, Source]]:
    src = Source()
    srv = MetricsServer("127.0.0.1:0", src)
    sel = selectors.DefaultSelector()
    srv.register(sel)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            for key, mask in sel.select(0.02):
                key.data(mask)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    yield srv, src
    stop.set()
    t.join(5)
    srv.close()
    sel.close()


def get(srv: MetricsServer, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    host, port = srv.address
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_scrape_over_loopback(served: tuple[MetricsServer, Source]) -> None:
    srv, _ = served
    assert srv.address[0] == "127.0.0.1"
    for _ in range(3):  # several scrapes, connection closed each time
        status, headers, body = get(srv, "GET", "/metrics")
        assert status == 200
        assert headers["Content-Type"] == CONTENT_TYPE
        assert int(headers["Content-Length"]) == len(body)
        assert body.decode() == render_prometheus(DOC)
        parse(body.decode())


def test_http_errors(served: tuple[MetricsServer, Source]) -> None:
    srv, src = served
    assert get(srv, "GET", "/nope")[0] == 404
    assert get(srv, "POST", "/metrics")[0] == 405
    status, headers, body = get(srv, "HEAD", "/metrics")
    assert (status, body) == (200, b"")
    assert int(headers["Content-Length"]) > 0
    src.fail = True
    assert get(srv, "GET", "/metrics")[0] == 500
    src.fail = False
    assert get(srv, "GET", "/metrics?x=1")[0] == 200


def raw_http(srv: MetricsServer, payload: bytes) -> bytes:
    with socket.create_connection(srv.address, timeout=5) as s:
        s.sendall(payload)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    return data


def test_garbage_and_oversized_requests(served: tuple[MetricsServer, Source]) -> None:
    srv, _ = served
    assert raw_http(srv, b"hello\r\n\r\n").startswith(b"HTTP/1.0 400 ")
    assert raw_http(srv, b"GET /metrics HTTP/1.0\r\nX: " + b"a" * 20000).startswith(
        b"HTTP/1.0 431 "
    )
    # a silent client does not stop others from being served
    with socket.create_connection(srv.address, timeout=5):
        assert get(srv, "GET", "/metrics")[0] == 200


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        srv = MetricsServer("[::1]:0", Source())
    except OSError:
        pytest.skip("::1 not configured")
    with srv:
        assert srv.address[0] == "::1"


def test_port_in_use_is_explained(served: tuple[MetricsServer, Source]) -> None:
    srv, _ = served
    host, port = srv.address
    with pytest.raises(OSError, match=f"cannot listen for metrics on {host}:{port}"):
        MetricsServer(f"{host}:{port}", Source())


def test_gateway_state_and_leases_are_metrics() -> None:
    doc = {
        "node": "gw1",
        "gateways": {
            "instances": [
                {"name": "gw_lan", "where": "segment lan", "state": "master", "since": 12.5},
                {"name": "fl_web", "where": "segment lan", "state": "backup", "since": None},
            ],
            "leases": [{"segment": "lan", "mac": "02:00:00:00:00:01", "address": "198.18.0.9"}],
            "serving": ["lan", "api"],
        },
    }
    text = render_prometheus(doc)
    assert 'lanspan_vrrp_state{instance="gw_lan",where="segment lan",state="master"} 1' in text
    assert 'lanspan_vrrp_state{instance="gw_lan",where="segment lan",state="backup"} 0' in text
    assert 'lanspan_vrrp_state{instance="fl_web",where="segment lan",state="backup"} 1' in text
    assert 'lanspan_vrrp_state_since_seconds{instance="gw_lan",where="segment lan"} 12.5' in text
    assert 'lanspan_dhcp_leases{segment="lan"} 1' in text
    assert 'lanspan_dhcp_leases{segment="api"} 0' in text
    assert "lanspan_vrrp_state" not in render_prometheus({"node": "n1"})
