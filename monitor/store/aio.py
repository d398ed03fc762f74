"""The store for async code: every blocking store method, run in one worker thread at a time."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import anyio
import anyio.to_thread

from monitor.store.base import SqlStore
from monitor.store.records import (
    Action,
    Incident,
    IncidentWrite,
    OutboxEvent,
    ReplicaReport,
    ReplicaView,
    Silence,
    TimelineEntry,
)
from monitor.store.sqlite import SQLiteStore

__all__ = ["Store"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


class Store:
    """The store for async code: each method runs its blocking twin in one worker thread.

    `Store(path)` (SQLite) or `Store(backend)` is cheap and does no I/O; the connection is opened
    on the first call. `store.sync` is the blocking face of the same store, for code without an
    event loop.
    """

    def __init__(self, state: str | os.PathLike[str] | SqlStore) -> None:
        self.sync: SqlStore = state if isinstance(state, SqlStore) else SQLiteStore(state)
        self._limiter = anyio.CapacityLimiter(1)

    @property
    def state_path(self) -> str:
        """The SQLite file path (or ":memory:"), or the PostgreSQL URL without its password."""
        return self.sync.name

    async def _call(self, method: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        return await anyio.to_thread.run_sync(functools.partial(method, *args, **kwargs), limiter=self._limiter)

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Closing must happen even when the caller is being cancelled.
        with anyio.CancelScope(shield=True):
            await self.close()

    async def close(self) -> None:
        """Close the file (after any call in progress)."""
        await self._call(self.sync.close)

    async def enqueue(
        self, dedup_key: str, action: Action, body: dict[str, Any], at: float, destination: str = "pagerduty"
    ) -> int:
        """See `SqlStore.enqueue`."""
        return await self._call(self.sync.enqueue, dedup_key, action, body, at, destination)

    async def pending_heads(self, now: float) -> list[OutboxEvent]:
        """See `SqlStore.pending_heads`."""
        return await self._call(self.sync.pending_heads, now)

    async def next_attempt_at(self) -> float | None:
        """See `SqlStore.next_attempt_at`."""
        return await self._call(self.sync.next_attempt_at)

    async def outbox_event(self, event_id: int) -> OutboxEvent:
        """See `SqlStore.outbox_event`."""
        return await self._call(self.sync.outbox_event, event_id)

    async def outbox_events(self, dedup_key: str | None = None) -> list[OutboxEvent]:
        """See `SqlStore.outbox_events`."""
        return await self._call(self.sync.outbox_events, dedup_key)

    async def mark_accepted(self, event_id: int, at: float) -> None:
        """See `SqlStore.mark_accepted`."""
        await self._call(self.sync.mark_accepted, event_id, at)

    async def mark_dropped(self, event_id: int, reason: str) -> None:
        """See `SqlStore.mark_dropped`."""
        await self._call(self.sync.mark_dropped, event_id, reason)

    async def mark_dry_run(self, event_id: int) -> None:
        """See `SqlStore.mark_dry_run`."""
        await self._call(self.sync.mark_dry_run, event_id)

    async def schedule_retry(
        self, event_id: int, next_attempt_at: float, error: str, hold_until: float | None = None
    ) -> None:
        """See `SqlStore.schedule_retry`."""
        await self._call(self.sync.schedule_retry, event_id, next_attempt_at, error, hold_until)

    async def pending_count(self) -> int:
        """See `SqlStore.pending_count`."""
        return await self._call(self.sync.pending_count)

    async def open_incident(
        self,
        dependency: str,
        dedup_key: str,
        opened_at: float,
        *,
        features: Sequence[str] = (),
        summary: str = "",
        severity: str = "",
        escalated: bool = False,
        data: dict[str, Any] | None = None,
    ) -> int:
        """See `SqlStore.open_incident`."""
        return await self._call(
            self.sync.open_incident,
            dependency,
            dedup_key,
            opened_at,
            features=features,
            summary=summary,
            severity=severity,
            escalated=escalated,
            data=data,
        )

    async def update_incident(
        self,
        incident_id: int,
        *,
        features: Sequence[str] | None = None,
        summary: str | None = None,
        severity: str | None = None,
        escalated: bool | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        """See `SqlStore.update_incident`."""
        await self._call(
            self.sync.update_incident,
            incident_id,
            features=features,
            summary=summary,
            severity=severity,
            escalated=escalated,
            data=data,
        )

    async def resolve_incident(self, incident_id: int, at: float) -> None:
        """See `SqlStore.resolve_incident`."""
        await self._call(self.sync.resolve_incident, incident_id, at)

    async def incident(self, incident_id: int) -> Incident:
        """See `SqlStore.incident`."""
        return await self._call(self.sync.incident, incident_id)

    async def open_incidents(self) -> list[Incident]:
        """See `SqlStore.open_incidents`."""
        return await self._call(self.sync.open_incidents)

    async def incidents_of(self, dependency: str) -> list[Incident]:
        """See `SqlStore.incidents_of`."""
        return await self._call(self.sync.incidents_of, dependency)

    async def add_timeline(self, incident_id: int, at: float, kind: str, data: dict[str, Any] | None = None) -> None:
        """See `SqlStore.add_timeline`."""
        await self._call(self.sync.add_timeline, incident_id, at, kind, data)

    async def timeline(self, incident_id: int) -> list[TimelineEntry]:
        """See `SqlStore.timeline`."""
        return await self._call(self.sync.timeline, incident_id)

    async def silences(self, active_at: float | None = None) -> list[Silence]:
        """See `SqlStore.silences`."""
        return await self._call(self.sync.silences, active_at)

    async def apply(self, write: IncidentWrite, fence: int | None = None) -> int:
        """See `SqlStore.apply`."""
        return await self._call(self.sync.apply, write, fence)

    async def claim_heads(self, replica: str, now: float, lease: float) -> list[OutboxEvent]:
        """See `SqlStore.claim_heads`."""
        return await self._call(self.sync.claim_heads, replica, now, lease)

    async def register(self, replica: str, instance: str, now: float) -> None:
        """See `SqlStore.register`."""
        await self._call(self.sync.register, replica, instance, now)

    async def report(self, report: ReplicaReport) -> None:
        """See `SqlStore.report`."""
        await self._call(self.sync.report, report)

    async def replica_views(self) -> list[ReplicaView]:
        """See `SqlStore.replica_views`."""
        return await self._call(self.sync.replica_views)

    async def take_leadership(self, replica: str, at: float) -> int:
        """See `SqlStore.take_leadership`."""
        return await self._call(self.sync.take_leadership, replica, at)

    async def orphaned_triggers(self) -> list[OutboxEvent]:
        """See `SqlStore.orphaned_triggers`."""
        return await self._call(self.sync.orphaned_triggers)

    async def record_feature_states(self, changes: Sequence[tuple[str, str, float]]) -> int:
        """See `SqlStore.record_feature_states`."""
        return await self._call(self.sync.record_feature_states, changes)

    async def feature_history(self, since: float) -> dict[str, list[tuple[float, str]]]:
        """See `SqlStore.feature_history`."""
        return await self._call(self.sync.feature_history, since)

    async def prune(self, before: float) -> tuple[int, int]:
        """See `SqlStore.prune`."""
        return await self._call(self.sync.prune, before)
