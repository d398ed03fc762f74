"""A Markdown postmortem draft for a recorded incident (`depmon postmortem`, SPEC sections 2 and 7).

    render_postmortem(config, dependency, incident, timeline, earlier_incidents, now) -> str   pure
    print_postmortem(config, dependency, incident_number, state_path, out) -> exit status     I/O

The draft fills the VA postmortem template fields, in the template's order (Date, Authors,
Status; What happened; Background; Detection; Impact; Root causes; Resolution; Documentation
links; Action items; Lessons learned; Timeline) with what depmon recorded, and marks the rest
`TBD` for the responder. Two depmon sections follow the template: which of the seed's escalation
criteria held, with the writes depmon made to PagerDuty's incident for them (responder requests,
notes, urgency: when each was queued and, from its outbox row, how it ended), and how often the
dependency failed before (recurrence: the seed asks for a Mobile Incident Response Play when an
incident may occur again).
"""

from __future__ import annotations

import re
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from monitor.config import Config
from monitor.logs import Redactor
from monitor.paging.event_content import IncidentFacts, escalation_criteria, page_links, severity, summary
from monitor.store import PAGERDUTY_REST, Incident, OutboxEvent, StoreError, TimelineEntry, connect, redacted_url
from monitor.text import elapsed, format_duration, utc, utc_date

__all__ = ["print_postmortem", "render_postmortem"]

EXIT_OK, EXIT_NO_INCIDENT = 0, 1
TBD = "TBD"

# What each kind of timeline entry (the pager's action) means to a reader of the postmortem.
_EVENT_TEXT = {
    "trigger": "Triggered: PagerDuty paged",
    "update": "Updated: impacted features changed",
    "escalate": "Escalated: open past the significant duration",
    "resolve": "Resolved: PagerDuty incident resolved",
    "hold": "Up again: the resolve hold started",
    "flap": "Failed again inside the resolve hold (flapping)",
    "silenced": "Silenced (depmon silence): no page while it holds",
    "silence_ended": "Silence ended",
    "reconciled": "Reopened from an orphaned trigger at start-up",
}
# The escalation writes' steps (SPEC 11.2), as a reader names them.
_STEP_TEXT = {"responders": "Responder request", "note": "Note", "urgency": "Urgency"}


