"""The durable state: outbox, incidents and timeline in SQLite."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest

from monitor.store import (
    SCHEMA_VERSION,
    IncidentWrite,
    LeaderLock,
    NotLeader,
    PostgresStore,
    Silence,
    SQLiteStore,
    SqlStore,
    StateLock,
    StateLocked,
    Store,
    StoreError,
    leader_key,
)
from monitor.store import postgres as postgres_store
from monitor.store import sqlite as store_module
from monitor.store.records import Observation, ReplicaReport

pytestmark = pytest.mark.integration

TRIGGER = {"payload": {"summary": "EVSS down", "source": "depmon/test", "severity": "critical"}}


# The shared suite: every test that takes `backend` (or `store`, its async face) runs against
# the embedded SQLite store and a throwaway PostgreSQL database (skipped with a reason only when
# PostgreSQL's binaries are absent).
@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> SqlStore:
    if request.param == "sqlite":
        return SQLiteStore(":memory:", environment="test")
    return PostgresStore(request.getfixturevalue("postgres_url"), environment="test")


@pytest.fixture
async def store(backend: SqlStore) -> AsyncIterator[Store]:
    async with Store(backend) as opened:
        yield opened


class TestOutbox:
    """The outbox table behind the PagerDuty outbox."""

    @pytest.mark.anyio
    async def test_round_trip(self, store: Store) -> None:
        """An enqueued event comes back as a pending head with its body, action and times."""
        with anyio.fail_after(5):
            event_id = await store.enqueue("depmon/test/evss", "trigger", TRIGGER, at=100.0)
            [head] = await store.pending_heads(now=100.0)
            event = await store.outbox_event(head.id)
        assert head.id == event.id == event_id
        assert (head.dedup_key, head.action, head.destination) == ("depmon/test/evss", "trigger", "pagerduty")
        assert (event.dedup_key, event.action, event.body) == ("depmon/test/evss", "trigger", TRIGGER)
        assert (event.status, event.attempts, event.created_at, event.next_attempt_at) == ("pending", 0, 100.0, 100.0)

    @pytest.mark.anyio
    async def test_routing_key_never_stored(self, store: Store) -> None:
        """A routing key in the body is dropped before the body reaches the file."""
        with anyio.fail_after(5):
            event_id = await store.enqueue("k", "trigger", {**TRIGGER, "routing_key": "R" * 32}, at=1.0)
            event = await store.outbox_event(event_id)
        assert "routing_key" not in event.body

    @pytest.mark.anyio
    async def test_one_head_per_dedup_key_oldest_first(self, store: Store) -> None:
        """Only the oldest pending event of each key is a head, so each key is delivered in order."""
        with anyio.fail_after(5):
            a1 = await store.enqueue("a", "trigger", TRIGGER, at=1.0)
            b1 = await store.enqueue("b", "trigger", TRIGGER, at=2.0)
            a2 = await store.enqueue("a", "resolve", {}, at=3.0)
            assert [e.id for e in await store.pending_heads(now=10.0)] == [a1, b1]
            await store.mark_accepted(a1, at=11.0)
            assert [e.id for e in await store.pending_heads(now=12.0)] == [b1, a2]

    @pytest.mark.anyio
    async def test_retry_holds_back_its_key_only(self, store: Store) -> None:
        """A head scheduled for later blocks its own key's later events but not other keys."""
        with anyio.fail_after(5):
            a1 = await store.enqueue("a", "trigger", TRIGGER, at=1.0)
            await store.enqueue("a", "resolve", {}, at=2.0)
            b1 = await store.enqueue("b", "trigger", TRIGGER, at=3.0)
            await store.schedule_retry(a1, next_attempt_at=50.0, error="HTTP 500")
            assert [e.id for e in await store.pending_heads(now=10.0)] == [b1]
            assert await store.next_attempt_at() == 3.0
            await store.mark_accepted(b1, at=10.0)
            assert await store.next_attempt_at() == 50.0
            [head] = await store.pending_heads(now=50.0)
            event = await store.outbox_event(head.id)
        assert (head.id, head.attempts, event.last_error) == (a1, 1, "HTTP 500")

    @pytest.mark.anyio
    async def test_dropped_and_dry_run_are_not_pending(self, store: Store) -> None:
        """Rejected and dry-run events leave the queue, keeping the rejection reason."""
        with anyio.fail_after(5):
            dropped = await store.enqueue("a", "trigger", TRIGGER, at=1.0)
            dry = await store.enqueue("b", "trigger", TRIGGER, at=1.0)
            await store.mark_dropped(dropped, "HTTP 400: Event object is invalid")
            await store.mark_dry_run(dry)
            assert await store.pending_count() == 0
            assert await store.pending_heads(now=100.0) == []
            assert await store.next_attempt_at() is None
            events = await store.outbox_events()
        assert [(e.status, e.last_error) for e in events] == [
            ("dropped", "HTTP 400: Event object is invalid"),
            ("dry_run", None),
        ]

    @pytest.mark.anyio
    async def test_settling_twice_is_an_error(self, store: Store) -> None:
        """Marking an event that is no longer pending raises KeyError instead of rewriting history."""
        with anyio.fail_after(5):
            event_id = await store.enqueue("a", "trigger", TRIGGER, at=1.0)
            await store.mark_accepted(event_id, at=2.0)
            with pytest.raises(KeyError):
                await store.mark_dropped(event_id, "late")

    @pytest.mark.anyio
    async def test_pending_events_survive_restart(self, tmp_path: Path) -> None:
        """A pending event written before a close is pending again in a new store over the file."""
        path = tmp_path / "state" / "depmon.sqlite3"
        with anyio.fail_after(5):
            async with Store(path, environment="test") as first:
                event_id = await first.enqueue("a", "trigger", TRIGGER, at=1.0)
                await first.schedule_retry(event_id, 5.0, "HTTP 503")
            async with Store(path, environment="test") as second:
                [head] = await second.pending_heads(now=5.0)
                assert await second.pending_count() == 1
                event = await second.outbox_event(head.id)
        assert (head.id, head.attempts, event.body) == (event_id, 1, TRIGGER)


