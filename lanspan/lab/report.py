"""`lab test --report DIR`: one self-contained HTML page (SVG inline, no scripts).

The topology is drawn as the internet core above one box per site (router,
nodes, guests with their segments); each fault gets a timeline of the
continuous probe: answered in green, lost in red, with the moment the fault
was injected, cleared and recovered.
"""

from __future__ import annotations

import html
import json
from dataclasses import field, replace
from pathlib import Path
from typing import Any

from lanspan.lab.model import Lab
from lanspan.lab.runner import LabRun
from lanspan.records import record

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
CUT = "#d62728"
MAX_WIDTH = 1180  # px: the topology wraps its sites into rows to stay within a laptop's window


def _e(s: object) -> str:
    return html.escape(str(s))


def text_width(text: str, size: float, bold: bool = False) -> float:
    """A generous estimate of the rendered width of `text` in sans-serif (DejaVu Sans is wide)."""
    wide = sum(1 for c in text if c in "mwMW@%")
    narrow = sum(1 for c in text if c in "ilj.,:;|!' ")
    per = 0.72 if bold else 0.64
    return size * (per * (len(text) - wide - narrow) + 0.95 * wide + 0.36 * narrow)


@record(frozen=True)
class Box:
    x: float
    y: float
    w: float
    h: float

    def overlaps(self, o: Box) -> bool:
        return (
            self.x < o.x + o.w
            and o.x < self.x + self.w
            and self.y < o.y + o.h
            and o.y < (self.y + self.h)
        )

    def inside(self, o: Box) -> bool:
        return (
            o.x <= self.x and o.y <= self.y and self.x + self.w <= o.x + o.w
            and self.y + self.h <= o.y + o.h
        )  # fmt: skip


@record(frozen=True)
class Label:
    """One line of text; `parts` are (text, colour or "", bold) runs drawn one after the other."""

    x: float
    y: float  # baseline
    parts: tuple[tuple[str, str, bool], ...]
    size: float = 12
    fill: str = "#000"
    anchor: str = "start"

    @property
    def text(self) -> str:
        return "".join(p[0] for p in self.parts)

    @property
    def width(self) -> float:
        return sum(text_width(t, self.size, b) for t, _, b in self.parts)

    def box(self) -> Box:
        x = self.x - self.width / 2 if self.anchor == "middle" else self.x
        return Box(x, self.y - 0.95 * self.size, self.width, 1.25 * self.size)

    def svg(self) -> str:
        runs = "".join(
            "<tspan" + (f' fill="{c}"' if c else "") + (' font-weight="bold"' if b else "")
            + f">{_e(t)}</tspan>"
            for t, c, b in self.parts
        )  # fmt: skip
        anchor = f' text-anchor="{self.anchor}"' if self.anchor != "start" else ""
        return (
            f'<text x="{self.x:.1f}" y="{self.y:.1f}" font-size="{self.size:g}" '
            f'fill="{self.fill}"{anchor}>{runs}</text>'
        )


def _plain(text: str, bold: bool = False) -> tuple[tuple[str, str, bool], ...]:
    return ((text, "", bold),)


@record
class Layout:
    """The topology as shapes (SVG elements) and labels, with the labels' boxes for checking."""

    width: float = 0
    height: float = 0
    shapes: list[str] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    site_boxes: dict[str, Box] = field(default_factory=dict)
    # (site, uplink number) -> names of the faults that cut it
    cuts: dict[tuple[str, int], list[str]] = field(default_factory=dict)

    def svg(self) -> str:
        out = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width:.0f}" '
            f'height="{self.height:.0f}" viewBox="0 0 {self.width:.0f} {self.height:.0f}" '
            'font-family="sans-serif" font-size="12" class="topology">',
            *self.shapes,
            *(lb.svg() for lb in self.labels),
            "</svg>",
        ]
        return "\n".join(out)


