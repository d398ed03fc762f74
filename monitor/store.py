"""Durable state in one SQLite file: the PagerDuty outbox, incidents and their timelines, feature history.

One implementation, two faces:

- `SyncStore` holds the connection and every query; its methods block. The CLI
  (`depmon postmortem`, which runs without an event loop) uses it directly.
- `Store` is what the daemon uses: each async method runs the matching `SyncStore` method in a
  worker thread, one at a time (a `CapacityLimiter(1)`), so SQLite never blocks the event loop.

The file is created on first use (its directory too), in WAL mode, and its schema is versioned
with `PRAGMA user_version`. Times are UNIX timestamps (floats), as the daemon's clock gives them.
An outbox body never holds the routing key: it is a secret, and secrets never go to disk; the
sender adds it when it sends.

Exceptions::

    StoreError    the file was written by a newer depmon, or is not a depmon state file
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

import anyio
import anyio.to_thread

__all__ = [
    "SCHEMA_VERSION",
    "Incident",
    "IncidentWrite",
    "OutboxEvent",
    "Silence",
    "StateLock",
    "StateLocked",
    "Store",
    "StoreError",
    "SyncStore",
    "TimelineEntry",
]

Action = Literal["trigger", "resolve"]
PAGERDUTY = "pagerduty"  # the outbox destination of PagerDuty events; Slack posts go to `slack:<channel>`
OutboxStatus = Literal["pending", "accepted", "dropped", "dry_run"]

# Each entry migrates the schema from version N to N+1; user_version counts the applied ones.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE outbox (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        dedup_key       TEXT    NOT NULL,
        action          TEXT    NOT NULL CHECK (action IN ('trigger', 'resolve')),
        body            TEXT    NOT NULL,
        created_at      REAL    NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL    NOT NULL,
        status          TEXT    NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'accepted', 'rejected', 'dry_run')),
        last_error      TEXT,
        delivered_at    REAL
    );
    CREATE INDEX outbox_pending_by_key ON outbox (dedup_key, id) WHERE status = 'pending';
    CREATE TABLE incidents (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        dependency  TEXT    NOT NULL,
        dedup_key   TEXT    NOT NULL,
        opened_at   REAL    NOT NULL,
        resolved_at REAL,
        escalated   INTEGER NOT NULL DEFAULT 0,
        features    TEXT    NOT NULL DEFAULT '[]',
        summary     TEXT    NOT NULL DEFAULT '',
        severity    TEXT    NOT NULL DEFAULT '',
        data        TEXT    NOT NULL DEFAULT '{}'
    );
    CREATE INDEX incidents_by_dependency ON incidents (dependency, id);
    CREATE TABLE timeline (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        incident_id INTEGER NOT NULL REFERENCES incidents (id),
        at          REAL    NOT NULL,
        kind        TEXT    NOT NULL,
        data        TEXT    NOT NULL DEFAULT '{}'
    );
    CREATE INDEX timeline_by_incident ON timeline (incident_id, at, id);
    """,
    # 2: a 400 is `dropped` (the only final failure); incidents remember the resolve hold and
    # flapping; indexes for retention pruning.
    """
    CREATE TABLE outbox_v2 (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        dedup_key       TEXT    NOT NULL,
        action          TEXT    NOT NULL CHECK (action IN ('trigger', 'resolve')),
        body            TEXT    NOT NULL,
        created_at      REAL    NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL    NOT NULL,
        status          TEXT    NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'accepted', 'dropped', 'dry_run')),
        last_error      TEXT,
        delivered_at    REAL
    );
    INSERT INTO outbox_v2
        SELECT id, dedup_key, action, body, created_at, attempts, next_attempt_at,
               CASE status WHEN 'rejected' THEN 'dropped' ELSE status END, last_error, delivered_at
        FROM outbox;
    DROP TABLE outbox;
    ALTER TABLE outbox_v2 RENAME TO outbox;
    CREATE INDEX outbox_pending_by_key ON outbox (dedup_key, id) WHERE status = 'pending';
    CREATE INDEX outbox_settled_by_age ON outbox (created_at) WHERE status != 'pending';
    ALTER TABLE incidents ADD COLUMN up_since REAL;
    ALTER TABLE incidents ADD COLUMN flapping INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX incidents_by_resolution ON incidents (resolved_at);
    """,
    # 3: each feature's state changes, for the status page's last 24 hours.
    """
    CREATE TABLE feature_history (
        feature TEXT NOT NULL,
        state   TEXT NOT NULL,
        at      REAL NOT NULL
    );
    CREATE INDEX feature_history_by_feature ON feature_history (feature, at);
    """,
    # 4: silences (`depmon silence`): no page for a dependency until `ends_at`.
    """
    CREATE TABLE silences (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        dependency TEXT    NOT NULL,
        created_at REAL    NOT NULL,
        ends_at    REAL    NOT NULL,
        reason     TEXT    NOT NULL,
        expired_at REAL
    );
    CREATE INDEX silences_by_end ON silences (ends_at);
    """,
    # 5: an outbox row goes to PagerDuty or to a Slack channel (`slack:<channel>`); each
    # destination and dedup key is its own ordered queue.
    """
    ALTER TABLE outbox ADD COLUMN destination TEXT NOT NULL DEFAULT 'pagerduty';
    DROP INDEX outbox_pending_by_key;
    CREATE INDEX outbox_pending_by_key ON outbox (destination, dedup_key, id) WHERE status = 'pending';
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)


class StoreError(Exception):
    """The state file cannot be used (newer schema, or not a depmon state file)."""


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One PagerDuty event in the outbox; `body` is the Events v2 event without the routing key."""

    id: int
    dedup_key: str
    action: Action
    body: dict[str, Any]
    created_at: float
    attempts: int
    next_attempt_at: float
    status: OutboxStatus
    last_error: str | None
    delivered_at: float | None
    destination: str = "pagerduty"  # or `slack:<channel>`


