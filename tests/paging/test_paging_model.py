"""A model-based test of the decision and delivery path (issue 9): engine -> pager -> store -> outbox.

Hypothesis drives any interleaving of probe results, time, maintenance windows opening and
closing, reloads (a dependency removed and added back), restarts (including a kill in the middle
of a reconciliation, between two decisions) and PagerDuty answers (202, 400, 403, 429, 5xx,
timeouts), on a real SQLite state file. After every step the invariants hold:

- at most one open incident per dependency, and none for a dependency that is down only because
  of its parent (one page per root cause);
- no trigger (new or update) is written for a dependency while a window covers it;
- no event is lost: every event is pending, accepted, or dropped after a 400;
and at the end, once everything is up, PagerDuty accepts and `resolve_hold` has passed, every
incident is resolved, nothing is pending, and no dedup key's last delivered event is a trigger.

`DEPMON_HYPOTHESIS_EXAMPLES` raises the number of examples for a benchmark-style run.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from monitor.config import Config, load_config
from monitor.maintenance.records import MaintenanceWindow
from monitor.metrics import Metrics
from monitor.pagerduty.clients import Delivery
from monitor.paging.incident_writer import Pager
from monitor.paging.outbox import Outbox
from monitor.paging.sinks import Destination
from monitor.paging.sinks.pagerduty_events import EVENTS
from monitor.results import Outcome, ProbeResult
from monitor.state.health import DependencyState
from monitor.state.live import Engine
from monitor.store import Store
from tests.clocks import FakeClock
from tests.helpers import write_config

pytestmark = pytest.mark.unit

SERVICES = {"parent": "PPARENT", "child": "PCHILD", "other": "POTHER"}
CONFIG = """
monitor:
  environment: model
  resolve_hold: 5s
  significant_duration: 30s
  defaults: {interval: 10s, timeout: 1s, failure_threshold: 1, success_threshold: 1, confirm_interval: 1s}
dependencies:
  parent:
    name: Parent
    pagerduty_service: PPARENT
    probes: [{name: h, kind: tcp, host: 127.0.0.1, port: 9}]
  child:
    name: Child
    pagerduty_service: PCHILD
    depends_on: [parent]
    probes: [{name: h, kind: tcp, host: 127.0.0.1, port: 9}]
OTHER
features:
  f1: {name: F1, requires: [child], userbase_share: 0.3}
  f0: {name: F0, requires: [parent], userbase_share: 0.05}
