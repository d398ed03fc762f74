"""The HTTP path, measured: CPU per probe and share of scheduled probes run, per client variant.

Runs the real Scheduler, Engine and http probe in one process (so the client is the only thing
that differs) on `depmon bench`'s config (N dependencies of one `health_json` probe each,
features of 5) against `depmon bench`'s loopback target (nginx when installed), and measures
a steady window after every probe has run once. Each variant runs in its own child process, one
after the other, so event loops and CPU counters start clean:

- current:         the ProbeContext as the daemon builds it (`build_probe_context`)
- keepalive:       `max_keepalive_connections` = `max_connections` (keep-alive sized to the concurrency)
- httpx-defaults:  httpx's default Limits (100 connections, 20 kept alive)
- unbounded:       no connection or keep-alive bound in httpx's pool
- aiohttp:         httpx's API over `httpx_aiohttp.AiohttpTransport` (200 connections, no cookie jar)
- uvloop:          current, on uvloop (`anyio.run(..., backend_options={"use_uvloop": True})`)
- aiohttp+uvloop:  both

The aiohttp and uvloop variants need `pip install httpx-aiohttp uvloop` (not depmon dependencies).
Not part of the test suite: `python tests/benchmarks/bench_http_path.py [--seconds 20]
[--variant NAME]`. `--pause` waits before the window so that py-spy can attach to the printed pid
(`py-spy record -p PID -d 15 -f raw -o stacks.txt`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import Any

import anyio
import httpx

from monitor.commands.bench import depmon_config, loopback_target, percentile
from monitor.config import Config
from monitor.daemon import build_probe_context
from monitor.logs import configure_logging
from monitor.metrics import Metrics
from monitor.schedule.loops import Scheduler
from monitor.state.live import Engine
from probes import ProbeContext
from probes.context import TlsOptions

VARIANTS = ("current", "keepalive", "httpx-defaults", "unbounded", "aiohttp", "uvloop", "aiohttp+uvloop")


class CountingEngine(Engine):
    """The real engine, counting results."""

    runs = 0

    def record(self, dependency: str, probe: str, result: Any) -> None:
        self.runs += 1
        super().record(dependency, probe, result)


def _client(ctx: ProbeContext, limits: httpx.Limits, transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
    """A client as `ProbeContext.http_client` builds it, with other limits or another transport."""
    return httpx.AsyncClient(
        verify=ctx.ssl_context(),
        timeout=httpx.Timeout(None),
        follow_redirects=False,
        limits=limits,
        transport=transport,
        headers={"User-Agent": ctx.user_agent, "Accept-Encoding": "identity"},
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        trust_env=False,
    )


def probe_context(config: Config, variant: str) -> ProbeContext:
    """The daemon's probe context, its default client replaced as the variant says."""
    ctx = build_probe_context(config)
    n = ctx.max_connections
    limits: httpx.Limits | None = None
    transport: httpx.AsyncBaseTransport | None = None
    if variant == "keepalive":
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n, keepalive_expiry=ctx.keepalive_expiry)
    elif variant == "httpx-defaults":
        limits = httpx.Limits()
    elif variant == "unbounded":
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    elif variant.startswith("aiohttp"):
        import aiohttp
        from httpx_aiohttp import AiohttpTransport

        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n, keepalive_expiry=ctx.keepalive_expiry)
        ssl_context = ctx.ssl_context()

        def session() -> aiohttp.ClientSession:
            connector = aiohttp.TCPConnector(limit=n, ssl=ssl_context, keepalive_timeout=ctx.keepalive_expiry)
            return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

        transport = AiohttpTransport(verify=ssl_context, limits=limits, client=session)
    if limits is not None:
        ctx._clients[(TlsOptions(), None)] = _client(ctx, limits, transport)
    return ctx


async def measure(
    url: str, targets: int, interval: float, seconds: float, variant: str, pause: float
) -> dict[str, Any]:
    """Run the scheduler for one interval plus 2 s, then measure a window of `seconds`."""
    config = Config.model_validate(depmon_config(url, targets, interval, "127.0.0.1:0", "/tmp/unused"))
    metrics = Metrics()
    engine = CountingEngine(config, metrics)
    ctx = probe_context(config, variant)
    lags: list[float] = []
    histogram = metrics.scheduler_lag
    original = histogram.observe

    def observe(value: float, exemplar: Any = None) -> None:
        lags.append(value)
        original(value)

    histogram.observe = observe  # type: ignore[method-assign,assignment]
    scheduler = Scheduler(config, engine, ctx, metrics)
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        await anyio.sleep(interval + 2 + pause)
        runs0, lags0, cpu0, t0 = engine.runs, len(lags), _cpu(), time.monotonic()
        await anyio.sleep(seconds)
        runs1, cpu1, t1 = engine.runs, _cpu(), time.monotonic()
        window = lags[lags0:]
        tg.cancel_scope.cancel()
    await ctx.aclose()
    runs, elapsed = runs1 - runs0, t1 - t0
    not_up = sum(1 for slot in engine._slots.values() if slot.health.status != "up")
    return {
        "variant": variant,
        "run_ratio": runs / (targets * elapsed / interval),
        "cpu_ms_per_probe": 1000 * (cpu1 - cpu0) / max(runs, 1),
        "cpu_share": (cpu1 - cpu0) / elapsed,
        "lag_p99_ms": 1000 * percentile(window, 0.99),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "probes_not_up": not_up,
    }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--variant", choices=VARIANTS, action="append", help="default: all, one after the other")
    parser.add_argument("--url", help="(internal) the target of one variant's child process")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds to wait before the window (py-spy)")
    args = parser.parse_args()
    configure_logging(sys.stderr, json=True, level=logging.WARNING)
    if args.url:  # one variant, in this child process
        variant = args.variant[0]
        print(f"pid {os.getpid()}: {variant}", file=sys.stderr, flush=True)
        options = {"use_uvloop": True} if variant.endswith("uvloop") else {}
        figures = anyio.run(
            measure, args.url, args.targets, args.interval, args.seconds, variant, args.pause, backend_options=options
        )
        print(json.dumps(figures))
        return
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="depmon-http-path-") as work,
        loopback_target(Path(work), lambda text: print(text, file=sys.stderr)) as (url, _),
    ):
        for variant in args.variant or VARIANTS:
            command = [sys.executable, __file__, "--url", url, "--variant", variant, "--pause", str(args.pause)]
            command += ["--seconds", str(args.seconds), "--targets", str(args.targets)]
            command += ["--interval", str(args.interval)]
            done = subprocess.run(command, capture_output=True, text=True, timeout=args.seconds + args.pause + 120)
            if done.returncode != 0:
                print(f"{variant}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"{args.targets} targets every {args.interval:g} s, {args.seconds:g} s window, one process per variant")
    print(f"{'variant':<16} {'run':>7} {'CPU/probe':>10} {'CPU':>6} {'lag p99':>9} {'RSS':>7} {'not up':>6}")
    for r in rows:
        print(
            f"{r['variant']:<16} {r['run_ratio']:>7.1%} {r['cpu_ms_per_probe']:>7.2f} ms {r['cpu_share']:>6.0%} "
            f"{r['lag_p99_ms']:>6.0f} ms {r['peak_rss_mb']:>4.0f} MB {r['probes_not_up']:>6}"
        )


if __name__ == "__main__":
    main()