class TestIncidents:
    """Incidents and their timelines."""

    @pytest.mark.anyio
    async def test_open_update_resolve(self, store: Store) -> None:
        """An incident is open until resolved, and updates change only the fields given."""
        with anyio.fail_after(5):
            incident_id = await store.open_incident(
                "evss",
                "depmon/test/evss",
                10.0,
                features=["claims"],
                summary="EVSS down",
                severity="critical",
                data={"outcome": "http_status"},
            )
            await store.update_incident(incident_id, features=["claims", "letters"], escalated=True)
            [open_one] = await store.open_incidents()
            await store.resolve_incident(incident_id, at=99.0)
            assert await store.open_incidents() == []
            resolved = await store.incident(incident_id)
        assert open_one.is_open
        assert open_one.escalated
        assert (open_one.features, open_one.summary, open_one.data) == (
            ["claims", "letters"],
            "EVSS down",
            {"outcome": "http_status"},
        )
        assert (resolved.resolved_at, resolved.is_open) == (99.0, False)

    @pytest.mark.anyio
    async def test_incidents_of_a_dependency_newest_last(self, store: Store) -> None:
        """incidents_of lists every incident of that dependency only, oldest first."""
        with anyio.fail_after(5):
            first = await store.open_incident("evss", "k", 1.0)
            await store.resolve_incident(first, 2.0)
            await store.open_incident("mhv", "m", 3.0)
            second = await store.open_incident("evss", "k", 4.0)
            incidents = await store.incidents_of("evss")
        assert [incident.id for incident in incidents] == [first, second]

    @pytest.mark.anyio
    async def test_incident_counts_of_every_dependency_at_once(self, store: Store) -> None:
        """incident_counts counts the open and resolved incidents of each dependency; one without any is absent."""
        with anyio.fail_after(5):
            first = await store.open_incident("evss", "k", 1.0)
            await store.resolve_incident(first, 2.0)
            await store.open_incident("evss", "k", 3.0)
            await store.open_incident("mhv", "m", 3.0)
            await store.open_incident("vaos", "v", 3.0)
            counts = await store.incident_counts()
        assert counts == {"evss": 2, "mhv": 1, "vaos": 1}

    @pytest.mark.anyio
    async def test_timeline_in_time_order(self, store: Store) -> None:
        """Timeline entries come back in time order with their data."""
        with anyio.fail_after(5):
            incident_id = await store.open_incident("evss", "k", 1.0)
            await store.add_timeline(incident_id, 3.0, "event_sent", {"action": "trigger"})
            await store.add_timeline(incident_id, 2.0, "state", {"state": "down"})
            entries = await store.timeline(incident_id)
        assert [(entry.at, entry.kind, entry.data) for entry in entries] == [
            (2.0, "state", {"state": "down"}),
            (3.0, "event_sent", {"action": "trigger"}),
        ]

    @pytest.mark.anyio
    async def test_unknown_incident(self, store: Store) -> None:
        """Updating, resolving or annotating an unknown incident raises KeyError."""
        with anyio.fail_after(5):
            with pytest.raises(KeyError):
                await store.update_incident(42, summary="x")
            with pytest.raises(KeyError):
                await store.resolve_incident(42, 1.0)
            with pytest.raises(KeyError):
                await store.add_timeline(42, 1.0, "state")