def render_postmortem(
    config: Config,
    dependency: str,
    incident: Incident,
    timeline: Sequence[TimelineEntry],
    earlier_incidents: int,
    now: float,
    rest_writes: Sequence[OutboxEvent] = (),
) -> str:
    """The Markdown draft for one incident of `dependency`; `now` dates an incident still open.
    `rest_writes`: the incident's escalation rows in the outbox (their outcomes)."""
    dep = config.dependencies[dependency]
    features = _impacted_features(incident, timeline)
    known = [f for f in features if f in config.features]
    evidence = _evidence(timeline)
    # The one security fact: the probes' own flag, as the pager recorded it in the timeline.
    security = any(bool(entry.data.get("security_relevant")) for entry in timeline)
    escalated = incident.escalated or any(entry.kind == "escalate" for entry in timeline)
    down = {str(f) for entry in timeline for f in entry.data.get("features_down") or ()}
    facts = IncidentFacts(
        dependency, tuple(known), tuple(f for f in known if f in down), security, escalated, earlier_incidents
    )
    criteria = escalation_criteria(config, facts)
    title = incident.summary or summary(config, dependency, known)
    level = incident.severity or severity(config, facts)
    ended = incident.resolved_at if incident.resolved_at is not None else now
    lasted = elapsed(ended - incident.opened_at)
    owner = dep.channel or "the team that owns it"
    lines: list[str] = []
    add = lines.append

    add(f"# Postmortem (draft): {title}")
    add("")
    add(f"- **Date:** {utc_date(incident.opened_at)} (UTC)")
    add(f"- **Authors:** {TBD} (on-call)")
    add("- **Status:** Draft")
    add("")

    add("## What happened")
    add("")
    add(f"{title}.")
    if incident.resolved_at is None:
        opened, at = utc(incident.opened_at, seconds=True), utc(now, seconds=True)
        add(f"depmon opened the incident at {opened}; it is still open ({lasted} as of {at}).")
    else:
        add(
            f"depmon opened the incident at {utc(incident.opened_at, seconds=True)} and resolved it at "
            f"{utc(incident.resolved_at, seconds=True)}, after {lasted}."
        )
    add("")
    add(f"{TBD}: what Veterans saw and what the team did, in a few sentences.")
    add("")

    add("## Background")
    add("")
    add(f"{dep.name} (`{dependency}`) is an external system the VA mobile app depends on.")
    needing = [f.name for f in config.features.values() if dependency in (*f.requires, *f.any_of)]
    if needing:
        add(f"App features that need it: {', '.join(needing)}.")
    if dep.depends_on:
        add(f"It depends on {_dependency_names(config, dep.depends_on)}.")
    if dep.channel:
        add(f"Owning team: {dep.channel}.")
    add("")
    add(f"{TBD}: anything else a reader needs to follow the incident.")
    add("")

    add("## Detection")
    add("")
    add("### How")
    add("")
    probes = list(dict.fromkeys(str(item.get("probe")) for item in evidence))
    watched = ", ".join(_code(f"{dependency}/{p}") for p in probes) or f"the probes of `{dependency}`"
    add(
        f"depmon, the dependency health monitor, detected it with {watched} and paged through PagerDuty "
        f"(dedup key `{incident.dedup_key}`)."
    )
    add("")
    add("### When")
    add("")
    first = min(evidence, key=_evidence_at, default=None)
    if first is not None:
        add(f"- First failing probe result recorded: {_at_text(first.get('at'))}: {_evidence_text(first)}")
    add(f"- Paged: {utc(incident.opened_at, seconds=True)}")
    add("")

    add("## Impact")
    add("")
    add(f"Severity: **{level}**" + (" (security-relevant failure)" if security else "") + ".")
    add("")
    add("### Veterans")
    add("")
    if features:
        for feature_id in features:
            add(f"- {_feature_impact(config, feature_id)}")
        shares = [config.features[f].userbase_share for f in known]
        if shares and max(shares) > 0:
            add("")
            add(
                f"At least about {_percent(max(shares))}% of monthly users use an impacted feature "
                f"({TBD}: confirm with analytics)."
            )
    else:
        add("- No app feature was recorded as impacted.")
    add("")
    add("### Business")
    add("")
    add(f"{TBD}.")
    add("")
    add("### Team")
    add("")
    add(f"{TBD}: on-call time, people and teams pulled in.")
    add("")

    add("## Root causes")
    add("")
    add(f"{dep.name} (`{dependency}`) was down.")
    for item in _latest_per_probe(evidence):
        probe = _code(f"{dependency}/{item.get('probe')}")
        add(f"- {probe}: {_evidence_text(item)}")
    if dep.depends_on:
        add("")
        add(
            f"depmon pages only a root cause: when it paged, the dependencies of {dep.name} were not down "
            f"({_dependency_names(config, dep.depends_on)})."
        )
    add("")
    add(f"{TBD}: the underlying cause, to be confirmed with {owner}.")
    add("")

    add("## Resolution")
    add("")
    add("### Steps")
    add("")
    add(f"{TBD}: what was done to restore service.")
    add("")
    add("### When")
    add("")
    if incident.resolved_at is None:
        add(f"Still open at {utc(now, seconds=True)}, {lasted} after it opened.")
    else:
        resolved = utc(incident.resolved_at, seconds=True)
        add(f"Resolved at {resolved} (the probes succeeded again), {lasted} after it opened.")
    add("")

    add("## Documentation links")
    add("")
    for text, href in page_links(config, facts):
        add(f"- [{text}]({href})")
    add("")

    add("## Action items")
    add("")
    add("| Description | Type | Owner | Issue |")
    add("| :-- | :-- | :-- | :-- |")
    add(f"| {TBD} | {TBD} (prevent, mitigate, detect or process) | {TBD} | {TBD} |")
    add("")

    add("## Lessons learned")
    add("")
    for heading in ("What went well", "What went wrong", "Where we got lucky"):
        add(f"### {heading}")
        add("")
        add(f"- {TBD}")
        add("")

    add("## Timeline")
    add("")
    add("| Time (UTC) | Event | Details |")
    add("| :-- | :-- | :-- |")
    for entry in timeline:
        event = _EVENT_TEXT.get(entry.kind, entry.kind)
        add(f"| {utc(entry.at, seconds=True, zone=False)} | {_cell(event)} | {_cell(_details(config, entry))} |")
    add("")

    add("## Escalation")
    add("")
    required = any(c.holds for c in criteria)
    add(
        "A postmortem is required: at least one of the seed's escalation criteria held."
        if required
        else "None of the seed's escalation criteria held for certain; the responder decides on the rest."
    )
    add("")
    add("| Criterion | Held |")
    add("| :-- | :-- |")
    for criterion in criteria:
        held = "yes" if criterion.holds else "no" if criterion.holds is False else f"{TBD} (responder decides)"
        add(f"| {criterion.text} | {held} |")
    notify = [*config.escalation.notify] if required else []
    if security:
        notify += [c for c in config.escalation.security_notify if c not in notify]
    contacts = [config.contacts[c] for c in notify if c in config.contacts]
    if contacts:
        add("")
        add("Notify: " + "; ".join(f"{c.role} ({c.name}, {c.via})" for c in contacts) + ".")
    add("")
    add("### Writes to PagerDuty's incident")
    add("")
    writes = _escalation_writes(timeline, rest_writes)
    if writes:
        add("| Queued (UTC) | Write | To or about | Outcome |")
        add("| :-- | :-- | :-- | :-- |")
        for queued_at, step, target, outcome in writes:
            when = utc(queued_at, seconds=True, zone=False)
            add(f"| {when} | {_STEP_TEXT.get(step, step)} | {_cell(target)} | {outcome} |")
    else:
        add("depmon queued no responder request, note or urgency change for this incident.")
    add("")

    add("## Recurrence")
    add("")
    noun = "incident" if earlier_incidents == 1 else "incidents"
    add(f"Recurrence: {earlier_incidents} earlier {noun} of {dep.name} recorded by depmon.")
    if earlier_incidents >= 1:
        plays = [config.playbooks[p] for p in config.escalation.recurrence_playbooks]
        where = "".join(f" ([{play.title}]({play.url}))" for play in plays)
        add(
            "It has happened before, so it may occur again: the seed asks to add the incident and the steps "
            f"to resolve it as a Mobile Incident Response Play{where}."
        )
    return "\n".join(lines) + "\n"