@dataclass(frozen=True, slots=True)
class Incident:
    """One incident (one root cause); `resolved_at` is None while it is open."""

    id: int
    dependency: str
    dedup_key: str
    opened_at: float
    resolved_at: float | None
    escalated: bool
    features: list[str]
    summary: str
    severity: str
    data: dict[str, Any]
    up_since: float | None = None  # up again since then: the resolve hold runs
    flapping: bool = False  # failed again inside the resolve hold

    @property
    def is_open(self) -> bool:
        """True until the incident is resolved."""
        return self.resolved_at is None


@dataclass(frozen=True, slots=True)
class IncidentWrite:
    """Everything one incident decision writes; `SyncStore.apply` commits it in one transaction.

    `incident_id` None opens a new incident (at `at`); otherwise the incident's features,
    escalation, flapping and hold are set to these values, and `resolved` closes it. `event` is
    the outbox row (action, Events v2 body), if the decision sends one; `kind` and `timeline`
    are the timeline entry.
    """

    dependency: str
    dedup_key: str
    at: float
    kind: str
    timeline: dict[str, Any]
    incident_id: int | None = None
    event: tuple[Action, dict[str, Any]] | None = None
    messages: Sequence[tuple[str, Action, dict[str, Any]]] = ()  # (destination, action, body): Slack posts
    features: Sequence[str] = ()
    summary: str = ""
    severity: str = ""
    escalated: bool = False
    flapping: bool = False
    up_since: float | None = None
    resolved: bool = False


@dataclass(frozen=True, slots=True)
class Silence:
    """No page for `dependency` from `created_at` until `ends_at` (or until expired by hand)."""

    id: int
    dependency: str
    created_at: float
    ends_at: float
    reason: str
    expired_at: float | None = None

    def active_at(self, now: float) -> bool:
        """True while the silence holds at UNIX time `now`."""
        return self.created_at <= now < self.ends_at and (self.expired_at is None or now < self.expired_at)


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One line of an incident's timeline: a state change, evidence, an event sent."""

    incident_id: int
    at: float
    kind: str
    data: dict[str, Any]


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _outbox_event(row: sqlite3.Row) -> OutboxEvent:
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
    )


def _incident(row: sqlite3.Row) -> Incident:
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


# The oldest pending event of each dedup key: only it may be sent, so each key delivers in order.
_HEADS = """
    SELECT * FROM outbox AS o
    WHERE o.status = 'pending'
      AND o.id = (
        SELECT MIN(id) FROM outbox
        WHERE status = 'pending' AND destination = o.destination AND dedup_key = o.dedup_key
      )
"""
_DUE_HEADS = _HEADS + " AND o.next_attempt_at <= ? ORDER BY o.id"
_EARLIEST_HEAD = "SELECT MIN(next_attempt_at) FROM (" + _HEADS + ")"  # noqa: S608 (constant text)

