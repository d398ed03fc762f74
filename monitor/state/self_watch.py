"""depmon's view of itself: is it keeping its schedule, and can it see out? (SPEC 10.3, 10.4)

depmon's own trouble must never page as a dependency's. Four inputs feed one verdict:

    scheduler --each run's lag--> ScheduleMeter     \\
    LoopLagMonitor (its own task) --loop lag-->      >-- judge() --> SelfState --> the pager's self page
    canary results --> canary health                 /        \\--> inconclusive() --> the scheduler
    dependency results --> LocalCauses (latest per dependency)

- **overloaded**: fewer than `min_run_ratio` of the scheduled probe runs ran in the last
  `window` seconds, or most of them started more than `max_lag` late, or the event loop's
  median lag over the window passed `max_lag` ("depmon cannot keep up: 500 probes/s
  scheduled, 172 run"). Medians, not tails: a stall of a second (a full garbage collection,
  a burst of work) makes the probes that ran during it inconclusive (`inconclusive`), but
  it is not a schedule depmon cannot keep, and paging for it at 1,000 probes every 2 s
  woke someone for nothing;
- **cannot see out**: a canary is down, or most dependencies' latest results failed with the
  same local cause (no route, resolver, proxy, too many open files, out of memory).

While either holds, every dependency failure is inconclusive: it counts toward no threshold and
pages nobody; the pager sends one page under `depmon/<environment>/self` instead. Independently
of that, a timeout of a probe that started late, or during which the event loop stalled, is
inconclusive too: the timeout measured depmon, not the upstream.

`judge`, `inconclusive` and `local_cause` are pure; `SelfWatch` holds the meters and runs the loop.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import anyio
import anyio.abc
import structlog

from monitor.config import AnyProbeSpec, Config, Timing
from monitor.metrics import Metrics
from monitor.results import Outcome, ProbeResult
from monitor.state.health import DependencyHealth, DependencyState, ProbeHealth, ProbeStatus, observe

__all__ = [
    "LoopLagMonitor",
    "ScheduleMeter",
    "SelfCondition",
    "SelfState",
    "SelfWatch",
    "Thresholds",
    "inconclusive",
    "judge",
    "local_cause",
]

log = structlog.get_logger("depmon.self")


class SelfCondition(enum.StrEnum):
    """depmon's own state."""

    OK = "ok"
    OVERLOADED = "overloaded"
    BLIND = "cannot_see_out"
    STORE_STALLED = "store_stalled"  # the pager's, not the watch's: decisions cannot commit (SPEC 11.4)


