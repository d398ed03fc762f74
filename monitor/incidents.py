"""Pure incident decisions and PagerDuty event content (SPEC section 7). No I/O, no clock.

    decide(open incidents, situation, now) -> [Decision]       what to send
    build_event(decision, context) -> Events API v2 body      what it says (no routing key)

One alert per root cause: a dependency down outside maintenance whose parents are not down.
The trigger is re-sent with the same dedup key (an alert update) when the set of impacted
features changes, and once when the incident passes `significant_duration`. Resolve when the
dependency is up (or degraded) again; a dependency still unknown (just restarted) or in a
maintenance window keeps its incident open.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from monitor.config import Config
from monitor.health import DependencyHealth, DependencyState
from monitor.impact import FeatureHealth, impacted_features
from monitor.results import ProbeResult
from monitor.windows import MaintenanceWindow

SUMMARY_LIMIT = 1024
HIGH_FREQUENCY_SHARE = 0.15  # VA: a feature used by at least 15% of monthly users is "high frequency"
EVENT_GROUP = "va-mobile-app"


class Action(enum.StrEnum):
    """What to do about an incident."""

    TRIGGER = "trigger"  # a new root cause
    UPDATE = "update"  # the impacted features changed: re-send the trigger
    ESCALATE = "escalate"  # open past significant_duration: re-send the trigger, escalated
    RESOLVE = "resolve"


@dataclass(frozen=True, slots=True)
class OpenIncident:
    """An incident depmon has paged for and not yet resolved."""

    dependency: str
    dedup_key: str
    opened_at: float
    features: tuple[str, ...]
    escalated: bool = False
    id: int | None = None  # the store's id, once persisted


@dataclass(frozen=True, slots=True)
class Decision:
    """One incident action with the facts it was decided on."""

    action: Action
    dependency: str
    dedup_key: str
    features: tuple[str, ...] = ()
    escalated: bool = False


def dedup_key(environment: str, dependency: str) -> str:
    """`depmon/<environment>/<dependency>`: the same across restarts and replicas."""
    return f"depmon/{environment}/{dependency}"


def decide(
    environment: str,
    open_incidents: Mapping[str, OpenIncident],
    dependencies: Mapping[str, DependencyHealth],
    features: Mapping[str, FeatureHealth],
    now: float,
    significant_duration: float,
) -> list[Decision]:
    """The actions that bring PagerDuty in line with the current states."""
    decisions: list[Decision] = []
    for dep, state in dependencies.items():
        if dep in open_incidents or state.state is not DependencyState.DOWN or state.cause is not None:
            continue
        decisions.append(
            Decision(Action.TRIGGER, dep, dedup_key(environment, dep), tuple(impacted_features(dep, features)))
        )
    for dep, incident in open_incidents.items():
        current_state = dependencies.get(dep)
        if current_state is None:  # removed from the config by a reload: nothing will ever resolve it
            decisions.append(Decision(Action.RESOLVE, dep, incident.dedup_key, incident.features, incident.escalated))
            continue
        state = current_state
        if state.health in (DependencyState.UP, DependencyState.DEGRADED):
            decisions.append(Decision(Action.RESOLVE, dep, incident.dedup_key, incident.features, incident.escalated))
            continue
        if state.health is not DependencyState.DOWN:
            continue  # unknown: wait for evidence either way
        current = tuple(impacted_features(dep, features))
        # A child down because of its parent keeps its own incident; its features now count under the
        # parent, so keep the last known list rather than announcing "0 features impacted".
        if state.cause is not None:
            current = incident.features
        due = not incident.escalated and now - incident.opened_at >= significant_duration
        if current != incident.features or due:
            action = Action.ESCALATE if due else Action.UPDATE
            decisions.append(Decision(action, dep, incident.dedup_key, current, incident.escalated or due))
    return decisions


# ---------------------------------------------------------------------------------------------
# Event content


@dataclass(frozen=True, slots=True)
class Criterion:
    """One of the seed's escalation criteria and whether it holds for this incident."""

    text: str
    holds: bool | None  # None: cannot be known by a monitor; the responder decides


