"""Slack: the same facts as a page, for the team's channels (issue 13). Pure: no I/O.

    slack_channels(config, dependency) -> [channel]                   where a page is posted
    slack_message(action, dependency name, event) -> Block Kit body   what it says

Messages go through the durable outbox like PagerDuty events (each channel and dedup key its own
ordered queue, retried, never lost) and are posted by `monitor.paging.sinks.slack`; a channel
without a webhook gets nothing. A message carries
the page's facts (features, VA severity, postmortem, playbook links, the maintenance command),
never upstream text, evidence, a secret or anyone's data (SPEC 11.4): depmon's own page says its
condition, not the reason, which quotes a canary's failure. And whatever a field holds, every
string of a message is escaped on the way out (`_finished`) unless it is `Mrkdwn`, markup depmon
wrote itself around escaped values: nothing can mention `<!channel>` or link `<https://x|y>`
but depmon.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any, LiteralString

from monitor.config import Config

__all__ = ["Mrkdwn", "escape", "link", "mrkdwn", "slack_channels", "slack_message"]

_LABELS = {"trigger": "Down", "update": "Update", "escalate": "Escalated", "resolve": "Resolved"}
_TEXT_LIMIT = 3000  # Slack's limit of a section's text (and a sane one for the fallback text)
_HEADER_LIMIT = 150  # Slack's limit of a header's text
# depmon's own trouble (build_self_event's `condition`), said in depmon's words.
_SELF_CONDITIONS = {
    "cannot_see_out": "cannot see out: its canaries or its own network fail, not the dependencies",
    "overloaded": "cannot keep up with its probe schedule",
    "store_stalled": "cannot write to its store in time",
}


def slack_channels(config: Config, dependency: str) -> list[str]:
    """The channels a dependency's page is posted to: the team's escalation channels and the
    owning team's channel, each only when a webhook is configured for it."""
    dep = config.dependencies.get(dependency)
    candidates = [*config.escalation.channels, *([dep.channel] if dep and dep.channel else [])]
    return [c for c in dict.fromkeys(candidates) if config.slack.webhook(c)]


class Mrkdwn(str):
    """Slack markup depmon wrote itself: its `<...>` forms (links, mentions of its own contacts) are meant.

    Made only by `mrkdwn` and `link`, from depmon's own templates with every value escaped; any
    other string in a message is text, escaped by `slack_message` on the way out.
    """

    __slots__ = ()


# Control characters and line or paragraph separators would break a line in two; format characters
# (bidirectional overrides, zero-width ones) would make a text read otherwise than it is.
_BREAKS = frozenset({"Cc", "Zl", "Zp"})


def escape(text: str) -> Mrkdwn:
    """Text as Slack shows it literally: `&`, `<`, `>` escaped (so no `<!channel>`, `<@U...>` or
    `<https://x|y>` can come alive), control characters made spaces, format characters dropped
    (https://api.slack.com/reference/surfaces/formatting#escaping)."""
    clean = "".join(
        " " if category in _BREAKS else "" if category == "Cf" else char
        for char, category in ((char, unicodedata.category(char)) for char in text)
    )
    return Mrkdwn(clean.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


def mrkdwn(template: LiteralString, *values: str) -> Mrkdwn:
    """`template`, depmon's own words and markup, with each `{}` a value: escaped, unless `Mrkdwn` already."""
    return Mrkdwn(template.format(*(v if isinstance(v, Mrkdwn) else escape(v) for v in values)))


def link(href: str, text: str) -> Mrkdwn:
    """`<href|text>` for an https link; only the text when the address could end the link early."""
    if not href.startswith("https://") or any(c in href for c in "<>| ") or not href.isprintable():
        return escape(text)
    return mrkdwn("<{}|{}>", href, text)


def _cut(text: str, limit: int) -> str:
    """At most `limit` characters, never ending inside an escape (`&am`)."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    amp = cut.rfind("&")
    return cut[:amp] if amp != -1 and ";" not in cut[amp:] else cut


def _finished(value: Any, limit: int = _TEXT_LIMIT) -> Any:
    """The message as sent: every string that is not `Mrkdwn` escaped, whatever field it is in
    (fallback `text`, blocks, attachments), so no path can forget it; texts cut to Slack's limits."""
    if isinstance(value, Mrkdwn):
        return _cut(str(value), limit)
    if isinstance(value, str):
        return _cut(str(escape(value)), limit)
    if isinstance(value, Mapping):
        inner = _HEADER_LIMIT if value.get("type") == "header" else limit
        return {key: _finished(item, inner) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finished(item, limit) for item in value]
    return value


def _self_message(label: str, details: Mapping[str, Any]) -> dict[str, Any]:
    """depmon's own page in depmon's words: its condition, never the reason (a canary's failure
    detail is upstream text); the reason stays in PagerDuty and on /status."""
    condition = str(details.get("condition", ""))
    what = _SELF_CONDITIONS.get(condition) or f"is in trouble ({condition})"
    environment = str(details.get("environment", ""))
    lines = [
        mrkdwn("*depmon {}* [{}]", what, environment),
        mrkdwn("*While this holds:* {}", str(details.get("effect", ""))),
        Mrkdwn("*Why:* depmon's `/status` page and the PagerDuty incident"),
    ]
    return {
        "text": f"{label}: depmon {what} [{environment}]",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": f"{label}: depmon"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": Mrkdwn("\n".join(lines))}},
        ],
    }


