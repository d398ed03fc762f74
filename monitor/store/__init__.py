"""Durable state: the outbox, incidents and their timelines, feature history, silences, replicas.

One interface (`SqlStore`, every query written once) and two backends:

- `SQLiteStore`: one file, the embedded default for one replica;
- `PostgresStore`: a database shared by replicas (`monitor.state_url`, SPEC 10.6), with
  `LeaderLock` to elect the one that decides.

`Store` is the daemon's face of either: each async method runs its blocking twin in one worker
thread, so no query blocks the event loop. `connect(settings)` picks the backend of a config.
An outbox body never holds the routing key: it is a secret, and secrets never go to disk; the
sender adds it when it sends. The errors are drawn in `monitor.errors`; the replicas' records
(`Observation`, `ReplicaReport`, `ReplicaView`) are imported from `monitor.store.records`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from monitor.store.aio import Store
from monitor.store.base import LANES, LaneTimeouts, SqlStore
from monitor.store.records import (
    PAGERDUTY,
    PAGERDUTY_REST,
    Applied,
    Incident,
    IncidentWrite,
    NotLeader,
    OutboxEvent,
    OutboxHead,
    Silence,
    StateLocked,
    StoreError,
    TimelineEntry,
)
from monitor.store.sqlite import SCHEMA_VERSION, SQLiteStore, StateLock
from monitor.urls import redacted_conninfo as redacted_url

if TYPE_CHECKING:
    from monitor.store.postgres import LeaderLock, PostgresStore, leader_key

# The PostgreSQL backend, and psycopg with it (~25 MB), is imported when first used: a depmon on its
# SQLite file never loads it (issue 27).
_POSTGRES = ("LeaderLock", "PostgresStore", "leader_key")


def __getattr__(name: str) -> Any:
    if name in _POSTGRES:
        from monitor.store import postgres

        return getattr(postgres, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "LANES",
    "PAGERDUTY",
    "PAGERDUTY_REST",
    "SCHEMA_VERSION",
    "Applied",
    "Incident",
    "IncidentWrite",
    "LaneTimeouts",
    "LeaderLock",
    "NotLeader",
    "OutboxEvent",
    "OutboxHead",
    "PostgresStore",
    "SQLiteStore",
    "Silence",
    "SqlStore",
    "StateLock",
    "StateLocked",
    "Store",
    "StoreError",
    "TimelineEntry",
    "connect",
    "leader_key",
    "redacted_url",
]


def connect(state_url: str | None, state_path: str, environment: str) -> SqlStore:
    """The blocking store of a config: PostgreSQL at `state_url` when set, else the SQLite file; it
    reads and writes only the rows of `environment`."""
    if state_url:
        from monitor.store.postgres import PostgresStore

        return PostgresStore(state_url, environment=environment)
    return SQLiteStore(state_path, environment=environment)
