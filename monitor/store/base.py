"""Every store query, written once: the SQLite and the PostgreSQL stores differ only in their dialect.

`SqlStore` holds the methods; a backend gives it transactions (`_transaction`) over its own
connection, in which `?` marks a parameter, and the few statements whose SQL differs
(class attributes). All methods block: the daemon calls them through `monitor.store.Store`, in
a worker thread.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from importlib import resources
from typing import Any, ClassVar, Protocol

from monitor.store.records import (
    PAGERDUTY,
    PAGERDUTY_REST,
    Action,
    Applied,
    Incident,
    IncidentWrite,
    NotLeader,
    Observation,
    OutboxEvent,
    OutboxHead,
    ReplicaReport,
    ReplicaView,
    Silence,
    StoreError,
    TimelineEntry,
)

__all__ = ["LANES", "LaneTimeouts", "SqlStore", "Transaction", "migrations"]


def migrations(backend: str) -> tuple[str, ...]:
    """The SQL scripts that build a backend's schema, in order (`monitor/store/migrations/BACKEND/NNN.sql`):
    data, shipped in the package, never changed once released (a later change is a new script)."""
    folder = resources.files("monitor.store").joinpath("migrations", backend)
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))
    return tuple(folder.joinpath(name).read_text(encoding="utf-8") for name in names)


@dataclass(frozen=True, slots=True)
class LaneTimeouts:
    """How long one lane's statements may wait for a lock, and run, in seconds (SPEC 11.4)."""

    lock: float
    statement: float


# The store's lanes, each a connection of its own (`monitor.store.Store`). A decision's writes may
# wait for a lock up to 5 s: past that the pager calls the store stalled (its own trouble, the
# self page); the views' and the replication's calls give up sooner, they are retried anyway.
LANES: dict[str, LaneTimeouts] = {
    "paging": LaneTimeouts(lock=5.0, statement=10.0),
    "replication": LaneTimeouts(lock=2.0, statement=5.0),
    "other": LaneTimeouts(lock=2.0, statement=30.0),
}


class Transaction(Protocol):
    """One open transaction of a backend; `?` marks a parameter in every statement."""

    def rows(self, sql: str, parameters: Sequence[object] = ()) -> list[Any]:
        """The rows of a query (each readable by column name)."""
        ...

    def change(self, sql: str, parameters: Sequence[object] = ()) -> int:
        """Run a statement; how many rows it changed."""
        ...

    def insert(self, sql: str, parameters: Sequence[object] = ()) -> int:
        """Run an `INSERT ... RETURNING id`; the new id."""
        ...

    def reserve_ids(self, table: str, count: int) -> list[int]:
        """`count` new ids of `table`, increasing, that no other row gets (`SqlStore._insert_rows`)."""
        ...


# At most this many parameters in one statement (SQLite's limit before 3.32 is 999).
MAX_PARAMETERS = 999


