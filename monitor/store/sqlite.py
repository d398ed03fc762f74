"""The embedded store: one SQLite file (the default, for one replica).

The file is created on first use (its directory too, 0700, the file and its -wal and -shm
companions 0600), in WAL mode, and its schema is versioned with `PRAGMA user_version`. Times
are UNIX timestamps (floats), as the daemon's clock gives them. `StateLock` keeps a second
daemon off the same file.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from monitor.errors import StateLocked, StoreError
from monitor.store.base import LANES, SqlStore

__all__ = ["SCHEMA_VERSION", "SQLiteStore", "StateLock"]

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
    # 6: replicas (SPEC 10.6): outbox claims, heartbeats, observations, the leader of record;
    # feature_history gets an explicit id (the same rowid), as the PostgreSQL schema has.
    """
    ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
    ALTER TABLE outbox ADD COLUMN claimed_until REAL;
    CREATE TABLE feature_history_v6 (
        id      INTEGER PRIMARY KEY,
        feature TEXT NOT NULL,
        state   TEXT NOT NULL,
        at      REAL NOT NULL
    );
    INSERT INTO feature_history_v6 (id, feature, state, at) SELECT rowid, feature, state, at FROM feature_history;
    DROP TABLE feature_history;
    ALTER TABLE feature_history_v6 RENAME TO feature_history;
    CREATE INDEX feature_history_by_feature ON feature_history (feature, at);
    CREATE TABLE replicas (
        name          TEXT PRIMARY KEY,
        instance      TEXT NOT NULL,
        started_at    REAL NOT NULL,
        seen_at       REAL NOT NULL,
        every_seconds REAL NOT NULL,
        self_state    TEXT NOT NULL DEFAULT 'ok',
        self_reason   TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE observations (
        replica    TEXT    NOT NULL,
        dependency TEXT    NOT NULL,
        state      TEXT    NOT NULL,
        failing    INTEGER NOT NULL,
        since      REAL    NOT NULL,
        at         REAL    NOT NULL,
        detail     TEXT    NOT NULL DEFAULT '',
        PRIMARY KEY (replica, dependency)
    );
    CREATE TABLE leadership (
        id      INTEGER PRIMARY KEY CHECK (id = 1),
        epoch   INTEGER NOT NULL,
        replica TEXT    NOT NULL,
        since   REAL    NOT NULL
    );
    """,
    # 7: every row names its environment (SPEC 11.4); the rows already here are the migrating
    # daemon's (`_ENVIRONMENT` is replaced by its name, quoted). The claim columns are renamed so
    # that no older depmon's claim can be written (see the PostgreSQL migration).
    """
    ALTER TABLE outbox ADD COLUMN environment TEXT NOT NULL DEFAULT _ENVIRONMENT;
    ALTER TABLE outbox RENAME COLUMN claimed_by TO claim_replica;
    ALTER TABLE outbox RENAME COLUMN claimed_until TO claim_until;
    DROP INDEX outbox_pending_by_key;
    CREATE INDEX outbox_pending_by_key ON outbox (environment, destination, dedup_key, id) WHERE status = 'pending';
    ALTER TABLE incidents ADD COLUMN environment TEXT NOT NULL DEFAULT _ENVIRONMENT;
    DROP INDEX incidents_by_dependency;
    CREATE INDEX incidents_by_dependency ON incidents (environment, dependency, id);
    ALTER TABLE timeline ADD COLUMN environment TEXT NOT NULL DEFAULT _ENVIRONMENT;
    ALTER TABLE feature_history ADD COLUMN environment TEXT NOT NULL DEFAULT _ENVIRONMENT;
    DROP INDEX feature_history_by_feature;
    CREATE INDEX feature_history_by_feature ON feature_history (environment, feature, at);
    ALTER TABLE silences ADD COLUMN environment TEXT NOT NULL DEFAULT _ENVIRONMENT;
    CREATE TABLE replicas_v7 (
        environment   TEXT NOT NULL,
        name          TEXT NOT NULL,
        instance      TEXT NOT NULL,
        started_at    REAL NOT NULL,
        seen_at       REAL NOT NULL,
        every_seconds REAL NOT NULL,
        self_state    TEXT NOT NULL DEFAULT 'ok',
        self_reason   TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (environment, name)
    );
    INSERT INTO replicas_v7 SELECT _ENVIRONMENT, name, instance, started_at, seen_at, every_seconds, self_state,
        self_reason FROM replicas;
    DROP TABLE replicas;
    ALTER TABLE replicas_v7 RENAME TO replicas;
    CREATE TABLE observations_v7 (
        environment TEXT    NOT NULL,
        replica     TEXT    NOT NULL,
        dependency  TEXT    NOT NULL,
        state       TEXT    NOT NULL,
        failing     INTEGER NOT NULL,
        since       REAL    NOT NULL,
        at          REAL    NOT NULL,
        detail      TEXT    NOT NULL DEFAULT '',
        PRIMARY KEY (environment, replica, dependency)
    );
    INSERT INTO observations_v7 SELECT _ENVIRONMENT, replica, dependency, state, failing, since, at, detail
        FROM observations;
    DROP TABLE observations;
    ALTER TABLE observations_v7 RENAME TO observations;
    CREATE TABLE leadership_v7 (
        environment TEXT    PRIMARY KEY,
        epoch       INTEGER NOT NULL,
        replica     TEXT    NOT NULL,
        since       REAL    NOT NULL
    );
    INSERT INTO leadership_v7 SELECT _ENVIRONMENT, epoch, replica, since FROM leadership;
    DROP TABLE leadership;
    ALTER TABLE leadership_v7 RENAME TO leadership;
    """,
    # 8: escalation's REST writes (SPEC 11.2): a row may wait for another (`after_id`: its trigger)
    # and be `cancelled` (its incident resolved, its trigger dropped). SQLite cannot change a CHECK:
    # the table is rebuilt, its AUTOINCREMENT sequence kept so that no id is given twice.
    """
    CREATE TABLE outbox_v8 (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        dedup_key       TEXT    NOT NULL,
        action          TEXT    NOT NULL CHECK (action IN ('trigger', 'resolve')),
        body            TEXT    NOT NULL,
        created_at      REAL    NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL    NOT NULL,
        status          TEXT    NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'accepted', 'dropped', 'dry_run', 'cancelled')),
        last_error      TEXT,
        delivered_at    REAL,
        destination     TEXT    NOT NULL DEFAULT 'pagerduty',
        claim_replica   TEXT,
        claim_until     REAL,
        environment     TEXT    NOT NULL,
        after_id        INTEGER
    );
    INSERT INTO outbox_v8 (id, dedup_key, action, body, created_at, attempts, next_attempt_at, status, last_error,
                           delivered_at, destination, claim_replica, claim_until, environment)
        SELECT id, dedup_key, action, body, created_at, attempts, next_attempt_at, status, last_error,
               delivered_at, destination, claim_replica, claim_until, environment FROM outbox;
    INSERT INTO sqlite_sequence (name, seq)
        SELECT 'outbox_v8', COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0)
        WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'outbox_v8');
    UPDATE sqlite_sequence SET seq = MAX(seq, COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0))
        WHERE name = 'outbox_v8';
    DROP TABLE outbox;
    ALTER TABLE outbox_v8 RENAME TO outbox;
    CREATE INDEX outbox_pending_by_key ON outbox (environment, destination, dedup_key, id) WHERE status = 'pending';
    CREATE INDEX outbox_settled_by_age ON outbox (created_at) WHERE status != 'pending';
    CREATE INDEX outbox_after ON outbox (after_id) WHERE after_id IS NOT NULL;
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)