FEATURE
"""
OTHER = """  other:
    name: Other
    pagerduty_service: POTHER
    probes: [{name: h, kind: tcp, host: 127.0.0.1, port: 9}]"""
OTHER_FEATURE = "  f2: {name: F2, requires: [other], userbase_share: 0.1}"

ANSWERS = {
    "accept": Delivery("accepted", 202, "accepted"),
    "invalid": Delivery("dropped", 400, "HTTP 400: Event object is invalid"),
    "forbidden": Delivery("retry", 403, "HTTP 403 from a proxy"),
    "throttled": Delivery("retry", 429, "HTTP 429", retry_after=1.0),
    "server_error": Delivery("retry", 503, "HTTP 503"),
    "timeout": Delivery("retry", None, "no answer (DeadlineExceeded)"),
}


class SimulatedKill(Exception):
    """The process dies here: the reconciliation stops at this write (nothing on its path catches it)."""


class ScriptedSender:
    """PagerDuty as the model says it answers right now; remembers which events it answered 400."""

    def __init__(self) -> None:
        self.answer = "accept"
        self.answered_400: set[tuple[str, str, str]] = set()

    def can_deliver(self, destination: Destination) -> bool:
        return True

    async def send(self, destination: Destination, body: Mapping[str, Any]) -> Delivery:
        delivery = ANSWERS[self.answer]
        if delivery.http_status == 400:
            self.answered_400.add((str(body["dedup_key"]), str(body["event_action"]), repr(body.get("payload"))))
        return delivery


def _config(with_other: bool, directory: Path) -> Config:
    text = CONFIG.replace("OTHER", OTHER if with_other else "").replace("FEATURE", OTHER_FEATURE if with_other else "")
    return load_config(write_config(directory, text, "with-other.yaml" if with_other else "without-other.yaml"), {})


class PagingModel(RuleBasedStateMachine):
    """The paging path under any interleaving of inputs and faults."""

    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory()
        self.directory = Path(self._tmp.name)
        self.configs = {flag: _config(flag, self.directory) for flag in (True, False)}
        self.with_other = True
        self.clock = FakeClock(1_800_000_000.0)
        self.sender = ScriptedSender()
        self.upstream_ok = dict.fromkeys(SERVICES, True)  # what each dependency would answer
        self.windows: dict[str, MaintenanceWindow] = {}
        self.metrics = Metrics()
        self._portal_cm = start_blocking_portal()
        self.portal: BlockingPortal = self._portal_cm.__enter__()
        self.state_path = str(self.directory / "state.sqlite3")
        self.store: Store | None = None
        self._start()

    # -- the daemon's parts -----------------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self.configs[self.with_other]

    def _start(self) -> None:
        """A (re)started daemon: new store handle, engine, outbox and pager; open incidents reloaded."""
        self.store = Store(self.state_path, environment="test")
        self.engine: Engine = self.portal.call(lambda: Engine(self.config, self.metrics, clock=self.clock))
        self.portal.call(self.engine.set_windows, list(self.windows.values()))
        self.outbox = Outbox(self.store, {EVENTS: self.sender}, self.metrics, self.clock, wall_clock=self.clock)
        self.pager = Pager(self.config, self.engine, self.store, self.outbox, self.metrics, clock=self.clock)
        self.portal.call(self.pager.load)
        self.seen_events = len(self.portal.call(self.store.outbox_events))

    def teardown(self) -> None:
        try:
            self._settle_everything()
        finally:
            if self.store is not None:
                self.portal.call(self.store.close)
            self._portal_cm.__exit__(None, None, None)
            self._tmp.cleanup()

    # -- rules ----------------------------------------------------------------------------------------

    @rule(dep=st.sampled_from(sorted(SERVICES)), ok=st.booleans(), probed=st.booleans())
    def upstream_changes(self, dep: str, ok: bool, probed: bool) -> None:
        """An upstream fails or recovers; with `probed`, a scheduler round follows at once."""
        self.upstream_ok[dep] = ok
        if probed:
            self.every_probe_runs_and_the_pager_reconciles()

    @rule(dep=st.sampled_from(sorted(SERVICES)))
    def probe_runs(self, dep: str) -> None:
        """One dependency's probe reports what its upstream answers now (no reconciliation yet)."""
        if dep not in self.config.dependencies:
            return
        ok = self.upstream_ok[dep]
        result = (
            ProbeResult.success("connected", at=self.clock())
            if ok
            else ProbeResult.failure(Outcome.CONNECT, "connection refused", at=self.clock())
        )
        self.portal.call(self.engine.record, dep, "h", result)

    @rule()
    def every_probe_runs_and_the_pager_reconciles(self) -> None:
        """A scheduler round: every probe reports, then the pager decides."""
        for dep in sorted(self.config.dependencies):
            self.probe_runs(dep)
        self.pager_reconciles()

    @rule(seconds=st.sampled_from([0.5, 2.0, 6.0, 40.0]))
    def time_passes(self, seconds: float) -> None:
        """Time passes and the pager's tick runs (holds and escalations are matters of time)."""
        self.clock.now += seconds
        self.pager_reconciles()

    @rule(dep=st.sampled_from(sorted(SERVICES)), minutes=st.sampled_from([1, 10]))
    def window_opens(self, dep: str, minutes: int) -> None:
        start = datetime.fromtimestamp(self.clock() - 1, UTC)
        self.windows[dep] = MaintenanceWindow(
            f"W-{dep}", start, start + timedelta(minutes=minutes), "planned", (SERVICES[dep],)
        )
        self.portal.call(self.engine.set_windows, list(self.windows.values()))

    @rule(dep=st.sampled_from(sorted(SERVICES)))
    def window_closes(self, dep: str) -> None:
        self.windows.pop(dep, None)
        self.portal.call(self.engine.set_windows, list(self.windows.values()))

    @rule(answer=st.sampled_from(sorted(ANSWERS)))
    def pagerduty_answers(self, answer: str) -> None:
        self.sender.answer = answer

    @rule()
    def pager_reconciles(self) -> None:
        self.portal.call(self.engine.tick)
        self.portal.call(self.pager.reconcile)
        self._check_new_events()
        self._check_one_page_per_root_cause()

    @rule()
    def outbox_delivers(self) -> None:
        self.portal.call(self.outbox.drain, 5.0)

    @rule(after=st.integers(min_value=0, max_value=2))
    def killed_mid_reconciliation_then_restarted(self, after: int) -> None:
        """The process dies after `after` store writes of a reconciliation (a silence's entry, then the
        decisions' one transaction), then starts again."""
        assert self.store is not None
        real_apply, real_apply_all = self.store.apply, self.store.apply_all
        applied = 0

        def dies_after(real: Any) -> Any:
            async def dying(writes: Any, fence: int | None = None) -> Any:
                nonlocal applied
                if applied >= after:
                    raise SimulatedKill
                applied += 1
                return await real(writes, fence)

            return dying

        self.store.apply = dies_after(real_apply)  # type: ignore[method-assign]
        self.store.apply_all = dies_after(real_apply_all)  # type: ignore[method-assign]
        self.portal.call(self.engine.tick)
        with contextlib.suppress(SimulatedKill):
            self.portal.call(self.pager.reconcile)
        self._check_new_events()
        self.portal.call(self.store.close)
        self._start()

    @rule(with_other=st.booleans())
    def config_reloaded(self, with_other: bool) -> None:
        old = self.engine
        self.with_other = with_other
        engine: Engine = self.portal.call(lambda: Engine(self.config, self.metrics, clock=self.clock))
        self.portal.call(engine.adopt, old)
        self.portal.call(engine.set_windows, list(self.windows.values()))
        self.engine = engine
        # A reload builds a new pager over the new engine, which reads the open incidents from the store.
        self.pager = Pager(self.config, engine, self.store, self.outbox, self.metrics, clock=self.clock)
        self.portal.call(self.pager.load)

    # -- invariants -----------------------------------------------------------------------------------

    @invariant()
    def at_most_one_open_incident_per_dependency(self) -> None:
        assert self.store is not None
        deps = [i.dependency for i in self.portal.call(self.store.open_incidents)]
        assert len(deps) == len(set(deps)), deps

    @invariant()
    def no_event_is_lost_but_a_400(self) -> None:
        assert self.store is not None
        for event in self.portal.call(self.store.outbox_events):
            assert event.status in ("pending", "accepted", "dropped"), event
            if event.status == "dropped":
                key = (event.dedup_key, str(event.body["event_action"]), repr(event.body.get("payload")))
                assert key in self.sender.answered_400, event

    def _in_window(self, dep: str) -> bool:
        now = datetime.fromtimestamp(self.clock(), UTC)
        window = self.windows.get(dep)
        return window is not None and window.is_open_at(now)

    def _check_new_events(self) -> None:
        """No trigger (new or update) was written for a dependency inside its window."""
        assert self.store is not None
        events = self.portal.call(self.store.outbox_events)
        for event in events[self.seen_events :]:
            dep = event.dedup_key.rsplit("/", 1)[-1]
            if event.action == "trigger":
                assert not self._in_window(dep), f"trigger for {dep} inside its maintenance window"
        self.seen_events = len(events)

    def _check_one_page_per_root_cause(self) -> None:
        """After a reconciliation, no open incident belongs to a dependency down only because of its parent."""
        assert self.store is not None
        for incident in self.portal.call(self.store.open_incidents):
            state = self.engine.dependencies.get(incident.dependency)
            if state is not None and state.health is DependencyState.DOWN:
                assert state.cause is None, f"{incident.dependency} paged while {state.cause} is down"

    def _settle_everything(self) -> None:
        """Everything up, no windows, PagerDuty accepting, time past the hold: every incident resolves."""
        self.windows.clear()
        self.sender.answer = "accept"
        self.upstream_ok = dict.fromkeys(SERVICES, True)
        self.portal.call(self.engine.set_windows, [])
        for _ in range(4):
            for dep in self.config.dependencies:
                self.probe_runs(dep)
            self.portal.call(self.engine.tick)
            self.portal.call(self.pager.reconcile)
            self.portal.call(self.outbox.drain, 5.0)
            self.clock.now += 6.0
        assert self.store is not None
        assert self.portal.call(self.store.open_incidents) == []
        assert self.portal.call(self.store.pending_count) == 0
        # After each key's last accepted trigger comes a resolve: accepted, or dropped by a 400 (the
        # one loss the contract allows: PagerDuty said the event itself is invalid).
        unresolved: dict[str, bool] = {}
        for event in self.portal.call(self.store.outbox_events):
            if event.action == "trigger" and event.status == "accepted":
                unresolved[event.dedup_key] = True
            elif event.action == "resolve" and event.status in ("accepted", "dropped"):
                unresolved[event.dedup_key] = False
        assert [key for key, open_ in unresolved.items() if open_] == []


PagingModel.TestCase.settings = settings(
    max_examples=int(os.environ.get("DEPMON_HYPOTHESIS_EXAMPLES", "60")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestPagingModel = PagingModel.TestCase
