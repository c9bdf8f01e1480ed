"""The lab report from synthetic results (no namespaces): both uplinks of a two-uplink
site and the one a fault cut, "no answers" for a fault that left none, labels that do
not overlap at the demo's size and at 36 nodes, and the page in headless Chromium."""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import subprocess
import xml.dom.minidom
import zlib
from pathlib import Path
from typing import Any

import pytest

from lanspan.lab import report
from lanspan.lab.model import Lab, load_lab, parse_lab
from lanspan.lab.topology import expand

ROOT = Path(__file__).resolve().parent.parent


def _topology(lab: Lab) -> dict[str, Any]:
    keys = {n.name: base64.b64encode(bytes(32)).decode() for n in lab.node}
    return expand(lab, "p", keys).to_json()


def _timeline(fault_at: int, cleared_at: int, back_at: int, n: int = 400) -> dict[str, Any]:
    return {
        "interval_ms": 10.0,
        "timeline": [1] * fault_at + [0] * (back_at - fault_at) + [1] * (n - back_at),
        "markers": {"fault": fault_at * 10.0, "cleared": cleared_at * 10.0,
                    "recovered": back_at * 10.0 + 5},
    }  # fmt: skip


def demo_result() -> dict[str, Any]:
    """What `lab test` of examples/three-datacenters.toml returns, faults included."""
    lab = load_lab(ROOT / "examples" / "three-datacenters.toml")
    return {
        "lab": lab.name,
        "passed": False,
        "checks": [
            {"name": "sessions up", "kind": "sessions", "passed": True, "detail": "all up"},
            {
                "name": "lan: gra-vm1 -> rbx-vm1",
                "kind": "reachability",
                "passed": True,
                "detail": "answers",
            },
        ],
        "faults": [
            {
                "name": "cut-gra",
                "kind": "cut-uplink",
                "probe": "gra-vm1 -> rbx-vm1",
                "outage_ms": 2010.0,
                "recovery_ms": 8.0,
                "recovered": True,
                "during": {"loss_pct": 100.0, "rtt_ms_median": None},
                "before": {"loss_pct": 0.0, "rtt_ms_median": 1.2},
                **_timeline(100, 300, 301),
            },
            {
                "name": "cut-rbx-active",
                "kind": "cut-uplink",
                "probe": "gra-vm1 -> rbx-vm1",
                "target": "uplink 2",
                "detail": "cut uplink 2 of rbx (the one carrying the probe)",
                "outage_ms": 520.0,
                "recovery_ms": 3.0,
                "recovered": True,
                "during": {"loss_pct": 13.0, "rtt_ms_median": 1.4},
                "before": {"loss_pct": 0.0, "rtt_ms_median": 1.2},
                **_timeline(100, 300, 152),
            },
            {
                "name": "block-gra-rbx",
                "kind": "block",
                "probe": "gra-vm1 -> rbx-vm1",
                "outage_ms": None,
                "recovered": False,
                "detail": "no connectivity before the fault",
            },
        ],
        "topology": _topology(lab),
        "uplinks": {"sbg": "delay_ms=5"},
        "_lab": lab,
    }


def big_lab() -> Lab:
    """36 nodes in 8 sites, two of them with two uplinks and one behind NAT."""
    sites = [("par", 1), ("fra", 2), ("ams", 1), ("lon", 1), ("mad", 2), ("waw", 1),
             ("branch-nat", 1), ("mil", 1)]  # fmt: skip
    data: dict[str, Any] = {
        "lab": {"name": "big"},
        "segment": [
            {"name": "lan", "vlan": 10, "ipv4": "198.18.10.0/24"},
            {"name": "api", "vlan": 11, "ipv4": "198.18.11.0/24"},
            {"name": "storage-backplane", "vlan": 12, "ipv4": "198.18.12.0/24"},
        ],
        "site": [
            {"name": n, "uplinks": u, **({"nat": True} if "nat" in n else {})} for n, u in sites
        ],
        "node": [],
        "guest": [],
        "fault": [
            {"name": "cut-fra-2", "kind": "cut-uplink", "site": "fra", "uplink": 2},
            {"name": "cut-mad-active", "kind": "cut-uplink", "site": "mad", "uplink": "active"},
            {"name": "cut-lon", "kind": "cut-uplink", "site": "lon"},
        ],
    }
    k = 0
    for s, _ in sites:
        for j in range(1, 5 + (s in ("par", "fra", "ams", "lon"))):
            node = f"{s}-hv{j}"
            data["node"].append({"name": node, "site": s})
            seg = ("lan", "api", "storage-backplane")[k % 3]
            data["guest"].append({"name": f"{node}-vm1", "node": node, "segment": seg})
            if j == 1:
                data["guest"].append({"name": f"{node}-db", "node": node, "kind": "trunk",
                                      "segments": ["lan", "api"], "native": "lan"})  # fmt: skip
            k += 1
    return parse_lab(data, "big")


