"""Probe kinds: one module per kind, each `async def probe(spec, ctx) -> ProbeResult`.

A probe reports failure as data (a `ProbeResult` with an outcome and a readable detail), never
by raising for "down". It does not own its deadline: the caller runs it inside a cancel scope
(`monitor.schedule.run_probe.run_probe`).

The kinds are listed once, by the config models (`monitor.config.PROBE_KINDS`, one spec model per
kind): the registry is built from that list, kind `x` being `probes/x.py`'s `probe`. Adding a kind
is its spec model in `monitor/config/models.py` and its module here; an unknown kind is a config
error, and a kind without a module fails the registry test (tests/unit/test_probe_registry.py).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Awaitable, Callable
from typing import Any

from monitor.config import PROBE_KINDS
from monitor.results import ProbeResult
from probes.context import ProbeContext

Prober = Callable[[Any, ProbeContext], Awaitable[ProbeResult]]


@functools.cache
def _registry() -> dict[str, Prober]:
    """Kind -> probe function, built once (it is looked up on every probe run) from the config's kinds."""
    return {kind: importlib.import_module(f"probes.{kind}").probe for kind in PROBE_KINDS}


def prober_for(kind: str) -> Prober:
    """The probe function of a kind; KeyError for a kind no module implements."""
    return _registry()[kind]


__all__ = ["ProbeContext", "ProbeResult", "Prober", "prober_for"]