@dataclass(frozen=True, slots=True)
class SelfState:
    """The verdict on depmon itself, with the sentence a page and /status show."""

    condition: SelfCondition = SelfCondition.OK
    reason: str = ""

    @property
    def ok(self) -> bool:
        """True when depmon can trust its own probes."""
        return self.condition is SelfCondition.OK

    def as_dependency(self) -> DependencyHealth:
        """The verdict in the shape the incident decisions take (down while not ok)."""
        state = DependencyState.UP if self.ok else DependencyState.DOWN
        return DependencyHealth(state, state, failing=not self.ok)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When depmon calls itself overloaded or blind."""

    window: float = 10.0  # seconds of runs the schedule figures are taken over
    min_run_ratio: float = 0.9
    max_lag: float = 1.0  # seconds: the median probe start lag, or the median event-loop lag
    local_cause_share: float = 0.5  # of the dependencies with a result: "most"
    local_cause_minimum: int = 3  # fewer dependencies failing alike is not depmon's egress
    stall_share_of_timeout: float = 0.25  # a stall this long (x timeout) during a probe voids its timeout


# Local causes, matched on the readable details the probes write (strerror texts and their
# own wording); one table, tested row by row.
_LOCAL_CAUSES: tuple[tuple[str, str], ...] = (
    ("too many open files", "too many open files"),
    ("cannot allocate memory", "out of memory"),
    ("network is unreachable", "no route"),
    ("no route to host", "no route"),
    ("temporary failure in name resolution", "resolver down"),
    ("name or service not known", ""),  # a name that does not exist is the upstream's problem
)


def local_cause(result: ProbeResult) -> str | None:
    """The local cause of a failed result (depmon's own egress), or None when it is the upstream's."""
    if result.ok:
        return None
    if cause := result.facts.get("local_cause"):
        return cause
    detail = result.detail.lower()
    # The httpx path says "proxy HOST:PORT refused ...", the aiohttp transport "... to proxy HOST:PORT".
    if result.outcome is Outcome.CONNECT and (detail.startswith("proxy ") or " to proxy " in detail):
        return "proxy down"
    for marker, cause in _LOCAL_CAUSES:
        if marker in detail:
            return cause or None
    return None


_RESOURCE_CAUSES = frozenset({"too many open files", "out of memory"})


def inconclusive(
    result: ProbeResult,
    timeout: float,
    started_late_by: float,
    loop_stall: float,
    state: SelfState,
    canary_failing: bool = False,
    thresholds: Thresholds = Thresholds(),
) -> str | None:
    """Why a failed result says nothing about the upstream (its `reason` label), or None.

    `started_late_by`: seconds between when the run was due and when it started;
    `loop_stall`: the longest event-loop lag seen while it ran; `canary_failing`: a canary has
    failed at least once and not recovered (its own thresholds may not have confirmed it yet).
    A local cause other than exhausted resources (no route, resolver, proxy) is inconclusive
    only through the verdict: for one dependency alone it may well be that dependency's network.
    """
    if result.ok:
        return None
    if not state.ok:
        return str(state.condition)
    if canary_failing:
        return "canary_failing"
    if local_cause(result) in _RESOURCE_CAUSES:
        return "local_resource"
    if result.outcome is Outcome.TIMEOUT:
        limit = thresholds.stall_share_of_timeout * timeout
        if loop_stall > limit:
            return "loop_stalled"
        if started_late_by > max(limit, thresholds.max_lag):
            return "started_late"
    return None


@dataclass(frozen=True, slots=True)
class ScheduleFigures:
    """What the scheduler achieved over the window."""

    scheduled_per_second: float
    run_per_second: float
    lag_p99: float
    warmed_up: bool
    lag_median: float = 0.0


def judge(
    figures: ScheduleFigures,
    loop_lag: float,
    canaries_down: Mapping[str, str],
    local_causes: Mapping[str, int],
    reporting: int,
    thresholds: Thresholds = Thresholds(),
) -> SelfState:
    """depmon's verdict on itself (rules: module docstring). Blindness wins over overload.

    `local_causes`: how many dependencies' latest results failed with each local cause, out of
    `reporting` dependencies with a result.
    """
    if canaries_down:
        name, detail = sorted(canaries_down.items())[0]
        return SelfState(SelfCondition.BLIND, f"depmon cannot see out: canary {name} is down ({detail})")
    blind = _blind_by_local_cause(local_causes, reporting, thresholds)
    if blind is not None:
        return blind
    if figures.warmed_up and figures.scheduled_per_second > 0:
        ratio = figures.run_per_second / figures.scheduled_per_second
        late = max(figures.lag_median, loop_lag)
        if ratio < thresholds.min_run_ratio or late > thresholds.max_lag:
            return SelfState(
                SelfCondition.OVERLOADED,
                f"depmon cannot keep up: {figures.scheduled_per_second:.0f} probes/s scheduled, "
                f"{figures.run_per_second:.0f} run, lag {late:.2f} s (median)",
            )
    return SelfState()


def _blind_by_local_cause(counts: Mapping[str, int], reporting: int, thresholds: Thresholds) -> SelfState | None:
    if not counts:
        return None
    cause, count = max(counts.items(), key=lambda item: item[1])
    if count < thresholds.local_cause_minimum or count < thresholds.local_cause_share * reporting:
        return None
    return SelfState(
        SelfCondition.BLIND,
        f"depmon cannot see out: {count} of {reporting} dependencies failed with the same local cause ({cause})",
    )


class ScheduleMeter:
    """The probe runs of the last `window` seconds, against the rate the config schedules."""

    def __init__(self, scheduled_per_second: float, warm_up: float, window: float, clock: Callable[[], float]) -> None:
        self.scheduled_per_second = scheduled_per_second
        self._window = window
        self._clock = clock
        self._started = clock()
        self._warm_up = warm_up
        self._runs: deque[tuple[float, float]] = deque()  # (when, lag)

    @classmethod
    def for_config(cls, probes: Iterable[Timing], window: float, clock: Callable[[], float]) -> ScheduleMeter:
        """A meter for these probe timings: the scheduled rate is the sum of 1/interval."""
        intervals = [t.interval for t in probes]
        rate = sum(1.0 / i for i in intervals)
        return cls(rate, (max(intervals) if intervals else 0.0) + window, window, clock)

    def ran(self, lag: float) -> None:
        """One probe run started `lag` seconds after it was due."""
        self._runs.append((self._clock(), lag))

    def figures(self) -> ScheduleFigures:
        """The rates and lag of the last window."""
        now = self._clock()
        while self._runs and self._runs[0][0] < now - self._window:
            self._runs.popleft()
        lags = sorted(lag for _, lag in self._runs)
        p99 = lags[min(len(lags) - 1, int(0.99 * len(lags)))] if lags else 0.0
        median = lags[len(lags) // 2] if lags else 0.0
        return ScheduleFigures(
            self.scheduled_per_second,
            len(self._runs) / self._window,
            p99,
            now - self._started >= self._warm_up,
            median,
        )


class LoopLagMonitor:
    """Measures how late the event loop wakes a sleeper: the lag every other task suffers too."""

    def __init__(self, metrics: Metrics, period: float = 0.1, keep: float = 30.0) -> None:
        self._metrics = metrics
        self._period = period
        self._samples: deque[tuple[float, float]] = deque()  # (monotonic end of the sleep, lag)
        self._keep = keep

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Sleep `period` again and again, recording the oversleep; until cancelled."""
        task_status.started()
        while True:
            before = time.monotonic()
            await anyio.sleep(self._period)
            after = time.monotonic()
            self.record(after, max(0.0, after - before - self._period))

    def record(self, at: float, lag: float) -> None:
        """One measurement (the loop woke `lag` seconds late at monotonic time `at`)."""
        self._metrics.event_loop_lag.observe(lag)
        self._samples.append((at, lag))
        while self._samples and self._samples[0][0] < at - self._keep:
            self._samples.popleft()

    def median_since(self, since: float) -> float:
        """The median lag of the sleeps that ended after monotonic time `since` (0 without any)."""
        lags = sorted(lag for at, lag in self._samples if at >= since)
        return lags[len(lags) // 2] if lags else 0.0

    def worst_since(self, since: float) -> float:
        """The largest lag of the sleeps that ended after monotonic time `since`."""
        # From the newest back: a probe asks about its own run, the last few samples (this ran
        # for every result, over 30 s of samples, 2% of depmon's CPU at 500 probes/s).
        worst = 0.0
        for at, lag in reversed(self._samples):
            if at < since:
                break
            worst = max(worst, lag)
        return worst


class SelfWatch:
    """Holds depmon's view of itself for one config; `run()` re-judges every `period` seconds."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        loop_lag: LoopLagMonitor,
        thresholds: Thresholds = Thresholds(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.thresholds = thresholds
        self._metrics = metrics
        self._loop_lag = loop_lag
        self._clock = clock
        timings = [config.timing(spec) for _, spec in config.iter_probes()]
        self.meter = ScheduleMeter.for_config(timings, thresholds.window, clock)
        self._canaries: dict[str, tuple[Timing, ProbeHealth]] = {
            spec.name: (config.timing(spec), ProbeHealth()) for spec in config.monitor.canaries
        }
        self._local: dict[str, str | None] = {}  # dependency -> local cause of its latest result
        self._local_counts: dict[str, int] = {}  # local cause -> dependencies whose latest result had it
        self.state = SelfState()
        self._metrics.overloaded.set(0)
        for name in self._canaries:
            self._metrics.canary_up.labels(name).set(1)

    @property
    def canaries(self) -> list[AnyProbeSpec]:
        """The canary probes to schedule."""
        return list(self.config.monitor.canaries)

    def loop_stall_since(self, since: float) -> float:
        """The worst event-loop lag since monotonic time `since`."""
        return self._loop_lag.worst_since(since)

    @property
    def canary_failing(self) -> bool:
        """Some canary failed and has not recovered (confirmed down or not)."""
        return any(health.failing for _, health in self._canaries.values())

    def dependency_result(self, dependency: str, result: ProbeResult) -> None:
        """Remember the latest local cause (or none) of a dependency's result; O(1).

        A failure with a local cause is judged at once, not at the next second: the first
        results of an egress loss must already find depmon blind, or they would count.
        """
        cause = local_cause(result)
        old = self._local.get(dependency)
        self._local[dependency] = cause
        if old == cause:
            return
        if old is not None:
            self._local_counts[old] -= 1
        if cause is not None:
            self._local_counts[cause] = self._local_counts.get(cause, 0) + 1
            if self.state.ok and _blind_by_local_cause(self._local_counts, len(self._local), self.thresholds):
                self.judge_now()

    def canary_result(self, name: str, result: ProbeResult) -> None:
        """A canary ran: update its health through the ordinary thresholds."""
        timing, health = self._canaries[name]
        health = observe(health, result, timing, parent_failing=False)
        self._canaries[name] = (timing, health)
        self._metrics.canary_up.labels(name).set(0 if health.status is ProbeStatus.DOWN else 1)

    def judge_now(self) -> SelfState:
        """Re-judge from the meters; publish and log a change."""
        down = {
            name: health.last_failure.detail if health.last_failure else "failing"
            for name, (_, health) in self._canaries.items()
            if health.status is ProbeStatus.DOWN
        }
        figures = self.meter.figures()
        loop_lag = self._loop_lag.median_since(self._clock() - self.thresholds.window)
        state = judge(figures, loop_lag, down, self._local_counts, len(self._local), self.thresholds)
        if state.condition is not self.state.condition:
            (log.warning if not state.ok else log.info)(
                "self_state_changed", old=self.state.condition, new=state.condition, reason=state.reason
            )
            self.state = state
            self._metrics.overloaded.set(1 if state.condition is SelfCondition.OVERLOADED else 0)
        else:
            self.state = state  # the figures in the reason move on
        return state

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Judge once a second until cancelled."""
        task_status.started()
        while True:
            await anyio.sleep(1.0)
            try:
                self.judge_now()
            except Exception:  # contain it: the next second judges again
                self._metrics.loop_errors.labels("self").inc()
                log.exception("self_watch_failed")
