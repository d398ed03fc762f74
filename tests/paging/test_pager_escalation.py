"""The pager's escalation writes (SPEC 11.2): queued with the trigger or later, once per incident across
restarts, held during a silence, cancelled by the resolve. A real store (SQLite file) and engine;
no sink: what the pager queues is what the outbox holds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from monitor.config import Config, load_config
from monitor.metrics import Metrics
from monitor.paging.incident_writer import Pager
from monitor.paging.outbox import Outbox
from monitor.paging.sinks.pagerduty_events import EVENTS
from monitor.results import Outcome, ProbeResult
from monitor.state.live import Engine
from monitor.store import SQLiteStore, Store
from tests.clocks import FakeClock

pytestmark = pytest.mark.integration

CONFIG = """
monitor:
  environment: unit
  significant_duration: 30s
  defaults: {interval: 10s, timeout: 1s, failure_threshold: 1, success_threshold: 1, confirm_interval: 1s}
pagerduty: {api_token: token, from_email: oncall@example.gov, requester_id: PREQ001}
contacts:
  product-owner: {role: Product Owner, name: P. O., via: DSVA Slack, pagerduty_user: PPO0001, slack_user: U0PO}
escalation: {notify: [product-owner]}
dependencies:
  evss:
    name: EVSS
    channel: "#evss-prod"
    pagerduty_escalation_policy: P0EVSS1
    probes: [{name: h, kind: tcp, host: 127.0.0.1, port: 9}]
features:
  claims: {name: Claims, requires: [evss], userbase_share: 0.3}
"""


def _config(tmp_path: Path) -> Config:
    path = tmp_path / "depmon.yaml"
    path.write_text(CONFIG)
    return load_config(path, environ={})


class Held:
    """Records what the pager tells the outbox to hold."""

    def __init__(self) -> None:
        self.keys: frozenset[str] = frozenset()

    def __call__(self, keys: frozenset[str]) -> None:
        self.keys = keys


@asynccontextmanager
async def pager_over(
    cfg: Config, clock: FakeClock, path: Path, engine: Engine | None = None
) -> AsyncIterator[tuple[Pager, Engine, Store, Held, Metrics]]:
    """A loaded pager over `engine` (a fresh one by default) and the store file at `path`."""
    metrics = Metrics()
    async with Store(SQLiteStore(path, environment="unit")) as store:
        engine = engine or Engine(cfg, metrics, clock=clock)
        outbox = Outbox(store, {EVENTS: None}, metrics, clock, wall_clock=clock)
        held = Held()
        outbox.hold = held  # type: ignore[method-assign]
        pager = Pager(cfg, engine, store, outbox, metrics, clock=clock)
        await pager.load()
        yield pager, engine, store, held, metrics


async def rest_rows(store: Store) -> list[tuple[str, str, str]]:
    """(step, target, status) of every REST write queued, in order."""
    return [
        (e.body["step"], e.body["target"], e.status)
        for e in await store.outbox_events()
        if e.destination == "pagerduty_rest"
    ]


def fail(clock: FakeClock) -> ProbeResult:
    return ProbeResult.failure(Outcome.CONNECT, "connection refused", at=clock())


@pytest.mark.anyio
class TestPagerEscalation:
    async def test_a_criterion_at_the_trigger_then_persistence_later(self, tmp_path: Path) -> None:
        """The trigger queues the contact's request and a note; past significant_duration, the policy, a
        note and the urgency."""
        clock, cfg = FakeClock(), _config(tmp_path)
        async with pager_over(cfg, clock, tmp_path / "s.sqlite3") as (pager, engine, store, _, _):
            engine.record("evss", "h", fail(clock))
            await pager.reconcile()
            assert await rest_rows(store) == [
                ("responders", "Product Owner (PPO0001)", "pending"),
                ("note", "Occurs for a significant portion of the userbase", "pending"),
            ]
            clock.advance(31.0)
            engine.record("evss", "h", fail(clock))
            await pager.reconcile()
            steps = [(step, target) for step, target, _ in await rest_rows(store)][2:]
            assert steps == [
                ("responders", "EVSS team (P0EVSS1)"),
                ("note", "Persists for a significant period of time; Requires out-of-team coordination to fix"),
                ("urgency", "high"),
            ]

    async def test_a_restart_queues_nothing_twice(self, tmp_path: Path) -> None:
        """A restarted pager reads what was queued: its escalation adds the policy and the urgency, not
        the contact again."""
        clock, cfg = FakeClock(), _config(tmp_path)
        path = tmp_path / "s.sqlite3"
        async with pager_over(cfg, clock, path) as (pager, engine, store, _, _):
            engine.record("evss", "h", fail(clock))
            await pager.reconcile()
        clock.advance(31.0)
        async with pager_over(cfg, clock, path, engine) as (pager, engine, store, _, _):
            engine.record("evss", "h", fail(clock))
            await pager.reconcile()
            rows = await rest_rows(store)
        targets = [target for step, target, _ in rows if step == "responders"]
        assert targets == ["Product Owner (PPO0001)", "EVSS team (P0EVSS1)"]
        assert [step for step, _, _ in rows].count("urgency") == 1

    async def test_a_silence_holds_the_writes_and_its_end_lets_them_go(self, tmp_path: Path) -> None:
        """While the dependency is silenced the outbox is told to hold its incident's writes."""
        clock, cfg = FakeClock(), _config(tmp_path)
        path = tmp_path / "s.sqlite3"
        async with pager_over(cfg, clock, path) as (pager, engine, _, held, _):
            engine.record("evss", "h", fail(clock))
            await pager.reconcile()
            assert held.keys == frozenset()
            with SQLiteStore(path, environment="unit") as cli:  # `depmon silence`, another process
                silence = cli.add_silence("evss", clock(), clock() + 60.0, "release")
            await pager._refresh_silences()
            await pager.reconcile()
            assert held.keys == {"depmon/unit/evss"}
            with SQLiteStore(path, environment="unit") as cli:
                cli.expire_silence(silence, clock())
            await pager._refresh_silences()
            await pager.reconcile()
            assert held.keys == frozenset()

    async def test_the_resolve_cancels_what_is_still_queued(self, tmp_path: Path) -> None:
        """Up again: the pending writes are cancelled in the resolve's commit and counted as cancelled."""
        clock, cfg = FakeClock(), _config(tmp_path)
        async with pager_over(cfg, clock, tmp_path / "s.sqlite3") as (pager, engine, store, _, metrics):
            engine.record("evss", "h", fail(clock))
            await pager.reconcile()
            clock.advance(1.0)
            engine.record("evss", "h", ProbeResult.success("connected", at=clock()))
            await pager.reconcile()  # the resolve hold starts
            clock.advance(cfg.monitor.resolve_hold + 1.0)
            engine.record("evss", "h", ProbeResult.success("connected", at=clock()))
            await pager.reconcile()
            assert {status for _, _, status in await rest_rows(store)} == {"cancelled"}
            value = metrics.registry.get_sample_value(
                "depmon_escalations_total", {"step": "responders", "outcome": "cancelled"}
            )
            assert value == 1.0