# The features of an environment that have history, one index seek each (a loose index scan:
# SQLite would otherwise read every row to find the distinct names), so reads and pruning cost
# features, not rows. `scope` holds the two parameters: the environment, and a time.
_HISTORY_FEATURES = """
    WITH RECURSIVE scope (env, moment) AS (SELECT ?, ?),
    features (feature) AS (
        SELECT MIN(feature) FROM feature_history WHERE environment = (SELECT env FROM scope)
        UNION ALL
        SELECT (SELECT MIN(feature) FROM feature_history
                WHERE environment = (SELECT env FROM scope) AND feature > features.feature)
        FROM features WHERE features.feature IS NOT NULL
    )
"""
# The last change of each feature before the scope's time: the state in force then.
_LAST_CHANGE_BEFORE = """
    SELECT (SELECT id FROM feature_history AS h
            WHERE h.environment = (SELECT env FROM scope) AND h.feature = features.feature
              AND h.at < (SELECT moment FROM scope)
            ORDER BY h.at DESC, h.id DESC LIMIT 1)
    FROM features WHERE features.feature IS NOT NULL
"""


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


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def rows(self, sql: str, parameters: Sequence[object] = ()) -> list[Any]:
        return self._db.execute(sql, parameters).fetchall()

    def change(self, sql: str, parameters: Sequence[object] = ()) -> int:
        return self._db.execute(sql, parameters).rowcount

    def insert(self, sql: str, parameters: Sequence[object] = ()) -> int:
        return int(self._db.execute(sql, parameters).fetchone()["id"])

    def reserve_ids(self, table: str, count: int) -> list[int]:
        # The ids AUTOINCREMENT would give: past the highest ever given and the highest now. The
        # write transaction (BEGIN IMMEDIATE) holds the file's write lock: nobody takes them meanwhile.
        top = self._db.execute(
            f"SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = ?), 0), "  # noqa: S608 (a table of ours)
            f"COALESCE((SELECT MAX(id) FROM {table}), 0))",
            (table,),
        ).fetchone()[0]
        return list(range(top + 1, top + 1 + count))


