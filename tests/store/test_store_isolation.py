"""Issue 20 (SPEC 11.4): environments sharing one database, and no page waiting on the store.

Each test runs `depmon run` subprocesses against loopback upstreams, a fake PagerDuty per
environment, and either the session's throwaway PostgreSQL (`postgres_url`) or a SQLite file,
while the test itself holds locks from a connection of its own, as another client of the
database would.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.sim.fake_pagerduty import FakePagerDuty, ReceivedEvent
from monitor.sim.loopback import LoopbackServer, Response
from tests.harness import DaemonProcess, metric_value, replica_config, wait_for

pytestmark = pytest.mark.e2e

DEPENDENCIES = ("evss", "mhv", "vaos")
# Confirmed down within interval + 2 timeouts + a confirmation: ~2.2 s; PAGE_BOUND adds the
# pager's tick and a delivery.
PAGE_BOUND = 5.0
LOCK_HELD = 10.0  # seconds the test holds a lock: longer than the bound, and than the stall limit (5 s)


class Deployment:
    """One environment: its upstreams (each able to fail alone), its fake PagerDuty, its daemon."""

    def __init__(self, tmp_path: Path, environment: str, state: str) -> None:
        self.environment = environment
        self.pagerduty = FakePagerDuty().start()
        self.upstreams = {dep: LoopbackServer() for dep in DEPENDENCIES}
        self.healthy = {dep: True for dep in DEPENDENCIES}
        for dep, server in self.upstreams.items():
            server.start()
            server.route("GET", "/health", self._answer(dep))
        self.config = tmp_path / f"{environment}.yaml"
        self.config.write_text(
            replica_config(
                environment=environment,
                state=state,
                replica=f"{environment}-1",
                quorum=1,
                events_url=self.pagerduty.events_url,
                health_urls={dep: f"{server.url}/health" for dep, server in self.upstreams.items()},
            )
        )
        self.daemon = DaemonProcess(self.config, tmp_path / f"{environment}.sqlite3")

    def _answer(self, dependency: str) -> object:
        def answer(request: object) -> Response:
            return Response(200 if self.healthy[dependency] else 503, b'{"status": "pass"}')

        return answer

    def fail(self, dependency: str) -> float:
        """Make the dependency's health check fail; returns when (UNIX time)."""
        self.healthy[dependency] = False
        return time.time()

    def leading(self) -> bool:
        exposition = self.daemon.get("/metrics").text
        return metric_value(exposition, "depmon_replica_leader", replica=f"{self.environment}-1") == 1

    def key(self, dependency: str) -> str:
        return f"depmon/{self.environment}/{dependency}"

    def triggers(self, dependency: str) -> list[ReceivedEvent]:
        return [e for e in self.pagerduty.events_for(self.key(dependency)) if e.action == "trigger"]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "monitor.entry", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def close(self) -> None:
        self.daemon.close()
        for server in self.upstreams.values():
            server.stop()
        self.pagerduty.stop()


@contextlib.contextmanager
def deployment(tmp_path: Path, environment: str, state: str) -> Iterator[Deployment]:
    made = Deployment(tmp_path, environment, state)
    try:
        yield made
    finally:
        made.close()


