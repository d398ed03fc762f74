"""PagerDuty event content (SPEC sections 7, 10.5), pure: an incident's facts (criteria, va_severity,
urgency, playbooks, links) and the Events API v2 body built from them (no routing key)."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from monitor.config import Config
from monitor.maintenance.app_graph import app_banners
from monitor.maintenance.records import MaintenanceWindow, ServiceStatus
from monitor.paging.decisions import Action, Decision
from monitor.results import ProbeResult
from monitor.state.impact import FeatureHealth, FeatureState
from monitor.text import iso_utc, utc, utc_date

SUMMARY_LIMIT = 1024
EVENT_BYTES_LIMIT = 512 * 1024  # PagerDuty refuses a larger event with a 400
_EVENT_BYTES_BUDGET = EVENT_BYTES_LIMIT - 4096  # room for the routing key and the note of the cut
_DETAIL_LIMIT = 2000  # characters of one evidence detail in an event
HIGH_FREQUENCY_SHARE = 0.15  # VA: a feature used by at least 15% of monthly users is "high frequency"
EVENT_GROUP = "va-mobile-app"


# ---------------------------------------------------------------------------------------------
# Event content


@dataclass(frozen=True, slots=True)
class Criterion:
    """One of the seed's escalation criteria and whether it holds for this incident."""

    text: str
    holds: bool | None  # None: cannot be known by a monitor; the responder decides


@dataclass(frozen=True, slots=True)
class EventContext:
    """The facts an event is built from, gathered by the caller at decision time.

    `now` is when the event is built (business hours are judged at it); `earlier_incidents`
    counts the dependency's previous incidents (a recurrence attaches the Plays).
    """

    config: Config
    features: Mapping[str, FeatureHealth]
    evidence: Sequence[tuple[str, ProbeResult]]  # (probe name, last failing result)
    started_at: float
    upcoming_windows: Sequence[MaintenanceWindow] = field(default_factory=tuple)
    now: float | None = None
    earlier_incidents: int = 0
    owning_team_status: ServiceStatus | None = None  # the dependency's own PagerDuty service, as last polled
    # Traffic and the active probes disagree (SPEC 11.3, `monitor.state.disagreement`), or None.
    disagreement: Mapping[str, Any] | None = None
    # The dependency's `app_banners` as the caller keeps them per config (None: computed here, O(config)).
    app_banners: Sequence[str] | None = None


@dataclass(frozen=True, slots=True)
class IncidentFacts:
    """What is known about one incident; the escalation criteria, severity and playbooks follow from it.

    The page, the resolve's timeline and the postmortem all judge from these facts, so they
    agree: `security` is the probes' own `security_relevant` flag, recorded in the timeline.
    """

    dependency: str
    features: tuple[str, ...]  # impacted (degraded or down)
    features_down: tuple[str, ...]  # of those, the ones taken fully down
    security: bool = False
    escalated: bool = False  # open past `significant_duration`
    earlier_incidents: int = 0


def is_security_relevant(evidence: Sequence[tuple[str, ProbeResult]]) -> bool:
    """A TLS failure (expired, untrusted, wrong host) follows the Security Incident Procedure."""
    return any(result.security_relevant for _, result in evidence)


def incident_facts(
    dependency: str,
    features: Sequence[str],
    states: Mapping[str, FeatureHealth],
    evidence: Sequence[tuple[str, ProbeResult]],
    escalated: bool,
    earlier_incidents: int = 0,
) -> IncidentFacts:
    """The facts of an incident at decision time, from the feature states and the evidence."""
    down = tuple(f for f in features if f in states and states[f].state is FeatureState.DOWN)
    return IncidentFacts(
        dependency, tuple(features), down, is_security_relevant(evidence), escalated, earlier_incidents
    )


def high_frequency(config: Config, facts: IncidentFacts) -> bool:
    """VA: an impacted feature used by at least 15% of monthly users."""
    return any(config.features[f].userbase_share >= HIGH_FREQUENCY_SHARE for f in facts.features)


def high_impact(facts: IncidentFacts) -> bool:
    """VA: a feature taken down (not only degraded), or a security-relevant failure."""
    return bool(facts.features_down) or facts.security


def va_severity(config: Config, facts: IncidentFacts) -> str:
    """`sev-1` high impact and high frequency, `sev-2` one of the two, `sev-3` neither (SPEC 10.5)."""
    count = int(high_impact(facts)) + int(high_frequency(config, facts))
    return ("sev-3", "sev-2", "sev-1")[count]


