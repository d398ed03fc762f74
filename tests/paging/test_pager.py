"""The pager's loop itself: it reconciles on a change, carries decisions out in order, and a
reload's `use()` makes it follow the new engine.

A real store (SQLite in memory) and engine; no sender: what the pager decides is what it writes
to the outbox. Absences are proved by a later write that did happen.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from monitor.config import Config
from monitor.metrics import Metrics
from monitor.paging import event_content as event_content_module
from monitor.paging import incident_writer as pager_module
from monitor.paging.incident_writer import Pager
from monitor.paging.outbox import Outbox
from monitor.paging.sinks.pagerduty_events import EVENTS
from monitor.results import Outcome, ProbeResult
from monitor.state.live import Engine
from monitor.store import Store
from tests.clocks import FakeClock
from tests.helpers import config_from, until

pytestmark = pytest.mark.unit

WAIT = 10.0
CONFIG = """
monitor:
  environment: unit
  resolve_hold: 5s
  defaults: {interval: 10s, timeout: 1s, failure_threshold: 1, success_threshold: 1, confirm_interval: 1s}
dependencies:
  evss:
    name: EVSS
    probes: [{name: h, kind: tcp, host: 127.0.0.1, port: 9}]
  caseflow:
    name: Caseflow
    probes: [{name: h, kind: tcp, host: 127.0.0.1, port: 9}]
"""
OTHER = """
  mhv:
    name: MHV
    probes: [{name: h, kind: tcp, host: 127.0.0.1, port: 9}]
"""


def config(tmp_path: Path, text: str) -> Config:
    """The config `text` loads to (tests.helpers.config_from)."""
    return config_from(tmp_path, text)


def fail(clock: FakeClock) -> ProbeResult:
    return ProbeResult.failure(Outcome.CONNECT, "connection refused", at=clock())


def ok(clock: FakeClock) -> ProbeResult:
    return ProbeResult.success("connected", at=clock())


@asynccontextmanager
async def pager_over(cfg: Config, clock: FakeClock) -> AsyncIterator[tuple[Pager, Engine, Store]]:
    """A pager over a fresh engine of `cfg` and an in-memory store, loaded (not running)."""
    metrics = Metrics()
    async with Store(":memory:", environment="test") as store:
        engine = Engine(cfg, metrics, clock=clock)
        outbox = Outbox(store, {EVENTS: None}, metrics, clock, wall_clock=clock)
        pager = Pager(cfg, engine, store, outbox, metrics, clock=clock)
        await pager.load()
        yield pager, engine, store


async def written(store: Store) -> list[tuple[str, str]]:
    """(dependency, action) of every PagerDuty event in the outbox, in the order written."""
    return [
        (event.dedup_key.rsplit("/", 1)[-1], str(event.action))
        for event in await store.outbox_events()
        if event.destination == "pagerduty"
    ]


async def until_written(store: Store, count: int) -> list[tuple[str, str]]:
    """The outbox's events once it holds `count` of them."""

    async def enough() -> list[tuple[str, str]] | None:
        events = await written(store)
        return events if len(events) >= count else None

    found = await until(enough, WAIT)
    assert found is not None
    return found


