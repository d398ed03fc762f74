"""One loop per probe: fixed-rate, a random start offset, bounded concurrency.

Each loop keeps its own schedule (`next_at += delay`, not `sleep(delay)` after the run, so run
time does not push the schedule back), starts at a random offset inside its first interval so
2,000 probes do not fire in the same millisecond, and contains its own failures: an exception
escaping a loop would cancel every sibling in the task group. After a first failure the engine
asks for `confirm_interval` instead of the full interval, so an outage is confirmed in seconds.

The deadline of a run belongs to `run_probe`; the slot from the concurrency limiter is taken
before the deadline starts, so waiting for a slot shows as scheduler lag, not as a timeout.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import anyio
import structlog

from monitor.config import AnyProbeSpec, Config
from monitor.engine import Engine
from monitor.metrics import Metrics
from monitor.probing import run_probe
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
    ) -> None:
        self.config = config
        self.engine = engine
        self.ctx = ctx
        self.metrics = metrics
        self.rng = rng or random.Random()
        self.clock = clock
        self.limiter = anyio.CapacityLimiter(config.monitor.max_concurrent_probes)
        self._lag = metrics.scheduler_lag
        self._loop_errors = metrics.loop_errors.labels("probe")

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start one loop per probe and run until cancelled."""
        async with anyio.create_task_group() as tg:
            for dep_id, spec in self.config.iter_probes():
                tg.start_soon(self._loop, dep_id, spec, name=f"probe {dep_id}/{spec.name}")
            task_status.started()

    async def _loop(self, dependency: str, spec: AnyProbeSpec) -> None:
        timing = self.config.timing(spec)
        next_at = self.clock() + self.rng.uniform(0, timing.interval)
        while True:
            await anyio.sleep_until(next_at)
            try:
                async with self.limiter:
                    started = self.clock()
                    self._lag.observe(max(0.0, started - next_at))
                    result = await run_probe(spec, self.ctx, timing.timeout)
                self.engine.record(dependency, spec.name, result)
                delay = self.engine.next_delay(dependency, spec.name)
            except Exception:  # contain it: one broken probe must not stop the others
                self._loop_errors.inc()
                log.exception("probe_loop_error", dependency=dependency, probe=spec.name)
                delay = timing.interval
            next_at += delay
            now = self.clock()
            if next_at < now - timing.interval:
                # Far behind (the machine was suspended or overloaded): skip missed runs, do not burst.
                next_at = now
