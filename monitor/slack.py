"""Slack: the same facts as a page, posted to the team's channels through incoming webhooks (issue 13).

    slack_channels(config, dependency) -> [channel]                   pure: where a page is posted
    slack_message(action, dependency name, event) -> Block Kit body   pure: what it says
    SlackSender.send(destination, body) -> Delivery                   I/O: one bounded POST

Messages go through the durable outbox like PagerDuty events (each channel and dedup key its own
ordered queue, retried, never lost); a channel without a webhook gets nothing. A message carries
the page's facts (features, VA severity, postmortem, playbook links, the maintenance command),
never upstream text, evidence, a secret or anyone's data. Slack's answer decides: 200 accepted;
a 4xx whose body is one of Slack's own error codes (`channel_not_found`, `invalid_payload`, ...)
is final (`dropped`); 429 waits `Retry-After`; anything else (5xx, a proxy's 403 without Slack's
words, network errors, timeouts) is retried.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
import httpx

from monitor.config import Config
from monitor.pagerduty import Delivery

__all__ = ["SLACK_PREFIX", "SlackSender", "slack_channels", "slack_message"]

SLACK_PREFIX = "slack:"  # outbox destination of a channel: `slack:#va-mobile-app-alerts`
_ANSWER_LIMIT = 4096
# Slack's documented incoming-webhook errors: the message or the hook itself is wrong, a retry cannot help.
_SLACK_ERRORS = frozenset(
    {
        "invalid_payload",
        "user_not_found",
        "channel_not_found",
        "channel_is_archived",
        "action_prohibited",
        "posting_to_general_channel_denied",
        "no_service",
        "no_service_id",
        "no_team",
        "team_disabled",
        "invalid_token",
        "no_active_hooks",
        "too_many_attachments",
    }
)
_LABELS = {"trigger": "Down", "update": "Update", "escalate": "Escalated", "resolve": "Resolved"}


def slack_channels(config: Config, dependency: str) -> list[str]:
    """The channels a dependency's page is posted to: the team's escalation channels and the
    owning team's channel, each only when a webhook is configured for it."""
    dep = config.dependencies.get(dependency)
    candidates = [*config.escalation.channels, *([dep.channel] if dep and dep.channel else [])]
    return [c for c in dict.fromkeys(candidates) if config.slack.webhook(c)]


def _mrkdwn(text: str) -> str:
    """Slack's three control characters escaped (https://api.slack.com/reference/surfaces/formatting)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(action: str, name: str, event: Mapping[str, Any]) -> dict[str, Any]:
    """A compact Block Kit message for one decision; `event` is the PagerDuty event it goes with."""
    label = _LABELS.get(action, action)
    payload = event.get("payload") if isinstance(event.get("payload"), dict) else None
    if payload is None:  # a resolve carries no payload: the message names the dependency
        text = f"{label}: {name} is up again; its PagerDuty incident is resolved"
        return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": _mrkdwn(text)}}]}
    details = payload.get("custom_details") or {}
    escalation = details.get("escalation") or {}
    features = ", ".join(str(f.get("name")) for f in details.get("impacted_features") or []) or "none"
    lines = [
        f"*Features impacted:* {_mrkdwn(features)}",
        f"*Severity:* {_mrkdwn(str(details.get('va_severity', '?')))} ({_mrkdwn(str(payload.get('severity')))})",
        f"*Postmortem required:* {'yes' if escalation.get('postmortem_required') else 'no'}",
    ]
    if escalation.get("notify"):
        lines.append(f"*Notify:* {_mrkdwn('; '.join(str(n) for n in escalation['notify']))}")
    links = [
        f"<{link['href']}|{_mrkdwn(str(link['text']))}>"
        for link in event.get("links") or []
        if isinstance(link, dict) and str(link.get("href", "")).startswith("https://")
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{label}: {name}"[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}},
    ]
    if links:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": "*Playbooks and links:* " + ", ".join(links)}}
        )
    command = details.get("maintenance_command")
    if command:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"If it will last: `{_mrkdwn(str(command))}`"}]}
        )
    return {"text": str(payload.get("summary", f"{label}: {name}"))[:3000], "blocks": blocks}


class SlackSender:
    """Posts outbox messages to their channel's incoming webhook; one bounded attempt each.

    `webhooks` maps channel -> URL (secrets: never logged, never in a `Delivery` message).
    """

    def __init__(self, webhooks: Mapping[str, str], timeout: float = 10.0) -> None:
        self._webhooks = {channel: url for channel, url in webhooks.items() if url}
        self._timeout = timeout
        self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=timeout)

    def has(self, destination: str) -> bool:
        """True when the destination's channel has a webhook."""
        return destination.removeprefix(SLACK_PREFIX) in self._webhooks

    async def send(self, destination: str, body: Mapping[str, Any]) -> Delivery:
        """POST one message; the answer decides accepted, dropped or retry."""
        channel = destination.removeprefix(SLACK_PREFIX)
        url = self._webhooks.get(channel)
        if url is None:
            return Delivery("dropped", None, f"no Slack webhook for {channel} any more")
        try:
            with anyio.fail_after(self._timeout):
                async with self._client.stream("POST", url, json=dict(body)) as response:
                    answer = b""
                    async for chunk in response.aiter_raw():
                        answer += chunk
                        if len(answer) > _ANSWER_LIMIT:
                            break
        except (httpx.HTTPError, TimeoutError) as exc:
            return Delivery("retry", None, f"no answer from Slack for {channel} ({exc.__class__.__name__})")
        text = answer[:200].decode("utf-8", "replace").strip()
        status = response.status_code
        if status == 200:
            return Delivery("accepted", status, f"posted to {channel}")
        message = f"Slack answered HTTP {status} for {channel}" + (f": {text}" if text in _SLACK_ERRORS else "")
        if status == 429:
            retry_after = response.headers.get("retry-after", "")
            return Delivery("retry", status, message, float(retry_after) if retry_after.isdigit() else None)
        if 400 <= status < 500 and text in _SLACK_ERRORS:
            return Delivery("dropped", status, message)
        return Delivery("retry", status, message)

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._client.aclose()
