"""The prometheus probe: one instant query (`GET /api/v1/query`), its one number judged (SPEC 11.3).

An instant query answers `{"status": "success", "data": {"resultType": "vector", "result":
[{"metric": {...}, "value": [<time>, "<number>"]}]}}` (or a `scalar`, `[<time>, "<number>"]`);
the number is a string, "NaN" and "+Inf" included. The point's time is the evaluation time.
An empty vector or NaN is no data (`no_data`); anything else that is not one number, an error
status, or a backend that cannot answer is inconclusive (`signal_backend`, `probes._signals`).
"""

from __future__ import annotations

from typing import Any

import httpx

from monitor.config import PrometheusProbeSpec
from monitor.results import Outcome, ProbeResult
from monitor.text import host_port
from probes._signals import BackendUnavailable, backend_error, fetch_json, judge, number, unavailable
from probes.context import ProbeContext


async def probe(spec: PrometheusProbeSpec, ctx: ProbeContext) -> ProbeResult:
    """Ask Prometheus for `spec.query` now and judge the value against the threshold."""
    base = httpx.URL(spec.url)
    backend = f"Prometheus at {host_port(base.host, base.port)}"
    url = base.copy_with(path=base.path.rstrip("/") + "/api/v1/query")
    try:
        document = await fetch_json(ctx, backend, url, {"query": spec.query}, spec.headers)
        value, point_at, empty = reading(backend, document)
    except BackendUnavailable as exc:
        return unavailable(spec, exc)
    return judge(spec, backend, value, point_at, empty)


def reading(backend: str, document: Any) -> tuple[float | None, float | None, str]:
    """(value, the point's time, why there is no value) from an instant query's answer.

    Raises `BackendUnavailable` for an error status and for a result that is not one number.
    """
    if not isinstance(document, dict):
        raise _not_one_number(backend, "the answer is not a JSON object")
    if document.get("status") != "success":
        raise BackendUnavailable(
            Outcome.ERROR, f"{backend} answered status {document.get('status')!r}{backend_error(document)}"
        )
    data = document.get("data")
    kind = data.get("resultType") if isinstance(data, dict) else None
    result = data.get("result") if isinstance(data, dict) else None
    if kind == "vector" and isinstance(result, list):
        if not result:
            return None, None, "an empty vector"
        if len(result) > 1:
            raise _not_one_number(backend, f"the query returned {len(result)} series (aggregate it, e.g. sum(...))")
        sample = result[0].get("value") if isinstance(result[0], dict) else None
    elif kind == "scalar":
        sample = result
    else:
        raise _not_one_number(backend, f"the query returned a {kind!r}, not an instant vector or a scalar")
    try:
        at, raw = sample  # type: ignore[misc]
        return number(raw), number(at), ""
    except (TypeError, ValueError):
        raise _not_one_number(backend, "its sample is not [time, number]") from None


def _not_one_number(backend: str, why: str) -> BackendUnavailable:
    return BackendUnavailable(Outcome.ERROR, f"{backend}: not one number: {why}")