@pytest.mark.anyio
class TestPager:
    """The incident loop around the pure decisions."""

    async def test_a_change_wakes_it_without_a_tick(self, tmp_path: Path) -> None:
        """With no tick at all, a dependency going down is still paged: the change woke the loop."""
        clock = FakeClock()
        async with (
            pager_over(config(tmp_path, CONFIG), clock) as (pager, engine, store),
            anyio.create_task_group() as tg,
        ):
            await tg.start(pager.run)
            engine.record("evss", "h", fail(clock))
            assert await until_written(store, 1) == [("evss", "trigger")]
            tg.cancel_scope.cancel()

    async def test_a_hanging_read_of_the_silences_holds_no_page(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """While a read of the silences hangs, a dependency going down is still paged: the silences are
        read beside the decisions, which use the last read (in a mass outage each read took 40-200 ms)."""
        monkeypatch.setattr(pager_module, "SILENCES_EVERY_SECONDS", 0.01)
        clock = FakeClock()
        async with (
            pager_over(config(tmp_path, CONFIG), clock) as (pager, engine, store),
            anyio.create_task_group() as tg,
        ):
            real, reads, release = store.silences, [], anyio.Event()

            async def hanging() -> Any:
                reads.append(clock())
                if len(reads) > 1:
                    await release.wait()
                return await real()

            monkeypatch.setattr(store, "silences", hanging)
            await tg.start(pager.run)
            with anyio.fail_after(WAIT):
                while len(reads) < 2:  # the second read hangs
                    await anyio.sleep(0.01)
            engine.record("evss", "h", fail(clock))
            assert await until_written(store, 1) == [("evss", "trigger")]
            release.set()
            tg.cancel_scope.cancel()

    async def test_decisions_are_written_in_order(self, tmp_path: Path) -> None:
        """Two outages page in config order; once both are up past the hold, they resolve in the same order."""
        clock = FakeClock()
        async with pager_over(config(tmp_path, CONFIG), clock) as (pager, engine, store):
            engine.record("caseflow", "h", fail(clock))
            engine.record("evss", "h", fail(clock))
            await pager.reconcile()
            engine.record("evss", "h", ok(clock))
            engine.record("caseflow", "h", ok(clock))
            await pager.reconcile()  # the resolve hold starts
            clock.advance(6.0)
            await pager.reconcile()
            assert await written(store) == [
                ("evss", "trigger"),
                ("caseflow", "trigger"),
                ("evss", "resolve"),
                ("caseflow", "resolve"),
            ]
            assert pager.open == {}

    async def test_a_page_walks_no_graph(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A page's `app_banners` come from what the pager keeps per config: walking the feature graph per
        page made 1,000 pages at once miss their bound (a topological sort of the config each)."""
        clock = FakeClock()
        async with pager_over(config(tmp_path, CONFIG), clock) as (pager, engine, store):

            def walked(*args: object) -> list[str]:
                raise AssertionError("a page walked the graph")

            monkeypatch.setattr(event_content_module, "app_banners", walked)
            engine.record("evss", "h", fail(clock))
            await pager.reconcile()
            assert await written(store) == [("evss", "trigger")]

    async def test_a_reloads_pager_takes_over_the_open_incidents(self, tmp_path: Path) -> None:
        """A reload builds a new pager over the new engine: it reads the incidents the old one left open,
        resolves the one whose dependency the reload removed, and pages the new engine's outage."""
        clock = FakeClock()
        async with pager_over(config(tmp_path, CONFIG), clock) as (old_pager, old, store):
            old.record("caseflow", "h", fail(clock))
            await old_pager.reconcile()
            reloaded = config(tmp_path, CONFIG.replace("caseflow", "appeals") + OTHER)
            new = Engine(reloaded, Metrics(), clock=clock)
            pager = Pager(reloaded, new, store, old_pager.outbox, Metrics(), clock=clock)
            await pager.load()
            assert set(pager.open) == {"caseflow"}
            old.record("evss", "h", fail(clock))  # the replaced engine: nobody reads it any more
            new.record("mhv", "h", fail(clock))
            await pager.reconcile()
            assert await written(store) == [("caseflow", "trigger"), ("mhv", "trigger"), ("caseflow", "resolve")]

    async def test_the_daemons_tick_wakes_the_loop(self, tmp_path: Path) -> None:
        """Time alone (the resolve hold running out) is decided at the daemon's tick: the loop has none."""
        clock = FakeClock()
        async with (
            pager_over(config(tmp_path, CONFIG), clock) as (pager, engine, store),
            anyio.create_task_group() as tg,
        ):
            await tg.start(pager.run)
            engine.record("evss", "h", fail(clock))
            await until_written(store, 1)
            engine.record("evss", "h", ok(clock))  # up again: the hold starts, nothing sent
            with anyio.fail_after(WAIT):
                while pager.open["evss"].up_since is None:
                    await anyio.sleep(0.01)
            clock.advance(3600.0)
            pager.tick()
            assert await until_written(store, 2) == [("evss", "trigger"), ("evss", "resolve")]
            tg.cancel_scope.cancel()


def many(count: int) -> str:
    """A config of `count` independent dependencies."""
    deps = "".join(
        f"  dep-{i}:\n    name: Dep {i}\n    probes: [{{name: h, kind: tcp, host: 127.0.0.1, port: 9}}]\n"
        for i in range(count)
    )
    return CONFIG.split("dependencies:")[0] + "dependencies:\n" + deps


RECURRENCE = """
playbooks:
  plays: {title: Mobile Incident Response Plays, url: "https://example.invalid/plays"}
escalation:
  recurrence_playbooks: [plays]
"""


@pytest.mark.anyio
class TestStoreRoundTrips:
    """A mass outage's decisions wait for no read from the store: each round trip to its thread
    waits for a turn of a busy event loop (issue 10: 1,000 pages at once)."""

    async def test_600_pages_are_three_commits_and_one_read(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """600 dependencies down at once: one read of the incident counts, 600 / COMMIT_BATCH commits, nothing else."""
        clock = FakeClock()
        calls: list[str] = []
        async with pager_over(config(tmp_path, many(600)), clock) as (pager, engine, store):
            for name in ("incident_counts", "incidents_of", "silences", "apply", "apply_batch", "outbox_events"):
                real = getattr(store, name)

                def counted(*args: object, _real: Any = real, _name: str = name, **kwargs: object) -> Any:
                    calls.append(_name)
                    return _real(*args, **kwargs)

                monkeypatch.setattr(store, name, counted)
            for i in range(600):
                engine.record(f"dep-{i}", "h", fail(clock))
            await pager.reconcile()
            assert calls == ["incident_counts"] + ["apply_batch"] * math.ceil(600 / pager_module.COMMIT_BATCH)
            assert len(await store.outbox_events()) == 600
            assert len(pager.open) == 600

    async def test_a_recurrence_is_counted_without_reading_the_store(self, tmp_path: Path) -> None:
        """The second outage of EVSS attaches the Plays: the count of its incidents followed the first one."""
        clock = FakeClock()
        async with pager_over(config(tmp_path, CONFIG + RECURRENCE), clock) as (pager, engine, store):
            for _ in range(2):
                engine.record("evss", "h", fail(clock))
                await pager.reconcile()
                engine.record("evss", "h", ok(clock))
                await pager.reconcile()
                clock.advance(6.0)  # past the resolve hold
                await pager.reconcile()
            triggers = [
                e for e in await store.outbox_events() if e.action == "trigger" and e.destination == "pagerduty"
            ]
            playbooks = [t.body["payload"]["custom_details"]["playbooks"] for t in triggers]
            assert [any("Plays" in str(p) for p in books) for books in playbooks] == [False, True]