def big_result() -> dict[str, Any]:
    lab = big_lab()
    faults = [
        {"name": "cut-fra-2", "kind": "cut-uplink", "target": "uplink 2", "outage_ms": 480.0,
         "recovered": True, "recovery_ms": 4.0, **_timeline(100, 300, 148)},
        {"name": "cut-mad-active", "kind": "cut-uplink", "target": "uplink 1",
         "outage_ms": 530.0, "recovered": True, "recovery_ms": 4.0, **_timeline(100, 300, 153)},
        {"name": "cut-lon", "kind": "cut-uplink", "outage_ms": 2000.0, "recovered": True,
         "recovery_ms": 9.0, **_timeline(100, 300, 301)},
    ]  # fmt: skip
    assert len(lab.node) >= 30
    return {"lab": lab.name, "passed": True, "checks": [], "faults": faults,
            "topology": _topology(lab), "uplinks": {"waw": "loss=1"}, "_lab": lab}  # fmt: skip


def _page(result: dict[str, Any]) -> str:
    lab = result.pop("_lab")
    return report.render(report.with_fault_places(result, lab))


def _svgs(page: str) -> list[xml.dom.minidom.Document]:
    return [
        xml.dom.minidom.parseString("<svg" + s.split("</svg>")[0] + "</svg>")
        for s in page.split("<svg")[1:]
    ]


def _uplinks(doc: xml.dom.minidom.Document) -> dict[tuple[str, str], bool]:
    """(site, uplink number) -> cut, from the topology's uplink lines."""
    return {
        (ln.getAttribute("data-site"), ln.getAttribute("data-uplink")): ln.hasAttribute("data-cut")
        for ln in doc.getElementsByTagName("line")
        if ln.getAttribute("class") == "uplink"
    }


def test_two_uplink_site_shows_both_and_the_cut_one() -> None:
    page = _page(demo_result())
    topo = _svgs(page)[0]
    ups = _uplinks(topo)
    assert ups == {
        ("gra", "1"): True,  # cut-gra cut gra's only uplink
        ("rbx", "1"): False,
        ("rbx", "2"): True,  # cut-rbx-active resolved to uplink 2
        ("sbg", "1"): False,
    }
    assert topo.documentElement is not None
    text = topo.documentElement.toxml()
    assert "uplink 1" in text and "uplink 2" in text
    assert "198.19.0.6" in text and "198.19.254.6" in text  # rbx's two public addresses
    assert "✂ cut by cut-rbx-active" in text and "✂ cut by cut-gra" in text
    assert "delay_ms=5" in text  # sbg's permanent impairment, on its uplink


def test_fault_without_answers_says_so() -> None:
    page = _page(demo_result())
    assert "None" not in page
    assert "median RTT no answers (before: 1.2 ms)" in page
    assert "median RTT 1.4 ms" in page


def test_active_uplink_never_resolved_is_named_as_such() -> None:
    result = big_result()
    result["faults"][1].pop("target")
    ups = report.cut_uplinks(
        result["topology"], report.with_fault_places(result, big_lab())["faults"]
    )
    assert ups[("mad", 1)] == ups[("mad", 2)] == ["cut-mad-active (active: not resolved)"]
    assert ups[("fra", 2)] == ["cut-fra-2"] and ("fra", 1) not in ups
    assert ups[("lon", 1)] == ["cut-lon"]


@pytest.mark.parametrize("make", [demo_result, big_result], ids=["demo", "36-nodes"])
def test_topology_labels_do_not_overlap(make: Any) -> None:
    result = make()
    lab = result.pop("_lab")
    result = report.with_fault_places(result, lab)
    lay = report.layout(result["topology"], result["uplinks"], result["faults"])
    boxes = [(lb.text, lb.box()) for lb in lay.labels]
    page = report.Box(0, 0, lay.width, lay.height)
    for k, (text, box) in enumerate(boxes):
        assert box.inside(page), (text, box)
        for other, obox in boxes[k + 1 :]:
            assert not box.overlaps(obox), (text, other)
    # each site's own labels stay inside its box; site boxes do not overlap
    sites = list(lay.site_boxes.items())
    for k, (name, box) in enumerate(sites):
        assert box.inside(page)
        for other, obox in sites[k + 1 :]:
            assert not box.overlaps(obox), (name, other)
    for lb in lay.labels:
        node = re.match(r"node (\S+)", lb.text)
        if node:
            site = next(n["site"] for n in result["topology"]["nodes"] if n["name"] == node[1])
            assert lb.box().inside(lay.site_boxes[site]), lb.text
    assert lay.width <= report.MAX_WIDTH
    n_nodes = sum(1 for lb in lay.labels if lb.text.startswith("node "))
    assert n_nodes == len(lab.node)


