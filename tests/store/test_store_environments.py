"""Environments sharing one store (issue 20, SPEC 11.4): every shared row is scoped, old rows are
migrated into the migrating replica's environment, and an older depmon cannot write into the new
schema. Each test runs on a SQLite file and on the session's throwaway PostgreSQL."""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from monitor.store import IncidentWrite, NotLeader, PostgresStore, SQLiteStore, SqlStore
from monitor.store import postgres as postgres_store
from monitor.store import sqlite as sqlite_store
from monitor.store.records import Observation, ReplicaReport

pytestmark = pytest.mark.integration

TRIGGER = {"payload": {"summary": "EVSS down", "source": "depmon", "severity": "critical"}}


@pytest.fixture(params=["sqlite", "postgresql"])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[SqlStore, SqlStore]]:
    """(production, staging): two environments' stores over one file or database."""
    if request.param == "sqlite":
        path = tmp_path / "shared.sqlite3"
        stores: tuple[SqlStore, SqlStore] = (
            SQLiteStore(path, environment="production"),
            SQLiteStore(path, environment="staging"),
        )
    else:
        url = request.getfixturevalue("postgres_url")
        stores = (PostgresStore(url, environment="production"), PostgresStore(url, environment="staging"))
    yield stores
    for store in stores:
        store.close()


def _trigger(dependency: str, environment: str) -> IncidentWrite:
    return IncidentWrite(
        dependency=dependency,
        dedup_key=f"depmon/{environment}/{dependency}",
        at=100.0,
        kind="trigger",
        timeline={"action": "trigger"},
        event=("trigger", TRIGGER),
        features=["claims"],
    )


class TestPendingByKind:
    def test_rows_count_under_their_kind_in_their_environment(self, pair: tuple[SqlStore, SqlStore]) -> None:
        """Pending rows are counted per destination kind (every channel under `slack`), settled ones and the
        other environment's not at all."""
        production, staging = pair
        write = dataclasses.replace(
            _trigger("evss", "production"),
            messages=[("slack:#a", "trigger", {"text": "a"}), ("slack:#b", "trigger", {"text": "b"})],
        )
        production.apply_all([write])
        settled = production.enqueue("k", "trigger", {"text": "c"}, 100.0, destination="slack:#a")
        production.mark_accepted(settled, 101.0)
        staging.enqueue("depmon/staging/evss", "trigger", {"text": "d"}, 100.0, destination="slack:#a")
        assert production.pending_by_kind() == {"pagerduty": 1, "slack": 2}
        assert staging.pending_by_kind() == {"slack": 1}


class TestScopedRows:
    """What one environment writes, the other neither reads, claims, counts nor changes."""

    def test_outbox_incidents_and_timeline(self, pair: tuple[SqlStore, SqlStore]) -> None:
        """A production decision's incident, outbox row and timeline are invisible to staging."""
        production, staging = pair
        [incident] = production.apply_all([_trigger("evss", "production")])
        assert [i.dependency for i in production.open_incidents()] == ["evss"]
        assert (production.incident_counts(), production.pending_count()) == ({"evss": 1}, 1)
        assert production.timeline(incident)[0].kind == "trigger"
        assert staging.open_incidents() == []
        assert staging.incident_counts() == {}
        assert staging.pending_count() == 0
        assert staging.pending_by_kind() == {}
        assert staging.outbox_events() == []
        assert staging.pending_heads(1e12) == []
        assert staging.claim_heads("staging-1", 200.0, 20.0) == []
        assert staging.timeline(incident) == []
        assert staging.orphaned_triggers() == []
        with pytest.raises(KeyError):
            staging.incident(incident)
        event_id = production.outbox_events()[0].id
        with pytest.raises(KeyError):
            staging.mark_accepted(event_id, 101.0)  # a dry-run staging cannot settle production's page
        assert [h.id for h in production.claim_heads("production-1", 200.0, 20.0)] == [event_id]

    def test_silences_and_history(self, pair: tuple[SqlStore, SqlStore]) -> None:
        """A staging silence and staging's feature history are staging's only."""
        production, staging = pair
        silence = staging.add_silence("evss", 100.0, 200.0, "staging drill")
        assert [s.id for s in staging.silences(active_at=150.0)] == [silence]
        assert production.silences() == []
        with pytest.raises(KeyError):
            production.expire_silence(silence, 150.0)
        staging.record_feature_states([("claims", "down", 100.0)])
        production.record_feature_states([("claims", "ok", 100.0)])
        assert staging.feature_history(0.0) == {"claims": [(100.0, "down")]}
        assert production.feature_history(0.0) == {"claims": [(100.0, "ok")]}
        assert production.prune(1e12) == (0, 0)  # production's prune keeps staging's last change
        assert staging.feature_history(0.0) == {"claims": [(100.0, "down")]}

    def test_replicas_and_leadership(self, pair: tuple[SqlStore, SqlStore]) -> None:
        """Each environment has its own replicas, observations and leader of record, whose epochs fence
        only that environment's writes."""
        production, staging = pair
        seen = {"evss": Observation("down", True, 100.0, "HTTP 503")}
        production.report(ReplicaReport("a", "i1", 100.0, 1.0, observations=seen, dependencies=["evss"]))
        staging.report(ReplicaReport("a", "i2", 100.0, 1.0, observations={}, dependencies=["evss"]))
        assert [dict(v.observations) for v in production.replica_views()] == [seen]
        assert [dict(v.observations) for v in staging.replica_views()] == [{}]
        production_epoch = production.take_leadership("a", 100.0)
        staging_epoch = staging.take_leadership("a", 101.0)
        staging.take_leadership("b", 102.0)
        assert (production_epoch, staging_epoch) == (1, 1)
        production.apply_all([_trigger("evss", "production")], fence=production_epoch)  # not fenced off
        with pytest.raises(NotLeader):
            staging.apply_all([_trigger("evss", "staging")], fence=staging_epoch)
        assert [v.leader for v in production.replica_views()] == [True]
        assert production.leadership() == ("a", 1, 100.0)
        assert staging.leadership() == ("b", 2, 102.0)