def cut_uplinks(
    topo: dict[str, Any], faults: list[dict[str, Any]]
) -> dict[tuple[str, int], list[str]]:
    """Which uplink each cut-uplink fault cut: (site, 1 or 2) -> fault names.

    A fault names its site (`site`) and, for one uplink of a two-uplink site, the uplink
    it resolved (`target`: "uplink 2") or asked for (`uplink`: 1, 2, "active"); a fault
    without one cut every uplink of the site.
    """
    count = {s["name"]: 2 if s.get("public_addr2") else 1 for s in topo["sites"]}
    out: dict[tuple[str, int], list[str]] = {}
    for f in faults:
        site = str(f.get("site"))
        if f.get("kind") != "cut-uplink" or site not in count:
            continue
        target = str(f.get("target") or "")
        spec = f.get("uplink")
        name = str(f["name"])
        if target.startswith("uplink ") and target.split()[-1] in ("1", "2"):
            which = [int(target.split()[-1])]
        elif spec in (1, 2):
            which = [int(spec)]
        elif spec == "active":  # never resolved (the fault failed before it was injected)
            which, name = list(range(1, count[site] + 1)), f"{name} (active: not resolved)"
        else:
            which = list(range(1, count[site] + 1))
        for n in which:
            if n <= count[site]:
                out.setdefault((site, n), []).append(name)
    return out