def print_postmortem(
    config: Config,
    dependency: str,
    incident_number: int | None,
    state_path: str | None,
    out: TextIO,
    *,
    err: TextIO | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    """Print the draft for the latest (or the `incident_number`th, 1-based) incident; 0, or 1 with a message."""
    err = sys.stderr if err is None else err
    if dependency not in config.dependencies:
        print(f"unknown dependency: {dependency} (known: {', '.join(config.dependencies)})", file=err)
        return EXIT_NO_INCIDENT
    path = state_path or config.monitor.state_path
    # The replicas' database, unless --state names a file.
    url = None if state_path or config.monitor.state_url is None else config.monitor.state_url.get_secret_value()
    if url is not None:
        path = redacted_url(url)
    # Opening a missing file would create an empty state file: refuse instead.
    elif not Path(path).is_file():
        print(f"{path}: no state file (depmon run records incidents there; see --state)", file=err)
        return EXIT_NO_INCIDENT
    try:
        with connect(url, path, config.monitor.environment) as store:
            incidents = store.incidents_of(dependency)
            if not incidents:
                print(f"{path}: no incident of {dependency} is recorded", file=err)
                return EXIT_NO_INCIDENT
            if incident_number is None:
                index = len(incidents) - 1
            elif 1 <= incident_number <= len(incidents):
                index = incident_number - 1
            else:
                noun = "incident" if len(incidents) == 1 else "incidents"
                print(
                    f"--incident {incident_number}: out of range ({dependency} has {len(incidents)} recorded {noun}, "
                    f"1 to {len(incidents)})",
                    file=err,
                )
                return EXIT_NO_INCIDENT
            incident = incidents[index]
            timeline = store.timeline(incident.id)
            ended = incident.resolved_at if incident.resolved_at is not None else float("inf")
            rest_writes = [
                row
                for row in store.outbox_events(incident.dedup_key)
                if row.destination == PAGERDUTY_REST and incident.opened_at <= row.created_at <= ended
            ]
    except (StoreError, sqlite3.Error) as exc:
        print(f"{path}: cannot read the state file ({exc})", file=err)
        return EXIT_NO_INCIDENT
    draft = render_postmortem(config, dependency, incident, timeline, index, clock(), rest_writes)
    out.write(Redactor(config.secret_values()).scrub(draft))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# Facts drawn from the timeline


def _impacted_features(incident: Incident, timeline: Iterable[TimelineEntry]) -> list[str]:
    """Every feature impacted at some point of the incident, in the order they were first recorded."""
    seen: dict[str, None] = {}
    for entry in timeline:
        seen.update(dict.fromkeys(str(f) for f in entry.data.get("features") or ()))
    seen.update(dict.fromkeys(incident.features))
    return list(seen)


def _evidence(timeline: Iterable[TimelineEntry]) -> list[dict[str, Any]]:
    """Every evidence item of the timeline, in timeline order."""
    return [item for entry in timeline for item in entry.data.get("evidence") or () if isinstance(item, dict)]


def _evidence_at(item: dict[str, Any]) -> float:
    at = item.get("at")
    return float(at) if isinstance(at, int | float) and at > 0 else float("inf")


def _latest_per_probe(evidence: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last recorded failing result of each probe, probes in the order they first failed."""
    latest: dict[str, dict[str, Any]] = {}
    for item in evidence:
        latest[str(item.get("probe"))] = item
    return list(latest.values())


def _escalation_writes(
    timeline: Iterable[TimelineEntry], rows: Sequence[OutboxEvent]
) -> list[tuple[float, str, str, str]]:
    """(queued at, step, target, outcome) of each escalation write, oldest first: the timeline says
    what was queued and when, the write's outbox row how it ended (each row matched once)."""
    remaining = list(rows)
    writes: list[tuple[float, str, str, str]] = []
    for entry in timeline:
        for item in entry.data.get("escalation") or ():
            if not isinstance(item, dict):
                continue
            step, target = str(item.get("step")), str(item.get("target"))
            row = next((r for r in remaining if (r.body.get("step"), r.body.get("target")) == (step, target)), None)
            if row is not None:
                remaining.remove(row)
            writes.append((entry.at, step, target, _write_outcome(row)))
    # A row without its timeline entry (an older depmon's) is still the incident's write.
    writes += [(r.created_at, str(r.body.get("step")), str(r.body.get("target")), _write_outcome(r)) for r in remaining]
    return sorted(writes, key=lambda write: write[0])


def _write_outcome(row: OutboxEvent | None) -> str:
    """How one write ended, from its outbox row: accepted, not_found, dropped, cancelled, or still queued."""
    if row is None:
        return "not recorded (its outbox row was pruned)"
    reason = f" ({_code(row.last_error)})" if row.last_error else ""
    if row.status == "accepted":
        return f"accepted at {utc(row.delivered_at, seconds=True, zone=False)}" if row.delivered_at else "accepted"
    if row.status == "dropped":
        # The sink's not_found message starts with its outcome (monitor/paging/sinks/pagerduty_rest.py).
        kind = "not_found" if (row.last_error or "").startswith("not_found") else "dropped"
        return f"{kind}{reason}"
    if row.status == "cancelled":
        return f"cancelled{reason}"
    if row.status == "dry_run":
        return "not sent (no PagerDuty REST client configured)"
    return f"still queued after {row.attempts} attempts{reason}" if row.attempts else "still queued"


def _evidence_text(item: dict[str, Any]) -> str:
    """`outcome `http_status` (`HTTP 503 from /health`)`: the upstream's words inside code spans."""
    detail = str(item.get("detail") or "").strip()
    outcome = f"outcome {_code(item.get('outcome'))}"
    return f"{outcome} ({_code(detail)})" if detail else outcome


def _details(config: Config, entry: TimelineEntry) -> str:
    """One timeline entry as a sentence: state, impacted features and evidence."""
    parts: list[str] = []
    if entry.data.get("state"):
        parts.append(f"state {entry.data['state']}")
    if entry.kind == "escalate":
        parts.append(f"open for {format_duration(config.monitor.significant_duration)} or more")
    names = [_feature_name(config, str(f)) for f in entry.data.get("features") or ()]
    if names:
        label = "features restored" if entry.kind == "resolve" else "features impacted"
        parts.append(f"{label}: {', '.join(names)}")
    for item in entry.data.get("evidence") or ():
        if isinstance(item, dict):
            parts.append(f"{_code(item.get('probe'))}: {_evidence_text(item)}")
    queued = [item for item in entry.data.get("escalation") or () if isinstance(item, dict)]
    if queued:
        texts = [f"{_STEP_TEXT.get(str(i.get('step')), i.get('step'))}: {i.get('target')}" for i in queued]
        parts.append(f"escalation queued: {'; '.join(texts)}")
    if entry.data.get("escalation_cancelled"):
        parts.append(f"escalation writes cancelled: {', '.join(map(str, entry.data['escalation_cancelled']))}")
    silence = entry.data.get("silence")
    if isinstance(silence, dict):
        parts.append(f"silence {silence.get('id')}: {_code(silence.get('reason'))}")
    if entry.data.get("note"):
        parts.append(_code(entry.data["note"]))
    return "; ".join(parts) or "-"


# ---------------------------------------------------------------------------------------------
# Config facts


def _feature_name(config: Config, feature_id: str) -> str:
    feature = config.features.get(feature_id)
    return feature.name if feature else _code(feature_id)


def _feature_impact(config: Config, feature_id: str) -> str:
    feature = config.features.get(feature_id)
    if feature is None:
        return f"{_code(feature_id)} (no longer in the config)"
    if feature.userbase_share <= 0:
        return f"{feature.name}: share of monthly users unknown"
    return f"{feature.name}: about {_percent(feature.userbase_share)}% of monthly users use {feature.name}"


def _dependency_names(config: Config, ids: Iterable[str]) -> str:
    return ", ".join(f"{config.dependencies[d].name} `{d}`" if d in config.dependencies else f"`{d}`" for d in ids)


# ---------------------------------------------------------------------------------------------
# Text


def _percent(share: float) -> int:
    return max(1, round(share * 100))


def _at_text(at: object) -> str:
    if isinstance(at, int | float) and at > 0:
        return utc(float(at), seconds=True)
    return _code(at) if at else "time not recorded"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (GitHub's tables take `\\|` inside code spans too)."""
    return " ".join(text.split()).replace("|", "\\|")


_BACKTICKS = re.compile(r"`+")


def _code(text: object) -> str:
    """Text recorded from outside (a probe's detail, a health body's `output`) as one code span.

    Inside a code span nothing renders: no link, image, raw HTML, autolink or emphasis, so an
    upstream cannot plant `[click](https://evil.example)` or `<img onerror=...>` in the draft.
    Whitespace is collapsed to keep it on one line; the fence is longer than any run of backticks
    inside, and a space pads content that starts or ends with one.
    """
    body = " ".join(str(text).split())
    fence = "`" * (max((len(run) for run in _BACKTICKS.findall(body)), default=0) + 1)
    pad = " " if body.startswith("`") or body.endswith("`") or not body else ""
    return f"{fence}{pad}{body}{pad}{fence}"
