"""Probe kinds: one module per kind, each `async def probe(spec, ctx) -> ProbeResult`.

A probe reports failure as data (a `ProbeResult` with an outcome and a readable detail), never
by raising for "down". It does not own its deadline: the caller runs it inside a cancel scope
(`monitor.probing.run_probe`). Adding a kind is adding a module and an entry in `PROBERS`; the
config models in `monitor.config` name the same kinds, so an unknown kind is a config error.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from monitor.results import ProbeResult
from probes.context import ProbeContext

Prober = Callable[[Any, ProbeContext], Awaitable[ProbeResult]]


@functools.cache
def _registry() -> dict[str, Prober]:
    """Kind -> probe function, built once (it is looked up on every probe run)."""
    from probes import dns, http, oauth2, tcp, tls

    return {"http": http.probe, "oauth2": oauth2.probe, "tls": tls.probe, "tcp": tcp.probe, "dns": dns.probe}


def prober_for(kind: str) -> Prober:
    """The probe function of a kind; KeyError for a kind no module implements."""
    return _registry()[kind]


__all__ = ["ProbeContext", "ProbeResult", "Prober", "prober_for"]
