"""`GET /`: a small self-contained HTML status page (no external assets, refreshes itself).

Features first (what on-call and the product owner ask about), then dependencies, maintenance
windows, open incidents, silences and, among replicas, what each one sees. Rendered from the
same document as `/status`, for a person: names rather than ids, and times as "down for 12 min"
with the UTC time beside it (the raw timestamp stays in the `<time datetime>` attribute). Each
feature shows its last 24 hours as a strip of colored segments, each as wide as it lasted, with
a tooltip ("down 10:32-10:47 UTC"), the same text as the strip's accessible name, and the time
spent in each state written below it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from html import escape
from typing import Any

from monitor.text import moment, span, utc

REFRESH_SECONDS = 10

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1b1b1b;background:#fafafa}
h1{font-size:1.4rem;margin:0 0 .2rem} h2{font-size:1.1rem;margin:1.4rem 0 .4rem}
.alert{background:#fde2e1;border:1px solid #b50909;padding:.5rem .8rem;font-weight:600}
table{border-collapse:collapse;width:100%;background:#fff} td,th{padding:.35rem .6rem;border-bottom:1px solid #ddd;
text-align:left;vertical-align:top} th{background:#eee}
.state{font-weight:600;padding:.1rem .5rem;border-radius:.3rem;display:inline-block;min-width:6rem;text-align:center}
.ok,.up{background:#d6f5d6;color:#0b4d0b} .degraded{background:#fff1c2;color:#6b4e00}
.down{background:#f9d0d0;color:#7a0000} .maintenance{background:#d6e4ff;color:#0b2e73}
.unknown{background:#e4e4e4;color:#444} .muted{color:#666;font-size:.9rem}
td.history{width:36%} .strip{display:flex;height:1.2rem;min-width:12rem;border-radius:.2rem;overflow:hidden}
.seg{flex-basis:0;min-width:2px;background:#aeb0b5} .key .seg{display:inline-block;width:.9rem;height:.9rem;
vertical-align:middle;margin:0 .25rem 0 .6rem;border-radius:.15rem}
.seg.ok,.seg.up{background:#2e8540} .seg.degraded{background:#f0a30a} .seg.down{background:#d83933}
.seg.maintenance{background:#0071bc} .strip-total{margin-top:.2rem}
"""
# Worst first: the order of the time-in-state totals and of the legend.
_HISTORY_STATES = ("down", "degraded", "maintenance", "ok", "unknown")


def _state(state: str) -> str:
    return f'<span class="state {escape(state)}">{escape(state)}</span>'


