"""`/metrics` rendering (`monitor.metrics.render`): prometheus_client's bytes, cut in slices on the event loop."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from monitor.metrics import Metrics, render

pytestmark = pytest.mark.anyio


def registry_with_awkward_labels() -> CollectorRegistry:
    """Every metric type depmon uses, with label values that need escaping and families of many samples."""
    registry = CollectorRegistry()
    gauge = Gauge("g", 'help with \\ and "quotes"\nand a newline', ("dependency", "state"), registry=registry)
    counter = Counter("c", "a counter", ("dependency",), registry=registry)
    histogram = Histogram("h_seconds", "a histogram", ("dependency",), buckets=(0.1, 1.0), registry=registry)
    Gauge("bytes_now", "with a unit", unit="bytes", registry=registry).set(3)
    for n, value in enumerate(['a"b', "back\\slash", "new\nline", "é", *(f"d{i}" for i in range(40))]):
        gauge.labels(value, "up").set(n)
        counter.labels(value).inc(n)
        histogram.labels(value).observe(n / 10)
    return registry


class TestRender:
    @pytest.mark.parametrize("chunk", [1, 7, 500])
    async def test_text_is_byte_for_byte_prometheus_clients(self, chunk: int) -> None:
        """However the samples are cut, the text format is exactly what prometheus_client renders."""
        registry = registry_with_awkward_labels()
        assert await render(registry, chunk=chunk, slice_seconds=0) == generate_latest(registry)

    @pytest.mark.parametrize("chunk", [1, 7, 500])
    async def test_openmetrics_is_byte_for_byte_prometheus_clients(self, chunk: int) -> None:
        """The OpenMetrics answer too, with its UNIT lines and a single `# EOF` at the end."""
        registry = registry_with_awkward_labels()
        assert await render(registry, openmetrics=True, chunk=chunk, slice_seconds=0) == generate_openmetrics(registry)

    async def test_other_tasks_run_between_slices(self) -> None:
        """A render yields to the event loop: a task that only counts its turns runs while it lasts."""
        registry = registry_with_awkward_labels()
        turns = 0

        async def count_turns() -> None:
            nonlocal turns
            while True:
                turns += 1
                await anyio.lowlevel.checkpoint()

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(count_turns)
                await anyio.lowlevel.checkpoint()
                before = turns
                await render(registry, chunk=5, slice_seconds=0)
                tg.cancel_scope.cancel()
        assert turns - before >= 10

    async def test_no_created_series(self) -> None:
        """depmon's counters and histograms render no `_created` series."""
        metrics = Metrics()
        metrics.probes.labels("d", "p", "http", "ok").inc()
        metrics.probe_duration.labels("d", "p", "http").observe(0.2)
        text = (await render(metrics.registry)).decode()
        assert "depmon_probes_total{" in text
        assert "_created" not in text
