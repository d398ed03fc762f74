"""`/metrics` rendering (`monitor.metrics.render`): prometheus_client's bytes, cut in slices on the event loop."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import anyio
import anyio.lowlevel
import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from monitor.metrics import Metrics, render, render_forked
from monitor.web.server import create_app

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


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


class TestRenderForked:
    """`render_forked`: a forked child renders; the daemon's loop only waits for it to exit."""

    async def test_text_and_openmetrics_are_byte_for_byte_prometheus_clients(self) -> None:
        registry = registry_with_awkward_labels()
        assert await render_forked(registry) == generate_latest(registry)
        assert await render_forked(registry, openmetrics=True) == generate_openmetrics(registry)

    async def test_the_loop_runs_while_the_child_renders(self) -> None:
        """A render of ~20,000 lines in the child: a task that only counts its turns keeps running meanwhile."""
        registry = CollectorRegistry()
        gauge = Gauge("g", "many series", ("dependency",), registry=registry)
        for i in range(20_000):
            gauge.labels(f"dep{i:05d}").set(i)
        turns = 0

        async def count_turns() -> None:
            nonlocal turns
            while True:
                turns += 1
                await anyio.sleep(0.001)

        async with anyio.create_task_group() as tg:
            tg.start_soon(count_turns)
            body = await render_forked(registry)
            tg.cancel_scope.cancel()
        assert body is not None
        assert body.count(b"\n") == 20_002
        assert turns >= 3, "the loop was not held by the render"

    async def test_none_when_the_child_cannot_be_forked(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The caller then renders in slices on the loop."""

        def no_fork() -> int:
            raise OSError(11, "Resource temporarily unavailable")

        monkeypatch.setattr("monitor.metrics.os.fork", no_fork)
        assert await render_forked(registry_with_awkward_labels()) is None

    async def test_a_child_that_does_not_finish_is_killed_and_reaped(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Past the deadline the child is killed, reaped (no zombie), and the answer is None."""
        import time

        monkeypatch.setattr("monitor.metrics.generate_latest", lambda registry: time.sleep(30) or b"")
        with anyio.fail_after(10):
            assert await render_forked(registry_with_awkward_labels(), deadline=0.5) is None

    async def test_a_child_stuck_on_a_lock_held_at_the_fork_leaves_the_scrape_within_a_second(self) -> None:
        """A metric's lock held by a thread at the fork: the child is killed and reaped, /metrics answers in < 1 s."""
        registry = registry_with_awkward_labels()
        gauge = Gauge("written_by_a_thread", "a gauge a thread writes to", ("dependency",), registry=registry)
        gauge.labels("d0").set(1)
        expected = generate_latest(registry)
        held, release = threading.Event(), threading.Event()

        def write_slowly() -> None:
            with gauge._lock:  # type: ignore[attr-defined]
                held.set()
                release.wait(10)

        class View:
            metrics = type("Metrics", (), {"registry": registry})()

        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(View(), time.time)), base_url="http://d"
        )
        writer = threading.Thread(target=write_slowly)
        # The thread lets go in this process soon after the fork; in the child it never does.
        letting_go = threading.Timer(0.3, release.set)
        children = _children()
        writer.start()
        try:
            held.wait(5)
            letting_go.start()
            started = time.perf_counter()
            with anyio.fail_after(15):  # past any deadline a child has: it is reaped even when this fails
                async with client:
                    response = await client.get("/metrics")
            elapsed = time.perf_counter() - started
        finally:
            release.set()
            letting_go.cancel()
            writer.join()
        assert elapsed < 1.0
        assert response.status_code == 200
        assert response.content == expected
        assert _children() == children


def _children() -> set[int]:
    """This process's child processes (zombies included), from /proc."""
    found: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        found.update(int(pid) for pid in (task / "children").read_text().split())
    return found
