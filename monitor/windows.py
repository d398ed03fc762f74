"""PagerDuty maintenance windows as the rest of depmon sees them (pure data, no I/O)."""

from __future__ import annotations

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