def slack_message(action: str, name: str, event: Mapping[str, Any], mentions: Sequence[str] = ()) -> dict[str, Any]:
    """A compact Block Kit message for one decision; `event` is the PagerDuty event it goes with.

    Only depmon's words: the dependency, its features, severity, postmortem, notify, playbook
    links and the maintenance command, all from the config; never a probe's detail. And every
    text escaped on the way out (`_finished`), whichever field it lands in. `mentions`: the Slack
    member ids of the contacts this page notifies (SPEC 11.2), each `<@U...>` on the notify line.
    """
    message: dict[str, Any] = _finished(_message(_LABELS.get(action, action), name, event, mentions))
    return message


def _message(label: str, name: str, event: Mapping[str, Any], mentions: Sequence[str] = ()) -> dict[str, Any]:
    payload = event.get("payload") if isinstance(event.get("payload"), dict) else None
    if payload is None:  # a resolve carries no payload: the message names the dependency
        text = f"{label}: {name} is up again; its PagerDuty incident is resolved"
        return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}
    details = payload.get("custom_details") or {}
    if "condition" in details:  # depmon's own page (build_self_event)
        return _self_message(label, details)
    escalation = details.get("escalation") or {}
    features = ", ".join(str(f.get("name")) for f in details.get("impacted_features") or []) or "none"
    lines = [
        mrkdwn("*Features impacted:* {}", features),
        mrkdwn("*Severity:* {} ({})", str(details.get("va_severity", "?")), str(payload.get("severity"))),
        mrkdwn("*Postmortem required:* {}", "yes" if escalation.get("postmortem_required") else "no"),
    ]
    if escalation.get("notify"):
        lines.append(mrkdwn("*Notify:* {}", "; ".join(str(n) for n in escalation["notify"])))
        if mentions:  # member ids from the config, checked at load (`U0123ABCD`): depmon's own markup
            lines.append(mrkdwn("*Attention:* {}", Mrkdwn(" ".join(mrkdwn("<@{}>", user) for user in mentions))))
    links = [
        link(str(item.get("href", "")), str(item.get("text", "")))
        for item in event.get("links") or []
        if isinstance(item, dict) and str(item.get("href", "")).startswith("https://")
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{label}: {name}"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": Mrkdwn("\n".join(lines))}},
    ]
    if links:
        listed = Mrkdwn(", ".join(links))
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn("*Playbooks and links:* {}", listed)}}
        )
    command = details.get("maintenance_command")
    if command:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": mrkdwn("If it will last: `{}`", str(command))}]}
        )
    # The summary of a dependency's page is the config's names and counts (incidents.summary).
    return {"text": str(payload.get("summary", f"{label}: {name}")), "blocks": blocks}