class TestSQLiteStore:
    """The blocking face used by the CLI, and the file itself."""

    def test_file_created_in_wal_with_schema_version(self, tmp_path: Path) -> None:
        """The file and its directory appear on first use, in WAL mode, at the current schema version."""
        path = tmp_path / "var" / "depmon.sqlite3"
        with SQLiteStore(path, environment="test") as store:
            assert not path.exists()
            assert store.pending_count() == 0
            assert (store.journal_mode, store.schema_version) == ("wal", SCHEMA_VERSION)
        assert path.exists()

    @pytest.mark.anyio
    async def test_cli_reads_what_the_daemon_wrote(self, tmp_path: Path) -> None:
        """Incidents written through the async store are read back by a SQLiteStore without an event loop."""
        path = tmp_path / "depmon.sqlite3"
        with anyio.fail_after(5):
            async with Store(path, environment="test") as daemon:
                incident_id = await daemon.open_incident("evss", "k", 1.0, summary="EVSS down")
                await daemon.add_timeline(incident_id, 1.0, "state", {"state": "down"})
        with SQLiteStore(path, environment="test") as cli:
            [incident] = cli.incidents_of("evss")
            assert incident.summary == "EVSS down"
            assert [entry.kind for entry in cli.timeline(incident_id)] == ["state"]

    def test_newer_schema_refused(self, tmp_path: Path) -> None:
        """A file written by a newer depmon (higher user_version) is refused with a StoreError."""
        path = tmp_path / "depmon.sqlite3"
        connection = sqlite3.connect(path)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        connection.close()
        with SQLiteStore(path, environment="test") as store, pytest.raises(StoreError, match="newer depmon"):
            store.pending_count()

    def test_closed_store_refuses_calls(self) -> None:
        """A closed store raises StoreError instead of reopening silently."""
        store = SQLiteStore(":memory:", environment="test")
        store.close()
        with pytest.raises(StoreError, match="closed"):
            store.pending_count()


def _trigger_write(**overrides: object) -> IncidentWrite:
    fields: dict[str, object] = {
        "dependency": "evss",
        "dedup_key": "depmon/test/evss",
        "at": 100.0,
        "kind": "trigger",
        "timeline": {"action": "trigger"},
        "event": ("trigger", {**TRIGGER, "routing_key": "R" * 32}),
        "features": ["claims"],
        "summary": "EVSS down",
        "severity": "critical",
    }
    fields.update(overrides)
    return IncidentWrite(**fields)  # type: ignore[arg-type]


