"""The scheduler's hold on the garbage collector (`freeze_heap`): frozen while the loops run, released after."""

from __future__ import annotations

import gc
from pathlib import Path

import anyio
import pytest

from monitor.metrics import Metrics
from monitor.schedule.loops import Scheduler
from monitor.state.live import Engine
from probes import ProbeContext
from tests.helpers import config_from

pytestmark = [pytest.mark.unit, pytest.mark.anyio]

CONFIG = """\
monitor: {environment: test, defaults: {interval: 60s, timeout: 1s}}
dependencies:
  d: {name: D, probes: [{name: h, kind: tcp, host: 127.0.0.1, port: 9}]}
features:
  f: {name: F, requires: [d]}
"""


class TestFreezeHeap:
    @pytest.mark.parametrize("freeze", [True, False])
    async def test_frozen_only_while_the_loops_run(self, tmp_path: Path, freeze: bool) -> None:
        """With `freeze_heap`, what exists at start is out of the collector until the scheduler stops."""
        config = config_from(tmp_path, CONFIG)
        metrics = Metrics()
        ctx = ProbeContext()
        scheduler = Scheduler(config, Engine(config, metrics), ctx, metrics, freeze_heap=freeze)
        gc.unfreeze()
        try:
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    await tg.start(scheduler.run)
                    frozen_while_running = gc.get_freeze_count()
                    tg.cancel_scope.cancel()
        finally:
            await ctx.aclose()
        assert (frozen_while_running > 0) is freeze
        assert gc.get_freeze_count() == 0
