"""Scheduler benchmark: 2,000 HTTP probes at a 5 s interval against a local server.

Runs the real Scheduler, Engine and http probe in this process against a loopback HTTP server
(nginx when `--nginx` is given and installed, else a small keep-alive asyncio server in a child
process, so its CPU is not counted as ours), and prints:

- probes run vs scheduled, scheduler lag p50/p99 (from the daemon's own histogram and exact
  samples), CPU ms per probe (this process only), peak RSS.

Targets (issue 2): >= 99% of scheduled probes run, lag p99 <= 100 ms, <= 1 ms CPU per probe,
peak RSS <= 200 MB. Not part of the test suite: `make bench` or
`python tests/benchmarks/bench_scheduler.py --seconds 60`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import resource
import socket
import statistics
import sys
import time
from typing import Any

import anyio

from monitor.config import Config
from monitor.daemon import build_probe_context
from monitor.engine import Engine
from monitor.logs import configure_logging
from monitor.metrics import Metrics
from monitor.scheduler import Scheduler

RESPONSE = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 18\r\n\r\n{"status": "pass"}'


def _serve(sock: socket.socket) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                writer.write(RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, sock=sock, backlog=4096)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def build_config(url: str, probes: int, interval: float, per_dependency: int) -> Config:
    dependencies: dict[str, Any] = {}
    for d in range(probes // per_dependency):
        dependencies[f"dep{d:04d}"] = {
            "name": f"Dependency {d}",
            "probes": [
                {"name": f"p{p}", "kind": "http", "url": f"{url}/health/{d}/{p}"} for p in range(per_dependency)
            ],
        }
    return Config.model_validate(
        {
            "monitor": {
                "environment": "bench",
                "max_concurrent_probes": 200,
                "defaults": {"interval": f"{interval}s", "timeout": "2s"},
            },
            "dependencies": dependencies,
            "features": {"all": {"name": "All", "requires": list(dependencies)[:50]}},
        }
    )


class CountingEngine(Engine):
    """The real engine, counting results and when each arrived."""

    runs = 0

    def record(self, dependency: str, probe: str, result: Any) -> None:
        self.runs += 1
        super().record(dependency, probe, result)


async def bench(url: str, seconds: float, probes: int, interval: float) -> dict[str, float]:
    config = build_config(url, probes, interval, per_dependency=10)
    metrics = Metrics()
    engine = CountingEngine(config, metrics)
    ctx = build_probe_context(config)
    lags: list[float] = []
    histogram = metrics.scheduler_lag
    original = histogram.observe

    def observe(value: float, exemplar: Any = None) -> None:
        lags.append(value)
        original(value)

    histogram.observe = observe  # type: ignore[method-assign]
    scheduler = Scheduler(config, engine, ctx, metrics)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        await anyio.sleep(seconds)
        tg.cancel_scope.cancel()
    elapsed = time.monotonic() - started
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    await ctx.aclose()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    # Each probe starts at a random offset in its first interval, then every `interval`: the runs
    # due by `elapsed` are, in expectation, probes * elapsed / interval.
    scheduled = probes * elapsed / interval
    lags.sort()
    failures = sum(1 for (_, _), slot in engine._slots.items() if slot.health.status != "up")
    return {
        "probes": probes,
        "seconds": elapsed,
        "scheduled": scheduled,
        "run": engine.runs,
        "run_ratio": engine.runs / scheduled,
        "lag_p50_ms": 1000 * statistics.median(lags),
        "lag_p99_ms": 1000 * lags[int(0.99 * (len(lags) - 1))],
        "cpu_ms_per_probe": 1000 * cpu / max(engine.runs, 1),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "probes_not_up": failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--probes", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--url", help="use this server instead of starting one (e.g. nginx on 127.0.0.1:8080)")
    args = parser.parse_args()
    # The daemon logs every state change; 2,000 probes going up at start are 6,000 lines on a terminal.
    configure_logging(sys.stderr, json=True, level=logging.WARNING)

    server = None
    url = args.url
    if url is None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(4096)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        server = multiprocessing.get_context("fork").Process(target=_serve, args=(sock,), daemon=True)
        server.start()
        sock.close()
    try:
        figures = anyio.run(bench, url, args.seconds, args.probes, args.interval)
    finally:
        if server is not None:
            server.terminate()
            server.join(5)
    print(f"server:            {url}")
    print(f"probes configured: {figures['probes']} at {args.interval:g}s for {figures['seconds']:.1f}s")
    print(f"probes run:        {figures['run']} of ~{figures['scheduled']:.0f} scheduled ({figures['run_ratio']:.1%})")
    print(f"scheduler lag:     p50 {figures['lag_p50_ms']:.1f} ms, p99 {figures['lag_p99_ms']:.1f} ms")
    print(f"CPU per probe:     {figures['cpu_ms_per_probe']:.3f} ms")
    print(f"peak RSS:          {figures['peak_rss_mb']:.0f} MB")
    print(f"probes not up:     {figures['probes_not_up']}")


if __name__ == "__main__":
    main()