class TestDecisions:
    """One decision, one transaction (issue 9, item 2)."""

    def test_a_trigger_writes_event_incident_and_timeline_together(self, backend: SqlStore) -> None:
        """apply() opens the incident, queues the event (without the routing key) and records the timeline."""
        with backend as store:
            incident_id = store.apply(_trigger_write())
            [incident] = store.open_incidents()
            [event] = store.outbox_events()
            [entry] = store.timeline(incident_id)
        assert (incident.id, incident.summary, incident.features) == (incident_id, "EVSS down", ["claims"])
        assert (event.action, "routing_key" in event.body) == ("trigger", False)
        assert entry.kind == "trigger"

    def test_a_failure_inside_the_transaction_leaves_nothing(self, backend: SqlStore) -> None:
        """When the timeline insert fails (a body that cannot be encoded), no event and no incident remain."""
        with backend as store:
            with pytest.raises(TypeError):
                store.apply(_trigger_write(timeline={"not json": object()}))
            assert (store.open_incidents(), store.outbox_events()) == ([], [])
            store.apply(_trigger_write())  # the connection is usable afterwards
            assert len(store.open_incidents()) == 1

    def test_hold_and_flapping_are_kept_and_resolve_closes(self, backend: SqlStore) -> None:
        """An update sets the hold and flapping fields; a resolve closes the incident and queues the resolve."""
        with backend as store:
            incident_id = store.apply(_trigger_write())
            store.apply(_trigger_write(incident_id=incident_id, kind="hold", event=None, up_since=150.0, at=150.0))
            [held] = store.open_incidents()
            store.apply(_trigger_write(incident_id=incident_id, kind="flap", event=None, flapping=True, at=160.0))
            [flapping] = store.open_incidents()
            store.apply(
                _trigger_write(incident_id=incident_id, kind="resolve", event=("resolve", {}), resolved=True, at=300.0)
            )
            closed = store.incident(incident_id)
            kinds = [e.kind for e in store.timeline(incident_id)]
            actions = [e.action for e in store.outbox_events()]
        assert (held.up_since, held.flapping, held.summary) == (150.0, False, "EVSS down")
        assert (flapping.up_since, flapping.flapping) == (None, True)
        assert (closed.resolved_at, closed.is_open) == (300.0, False)
        assert kinds == ["trigger", "hold", "flap", "resolve"]
        assert actions == ["trigger", "resolve"]

    def test_orphaned_triggers_are_found(self, backend: SqlStore) -> None:
        """A trigger without an open incident is an orphan; one followed by a resolve, or with its incident, is not."""
        with backend as store:
            store.enqueue("depmon/test/orphan", "trigger", TRIGGER, at=1.0)
            store.enqueue("depmon/test/resolved", "trigger", TRIGGER, at=1.0)
            store.enqueue("depmon/test/resolved", "resolve", {}, at=2.0)
            store.apply(_trigger_write(dedup_key="depmon/test/open"))
            dropped = store.enqueue("depmon/test/dropped", "trigger", TRIGGER, at=1.0)
            store.mark_dropped(dropped, "HTTP 400")
            orphans = store.orphaned_triggers()
        assert [o.dedup_key for o in orphans] == ["depmon/test/orphan"]

    def test_prune_keeps_pending_events_and_open_incidents(self, backend: SqlStore) -> None:
        """Old delivered events and old closed incidents go; pending events and open incidents stay, however old."""
        with backend as store:
            old_closed = store.apply(_trigger_write(dedup_key="depmon/test/a", at=10.0))
            store.apply(
                _trigger_write(
                    incident_id=old_closed,
                    dedup_key="depmon/test/a",
                    kind="resolve",
                    event=None,
                    resolved=True,
                    at=20.0,
                )
            )
            old_open = store.apply(_trigger_write(dedup_key="depmon/test/b", at=10.0))
            for event in store.pending_heads(now=1e9):
                if event.dedup_key == "depmon/test/a":
                    store.mark_accepted(event.id, at=30.0)
            recent = store.apply(_trigger_write(dedup_key="depmon/test/c", at=500.0))
            deleted = store.prune(before=100.0)
            left_incidents = {i.id for i in [*store.incidents_of("evss")]}
            left_events = [e.dedup_key for e in store.outbox_events()]
            timeline_of_old = store.timeline(old_closed)
        assert deleted == (1, 1)
        assert left_incidents == {old_open, recent}
        assert left_events == ["depmon/test/b", "depmon/test/c"]
        assert timeline_of_old == []

    def test_a_batch_larger_than_one_statement_keeps_its_order(self, backend: SqlStore) -> None:
        """600 decisions in one batch (several statements per table): ids, events and timelines in the
        batch's order, updates and new incidents mixed, and the ids after a prune never reused."""
        with backend as store:
            first = store.apply(_trigger_write(dedup_key="depmon/test/x0", dependency="x0"))
            store.apply(_trigger_write(incident_id=first, kind="resolve", event=("resolve", {}), resolved=True))
            store.prune(before=1e9)  # the highest incident id is gone; AUTOINCREMENT still never reuses it
            kept = store.apply(_trigger_write(dedup_key="depmon/test/kept", dependency="kept"))
            writes = [_trigger_write(dedup_key=f"depmon/test/d{i}", dependency=f"d{i}") for i in range(600)]
            writes.insert(300, _trigger_write(incident_id=kept, dedup_key="depmon/test/kept", kind="escalate"))
            ids = store.apply_all(writes)
            events = [e.dedup_key for e in store.outbox_events() if e.dedup_key.startswith("depmon/test/d")]
            opened = {i.dependency: i.id for i in store.open_incidents()}
            timeline = store.timeline(ids[599])
        new = ids[:300] + ids[301:]
        assert ids[300] == kept
        assert new == list(range(kept + 1, kept + 601))
        assert all(opened[f"d{i}"] == new[i] for i in range(600))
        assert events == [f"depmon/test/d{i}" for i in range(600)]
        assert first < kept
        assert [e.kind for e in timeline] == ["trigger"]

    def test_a_batch_is_a_few_statements_whatever_its_size(self, tmp_path: Path) -> None:
        """250 new incidents with their events and timelines: a handful of statements, not three per decision
        (each statement lets go of the GIL, and getting it back from a busy event loop takes up to 5 ms)."""
        store = SQLiteStore(tmp_path / "state.sqlite3", environment="test")
        statements: list[str] = []
        with store:
            store.apply(_trigger_write())  # opens and migrates the file
            store._db().set_trace_callback(statements.append)
            store.apply_all([_trigger_write(dedup_key=f"depmon/test/d{i}", dependency=f"d{i}") for i in range(250)])
            store._db().set_trace_callback(None)
            assert len(store.open_incidents()) == 251
        # BEGIN, three id reads, incidents in 3 statements (999 parameters each), outbox 3, timeline 2, COMMIT
        assert len(statements) <= 13, statements

    def test_version_1_file_migrates_rejected_to_dropped(self, tmp_path: Path) -> None:
        """A state file of schema 1 with a `rejected` event opens as schema 2 with that event `dropped`."""
        path = tmp_path / "old.sqlite3"
        connection = sqlite3.connect(path)
        connection.executescript(store_module._MIGRATIONS[0] + "PRAGMA user_version = 1;")
        connection.execute(
            "INSERT INTO outbox (dedup_key, action, body, created_at, next_attempt_at, status) "
            "VALUES ('k', 'trigger', '{}', 1.0, 1.0, 'rejected')"
        )
        connection.commit()
        connection.close()
        with SQLiteStore(path, environment="test") as store:
            [event] = store.outbox_events()
            version = store.schema_version
        assert (version, event.status) == (SCHEMA_VERSION, "dropped")