class SQLiteStore(SqlStore):
    """The state file with blocking methods; safe to share between threads (calls are serialized)."""

    # Constant text only (S608): the parameters are bound, never formatted in.
    _HISTORY_SINCE = f"""{_HISTORY_FEATURES}
        SELECT feature, state, at, id AS seq FROM feature_history WHERE id IN ({_LAST_CHANGE_BEFORE})
        UNION ALL
        SELECT h.feature, h.state, h.at, h.id FROM features JOIN feature_history AS h
            ON h.environment = (SELECT env FROM scope) AND h.feature = features.feature
            AND h.at >= (SELECT moment FROM scope)
        ORDER BY feature, at, seq
    """  # noqa: S608
    _PRUNE_HISTORY = f"""{_HISTORY_FEATURES}
        DELETE FROM feature_history WHERE environment = (SELECT env FROM scope)
            AND at < (SELECT moment FROM scope) AND id NOT IN ({_LAST_CHANGE_BEFORE})
    """  # noqa: S608
    _PRUNE_SILENCES = "DELETE FROM silences WHERE environment = ? AND MIN(ends_at, COALESCE(expired_at, ends_at)) < ?"

    def __init__(self, state_path: str | os.PathLike[str], *, environment: str, lane: str = "other") -> None:
        self.state_path = str(state_path)
        self.name = self.state_path
        self.environment = environment
        self.lane_name = lane
        self._lock = threading.RLock()
        self._connection: sqlite3.Connection | None = None
        self._closed = False

    def lane(self, name: str) -> SQLiteStore:
        """The same file on a connection of its own; ":memory:" has one connection, so itself."""
        if self.state_path == ":memory:":
            return self
        return SQLiteStore(self.state_path, environment=self.environment, lane=name)

    # -- connection -------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        """The connection, opened (and the file created and migrated) on first use."""
        if self._closed:
            raise StoreError(f"{self.state_path}: the store is closed")
        if self._connection is None:
            self._connection = self._open()
        return self._connection

    @contextlib.contextmanager
    def _transaction(self, *, write: bool) -> Iterator[_Transaction]:
        with self._lock:  # fetches happen under the lock too: cursors share the connection
            db = self._db()
            if not write:
                yield _Transaction(db)
                return
            db.execute("BEGIN IMMEDIATE")
            try:
                yield _Transaction(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

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
            # SQLite's one lock timeout: how long a write waits for another connection's.
            connection.execute(f"PRAGMA busy_timeout = {int(LANES[self.lane_name].lock * 1000)}")
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
        environment = "'" + self.environment.replace("'", "''") + "'"  # a literal: executescript binds nothing
        for target, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            script = script.replace("_ENVIRONMENT", environment)
            # executescript commits first; the BEGIN makes the step and its version bump atomic.
            connection.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {target};\nCOMMIT;")

    @property
    def schema_version(self) -> int:
        """The file's schema version (`PRAGMA user_version`)."""
        return int(self._rows("PRAGMA user_version")[0][0])

    @property
    def journal_mode(self) -> str:
        """The file's journal mode: `wal` for a file, `memory` for ":memory:"."""
        return str(self._rows("PRAGMA journal_mode")[0][0])


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