def test_timeline_marker_labels_close_together_do_not_overlap() -> None:
    svg = report.timeline_svg(_timeline(100, 300, 301))
    doc = xml.dom.minidom.parseString(svg)
    ys = {t.firstChild.data: t.getAttribute("y") for t in doc.getElementsByTagName("text")}  # type: ignore[union-attr]
    assert ys["cleared"] != ys["recovered"]  # 10 ms apart: on two levels


# -- the page in a real browser -----------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
need_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (scripts/setup installs it: apt chromium)"
)


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    profile = tmp / "profile"
    profile.mkdir(exist_ok=True)
    argv = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}", *args,
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def screenshot(page: str, out: Path, width: int, height: int) -> Path:
    html_file = out.with_suffix(".html")
    html_file.write_text(page)
    proc = _chromium(
        out.parent, f"--screenshot={out}", f"--window-size={width},{height}", html_file.as_uri()
    )
    assert out.exists(), proc.stderr[-2000:]
    return out


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB(A) pixels of an 8-bit, non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w = 8, b"", 0
    h = ctype = 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and interlace == 0
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    bpp = 3 if ctype == 2 else 4
    raw, stride, rows = zlib.decompress(idat), w * bpp, []
    prev = bytearray(stride)
    for r in range(h):
        f, line = (
            raw[r * (stride + 1)],
            bytearray(raw[r * (stride + 1) + 1 : (r + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, [bytes(r) for r in rows]


@need_chromium
@pytest.mark.parametrize("make", [demo_result, big_result], ids=["demo", "36-nodes"])
def test_report_screenshot_in_chromium(make: Any, tmp_path: Path) -> None:
    page = _page(make())
    width, height = 1280, 1000
    shot = screenshot(page, tmp_path / "report.png", width, height)
    w, h, rows = png_pixels(shot.read_bytes())
    assert (w, h) == (width, height)
    bpp = len(rows[0]) // w
    pixels = [row[i : i + 3] for row in rows for i in range(0, len(row), bpp)]
    white = sum(1 for p in pixels if p == b"\xff\xff\xff")
    assert white < 0.97 * len(pixels), "the page is blank"
    red = sum(1 for p in pixels if p[0] > 180 and p[1] < 90 and p[2] < 90)
    assert red > 50, "no cut uplink (red) visible"
    # nothing wider than the window: the topology fits (no horizontal scrolling)
    dom = _chromium(tmp_path, "--dump-dom", "--virtual-time-budget=2000",
                    f"--window-size={width},{height}",
                    _measure_page(page, tmp_path).as_uri())  # fmt: skip
    found = re.search(r'<pre id="measured">(.*?)</pre>', dom.stdout, re.S)
    assert found, dom.stderr[-2000:]
    measured = json.loads(found[1])
    assert measured["overlaps"] == [], measured["overlaps"][:5]
    assert measured["scroll_width"] <= width, measured


def _measure_page(page: str, tmp: Path) -> Path:
    """The page plus a script that measures, as the browser laid it out, every label of
    the topology: pairs whose boxes overlap, and the page's scroll width."""
    script = """<script>
addEventListener('load', () => {
  const texts = [...document.querySelectorAll('svg.topology text')];
  const boxes = texts.map(t => [t.textContent, t.getBoundingClientRect()]);
  const overlaps = [];
  for (let i = 0; i < boxes.length; i++)
    for (let j = i + 1; j < boxes.length; j++) {
      const [a, p] = boxes[i], [b, q] = boxes[j];
      if (p.left < q.right - 0.5 && q.left < p.right - 0.5 &&
          p.top < q.bottom - 0.5 && q.top < p.bottom - 0.5) overlaps.push([a, b]);
    }
  const pre = document.createElement('pre');
  pre.id = 'measured';
  pre.textContent = JSON.stringify({overlaps, labels: boxes.length,
    scroll_width: document.documentElement.scrollWidth});
  document.body.appendChild(pre);
});
</script>"""
    f = tmp / "measure.html"
    f.write_text(page.replace("</body>", script + "</body>"))
    return f


def test_fault_section_names_what_was_cut() -> None:
    page = _page(demo_result())
    assert "cut gra uplink 1" in page  # no detail from the runner: the report says it
    assert "cut uplink 2 of rbx" in page  # the runner's own detail
