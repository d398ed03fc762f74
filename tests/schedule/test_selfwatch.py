"""depmon's view of itself (SPEC 10.3): the pure rules, table by table, and the watch's O(1) bookkeeping."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.config import Config
from monitor.metrics import Metrics
from monitor.results import Outcome, ProbeResult
from monitor.state.self_watch import (
    LoopLagMonitor,
    ScheduleFigures,
    ScheduleMeter,
    SelfCondition,
    SelfState,
    SelfWatch,
    inconclusive,
    judge,
    local_cause,
)
from tests.clocks import FakeClock
from tests.helpers import config_from

pytestmark = pytest.mark.unit

OK = SelfState()
BLIND = SelfState(SelfCondition.BLIND, "depmon cannot see out: canary egress-proxy is down (refused)")
STEADY = ScheduleFigures(scheduled_per_second=500.0, run_per_second=499.0, lag_p99=0.01, warmed_up=True)


def failure(outcome: Outcome, detail: str) -> ProbeResult:
    return ProbeResult.failure(outcome, detail)


class TestLocalCause:
    """Which failures are depmon's own egress, read from the probes' details."""

    @pytest.mark.parametrize(
        ("result", "cause"),
        [
            (failure(Outcome.CONNECT, "cannot connect to api.va.gov:443: Too many open files"), "too many open files"),
            (failure(Outcome.ERROR, "probe raised OSError: [Errno 12] Cannot allocate memory"), "out of memory"),
            (failure(Outcome.CONNECT, "cannot connect to 10.0.0.1:443: Network is unreachable"), "no route"),
            (failure(Outcome.CONNECT, "cannot connect to 10.0.0.1:443: No route to host"), "no route"),
            (failure(Outcome.DNS, "cannot resolve api.va.gov: Temporary failure in name resolution"), "resolver down"),
            (failure(Outcome.CONNECT, "proxy 127.0.0.1:3128 refused the connection"), "proxy down"),
            (failure(Outcome.CONNECT, "connection refused to proxy 127.0.0.1:3128"), "proxy down"),
            (failure(Outcome.DNS, "cannot resolve nowhere.invalid: Name or service not known"), None),
            (failure(Outcome.HTTP_STATUS, "HTTP 503 from /health"), None),
            (failure(Outcome.TIMEOUT, "no complete answer within 10s"), None),
            (ProbeResult.success("HTTP 200"), None),
            (ProbeResult.failure(Outcome.ERROR, "x", facts={"local_cause": "proxy down"}), "proxy down"),
        ],
    )
    def test_table(self, result: ProbeResult, cause: str | None) -> None:
        """Each detail maps to its local cause, or to none when the upstream is at fault."""
        assert local_cause(result) == cause


class TestInconclusive:
    """A failure that measured depmon counts toward no threshold."""

    TIMEOUT = failure(Outcome.TIMEOUT, "no complete answer within 2s")

    @pytest.mark.parametrize(
        ("result", "late", "stall", "state", "canary", "reason"),
        [
            (TIMEOUT, 0.0, 0.0, OK, False, None),
            (TIMEOUT, 0.0, 0.6, OK, False, "loop_stalled"),  # 0.6 > 0.25 x 2 s
            (TIMEOUT, 0.0, 0.4, OK, False, None),
            (TIMEOUT, 1.5, 0.0, OK, False, "started_late"),
            (TIMEOUT, 0.9, 0.0, OK, False, None),  # below max_lag (1 s)
            (failure(Outcome.HTTP_STATUS, "HTTP 503"), 5.0, 5.0, OK, False, None),  # an answer is an answer
            (failure(Outcome.HTTP_STATUS, "HTTP 503"), 0.0, 0.0, BLIND, False, "cannot_see_out"),
            (failure(Outcome.HTTP_STATUS, "HTTP 503"), 0.0, 0.0, OK, True, "canary_failing"),
            (failure(Outcome.CONNECT, "cannot connect: Too many open files"), 0.0, 0.0, OK, False, "local_resource"),
            (failure(Outcome.CONNECT, "cannot connect: Network is unreachable"), 0.0, 0.0, OK, False, None),
            (ProbeResult.success("ok"), 9.0, 9.0, BLIND, True, None),
        ],
    )
    def test_table(
        self, result: ProbeResult, late: float, stall: float, state: SelfState, canary: bool, reason: str | None
    ) -> None:
        """Late starts, loop stalls, a blind or failing-canary depmon and exhausted resources void a failure."""
        assert inconclusive(result, 2.0, late, stall, state, canary) == reason


class TestJudge:
    """Overloaded, cannot see out, or ok."""

    def test_keeping_up_is_ok(self) -> None:
        """999 of 1,000 scheduled runs with a small lag is ok."""
        assert judge(STEADY, 0.005, {}, {}, 100).ok

    def test_too_few_runs_is_overload_with_the_figures(self) -> None:
        """172 of 500 probes/s is overload; the reason gives both figures."""
        state = judge(ScheduleFigures(500.0, 172.0, 0.3, True), 0.0, {}, {}, 100)
        assert state.condition is SelfCondition.OVERLOADED
        assert state.reason.startswith("depmon cannot keep up: 500 probes/s scheduled, 172 run")

    @pytest.mark.parametrize("lag", [1.5, 3.0])
    def test_a_lagging_loop_is_overload(self, lag: float) -> None:
        """A loop lag over a second is overload even when every run ran."""
        assert judge(STEADY, lag, {}, {}, 100).condition is SelfCondition.OVERLOADED

    def test_a_stall_most_runs_did_not_meet_is_not_overload(self) -> None:
        """Every run ran and most on time: a one-second tail (one stall) is no overload; a late median is."""
        assert judge(ScheduleFigures(500.0, 500.0, 4.0, True, 0.01), 0.02, {}, {}, 100).ok
        late = judge(ScheduleFigures(500.0, 500.0, 4.0, True, 1.5), 0.02, {}, {}, 100)
        assert late.condition is SelfCondition.OVERLOADED
        assert "lag 1.50 s (median)" in late.reason

    def test_not_judged_before_warm_up(self) -> None:
        """During the first interval the random start offsets look like missed runs: no verdict yet."""
        assert judge(ScheduleFigures(500.0, 50.0, 0.0, False), 0.0, {}, {}, 100).ok

    def test_a_canary_down_is_blind(self) -> None:
        """A canary down makes depmon blind, naming the canary."""
        state = judge(STEADY, 0.0, {"egress-proxy": "connection refused"}, {}, 100)
        assert state.condition is SelfCondition.BLIND
        assert "canary egress-proxy is down (connection refused)" in state.reason

    @pytest.mark.parametrize(
        ("count", "reporting", "blind"),
        [(60, 100, True), (50, 100, True), (49, 100, False), (3, 4, True), (2, 2, False)],
    )
    def test_most_dependencies_with_one_local_cause_is_blind(self, count: int, reporting: int, blind: bool) -> None:
        """At least half of the reporting dependencies, and at least 3, failing alike: depmon cannot see out."""
        state = judge(STEADY, 0.0, {}, {"proxy down": count}, reporting)
        assert (state.condition is SelfCondition.BLIND) is blind


CONFIG = """
monitor:
  environment: test
  defaults: {interval: 2s, timeout: 1s, failure_threshold: 2, success_threshold: 1, confirm_interval: 500ms}
  canaries:
    - {name: egress-proxy, kind: tcp, host: 127.0.0.1, port: 9}
