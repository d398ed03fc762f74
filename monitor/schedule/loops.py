"""One loop per probe: fixed-rate, a random start offset, bounded concurrency.

Each loop keeps its own schedule (`next_at += delay`, not `sleep(delay)` after the run, so run
time does not push the schedule back), starts at a random offset inside its first interval so
2,000 probes do not fire in the same millisecond, and contains its own failures: an exception
escaping a loop would cancel every sibling in the task group. After a first failure the engine
asks for `confirm_interval` instead of the full interval, so an outage is confirmed in seconds.

The deadline of a run belongs to `run_probe`; the slot from the concurrency limiter is taken
before the deadline starts, so waiting for a slot shows as scheduler lag, not as a timeout.

With a `SelfWatch`, every run is also reported to it (lag, local causes), the canaries run as
loops of their own, and a failed result that measured depmon rather than the upstream (see
`monitor.state.self_watch.inconclusive`) is counted in `depmon_probes_inconclusive_total` and not given
to the engine: it counts toward no threshold.

When a dependency's probe fails for the first time, the critical probes of its ancestors are
run at once instead of at their next tick: a parent and a child failing together are then told
apart in milliseconds, and the child's page waits for the parent's verdict (see
`incidents.awaiting_ancestor`).

With `freeze_heap` (the daemon), what exists when the probes start (the config, the engine,
their caches: most of the heap) is moved out of the cyclic garbage collector's generations
for as long as the loops run (`gc.freeze`). Each full collection used to walk all of it: at
1,000 probes 140-200 ms of CPU every ~3 s with the event loop stopped, more scheduler lag
than everything else together.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable

import anyio
import structlog

from monitor.config import AnyProbeSpec, Config
from monitor.metrics import Metrics
from monitor.results import ProbeResult
from monitor.schedule.run_probe import run_probe
from monitor.state.live import Engine
from monitor.state.self_watch import SelfWatch, inconclusive
from probes import ProbeContext

log = structlog.get_logger("depmon.scheduler")


class Scheduler:
    """Runs every probe of a config forever, feeding results to the engine."""

    def __init__(
        self,
        config: Config,
        engine: Engine,
        ctx: ProbeContext,
        metrics: Metrics,
        rng: random.Random | None = None,
        clock: Callable[[], float] = anyio.current_time,
        watch: SelfWatch | None = None,
        freeze_heap: bool = False,
    ) -> None:
        self.config = config
        self.freeze_heap = freeze_heap
        self.watch = watch
        self.engine = engine
        self.ctx = ctx
        self.metrics = metrics
        self.rng = rng or random.Random()
        self.clock = clock
        # A semaphore that takes a free slot without a trip round the event loop: each run has just
        # slept, and anyio's CapacityLimiter cost 15 us a run against 3 us (1% of a probe's CPU).
        self.limiter = anyio.Semaphore(config.monitor.max_concurrent_probes, fast_acquire=True)
        self._ancestors = config.ancestors()
        self._critical: dict[str, list[str]] = {}
        for dep_id, spec in config.iter_probes():
            if spec.critical:
                self._critical.setdefault(dep_id, []).append(spec.name)
        self._expedite: dict[tuple[str, str], anyio.Event] = {}
        self._lag = metrics.scheduler_lag
        self._loop_errors = metrics.loop_errors.labels("probe")

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start one loop per probe and run until cancelled."""
        if self.freeze_heap:
            freeze_long_lived()
        try:
            async with anyio.create_task_group() as tg:
                for dep_id, spec in self.config.iter_probes():
                    tg.start_soon(self._loop, dep_id, spec, name=f"probe {dep_id}/{spec.name}")
                if self.watch is not None:
                    for canary in self.watch.canaries:
                        tg.start_soon(self._canary_loop, self.watch, canary, name=f"canary {canary.name}")
                task_status.started()
        finally:
            if self.freeze_heap:
                gc.unfreeze()  # what a reload leaves behind must be collectable again

    async def _loop(self, dependency: str, spec: AnyProbeSpec) -> None:
        timing = self.config.timing(spec)
        next_at = self.clock() + self.rng.uniform(0, timing.interval)
        while True:
            if await self._sleep_until(dependency, spec.name, next_at):
                next_at = self.clock()  # expedited: a child failed, this ancestor's verdict is wanted now
            try:
                async with self.limiter:
                    late = max(0.0, self.clock() - next_at)
                    self._lag.observe(late)
                    started = time.monotonic()
                    result = await run_probe(spec, self.ctx, timing.timeout)
                self._take(dependency, spec.name, result, timing.timeout, late, started)
                delay = self.engine.next_delay(dependency, spec.name)
            except Exception:  # contain it: one broken probe must not stop the others
                self._loop_errors.inc()
                log.exception("probe_loop_error", dependency=dependency, probe=spec.name)
                delay = timing.interval
            next_at += delay
            now = self.clock()
            if next_at < now - timing.interval:
                # Far behind (the machine was suspended or overloaded): skip the missed runs; the
                # next is one delay after the late one just made, not at once (no back-to-back run).
                next_at = now + delay

    async def _sleep_until(self, dependency: str, probe: str, deadline: float) -> bool:
        """Sleep until `deadline`, or until the probe is expedited (then True)."""
        key = (dependency, probe)
        event = self._expedite.get(key)
        if event is None:
            event = self._expedite[key] = anyio.Event()
        with anyio.move_on_after(max(0.0, deadline - self.clock())):
            await event.wait()
        if event.is_set():
            self._expedite[key] = anyio.Event()
            return True
        return False

    def expedite_ancestors(self, dependency: str) -> None:
        """Run the critical probes of `dependency`'s ancestors now."""
        for ancestor in self._ancestors.get(dependency, ()):
            for probe in self._critical.get(ancestor, ()):
                event = self._expedite.get((ancestor, probe))
                if event is not None:
                    event.set()

    def _take(
        self, dependency: str, probe: str, result: ProbeResult, timeout: float, late: float, started: float
    ) -> None:
        """Hand a result to the engine, unless it measured depmon (or a signal's backend) rather than the upstream.

        A result that says so itself (`result.inconclusive`: a metrics backend that could not
        answer, no data) is shown by the engine but counted nowhere, and is no evidence of
        depmon's own egress either: one backend down is not depmon blind.
        """
        watch = self.watch
        reason = result.inconclusive
        if watch is not None:
            watch.meter.ran(late)
            if reason is None:
                watch.dependency_result(dependency, result)
                reason = inconclusive(
                    result,
                    timeout,
                    late,
                    watch.loop_stall_since(started),
                    watch.state,
                    watch.canary_failing,
                    watch.thresholds,
                )
        if reason is not None:
            self.metrics.probes_inconclusive.labels(dependency, probe, reason).inc()
            log.info("probe_inconclusive", dependency=dependency, probe=probe, reason=reason, detail=result.detail)
            if result.inconclusive is not None:
                self.engine.record_unanswered(dependency, probe, result)
            return
        self.engine.record(dependency, probe, result)
        if (
            not result.ok
            and self._ancestors.get(dependency)
            and self.engine.probe_health(dependency, probe).failures == 1
        ):
            self.expedite_ancestors(dependency)

    async def _canary_loop(self, watch: SelfWatch, spec: AnyProbeSpec) -> None:
        """A canary: like a probe loop, but its results go to the self watch."""
        timing = self.config.timing(spec)
        next_at = self.clock() + self.rng.uniform(0, min(timing.interval, 1.0))
        while True:
            await anyio.sleep_until(next_at)
            try:
                result = await run_probe(spec, self.ctx, timing.timeout)
                watch.canary_result(spec.name, result)
                delay = timing.interval if result.ok else timing.confirm_interval
            except Exception:
                self._loop_errors.inc()
                log.exception("canary_loop_error", canary=spec.name)
                delay = timing.interval
            next_at = max(next_at + delay, self.clock() - timing.interval)


def freeze_long_lived() -> None:
    """Collect the garbage, then exempt every surviving object from the collector (`gc.freeze`).

    Frozen objects are still freed when their reference count drops; only a reference cycle
    among them would outlive its use, hence `gc.unfreeze` when the loops stop (a reload builds
    a new config and freezes again).
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