# The features that have history, one index seek each (a loose index scan: SQLite would otherwise
# read every row to find the distinct names), so reads and pruning cost features, not rows.
_HISTORY_FEATURES = """
    WITH RECURSIVE features (feature) AS (
        SELECT MIN(feature) FROM feature_history
        UNION ALL
        SELECT (SELECT MIN(feature) FROM feature_history WHERE feature > features.feature)
        FROM features WHERE features.feature IS NOT NULL
    )
"""
# The last change of each feature before a time: the state in force then.
_LAST_CHANGE_BEFORE = """
    SELECT (SELECT rowid FROM feature_history AS h WHERE h.feature = features.feature AND h.at < ?
            ORDER BY h.at DESC, h.rowid DESC LIMIT 1)
    FROM features WHERE features.feature IS NOT NULL
"""
# Constant text only (S608): the parameters are bound, never formatted in.
_HISTORY_SINCE = f"""{_HISTORY_FEATURES}
    SELECT feature, state, at, rowid AS seq FROM feature_history WHERE rowid IN ({_LAST_CHANGE_BEFORE})
    UNION ALL
    SELECT h.feature, h.state, h.at, h.rowid FROM features JOIN feature_history AS h
        ON h.feature = features.feature AND h.at >= ?
    ORDER BY feature, at, seq
"""  # noqa: S608
_PRUNE_HISTORY = f"""{_HISTORY_FEATURES}
    DELETE FROM feature_history WHERE at < ? AND rowid NOT IN ({_LAST_CHANGE_BEFORE})
"""  # noqa: S608


def _private_directory(directory: Path) -> None:
    """Create the state file's missing directories as 0700; an existing one is left as it is (a mount
    point or a StateDirectory that Kubernetes or systemd made is the operator's)."""
    missing = []
    current = directory
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    directory.mkdir(parents=True, exist_ok=True)
    for created in missing:
        os.chmod(created, 0o700)


def _private_file(path: Path, *, create: bool) -> None:
    """Make `path` 0600; when asked, create it empty first so it is never readable by others."""
    if create:
        try:
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            os.fchmod(handle, 0o600)  # the umask may have taken bits away from the owner
            os.close(handle)
            return
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    if mode & 0o077:
        os.chmod(path, 0o600)


def _reason(exc: OSError | sqlite3.Error) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or exc.__class__.__name__
    return str(exc) or exc.__class__.__name__