class TestStateLock:
    """Issue 9, item 6: one daemon per state file."""

    def test_a_second_holder_is_refused_naming_the_first(self, tmp_path: Path) -> None:
        """While one lock is held, a second acquire raises StateLocked with the holder's pid."""
        path = str(tmp_path / "state.sqlite3")
        with StateLock(path), pytest.raises(StateLocked) as refused:
            StateLock(path).acquire()
        assert f"pid {os.getpid()}" in str(refused.value)
        assert "one daemon per state file" in str(refused.value)

    def test_released_lock_can_be_taken_again(self, tmp_path: Path) -> None:
        """After release, the next daemon takes the lock."""
        path = str(tmp_path / "state.sqlite3")
        with StateLock(path):
            pass
        with StateLock(path) as again:
            assert again.path is not None

    def test_lock_held_by_another_process(self, tmp_path: Path) -> None:
        """A lock taken by a child process is seen by this one (flock is per open file, across processes)."""
        path = str(tmp_path / "state.sqlite3")
        code = (
            "import sys, time; from monitor.store import StateLock; "
            f"l = StateLock({path!r}); l.acquire(); print('held', flush=True); time.sleep(30)"
        )
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "held"
            second = StateLock(path)
            with pytest.raises(StateLocked) as refused:
                second.acquire()
            second.release()
            assert f"pid {child.pid}" in str(refused.value)
        finally:
            child.kill()
            child.wait()
            if child.stdout is not None:
                child.stdout.close()
        with StateLock(path):  # the kernel released it with the process
            pass


class TestFeatureHistory:
    """Schema 3: each feature's state changes, for the status page's last 24 hours."""

    def test_changes_come_back_per_feature_in_time_order(self, backend: SqlStore) -> None:
        """Recorded changes read back per feature as (at, state), oldest first."""
        with backend as store:
            store.record_feature_states([("claims", "ok", 10.0), ("appeals", "ok", 10.0), ("claims", "down", 20.0)])
            store.record_feature_states([("claims", "ok", 30.0)])
            history = store.feature_history(since=0.0)
        assert history == {"claims": [(10.0, "ok"), (20.0, "down"), (30.0, "ok")], "appeals": [(10.0, "ok")]}

    def test_the_state_in_force_at_since_comes_first(self, backend: SqlStore) -> None:
        """Only the last change before `since` is returned of the older ones, with its own time."""
        with backend as store:
            store.record_feature_states([("claims", "ok", 10.0), ("claims", "down", 20.0), ("claims", "ok", 30.0)])
            history = store.feature_history(since=25.0)
            later = store.feature_history(since=100.0)
        assert history == {"claims": [(20.0, "down"), (30.0, "ok")]}
        assert later == {"claims": [(30.0, "ok")]}

    def test_a_repeated_state_is_not_recorded(self, backend: SqlStore) -> None:
        """A change repeating the feature's last recorded state is skipped, within a batch and across batches."""
        with backend as store:
            first = store.record_feature_states([("claims", "ok", 10.0), ("claims", "ok", 11.0)])
            second = store.record_feature_states([("claims", "ok", 12.0), ("claims", "down", 13.0)])
            history = store.feature_history(since=0.0)
        assert (first, second) == (1, 1)
        assert history == {"claims": [(10.0, "ok"), (13.0, "down")]}

    def test_a_batch_is_one_transaction(self, backend: SqlStore) -> None:
        """A batch that fails part way leaves none of its changes behind."""
        with backend as store:
            with pytest.raises((sqlite3.IntegrityError, psycopg.errors.IntegrityError)):
                store.record_feature_states([("claims", "ok", 10.0), ("appeals", "ok", None)])  # type: ignore[list-item]
            history = store.feature_history(since=0.0)
        assert history == {}

    def test_prune_keeps_the_state_in_force(self, backend: SqlStore) -> None:
        """Pruning deletes changes before `before` except each feature's last one, and nothing after it."""
        with backend as store:
            store.record_feature_states(
                [("claims", "ok", 10.0), ("claims", "down", 20.0), ("appeals", "ok", 15.0), ("claims", "ok", 300.0)]
            )
            store.prune(before=100.0)
            history = store.feature_history(since=0.0)
        assert history == {"claims": [(20.0, "down"), (300.0, "ok")], "appeals": [(15.0, "ok")]}

    def test_version_2_file_gains_the_history_table(self, tmp_path: Path) -> None:
        """A state file of schema 2 opens at the current schema and records feature history."""
        path = tmp_path / "old.sqlite3"
        connection = sqlite3.connect(path)
        connection.executescript(store_module._MIGRATIONS[0] + store_module._MIGRATIONS[1] + "PRAGMA user_version = 2;")
        connection.close()
        with SQLiteStore(path, environment="test") as store:
            store.record_feature_states([("claims", "ok", 1.0)])
            assert (store.schema_version, store.feature_history(0.0)) == (SCHEMA_VERSION, {"claims": [(1.0, "ok")]})

    @pytest.mark.anyio
    async def test_async_twins(self, store: Store) -> None:
        """The async store records and reads the history through its worker thread."""
        with anyio.fail_after(5):
            await store.record_feature_states([("claims", "down", 5.0)])
            history = await store.feature_history(since=0.0)
        assert history == {"claims": [(5.0, "down")]}