def severity(config: Config, facts: IncidentFacts) -> str:
    """`critical` for a high-frequency feature or a security issue, else `error` (SPEC 7)."""
    return "critical" if high_frequency(config, facts) or facts.security else "error"


def paged_severity(config: Config, facts: IncidentFacts, now: float) -> str:
    """The severity sent: outside `business_hours` only sev-1 stays as it is, the rest is `warning`.

    A default PagerDuty service maps `warning` to low urgency: nobody is woken for a sev-2 at
    3 a.m. when the team covers business hours only.
    """
    hours = config.monitor.business_hours
    if hours is None or hours.contains(now) or va_severity(config, facts) == "sev-1":
        return severity(config, facts)
    return "warning"


def escalation_criteria(config: Config, facts: IncidentFacts) -> list[Criterion]:
    """The seed's six criteria, as facts about this incident (the rules: config/README.md)."""
    dep = config.dependencies[facts.dependency]
    return [
        Criterion("Incident requires the use of a playbook", bool(specific_playbooks(config, facts))),
        Criterion("Occurs for a significant portion of the userbase", high_frequency(config, facts)),
        Criterion("Persists for a significant period of time", facts.escalated),
        Criterion("Involves the security of a system or a Veteran's data", facts.security),
        # The owning team must be engaged once it lasts: known only when the incident persists.
        Criterion("Requires out-of-team coordination to fix", facts.escalated and dep.channel is not None),
        Criterion("Requires an out-of-band deployment", None),  # never guessed: the responder decides
    ]


def postmortem_required(config: Config, facts: IncidentFacts) -> bool:
    """The seed: any criterion that holds requires notifying the Product Owner and a postmortem."""
    return any(c.holds for c in escalation_criteria(config, facts))


def notified_contacts(config: Config, facts: IncidentFacts) -> list[str]:
    """The contact ids an incident notifies: `escalation.notify` when a criterion holds, and the
    `security_notify` contacts of a security-relevant failure (the page's `notify`, the Slack
    mentions and the responder requests all follow from this one list)."""
    notify = list(config.escalation.notify) if postmortem_required(config, facts) else []
    if facts.security:
        notify += [c for c in config.escalation.security_notify if c not in notify]
    return notify


def specific_playbooks(config: Config, facts: IncidentFacts) -> list[str]:
    """The playbooks this incident calls for beyond the dependency's general ones: the security
    playbooks of a security-relevant failure, and those of the impacted features (the VAOS
    playbook when Appointments is impacted)."""
    ids = [*(config.escalation.security_playbooks if facts.security else [])]
    for feature in facts.features:
        ids += config.features[feature].playbooks
    return list(dict.fromkeys(ids))


def incident_playbooks(config: Config, facts: IncidentFacts) -> list[str]:
    """Every playbook of an incident, in page order: the dependency's, the specific ones, the
    postmortem's when one is required, the Plays when the dependency has paged before."""
    dep = config.dependencies[facts.dependency]
    ids = [*dep.playbooks, *specific_playbooks(config, facts)]
    if postmortem_required(config, facts):
        ids += config.escalation.postmortem_playbooks
    if facts.earlier_incidents:
        ids += config.escalation.recurrence_playbooks
    return list(dict.fromkeys(ids))


def page_links(config: Config, facts: IncidentFacts) -> list[tuple[str, str]]:
    """(text, href) in page order: playbooks first, then the docs, the PagerDuty service page, `monitor.links`."""
    dep = config.dependencies[facts.dependency]
    links = [(config.playbooks[p].title, config.playbooks[p].url) for p in incident_playbooks(config, facts)]
    if dep.docs:
        links.append((f"{dep.name} integration docs", dep.docs))
    if dep.pagerduty_service:
        href = f"{config.pagerduty.web_url.rstrip('/')}/service-directory/{dep.pagerduty_service}"
        links.append((f"{dep.name} in the PagerDuty service directory", href))
    links += [(link.text, link.href) for link in config.monitor.links]
    return links


def summary(config: Config, dependency: str, features: Sequence[str]) -> str:
    """`EVSS down: 4 app features impacted (Claims, Letters, ...) [production]`, at most 1024 chars."""
    name = config.dependencies[dependency].name
    env = config.monitor.environment
    names = [config.features[f].name for f in features]
    noun = "app feature" if len(names) == 1 else "app features"
    head = f"{name} down: {len(names)} {noun} impacted"
    tail = f" [{env}]"
    listed = f" ({', '.join(names)})" if names else ""
    text = head + listed + tail
    if len(text) > SUMMARY_LIMIT:
        room = SUMMARY_LIMIT - len(head) - len(tail) - len(" (...)")
        text = f"{head} ({', '.join(names)[: max(room, 0)]}...){tail}"
    return text