dependencies:
DEPS
features:
  f: {name: F, requires: [d0]}
"""


@pytest.fixture
def config(tmp_path: Path) -> Config:
    deps = "\n".join(
        f"  d{i}: {{name: D{i}, probes: [{{name: h, kind: tcp, host: 127.0.0.1, port: 9}}]}}" for i in range(10)
    )
    return config_from(tmp_path, CONFIG.replace("DEPS", deps))


class TestSelfWatch:
    """The watch's bookkeeping: local causes counted incrementally, canaries through thresholds."""

    def test_an_egress_loss_is_seen_at_the_third_dependency(self, config: Config) -> None:
        """Three of three reporting dependencies failing through the proxy make depmon blind at once."""
        metrics = Metrics()
        watch = SelfWatch(config, metrics, LoopLagMonitor(metrics))
        proxy_down = failure(Outcome.CONNECT, "proxy 127.0.0.1:3128 refused the connection")
        watch.dependency_result("d0", proxy_down)
        watch.dependency_result("d1", proxy_down)
        assert watch.state.ok
        watch.dependency_result("d2", proxy_down)
        assert watch.state.condition is SelfCondition.BLIND
        for dep in ("d0", "d1", "d2"):
            watch.dependency_result(dep, ProbeResult.success("connected"))
        assert watch.judge_now().ok

    def test_a_canary_down_after_its_threshold(self, config: Config) -> None:
        """One canary failure is `failing` (dependency failures void), two are down (the self page)."""
        metrics = Metrics()
        watch = SelfWatch(config, metrics, LoopLagMonitor(metrics))
        refused = failure(Outcome.CONNECT, "cannot connect to 127.0.0.1:9: Connection refused")
        watch.canary_result("egress-proxy", refused)
        assert (watch.canary_failing, watch.judge_now().ok) == (True, True)
        watch.canary_result("egress-proxy", refused)
        state = watch.judge_now()
        assert state.condition is SelfCondition.BLIND
        assert metrics.registry.get_sample_value("depmon_canary_up", {"canary": "egress-proxy"}) == 0
        watch.canary_result("egress-proxy", ProbeResult.success("connected"))
        assert (watch.canary_failing, watch.judge_now().ok) == (False, True)

    def test_overload_sets_the_gauge(self, config: Config) -> None:
        """A schedule kept at a third of its rate after warm-up sets depmon_overloaded to 1."""
        metrics = Metrics()
        clock = FakeClock(100.0)
        watch = SelfWatch(config, metrics, LoopLagMonitor(metrics), clock=clock)
        clock.advance(20.0)  # past warm-up (max interval 2 s + window 10 s)
        for _ in range(15):  # 10 dependencies every 2 s = 5/s scheduled; 1.5/s run
            clock.advance(10.0 / 15)
            watch.meter.ran(0.01)
        state = watch.judge_now()
        assert state.condition is SelfCondition.OVERLOADED
        assert metrics.registry.get_sample_value("depmon_overloaded") == 1


