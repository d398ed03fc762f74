"""The store for async code: every blocking store method, run in a worker thread of its lane.

`Store` has no hand-written twin of each query: `_InThread(SqlStore.method)` makes the async
method from the blocking one, with its exact signature (typed through ParamSpec), so a method
added to `SqlStore` is one line here.

Each method belongs to a lane: a connection of its own (`SqlStore.lane`) and a worker thread,
one call at a time (SPEC 11.4: no page waits on a store call it does not need):

- `paging`: the decisions and the outbox. Its calls take turns (`Turns`), and the decisions'
  (`first=True`) go before the others waiting: in a mass outage the outbox delivers a thousand
  events, two or three store calls each, and a decision queued behind them reached PagerDuty
  seconds late;
- `replication`: heartbeats, the replicas' observations, leadership;
- `other`: what people read and the housekeeping (feature history, silences, timelines,
  pruning). A table another client has locked holds these calls, not a page.

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


class _Lane:
    """One lane: a backend on a connection of its own, its turns, and its worker thread."""

    def __init__(self, backend: SqlStore) -> None:
        self.sync = backend
        self.turns = Turns()
        self.limiter = anyio.CapacityLimiter(1)  # the worker thread: one, free whenever a turn starts


class _InThread(Generic[_P, _T]):
    """A `Store` method: the `SqlStore` method of the same name, run in its lane's worker thread.

    `first`: a decision's call, which goes before the other calls waiting for the lane.
    """

    def __init__(
        self, method: Callable[Concatenate[SqlStore, _P], _T], lane: str = "other", *, first: bool = False
    ) -> None:
        self._method = method
        self._lane = lane
        self._first = first
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, store: None, owner: type[Store]) -> _InThread[_P, _T]: ...
    @overload
    def __get__(self, store: Store, owner: type[Store]) -> Callable[_P, Awaitable[_T]]: ...
    def __get__(self, store: Store | None, owner: type[Store]) -> Any:
        if store is None:
            return self
        method, first, lane = self._method, self._first, store.lane(self._lane)

        async def in_thread(*args: _P.args, **kwargs: _P.kwargs) -> _T:
            call = functools.partial(method, lane.sync, *args, **kwargs)
            async with lane.turns.turn(first=first):
                return await anyio.to_thread.run_sync(call, limiter=lane.limiter)

        return in_thread


class Store:
    """The store for async code: each method runs its blocking twin in its lane's worker thread.

    `Store(backend)` or `Store(path, environment=...)` (SQLite) is cheap and does no I/O; each
    lane's connection is opened on its first call. `store.sync` is the blocking face of the same
    store (the `other` lane's backend), for code without an event loop.
    """

    def __init__(self, state: str | os.PathLike[str] | SqlStore, *, environment: str | None = None) -> None:
        if isinstance(state, SqlStore):
            self.sync: SqlStore = state
        elif environment is None:
            raise TypeError("Store(path) needs the environment its rows belong to")
        else:
            self.sync = SQLiteStore(state, environment=environment)
        self._lanes: dict[str, _Lane] = {"other": _Lane(self.sync)}

    def lane(self, name: str) -> _Lane:
        """The lane `name`, opened on first use (":memory:" has one connection: every lane is `other`)."""
        lane = self._lanes.get(name)
        if lane is None:
            backend = self.sync.lane(name)
            lane = self._lanes["other"] if backend is self.sync else _Lane(backend)
            self._lanes[name] = lane
        return lane

    @property
    def state_path(self) -> str:
        """The SQLite file path (or ":memory:"), or the PostgreSQL URL without its password."""
        return self.sync.name

    @property
    def environment(self) -> str:
        """The environment whose rows this store reads and writes."""
        return self.sync.environment

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Closing must happen even when the caller is being cancelled.
        with anyio.CancelScope(shield=True):
            await self.close()

    async def close(self) -> None:
        """Close every lane's connection (in its own thread, after the call it is running)."""
        closed: set[int] = set()
        for lane in list(self._lanes.values()):
            if id(lane) in closed:
                continue
            closed.add(id(lane))
            async with lane.turns.turn():
                await anyio.to_thread.run_sync(lane.sync.close, limiter=lane.limiter)

    # outbox (paging: the decisions' lane, the decisions first)
    enqueue = _InThread(SqlStore.enqueue, "paging")
    pending_heads = _InThread(SqlStore.pending_heads, "paging")
    claim_heads = _InThread(SqlStore.claim_heads, "paging")
    next_attempt_at = _InThread(SqlStore.next_attempt_at, "paging")
    outbox_event = _InThread(SqlStore.outbox_event, "paging")
    outbox_events = _InThread(SqlStore.outbox_events, "paging")
    mark_accepted = _InThread(SqlStore.mark_accepted, "paging")
    mark_dropped = _InThread(SqlStore.mark_dropped, "paging")
    mark_dry_run = _InThread(SqlStore.mark_dry_run, "paging")
    cancel_rest_writes = _InThread(SqlStore.cancel_rest_writes, "paging")
    schedule_retry = _InThread(SqlStore.schedule_retry, "paging")
    pending_count = _InThread(SqlStore.pending_count, "paging")
    pending_by_kind = _InThread(SqlStore.pending_by_kind, "paging")
    # decisions
    apply = _InThread(SqlStore.apply, "paging", first=True)
    apply_all = _InThread(SqlStore.apply_all, "paging", first=True)
    apply_batch = _InThread(SqlStore.apply_batch, "paging", first=True)
    incident_counts = _InThread(SqlStore.incident_counts, "paging", first=True)
    open_incidents = _InThread(SqlStore.open_incidents, "paging")
    orphaned_triggers = _InThread(SqlStore.orphaned_triggers, "paging")
    # incidents, timelines and housekeeping, as people read them
    open_incident = _InThread(SqlStore.open_incident)
    update_incident = _InThread(SqlStore.update_incident)
    resolve_incident = _InThread(SqlStore.resolve_incident)
    incident = _InThread(SqlStore.incident)
    incidents_of = _InThread(SqlStore.incidents_of)
    add_timeline = _InThread(SqlStore.add_timeline)
    timeline = _InThread(SqlStore.timeline)
    prune = _InThread(SqlStore.prune)
    # feature history, silences
    record_feature_states = _InThread(SqlStore.record_feature_states)
    feature_history = _InThread(SqlStore.feature_history)
    silences = _InThread(SqlStore.silences)
    # replicas
    register = _InThread(SqlStore.register, "replication")
    report = _InThread(SqlStore.report, "replication")
    replica_views = _InThread(SqlStore.replica_views, "replication")
    take_leadership = _InThread(SqlStore.take_leadership, "replication")