def signal_evidence(result: ProbeResult) -> dict[str, Any]:
    """A traffic signal's reading as evidence: its value, query and the point's time (empty for other kinds)."""
    signal = result.signal
    if signal is None:
        return {}
    point_at = iso_utc(signal.point_at) if signal.point_at is not None else None
    return {"value": signal.value, "query": signal.query[:_DETAIL_LIMIT], "point_at": point_at}


def build_event(decision: Decision, ctx: EventContext) -> dict[str, Any]:
    """The Events API v2 body for a decision (without the routing key, which the sender adds)."""
    config = ctx.config
    if decision.action is Action.RESOLVE:
        return {"event_action": "resolve", "dedup_key": decision.dedup_key}

    dep = config.dependencies[decision.dependency]
    features = decision.features
    facts = incident_facts(
        decision.dependency, features, ctx.features, ctx.evidence, decision.escalated, ctx.earlier_incidents
    )
    security = facts.security
    criteria = escalation_criteria(config, facts)
    postmortem = any(c.holds for c in criteria)
    notify = notified_contacts(config, facts)
    playbook_ids = incident_playbooks(config, facts)
    failing = ctx.evidence[0][1].outcome if ctx.evidence else "error"
    links = [{"href": href, "text": text} for text, href in page_links(config, facts)]
    now = ctx.now if ctx.now is not None else ctx.started_at

    details: dict[str, Any] = {
        "dependency": decision.dependency,
        "dependency_name": dep.name,
        "environment": config.monitor.environment,
        "impacted_features": [
            {"id": f, "name": config.features[f].name, "state": str(ctx.features[f].state)}
            for f in features
            if f in ctx.features
        ],
        "evidence": [
            {
                "probe": probe,
                "outcome": str(result.outcome),
                "detail": result.detail[:_DETAIL_LIMIT],
                "at": iso_utc(result.at),
                **signal_evidence(result),
            }
            for probe, result in ctx.evidence
        ],
        "disagreement": dict(ctx.disagreement) if ctx.disagreement else None,
        "started_at": iso_utc(ctx.started_at),
        "va_severity": va_severity(config, facts),
        "playbooks": [config.playbooks[p].title for p in playbook_ids],
        "escalation": {
            "notify": [
                f"{config.contacts[c].role} ({config.contacts[c].name}, {config.contacts[c].via})" for c in notify
            ],
            "postmortem_required": postmortem,
            "criteria_met": [c.text for c in criteria if c.holds],
            "escalated": decision.escalated,
            "security_relevant": security,
            "channels": list(config.escalation.channels),
        },
        "owning_team_channel": dep.channel,
        "flapping": decision.flapping,
        "upcoming_maintenance": [
            {"start": w.start.isoformat(), "end": w.end.isoformat(), "description": w.description}
            for w in ctx.upcoming_windows
        ],
        "owning_team_status": owning_team_sentence(config, decision.dependency, ctx.owning_team_status, now),
        "maintenance_command": maintenance_command(config, decision.dependency, features),
        # SPEC 11.1: what Veterans see if that window is opened (empty: no banner in the app).
        "app_banners": list(ctx.app_banners)
        if ctx.app_banners is not None
        else app_banners(config, decision.dependency),
    }
    return fit_event(
        {
            "event_action": "trigger",
            "dedup_key": decision.dedup_key,
            "client": "depmon",
            "payload": {
                "summary": summary(config, decision.dependency, features),
                "severity": paged_severity(config, facts, now),
                "source": f"depmon/{config.monitor.environment}",
                "component": decision.dependency,
                "group": EVENT_GROUP,
                "class": str(failing),
                "custom_details": details,
            },
            "links": links,
        }
    )


USER_MESSAGE_PREFIX = "USER_MESSAGE:"  # vets-api shows the app only the text after it, as TITLE|BODY
WINDOW_DESCRIPTION_LIMIT = 255  # vets-api: a window's description, prefix included, at most 255 characters
MAINTENANCE_DURATION = "2h"  # what the page's command proposes; the responder edits it


def maintenance_message(config: Config, dependency: str, features: Sequence[str]) -> str:
    """`TITLE|BODY` of the app's downtime banner for an outage: the impacted features by name.

    Fits `WINDOW_DESCRIPTION_LIMIT` once prefixed: names that do not fit become `and N more`.
    """
    name = config.dependencies[dependency].name
    body = f"{name} is down; these features may not work until it is back"
    room = WINDOW_DESCRIPTION_LIMIT - len(USER_MESSAGE_PREFIX) - len(body) - len("|")
    names = [config.features[f].name for f in features]
    shown = len(names)
    while True:
        listed = ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if shown < len(names) else "")
        title = f"{listed or name} unavailable"
        if len(title) <= room or shown == 0:
            return f"{title[:room]}|{body}"
        shown -= 1