class TestSilences:
    """Silences live in the state store (SPEC 10.2)."""

    def test_add_list_expire(self, backend: SqlStore) -> None:
        """A silence is active until it ends or is expired; expiring keeps the first time."""
        with backend as store:
            first = store.add_silence("evss", created_at=100.0, ends_at=400.0, reason="EVSS deploy")
            second = store.add_silence("caseflow", created_at=100.0, ends_at=200.0, reason="known")
            assert [s.id for s in store.silences(active_at=150.0)] == [first, second]
            assert [s.id for s in store.silences(active_at=250.0)] == [first]
            store.expire_silence(first, at=300.0)
            store.expire_silence(first, at=350.0)
            assert store.silences(active_at=310.0) == []
            [expired, _] = store.silences()
        assert (expired.expired_at, expired.reason) == (300.0, "EVSS deploy")

    def test_unknown_id_and_pruning(self, backend: SqlStore) -> None:
        """Expiring an unknown id is a KeyError; prune drops silences that ended before the cut."""
        with backend as store:
            store.add_silence("evss", created_at=1.0, ends_at=10.0, reason="old")
            kept = store.add_silence("evss", created_at=1.0, ends_at=1000.0, reason="long")
            with pytest.raises(KeyError):
                store.expire_silence(99, at=5.0)
            store.prune(before=100.0)
            assert [s.id for s in store.silences()] == [kept]


class TestClaims:
    """Any replica may deliver the outbox; a head is delivered by one replica at a time."""

    def test_a_claimed_head_is_left_to_its_claimer_until_the_claim_runs_out(self, backend: SqlStore) -> None:
        with backend as store:
            first = store.enqueue("k1", "trigger", TRIGGER, at=100.0)
            assert [e.id for e in store.claim_heads("a", now=100.0, lease=10.0)] == [first]
            assert store.claim_heads("b", now=105.0, lease=10.0) == []
            assert [e.id for e in store.claim_heads("a", now=105.0, lease=10.0)] == [first], "its own claim"
            assert [e.id for e in store.claim_heads("b", now=116.0, lease=10.0)] == [first], "a's claim ran out"

    def test_settling_frees_the_key_for_its_next_event(self, backend: SqlStore) -> None:
        with backend as store:
            first = store.enqueue("k1", "trigger", TRIGGER, at=100.0)
            second = store.enqueue("k1", "resolve", {}, at=101.0)
            store.claim_heads("a", now=101.0, lease=10.0)
            assert store.claim_heads("b", now=101.0, lease=10.0) == [], "only the head of a key is claimable"
            store.mark_accepted(first, at=102.0)
            assert [e.id for e in store.claim_heads("b", now=102.0, lease=10.0)] == [second]

    def test_a_retry_keeps_the_claim_until_its_hold(self, backend: SqlStore) -> None:
        with backend as store:
            event = store.enqueue("k1", "trigger", TRIGGER, at=100.0)
            store.claim_heads("a", now=100.0, lease=10.0)
            store.schedule_retry(event, next_attempt_at=160.0, error="503", hold_until=170.0)
            assert store.claim_heads("b", now=165.0, lease=10.0) == []
            assert [e.id for e in store.claim_heads("b", now=171.0, lease=10.0)] == [event]