class HeldLock:
    """A lock taken by another client of the database, in a thread, until `release()`."""

    def __init__(self, take: list[str], connect: object) -> None:
        self._take, self._connect = take, connect
        self._taken, self._release = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        connection = self._connect()  # type: ignore[operator]
        try:
            for statement in self._take:
                connection.execute(statement)
            self._taken.set()
            self._release.wait(60)
            connection.rollback()
        finally:
            connection.close()

    def __enter__(self) -> HeldLock:
        self._thread.start()
        assert self._taken.wait(10), "the test could not take its lock"
        return self

    def release(self) -> float:
        self._release.set()
        self._thread.join(10)
        return time.time()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def postgres_lock(url: str, table: str) -> HeldLock:
    import psycopg

    return HeldLock([f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"], lambda: psycopg.connect(url))


def sqlite_write_lock(path: Path) -> HeldLock:
    # isolation_level=None: the BEGIN IMMEDIATE is ours, and holds the file's write lock until rollback.
    return HeldLock(["BEGIN IMMEDIATE"], lambda: sqlite3.connect(path, isolation_level=None, check_same_thread=False))


def read_status(env: Deployment) -> None:
    """A /status reader (the daemon may be gone when it would answer: the test is over then)."""
    with contextlib.suppress(Exception):
        env.daemon.get("/status", timeout=30)


def first_trigger(target: Deployment, dependency: str, timeout: float) -> ReceivedEvent:
    wait_for(lambda: target.triggers(dependency), timeout, f"{target.environment}'s page for {dependency}")
    return target.triggers(dependency)[0]


class TestEnvironmentsShareOneDatabase:
    """Production and staging on one PostgreSQL database: each its own leader, pages and silences."""

    def test_each_pages_its_own_outages_once_and_never_the_others(self, tmp_path: Path, postgres_url: str) -> None:
        """Each environment leads and pages only its own outages, once, and a staging silence never
        silences production."""
        state = f"state_url: {postgres_url}"
        with (
            deployment(tmp_path, "production", state) as production,
            deployment(tmp_path, "staging", state) as staging,
        ):
            production.daemon.start()
            staging.daemon.start()
            wait_for(lambda: production.leading() and staging.leading(), 20, "both environments leading")
            silenced = staging.cli("silence", "mhv", "--for", "1h", "--reason", "staging drill")
            assert silenced.returncode == 0, silenced.stderr
            wait_for(lambda: staging.daemon.status()["silences"], 10, "staging's daemon to read its silence")
            assert production.daemon.status()["silences"] == []
            assert "no silence in force" in production.cli("silence", "--list").stdout

            # Production's evss and mhv fail; staging's upstreams stay healthy.
            production.fail("evss")
            production.fail("mhv")
            first_trigger(production, "evss", 20)
            first_trigger(production, "mhv", 20)  # staging's silence is staging's
            # Then staging's own outage: its page is the later event that proves the absences below.
            staging.fail("vaos")
            first_trigger(staging, "vaos", 20)

            assert [len(production.triggers(d)) for d in DEPENDENCIES] == [1, 1, 0]
            assert [len(staging.triggers(d)) for d in DEPENDENCIES] == [0, 0, 1]
            assert {e.dedup_key.split("/")[1] for e in production.pagerduty.events} == {"production"}
            assert {e.dedup_key.split("/")[1] for e in staging.pagerduty.events} == {"staging"}
            assert production.leading()
            assert staging.leading()
            assert production.daemon.count("pager_error") == 0
            assert staging.daemon.count("pager_error") == 0
            replicas = {r["replica"] for r in staging.daemon.status()["replicas"]}
            assert replicas == {"staging-1"}


class TestALockedTableAPageDoesNotNeed:
    """A lock held from another connection on a table no page needs delays no page."""

    @pytest.mark.parametrize("table", ["feature_history", "silences"])
    def test_the_page_comes_within_the_usual_bound_and_metrics_answers(
        self, tmp_path: Path, postgres_url: str, table: str
    ) -> None:
        """With `table` locked for longer than the page takes, the page arrives within its usual
        bound and /metrics answers 200 meanwhile."""
        with deployment(tmp_path, "e2e", f"state_url: {postgres_url}") as env:
            env.daemon.start()
            wait_for(env.leading, 20, "the replica leading")
            with postgres_lock(postgres_url, table) as lock:
                for _ in range(4):  # /status readers waiting on the locked table
                    threading.Thread(target=read_status, args=(env,), daemon=True).start()
                down_at = env.fail("evss")
                page = first_trigger(env, "evss", 3 * PAGE_BOUND)
                scrape = env.daemon.get("/metrics", timeout=2)
                lock.release()
            delay = page.received_at - down_at
            print(f"page delay with {table} locked: {delay:.2f} s")
            assert delay <= PAGE_BOUND, f"paged {delay:.2f} s after the outage"
            assert scrape.status_code == 200
            assert metric_value(scrape.text, "depmon_store_stalled") == 0


class TestAStalledOutbox:
    """A decision whose writes cannot commit within 5 s is depmon's own trouble."""

    def test_postgres_outbox_locked_self_page_then_the_page_once(self, tmp_path: Path, postgres_url: str) -> None:
        """With the outbox locked the self page names the store and goes directly; once the lock is
        released the dependency's page is delivered exactly once."""
        with deployment(tmp_path, "e2e", f"state_url: {postgres_url}") as env:
            env.daemon.start()
            wait_for(env.leading, 20, "the replica leading")
            with postgres_lock(postgres_url, "outbox") as lock:
                self._stalled_then_paged_once(env, lock)

    def test_sqlite_busy_file_self_page_then_the_page_once(self, tmp_path: Path) -> None:
        """SQLite's busy path: another connection holding the file's write lock gives the same."""
        state = f"state_path: {tmp_path / 'e2e.sqlite3'}"
        with deployment(tmp_path, "e2e", state) as env:
            env.daemon.start()
            wait_for(lambda: env.daemon.status()["ready"], 20, "the daemon ready")
            with sqlite_write_lock(env.daemon.state) as lock:
                self._stalled_then_paged_once(env, lock)

    @staticmethod
    def _stalled_then_paged_once(env: Deployment, lock: HeldLock) -> None:
        env.fail("evss")
        self_page = first_trigger(env, "self", 20)
        details = self_page.body["payload"]["custom_details"]
        assert (self_page.body["payload"]["class"], details["condition"]) == ("store_stalled", "store_stalled")
        assert "store" in details["reason"]
        assert "R" * 32 not in str(self_page.body["payload"])
        assert env.triggers("evss") == []  # not yet: it waits for the store
        assert metric_value(env.daemon.get("/metrics", timeout=2).text, "depmon_store_stalled") == 1
        released_at = lock.release()
        page = first_trigger(env, "evss", 20)
        assert page.received_at - released_at <= PAGE_BOUND
        # The self page resolves once recorded; its resolve is the later event that proves the count.
        wait_for(
            lambda: any(e.action == "resolve" for e in env.pagerduty.events_for(env.key("self"))),
            20,
            "the self page resolved",
        )
        assert len(env.triggers("evss")) == 1
        assert len(env.triggers("self")) == 1
        assert metric_value(env.daemon.get("/metrics").text, "depmon_store_stalled") == 0
        assert env.daemon.find("store_stalled") is not None
        assert env.daemon.find("store_answered") is not None