class TestMigration:
    """Rows written before environments were scoped belong to the migrating replica's environment."""

    def test_sqlite_rows_of_schema_6_become_the_migrating_environments(self, tmp_path: Path) -> None:
        """A schema-6 state file's outbox, incident, silence and history are the migrating daemon's."""
        path = tmp_path / "old.sqlite3"
        connection = sqlite3.connect(path)
        connection.executescript("".join(sqlite_store._MIGRATIONS[:6]) + "PRAGMA user_version = 6;")
        connection.executescript(
            "INSERT INTO outbox (dedup_key, action, body, created_at, next_attempt_at) "
            "VALUES ('depmon/production/evss', 'trigger', '{}', 1, 1);"
            "INSERT INTO incidents (dependency, dedup_key, opened_at) VALUES ('evss', 'depmon/production/evss', 1);"
            "INSERT INTO silences (dependency, created_at, ends_at, reason) VALUES ('mhv', 1, 1e12, 'r');"
            "INSERT INTO feature_history (feature, state, at) VALUES ('claims', 'down', 1);"
        )
        connection.close()
        with SQLiteStore(path, environment="production") as production:
            assert production.pending_count() == 1
            assert len(production.open_incidents()) == 1
            assert len(production.silences()) == 1
            assert production.feature_history(0.0) == {"claims": [(1, "down")]}
        with SQLiteStore(path, environment="staging") as staging:
            assert (staging.pending_count(), staging.open_incidents(), staging.silences()) == (0, [], [])

    def test_postgres_rows_of_schema_1_become_the_migrating_environments(self, postgres_url: str) -> None:
        """A schema-1 database's rows are the migrating replica's, and its leadership row too."""
        with psycopg.connect(postgres_url, autocommit=True) as old:
            old.execute(postgres_store._MIGRATIONS[0].encode())
            old.execute("CREATE TABLE depmon_schema (version INTEGER NOT NULL); INSERT INTO depmon_schema VALUES (1)")
            old.execute(
                "INSERT INTO outbox (dedup_key, action, body, created_at, next_attempt_at) "
                "VALUES ('depmon/production/evss', 'trigger', '{}', 1, 1)"
            )
            old.execute("INSERT INTO leadership (id, epoch, replica, since) VALUES (1, 7, 'a', 1)")
        with PostgresStore(postgres_url, environment="production") as production:
            assert production.pending_count() == 1
            assert production.leadership() == ("a", 7, 1.0)
        with PostgresStore(postgres_url, environment="staging") as staging:
            assert (staging.pending_count(), staging.leadership()) == (0, None)


