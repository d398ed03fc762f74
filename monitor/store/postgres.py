"""The replicated store: a PostgreSQL database that several depmon replicas share (SPEC 10.6).

Same methods as the SQLite store (`SqlStore`), on psycopg 3. Its blocking API is used, like
sqlite3's, from the one worker thread `monitor.store.Store` runs every call in: one store
interface, one shared test suite, and no second async copy of each query.

- Migrations are versioned (`depmon_schema`) and run by whichever replica connects first,
  under a transaction-scoped advisory lock, so replicas starting together migrate once.
- `claim_heads` locks the heads it claims `FOR UPDATE SKIP LOCKED`: replicas delivering at the
  same instant never take the same event.
- `LeaderLock` holds a session advisory lock on a connection of its own: the leader is whoever
  holds it. Its session ends itself when the leader goes silent (`idle_session_timeout`), so a
  partitioned leader's lock is freed for another replica without any help from the leader.
- A lost connection is a `StoreError` for that call; the next call connects again.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from monitor.errors import StoreError
from monitor.logs import Redactor
from monitor.store.base import LANES, SqlStore
from monitor.urls import conninfo_passwords
from monitor.urls import redacted_conninfo as redacted_url

__all__ = ["SCHEMA_VERSION", "LeaderLock", "PostgresStore", "redacted_url"]

_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE outbox (
        id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        dedup_key       TEXT             NOT NULL,
        action          TEXT             NOT NULL CHECK (action IN ('trigger', 'resolve')),
        body            TEXT             NOT NULL,
        created_at      DOUBLE PRECISION NOT NULL,
        attempts        INTEGER          NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION NOT NULL,
        status          TEXT             NOT NULL DEFAULT 'pending'
                                         CHECK (status IN ('pending', 'accepted', 'dropped', 'dry_run')),
        last_error      TEXT,
        delivered_at    DOUBLE PRECISION,
        destination     TEXT             NOT NULL DEFAULT 'pagerduty',
        claimed_by      TEXT,
        claimed_until   DOUBLE PRECISION
    );
    CREATE INDEX outbox_pending_by_key ON outbox (destination, dedup_key, id) WHERE status = 'pending';
    CREATE INDEX outbox_settled_by_age ON outbox (created_at) WHERE status != 'pending';
    CREATE TABLE incidents (
        id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        dependency  TEXT             NOT NULL,
        dedup_key   TEXT             NOT NULL,
        opened_at   DOUBLE PRECISION NOT NULL,
        resolved_at DOUBLE PRECISION,
        escalated   INTEGER          NOT NULL DEFAULT 0,
        features    TEXT             NOT NULL DEFAULT '[]',
        summary     TEXT             NOT NULL DEFAULT '',
        severity    TEXT             NOT NULL DEFAULT '',
        data        TEXT             NOT NULL DEFAULT '{}',
        up_since    DOUBLE PRECISION,
        flapping    INTEGER          NOT NULL DEFAULT 0
    );
    CREATE INDEX incidents_by_dependency ON incidents (dependency, id);
    CREATE INDEX incidents_by_resolution ON incidents (resolved_at);
    CREATE TABLE timeline (
        id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        incident_id BIGINT           NOT NULL REFERENCES incidents (id),
        at          DOUBLE PRECISION NOT NULL,
        kind        TEXT             NOT NULL,
        data        TEXT             NOT NULL DEFAULT '{}'
    );
    CREATE INDEX timeline_by_incident ON timeline (incident_id, at, id);
    CREATE TABLE feature_history (
        id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        feature TEXT             NOT NULL,
        state   TEXT             NOT NULL,
        at      DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX feature_history_by_feature ON feature_history (feature, at);
    CREATE TABLE silences (
        id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        dependency TEXT             NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        ends_at    DOUBLE PRECISION NOT NULL,
        reason     TEXT             NOT NULL,
        expired_at DOUBLE PRECISION
    );
    CREATE INDEX silences_by_end ON silences (ends_at);
    CREATE TABLE replicas (
        name          TEXT PRIMARY KEY,
        instance      TEXT             NOT NULL,
        started_at    DOUBLE PRECISION NOT NULL,
        seen_at       DOUBLE PRECISION NOT NULL,
        every_seconds DOUBLE PRECISION NOT NULL,
        self_state    TEXT             NOT NULL DEFAULT 'ok',
        self_reason   TEXT             NOT NULL DEFAULT ''
    );
    CREATE TABLE observations (
        replica    TEXT             NOT NULL,
        dependency TEXT             NOT NULL,
        state      TEXT             NOT NULL,
        failing    INTEGER          NOT NULL,
        since      DOUBLE PRECISION NOT NULL,
        at         DOUBLE PRECISION NOT NULL,
        detail     TEXT             NOT NULL DEFAULT '',
        PRIMARY KEY (replica, dependency)
    );
    CREATE TABLE leadership (
        id      INTEGER PRIMARY KEY CHECK (id = 1),
        epoch   BIGINT           NOT NULL,
        replica TEXT             NOT NULL,
        since   DOUBLE PRECISION NOT NULL
    );
    """,
    # 2: every row names its environment (SPEC 11.4: environments may share the database); the
    # rows already here are the migrating replica's (`_ENVIRONMENT`: its name, bound). The column
    # has no default and the keys change, so an older depmon still connected cannot write a row
    # without one: its inserts fail (NOT NULL), its upserts name a conflict target that no longer
    # exists, its fence reads a column that is gone, and its outbox claims name renamed columns.
    "".join(  # noqa: S608 (table names of ours, no parameter)
        f"""
        ALTER TABLE {table} ADD COLUMN environment TEXT;
        UPDATE {table} SET environment = _ENVIRONMENT;
        ALTER TABLE {table} ALTER COLUMN environment SET NOT NULL;
        """  # noqa: S608
        for table in ("outbox", "incidents", "timeline", "feature_history", "silences", "replicas", "observations")
    )
    + """
    ALTER TABLE outbox RENAME COLUMN claimed_by TO claim_replica;
    ALTER TABLE outbox RENAME COLUMN claimed_until TO claim_until;
    DROP INDEX outbox_pending_by_key;
    CREATE INDEX outbox_pending_by_key ON outbox (environment, destination, dedup_key, id) WHERE status = 'pending';
    DROP INDEX incidents_by_dependency;
    CREATE INDEX incidents_by_dependency ON incidents (environment, dependency, id);
    DROP INDEX feature_history_by_feature;
    CREATE INDEX feature_history_by_feature ON feature_history (environment, feature, at);
    ALTER TABLE replicas DROP CONSTRAINT replicas_pkey;
    ALTER TABLE replicas ADD PRIMARY KEY (environment, name);
    ALTER TABLE observations DROP CONSTRAINT observations_pkey;
    ALTER TABLE observations ADD PRIMARY KEY (environment, replica, dependency);
    ALTER TABLE leadership ADD COLUMN environment TEXT;
    UPDATE leadership SET environment = _ENVIRONMENT;
    ALTER TABLE leadership ALTER COLUMN environment SET NOT NULL;
    ALTER TABLE leadership DROP CONSTRAINT leadership_pkey;
    ALTER TABLE leadership DROP COLUMN id;
    ALTER TABLE leadership ADD PRIMARY KEY (environment);
    """,
    # 3: escalation's REST writes (SPEC 11.2): a row may wait for another (`after_id`: its trigger)
    # and be `cancelled` (its incident resolved, its trigger dropped).
    """
    ALTER TABLE outbox DROP CONSTRAINT outbox_status_check;
    ALTER TABLE outbox ADD CONSTRAINT outbox_status_check
        CHECK (status IN ('pending', 'accepted', 'dropped', 'dry_run', 'cancelled'));
    ALTER TABLE outbox ADD COLUMN after_id BIGINT;
    CREATE INDEX outbox_after ON outbox (after_id) WHERE after_id IS NOT NULL;
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)

_MIGRATION_LOCK = 0x6465706D6F6E  # "depmon": the advisory lock migrations run under
_CONNECT = {
    "autocommit": True,
    "connect_timeout": 5,
    "application_name": "depmon",
    # A dead peer is noticed in seconds, not in the kernel's default two hours.
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 2,
    "tcp_user_timeout": 10_000,
    # A client cut off mid-transaction must not hold its row locks (the leadership row among them)
    # until the server's keepalive gives up, hours later: every transaction here is a few
    # statements sent back to back.
    "options": "-c idle_in_transaction_session_timeout=2000",
}


def _reason(exc: psycopg.Error, url: str) -> str:
    # psycopg's messages may quote the connection string it could not read, password and all.
    text = Redactor(conninfo_passwords(url)).scrub(str(exc))
    return " ".join(text.split()) or exc.__class__.__name__


def _placeholders(sql: str) -> str:
    """The shared SQL's `?` parameters as psycopg's `%s` (the shared SQL holds no `%`)."""
    return sql.replace("?", "%s")


class _Transaction:
    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self._connection = connection

    def rows(self, sql: str, parameters: Sequence[object] = ()) -> list[Any]:
        return self._connection.execute(_placeholders(sql), parameters).fetchall()

    def change(self, sql: str, parameters: Sequence[object] = ()) -> int:
        return self._connection.execute(_placeholders(sql), parameters).rowcount

    def insert(self, sql: str, parameters: Sequence[object] = ()) -> int:
        row = self._connection.execute(_placeholders(sql), parameters).fetchone()
        assert row is not None
        return int(row["id"])

    def reserve_ids(self, table: str, count: int) -> list[int]:
        # The identity's next values, in one round trip.
        taken = self.rows(
            "SELECT nextval(pg_get_serial_sequence(?, 'id')) AS id FROM generate_series(1, ?)", (table, count)
        )
        return sorted(int(row["id"]) for row in taken)


class PostgresStore(SqlStore):
    """The shared database, with blocking methods; calls are serialized on one connection."""

    # `scope` holds the two parameters: the environment, and a time.
    _HISTORY_SINCE = """
        WITH scope AS (SELECT ?::text AS env, ?::double precision AS moment)
        SELECT feature, state, at, seq FROM (
            SELECT DISTINCT ON (feature) feature, state, at, id AS seq FROM feature_history, scope
            WHERE environment = scope.env AND at < scope.moment ORDER BY feature, at DESC, id DESC
        ) AS before
        UNION ALL
        SELECT feature, state, at, id FROM feature_history, scope WHERE environment = scope.env AND at >= scope.moment
        ORDER BY feature, at, seq
    """
    _PRUNE_HISTORY = """
        WITH scope AS (SELECT ?::text AS env, ?::double precision AS moment)
        DELETE FROM feature_history USING scope WHERE environment = scope.env AND at < scope.moment AND id NOT IN (
            SELECT DISTINCT ON (feature) h.id FROM feature_history AS h, scope AS s
            WHERE h.environment = s.env AND h.at < s.moment ORDER BY h.feature, h.at DESC, h.id DESC
        )
    """
    _PRUNE_SILENCES = "DELETE FROM silences WHERE environment = ? AND LEAST(ends_at, COALESCE(expired_at, ends_at)) < ?"
    _LOCK_ROWS = " FOR UPDATE OF o SKIP LOCKED"
    _FENCE = "SELECT epoch FROM leadership WHERE environment = ? FOR SHARE"
    _OVERRIDE_IDS = " OVERRIDING SYSTEM VALUE"  # the identity is GENERATED ALWAYS

    def __init__(self, url: str, *, environment: str, lane: str = "other") -> None:
        self.url = url
        self.name = redacted_url(url)
        self.environment = environment
        self.lane_name = lane
        self._lock = threading.RLock()
        self._connection: psycopg.Connection[Any] | None = None
        self._closed = False

    def lane(self, name: str) -> PostgresStore:
        """The same database on a connection of its own, with `name`'s timeouts."""
        return PostgresStore(self.url, environment=self.environment, lane=name)

    def _db(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise StoreError(f"{self.name}: the store is closed")
        if self._connection is None or self._connection.closed:
            self._connection = self._open()
        return self._connection

    def _open(self) -> psycopg.Connection[Any]:
        try:
            timeouts = LANES[self.lane_name]
            # Every statement has a deadline, and a lock wait a shorter one (SPEC 11.4).
            options = (
                f"{_CONNECT['options']} -c lock_timeout={int(timeouts.lock * 1000)} "
                f"-c statement_timeout={int(timeouts.statement * 1000)}"
            )
            settings = dict(_CONNECT, options=options)
            connection = psycopg.connect(self.url, row_factory=dict_row, **settings)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise StoreError(f"{self.name}: cannot connect ({_reason(exc, self.url)})") from exc
        try:
            self._migrate(connection)
        except BaseException:
            connection.close()
            raise
        return connection

    def _migrate(self, connection: psycopg.Connection[Any]) -> None:
        try:
            with connection.transaction():
                # Replicas starting together wait for the first one's migration, however long it takes.
                connection.execute("SET LOCAL lock_timeout = 0")
                connection.execute("SET LOCAL statement_timeout = 0")
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                connection.execute("CREATE TABLE IF NOT EXISTS depmon_schema (version INTEGER NOT NULL)")
                row = connection.execute("SELECT version FROM depmon_schema").fetchone()
                version = 0 if row is None else int(row["version"])
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.name}: schema version {version} was written by a newer depmon "
                        f"(this one knows up to {SCHEMA_VERSION})"
                    )
                environment = sql.Literal(self.environment).as_string(connection)
                for script in _MIGRATIONS[version:]:
                    # No parameters (several statements at once): the environment is quoted by psycopg.
                    connection.execute(script.replace("_ENVIRONMENT", environment).encode())
                if row is None:
                    connection.execute("INSERT INTO depmon_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
                else:
                    connection.execute("UPDATE depmon_schema SET version = %s", (max(version, SCHEMA_VERSION),))
        except psycopg.Error as exc:
            raise StoreError(f"{self.name}: cannot prepare the database ({_reason(exc, self.url)})") from exc

    @contextlib.contextmanager
    def _transaction(self, *, write: bool) -> Iterator[_Transaction]:
        with self._lock:
            connection = self._db()
            try:
                with connection.transaction():
                    yield _Transaction(connection)
            except psycopg.OperationalError as exc:  # the connection is gone: the next call reconnects
                with contextlib.suppress(psycopg.Error):
                    connection.close()
                self._connection = None
                raise StoreError(f"{self.name}: {_reason(exc, self.url)}") from exc

    @property
    def schema_version(self) -> int:
        """The database's schema version (`depmon_schema`)."""
        return int(self._rows("SELECT version FROM depmon_schema")[0]["version"])


def leader_key(environment: str) -> int:
    """The advisory lock key of an environment's leader (environments may share a database).

    It names the schema version: a replica of an older schema, which can no longer write, never
    holds the lock the replicas of this one elect their leader with.
    """
    digest = hashlib.blake2b(f"depmon leader {environment} schema {SCHEMA_VERSION}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class LeaderLock:
    """Leadership: a session advisory lock held on a connection of its own (blocking methods).

    `silence_limit` seconds without a query from the holder end its session on the server
    (`idle_session_timeout`), which frees the lock for another replica even when the holder is
    cut off and cannot say goodbye. The holder queries (`check`) far more often than that.
    """

    def __init__(self, url: str, key: int, silence_limit: float) -> None:
        self.url = url
        self.name = redacted_url(url)
        self.key = key
        self.silence_limit = silence_limit
        self._connection: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        """Take the lock if it is free; True when held (also when it was already held)."""
        with self._lock:
            try:
                if self._connection is None or self._connection.closed:
                    options = dict(_CONNECT, tcp_user_timeout=max(1, int(self.silence_limit * 1000)))
                    self._connection = psycopg.connect(self.url, row_factory=dict_row, **options)  # type: ignore[arg-type]
                    limit = max(1, int(self.silence_limit * 1000))
                    self._connection.execute(f"SET idle_session_timeout = {limit}")
                row = self._connection.execute("SELECT pg_try_advisory_lock(%s) AS held", (self.key,)).fetchone()
            except psycopg.Error as exc:
                self._drop()
                raise StoreError(f"{self.name}: leader lock: {_reason(exc, self.url)}") from exc
            return bool(row and row["held"])

    def check(self) -> None:
        """Prove the lock is still held (its session is alive); StoreError when it is not."""
        with self._lock:
            if self._connection is None:
                raise StoreError(f"{self.name}: leader lock: not held")
            try:
                row = self._connection.execute(
                    "SELECT count(*) AS held FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
                    "AND objid = (%s::bigint & 4294967295)::oid AND granted",
                    (self.key,),
                ).fetchone()
            except psycopg.Error as exc:
                self._drop()
                raise StoreError(f"{self.name}: leader lock: {_reason(exc, self.url)}") from exc
            if not row or not row["held"]:
                self._drop()
                raise StoreError(f"{self.name}: leader lock: lost")

    def release(self) -> None:
        """Let go of the lock now (unlock, then close the session); harmless when not held."""
        with self._lock:
            if self._connection is not None and not self._connection.closed:
                with contextlib.suppress(psycopg.Error):  # closing the session releases it anyway
                    self._connection.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            self._drop()

    def _drop(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(psycopg.Error):
                self._connection.close()
            self._connection = None
