"""A fake Slack on loopback: incoming webhooks per channel that record what is posted, and can fail.

    with FakeSlack() as slack:
        url = slack.webhook_url("#va-mobile-app-alerts")   # give it to depmon's config
        slack.fail_with(500, times=3)                      # a Slack outage, or
        slack.fail_with(404, body="channel_not_found")     # Slack's own error, final
        slack.posts                                        # [(channel, message, received_at)]

A webhook answers 200 `ok` like Slack's. A programmed failure answers its status with `body` as
text (Slack answers its errors as plain text), and a 429 carries `Retry-After`.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any, Self

from monitor.sim.lifecycle import Started
from monitor.sim.loopback import LoopbackServer, Request, Response

__all__ = ["FakeSlack", "SlackPost"]


@dataclass(frozen=True, slots=True)
class SlackPost:
    """One message a webhook accepted."""

    channel: str
    message: dict[str, Any]
    received_at: float

    @property
    def text(self) -> str:
        """The message's fallback text (what a notification shows)."""
        return str(self.message.get("text", ""))


class FakeSlack(Started):
    """Incoming webhooks on 127.0.0.1; see the module docstring."""

    def __init__(self) -> None:
        self._fault_body = "server_error"
        self._server = LoopbackServer(fault_response=self._fault)
        self._lock = threading.Lock()
        self._channels: dict[str, str] = {}  # path -> channel
        self._posts: list[SlackPost] = []

    def start(self) -> Self:
        """Start the webhooks' server; returns the fake."""
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop the webhooks' server."""
        self._server.stop()

    def webhook_url(self, channel: str) -> str:
        """The webhook URL of a channel (created on first use)."""
        with self._lock:
            path = next((p for p, c in self._channels.items() if c == channel), None)
            if path is None:
                path = f"/services/T0000/B{len(self._channels):04d}/fakefakefakefake"
                self._channels[path] = channel
                self._server.route("POST", path, self._post)
        return f"{self._server.url}{path}"

    @property
    def posts(self) -> list[SlackPost]:
        """Every accepted message, oldest first."""
        with self._lock:
            return list(self._posts)

    def posts_to(self, channel: str) -> list[SlackPost]:
        """The accepted messages of one channel, oldest first."""
        return [post for post in self.posts if post.channel == channel]

    @property
    def requests(self) -> list[Request]:
        """Every request received, failed ones included."""
        return self._server.requests

    def fail_with(self, status: int, times: int | None = None, body: str = "server_error") -> None:
        """Answer every post with `status` and `body`, `times` times or until `clear_faults()`."""
        self._fault_body = body
        self._server.fail_with(status, times)

    def clear_faults(self) -> None:
        """Answer normally again."""
        self._server.clear_faults()

    def _fault(self, status: int) -> Response:
        headers = (("Retry-After", "1"),) if status == 429 else ()
        return Response(status, self._fault_body.encode(), content_type="text/plain", headers=headers)

    def _post(self, request: Request) -> Response:
        channel = self._channels.get(request.path, "?")
        try:
            message = json.loads(request.body)
        except ValueError:
            return Response(400, b"invalid_payload", content_type="text/plain")
        if not isinstance(message, dict) or not (message.get("text") or message.get("blocks")):
            return Response(400, b"invalid_payload", content_type="text/plain")
        with self._lock:
            self._posts.append(SlackPost(channel, message, request.received_at))
        return Response(200, b"ok", content_type="text/plain")