class TestReplicas:
    """Heartbeats, observations, replica names and the leader of record."""

    def test_a_report_is_read_back_and_a_full_report_forgets_removed_dependencies(self, backend: SqlStore) -> None:
        with backend as store:
            seen = {"evss": Observation("down", True, 90.0, "503"), "vaos": Observation("up", False, 80.0)}
            store.report(ReplicaReport("a", "i1", 100.0, 2.0, observations=seen, dependencies=["evss", "vaos"]))
            store.report(ReplicaReport("a", "i1", 101.0, 2.0, self_state="cannot_see_out", self_reason="no route"))
            (view,) = store.replica_views()
            assert (view.replica, view.seen_at, view.started_at, view.self_state) == (
                "a",
                101.0,
                100.0,
                "cannot_see_out",
            )
            assert view.observations == seen
            store.report(
                ReplicaReport("a", "i1", 102.0, 2.0, observations={"evss": seen["evss"]}, dependencies=["evss"])
            )
            assert set(store.replica_views()[0].observations) == {"evss"}

    def test_a_live_replica_name_cannot_be_taken_by_another_process(self, backend: SqlStore) -> None:
        with backend as store:
            store.register("a", "i1", now=100.0)
            store.report(ReplicaReport("a", "i1", 100.0, 2.0))
            with pytest.raises(StoreError, match="in use by another live depmon"):
                store.register("a", "i2", now=103.0)
            store.register("a", "i1", now=103.0)  # its own name
            store.register("a", "i2", now=104.1)  # silent for 2 x interval: taken back

    def test_each_leadership_fences_the_earlier_leaders_decisions(self, backend: SqlStore) -> None:
        with backend as store:
            store.report(ReplicaReport("a", "i1", 100.0, 2.0))
            first = store.take_leadership("a", 100.0)
            assert store.apply(_trigger_write(), fence=first) > 0
            second = store.take_leadership("b", 101.0)
            assert second == first + 1
            with pytest.raises(NotLeader):
                store.apply(_trigger_write(dedup_key="depmon/test/vaos", dependency="vaos"), fence=first)
            assert [i.dependency for i in store.open_incidents()] == ["evss"], "the fenced write left nothing"
            assert store.leadership() == ("b", second, 101.0)
            assert not store.replica_views()[0].leader


