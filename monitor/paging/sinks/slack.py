"""Slack: pages posted to the team's channels through incoming webhooks (destination `slack:<channel>`).

What a message says is `monitor.paging.slack`'s (pure); this module posts it, one bounded POST an
attempt. A channel without a webhook cannot be delivered to: its rows are logged as
`slack_message_skipped` and not sent. Slack's answer decides: 200 accepted; a 4xx whose body is
one of Slack's own error codes (`channel_not_found`, `invalid_payload`, ...) is final (`dropped`);
429 waits `Retry-After`; anything else (5xx, a proxy's 403 without Slack's words, network errors,
timeouts) is retried.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import anyio
import httpx

from monitor.pagerduty.clients import Delivery
from monitor.paging.sinks import Destination, SinkKind
from monitor.proxies import DIRECT, Link

__all__ = ["SLACK", "SlackSink"]

SLACK = SinkKind(
    name="slack",
    event="slack_message",
    skipped="slack_message_skipped",
    skip_reason="no webhook for the channel",
    counter=lambda metrics: metrics.slack_messages,
)
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


def _direct(url: str) -> Link:
    return DIRECT


class SlackSink:
    """Posts outbox messages to their channel's incoming webhook; one bounded attempt each.

    `webhooks` maps channel -> URL (secrets: never logged, never in a `Delivery` message).
    `link_for(url)` says how a webhook is reached (its proxy, its TLS trust): one client per
    distinct link. The clients never read the environment themselves (`trust_env=False`): the
    caller resolved the proxy variables into the links.
    """

    def __init__(
        self, webhooks: Mapping[str, str], timeout: float = 10.0, link_for: Callable[[str], Link] = _direct
    ) -> None:
        self._webhooks = {channel: url for channel, url in webhooks.items() if url}
        self._timeout = timeout
        links = {channel: link_for(url) for channel, url in self._webhooks.items()}
        self._clients = {
            link: httpx.AsyncClient(
                follow_redirects=False, trust_env=False, timeout=timeout, proxy=link.proxy, verify=link.verify
            )
            for link in set(links.values())
        }
        self._client_of = {channel: self._clients[link] for channel, link in links.items()}

    def can_deliver(self, destination: Destination) -> bool:
        """True when the destination's channel has a webhook."""
        return destination.target in self._webhooks

    async def send(self, destination: Destination, body: Mapping[str, Any]) -> Delivery:
        """POST one message; the answer decides accepted, dropped or retry."""
        channel = destination.target
        url = self._webhooks.get(channel)
        if url is None:
            return Delivery("dropped", None, f"no Slack webhook for {channel} any more")
        try:
            with anyio.fail_after(self._timeout):
                async with self._client_of[channel].stream("POST", url, json=dict(body)) as response:
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
        for client in self._clients.values():
            await client.aclose()
