"""Running one probe: the single owner of its deadline and the wall against its exceptions."""

from __future__ import annotations

import dataclasses
import time

import anyio
import structlog

from monitor.config import SIGNAL_KINDS, AnyProbeSpec, format_duration
from monitor.results import Outcome, ProbeResult
from probes import ProbeContext, prober_for
from probes._signals import SIGNAL_BACKEND

log = structlog.get_logger("depmon.probe")


async def run_probe(spec: AnyProbeSpec, ctx: ProbeContext, within: float) -> ProbeResult:
    """Run `spec` once within `within` seconds; always returns a result, never raises.

    The deadline is a cancel scope around the whole probe, so a server that never answers, a
    body that drips one byte a second and a slow DNS answer all end the same way: outcome
    `timeout`. Anything a probe raises becomes outcome `error` with the exception's class name
    (not its message, which could carry a URL with credentials).

    A traffic signal's deadline or crash is its metrics backend's trouble, not the dependency's:
    inconclusive with reason `signal_backend` (SPEC 11.3).
    """
    probe = prober_for(spec.kind)
    started = time.perf_counter()
    at = ctx.clock()
    try:
        with anyio.move_on_after(within) as scope:
            result = await probe(spec, ctx)
        if scope.cancelled_caught:
            result = _failed(spec, Outcome.TIMEOUT, f"no complete answer within {format_duration(within)}")
    except Exception as exc:  # a probe bug must not take its loop down
        log.warning("probe_crashed", probe=spec.name, kind=spec.kind, error=exc.__class__.__name__)
        result = _failed(spec, Outcome.ERROR, f"probe raised {exc.__class__.__name__}")
    latency = time.perf_counter() - started
    return dataclasses.replace(result, latency_seconds=result.latency_seconds or latency, at=at)


def _failed(spec: AnyProbeSpec, outcome: Outcome, detail: str) -> ProbeResult:
    """A run that did not finish: the dependency's failure, or for a signal its backend's (inconclusive)."""
    if spec.kind in SIGNAL_KINDS:
        return ProbeResult.unanswered(SIGNAL_BACKEND, outcome, f"the metrics backend: {detail}")
    return ProbeResult.failure(outcome, detail)
