"""`depmon page DEPENDENCY [--json]`: what an outage of DEPENDENCY would send now, sent nowhere (SPEC 11.5).

The preview takes the pager's own path on a simulated outage, so it cannot say something the
pager would not:

    the real engine (`monitor.state.live.Engine`, thresholds of one) takes one result per probe:
        every probe of DEPENDENCY fails, every other probe answers
    -> the pure `decide` (monitor.paging.decisions) on the engine's snapshot: the trigger
    -> `build_event` (monitor.paging.event_content): the Events v2 body
    -> `slack_channels` and `slack_message` (monitor.paging.slack): each channel's post

It reads the config alone: no maintenance window, silence or earlier incident is taken into
account (none is read), nothing is sent and nothing is stored. The routing key is never shown:
`"<routing key>"` stands in its place. `pagerduty_rest` (the REST writes that follow a trigger,
SPEC 11.2) comes from `rest_writes`, empty until depmon makes such writes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from monitor.config import Config
from monitor.metrics import Metrics
from monitor.paging.decisions import Action, Decision, Policy, Situation, decide
from monitor.paging.escalation import RestWrite, escalation_writes
from monitor.paging.event_content import EventContext, build_event, incident_facts
from monitor.paging.slack import slack_channels, slack_message
from monitor.results import Outcome, ProbeResult
from monitor.state.live import Engine, Snapshot
from monitor.text import iso_utc, utc

__all__ = ["ROUTING_KEY_SHOWN", "PagePreview", "preview_page", "rest_writes", "run_page"]

EXIT_OK, EXIT_USAGE = 0, 2
ROUTING_KEY_SHOWN = "<routing key>"  # what the preview shows instead of the secret
SIMULATED_FAILURE = "simulated outage (depmon page): nothing was probed"


@dataclass(frozen=True, slots=True)
class PagePreview:
    """What an outage of `dependency` would send at `at`.

    `pagerduty` is the Events v2 body, routing key shown as `ROUTING_KEY_SHOWN`; None when the
    outage pages nobody (every probe of the dependency is non-critical: it is degraded, never down).
    `slack` is (channel, Block Kit message) per channel that has a webhook.
    """

    dependency: str
    at: float
    pagerduty: dict[str, Any] | None
    slack: list[tuple[str, dict[str, Any]]]
    pagerduty_rest: list[RestWrite]

    def as_json(self) -> dict[str, Any]:
        """The `--json` document: `{"dependency", "at", "pagerduty", "slack", "pagerduty_rest"}`."""
        return {
            "dependency": self.dependency,
            "at": iso_utc(self.at),
            "pagerduty": self.pagerduty,
            "slack": [{"channel": channel, "message": message} for channel, message in self.slack],
            "pagerduty_rest": [{"method": w.method, "path": w.path, "body": dict(w.body)} for w in self.pagerduty_rest],
        }


def simulated_outage(config: Config, dependency: str, now: float) -> Snapshot:
    """The engine's snapshot once every probe of `dependency` has failed and every other has answered.

    Thresholds of one (`one_shot`), as `depmon check`: one result per probe decides. The others
    answer first, so the outage is the only change, as it would be in a running daemon.
    """
    engine = Engine(config, Metrics(), clock=lambda: now, one_shot=True)
    probes = list(config.iter_probes())  # the enabled ones: a disabled probe never runs
    for dep_id, spec in probes:
        if dep_id != dependency:
            engine.record(dep_id, spec.name, ProbeResult.success("simulated", at=now))
    for dep_id, spec in probes:
        if dep_id == dependency:
            engine.record(dependency, spec.name, ProbeResult.failure(Outcome.CONNECT, SIMULATED_FAILURE, at=now))
    return engine.snapshot()


def rest_writes(config: Config, decision: Decision, snapshot: Snapshot) -> list[RestWrite]:
    """The PagerDuty REST writes that follow `decision`'s trigger (SPEC 11.2: responder requests, the
    note, the urgency), from the same code that queues them for the pager."""
    dependency = decision.dependency
    evidence = snapshot.evidence(dependency)
    facts = incident_facts(dependency, decision.features, snapshot.features, evidence, decision.escalated)
    return escalation_writes(config, facts)


def preview_page(config: Config, dependency: str, now: float) -> PagePreview:
    """What an outage of `dependency` (a configured id) would send at `now`, decided as the pager decides."""
    snapshot = simulated_outage(config, dependency, now)
    situation = Situation(snapshot.dependencies, snapshot.features, snapshot.dependency_since)
    triggers = [
        d for d in decide(Policy.from_config(config), {}, situation, now) if d.dependency == dependency
    ]  # no open incident, window or silence: a trigger, or nothing when the outage is no root cause
    if not triggers:
        return PagePreview(dependency, now, None, [], [])
    (decision,) = triggers
    assert decision.action is Action.TRIGGER
    context = EventContext(config, snapshot.features, snapshot.evidence(dependency), now, now=now)
    event = build_event(decision, context)
    name = config.dependencies[dependency].name
    message = slack_message(str(decision.action), name, event)
    return PagePreview(
        dependency,
        now,
        {"routing_key": ROUTING_KEY_SHOWN, **event},
        [(channel, message) for channel in slack_channels(config, dependency)],
        rest_writes(config, decision, snapshot),
    )


def render_page(config: Config, preview: PagePreview) -> str:
    """The preview for people: summary, severity, impacted features, playbooks, escalation, Slack."""
    dep = config.dependencies[preview.dependency]
    event = preview.pagerduty
    if event is None:
        return (
            f"an outage of {dep.name} [{preview.dependency}] pages nobody: none of its probes is critical "
            "(it is degraded, never down)"
        )
    payload = event["payload"]
    details = payload["custom_details"]
    escalation = details["escalation"]
    features = [f"{f['name']} ({f['state']})" for f in details["impacted_features"]]
    notify = "; ".join(escalation["notify"]) or "nobody beyond on-call"
    routing = (
        "PagerDuty"
        if config.pagerduty.routing_key.get_secret_value()
        else "the outbox only (pagerduty.routing_key is empty: a dry run)"
    )
    channels = [channel for channel, _ in preview.slack]
    postmortem = "required" if escalation["postmortem_required"] else "not required"
    lines = [
        payload["summary"],
        f"  would go to: {routing}, dedup key {event['dedup_key']}",
        f"  severity: {payload['severity']} (VA {details['va_severity']}), class {payload['class']}",
        f"  impacted features: {', '.join(features) or 'none'}",
        f"  playbooks: {', '.join(details['playbooks']) or 'none'}",
        f"  escalation: notify {notify}; postmortem {postmortem}",
    ]
    lines += [f"    criterion met: {criterion}" for criterion in escalation["criteria_met"]]
    lines.append(
        f"  Slack: {', '.join(channels)}" if channels else "  Slack: none (no channel of this page has a webhook)"
    )
    lines += [f"  PagerDuty REST: {w.method} {w.path}" for w in preview.pagerduty_rest]
    lines.append(
        f"nothing was sent: a preview at {utc(preview.at)} from the config alone "
        "(no maintenance window, silence or earlier incident taken into account)"
    )
    return "\n".join(lines)


def run_page(
    config: Config,
    dependency: str,
    as_json: bool,
    out: TextIO,
    err: TextIO,
    clock: Callable[[], float] = time.time,
) -> int:
    """Print what an outage of `dependency` would send now; 2 for an unknown dependency."""
    if dependency not in config.dependencies:
        known = ", ".join(sorted(config.dependencies))
        print(f"depmon page: unknown dependency {dependency!r} (known: {known})", file=err)
        return EXIT_USAGE
    preview = preview_page(config, dependency, clock())
    if as_json:
        json.dump(preview.as_json(), out, indent=2, ensure_ascii=False)
        out.write("\n")
    else:
        print(render_page(config, preview), file=out)
    return EXIT_OK