class TestPostgreSQL:
    """What only the shared database does: concurrent replicas, migrations under a lock, the leader lock."""

    def test_replicas_starting_together_migrate_once(self, postgres_url: str) -> None:
        stores = [PostgresStore(postgres_url, environment="test") for _ in range(4)]
        errors: list[BaseException] = []

        def first_call(store: PostgresStore) -> None:
            try:
                store.pending_count()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=first_call, args=(s,)) for s in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert {s.schema_version for s in stores} == {postgres_store.SCHEMA_VERSION}
        for store in stores:
            store.close()

    def test_concurrent_claims_never_take_the_same_event(self, postgres_url: str) -> None:
        with PostgresStore(postgres_url, environment="test") as writer:
            for n in range(200):
                writer.enqueue(f"k{n}", "trigger", TRIGGER, at=100.0)
        claimed: dict[str, set[int]] = {}

        def claim(name: str) -> None:  # five rounds each (a replica takes its own claims again)
            with PostgresStore(postgres_url, environment="test") as store:
                claimed[name] = {e.id for batch in range(5) for e in store.claim_heads(name, 100.0 + batch, 60.0)}

        threads = [threading.Thread(target=claim, args=(name,)) for name in ("a", "b", "c")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        every = [event for ids in claimed.values() for event in ids]
        assert len(every) == len(set(every)) == 200, "each event claimed by exactly one replica"

    def test_the_leader_lock_is_exclusive_and_freed_when_its_session_ends(self, postgres_url: str) -> None:
        key = leader_key("test")
        first, second = LeaderLock(postgres_url, key, 5.0), LeaderLock(postgres_url, key, 5.0)
        try:
            assert first.try_acquire()
            first.check()
            assert not second.try_acquire()
            with pytest.raises(StoreError, match="not held"):
                LeaderLock(postgres_url, key, 5.0).check()
            first.release()
            assert second.try_acquire()
            with pytest.raises(StoreError):
                first.check()
        finally:
            first.release()
            second.release()

    def test_a_silent_holders_session_is_ended_by_the_server(self, postgres_url: str) -> None:
        key = leader_key("silent")
        silent, other = LeaderLock(postgres_url, key, 0.5), LeaderLock(postgres_url, key, 5.0)
        try:
            assert silent.try_acquire()
            assert not other.try_acquire()
            time.sleep(1.0)  # the holder says nothing for twice its silence limit (the server's own timer)
            assert other.try_acquire(), "idle_session_timeout ended the silent holder's session"
            with pytest.raises(StoreError):
                silent.check()
        finally:
            silent.release()
            other.release()

    def test_errors_never_show_the_password(self, postgres_server: Any) -> None:
        url = f"postgresql://depmon:hunter2-secret@127.0.0.1:{postgres_server.port}/no_such_database"
        with pytest.raises(StoreError) as caught, PostgresStore(url, environment="test") as store:
            store.pending_count()
        assert "hunter2-secret" not in str(caught.value)
        assert "no_such_database" in str(caught.value)


@pytest.mark.parametrize(
    ("ends_at", "expired_at", "ended_at"),
    [(200.0, None, 200.0), (200.0, 150.0, 150.0), (200.0, 250.0, 200.0)],
)
def test_a_silence_ends_at_its_end_or_its_earlier_expiry(
    ends_at: float, expired_at: float | None, ended_at: float
) -> None:
    """`Silence.ended_at`: the end it was given, or the moment it was expired by hand when that came first."""
    assert Silence(1, "evss", 100.0, ends_at, "deploy", expired_at).ended_at == ended_at


def _rest_row(step: str) -> dict[str, Any]:
    return {"step": step, "method": "POST", "path": "/incidents/{incident_id}/notes", "body": {}, "covers": [step]}


def _opening(dedup_key: str = "depmon/test/evss", *steps: str) -> IncidentWrite:
    return IncidentWrite(
        dependency="evss",
        dedup_key=dedup_key,
        at=1.0,
        kind="trigger",
        timeline={"action": "trigger"},
        event=("trigger", {"dedup_key": dedup_key, **TRIGGER}),
        rest_writes=[_rest_row(step) for step in steps],
    )


class TestEscalationRows:
    """Escalation's REST writes (SPEC 11.2): after their trigger, cancelled with their incident or trigger."""

    def test_a_rest_write_waits_until_its_trigger_is_settled(self, backend: SqlStore) -> None:
        """The REST row is no head while its trigger is pending; it is once PagerDuty accepted the trigger."""
        with backend:
            backend.apply(_opening("depmon/test/evss", "responders", "note"))
            heads = backend.pending_heads(10.0)
            assert [h.destination for h in heads] == ["pagerduty"]
            backend.mark_accepted(heads[0].id, 2.0)
            heads = backend.pending_heads(10.0)
            assert [(h.destination, backend.outbox_event(h.id).body["step"]) for h in heads] == [
                ("pagerduty_rest", "responders")
            ]

    def test_a_dropped_trigger_cancels_its_rest_writes(self, backend: SqlStore) -> None:
        """PagerDuty refused the trigger (400): its REST writes are cancelled, never delivered."""
        with backend:
            backend.apply(_opening("depmon/test/evss", "responders", "note"))
            trigger = backend.pending_heads(10.0)[0]
            assert backend.mark_dropped(trigger.id, "HTTP 400") == ["responders", "note"]
            assert backend.pending_heads(10.0) == []
            statuses = {e.destination: e.status for e in backend.outbox_events()}
            assert statuses == {"pagerduty": "dropped", "pagerduty_rest": "cancelled"}

    def test_a_resolve_cancels_the_pending_rest_writes_and_its_timeline_says_so(self, backend: SqlStore) -> None:
        """The resolve's commit cancels what is still queued; what was delivered stays accepted."""
        with backend:
            incident_id = backend.apply(_opening("depmon/test/evss", "responders", "note"))
            backend.mark_accepted(backend.pending_heads(10.0)[0].id, 2.0)
            backend.mark_accepted(backend.pending_heads(10.0)[0].id, 3.0)  # the responder request
            resolve = IncidentWrite(
                dependency="evss",
                dedup_key="depmon/test/evss",
                at=5.0,
                kind="resolve",
                timeline={"action": "resolve"},
                incident_id=incident_id,
                event=("resolve", {"dedup_key": "depmon/test/evss"}),
                resolved=True,
            )
            applied = backend.apply_batch([resolve])
            assert applied.cancelled == [("depmon/test/evss", "note")]
            rest = [e.status for e in backend.outbox_events() if e.destination == "pagerduty_rest"]
            assert rest == ["accepted", "cancelled"]
            assert backend.timeline(incident_id)[-1].data["escalation_cancelled"] == ["note"]

    def test_schema_7_file_migrates_keeping_its_rows_and_ids(self, tmp_path: Path) -> None:
        """A file of schema 7 keeps its outbox rows; a new row's id follows every id given before, pruned ones too."""
        path = tmp_path / "old.sqlite3"
        connection = sqlite3.connect(path)
        scripts = "".join(store_module._MIGRATIONS[:7]).replace("_ENVIRONMENT", "'test'")
        connection.executescript(scripts + "PRAGMA user_version = 7;")
        for row_id, status in ((1, "accepted"), (2, "pending")):
            connection.execute(
                "INSERT INTO outbox (id, dedup_key, action, body, created_at, next_attempt_at, status) "
                "VALUES (?, 'depmon/test/evss', 'trigger', '{}', 1.0, 1.0, ?)",
                (row_id, status),
            )
        connection.execute("UPDATE sqlite_sequence SET seq = 9 WHERE name = 'outbox'")  # ids 3-9 pruned
        connection.commit()
        connection.close()
        with SQLiteStore(path, environment="test") as store:
            assert store.schema_version == SCHEMA_VERSION
            assert [(e.id, e.status, e.after_id) for e in store.outbox_events()] == [
                (1, "accepted", None),
                (2, "pending", None),
            ]
            assert store.enqueue("depmon/test/evss", "trigger", TRIGGER, 3.0) == 10
