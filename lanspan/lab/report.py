"""`lab test --report DIR`: one self-contained HTML page (SVG inline, no scripts).

The topology is drawn as the internet core above one box per site (router,
nodes, guests with their segments); each fault gets a timeline of the
continuous probe: answered in green, lost in red, with the moment the fault
was injected, cleared and recovered.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from lanspan.lab.runner import LabRun

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def _e(s: object) -> str:
    return html.escape(str(s))


def topology_svg(topo: dict[str, Any], impaired: dict[str, str] | None = None) -> str:
    """Core on top, one box per site: nodes, and under each its guests, one line per segment."""
    sites = topo["sites"]
    nodes = topo["nodes"]
    guests = topo["guests"]
    impaired = impaired or {}
    segs = sorted({i["segment"] for g in guests for i in g["interfaces"]})
    colour = {s: PALETTE[k % len(PALETTE)] for k, s in enumerate(segs)}
    col_w, gap, line = 300, 20, 18
    rows: dict[str, int] = {}
    for s in sites:
        count = 0
        for n in (x for x in nodes if x["site"] == s["name"]):
            count += 1
            for g in (g_ for g_ in guests if g_["node"] == n["name"]):
                count += 1 + len(g["interfaces"])
        rows[s["name"]] = count
    top = 120
    height = top + 40 + line * max(rows.values(), default=1) + 50
    width = max(len(sites) * (col_w + gap) + gap, 400)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">'
    ]
    cx = width / 2
    out.append(f'<ellipse cx="{cx}" cy="35" rx="90" ry="24" fill="#eef" stroke="#557"/>')
    out.append(f'<text x="{cx}" y="40" text-anchor="middle">internet core</text>')
    for k, s in enumerate(sites):
        x = gap + k * (col_w + gap)
        mid = x + col_w / 2
        dash = ' stroke-dasharray="6,4"' if s["nat"] else ""
        stroke = "#d62728" if s["name"] in impaired else "#557"
        out.append(
            f'<line x1="{cx}" y1="59" x2="{mid}" y2="{top}" stroke="{stroke}" '
            f'stroke-width="2"{dash}/>'
        )
        if s["name"] in impaired:
            out.append(
                f'<text x="{(cx + mid) / 2 + 6}" y="{(59 + top) / 2}" fill="#d62728">'
                f"{_e(impaired[s['name']])}</text>"
            )
        label = f"{s['name']} · uplink {s['public_addr']}{' · NAT' if s['nat'] else ''}"
        box_h = 34 + line * rows[s["name"]]
        out.append(
            f'<rect x="{x}" y="{top}" width="{col_w}" height="{box_h}" rx="8" '
            'fill="#fafafa" stroke="#888"/>'
        )
        out.append(f'<text x="{x + 8}" y="{top + 18}" font-weight="bold">{_e(label)}</text>')
        y = top + 40
        for n in (x_ for x_ in nodes if x_["site"] == s["name"]):
            ep = n["endpoint"] or "no endpoint (NAT)"
            out.append(
                f'<rect x="{x + 8}" y="{y - 13}" width="{col_w - 16}" height="17" rx="3" '
                'fill="#dde" stroke="#99a"/>'
            )
            out.append(f'<text x="{x + 14}" y="{y}">node {_e(n["name"])} · {_e(ep)}</text>')
            y += line
            for g in (g_ for g_ in guests if g_["node"] == n["name"]):
                kind = " (trunk)" if g["kind"] == "trunk" else ""
                out.append(f'<text x="{x + 22}" y="{y}">└ {_e(g["name"])}{kind}</text>')
                y += line
                for i in g["interfaces"]:
                    addrs = ", ".join(a.split("/")[0] for a in i["addresses"]) or "-"
                    out.append(
                        f'<text x="{x + 44}" y="{y}"><tspan fill="{colour[i["segment"]]}" '
                        f'font-weight="bold">{_e(i["segment"])}</tspan> {_e(addrs)}</text>'
                    )
                    y += line
    ly = height - 18
    for k, s in enumerate(segs):
        out.append(
            f'<rect x="{gap + k * 120}" y="{ly - 10}" width="12" height="12" fill="{colour[s]}"/>'
        )
        out.append(f'<text x="{gap + k * 120 + 16}" y="{ly}">segment {_e(s)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def timeline_svg(fault: dict[str, Any], width: int = 900, height: int = 120) -> str:
    tl: list[int] = fault.get("timeline") or []
    interval = float(fault.get("interval_ms") or 10.0)
    if not tl:
        return "<p>(no probe data)</p>"
    total_ms = len(tl) * interval
    plot_w, left, top, bar_h = width - 60, 50, 20, 50
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
    for label, ms in (fault.get("markers") or {}).items():
        x = left + plot_w * ms / total_ms
        out.append(
            f'<line x1="{x:.1f}" y1="{top - 5}" x2="{x:.1f}" y2="{top + bar_h + 5}" '
            'stroke="#000" stroke-dasharray="3,2"/>'
        )
        out.append(f'<text x="{x + 2:.1f}" y="{top - 8}">{_e(label)}</text>')
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


def render(result: dict[str, Any], network_toml: str = "") -> str:
    ok = result["passed"]
    rows = "\n".join(
        f"<tr class={'ok' if c['passed'] else 'bad'}><td>{_e(c['name'])}</td><td>{_e(c['kind'])}"
        f"</td><td>{'ok' if c['passed'] else 'FAIL'}</td><td>{_e(c.get('detail', ''))}</td></tr>"
        for c in result["checks"]
    )
    faults = []
    for f in result["faults"]:
        out = "-" if f.get("outage_ms") is None else f"{f['outage_ms']:.0f} ms"
        rec = "-" if f.get("recovery_ms") is None else f"{f['recovery_ms']:.0f} ms"
        extra = f" · impairment {_e(json.dumps(f['impair']))}" if f.get("impair") else ""
        during, before = f.get("during") or {}, f.get("before") or {}
        if during:
            extra += (
                f" · during the fault: loss {during.get('loss_pct')} %, median RTT "
                f"{during.get('rtt_ms_median')} ms (before: {before.get('rtt_ms_median')} ms)"
            )
        faults.append(
            f"<h3>{_e(f['name'])} <small>({_e(f['kind'])}, probe {_e(f.get('probe', ''))})</small>"
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
{topology_svg(result["topology"], result.get("uplinks"))}
<h2>Checks</h2>
<table><tr><th>check</th><th>kind</th><th>result</th><th>detail</th></tr>
{rows}
</table>
<h2>Faults</h2>
{"".join(faults) or "<p>none run</p>"}
{netfile}
</body></html>
"""


def write(report_dir: Path, run: LabRun, result: dict[str, Any]) -> Path:
    report_dir.mkdir(parents=True, exist_ok=True)
    path = report_dir / "index.html"
    net = run.network_file.read_text() if run.network_file.exists() else ""
    path.write_text(render(result, net))
    (report_dir / "result.json").write_text(json.dumps(result, indent=1))
    return path


__all__ = ["render", "timeline_svg", "topology_svg", "write"]
