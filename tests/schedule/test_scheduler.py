"""The scheduler's loop itself: fixed rate, skipped ticks, confirm interval, ancestors expedited.

The probes are answered in-process (`run_probe` replaced by a script) on short real intervals;
the clock the scheduler reads is the event loop's plus an offset the test can jump. Every
absence (no burst, no full-interval wait) is proved against a later run that did happen.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import anyio
import pytest

from monitor.config import AnyProbeSpec, Config
from monitor.metrics import Metrics
from monitor.results import Outcome, ProbeResult
from monitor.schedule import loops as scheduler_module
from monitor.schedule.loops import Scheduler
from monitor.state.live import Engine
from probes import ProbeContext

pytestmark = pytest.mark.unit

OK = ProbeResult.success("HTTP 200 from /health")
FAIL = ProbeResult.failure(Outcome.HTTP_STATUS, "HTTP 503 from /health")
WAIT = 10.0  # the longest a run may take to come on a loaded 2-core machine


def config(dependencies: dict[str, dict[str, Any]]) -> Config:
    """A config of one `health` probe per dependency: `{id: {timing..., depends_on: [...]}}`."""
    deps = {}
    for dep_id, settings in dependencies.items():
        timing = {k: v for k, v in settings.items() if k != "depends_on"}
        deps[dep_id] = {
            "name": dep_id,
            "depends_on": settings.get("depends_on", []),
            "probes": [{"name": "health", "kind": "http", "url": "http://127.0.0.1:9/", "timeout": 0.05, **timing}],
        }
    return Config.model_validate({"monitor": {"environment": "test"}, "dependencies": deps})


class NoJitter:
    """The `random.Random` the scheduler is given: every loop starts at once."""

    def uniform(self, low: float, high: float) -> float:
        return low


class Clock:
    """The event loop's clock, plus an offset the test jumps (a suspended or overloaded machine)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return anyio.current_time() + self.offset


@dataclass
class Probes:
    """The scripted upstreams: what each dependency answers, and when each run started."""

    answers: dict[str, Callable[[int], ProbeResult]] = field(default_factory=dict)
    run_seconds: float = 0.0
    starts: dict[str, list[float]] = field(default_factory=dict)
    _arrived: anyio.Event | None = None

    async def run_probe(self, spec: AnyProbeSpec, ctx: ProbeContext, within: float) -> ProbeResult:
        dep_id = str(spec.url).split("#", 1)[1]  # type: ignore[union-attr]
        runs = self.starts.setdefault(dep_id, [])
        runs.append(anyio.current_time())
        if self._arrived is not None:
            self._arrived.set()
        if self.run_seconds:
            await anyio.sleep(self.run_seconds)
        return self.answers.get(dep_id, lambda _: OK)(len(runs))

    async def until(self, dep_id: str, runs: int) -> list[float]:
        """The start times of `dep_id`'s runs once it has started `runs` of them."""
        with anyio.fail_after(WAIT):
            while len(self.starts.get(dep_id, ())) < runs:
                self._arrived = anyio.Event()
                await self._arrived.wait()
        return self.starts[dep_id][:runs]


@asynccontextmanager
async def running(monkeypatch: pytest.MonkeyPatch, cfg: Config, probes: Probes, clock: Clock) -> AsyncIterator[None]:
    """The scheduler over `cfg`, its probes answered by `probes`, until the block ends."""
    # Each dependency's URL carries its id as a fragment: the script answers by dependency.
    cfg = cfg.model_copy(
        update={
            "dependencies": {
                d: dep.model_copy(update={"probes": [p.model_copy(update={"url": f"{p.url}#{d}"}) for p in dep.probes]})
                for d, dep in cfg.dependencies.items()
            }
        }
    )
    monkeypatch.setattr(scheduler_module, "run_probe", probes.run_probe)
    metrics = Metrics()
    engine = Engine(cfg, metrics)
    loop = Scheduler(cfg, engine, cast(ProbeContext, None), metrics, rng=NoJitter(), clock=clock)  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        await tg.start(loop.run)
        yield
        tg.cancel_scope.cancel()


@pytest.mark.anyio
class TestScheduler:
    """One loop per probe, on its own fixed-rate schedule."""

    async def test_a_runs_time_does_not_push_the_schedule_back(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A probe taking half its interval still starts once an interval, not once an interval and a half."""
        probes = Probes(run_seconds=0.1)
        async with running(monkeypatch, config({"evss": {"interval": 0.2}}), probes, Clock()):
            starts = await probes.until("evss", 6)
        # Sleeping an interval after each run would take 5 x 0.3 s; fixed rate takes 5 x 0.2 s.
        assert starts[-1] - starts[0] < 1.25

    async def test_far_behind_it_skips_the_missed_runs_instead_of_bursting(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """After the clock jumps ten intervals ahead, the schedule restarts from now: no run for each one missed."""
        probes, clock = Probes(), Clock()
        async with running(monkeypatch, config({"evss": {"interval": 0.3}}), probes, clock):
            before = len(await probes.until("evss", 2))
            clock.offset += 3.0  # ten intervals missed
            # Wait for the first interval-long gap after the jump: the schedule has settled again.
            runs = before + 2
            while True:
                starts = (await probes.until("evss", runs))[before:]
                if starts[-1] - starts[-2] >= 0.2:
                    break
                runs += 1
        # The late run, then the rate: a burst to catch up would have put ten runs back to back
        # before that gap (and the schedule restarts one interval after the late run, not at once).
        assert len(starts) - 1 <= 1

    async def test_after_a_failure_it_confirms_at_the_confirm_interval(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A first failure brings the next run after confirm_interval; back up, the full interval again."""
        probes = Probes(answers={"evss": lambda run: FAIL if run == 2 else OK})
        timing = {"interval": 1.0, "confirm_interval": 0.05, "failure_threshold": 3}
        async with running(monkeypatch, config({"evss": timing}), probes, Clock()):
            starts = await probes.until("evss", 4)
        gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
        assert gaps[1] < 0.5  # after the failure: confirming, not the 1 s interval
        assert gaps[0] >= 0.9  # before it
        assert gaps[2] >= 0.9  # and once the success cleared it

    async def test_a_failing_child_runs_its_ancestors_critical_probes_at_once(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """EVSS failing runs SSOe OAuth's probe at once, not at its next tick a minute away."""
        probes = Probes(answers={"evss": lambda _: FAIL})
        cfg = config({"ssoe-oauth": {"interval": 60.0}, "evss": {"interval": 60.0, "depends_on": ["ssoe-oauth"]}})
        async with running(monkeypatch, cfg, probes, Clock()):
            starts = await probes.until("ssoe-oauth", 2)
        assert starts[1] - starts[0] < 5.0

    async def test_a_failing_root_expedites_nothing(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """SSOe OAuth failing (no ancestors) leaves EVSS on its own schedule: EVSS's second run is its tick."""
        probes = Probes(answers={"ssoe-oauth": lambda _: FAIL})
        timing = {"interval": 0.5, "confirm_interval": 0.05}
        cfg = config({"ssoe-oauth": timing, "evss": {"interval": 0.5, "depends_on": ["ssoe-oauth"]}})
        async with running(monkeypatch, cfg, probes, Clock()):
            evss = await probes.until("evss", 2)
            ssoe = probes.starts["ssoe-oauth"]
        assert len(ssoe) >= 2  # SSOe confirming meanwhile, at its confirm interval
        assert evss[1] - evss[0] >= 0.4
