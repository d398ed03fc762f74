"""PagerDuty REST writes to an incident: responder requests, notes, urgency (destination `pagerduty_rest`).

A row's body is a `monitor.paging.escalation.RestWrite.row()` with the incident's `incident_key`
(its dedup key) and `opened_at` (depmon's incident: a re-trigger after a resolve is a new one).
The outbox delivers it after its trigger was accepted (`after_id`), in order per incident, and
holds it while the dependency is in a window or silenced (`waits_for_people`).

Each attempt first finds PagerDuty's incident (`IncidentsClient.find`; the id is kept for the
incident's later writes), then writes with `{incident_id}` in the path replaced. PagerDuty creates
incidents a moment after it accepts a trigger, so "none yet" is retried; when PagerDuty has
answered "none" for `find_within` seconds (2 minutes), the write is final: dropped, counted as
`not_found` (alert `DepmonEscalationFailed`). A PagerDuty that does not answer (5xx, 429,
timeouts) only delays: that time does not count toward the 2 minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from monitor.pagerduty.clients import Delivery
from monitor.pagerduty.incidents import IncidentsClient
from monitor.paging.escalation import INCIDENT_ID
from monitor.paging.sinks import Destination, SinkKind

__all__ = ["FIND_WITHIN_SECONDS", "REST", "PagerDutyRestSink"]

FIND_WITHIN_SECONDS = 120.0

REST = SinkKind(
    name="pagerduty_rest",
    event="escalation_write",
    skipped="escalation_write_skipped",
    skip_reason="no pagerduty.api_token or pagerduty.from_email: not written",
    counter=lambda metrics: metrics.escalations,
    labels=lambda _action, body: {"step": str(body.get("step", ""))},
    waits_for_people=True,
)


class PagerDutyRestSink:
    """Writes escalation rows to their PagerDuty incident through one `IncidentsClient`.

    `from_email` is PagerDuty's required `From` header; `clock` (monotonic) times the 2-minute search.
    """

    def __init__(
        self,
        client: IncidentsClient,
        from_email: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        find_within: float = FIND_WITHIN_SECONDS,
    ) -> None:
        self._client = client
        self._from_email = from_email
        self._clock = clock
        self._find_within = find_within
        self._incidents: dict[tuple[str, float], str] = {}  # (incident key, opened at) -> PagerDuty's id
        self._missing_since: dict[tuple[str, float], float] = {}  # first "none" answer, on `clock`

    def can_deliver(self, destination: Destination) -> bool:
        """Always: one destination, configured when there is a sink at all."""
        return True

    async def send(self, destination: Destination, body: Mapping[str, Any]) -> Delivery:
        """Find the incident (once), then write; the answers decide accepted, dropped, not_found or retry."""
        key = str(body.get("incident_key", ""))
        incident = (key, float(body.get("opened_at") or 0.0))
        incident_id = self._incidents.get(incident)
        if incident_id is None:
            found = await self._client.find(key)
            if found.failure is not None:
                return found.failure
            if found.incident_id is None:
                since = self._missing_since.setdefault(incident, self._clock())
                waited = self._clock() - since
                if waited >= self._find_within:
                    message = f"not_found: PagerDuty has no open incident {key} after {waited:.0f} s"
                    return Delivery("dropped", None, message, outcome="not_found")
                return Delivery("retry", None, f"PagerDuty has no incident {key} yet (it creates them a moment later)")
            incident_id = self._incidents[incident] = found.incident_id
            self._missing_since.pop(incident, None)
        path = str(body.get("path", "")).replace(INCIDENT_ID, incident_id)
        delivery = await self._client.write(
            str(body.get("method", "POST")), path, dict(body.get("body") or {}), self._from_email
        )
        if delivery.http_status == 404:  # merged or gone since: look it up again
            self._incidents.pop(incident, None)
        return delivery

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()