def layout(
    topo: dict[str, Any],
    impaired: dict[str, str] | None = None,
    faults: list[dict[str, Any]] | None = None,
    max_width: float = MAX_WIDTH,
) -> Layout:
    """Core on top, sites in rows of boxes under it, every uplink a line to the core.

    The internet core is a bar above each row of sites (joined by a trunk on the
    left when there are several rows); each uplink of a site is its own line, labelled
    with its number and public address, drawn red and named when a fault cut it.
    Columns are as wide as their widest label; sites wrap into rows within `max_width`.
    """
    sites, nodes, guests = topo["sites"], topo["nodes"], topo["guests"]
    impaired = impaired or {}
    cuts = cut_uplinks(topo, faults or [])
    segs = sorted({i["segment"] for g in guests for i in g["interfaces"]})
    colour = {s: PALETTE[k % len(PALETTE)] for k, s in enumerate(segs)}
    lay = Layout(cuts=cuts)
    margin, gap, line, small = 20.0, 24.0, 18.0, 11.0
    bar_h, trunk_w = 22.0, 12.0

    # -- the contents of every site box, relative to its top left corner --------------
    content: dict[str, list[tuple[str, float, Label | tuple[float, float]]]] = {}
    need_w = 240.0
    for s in sites:
        items: list[tuple[str, float, Label | tuple[float, float]]] = []
        two = bool(s.get("public_addr2"))
        head = (
            f"site {s['name']}"
            + (" · behind NAT" if s["nat"] else "")
            + (" · 2 uplinks" if two else "")
        )
        items.append(("label", 0, Label(10, 20, _plain(head, True))))
        y = 44.0
        for n in (x for x in nodes if x["site"] == s["name"]):
            items.append(("node", y, (y - 14, 20)))
            items.append(("label", 0, Label(16, y, _plain(f"node {n['name']}", True))))
            eps = [e for e in (n.get("endpoint"), n.get("endpoint2")) if e]
            if not eps:
                ep = "no endpoint (behind NAT)"
            elif len(eps) == 1:
                ep = eps[0]
            else:
                ep = " · ".join(f"{k}: {e}" for k, e in enumerate(eps, start=1))
            y += line
            items.append(("label", 0, Label(16, y, _plain(ep), size=small, fill="#555")))
            y += line
            for g in (g_ for g_ in guests if g_["node"] == n["name"]):
                kind = " (trunk)" if g["kind"] == "trunk" else ""
                items.append(("label", 0, Label(24, y, _plain(f"└ {g['name']}{kind}"))))
                y += line
                for i in g["interfaces"]:
                    addrs = ", ".join(a.split("/")[0] for a in i["addresses"]) or "-"
                    parts = ((i["segment"], colour[i["segment"]], True), (f" {addrs}", "", False))
                    items.append(("label", 0, Label(46, y, parts)))
                    y += line
        items.append(("end", y - line + 16, (0, 0)))
        content[s["name"]] = items
        for _kind, _, it in items:
            if isinstance(it, Label):
                need_w = max(need_w, it.x + it.width + 12)

    # -- the labels of each uplink: number, address, impairment, the faults that cut it --
    def uplink_labels(s: dict[str, Any]) -> list[list[tuple[str, str]]]:
        two = bool(s.get("public_addr2"))
        out: list[list[tuple[str, str]]] = []
        for k, addr in enumerate((s["public_addr"], s.get("public_addr2")), start=1):
            if addr is None:
                continue
            rows: list[tuple[str, str]] = [(f"uplink {k}" if two else "uplink", "#333")]
            rows.append((f"{addr}{' (NAT)' if s['nat'] else ''}", "#555"))
            if k == 1 and s["name"] in impaired:
                rows.append((impaired[s["name"]], "#b26b00"))
            rows += [(f"✂ cut by {f}", CUT) for f in cuts.get((s["name"], k), [])]
            out.append(rows)
        return out

    up_labels = {s["name"]: uplink_labels(s) for s in sites}
    up_x: dict[str, list[float]] = {}
    for s in sites:
        ups = up_labels[s["name"]]
        # each uplink's line, its labels to the right; the next uplink after them
        xs, ux = [], 24.0
        for u in ups:
            xs.append(ux)
            ux += 8 + max(text_width(t, small, j == 0) for j, (t, _) in enumerate(u)) + 28
        up_x[s["name"]] = xs
        need_w = max(need_w, ux - 16)
    col_w = need_w
    left = margin
    per_row = max(1, int((max_width - margin * 2 + gap) // (col_w + gap)))
    rows_of = [sites[k : k + per_row] for k in range(0, len(sites), per_row)]
    if len(rows_of) > 1:
        left = margin + trunk_w + gap
        per_row = max(1, int((max_width - left - margin + gap) // (col_w + gap)))
        rows_of = [sites[k : k + per_row] for k in range(0, len(sites), per_row)]
    ncols = max((len(r) for r in rows_of), default=1)
    width = max(left + ncols * (col_w + gap) - gap + margin, 420.0)

    y = margin
    bars: list[float] = []
    for r, row in enumerate(rows_of):
        bars.append(y)
        bar_x = margin if len(rows_of) > 1 else left
        lay.shapes.append(
            f'<rect x="{bar_x:.1f}" y="{y:.1f}" width="{width - margin - bar_x:.1f}" '
            f'height="{bar_h}" rx="4" fill="#dde3f0" stroke="#557"/>'
        )
        title = "internet core" if r == 0 else "internet core (continued)"
        lay.labels.append(Label(bar_x + 10, y + 15, _plain(title, True), fill="#223"))
        n_lines = max((len(u) for s in row for u in up_labels[s["name"]]), default=2)
        zone = 14 + 14 * n_lines + 10
        box_top = y + bar_h + zone
        row_h = 0.0
        for c, s in enumerate(row):
            x = left + c * (col_w + gap)
            items = content[s["name"]]
            box_h = next(v for k_, v, _ in items if k_ == "end")
            row_h = max(row_h, box_h)
            lay.site_boxes[s["name"]] = Box(x, box_top, col_w, box_h)
            lay.shapes.append(
                f'<rect x="{x:.1f}" y="{box_top:.1f}" width="{col_w:.1f}" height="{box_h:.1f}" '
                'rx="8" fill="#fafafa" stroke="#888"/>'
            )
            for k, texts in enumerate(up_labels[s["name"]], start=1):
                lx = x + up_x[s["name"]][k - 1]
                cut = bool(cuts.get((s["name"], k)))
                stroke = CUT if cut else "#557"
                dash = ' stroke-dasharray="6,4"' if s["nat"] or cut else ""
                y1, y2 = y + bar_h, box_top
                lay.shapes.append(
                    f'<line x1="{lx:.1f}" y1="{y1:.1f}" x2="{lx:.1f}" y2="{y2:.1f}" '
                    f'stroke="{stroke}" stroke-width="{3 if cut else 2}"{dash} '
                    f'class="uplink" data-site="{_e(s["name"])}" data-uplink="{k}"'
                    + (' data-cut="yes"' if cut else "")
                    + "/>"
                )
                if cut:  # a cross on the line
                    my = (y1 + y2) / 2
                    lay.shapes.append(
                        f'<path d="M{lx - 6:.1f},{my - 6:.1f} l12,12 m0,-12 l-12,12" '
                        f'stroke="{CUT}" stroke-width="3"/>'
                    )
                for j, (t, fill) in enumerate(texts):
                    lay.labels.append(
                        Label(lx + 8, y + bar_h + 14 + 14 * j, _plain(t, j == 0), small, fill)
                    )
            for kind, _, it in items:
                if kind == "node":
                    assert isinstance(it, tuple)
                    lay.shapes.append(
                        f'<rect x="{x + 8:.1f}" y="{box_top + it[0]:.1f}" '
                        f'width="{col_w - 16:.1f}" height="{it[1]}" rx="3" fill="#dde" '
                        'stroke="#99a"/>'
                    )
                elif isinstance(it, Label):
                    lay.labels.append(replace(it, x=x + it.x, y=box_top + it.y))
        y = box_top + row_h + gap
    if len(rows_of) > 1:  # one core: a trunk joining the bars
        lay.shapes.insert(
            0,
            f'<rect x="{margin:.1f}" y="{bars[0]:.1f}" width="{trunk_w}" '
            f'height="{bars[-1] + bar_h - bars[0]:.1f}" fill="#dde3f0" stroke="#557"/>',
        )
    # legend, wrapped
    lx, ly = margin, y + 8
    for s_ in segs:
        text = f"segment {s_}"
        w = 16 + text_width(text, 12) + 24
        if lx + w > width - margin and lx > margin:
            lx, ly = margin, ly + line
        lay.shapes.append(
            f'<rect x="{lx:.1f}" y="{ly - 10:.1f}" width="12" height="12" fill="{colour[s_]}"/>'
        )
        lay.labels.append(Label(lx + 16, ly, _plain(text)))
        lx += w
    lay.width, lay.height = width, ly + 14
    return lay


def topology_svg(
    topo: dict[str, Any],
    impaired: dict[str, str] | None = None,
    faults: list[dict[str, Any]] | None = None,
) -> str:
    """The topology (see `layout`) as an SVG element."""
    return layout(topo, impaired, faults).svg()


def timeline_svg(fault: dict[str, Any], width: int = 900, height: int = 120) -> str:
    tl: list[int] = fault.get("timeline") or []
    interval = float(fault.get("interval_ms") or 10.0)
    if not tl:
        return "<p>(no probe data)</p>"
    total_ms = len(tl) * interval
    markers = sorted((fault.get("markers") or {}).items(), key=lambda kv: kv[1])
    plot_w, left, bar_h = width - 60, 50, 50
    # marker labels close together go on separate levels instead of over each other
    levels: list[float] = []  # right end of the last label on each level
    placed: list[tuple[str, float, int]] = []
    for label, ms in markers:
        x = left + plot_w * ms / (len(tl) * interval)
        lvl = next((k for k, end in enumerate(levels) if x + 2 > end + 4), len(levels))
        if lvl == len(levels):
            levels.append(0.0)
        levels[lvl] = x + 2 + text_width(label, 11)
        placed.append((label, x, lvl))
    top = 20 + 13 * max(0, len(levels) - 1)
    height += top - 20
    bins = min(len(tl), plot_w)
    per = len(tl) / bins
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="11">'
    ]
    bw = plot_w / bins
    colours = []
    for b in range(bins):
        chunk = tl[int(b * per) : max(int((b + 1) * per), int(b * per) + 1)]
        ok = sum(chunk) / len(chunk)
        colours.append("#2ca02c" if ok == 1 else ("#d62728" if ok == 0 else "#ffbf00"))
    start = 0
    for b in range(1, bins + 1):  # one rectangle per run of one colour
        if b == bins or colours[b] != colours[start]:
            out.append(
                f'<rect x="{left + start * bw:.2f}" y="{top}" width="{(b - start) * bw:.2f}" '
                f'height="{bar_h}" fill="{colours[start]}" shape-rendering="crispEdges"/>'
            )
            start = b
    for label, x, lvl in placed:
        ty = top - 8 - 13 * lvl
        out.append(
            f'<line x1="{x:.1f}" y1="{ty + 3}" x2="{x:.1f}" y2="{top + bar_h + 5}" '
            'stroke="#000" stroke-dasharray="3,2"/>'
        )
        out.append(f'<text x="{x + 2:.1f}" y="{ty}">{_e(label)}</text>')
    ticks = 10
    for t in range(ticks + 1):
        x = left + plot_w * t / ticks
        out.append(
            f'<text x="{x:.1f}" y="{top + bar_h + 18}" text-anchor="middle">'
            f"{total_ms * t / ticks / 1000:.1f}s</text>"
        )
    out.append(
        f'<text x="{left}" y="{height - 5}">probe every {interval:g} ms · green answered, '
        "red lost, amber partly</text>"
    )
    out.append("</svg>")
    return "\n".join(out)


def _rtt(ms: object) -> str:
    """A median RTT, or what it means that there is none."""
    return "no answers" if ms is None else f"{float(ms):g} ms"  # type: ignore[arg-type]


def _pct(p: object) -> str:
    return "no probes sent" if p is None else f"{float(p):g} %"  # type: ignore[arg-type]


def render(result: dict[str, Any], network_toml: str = "") -> str:
    ok = result["passed"]
    rows = "\n".join(
        f"<tr class={'ok' if c['passed'] else 'bad'}><td>{_e(c['name'])}</td><td>{_e(c['kind'])}"
        f"</td><td>{'ok' if c['passed'] else 'FAIL'}</td><td>{_e(c.get('detail', ''))}</td></tr>"
        for c in result["checks"]
    )
    faults = []
    cut_by: dict[str, list[str]] = {}
    for (site, n), names in cut_uplinks(result["topology"], result["faults"]).items():
        for name in names:
            cut_by.setdefault(name.split()[0], []).append(f"{site} uplink {n}")
    for f in result["faults"]:
        out = "-" if f.get("outage_ms") is None else f"{f['outage_ms']:.0f} ms"
        rec = "-" if f.get("recovery_ms") is None else f"{f['recovery_ms']:.0f} ms"
        extra = f" · impairment {_e(json.dumps(f['impair']))}" if f.get("impair") else ""
        if f["name"] in cut_by and not f.get("detail"):
            extra += f" · cut {', '.join(cut_by[f['name']])}"
        during, before = f.get("during") or {}, f.get("before") or {}
        if during:
            extra += (
                f" · during the fault: loss {_pct(during.get('loss_pct'))}, median RTT "
                f"{_rtt(during.get('rtt_ms_median'))} (before: {_rtt(before.get('rtt_ms_median'))})"
            )
        faults.append(
            f"<h3>{_e(f['name'])} <small>({_e(f['kind'])}"
            + (f", probe {_e(f['probe'])}" if f.get("probe") else "")
            + ")</small>"
            f"</h3><p>outage <b>{out}</b> · recovery after clearing {rec} · recovered "
            f"<b>{'yes' if f['recovered'] else 'NO'}</b>{extra} {_e(f.get('detail', ''))}</p>"
            + timeline_svg(f)
        )
    netfile = (
        f"<h2>Network file</h2><details><summary>network.toml the agents ran with</summary>"
        f"<pre>{_e(network_toml)}</pre></details>"
        if network_toml
        else ""
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>lanspan lab {_e(result["lab"])}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 2px 8px; border-bottom: 1px solid #ddd; }}
tr.bad td {{ background: #fdd; }} .verdict {{ font-size: 1.4em; font-weight: bold; }}
</style></head><body>
<h1>lanspan lab “{_e(result["lab"])}”</h1>
<p class="verdict" style="color:{"#2a2" if ok else "#c22"}">{"PASSED" if ok else "FAILED"}</p>
<h2>Topology</h2>
{topology_svg(result["topology"], result.get("uplinks"), result["faults"])}
<h2>Checks</h2>
<table><tr><th>check</th><th>kind</th><th>result</th><th>detail</th></tr>
{rows}
</table>
<h2>Faults</h2>
{"".join(faults) or "<p>none run</p>"}
{netfile}
</body></html>
"""


def with_fault_places(result: dict[str, Any], lab: Lab) -> dict[str, Any]:
    """The result with each fault's `site` and `uplink` from the lab file, where it lacks them."""
    spec = {f.name: f for f in lab.fault}
    faults = []
    cut_by: dict[str, list[str]] = {}
    for (site, n), names in cut_uplinks(result["topology"], result["faults"]).items():
        for name in names:
            cut_by.setdefault(name.split()[0], []).append(f"{site} uplink {n}")
    for f in result["faults"]:
        f = dict(f)
        if f["name"] in spec:
            f.setdefault("site", spec[f["name"]].site)
            f.setdefault("uplink", spec[f["name"]].uplink)
        faults.append(f)
    return {**result, "faults": faults}


def write(report_dir: Path, run: LabRun, result: dict[str, Any]) -> Path:
    report_dir.mkdir(parents=True, exist_ok=True)
    path = report_dir / "index.html"
    net = run.network_file.read_text() if run.network_file.exists() else ""
    path.write_text(render(with_fault_places(result, run.lab), net))
    (report_dir / "result.json").write_text(json.dumps(result, indent=1))
    return path


__all__ = [
    "Box", "Label", "Layout", "cut_uplinks", "layout", "render", "text_width",
    "timeline_svg", "topology_svg", "with_fault_places", "write",
]  # fmt: skip
