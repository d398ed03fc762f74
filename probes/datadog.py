"""The datadog probe: Datadog's v1 metrics query (`GET /api/v1/query?from&to&query`), SPEC 11.3.

Datadog answers `{"status": "ok", "series": [{"pointlist": [[<ms>, <value or null>], ...], ...}],
...}`; `from` is now minus `window`, and the value is the last non-null point of the first
series, its time the point's. No series or no non-null point is no data (`no_data`); an error
status, a shape that is not that, or a backend that cannot answer (403 for bad keys, 429 with
`X-RateLimit-Reset`) is inconclusive (`signal_backend`, `probes._signals`). The keys travel in
the `DD-API-KEY` and `DD-APPLICATION-KEY` headers, never in the URL.
"""

from __future__ import annotations

from typing import Any

import httpx

from monitor.config import DatadogProbeSpec
from monitor.results import Outcome, ProbeResult
from monitor.text import host_port
from probes._signals import BackendUnavailable, backend_error, fetch_json, judge, number, unavailable
from probes.context import ProbeContext


async def probe(spec: DatadogProbeSpec, ctx: ProbeContext) -> ProbeResult:
    """Ask Datadog for `spec.query` over the last `window` and judge its last point."""
    base = httpx.URL(spec.url)
    backend = f"Datadog at {host_port(base.host, base.port)}"
    url = base.copy_with(path=base.path.rstrip("/") + "/api/v1/query")
    now = ctx.clock()
    params = {"from": str(int(now - spec.window)), "to": str(int(now)), "query": spec.query}
    headers = {
        "DD-API-KEY": spec.api_key.get_secret_value(),
        "DD-APPLICATION-KEY": spec.app_key.get_secret_value(),
        "Accept": "application/json",
    }
    try:
        document = await fetch_json(ctx, backend, url, params, headers)
        value, point_at, empty = reading(backend, document)
    except BackendUnavailable as exc:
        return unavailable(spec, exc)
    return judge(spec, backend, value, point_at, empty)


def reading(backend: str, document: Any) -> tuple[float | None, float | None, str]:
    """(value, the point's time, why there is no value) from a metrics query's answer.

    Raises `BackendUnavailable` for an error status or an answer not in Datadog's shape.
    """
    if not isinstance(document, dict):
        raise _not_datadog(backend, "the answer is not a JSON object")
    if document.get("status") == "error" or document.get("error"):
        raise BackendUnavailable(Outcome.ERROR, f"{backend} answered an error{backend_error(document)}")
    series = document.get("series")
    if not isinstance(series, list):
        raise _not_datadog(backend, "no `series` list")
    if not series:
        return None, None, "no series"
    points = series[0].get("pointlist") if isinstance(series[0], dict) else None
    if not isinstance(points, list):
        raise _not_datadog(backend, "the first series has no `pointlist`")
    try:
        for point in reversed(points):
            at, raw = point
            if raw is not None:
                return number(raw), number(at) / 1000.0, ""
    except (TypeError, ValueError):
        raise _not_datadog(backend, "a point is not [milliseconds, number]") from None
    return None, None, ("the series has no non-null point" if points else "the series has no points")


def _not_datadog(backend: str, why: str) -> BackendUnavailable:
    return BackendUnavailable(Outcome.ERROR, f"{backend}: not a metrics query answer: {why}")