# What a replica of schema 1 (depmon before issue 20) writes, in its own words: each must fail
# against the new schema, whatever environment it would have meant.
OLD_REPLICA_WRITES = {
    "enqueue": (
        "INSERT INTO outbox (dedup_key, action, body, created_at, next_attempt_at, destination) "
        "VALUES ('depmon/x/evss', 'trigger', '{}', 1, 1, 'pagerduty') RETURNING id"
    ),
    "claim": "UPDATE outbox SET claimed_by = 'old', claimed_until = 1e12 WHERE status = 'pending'",
    "accept": (
        "UPDATE outbox SET status = 'accepted', delivered_at = 1, attempts = attempts + 1, "
        "claimed_by = NULL, claimed_until = NULL WHERE status = 'pending'"
    ),
    "retry": "UPDATE outbox SET attempts = attempts + 1, claimed_until = COALESCE(NULL, claimed_until)",
    "open an incident": (
        "INSERT INTO incidents (dependency, dedup_key, opened_at, escalated, features, summary, severity, data) "
        "VALUES ('evss', 'depmon/x/evss', 1, 0, '[]', '', '', '{}') RETURNING id"
    ),
    "timeline": "INSERT INTO timeline (incident_id, at, kind, data) SELECT id, 1, 'k', '{}' FROM incidents",
    "fence": "SELECT epoch FROM leadership WHERE id = 1 FOR SHARE",
    "take the lead": (
        "INSERT INTO leadership (id, epoch, replica, since) VALUES (1, 1, 'old', 1) "
        "ON CONFLICT (id) DO UPDATE SET epoch = leadership.epoch + 1 RETURNING epoch"
    ),
    "heartbeat": (
        "INSERT INTO replicas (name, instance, started_at, seen_at, every_seconds, self_state, self_reason) "
        "VALUES ('old', 'i', 1, 1, 1, 'ok', '') ON CONFLICT (name) DO UPDATE SET seen_at = excluded.seen_at"
    ),
    "observation": (
        "INSERT INTO observations (replica, dependency, state, failing, since, at, detail) "
        "VALUES ('old', 'evss', 'down', 1, 1, 1, '') ON CONFLICT (replica, dependency) DO UPDATE SET at = 1"
    ),
    "silence": "INSERT INTO silences (dependency, created_at, ends_at, reason) VALUES ('evss', 1, 2, 'r') RETURNING id",
    "history": "INSERT INTO feature_history (feature, state, at) VALUES ('claims', 'down', 1)",
}


class TestAnOldReplica:
    """A replica of the schema before environments cannot write into the new one."""

    @pytest.fixture
    def migrated(self, postgres_url: str) -> Iterator[str]:
        with PostgresStore(postgres_url, environment="production") as store:
            store.enqueue("depmon/production/evss", "trigger", TRIGGER, 1.0)
            store.apply_all([_trigger("mhv", "production")])
        return postgres_url

    @pytest.mark.parametrize("write", sorted(OLD_REPLICA_WRITES))
    def test_its_write_fails(self, migrated: str, write: str) -> None:
        """Each statement an old replica sends fails against the migrated schema, and changes nothing."""
        with psycopg.connect(migrated, autocommit=True) as old, pytest.raises(psycopg.Error):
            old.execute(OLD_REPLICA_WRITES[write])
        with PostgresStore(migrated, environment="production") as store:
            assert [e.status for e in store.outbox_events()] == ["pending", "pending"]
            assert store.leadership() is None
            assert store.replica_views() == []

    def test_it_refuses_the_newer_schema_when_it_connects(self, migrated: str) -> None:
        """An old replica's reconnect reads the schema version and stops (the check it already has)."""
        with psycopg.connect(migrated) as connection:
            version = connection.execute("SELECT version FROM depmon_schema").fetchone()
        assert version == (postgres_store.SCHEMA_VERSION,)
        assert postgres_store.SCHEMA_VERSION > 1

    def test_the_new_leader_lock_is_not_the_old_ones(self) -> None:
        """The advisory key names the schema: an old replica holding its lock blocks no new leader."""
        old_key = int.from_bytes(
            hashlib.blake2b(b"depmon leader production", digest_size=8).digest(), "big", signed=True
        )
        assert postgres_store.leader_key("production") != old_key
        assert postgres_store.leader_key("production") != postgres_store.leader_key("staging")
