"""The store for async code: every blocking store method, run in one worker thread at a time.

`Store` has no hand-written twin of each query: `_InThread(SqlStore.method)` makes the async
method from the blocking one, with its exact signature (typed through ParamSpec), so a method
added to `SqlStore` is one line here.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

import anyio
import anyio.to_thread

from monitor.store.base import SqlStore
from monitor.store.sqlite import SQLiteStore

__all__ = ["Store"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


class _InThread(Generic[_P, _T]):
    """A `Store` method: the `SqlStore` method of the same name, run in the store's worker thread."""

    def __init__(self, method: Callable[Concatenate[SqlStore, _P], _T]) -> None:
        self._method = method
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, store: None, owner: type[Store]) -> _InThread[_P, _T]: ...
    @overload
    def __get__(self, store: Store, owner: type[Store]) -> Callable[_P, Awaitable[_T]]: ...
    def __get__(self, store: Store | None, owner: type[Store]) -> Any:
        if store is None:
            return self
        method = self._method

        async def in_thread(*args: _P.args, **kwargs: _P.kwargs) -> _T:
            call = functools.partial(method, store.sync, *args, **kwargs)
            return await anyio.to_thread.run_sync(call, limiter=store.limiter)

        return in_thread


class Store:
    """The store for async code: each method runs its blocking twin in one worker thread.

    `Store(path)` (SQLite) or `Store(backend)` is cheap and does no I/O; the connection is opened
    on the first call. `store.sync` is the blocking face of the same store, for code without an
    event loop. One call at a time (`limiter`): the backend holds one connection.
    """

    def __init__(self, state: str | os.PathLike[str] | SqlStore) -> None:
        self.sync: SqlStore = state if isinstance(state, SqlStore) else SQLiteStore(state)
        self.limiter = anyio.CapacityLimiter(1)

    @property
    def state_path(self) -> str:
        """The SQLite file path (or ":memory:"), or the PostgreSQL URL without its password."""
        return self.sync.name

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Closing must happen even when the caller is being cancelled.
        with anyio.CancelScope(shield=True):
            await self.close()

    close = _InThread(SqlStore.close)
    # outbox
    enqueue = _InThread(SqlStore.enqueue)
    pending_heads = _InThread(SqlStore.pending_heads)
    claim_heads = _InThread(SqlStore.claim_heads)
    next_attempt_at = _InThread(SqlStore.next_attempt_at)
    outbox_event = _InThread(SqlStore.outbox_event)
    outbox_events = _InThread(SqlStore.outbox_events)
    mark_accepted = _InThread(SqlStore.mark_accepted)
    mark_dropped = _InThread(SqlStore.mark_dropped)
    mark_dry_run = _InThread(SqlStore.mark_dry_run)
    schedule_retry = _InThread(SqlStore.schedule_retry)
    pending_count = _InThread(SqlStore.pending_count)
    # incidents, timeline, decisions
    open_incident = _InThread(SqlStore.open_incident)
    update_incident = _InThread(SqlStore.update_incident)
    resolve_incident = _InThread(SqlStore.resolve_incident)
    incident = _InThread(SqlStore.incident)
    open_incidents = _InThread(SqlStore.open_incidents)
    incidents_of = _InThread(SqlStore.incidents_of)
    add_timeline = _InThread(SqlStore.add_timeline)
    timeline = _InThread(SqlStore.timeline)
    apply = _InThread(SqlStore.apply)
    apply_all = _InThread(SqlStore.apply_all)
    orphaned_triggers = _InThread(SqlStore.orphaned_triggers)
    prune = _InThread(SqlStore.prune)
    # feature history, silences
    record_feature_states = _InThread(SqlStore.record_feature_states)
    feature_history = _InThread(SqlStore.feature_history)
    silences = _InThread(SqlStore.silences)
    # replicas
    register = _InThread(SqlStore.register)
    report = _InThread(SqlStore.report)
    replica_views = _InThread(SqlStore.replica_views)
    take_leadership = _InThread(SqlStore.take_leadership)