def _insert_statements(
    table: str, columns: Sequence[str], ids: Sequence[int], rows: Sequence[Sequence[object]], clause: str
) -> list[tuple[str, list[object]]]:
    """The `INSERT INTO table (id, columns...) clause VALUES (...), (...)` statements that write `rows`
    with the given `ids`, in order, each within `MAX_PARAMETERS`."""
    width = len(columns) + 1
    per_statement = max(1, MAX_PARAMETERS // width)
    head = f"INSERT INTO {table} (id, {', '.join(columns)}){clause} VALUES "  # noqa: S608 (names of ours, values bound)
    one = "(" + ", ".join("?" * width) + ")"
    numbered = [(row_id, *row) for row_id, row in zip(ids, rows, strict=True)]
    statements = []
    for start in range(0, len(numbered), per_statement):
        chunk = numbered[start : start + per_statement]
        statements.append((head + ", ".join([one] * len(chunk)), [value for row in chunk for value in row]))
    return statements


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _outbox_event(row: Any) -> OutboxEvent:
    return OutboxEvent(
        id=row["id"],
        dedup_key=row["dedup_key"],
        action=row["action"],
        body=json.loads(row["body"]),
        created_at=row["created_at"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        status=row["status"],
        last_error=row["last_error"],
        delivered_at=row["delivered_at"],
        destination=row["destination"],
        after_id=row["after_id"],
    )


_HEAD_FIELDS = tuple(field.name for field in dataclasses.fields(OutboxHead))


def _outbox_head(row: Any) -> OutboxHead:
    return OutboxHead(*(row[name] for name in _HEAD_FIELDS))


def _incident(row: Any) -> Incident:
    return Incident(
        id=row["id"],
        dependency=row["dependency"],
        dedup_key=row["dedup_key"],
        opened_at=row["opened_at"],
        resolved_at=row["resolved_at"],
        escalated=bool(row["escalated"]),
        features=json.loads(row["features"]),
        summary=row["summary"],
        severity=row["severity"],
        data=json.loads(row["data"]),
        up_since=row["up_since"],
        flapping=bool(row["flapping"]),
    )


# The oldest pending event of each dedup key: only it may be sent, so each key delivers in order;
# a head that waits for another row (a REST write for its trigger, `after_id`) is not due until then.
# Only the columns of `OutboxHead`: the loop reads the heads at every wake-up, the bodies when it sends.
_HEAD_COLUMNS = ", ".join(f"o.{name}" for name in _HEAD_FIELDS)
_HEADS = f"""
    SELECT {_HEAD_COLUMNS} FROM outbox AS o
    WHERE o.environment = ? AND o.status = 'pending'
      AND o.id = (
        SELECT MIN(id) FROM outbox
        WHERE environment = o.environment AND status = 'pending'
          AND destination = o.destination AND dedup_key = o.dedup_key
      )
      AND (o.after_id IS NULL
           OR NOT EXISTS (SELECT 1 FROM outbox AS a WHERE a.id = o.after_id AND a.status = 'pending'))
"""  # noqa: S608 (column names of a dataclass)
_DUE_HEADS = _HEADS + " AND o.next_attempt_at <= ? ORDER BY o.id"
_EARLIEST_HEAD = "SELECT MIN(next_attempt_at) AS earliest FROM (" + _HEADS + ") AS heads"  # noqa: S608 (constant text)
# Heads this replica may deliver: unclaimed, claimed by itself, or whose claim ran out (a
# replica that died mid-delivery). The backend appends its row-locking clause.
_CLAIMABLE_HEADS = _HEADS + " AND (o.claim_replica IS NULL OR o.claim_replica = ? OR o.claim_until < ?) ORDER BY o.id"
_SETTLE = "claim_replica = NULL, claim_until = NULL"
# Every row names its environment first (SPEC 11.4: environments may share one database).
_OUTBOX_COLUMNS = (
    *("environment", "dedup_key", "action", "body", "created_at", "next_attempt_at", "destination", "after_id"),
)
_TIMELINE_COLUMNS = ("environment", "incident_id", "at", "kind", "data")
_INCIDENT_COLUMNS = (
    *("environment", "dependency", "dedup_key", "opened_at", "escalated", "features"),
    *("summary", "severity", "flapping", "up_since"),
)


def _insert_one(table: str, columns: Sequence[str]) -> str:
    marks = ", ".join("?" * len(columns))
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) RETURNING id"  # noqa: S608 (names of ours)


_INSERT_OUTBOX = _insert_one("outbox", _OUTBOX_COLUMNS)
_INSERT_TIMELINE = _insert_one("timeline", _TIMELINE_COLUMNS)


def _incident_row(environment: str, write: IncidentWrite) -> tuple[object, ...]:
    """The `_INCIDENT_COLUMNS` of the incident a decision opens."""
    return (
        environment,
        write.dependency,
        write.dedup_key,
        write.at,
        int(write.escalated),
        _dumps(list(write.features)),
        write.summary,
        write.severity,
        int(write.flapping),
        write.up_since,
    )


def _without_routing_key(body: dict[str, Any]) -> str:
    return _dumps({key: value for key, value in body.items() if key != "routing_key"})


class SqlStore(ABC):
    """The state store's methods (outbox, incidents, timeline, history, silences, replicas).

    Every row belongs to one environment (`monitor.environment`): a store reads and writes only
    its own, so environments may share one database (SPEC 11.4). Subclasses open the connection
    and give `_transaction`; `name` names the store in errors.
    """

    name: str
    environment: str
    # SQL that differs between the backends (see the subclasses).
    _HISTORY_SINCE: ClassVar[str]
    _PRUNE_HISTORY: ClassVar[str]
    _PRUNE_SILENCES: ClassVar[str]
    _LOCK_ROWS: ClassVar[str] = ""  # appended to a query whose rows the transaction claims
    _FENCE: ClassVar[str] = "SELECT epoch FROM leadership WHERE environment = ?"
    _OVERRIDE_IDS: ClassVar[str] = ""  # between an INSERT's columns and its VALUES when it gives the ids

    @abstractmethod
    def _transaction(self, *, write: bool) -> AbstractContextManager[Transaction]:
        """A transaction; `write` ones take the write lock up front (SQLite) or are ordinary (PostgreSQL)."""

    @abstractmethod
    def lane(self, name: str) -> SqlStore:
        """A store over the same state with a connection of its own (`name` sets its timeouts).

        `monitor.store.Store` gives the decisions and the replication each a lane, so a slow call
        of another kind (a table another client has locked) never holds a page.
        """

    # Each backend holds one connection (opened on first use), behind one lock.
    _lock: threading.RLock
    _connection: Any
    _closed: bool

    def close(self) -> None:
        """Close the connection; later calls raise `StoreError`. Closing twice is harmless."""
        with self._lock:
            self._closed = True
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def _rows(self, sql: str, parameters: Sequence[object] = ()) -> list[Any]:
        with self._transaction(write=False) as tx:
            return tx.rows(sql, parameters)

    def _change(self, sql: str, parameters: Sequence[object], what: str, ident: int) -> None:
        with self._transaction(write=True) as tx:
            if tx.change(sql, parameters) != 1:
                raise KeyError(f"no {what} with id {ident}")

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- outbox -----------------------------------------------------------------------------

    def enqueue(
        self, dedup_key: str, action: Action, body: dict[str, Any], at: float, destination: str = PAGERDUTY
    ) -> int:
        """Append an event, due now; returns its id. A `routing_key` in `body` is never stored."""
        if action not in ("trigger", "resolve"):
            raise ValueError(f"outbox action must be trigger or resolve, not {action!r}")
        with self._transaction(write=True) as tx:
            return tx.insert(
                _INSERT_OUTBOX,
                (self.environment, dedup_key, action, _without_routing_key(body), at, at, destination, None),
            )

    def pending_heads(self, now: float) -> list[OutboxHead]:
        """The oldest pending event of each dedup key, if due (`next_attempt_at <= now`), oldest first."""
        return [_outbox_head(row) for row in self._rows(_DUE_HEADS, (self.environment, now))]

    def claim_heads(self, replica: str, now: float, lease: float) -> list[OutboxHead]:
        """The pending heads `replica` may deliver now, claimed for it until `now + lease`, oldest first.

        A head claimed by another replica is left to it until its claim runs out; on PostgreSQL,
        rows another replica is claiming at this instant are skipped (`FOR UPDATE SKIP LOCKED`).
        """
        with self._transaction(write=True) as tx:
            rows = tx.rows(_CLAIMABLE_HEADS + self._LOCK_ROWS, (self.environment, replica, now))
            ids = [row["id"] for row in rows]
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ", ".join("?" for _ in chunk)
                tx.change(
                    f"UPDATE outbox SET claim_replica = ?, claim_until = ? WHERE id IN ({marks})",  # noqa: S608
                    (replica, now + lease, *chunk),
                )
        return [_outbox_head(row) for row in rows]

    def next_attempt_at(self) -> float | None:
        """When the earliest pending head falls due; None when nothing is pending."""
        rows = self._rows(_EARLIEST_HEAD, (self.environment,))
        return None if not rows or rows[0]["earliest"] is None else float(rows[0]["earliest"])

    def outbox_event(self, event_id: int) -> OutboxEvent:
        """One outbox event by id (KeyError if there is none)."""
        rows = self._rows("SELECT * FROM outbox WHERE id = ? AND environment = ?", (event_id, self.environment))
        if not rows:
            raise KeyError(f"no outbox event with id {event_id}")
        return _outbox_event(rows[0])

    def outbox_events(self, dedup_key: str | None = None) -> list[OutboxEvent]:
        """Every outbox event (of one dedup key, when given), oldest first."""
        if dedup_key is None:
            rows = self._rows("SELECT * FROM outbox WHERE environment = ? ORDER BY id", (self.environment,))
        else:
            rows = self._rows(
                "SELECT * FROM outbox WHERE environment = ? AND dedup_key = ? ORDER BY id",
                (self.environment, dedup_key),
            )
        return [_outbox_event(row) for row in rows]

    def _settle(self, event_id: int, assignments: str, parameters: Sequence[object]) -> None:
        """Change a pending outbox event of this environment (`assignments` are constant text of ours)."""
        with self._transaction(write=True) as tx:
            self._settle_in(tx, event_id, assignments, parameters)

    def mark_accepted(self, event_id: int, at: float) -> None:
        """PagerDuty accepted the event (202)."""
        self._settle(event_id, f"status = 'accepted', delivered_at = ?, attempts = attempts + 1, {_SETTLE}", (at,))

    def mark_dropped(self, event_id: int, reason: str) -> list[str]:
        """PagerDuty refused the event itself (400): it is never retried; `reason` says why.

        The REST writes waiting for it are cancelled with it: returns their steps.
        """
        with self._transaction(write=True) as tx:
            self._settle_in(
                tx, event_id, f"status = 'dropped', last_error = ?, attempts = attempts + 1, {_SETTLE}", (reason,)
            )
            return self._cancel_followers(tx, event_id, "its trigger was dropped")

    def mark_dry_run(self, event_id: int) -> list[str]:
        """No routing key is configured: the event was logged instead of sent. The REST writes waiting
        for it are cancelled (no PagerDuty incident will exist): returns their steps."""
        with self._transaction(write=True) as tx:
            self._settle_in(tx, event_id, f"status = 'dry_run', {_SETTLE}", ())
            return self._cancel_followers(tx, event_id, "its trigger was not sent (dry run)")

    def _settle_in(self, tx: Transaction, event_id: int, assignments: str, parameters: Sequence[object]) -> None:
        changed = tx.change(
            f"UPDATE outbox SET {assignments} WHERE id = ? AND environment = ? AND status = 'pending'",  # noqa: S608
            (*parameters, event_id, self.environment),
        )
        if changed != 1:
            raise KeyError(f"no pending outbox event with id {event_id}")

    def _cancel_followers(self, tx: Transaction, event_id: int, reason: str) -> list[str]:
        rows = tx.rows(
            f"UPDATE outbox SET status = 'cancelled', last_error = ?, {_SETTLE} "  # noqa: S608 (constant text)
            "WHERE environment = ? AND after_id = ? AND status = 'pending' RETURNING body",
            (reason, self.environment, event_id),
        )
        return [str(json.loads(row["body"]).get("step", "")) for row in rows]

    def cancel_rest_writes(self, dedup_key: str, reason: str) -> list[str]:
        """Cancel the REST writes still pending for `dedup_key` (its incident resolved); returns their steps."""
        with self._transaction(write=True) as tx:
            return self._cancel_pending(tx, dedup_key, reason)

    def _cancel_pending(self, tx: Transaction, dedup_key: str, reason: str) -> list[str]:
        rows = tx.rows(
            f"UPDATE outbox SET status = 'cancelled', last_error = ?, {_SETTLE} "  # noqa: S608 (constant text)
            "WHERE environment = ? AND dedup_key = ? AND destination = ? AND status = 'pending' RETURNING body",
            (reason, self.environment, dedup_key, PAGERDUTY_REST),
        )
        return [str(json.loads(row["body"]).get("step", "")) for row in rows]

    def schedule_retry(
        self, event_id: int, next_attempt_at: float, error: str, hold_until: float | None = None
    ) -> None:
        """A delivery attempt failed transiently; try again at `next_attempt_at`.

        `hold_until` extends the deliverer's claim (the retry is its own, on its monotonic clock);
        another replica takes the event over only if the claim runs out.
        """
        self._settle(
            event_id,
            "attempts = attempts + 1, next_attempt_at = ?, last_error = ?, claim_until = COALESCE(?, claim_until)",
            (next_attempt_at, error, hold_until),
        )

    def pending_count(self) -> int:
        """How many events wait for delivery."""
        rows = self._rows(
            "SELECT COUNT(*) AS n FROM outbox WHERE environment = ? AND status = 'pending'", (self.environment,)
        )
        return int(rows[0]["n"]) if rows else 0

    def pending_by_kind(self) -> dict[str, int]:
        """How many rows wait for delivery per destination kind: `kind` of `kind:target` (a Slack
        channel's rows count under `slack`), so the counts have as many keys as there are kinds."""
        rows = self._rows(
            "SELECT destination, COUNT(*) AS n FROM outbox WHERE environment = ? AND status = 'pending' "
            "GROUP BY destination",
            (self.environment,),
        )
        counts: dict[str, int] = {}
        for row in rows:
            kind = str(row["destination"]).partition(":")[0]
            counts[kind] = counts.get(kind, 0) + int(row["n"])
        return counts

    # -- incidents and timeline -------------------------------------------------------------

    def open_incident(
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
        """Record a new open incident; returns its id."""
        with self._transaction(write=True) as tx:
            return tx.insert(
                "INSERT INTO incidents (environment, dependency, dedup_key, opened_at, escalated, features, summary, "
                "severity, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    self.environment,
                    dependency,
                    dedup_key,
                    opened_at,
                    int(escalated),
                    _dumps(list(features)),
                    summary,
                    severity,
                    _dumps(data or {}),
                ),
            )

    def update_incident(
        self,
        incident_id: int,
        *,
        features: Sequence[str] | None = None,
        summary: str | None = None,
        severity: str | None = None,
        escalated: bool | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Change the given fields of an incident (the others stay); `data` replaces the old data."""
        changes: dict[str, object] = {}
        if features is not None:
            changes["features"] = _dumps(list(features))
        if summary is not None:
            changes["summary"] = summary
        if severity is not None:
            changes["severity"] = severity
        if escalated is not None:
            changes["escalated"] = int(escalated)
        if data is not None:
            changes["data"] = _dumps(data)
        if not changes:
            self.incident(incident_id)  # still report an unknown id
            return
        # Column names come from the fixed set above, never from the caller.
        assignments = ", ".join(f"{column} = ?" for column in changes)
        self._change(
            f"UPDATE incidents SET {assignments} WHERE id = ? AND environment = ?",  # noqa: S608
            (*changes.values(), incident_id, self.environment),
            "incident",
            incident_id,
        )

    def resolve_incident(self, incident_id: int, at: float) -> None:
        """Close an open incident at `at` (resolving a resolved one keeps its first resolution)."""
        self._change(
            "UPDATE incidents SET resolved_at = COALESCE(resolved_at, ?) WHERE id = ? AND environment = ?",
            (at, incident_id, self.environment),
            "incident",
            incident_id,
        )

    def incident(self, incident_id: int) -> Incident:
        """One incident by id (KeyError if there is none)."""
        rows = self._rows("SELECT * FROM incidents WHERE id = ? AND environment = ?", (incident_id, self.environment))
        if not rows:
            raise KeyError(f"no incident with id {incident_id}")
        return _incident(rows[0])

    def open_incidents(self) -> list[Incident]:
        """Every incident not yet resolved, oldest first (a restarted daemon reloads these)."""
        rows = self._rows(
            "SELECT * FROM incidents WHERE environment = ? AND resolved_at IS NULL ORDER BY id", (self.environment,)
        )
        return [_incident(row) for row in rows]

    def incidents_of(self, dependency: str) -> list[Incident]:
        """Every incident of a dependency, open or resolved, newest last."""
        rows = self._rows(
            "SELECT * FROM incidents WHERE environment = ? AND dependency = ? ORDER BY id",
            (self.environment, dependency),
        )
        return [_incident(row) for row in rows]

    def incident_counts(self) -> dict[str, int]:
        """How many incidents, open or resolved, each dependency has (absent: none)."""
        rows = self._rows(
            "SELECT dependency, COUNT(*) AS n FROM incidents WHERE environment = ? GROUP BY dependency",
            (self.environment,),
        )
        return {row["dependency"]: int(row["n"]) for row in rows}

    def add_timeline(self, incident_id: int, at: float, kind: str, data: dict[str, Any] | None = None) -> None:
        """Append one entry to an incident's timeline."""
        with self._transaction(write=True) as tx:
            if not tx.rows(
                "SELECT id FROM incidents WHERE id = ? AND environment = ?", (incident_id, self.environment)
            ):
                raise KeyError(f"no incident with id {incident_id}")
            tx.insert(_INSERT_TIMELINE, (self.environment, incident_id, at, kind, _dumps(data or {})))

    def timeline(self, incident_id: int) -> list[TimelineEntry]:
        """An incident's timeline in time order (ties in insertion order)."""
        rows = self._rows(
            "SELECT * FROM timeline WHERE environment = ? AND incident_id = ? ORDER BY at, id",
            (self.environment, incident_id),
        )
        return [TimelineEntry(row["incident_id"], row["at"], row["kind"], json.loads(row["data"])) for row in rows]

    # -- feature history --------------------------------------------------------------------

    def record_feature_states(self, changes: Sequence[tuple[str, str, float]]) -> int:
        """Append (feature, state, at) changes in one transaction; returns how many rows were written.

        A change that repeats the state already recorded last for its feature is skipped: the
        daemon records every feature's state at start and after a reload, most of them unchanged.
        """
        written = 0
        with self._transaction(write=True) as tx:
            last: dict[str, str | None] = {}
            for feature, state, at in changes:
                if feature not in last:
                    rows = tx.rows(
                        "SELECT state FROM feature_history WHERE environment = ? AND feature = ? "
                        "ORDER BY at DESC, id DESC LIMIT 1",
                        (self.environment, feature),
                    )
                    last[feature] = rows[0]["state"] if rows else None
                if last[feature] == state:
                    continue
                tx.change(
                    "INSERT INTO feature_history (environment, feature, state, at) VALUES (?, ?, ?, ?)",
                    (self.environment, feature, state, at),
                )
                last[feature] = state
                written += 1
        return written

    def feature_history(self, since: float) -> dict[str, list[tuple[float, str]]]:
        """Feature -> its (at, state) changes from `since` on, in time order.

        Each list starts with the state in force at `since` (the last change before it, with its
        own earlier time) when there is one; a feature with no change before `since` starts
        with its first change after it.
        """
        history: dict[str, list[tuple[float, str]]] = {}
        env = self.environment
        for row in self._rows(self._HISTORY_SINCE, (env, since)):
            history.setdefault(row["feature"], []).append((row["at"], row["state"]))
        return history

    # -- silences ---------------------------------------------------------------------------

    def add_silence(self, dependency: str, created_at: float, ends_at: float, reason: str) -> int:
        """Record a silence; returns its id."""
        with self._transaction(write=True) as tx:
            return tx.insert(
                "INSERT INTO silences (environment, dependency, created_at, ends_at, reason) "
                "VALUES (?, ?, ?, ?, ?) RETURNING id",
                (self.environment, dependency, created_at, ends_at, reason),
            )

    def silences(self, active_at: float | None = None) -> list[Silence]:
        """Every silence, oldest first, or only those active at `active_at`."""
        rows = self._rows("SELECT * FROM silences WHERE environment = ? ORDER BY id", (self.environment,))
        found = [
            Silence(r["id"], r["dependency"], r["created_at"], r["ends_at"], r["reason"], r["expired_at"]) for r in rows
        ]
        return found if active_at is None else [s for s in found if s.active_at(active_at)]

    def expire_silence(self, silence_id: int, at: float) -> None:
        """End a silence now (KeyError for an unknown id; expiring twice keeps the first time)."""
        self._change(
            "UPDATE silences SET expired_at = COALESCE(expired_at, ?) WHERE id = ? AND environment = ?",
            (at, silence_id, self.environment),
            "silence",
            silence_id,
        )

    # -- decisions, reconciliation, retention -----------------------------------------------

    def apply(self, write: IncidentWrite, fence: int | None = None) -> int:
        """Commit one decision (outbox row, incident change, timeline entry) atomically; returns the incident id.

        A crash leaves either all of it or none: never a page queued without the incident that
        will resolve it, nor an incident whose page was never queued. `fence`: the leadership
        epoch the decision was made under; if another replica has taken the lead since, nothing
        is written and `NotLeader` is raised (a deposed leader never pages).
        """
        return self.apply_all([write], fence)[0]

    def apply_all(self, writes: Sequence[IncidentWrite], fence: int | None = None) -> list[int]:
        """`apply` for several decisions in one transaction (one commit): all of them or none."""
        return self.apply_batch(writes, fence).ids

    def apply_batch(self, writes: Sequence[IncidentWrite], fence: int | None = None) -> Applied:
        """`apply_all`, saying also which REST writes its resolves cancelled (SPEC 11.2: nothing is
        written to an incident after depmon resolved it); the resolve's timeline entry lists them."""
        ids: list[int] = []
        cancelled: list[tuple[str, str]] = []
        env = self.environment
        with self._transaction(write=True) as tx:
            if fence is not None:
                rows = tx.rows(self._FENCE, (env,))
                current = rows[0]["epoch"] if rows else None
                if current != fence:
                    raise NotLeader(
                        f"{self.name}: leadership epoch {current} of {env} is not ours ({fence}): not written"
                    )
            # One statement per table for the batch's new rows (see `_insert_rows`).
            opened = [write for write in writes if write.incident_id is None]
            fresh = iter(self._insert_rows(tx, "incidents", _INCIDENT_COLUMNS, [_incident_row(env, w) for w in opened]))
            outbox: list[tuple[object, ...]] = []
            after: list[int | None] = []  # each outbox row's trigger, as an index into `outbox`
            timeline: list[tuple[object, ...]] = []
            for write in writes:
                if write.incident_id is None:
                    incident_id = next(fresh)
                else:
                    self._update_incident(tx, write, write.incident_id)
                    incident_id = write.incident_id
                trigger = len(outbox) if write.event is not None else None
                events = [(PAGERDUTY, *write.event)] if write.event is not None else []
                rest = [(PAGERDUTY_REST, "trigger", row) for row in write.rest_writes]
                for destination, action, body in [*events, *write.messages, *rest]:
                    outbox.append(
                        (env, write.dedup_key, action, _without_routing_key(body), write.at, write.at, destination)
                    )
                    after.append(trigger if destination == PAGERDUTY_REST else None)
                entry = write.timeline
                if write.resolved:
                    steps = self._cancel_pending(tx, write.dedup_key, "the incident resolved")
                    cancelled += [(write.dedup_key, step) for step in steps]
                    entry = {**entry, "escalation_cancelled": steps} if steps else entry
                timeline.append((env, incident_id, write.at, write.kind, _dumps(entry)))
                ids.append(incident_id)
            if outbox:
                outbox_ids = tx.reserve_ids("outbox", len(outbox))
                rows = [(*row, None if a is None else outbox_ids[a]) for row, a in zip(outbox, after, strict=True)]
                for statement, parameters in _insert_statements(
                    "outbox", _OUTBOX_COLUMNS, outbox_ids, rows, self._OVERRIDE_IDS
                ):
                    tx.change(statement, parameters)
            self._insert_rows(tx, "timeline", _TIMELINE_COLUMNS, timeline)
        return Applied(ids, cancelled)

    def _insert_rows(
        self, tx: Transaction, table: str, columns: Sequence[str], rows: Sequence[Sequence[object]]
    ) -> list[int]:
        """Insert `rows` (values of `columns`) into `table` in a few statements, whatever their number.

        Returns their new ids, increasing in the order of `rows`. A batch of decisions writes each
        table this way: every statement is a call into the driver, which lets go of the GIL, and
        a thread that lets go of it waits up to `sys.getswitchinterval()` to get it back from a
        busy event loop (5 ms: 250 decisions one row at a time took 0.7-2 s in a mass outage).
        """
        if not rows:
            return []
        ids = tx.reserve_ids(table, len(rows))
        for sql, parameters in _insert_statements(table, columns, ids, rows, self._OVERRIDE_IDS):
            tx.change(sql, parameters)
        return ids

    def _update_incident(self, tx: Transaction, write: IncidentWrite, incident_id: int) -> None:
        changed = tx.change(
            "UPDATE incidents SET features = ?, escalated = ?, flapping = ?, up_since = ?, "
            "summary = CASE WHEN ? = '' THEN summary ELSE ? END, "
            "severity = CASE WHEN ? = '' THEN severity ELSE ? END, "
            "resolved_at = CASE WHEN ? = 1 THEN COALESCE(resolved_at, ?) ELSE resolved_at END "
            "WHERE id = ? AND environment = ?",
            (
                _dumps(list(write.features)),
                int(write.escalated),
                int(write.flapping),
                write.up_since,
                write.summary,
                write.summary,
                write.severity,
                write.severity,
                int(write.resolved),
                write.at,
                incident_id,
                self.environment,
            ),
        )
        if changed != 1:
            raise KeyError(f"no incident with id {incident_id}")

    def orphaned_triggers(self) -> list[OutboxEvent]:
        """Triggers whose dedup key has no open incident and no later resolve in the outbox.

        A state file written by an older depmon (which committed the trigger before the incident)
        can hold these after a kill; the daemon opens an incident for each, so a recovery resolves it.
        """
        rows = self._rows(
            "SELECT * FROM outbox AS o WHERE o.environment = ? AND o.action = 'trigger' AND o.status != 'dropped' "
            "AND o.destination = 'pagerduty' "
            "AND o.id = (SELECT MAX(id) FROM outbox WHERE environment = o.environment AND dedup_key = o.dedup_key "
            "AND destination = 'pagerduty') "
            "AND NOT EXISTS (SELECT 1 FROM incidents AS i WHERE i.environment = o.environment "
            "AND i.dedup_key = o.dedup_key AND i.resolved_at IS NULL) "
            "ORDER BY o.id",
            (self.environment,),
        )
        return [_outbox_event(row) for row in rows]

    def prune(self, before: float) -> tuple[int, int]:
        """Delete settled outbox rows and closed incidents (with their timelines) older than `before`,
        the feature history, the silences that ended and the replicas last heard before it, all of
        this environment.

        Pending events and open incidents are never pruned, nor each feature's last change before
        `before` (the state in force then). Returns (events, incidents) deleted.
        """
        env = self.environment
        with self._transaction(write=True) as tx:
            events = tx.change(
                "DELETE FROM outbox WHERE environment = ? AND status != 'pending' "
                "AND COALESCE(delivered_at, created_at) < ?",
                (env, before),
            )
            old = "SELECT id FROM incidents WHERE environment = ? AND resolved_at IS NOT NULL AND resolved_at < ?"
            tx.change(f"DELETE FROM timeline WHERE incident_id IN ({old})", (env, before))  # noqa: S608
            incidents = tx.change(f"DELETE FROM incidents WHERE id IN ({old})", (env, before))  # noqa: S608
            tx.change(self._PRUNE_HISTORY, (env, before))
            tx.change(self._PRUNE_SILENCES, (env, before))
            gone = "SELECT name FROM replicas WHERE environment = ? AND seen_at < ?"
            tx.change(
                f"DELETE FROM observations WHERE environment = ? AND replica IN ({gone})",  # noqa: S608
                (env, env, before),
            )
            tx.change("DELETE FROM replicas WHERE environment = ? AND seen_at < ?", (env, before))
        return events, incidents

    # -- replicas (SPEC 10.6) ---------------------------------------------------------------

    def register(self, replica: str, instance: str, now: float) -> None:
        """Claim a replica name for this process; StoreError if a live process holds it.

        A replica is live while it reports within twice its interval: a restarted one (a new
        instance) takes its name back once the old process has been silent that long.
        """
        with self._transaction(write=True) as tx:
            rows = tx.rows(
                "SELECT instance, seen_at, every_seconds FROM replicas WHERE environment = ? AND name = ?",
                (self.environment, replica),
            )
            if rows and rows[0]["instance"] != instance and now - rows[0]["seen_at"] < 2 * rows[0]["every_seconds"]:
                raise StoreError(
                    f"{self.name}: the replica name {replica!r} is in use by another live depmon of "
                    f"{self.environment} (heard {now - rows[0]['seen_at']:.1f} s ago): give each replica its own "
                    "monitor.replica"
                )

    def report(self, report: ReplicaReport) -> None:
        """Record a replica's heartbeat and the observations in it, in one transaction."""
        env = self.environment
        with self._transaction(write=True) as tx:
            tx.change(
                "INSERT INTO replicas (environment, name, instance, started_at, seen_at, every_seconds, self_state, "
                "self_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (environment, name) DO UPDATE SET "
                "started_at = CASE WHEN replicas.instance = excluded.instance THEN replicas.started_at "
                "ELSE excluded.started_at END, instance = excluded.instance, seen_at = excluded.seen_at, "
                "every_seconds = excluded.every_seconds, self_state = excluded.self_state, "
                "self_reason = excluded.self_reason",
                (
                    env,
                    report.replica,
                    report.instance,
                    report.at,
                    report.at,
                    report.interval,
                    report.self_state,
                    report.self_reason,
                ),
            )
            if report.dependencies is not None:
                tx.change("DELETE FROM observations WHERE environment = ? AND replica = ?", (env, report.replica))
            for dependency, seen in report.observations.items():
                tx.change(
                    "INSERT INTO observations (environment, replica, dependency, state, failing, since, at, detail) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (environment, replica, dependency) DO UPDATE SET "
                    "state = excluded.state, failing = excluded.failing, since = excluded.since, "
                    "at = excluded.at, detail = excluded.detail",
                    (
                        env,
                        report.replica,
                        dependency,
                        seen.state,
                        int(seen.failing),
                        seen.since,
                        report.at,
                        seen.detail,
                    ),
                )

    def replica_views(self) -> list[ReplicaView]:
        """Every replica of this environment heard from, by name (live or not:
        `monitor.replicas.quorum.is_live` decides)."""
        env = self.environment
        with self._transaction(write=False) as tx:
            replicas = tx.rows(
                "SELECT r.*, l.replica AS leading FROM replicas AS r "
                "LEFT JOIN leadership AS l ON l.environment = r.environment AND l.replica = r.name "
                "WHERE r.environment = ? ORDER BY r.name",
                (env,),
            )
            rows = tx.rows("SELECT * FROM observations WHERE environment = ? ORDER BY replica, dependency", (env,))
        seen: dict[str, dict[str, Observation]] = {}
        for row in rows:
            seen.setdefault(row["replica"], {})[row["dependency"]] = Observation(
                row["state"], bool(row["failing"]), row["since"], row["detail"]
            )
        return [
            ReplicaView(
                replica=r["name"],
                instance=r["instance"],
                started_at=r["started_at"],
                seen_at=r["seen_at"],
                interval=r["every_seconds"],
                leader=r["leading"] is not None,
                self_state=r["self_state"],
                self_reason=r["self_reason"],
                observations=seen.get(r["name"], {}),
            )
            for r in replicas
        ]

    def take_leadership(self, replica: str, at: float) -> int:
        """Become the leader of record of this environment: returns the new epoch, which fences every
        earlier leader's writes."""
        with self._transaction(write=True) as tx:
            return int(
                tx.rows(
                    "INSERT INTO leadership (environment, epoch, replica, since) VALUES (?, 1, ?, ?) "
                    "ON CONFLICT (environment) DO UPDATE SET epoch = leadership.epoch + 1, "
                    "replica = excluded.replica, since = excluded.since RETURNING epoch",
                    (self.environment, replica, at),
                )[0]["epoch"]
            )

    def leadership(self) -> tuple[str, int, float] | None:
        """(replica, epoch, since) of this environment's leader of record, or None before the first."""
        rows = self._rows("SELECT replica, epoch, since FROM leadership WHERE environment = ?", (self.environment,))
        return None if not rows else (rows[0]["replica"], int(rows[0]["epoch"]), float(rows[0]["since"]))