@dataclass(frozen=True, slots=True)
class EventContext:
    """The facts an event is built from, gathered by the caller at decision time."""

    config: Config
    features: Mapping[str, FeatureHealth]
    evidence: Sequence[tuple[str, ProbeResult]]  # (probe name, last failing result)
    started_at: float
    upcoming_windows: Sequence[MaintenanceWindow] = field(default_factory=tuple)


def is_security_relevant(evidence: Sequence[tuple[str, ProbeResult]]) -> bool:
    """A TLS failure (expired, untrusted, wrong host) follows the Security Incident Procedure."""
    return any(result.security_relevant for _, result in evidence)


def severity(config: Config, features: Sequence[str], security: bool) -> str:
    """`critical` for a high-frequency feature or a security issue, else `error`."""
    high = any(config.features[f].userbase_share >= HIGH_FREQUENCY_SHARE for f in features)
    return "critical" if high or security else "error"


def escalation_criteria(
    config: Config, dependency: str, features: Sequence[str], escalated: bool, security: bool
) -> list[Criterion]:
    """The seed's six criteria for notifying the Product Owner and writing a postmortem."""
    dep = config.dependencies[dependency]
    return [
        Criterion("Incident requires the use of a playbook", bool(dep.playbooks)),
        Criterion(
            "Occurs for a significant portion of the userbase",
            any(config.features[f].userbase_share >= HIGH_FREQUENCY_SHARE for f in features),
        ),
        Criterion("Persists for a significant period of time", escalated),
        Criterion("Involves the security of a system or a Veteran's data", security),
        # An external system is fixed by the team that owns it: that is out-of-team coordination.
        Criterion("Requires out-of-team coordination to fix", dep.channel is not None),
        Criterion("Requires an out-of-band deployment", None),
    ]


def incident_playbooks(config: Config, dependency: str, security: bool) -> list[str]:
    """The playbook ids of an incident: the dependency's, then the security ones when relevant."""
    dep = config.dependencies[dependency]
    return list(dict.fromkeys([*dep.playbooks, *(config.escalation.security_playbooks if security else [])]))


def page_links(config: Config, dependency: str, security: bool) -> list[tuple[str, str]]:
    """(text, href) in page order: playbooks first, then the docs, the PagerDuty service page, `monitor.links`."""
    dep = config.dependencies[dependency]
    links = [
        (config.playbooks[p].title, config.playbooks[p].url) for p in incident_playbooks(config, dependency, security)
    ]
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


def build_event(decision: Decision, ctx: EventContext) -> dict[str, Any]:
    """The Events API v2 body for a decision (without the routing key, which the sender adds)."""
    config = ctx.config
    if decision.action is Action.RESOLVE:
        return {"event_action": "resolve", "dedup_key": decision.dedup_key}

    dep = config.dependencies[decision.dependency]
    security = is_security_relevant(ctx.evidence)
    features = decision.features
    criteria = escalation_criteria(config, decision.dependency, features, decision.escalated, security)
    postmortem = any(c.holds for c in criteria)
    notify = list(config.escalation.notify) if postmortem else []
    if security:
        notify += [c for c in config.escalation.security_notify if c not in notify]
    playbook_ids = incident_playbooks(config, decision.dependency, security)
    failing = ctx.evidence[0][1].outcome if ctx.evidence else "error"
    links = [{"href": href, "text": text} for text, href in page_links(config, decision.dependency, security)]

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
                "detail": result.detail,
                "at": _iso(result.at),
            }
            for probe, result in ctx.evidence
        ],
        "started_at": _iso(ctx.started_at),
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
        "upcoming_maintenance": [
            {"start": w.start.isoformat(), "end": w.end.isoformat(), "description": w.description}
            for w in ctx.upcoming_windows
        ],
    }
    return {
        "event_action": "trigger",
        "dedup_key": decision.dedup_key,
        "client": "depmon",
        "payload": {
            "summary": summary(config, decision.dependency, features),
            "severity": severity(config, features, security),
            "source": f"depmon/{config.monitor.environment}",
            "component": decision.dependency,
            "group": EVENT_GROUP,
            "class": str(failing),
            "custom_details": details,
        },
        "links": links,
    }


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")
