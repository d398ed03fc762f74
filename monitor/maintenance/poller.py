"""The maintenance-window poller: reads PagerDuty's open windows every interval.

A successful poll hands the windows to `on_windows` and publishes
`depmon_maintenance_windows_open{dependency}` and
`depmon_maintenance_last_success_timestamp_seconds`. A failed poll changes nothing: the last
windows known stay in force (PagerDuty being unreachable must not end a maintenance and page
people for a planned outage), and the growing age of the last success tells the dashboards.
Service ids PagerDuty does not know are logged (`maintenance_bad_service_id`, once per poll) and
kept in `bad_service_ids`; the other services keep working. `depmon_maintenance_service_ok{service}`
is 1 for each id PagerDuty answered for in the last poll, 0 for an unknown id or after a failed
poll; `status()` gives the same for /status.

Each poll also reads every service's own status (`GET /services/{id}`: active, warning, critical,
maintenance, disabled), so a page can say whether the owning team already knows. The last known
status of each service is kept (a failed read changes nothing) and given by `service_status(id)`;
`since` is PagerDuty's `last_incident_timestamp` for warning and critical, else the poll that first
saw the status change (unknown when it was already so at the first read), or the start of the
open window that put the service in maintenance.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol

import anyio
import anyio.abc
import structlog

from monitor.errors import MaintenanceUnavailable
from monitor.maintenance.records import MaintenanceWindow, ServiceStatus
from monitor.metrics import Metrics
from monitor.pagerduty.clients import ServiceRead, WindowsResult

__all__ = ["MaintenancePoller", "WindowsSource"]

log = structlog.get_logger("depmon.maintenance")


class WindowsSource(Protocol):
    """Where windows come from (`monitor.pagerduty.clients.MaintenanceClient` in the daemon)."""

    async def open_windows(self, service_ids: Sequence[str]) -> WindowsResult:
        """Open and upcoming windows of the services; raises `MaintenanceUnavailable`."""
        ...

    async def service_statuses(self, service_ids: Sequence[str]) -> dict[str, ServiceRead | str]:
        """Each service's own status, or the reason it could not be read; never raises for one service."""
        ...


class MaintenancePoller:
    """Polls `client` for the windows of `services` (PagerDuty service id -> dependency or feature id).

    Attributes, for `/status`, `depmon maintenance` and tests: `last_windows` (the windows in
    force), `last_success_at` (UNIX time, None before the first success), `bad_service_ids`
    (refused by PagerDuty in the last successful poll), `last_error` (the reason of the last
    failed poll, None after a success).
    """

    def __init__(
        self,
        client: WindowsSource,
        services: Mapping[str, str],
        interval: float,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        on_windows: Callable[[list[MaintenanceWindow]], Awaitable[None]] | None = None,
    ) -> None:
        self._client = client
        self._services = dict(services)
        self._interval = interval
        self._metrics = metrics
        self._clock = clock
        self._on_windows = on_windows
        self.last_windows: list[MaintenanceWindow] = []
        self.last_success_at: float | None = None
        self.bad_service_ids: list[str] = []
        self.last_error: str | None = None
        self._service_statuses: dict[str, ServiceStatus] = {}

    async def poll_once(self) -> list[MaintenanceWindow]:
        """Read the windows once and apply them; raises `MaintenanceUnavailable` (nothing changed then)."""
        result = await self._client.open_windows(list(self._services))
        now = self._clock()
        self.bad_service_ids = list(result.bad_service_ids)
        if result.bad_service_ids:
            log.warning(
                "maintenance_bad_service_id",
                service_ids=self.bad_service_ids,
                covers=sorted({self._services.get(service, service) for service in self.bad_service_ids}),
            )
        self.last_windows = list(result.windows)
        self.last_success_at = now
        for service in self._services:
            self._metrics.maintenance_service_ok.labels(service).set(0 if service in self.bad_service_ids else 1)
        self.last_error = None
        self._publish(now)
        if self._on_windows is not None:
            await self._on_windows(list(result.windows))
        await self.poll_statuses()
        return list(result.windows)

    def service_status(self, service_id: str) -> ServiceStatus | None:
        """The last known status of a service's own PagerDuty service; None before a first successful read."""
        return self._service_statuses.get(service_id)

    async def poll_statuses(self) -> None:
        """Read every service's own status once; a service that cannot be read keeps its last known one.

        The ids PagerDuty refused in the windows poll are not asked (they are logged there already).
        """
        read = await self._client.service_statuses([s for s in self._services if s not in self.bad_service_ids])
        now = self._clock()
        for service, answer in read.items():
            if isinstance(answer, str):
                log.warning("service_status_unreadable", service=service, reason=answer)
                continue
            self._service_statuses[service] = self._status(service, answer, now)

    def _status(self, service: str, answer: ServiceRead, now: float) -> ServiceStatus:
        before = self._service_statuses.get(service)
        if answer.status in ("warning", "critical") and answer.last_incident_at is not None:
            return ServiceStatus(answer.status, answer.last_incident_at, False, now)
        if before is not None and before.status == answer.status:
            return ServiceStatus(answer.status, before.since, before.observed, now)
        if answer.status == "maintenance":
            moment = datetime.fromtimestamp(now, UTC)
            starts = [
                w.start.timestamp() for w in self.last_windows if service in w.service_ids and w.is_open_at(moment)
            ]
            if starts:
                return ServiceStatus(answer.status, min(starts), False, now)
        if before is None:
            return ServiceStatus(answer.status, None, False, now)
        return ServiceStatus(answer.status, now, True, now)

    def status(self) -> dict[str, object]:
        """The poller's state for /status: when it last read PagerDuty, why not since, each service id."""
        ok = self.last_error is None and self.last_success_at is not None
        return {
            "last_success_at": self.last_success_at,
            "last_error": self.last_error,
            "services": {
                service: {"covers": covers, "ok": ok and service not in self.bad_service_ids}
                for service, covers in self._services.items()
            },
        }

    def _publish(self, now: float) -> None:
        """Windows in effect now per dependency (0 for the ones without), and the success time."""
        moment = datetime.fromtimestamp(now, UTC)
        counts = dict.fromkeys(self._services.values(), 0)
        for window in self.last_windows:
            if not window.is_open_at(moment):
                continue  # upcoming: it does not cover anything yet
            for covered in {self._services[service] for service in window.service_ids if service in self._services}:
                counts[covered] += 1
        for dependency, count in counts.items():
            self._metrics.maintenance_windows_open.labels(dependency=dependency).set(count)
        self._metrics.maintenance_last_success.set(now)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Poll every `interval` seconds (fixed rate) until cancelled. Reports ready at once."""
        task_status.started()
        while True:
            started = anyio.current_time()
            try:
                await self.poll_once()
            except MaintenanceUnavailable as exc:
                self.last_error = exc.reason
                for service in self._services:
                    self._metrics.maintenance_service_ok.labels(service).set(0)
                log.warning(
                    "maintenance_poll_failed",
                    reason=exc.reason,
                    windows_kept=len(self.last_windows),
                    last_success_at=self.last_success_at,
                )
            except Exception:
                log.exception("maintenance_loop_failed")
                self._metrics.loop_errors.labels(loop="maintenance").inc()
            await anyio.sleep(max(0.0, self._interval - (anyio.current_time() - started)))
