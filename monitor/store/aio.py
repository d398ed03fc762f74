"""The store for async code: every blocking store method, run in one worker thread at a time.

`Store` has no hand-written twin of each query: `_InThread(SqlStore.method)` makes the async
method from the blocking one, with its exact signature (typed through ParamSpec), so a method
added to `SqlStore` is one line here.

The calls take turns (`Turns`), and the decisions' calls (`first=True`: the pager's reads and
writes) go before the others waiting: in a mass outage the outbox delivers a thousand events,
two or three store calls each, and a decision queued behind them reached PagerDuty seconds late.
"""

from __future__ import annotations

import functools
import os
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

import anyio
import anyio.to_thread

from monitor.store.base import SqlStore
from monitor.store.sqlite import SQLiteStore

__all__ = ["Store"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


class Turns:
    """One holder at a time, handed first to the waiters that asked with `first=True`, each lane in order."""

    def __init__(self) -> None:
        self._held = False
        self._first: deque[anyio.Event] = deque()
        self._others: deque[anyio.Event] = deque()

    @asynccontextmanager
    async def turn(self, *, first: bool = False) -> AsyncIterator[None]:
        """Hold the turn for the body of the `async with`."""
        if self._held:
            lane = self._first if first else self._others
            handed = anyio.Event()
            lane.append(handed)
            try:
                await handed.wait()
            except BaseException:  # cancelled while waiting: give up the place, or the turn just handed over
                if handed.is_set():
                    self._pass_on()
                else:
                    lane.remove(handed)
                raise
        self._held = True
        try:
            yield
        finally:
            self._pass_on()

    def _pass_on(self) -> None:
        """Hand the turn to the next waiter (it stays held), or free it."""
        lane = self._first or self._others
        if lane:
            lane.popleft().set()
        else:
            self._held = False


class _InThread(Generic[_P, _T]):
    """A `Store` method: the `SqlStore` method of the same name, run in the store's worker thread.

    `first`: a decision's call, which goes before the other calls waiting for the store.
    """

    def __init__(self, method: Callable[Concatenate[SqlStore, _P], _T], *, first: bool = False) -> None:
        self._method = method
        self._first = first
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, store: None, owner: type[Store]) -> _InThread[_P, _T]: ...
    @overload
    def __get__(self, store: Store, owner: type[Store]) -> Callable[_P, Awaitable[_T]]: ...
    def __get__(self, store: Store | None, owner: type[Store]) -> Any:
        if store is None:
            return self
        method, first = self._method, self._first

        async def in_thread(*args: _P.args, **kwargs: _P.kwargs) -> _T:
            call = functools.partial(method, store.sync, *args, **kwargs)
            async with store.turns.turn(first=first):
                return await anyio.to_thread.run_sync(call, limiter=store.limiter)

        return in_thread


class Store:
    """The store for async code: each method runs its blocking twin in one worker thread.

    `Store(path)` (SQLite) or `Store(backend)` is cheap and does no I/O; the connection is opened
    on the first call. `store.sync` is the blocking face of the same store, for code without an
    event loop. One call at a time (`turns`, the decisions' first): the backend holds one connection.
    """

    def __init__(self, state: str | os.PathLike[str] | SqlStore) -> None:
        self.sync: SqlStore = state if isinstance(state, SqlStore) else SQLiteStore(state)
        self.turns = Turns()
        self.limiter = anyio.CapacityLimiter(1)  # the worker thread: one, free whenever a turn starts

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
    incident_counts = _InThread(SqlStore.incident_counts, first=True)
    add_timeline = _InThread(SqlStore.add_timeline)
    timeline = _InThread(SqlStore.timeline)
    apply = _InThread(SqlStore.apply, first=True)
    apply_all = _InThread(SqlStore.apply_all, first=True)
    orphaned_triggers = _InThread(SqlStore.orphaned_triggers)
    prune = _InThread(SqlStore.prune)
    # feature history, silences
    record_feature_states = _InThread(SqlStore.record_feature_states)
    feature_history = _InThread(SqlStore.feature_history)
    silences = _InThread(SqlStore.silences, first=True)
    # replicas
    register = _InThread(SqlStore.register)
    report = _InThread(SqlStore.report)
    replica_views = _InThread(SqlStore.replica_views)
    take_leadership = _InThread(SqlStore.take_leadership)
