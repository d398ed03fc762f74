"""Engine micro-benchmark: CPU cost per probe result at 100, 1,000 and 10,000 dependencies.

Builds synthetic configs (one HTTP probe per dependency, `depends_on` stars of 4 under a head
dependency, one feature per 5 dependencies, every 10th feature also requiring the previous
feature) and feeds `Engine.record` results directly, without probes or an event loop, with
thresholds of 1 so that every failure or success of a healthy-then-failing probe moves its
dependency's own verdict. It prints the CPU microseconds per result for:

- steady: every dependency up, results that change nothing (round robin over all probes);
- changing: one chain head alternating down/up, every result a verdict change that reaches its
  3 children and their features;
- outage: every dependency failing at once, one result each, from all up (then all recovering,
  so each round starts from the same state).

Logs are rendered (JSON, INFO) to /dev/null, so their cost is counted. The target of issue 10:
the cost per result independent of the config size (within ~2x from 100 to 10,000).

Not part of the test suite: `python tests/benchmarks/bench_engine.py`. To measure another
checkout of the engine, put it first on the path: `PYTHONPATH=/tmp/engine-baseline python ...`.

Measured on the 2-core development machine (shared, so ±20%), CPU µs per result:

    dependencies   steady        changing            outage
                   before after  before    after     before  after
             100     9.7   10.9    1,947     455       420     155
           1,000    12.0   11.5   20,168     469     4,172     163
          10,000    11.8   15.1  270,718     395    79,518     243

"before" is the whole-graph engine of 8ed3b7e, run with `--defer-start --outage-sample 400`
(its start-up alone would take an hour at 10,000). What remains per change is publishing what
changed: a log line and the metric series of each dependency and feature whose state moved.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import monitor
from monitor.config import Config
from monitor.logs import configure_logging
from monitor.metrics import Metrics
from monitor.results import Outcome, ProbeResult
from monitor.state.live import Engine

OK = ProbeResult.success("HTTP 200 from /health")
FAIL = ProbeResult.failure(Outcome.HTTP_STATUS, "HTTP 503 from /health")


def build_config(size: int) -> Config:
    """`size` dependencies with one probe each, in stars of 4 and features of 5 dependencies."""
    dependencies: dict[str, Any] = {}
    for d in range(size):
        dependencies[f"dep{d:05d}"] = {
            "name": f"Dependency {d}",
            "depends_on": [] if d % 4 == 0 else [f"dep{d - d % 4:05d}"],
            "probes": [{"name": "health", "kind": "http", "url": f"http://127.0.0.1:9/health/{d}"}],
        }
    ids = list(dependencies)
    features: dict[str, Any] = {}
    for f in range(size // 5):
        requires = ids[5 * f : 5 * f + 5]
        if f % 10 == 9:
            requires = [*requires, f"feat{f - 1:05d}"]
        features[f"feat{f:05d}"] = {"name": f"Feature {f}", "requires": requires}
    return Config.model_validate(
        {
            "monitor": {
                "environment": "bench",
                "defaults": {"interval": "30s", "timeout": "5s", "failure_threshold": 1, "success_threshold": 1},
            },
            "dependencies": dependencies,
            "features": features,
        }
    )


def _cpu_per_result(run: Callable[[], int], budget: float) -> tuple[float, int]:
    """Run `run` (which returns how many results it recorded) until `budget` CPU seconds pass."""
    results = 0
    started = time.process_time()
    while True:
        results += run()
        spent = time.process_time() - started
        if spent >= budget:
            return 1e6 * spent / results, results


def _start(engine: Engine, deps: list[str], defer: bool) -> None:
    """Every probe's first success; `defer`: one whole-graph evaluation at the end, not one per result.

    A first success moves a dependency from unknown to up: an engine that re-evaluates the whole
    graph per verdict change (the baseline) spends N evaluations of N dependencies here, about an
    hour at 10,000. `defer` reaches into that engine's private `_evaluate` to skip it.
    """
    if not defer:
        for dep in deps:
            engine.record(dep, "health", OK)
        return
    evaluate = getattr(engine, "_evaluate")  # noqa: B009 - private, and only on the baseline engine
    setattr(engine, "_evaluate", lambda *_, **__: None)  # noqa: B010
    for dep in deps:
        engine.record(dep, "health", OK)
    delattr(engine, "_evaluate")
    evaluate()


def bench(size: int, budget: float, outage_sample: int, defer_start: bool) -> dict[str, tuple[float, int]]:
    """µs per result and the number of results measured, for each scenario at one size."""
    config = build_config(size)
    engine = Engine(config, Metrics())
    deps = list(config.dependencies)
    _start(engine, deps, defer_start)
    assert engine.ready
    assert all(s.state == "up" for s in engine.dependencies.values())

    cursor = 0

    def steady() -> int:
        nonlocal cursor
        for _ in range(1000):
            engine.record(deps[cursor], "health", OK)
            cursor = (cursor + 1) % len(deps)
        return 1000

    def changing() -> int:
        for _ in range(5):
            engine.record(deps[0], "health", FAIL)
            engine.record(deps[0], "health", OK)
        return 10

    # Timed: every dependency failing, one result each (up to `outage_sample` of them, when the
    # engine measured is too slow to wait for all); untimed: the same ones recovering.
    outage = {"spent": 0.0, "results": 0}
    failing = deps[:outage_sample]

    def mass_outage() -> int:
        started = time.process_time()
        for dep in failing:
            engine.record(dep, "health", FAIL)
        outage["spent"] += time.process_time() - started
        outage["results"] += len(failing)
        assert all(engine.dependencies[d].state == "down" for d in failing)
        for dep in failing:
            engine.record(dep, "health", OK)
        return len(failing)

    figures = {"steady": _cpu_per_result(steady, budget), "changing": _cpu_per_result(changing, budget)}
    _cpu_per_result(mass_outage, budget)
    figures["outage"] = (1e6 * outage["spent"] / outage["results"], outage["results"])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,10000", help="comma-separated dependency counts")
    parser.add_argument("--budget", type=float, default=2.0, help="CPU seconds to spend per scenario and size")
    parser.add_argument(
        "--outage-sample",
        type=int,
        default=0,
        help="fail only the first N dependencies in the outage (0: all); for an engine too slow to wait for",
    )
    parser.add_argument(
        "--defer-start",
        action="store_true",
        help="start the engine with one whole-graph evaluation (the baseline engine: see `_start`)",
    )
    args = parser.parse_args()
    with open(os.devnull, "w") as devnull:
        configure_logging(devnull, json=True, level=logging.INFO)
        print(f"engine: {os.path.dirname(monitor.__file__)}")
        print(f"{'dependencies':>12}  {'steady µs':>10}  {'changing µs':>12}  {'outage µs':>10}  (results measured)")
        for size in (int(s) for s in args.sizes.split(",")):
            sample = args.outage_sample or size
            figures = bench(size, args.budget, min(sample, size), args.defer_start)
            counts = "/".join(str(figures[k][1]) for k in ("steady", "changing", "outage"))
            print(
                f"{size:>12,}  {figures['steady'][0]:>10.1f}  {figures['changing'][0]:>12.1f}"
                f"  {figures['outage'][0]:>10.1f}  ({counts})",
                flush=True,
            )


if __name__ == "__main__":
    main()