def render_status_page(doc: dict[str, Any]) -> str:
    """The HTML page for a `/status` document."""
    names = _names(doc)
    now = doc["generated_at"]
    features = "".join(
        f"<tr data-feature='{escape(fid)}'><td>{escape(f['name'])}</td><td>{_state(f['state'])}</td>"
        f"<td>{escape(_named(f['impacted_by'], names))}</td><td>{state_for(f['state'], f['since'], now)}</td>"
        f"<td class=history>{history_strip(f['name'], f.get('history_24h') or [])}</td></tr>"
        for fid, f in doc["features"].items()
    )
    dependencies = "".join(
        f"<tr data-dependency='{escape(did)}'><td>{escape(d['name'])}</td><td>{_state(d['state'])}</td>"
        f"<td>{escape(_named([d['cause']] if d['cause'] else [], names))}</td><td>{_evidence(d['probes'])}</td>"
        f"<td>{state_for(d['state'], d['since'], now)}</td></tr>"
        for did, d in doc["dependencies"].items()
    )
    windows = (
        "".join(
            f"<tr><td>{escape(d['name'])}</td><td>{escape(utc_time(d['maintenance']['start_time']))}</td>"
            f"<td>{escape(utc_time(d['maintenance']['end_time']))}</td>"
            f"<td>{escape(d['maintenance']['description'])}</td></tr>"
            for d in doc["dependencies"].values()
            if d["maintenance"]
        )
        or "<tr><td colspan=4 class=muted>none open</td></tr>"
    )
    incidents = (
        "".join(
            f"<tr><td>{escape(names.get(i['dependency'], i['dependency']))}</td>"
            f"<td>{state_for('open', i['opened_at'], now)}</td>"
            f"<td>{escape(_named(i['features'], names))}</td><td>{'yes' if i['escalated'] else 'no'}</td></tr>"
            for i in doc["incidents"]
        )
        or "<tr><td colspan=4 class=muted>none open</td></tr>"
    )
    silences = (
        "".join(
            f"<tr><td>{escape(names.get(s['dependency'], s['dependency']))}</td>"
            f"<td>{escape(utc_time(s['until']))}</td><td>{escape(s['reason'])}</td>"
            f"<td><code>depmon silence --expire {int(s['id'])}</code></td></tr>"
            for s in doc.get("silences") or []
        )
        or "<tr><td colspan=4 class=muted>none</td></tr>"
    )
    replicas = _replicas(doc.get("replicas") or [], names)
    verdict = doc.get("self") or {}
    trouble = (
        f"<p class=alert role=alert>{escape(str(verdict.get('reason')))}: dependency failures count for nothing "
        "until this clears.</p>"
        if verdict.get("condition") not in (None, "ok")
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>depmon: {escape(doc["environment"])}</title><style>{_STYLE}</style></head>
<body><h1>VA mobile app dependencies: {escape(doc["environment"])}</h1>
<p class=muted>Generated {escape(utc_time(doc["generated_at"], seconds=True))}; refreshes every {REFRESH_SECONDS} s.
<a href="/status">JSON</a> · <a href="/metrics">metrics</a> · <a href="/maintenance_windows">maintenance windows</a></p>
{trouble}<h2>App features</h2><p class="muted key">Last 24 hours, oldest on the left:{_legend()}</p>
<table id="features"><tr><th>Feature</th><th>State</th><th>Impacted by</th><th>For</th><th>Last 24 hours</th></tr>
{features}</table>
<h2>Dependencies</h2><table id="dependencies"><tr><th>Dependency</th><th>State</th><th>Cause</th><th>Evidence</th>
<th>For</th></tr>{dependencies}</table>
<h2>Maintenance windows</h2><table id="windows">
<tr><th>Dependency</th><th>Start</th><th>End</th><th>Description</th></tr>
{windows}</table>
<h2>Open incidents</h2><table id="incidents"><tr><th>Dependency</th><th>Open</th><th>Features</th><th>Escalated</th>
</tr>{incidents}</table>
<h2>Silences</h2><table id="silences"><tr><th>Dependency</th><th>Until</th><th>Reason</th><th>End it</th></tr>
{silences}</table>{replicas}</body></html>
"""


def _replicas(replicas: Sequence[Mapping[str, Any]], names: Mapping[str, str]) -> str:
    """HTML: among replicas, who leads, who is live, and what each sees down (nothing with one depmon).

    A dependency down from one replica only is a vantage-point problem, not an outage: seeing it
    here next to the others' views is what tells the two apart.
    """
    if not replicas:
        return ""

    def trouble(replica: Mapping[str, Any]) -> str:
        fine = replica.get("self") in (None, "", "ok")
        return "" if fine else escape(str(replica.get("self_reason") or replica.get("self")))

    rows = "".join(
        f"<tr data-replica='{escape(str(r['replica']))}'><td>{escape(str(r['replica']))}</td>"
        f"<td>{'leads' if r.get('leader') else ''}</td>"
        f"<td>{'live' if r.get('live') else 'not live'}, seen {r.get('seen_seconds_ago', 0):.0f} s ago</td>"
        f"<td>{trouble(r)}</td>"
        f"<td>{escape(_named(r.get('down') or [], names)) or '<span class=muted>nothing</span>'}</td></tr>"
        for r in replicas
    )
    return (
        '<h2>Replicas</h2><table id="replicas"><tr><th>Replica</th><th>Leader</th><th>Heard from</th>'
        f"<th>Its own trouble</th><th>Sees down</th></tr>{rows}</table>"
    )


def history_strip(name: str, segments: Sequence[Mapping[str, Any]]) -> str:
    """HTML: a feature's `history_24h` segments as a strip, its accessible name and the time in each state.

    Each segment is as wide as it lasted (2 px at least, so a short outage stays visible) and has
    the tooltip `down 10:32-10:47 UTC`; the strip is an image named by the same texts in order,
    and below it the time spent in each state, worst first. Empty without a readable segment.
    """
    spans: list[str] = []
    texts: list[str] = []
    totals: dict[str, float] = {}
    for segment in segments:
        try:
            begin, end = moment(segment["from"]), moment(segment["to"])
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        state = str(segment.get("state"))
        seconds = max((end - begin).total_seconds(), 0.0)
        text = f"{state} {_span(begin, end)}"
        texts.append(text)
        totals[state] = totals.get(state, 0.0) + seconds
        spans.append(
            f'<span class="seg {escape(state)}" data-state="{escape(state)}" style="flex-grow:{seconds:.0f}" '
            f'title="{escape(text)}"></span>'
        )
    if not spans:
        return ""
    label = f"{name}, last 24 hours: {'; '.join(texts)}"
    ranked = sorted(totals, key=lambda s: _HISTORY_STATES.index(s) if s in _HISTORY_STATES else len(_HISTORY_STATES))
    total = ", ".join(f"{state} {span(totals[state])}" for state in ranked)
    return (
        f'<div class="strip" role="img" aria-label="{escape(label)}">{"".join(spans)}</div>'
        f'<div class="muted strip-total">{escape(total)}</div>'
    )


def _span(begin: datetime, end: datetime) -> str:
    """`10:32-10:47 UTC`; with seconds inside one minute, with dates across midnight."""
    if begin.date() != end.date():
        return f"{begin:%b %d %H:%M}-{end:%b %d %H:%M} UTC"
    if begin.replace(second=0, microsecond=0) == end.replace(second=0, microsecond=0):
        return f"{begin:%H:%M:%S}-{end:%H:%M:%S} UTC"
    return f"{begin:%H:%M}-{end:%H:%M} UTC"


def _legend() -> str:
    return "".join(f'<span class="seg {state}" aria-hidden="true"></span>{state}' for state in _HISTORY_STATES)


def _evidence(probes: dict[str, Any]) -> str:
    failing = [f"{name}: {p['detail']}" for name, p in probes.items() if p.get("ok") is False and p.get("detail")]
    return escape("; ".join(failing))


def _names(doc: Mapping[str, Any]) -> dict[str, str]:
    """Dependency and feature id -> the name a person reads."""
    nodes = {**doc["features"], **doc["dependencies"]}
    return {node_id: node["name"] for node_id, node in nodes.items()}


def _named(ids: Iterable[str], names: Mapping[str, str]) -> str:
    return ", ".join(names.get(node_id, node_id) for node_id in ids)


def utc_time(iso: str | None, seconds: bool = False) -> str:
    """`2026-11-27T11:48:12.345678Z` -> `2026-11-27 11:48 UTC` (with `:12` when `seconds`).

    Text that is not an ISO 8601 time is returned as it is; None is the empty string.
    """
    if not iso:
        return ""
    try:
        return utc(iso, seconds=seconds)
    except ValueError:
        return iso


def state_for(state: str, since: str | None, now: str | None) -> str:
    """HTML: `down for 12 min` and, beside it, the UTC time it started; empty without `since`."""
    if not since:
        return ""
    try:
        elapsed = span((moment(now or since) - moment(since)).total_seconds())
    except ValueError:
        return escape(since)
    return (
        f"{escape(state)} for {elapsed} "
        f'<time class=muted datetime="{escape(since)}">(since {escape(utc_time(since))})</time>'
    )
