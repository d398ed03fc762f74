"""`depmon check`: every probe once, parents first, then a table (or JSON) of the outcome."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TextIO

import anyio

from monitor.config import AnyProbeSpec, Config
from monitor.daemon import build_probe_context
from monitor.metrics import Metrics
from monitor.schedule.run_probe import run_probe
from monitor.state.graph import ancestors, levels
from monitor.state.health import DependencyState
from monitor.state.impact import impacted_features
from monitor.state.live import Engine
from probes import ProbeContext


async def run_check(config: Config, only: list[str] | None, as_json: bool, out: TextIO) -> int:
    """Probe, print, and return the exit status: 0 all up, 1 something down or degraded, 2 unknown id."""
    unknown = sorted(set(only or ()) - set(config.dependencies))
    if unknown:
        print(f"unknown dependency: {', '.join(unknown)} (known: {', '.join(config.dependencies)})", file=out)
        return 2
    engine = Engine(config, Metrics(), one_shot=True)
    wanted = set(only or config.dependencies)
    # Parents too: a token from ssoe-oauth is needed before EVSS can be probed.
    depends_on = {d: dep.depends_on for d, dep in config.dependencies.items()}
    needed = wanted | ancestors(depends_on, wanted)
    limiter = anyio.CapacityLimiter(config.monitor.max_concurrent_probes)
    ctx = build_probe_context(config)
    try:
        for level in levels(depends_on):
            async with anyio.create_task_group() as tg:
                for dep_id in (d for d in level if d in needed):
                    for spec in (p for p in config.dependencies[dep_id].probes if p.enabled):
                        tg.start_soon(_probe_once, engine, ctx, limiter, config, dep_id, spec)
    finally:
        await ctx.aclose()

    rows = []
    for dep_id in [d for d in config.dependencies if d in wanted]:
        state = engine.dependencies[dep_id]
        evidence = "; ".join(
            f"{name}: {health.last.detail}" for name, health in engine.probes_of(dep_id) if health.last is not None
        )
        rows.append(
            CheckRow(
                dependency=dep_id,
                name=config.dependencies[dep_id].name,
                state=str(state.state),
                cause=state.cause,
                evidence=evidence,
                impacted_features=impacted_features(dep_id, engine.features),
            )
        )
    if as_json:
        document = {"environment": config.monitor.environment, "dependencies": [asdict(r) for r in rows]}
        json.dump(document, out, indent=2)
        out.write("\n")
    else:
        _print_table(rows, out)
    healthy = all(row.state == DependencyState.UP for row in rows)
    return 0 if healthy else 1


@dataclass(frozen=True, slots=True)
class CheckRow:
    """One dependency's line of the report."""

    dependency: str
    name: str
    state: str
    cause: str | None
    evidence: str
    impacted_features: list[str]


async def _probe_once(
    engine: Engine,
    ctx: ProbeContext,
    limiter: anyio.CapacityLimiter,
    config: Config,
    dep_id: str,
    spec: AnyProbeSpec,
) -> None:
    async with limiter:
        result = await run_probe(spec, ctx, config.timing(spec).timeout)
    engine.record(dep_id, spec.name, result)


def _print_table(rows: list[CheckRow], out: TextIO) -> None:
    headers = ("DEPENDENCY", "STATE", "EVIDENCE", "IMPACTED FEATURES")
    table = [
        (
            r.dependency,
            r.state + (f" (cause: {r.cause})" if r.cause else ""),
            r.evidence,
            ", ".join(r.impacted_features) or "-",
        )
        for r in rows
    ]
    widths = [min(max(len(h), *(len(row[i]) for row in table)), 60) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(), file=out)
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)
