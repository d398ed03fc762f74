"""PagerDuty maintenance windows and services as the rest of depmon sees them (pure data, no I/O)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """One PagerDuty maintenance window and the service ids it covers."""

    id: str
    start: datetime
    end: datetime
    description: str
    service_ids: tuple[str, ...]

    def is_open_at(self, now: datetime) -> bool:
        """True while `now` lies inside the window."""
        return self.start <= now < self.end


def services_in_maintenance(windows: list[MaintenanceWindow], now: datetime) -> dict[str, MaintenanceWindow]:
    """Service id -> the open window covering it (the one ending last, when several do)."""
    covering: dict[str, MaintenanceWindow] = {}
    for window in windows:
        if not window.is_open_at(now):
            continue
        for service in window.service_ids:
            if service not in covering or covering[service].end < window.end:
                covering[service] = window
    return covering


def windows_by_node(
    windows: list[MaintenanceWindow], now: datetime, owners: Mapping[str, Sequence[str]]
) -> dict[str, MaintenanceWindow]:
    """Dependency or feature id -> the open window covering it, through its PagerDuty service.

    `owners` maps a service id to the ids whose windows it carries (`Config.service_owners`);
    the cost is that of the windows and the services they cover, not of the config.
    """
    return {
        node: window
        for service, window in services_in_maintenance(windows, now).items()
        for node in owners.get(service, ())
    }


def stable_span(windows: list[MaintenanceWindow], now: datetime) -> tuple[float, float]:
    """The span [from, until) around `now`, in POSIX seconds, in which no window opens or closes.

    The windows in force stay the same while the clock stays inside it, so a caller checks two
    numbers instead of every window. Open-ended (infinite) on a side with no window edge.
    """
    after, before = math.inf, -math.inf
    moment = now.timestamp()
    for window in windows:
        for edge in (window.start.timestamp(), window.end.timestamp()):
            if edge > moment:
                after = min(after, edge)
            else:
                before = max(before, edge)
    return before, after


SERVICE_STATUSES = ("active", "warning", "critical", "maintenance", "disabled")
"""What PagerDuty's `service.status` can be: active (no open incident), warning and critical
(incidents open, low and high urgency), maintenance (in a window), disabled (pages nobody)."""


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """An owning team's own PagerDuty service as last known (the poller keeps one per service id).

    `since`: when it took this status (UNIX time), None when unknown. `observed`: `since` is the
    poll that first saw the status (the change happened between that poll and the one before),
    not PagerDuty's `last_incident_timestamp`. `read_at`: the poll that last read it.
    """

    status: str
    since: float | None
    observed: bool
    read_at: float