class TestLoopLagMonitor:
    """The event loop's lag as the probes ask for it."""

    def test_worst_since_takes_only_the_sleeps_ended_after(self) -> None:
        """The worst lag among the samples at or after `since`, not an older, larger one."""
        monitor = LoopLagMonitor(Metrics())
        for at, lag in [(1.0, 0.9), (2.0, 0.05), (3.0, 0.2), (4.0, 0.01)]:
            monitor.record(at, lag)
        assert monitor.worst_since(2.0) == 0.2
        assert monitor.worst_since(3.5) == 0.01
        assert monitor.worst_since(0.0) == 0.9
        assert monitor.worst_since(5.0) == 0.0
        assert monitor.median_since(2.0) == 0.05
        assert monitor.median_since(5.0) == 0.0


class TestScheduleMeter:
    """Runs of the last window against the configured rate."""

    def test_rate_and_p99(self) -> None:
        """100 runs in 10 s against 10/s scheduled; the p99 is the largest of 100 lags."""
        clock = FakeClock(100.0)
        meter = ScheduleMeter(10.0, 0.0, 10.0, clock)
        for i in range(100):
            clock.advance(0.1)
            meter.ran(i / 1000)
        figures = meter.figures()
        assert (figures.run_per_second, figures.lag_p99, figures.lag_median) == (10.0, 0.099, 0.05)
        clock.advance(11.0)
        assert meter.figures().run_per_second == 0.0