class SyncStore:
    """The state file with blocking methods; safe to share between threads (calls are serialized)."""

    def __init__(self, state_path: str | os.PathLike[str]) -> None:
        self.state_path = str(state_path)
        self._lock = threading.RLock()
        self._connection: sqlite3.Connection | None = None
        self._closed = False

    # -- connection -------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        """The connection, opened (and the file created and migrated) on first use."""
        if self._closed:
            raise StoreError(f"{self.state_path}: the store is closed")
        if self._connection is None:
            self._connection = self._open()
        return self._connection

    def _open(self) -> sqlite3.Connection:
        """Open (creating and migrating) the state file; raises StoreError saying why it cannot be used.

        The state holds incidents and PagerDuty event bodies: a directory depmon creates is 0700 and
        the file with its -wal and -shm companions 0600, whatever the umask (chmod after create).
        """
        private = self.state_path != ":memory:"
        try:
            if private:
                _private_directory(Path(self.state_path).parent)
                _private_file(Path(self.state_path), create=True)
            # isolation_level=None: autocommit; multi-statement changes use explicit transactions.
            connection = sqlite3.connect(self.state_path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{self.state_path}: cannot open the state file ({_reason(exc)})") from exc
        try:
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA journal_mode = WAL")
            # FULL: an event the outbox has accepted survives a power cut, not only a crash.
            connection.execute("PRAGMA synchronous = FULL")
            connection.execute("PRAGMA foreign_keys = ON")
            connection.execute("PRAGMA busy_timeout = 5000")
            self._migrate(connection)
            if private:
                for suffix in ("-wal", "-shm"):
                    _private_file(Path(self.state_path + suffix), create=False)
        except sqlite3.OperationalError as exc:  # a full disk, a read-only file, an I/O error
            connection.close()
            raise StoreError(f"{self.state_path}: cannot use the state file ({_reason(exc)})") from exc
        except sqlite3.DatabaseError as exc:
            connection.close()
            raise StoreError(f"{self.state_path}: not a usable depmon state file ({_reason(exc)})") from exc
        except OSError as exc:
            connection.close()
            raise StoreError(f"{self.state_path}: cannot make the state file private ({_reason(exc)})") from exc
        except BaseException:
            connection.close()
            raise
        return connection

    def _migrate(self, connection: sqlite3.Connection) -> None:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.state_path}: schema version {version} was written by a newer depmon "
                f"(this one knows up to {SCHEMA_VERSION})"
            )
        for target, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            # executescript commits first; the BEGIN makes the step and its version bump atomic.
            connection.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {target};\nCOMMIT;")

    def _execute(self, sql: str, parameters: Sequence[object] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db().execute(sql, parameters)

    def _rows(self, sql: str, parameters: Sequence[object] = ()) -> list[sqlite3.Row]:
        with self._lock:  # fetch under the lock too: the cursor shares the connection
            return self._db().execute(sql, parameters).fetchall()

    def _row(self, sql: str, parameters: Sequence[object] = ()) -> sqlite3.Row | None:
        rows = self._rows(sql, parameters)
        return rows[0] if rows else None

    def _one_changed(self, cursor: sqlite3.Cursor, what: str, ident: int) -> None:
        if cursor.rowcount != 1:
            raise KeyError(f"no {what} with id {ident}")

    def close(self) -> None:
        """Close the connection; later calls raise `StoreError`. Closing twice is harmless."""
        with self._lock:
            self._closed = True
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def __enter__(self) -> SyncStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        """The file's schema version (`PRAGMA user_version`)."""
        return int(self._rows("PRAGMA user_version")[0][0])

    @property
    def journal_mode(self) -> str:
        """The file's journal mode: `wal` for a file, `memory` for ":memory:"."""
        return str(self._rows("PRAGMA journal_mode")[0][0])

    # -- outbox -----------------------------------------------------------------------------

    def enqueue(
        self, dedup_key: str, action: Action, body: dict[str, Any], at: float, destination: str = PAGERDUTY
    ) -> int:
        """Append an event, due now; returns its id. A `routing_key` in `body` is never stored."""
        if action not in ("trigger", "resolve"):
            raise ValueError(f"outbox action must be trigger or resolve, not {action!r}")
        safe_body = {key: value for key, value in body.items() if key != "routing_key"}
        cursor = self._execute(
            "INSERT INTO outbox (dedup_key, action, body, created_at, next_attempt_at, destination) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (dedup_key, action, _dumps(safe_body), at, at, destination),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def pending_heads(self, now: float) -> list[OutboxEvent]:
        """The oldest pending event of each dedup key, if due (`next_attempt_at <= now`), oldest first."""
        rows = self._rows(_DUE_HEADS, (now,))
        return [_outbox_event(row) for row in rows]

    def next_attempt_at(self) -> float | None:
        """When the earliest pending head falls due; None when nothing is pending."""
        row = self._row(_EARLIEST_HEAD)
        return None if row is None or row[0] is None else float(row[0])

    def outbox_event(self, event_id: int) -> OutboxEvent:
        """One outbox event by id (KeyError if there is none)."""
        row = self._row("SELECT * FROM outbox WHERE id = ?", (event_id,))
        if row is None:
            raise KeyError(f"no outbox event with id {event_id}")
        return _outbox_event(row)

    def outbox_events(self, dedup_key: str | None = None) -> list[OutboxEvent]:
        """Every outbox event (of one dedup key, when given), oldest first."""
        if dedup_key is None:
            rows = self._rows("SELECT * FROM outbox ORDER BY id")
        else:
            rows = self._rows("SELECT * FROM outbox WHERE dedup_key = ? ORDER BY id", (dedup_key,))
        return [_outbox_event(row) for row in rows]

    def mark_accepted(self, event_id: int, at: float) -> None:
        """PagerDuty accepted the event (202)."""
        cursor = self._execute(
            "UPDATE outbox SET status = 'accepted', delivered_at = ?, attempts = attempts + 1 "
            "WHERE id = ? AND status = 'pending'",
            (at, event_id),
        )
        self._one_changed(cursor, "pending outbox event", event_id)

    def mark_dropped(self, event_id: int, reason: str) -> None:
        """PagerDuty refused the event itself (400): it is never retried; `reason` says why."""
        cursor = self._execute(
            "UPDATE outbox SET status = 'dropped', last_error = ?, attempts = attempts + 1 "
            "WHERE id = ? AND status = 'pending'",
            (reason, event_id),
        )
        self._one_changed(cursor, "pending outbox event", event_id)

    def mark_dry_run(self, event_id: int) -> None:
        """No routing key is configured: the event was logged instead of sent."""
        cursor = self._execute("UPDATE outbox SET status = 'dry_run' WHERE id = ? AND status = 'pending'", (event_id,))
        self._one_changed(cursor, "pending outbox event", event_id)

    def schedule_retry(self, event_id: int, next_attempt_at: float, error: str) -> None:
        """A delivery attempt failed transiently; try again at `next_attempt_at`."""
        cursor = self._execute(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? "
            "WHERE id = ? AND status = 'pending'",
            (next_attempt_at, error, event_id),
        )
        self._one_changed(cursor, "pending outbox event", event_id)

    def pending_count(self) -> int:
        """How many events wait for delivery."""
        row = self._row("SELECT COUNT(*) FROM outbox WHERE status = 'pending'")
        return 0 if row is None else int(row[0])

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
        cursor = self._execute(
            "INSERT INTO incidents (dependency, dedup_key, opened_at, escalated, features, summary, severity, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
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
        assert cursor.lastrowid is not None
        return cursor.lastrowid

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
        cursor = self._execute(
            f"UPDATE incidents SET {assignments} WHERE id = ?",  # noqa: S608
            (*changes.values(), incident_id),
        )
        self._one_changed(cursor, "incident", incident_id)

    def resolve_incident(self, incident_id: int, at: float) -> None:
        """Close an open incident at `at` (resolving a resolved one keeps its first resolution)."""
        cursor = self._execute(
            "UPDATE incidents SET resolved_at = COALESCE(resolved_at, ?) WHERE id = ?", (at, incident_id)
        )
        self._one_changed(cursor, "incident", incident_id)

    def incident(self, incident_id: int) -> Incident:
        """One incident by id (KeyError if there is none)."""
        row = self._row("SELECT * FROM incidents WHERE id = ?", (incident_id,))
        if row is None:
            raise KeyError(f"no incident with id {incident_id}")
        return _incident(row)

    def open_incidents(self) -> list[Incident]:
        """Every incident not yet resolved, oldest first (a restarted daemon reloads these)."""
        rows = self._rows("SELECT * FROM incidents WHERE resolved_at IS NULL ORDER BY id")
        return [_incident(row) for row in rows]

    def incidents_of(self, dependency: str) -> list[Incident]:
        """Every incident of a dependency, open or resolved, newest last."""
        rows = self._rows("SELECT * FROM incidents WHERE dependency = ? ORDER BY id", (dependency,))
        return [_incident(row) for row in rows]

    def add_timeline(self, incident_id: int, at: float, kind: str, data: dict[str, Any] | None = None) -> None:
        """Append one entry to an incident's timeline."""
        try:
            self._execute(
                "INSERT INTO timeline (incident_id, at, kind, data) VALUES (?, ?, ?, ?)",
                (incident_id, at, kind, _dumps(data or {})),
            )
        except sqlite3.IntegrityError as exc:
            raise KeyError(f"no incident with id {incident_id}") from exc

    def timeline(self, incident_id: int) -> list[TimelineEntry]:
        """An incident's timeline in time order (ties in insertion order)."""
        rows = self._rows("SELECT * FROM timeline WHERE incident_id = ? ORDER BY at, id", (incident_id,))
        return [TimelineEntry(row["incident_id"], row["at"], row["kind"], json.loads(row["data"])) for row in rows]

    # -- feature history --------------------------------------------------------------------

    def record_feature_states(self, changes: Sequence[tuple[str, str, float]]) -> int:
        """Append (feature, state, at) changes in one transaction; returns how many rows were written.

        A change that repeats the state already recorded last for its feature is skipped: the
        daemon records every feature's state at start and after a reload, most of them unchanged.
        """
        written = 0
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                last: dict[str, str | None] = {}
                for feature, state, at in changes:
                    if feature not in last:
                        row = db.execute(
                            "SELECT state FROM feature_history WHERE feature = ? ORDER BY at DESC, rowid DESC LIMIT 1",
                            (feature,),
                        ).fetchone()
                        last[feature] = None if row is None else row["state"]
                    if last[feature] == state:
                        continue
                    db.execute(
                        "INSERT INTO feature_history (feature, state, at) VALUES (?, ?, ?)", (feature, state, at)
                    )
                    last[feature] = state
                    written += 1
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return written

    def feature_history(self, since: float) -> dict[str, list[tuple[float, str]]]:
        """Feature -> its (at, state) changes from `since` on, in time order.

        Each list starts with the state in force at `since` (the last change before it, with its
        own earlier time) when there is one; a feature with no change before `since` starts
        with its first change after it.
        """
        history: dict[str, list[tuple[float, str]]] = {}
        for row in self._rows(_HISTORY_SINCE, (since, since)):
            history.setdefault(row["feature"], []).append((row["at"], row["state"]))
        return history

    # -- silences ---------------------------------------------------------------------------

    def add_silence(self, dependency: str, created_at: float, ends_at: float, reason: str) -> int:
        """Record a silence; returns its id."""
        cursor = self._execute(
            "INSERT INTO silences (dependency, created_at, ends_at, reason) VALUES (?, ?, ?, ?)",
            (dependency, created_at, ends_at, reason),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def silences(self, active_at: float | None = None) -> list[Silence]:
        """Every silence, oldest first, or only those active at `active_at`."""
        rows = self._rows("SELECT * FROM silences ORDER BY id")
        found = [
            Silence(r["id"], r["dependency"], r["created_at"], r["ends_at"], r["reason"], r["expired_at"]) for r in rows
        ]
        return found if active_at is None else [s for s in found if s.active_at(active_at)]

    def expire_silence(self, silence_id: int, at: float) -> None:
        """End a silence now (KeyError for an unknown id; expiring twice keeps the first time)."""
        cursor = self._execute(
            "UPDATE silences SET expired_at = COALESCE(expired_at, ?) WHERE id = ?", (at, silence_id)
        )
        self._one_changed(cursor, "silence", silence_id)

    # -- decisions, reconciliation, retention -----------------------------------------------

    def apply(self, write: IncidentWrite) -> int:
        """Commit one decision (outbox row, incident change, timeline entry) atomically; returns the incident id.

        A crash leaves either all of it or none: never a page queued without the incident that
        will resolve it, nor an incident whose page was never queued.
        """
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                incident_id = self._write_incident(db, write)
                rows = [(PAGERDUTY, *write.event)] if write.event is not None else []
                for destination, action, body in [*rows, *write.messages]:
                    safe_body = {key: value for key, value in body.items() if key != "routing_key"}
                    db.execute(
                        "INSERT INTO outbox (dedup_key, action, body, created_at, next_attempt_at, destination) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (write.dedup_key, action, _dumps(safe_body), write.at, write.at, destination),
                    )
                db.execute(
                    "INSERT INTO timeline (incident_id, at, kind, data) VALUES (?, ?, ?, ?)",
                    (incident_id, write.at, write.kind, _dumps(write.timeline)),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return incident_id

    @staticmethod
    def _write_incident(db: sqlite3.Connection, write: IncidentWrite) -> int:
        if write.incident_id is None:
            cursor = db.execute(
                "INSERT INTO incidents (dependency, dedup_key, opened_at, escalated, features, summary, severity, "
                "flapping, up_since) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    write.dependency,
                    write.dedup_key,
                    write.at,
                    int(write.escalated),
                    _dumps(list(write.features)),
                    write.summary,
                    write.severity,
                    int(write.flapping),
                    write.up_since,
                ),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid
        cursor = db.execute(
            "UPDATE incidents SET features = ?, escalated = ?, flapping = ?, up_since = ?, "
            "summary = CASE WHEN ? = '' THEN summary ELSE ? END, "
            "severity = CASE WHEN ? = '' THEN severity ELSE ? END, "
            "resolved_at = CASE WHEN ? THEN COALESCE(resolved_at, ?) ELSE resolved_at END "
            "WHERE id = ?",
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
                write.incident_id,
            ),
        )
        if cursor.rowcount != 1:
            raise KeyError(f"no incident with id {write.incident_id}")
        return write.incident_id

    def orphaned_triggers(self) -> list[OutboxEvent]:
        """Triggers whose dedup key has no open incident and no later resolve in the outbox.

        A state file written by an older depmon (which committed the trigger before the incident)
        can hold these after a kill; the daemon opens an incident for each, so a recovery resolves it.
        """
        rows = self._rows(
            "SELECT * FROM outbox AS o WHERE o.action = 'trigger' AND o.status != 'dropped' "
            "AND o.destination = 'pagerduty' "
            "AND o.id = (SELECT MAX(id) FROM outbox WHERE dedup_key = o.dedup_key AND destination = 'pagerduty') "
            "AND NOT EXISTS (SELECT 1 FROM incidents AS i WHERE i.dedup_key = o.dedup_key AND i.resolved_at IS NULL) "
            "ORDER BY o.id"
        )
        return [_outbox_event(row) for row in rows]

    def prune(self, before: float) -> tuple[int, int]:
        """Delete settled outbox rows and closed incidents (with their timelines) older than `before`,
        and the feature history and the silences that ended before it.

        Pending events and open incidents are never pruned, nor each feature's last change before
        `before` (the state in force then). Returns (events, incidents) deleted.
        """
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                events = db.execute(
                    "DELETE FROM outbox WHERE status != 'pending' AND COALESCE(delivered_at, created_at) < ?",
                    (before,),
                ).rowcount
                old = "SELECT id FROM incidents WHERE resolved_at IS NOT NULL AND resolved_at < ?"
                db.execute(f"DELETE FROM timeline WHERE incident_id IN ({old})", (before,))  # noqa: S608
                incidents = db.execute(f"DELETE FROM incidents WHERE id IN ({old})", (before,)).rowcount  # noqa: S608
                db.execute(_PRUNE_HISTORY, (before, before))
                db.execute("DELETE FROM silences WHERE MIN(ends_at, COALESCE(expired_at, ends_at)) < ?", (before,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return events, incidents


_P = ParamSpec("_P")
_T = TypeVar("_T")


class Store:
    """The state file for async code: each method runs its `SyncStore` twin in one worker thread.

    `Store(path)` is cheap and does no I/O; the file is opened on the first call. `store.sync` is
    the blocking face of the same file, for code without an event loop.
    """

    def __init__(self, state_path: str | os.PathLike[str]) -> None:
        self.sync = SyncStore(state_path)
        self._limiter = anyio.CapacityLimiter(1)

    @property
    def state_path(self) -> str:
        """The file path, or ":memory:"."""
        return self.sync.state_path

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
        """See `SyncStore.enqueue`."""
        return await self._call(self.sync.enqueue, dedup_key, action, body, at, destination)

    async def pending_heads(self, now: float) -> list[OutboxEvent]:
        """See `SyncStore.pending_heads`."""
        return await self._call(self.sync.pending_heads, now)

    async def next_attempt_at(self) -> float | None:
        """See `SyncStore.next_attempt_at`."""
        return await self._call(self.sync.next_attempt_at)

    async def outbox_event(self, event_id: int) -> OutboxEvent:
        """See `SyncStore.outbox_event`."""
        return await self._call(self.sync.outbox_event, event_id)

    async def outbox_events(self, dedup_key: str | None = None) -> list[OutboxEvent]:
        """See `SyncStore.outbox_events`."""
        return await self._call(self.sync.outbox_events, dedup_key)

    async def mark_accepted(self, event_id: int, at: float) -> None:
        """See `SyncStore.mark_accepted`."""
        await self._call(self.sync.mark_accepted, event_id, at)

    async def mark_dropped(self, event_id: int, reason: str) -> None:
        """See `SyncStore.mark_dropped`."""
        await self._call(self.sync.mark_dropped, event_id, reason)

    async def mark_dry_run(self, event_id: int) -> None:
        """See `SyncStore.mark_dry_run`."""
        await self._call(self.sync.mark_dry_run, event_id)

    async def schedule_retry(self, event_id: int, next_attempt_at: float, error: str) -> None:
        """See `SyncStore.schedule_retry`."""
        await self._call(self.sync.schedule_retry, event_id, next_attempt_at, error)

    async def pending_count(self) -> int:
        """See `SyncStore.pending_count`."""
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
        """See `SyncStore.open_incident`."""
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
        """See `SyncStore.update_incident`."""
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
        """See `SyncStore.resolve_incident`."""
        await self._call(self.sync.resolve_incident, incident_id, at)

    async def incident(self, incident_id: int) -> Incident:
        """See `SyncStore.incident`."""
        return await self._call(self.sync.incident, incident_id)

    async def open_incidents(self) -> list[Incident]:
        """See `SyncStore.open_incidents`."""
        return await self._call(self.sync.open_incidents)

    async def incidents_of(self, dependency: str) -> list[Incident]:
        """See `SyncStore.incidents_of`."""
        return await self._call(self.sync.incidents_of, dependency)

    async def add_timeline(self, incident_id: int, at: float, kind: str, data: dict[str, Any] | None = None) -> None:
        """See `SyncStore.add_timeline`."""
        await self._call(self.sync.add_timeline, incident_id, at, kind, data)

    async def timeline(self, incident_id: int) -> list[TimelineEntry]:
        """See `SyncStore.timeline`."""
        return await self._call(self.sync.timeline, incident_id)

    async def silences(self, active_at: float | None = None) -> list[Silence]:
        """See `SyncStore.silences`."""
        return await self._call(self.sync.silences, active_at)

    async def apply(self, write: IncidentWrite) -> int:
        """See `SyncStore.apply`."""
        return await self._call(self.sync.apply, write)

    async def orphaned_triggers(self) -> list[OutboxEvent]:
        """See `SyncStore.orphaned_triggers`."""
        return await self._call(self.sync.orphaned_triggers)

    async def record_feature_states(self, changes: Sequence[tuple[str, str, float]]) -> int:
        """See `SyncStore.record_feature_states`."""
        return await self._call(self.sync.record_feature_states, changes)

    async def feature_history(self, since: float) -> dict[str, list[tuple[float, str]]]:
        """See `SyncStore.feature_history`."""
        return await self._call(self.sync.feature_history, since)

    async def prune(self, before: float) -> tuple[int, int]:
        """See `SyncStore.prune`."""
        return await self._call(self.sync.prune, before)


class StateLocked(StoreError):
    """Another depmon holds the state file; `holder` says who (pid and host), when known."""

    def __init__(self, state_path: str, holder: str) -> None:
        super().__init__(f"{state_path} is in use by another depmon ({holder}): one daemon per state file")
        self.holder = holder


class StateLock:
    """An exclusive advisory lock (flock) on `<state_path>.lock`, held while the daemon runs.

    Two daemons on one state file would both deliver the same events; the second one's
    `acquire()` raises `StateLocked` naming the first. The lock is the kernel's: it goes with the
    process, so a killed daemon never leaves a stale lock. CLI readers (`postmortem`) do not take it.
    """

    def __init__(self, state_path: str) -> None:
        self.path = None if state_path == ":memory:" else Path(f"{state_path}.lock")
        self._file: Any = None

    def acquire(self) -> None:
        """Take the lock or raise `StateLocked`; a lock file that cannot be written is a `StoreError`."""
        if self.path is None:
            return
        import fcntl  # POSIX only, like the daemon
        import socket

        state_path = str(self.path)[: -len(".lock")]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held until release)
        except OSError as exc:
            raise StoreError(f"{state_path}: cannot write the lock file ({exc.strerror or exc})") from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown process"
            handle.close()
            raise StateLocked(state_path, holder) from None
        try:
            os.chmod(self.path, 0o600)
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            handle.flush()
        except OSError as exc:
            with contextlib.suppress(OSError):  # closing flushes, which fails the same way
                handle.close()
            raise StoreError(f"{state_path}: cannot write the lock file ({exc.strerror or exc})") from exc
        self._file = handle

    def release(self) -> None:
        """Let go of the lock (closing the file releases it)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
