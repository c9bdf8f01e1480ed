"""The HTML page of a `lab chaos` run: verdict, violations, and the timeline."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any


def render(result: dict[str, Any]) -> str:
    """One self-contained page (no scripts, no external files)."""
    esc = html.escape
    verdict = "PASSED" if result["passed"] else f"FAILED ({len(result['violations'])} violations)"
    colour = "#1a7f37" if result["passed"] else "#cf222e"
    rows = []
    for ev in result["timeline"]:
        bad = ev.get("event") == "checked" and not (ev.get("healed") and ev.get("isolated"))
        style = ' style="color:#cf222e"' if bad else ""
        extra = ""
        if ev.get("event") == "checked":
            extra = f"healed {'yes' if ev.get('healed') else 'NO'}, "
            extra += f"isolated {'yes' if ev.get('isolated') else 'NO'}"
        rows.append(
            f"<tr{style}><td>{ev['t']:.2f}</td><td>{esc(str(ev['event']))}</td>"
            f"<td>{esc(str(ev['fault']))}</td><td>{esc(extra)}</td></tr>"
        )
    viol = "".join(
        f"<li>{v['t']:.2f} s, episode {v['episode']}: {esc(v['kind'])}: {esc(v['detail'])}</li>"
        for v in result["violations"]
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>lanspan chaos: {esc(result["lab"])}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 10px;text-align:left}}
tr:nth-child(even){{background:#f3f3f3}}</style></head><body>
<h1>lanspan lab chaos: {esc(result["lab"])}</h1>
<p>seed {result["seed"]}, {result["episodes"]} episodes, {len(result["faults"])} faults,
{result["seconds"]} s &mdash; <b style="color:{colour}">{verdict}</b></p>
<h2>Violations</h2><ul>{viol or "<li>none</li>"}</ul>
<h2>Timeline</h2>
<table><tr><th>t (s)</th><th>event</th><th>fault</th><th>check</th></tr>
{"".join(rows)}
</table></body></html>
"""


def write(directory: Path, result: dict[str, Any]) -> Path:
    """`index.html` and `chaos.json` into `directory`; the page's path."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "chaos.json").write_text(json.dumps(result) + "\n")
    page = directory / "index.html"
    page.write_text(render(result))
    return page


__all__ = ["render", "write"]
