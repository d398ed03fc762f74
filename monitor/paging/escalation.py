"""Escalation that reaches people (SPEC 11.2), pure: which PagerDuty REST writes an incident needs now.

    escalation_writes(config, facts, done) -> [RestWrite]   what to write, each once per incident
    trigger_rest_writes(config, facts) -> [{method, path, body}]   what a fresh trigger would write
    slack_mentions(config, facts) -> [member id]             who the Slack posts mention

An Events API trigger re-sent with an open alert's dedup key only lands in that alert's log: it
notifies nobody. So when the seed's criteria hold, depmon also writes to PagerDuty's incident
(the one the trigger opened, found by `incident_key` = dedup key): a responder request per
notified contact with a `pagerduty_user` (and the owning team's escalation policy once
"Requires out-of-team coordination" holds), a note each time the set of criteria met grows, and
`urgency: high` once the incident persists past `significant_duration`.

Each write has a `key` saying what it does (`responders:user:PABC123`, `criterion:<text>`,
`urgency:high`); `done` holds the keys of the writes already queued for this incident, so a
write is made once per incident, across decisions and restarts. A write's `path` holds
`{incident_id}`: PagerDuty's incident id is known only when the sink finds the incident.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

from monitor.config import Config
from monitor.paging.event_content import IncidentFacts, escalation_criteria, notified_contacts, summary

__all__ = [
    "INCIDENT_ID",
    "OUT_OF_TEAM",
    "RestWrite",
    "Step",
    "escalation_off_reasons",
    "escalation_writes",
    "rest_writes_enabled",
    "slack_mentions",
    "trigger_rest_writes",
    "written_keys",
]

Step = Literal["responders", "note", "urgency"]
INCIDENT_ID = "{incident_id}"  # where the sink puts PagerDuty's incident id in a write's path
OUT_OF_TEAM = "Requires out-of-team coordination to fix"
_MESSAGE_LIMIT = 1000  # characters of a responder request's message or a note (PagerDuty shows them whole)


@dataclass(frozen=True, slots=True)
class RestWrite:
    """One REST write to an incident: `step` (the metric's label), `method`, `path` (with
    `{incident_id}`), `body`, `target` (who or what it names, for the timeline), and `covers`:
    the keys it makes done for this incident."""

    step: Step
    method: str
    path: str
    body: dict[str, Any]
    target: str
    covers: tuple[str, ...]

    def row(self) -> dict[str, Any]:
        """The outbox row's body: everything the sink needs, and what `written_keys` reads back."""
        return {
            "step": self.step,
            "method": self.method,
            "path": self.path,
            "body": self.body,
            "target": self.target,
            "covers": list(self.covers),
        }


def rest_writes_enabled(config: Config) -> bool:
    """REST writes need an API token and PagerDuty's `From` header (a user's email address)."""
    return bool(config.pagerduty.api_token.get_secret_value() and config.pagerduty.from_email)


def escalation_off_reasons(config: Config) -> list[tuple[str, str]]:
    """What of escalation is off under this config, and why: ("rest", ...) no REST write at all,
    ("responders", ...) no responder request. Said at start and by `validate --strict`."""
    pd = config.pagerduty
    reasons: list[tuple[str, str]] = []
    if not pd.api_token.get_secret_value():
        reasons.append(("rest", "pagerduty.api_token is empty: no responder request, note or urgency is written"))
    if not pd.from_email:
        reasons.append(
            (
                "rest",
                "pagerduty.from_email is empty: PagerDuty requires a From header, so no responder request, "
                "note or urgency is written",
            )
        )
    if not pd.requester_id:
        reasons.append(("responders", "pagerduty.requester_id is empty: no responder request is made"))
    return reasons


def written_keys(rows: Collection[dict[str, Any]]) -> frozenset[str]:
    """The keys covered by outbox rows already queued (`RestWrite.row` bodies): a restarted daemon's `done`."""
    return frozenset(str(key) for row in rows for key in row.get("covers") or ())


def slack_mentions(config: Config, facts: IncidentFacts) -> list[str]:
    """The Slack member ids of the contacts this incident notifies (`<@U...>` in its posts)."""
    users = (config.contacts[c].slack_user for c in notified_contacts(config, facts) if c in config.contacts)
    return list(dict.fromkeys(user for user in users if user))


def _clip(text: str) -> str:
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


def escalation_writes(config: Config, facts: IncidentFacts, done: Collection[str] = ()) -> list[RestWrite]:
    """The REST writes this incident needs now that `done` does not cover, in the order they go:
    responder requests, the note, the urgency (rules: the module docstring)."""
    if not rest_writes_enabled(config):
        return []
    met = [c.text for c in escalation_criteria(config, facts) if c.holds]
    notified = notified_contacts(config, facts)
    dep = config.dependencies[facts.dependency]
    headline = summary(config, facts.dependency, facts.features)
    writes: list[RestWrite] = []
    requester = config.pagerduty.requester_id
    if requester:
        message = _clip(f"depmon asks for your help: {headline}. Criteria met: {'; '.join(met) or 'security'}.")
        targets: list[tuple[str, str, str, str]] = []  # (key, id, reference type, who)
        for contact_id in notified:
            contact = config.contacts.get(contact_id)
            if contact is not None and contact.pagerduty_user:
                targets.append(
                    (
                        f"responders:user:{contact.pagerduty_user}",
                        contact.pagerduty_user,
                        "user_reference",
                        contact.role,
                    )
                )
        if OUT_OF_TEAM in met and dep.pagerduty_escalation_policy:
            policy = dep.pagerduty_escalation_policy
            targets.append((f"responders:policy:{policy}", policy, "escalation_policy_reference", f"{dep.name} team"))
        for key, target_id, reference, who in targets:
            if key in done:
                continue
            body: dict[str, Any] = {
                "requester_id": requester,
                "message": message,
                # PagerDuty's schema draws a target as {type, id}; its example, its documentation and
                # its Go client wrap it: the wrapped form is what PagerDuty takes.
                "responder_request_targets": [{"responder_request_target": {"id": target_id, "type": reference}}],
            }
            path = f"/incidents/{INCIDENT_ID}/responder_requests"
            writes.append(RestWrite("responders", "POST", path, body, f"{who} ({target_id})", (key,)))
    new = [text for text in met if f"criterion:{text}" not in done]
    if new:
        roles = [config.contacts[c].role for c in notified if c in config.contacts]
        content = f"depmon: escalation criteria met: {'; '.join(met)}."
        content += f" New: {'; '.join(new)}." if len(new) < len(met) else ""
        content += f" Notify: {', '.join(roles)}; postmortem required." if roles else " Postmortem required."
        covers = tuple(f"criterion:{text}" for text in met)
        path = f"/incidents/{INCIDENT_ID}/notes"
        writes.append(RestWrite("note", "POST", path, {"note": {"content": _clip(content)}}, "; ".join(new), covers))
    if facts.escalated and "urgency:high" not in done:
        # Persistence is itself a criterion: high urgency whatever the business hours said at the trigger.
        update: dict[str, Any] = {"incident": {"type": "incident_reference", "urgency": "high"}}
        writes.append(RestWrite("urgency", "PUT", f"/incidents/{INCIDENT_ID}", update, "high", ("urgency:high",)))
    return writes


def trigger_rest_writes(config: Config, facts: IncidentFacts) -> list[dict[str, Any]]:
    """`{method, path, body}` of each REST write a new incident with these facts would make
    (`depmon page --json`'s `pagerduty_rest`)."""
    return [{"method": w.method, "path": w.path, "body": w.body} for w in escalation_writes(config, facts)]
