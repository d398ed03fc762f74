"""`GET /`: a small self-contained HTML status page (no external assets, refreshes itself).

Features first (what on-call and the product owner ask about), then dependencies, maintenance
windows and open incidents. Rendered from the same document as `/status`.
"""

from __future__ import annotations

from html import escape
from typing import Any

REFRESH_SECONDS = 10

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1b1b1b;background:#fafafa}
h1{font-size:1.4rem;margin:0 0 .2rem} h2{font-size:1.1rem;margin:1.4rem 0 .4rem}
table{border-collapse:collapse;width:100%;background:#fff} td,th{padding:.35rem .6rem;border-bottom:1px solid #ddd;
text-align:left;vertical-align:top} th{background:#eee}
.state{font-weight:600;padding:.1rem .5rem;border-radius:.3rem;display:inline-block;min-width:6rem;text-align:center}
.ok,.up{background:#d6f5d6;color:#0b4d0b} .degraded{background:#fff1c2;color:#6b4e00}
.down{background:#f9d0d0;color:#7a0000} .maintenance{background:#d6e4ff;color:#0b2e73}
.unknown{background:#e4e4e4;color:#444} .muted{color:#666;font-size:.9rem}
"""


def _state(state: str) -> str:
    return f'<span class="state {escape(state)}">{escape(state)}</span>'


def render_status_page(doc: dict[str, Any]) -> str:
    """The HTML page for a `/status` document."""
    features = "".join(
        f"<tr data-feature='{escape(fid)}'><td>{escape(f['name'])}</td><td>{_state(f['state'])}</td>"
        f"<td>{escape(', '.join(f['impacted_by']))}</td><td class=muted>{escape(f['since'] or '')}</td></tr>"
        for fid, f in doc["features"].items()
    )
    dependencies = "".join(
        f"<tr data-dependency='{escape(did)}'><td>{escape(d['name'])}</td><td>{_state(d['state'])}</td>"
        f"<td>{escape(d['cause'] or '')}</td><td>{_evidence(d['probes'])}</td>"
        f"<td class=muted>{escape(d['since'] or '')}</td></tr>"
        for did, d in doc["dependencies"].items()
    )
    windows = (
        "".join(
            f"<tr><td>{escape(d['name'])}</td><td>{escape(d['maintenance']['start_time'])}</td>"
            f"<td>{escape(d['maintenance']['end_time'])}</td><td>{escape(d['maintenance']['description'])}</td></tr>"
            for d in doc["dependencies"].values()
            if d["maintenance"]
        )
        or "<tr><td colspan=4 class=muted>none open</td></tr>"
    )
    incidents = (
        "".join(
            f"<tr><td>{escape(i['dependency'])}</td><td>{escape(i['opened_at'] or '')}</td>"
            f"<td>{escape(', '.join(i['features']))}</td><td>{'yes' if i['escalated'] else 'no'}</td></tr>"
            for i in doc["incidents"]
        )
        or "<tr><td colspan=4 class=muted>none open</td></tr>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>depmon: {escape(doc["environment"])}</title><style>{_STYLE}</style></head>
<body><h1>VA mobile app dependencies: {escape(doc["environment"])}</h1>
<p class=muted>Generated {escape(doc["generated_at"] or "")}; refreshes every {REFRESH_SECONDS} s.
<a href="/status">JSON</a> · <a href="/metrics">metrics</a> · <a href="/maintenance_windows">maintenance windows</a></p>
<h2>App features</h2><table id="features"><tr><th>Feature</th><th>State</th><th>Impacted by</th><th>Since</th></tr>
{features}</table>
<h2>Dependencies</h2><table id="dependencies"><tr><th>Dependency</th><th>State</th><th>Cause</th><th>Evidence</th>
<th>Since</th></tr>{dependencies}</table>
<h2>Maintenance windows</h2><table id="windows">
<tr><th>Dependency</th><th>Start</th><th>End</th><th>Description</th></tr>
{windows}</table>
<h2>Open incidents</h2><table id="incidents"><tr><th>Dependency</th><th>Opened</th><th>Features</th><th>Escalated</th>
</tr>{incidents}</table></body></html>
"""


def _evidence(probes: dict[str, Any]) -> str:
    failing = [f"{name}: {p['detail']}" for name, p in probes.items() if p["ok"] is False and p["detail"]]
    return escape("; ".join(failing))
