"""Probe kinds: one module per kind, each `async def probe(spec, ctx) -> ProbeResult`.

A probe reports failure as data (a `ProbeResult` with an outcome and a readable detail), never
by raising for "down". It does not own its deadline: the caller runs it inside a cancel scope
(`monitor.schedule.run_probe.run_probe`).

`PROBERS` maps each kind to its function, as blackbox_exporter's `Probers` does: adding a kind is
its spec model in `monitor/config/models.py` (the config's `PROBE_KINDS`), its module here and its
entry in the map; an unknown kind is a config error, and a kind of the config without an entry
fails the registry test (tests/probes/test_probe_registry.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from monitor.results import ProbeResult
from probes import datadog, dns, http, oauth2, prometheus, tcp, tls
from probes.context import ProbeContext

Prober = Callable[[Any, ProbeContext], Awaitable[ProbeResult]]

PROBERS: Mapping[str, Prober] = {
    "http": http.probe,
    "oauth2": oauth2.probe,
    "tls": tls.probe,
    "tcp": tcp.probe,
    "dns": dns.probe,
    "prometheus": prometheus.probe,
    "datadog": datadog.probe,
}
"""Kind -> its probe function, each `async def probe(spec, ctx) -> ProbeResult`."""


def prober_for(kind: str) -> Prober:
    """The probe function of a kind; KeyError for a kind no module implements."""
    return PROBERS[kind]


__all__ = ["PROBERS", "ProbeContext", "ProbeResult", "Prober", "prober_for"]