def maintenance_command(config: Config, dependency: str, features: Sequence[str]) -> str | None:
    """The `depmon maintenance open` command that puts up the app's downtime banner (None: no PagerDuty service)."""
    if not config.dependencies[dependency].pagerduty_service:
        return None
    message = maintenance_message(config, dependency, features)
    quoted = f'"{message}"' if not set(message) & set('"$`\\!') else shlex.quote(message)
    return f"depmon maintenance open {shlex.quote(dependency)} --for {MAINTENANCE_DURATION} --message {quoted}"


def owning_team_sentence(config: Config, dependency: str, status: ServiceStatus | None, now: float) -> str:
    """Whether the owning team already knows: its own PagerDuty service's status, and since when."""
    dep = config.dependencies[dependency]
    if not dep.pagerduty_service:
        return f"{dep.name} has no PagerDuty service in the config: the owning team's status is unknown"
    own = f"{dep.name}'s own PagerDuty service"
    if status is None:
        return f"{own} ({dep.pagerduty_service}) has not been read yet: the owning team's status is unknown"
    if status.status == "active":
        return f"no incident open on the owning team's service ({own} is active)"
    when = ""
    if status.since is not None:
        text = utc(status.since, date=utc_date(status.since) != utc_date(now))
        when = f" (seen so since {text})" if status.observed else f" (since {text})"
    meaning = {
        "warning": ": a low-urgency incident is open there",
        "critical": ": the owning team has a high-urgency incident open",
        "maintenance": ": the owning team has it in a maintenance window",
        "disabled": ": it pages nobody",
    }.get(status.status, "")
    return f"{own} is {status.status}{when}{meaning}"


_SELF_EFFECTS = {
    "overloaded": "while this holds, dependency failures are inconclusive: they count toward no threshold and "
    "page nobody",
    "store_stalled": "while this holds, no decision is recorded: dependency pages wait until the store answers, "
    "then go out once; this page was sent directly, around the store",
}


def build_self_event(decision: Decision, environment: str, condition: str, reason: str) -> dict[str, Any]:
    """The page of depmon's own trouble: overloaded, cannot see out, or a store that cannot commit.
    Never a dependency's page."""
    if decision.action is Action.RESOLVE:
        return {"event_action": "resolve", "dedup_key": decision.dedup_key}
    text = f"{reason} [{environment}]"
    return {
        "event_action": "trigger",
        "dedup_key": decision.dedup_key,
        "client": "depmon",
        "payload": {
            "summary": text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 3] + "...",
            "severity": "critical",
            "source": f"depmon/{environment}",
            "component": "depmon",
            "group": EVENT_GROUP,
            "class": condition,
            "custom_details": {
                "condition": condition,
                "reason": reason,
                "environment": environment,
                "effect": _SELF_EFFECTS.get(condition, _SELF_EFFECTS["overloaded"]),
                "escalated": decision.escalated,
                "flapping": decision.flapping,
            },
        },
    }


def event_size(event: Mapping[str, Any]) -> int:
    """Bytes of the event as JSON (what PagerDuty counts against its 512 KB limit)."""
    return len(json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode())


# Lists of custom_details that can grow without bound, the least useful to a responder first.
_CUTTABLE = ("upcoming_maintenance", "evidence", "impacted_features")


def fit_event(event: dict[str, Any]) -> dict[str, Any]:
    """The event, its long lists cut until it fits under PagerDuty's 512 KB; the cut is said.

    `custom_details.truncated` lists what was cut (`upcoming_maintenance: 12 of 5000 shown`).
    """
    if event_size(event) <= _EVENT_BYTES_BUDGET:
        return event
    details = event["payload"]["custom_details"]
    cuts: list[str] = []
    for key in _CUTTABLE:
        items = details.get(key)
        if not isinstance(items, list) or not items:
            continue
        total = len(items)
        while items and event_size(event) > _EVENT_BYTES_BUDGET:
            items = items[: len(items) // 2]
            details[key] = items
        if len(items) < total:
            cuts.append(f"{key}: {len(items)} of {total} shown")
        if event_size(event) <= _EVENT_BYTES_BUDGET:
            break
    details["truncated"] = "; ".join(cuts) or "nothing cut"
    return event
