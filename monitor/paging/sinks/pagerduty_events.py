"""PagerDuty Events API v2: the pages themselves (destination `pagerduty`).

The sink adapts `monitor.pagerduty.clients.EventsSender`, the boundary around the official
`pagerduty` package (its retries switched off, its exceptions translated into a `Delivery`), to
the outbox's `Sink`. Without a routing key the runtime gives no sink: events are logged as
`would_page` and not sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monitor.pagerduty.clients import Delivery, EventsSender
from monitor.paging.sinks import Destination, SinkKind

__all__ = ["EVENTS", "PagerDutyEventsSink"]

EVENTS = SinkKind(
    name="pagerduty",
    event="pagerduty_event",
    skipped="would_page",
    skip_reason="no routing key: logged, not sent",
    counter=lambda metrics: metrics.pagerduty_events,
)


class PagerDutyEventsSink:
    """Sends the outbox's PagerDuty events through one `EventsSender` (which adds the routing key)."""

    def __init__(self, sender: EventsSender) -> None:
        self._sender = sender

    def can_deliver(self, destination: Destination) -> bool:
        """Always: PagerDuty has one destination, configured when there is a sink at all."""
        return True

    async def send(self, destination: Destination, body: Mapping[str, Any]) -> Delivery:
        """Send one event once; the answer decides accepted, dropped or retry."""
        return await self._sender.send(body)
