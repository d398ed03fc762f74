"""What the traffic signal kinds (prometheus, datadog; SPEC 11.3) share.

- `fetch_json`: one GET to the metrics backend through the probes' shared HTTP client, the answer
  read within the body cap, rate limits honoured (`Retry-After`, Datadog's `X-RateLimit-Reset`):
  until the backend's limit resets, no request is sent to it at all;
- `judge`: a value against the probe's threshold (strict), no data per `no_data`;
- `BackendUnavailable`: the backend could not answer (unreachable, 5xx, 401/403, 429, an error
  status, a result that is not one number, an answer over the cap). It becomes an inconclusive
  result with reason `signal_backend`, never the dependency's failure: a Prometheus outage must
  not page for every upstream whose traffic it counts.

Details name the backend's host and port and what it said, never a key or a header value.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Mapping
from typing import Any

import httpx

from monitor.config import SignalProbeSpec
from monitor.results import Outcome, ProbeResult, Signal
from monitor.text import iso_utc
from probes._body import one_line, parse_json, read_body, streamed
from probes._http_errors import describe_http_error
from probes.context import ProbeContext

__all__ = ["NO_DATA", "SIGNAL_BACKEND", "BackendUnavailable", "fetch_json", "judge", "number", "unavailable"]

SIGNAL_BACKEND = "signal_backend"  # the inconclusive reason: the backend, not the dependency
NO_DATA = "no_data"  # the inconclusive reason of `no_data: inconclusive`
DEFAULT_BACKOFF = 60.0  # a 429 that says not when to come back
MAX_BACKOFF = 3600.0  # a reset further away than this is not believed
_TEXT_LIMIT = 200  # characters of a backend's own error message in a detail


class BackendUnavailable(Exception):
    """The metrics backend could not answer the query; `detail` is the readable reason."""

    def __init__(self, outcome: Outcome, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail


def unavailable(spec: SignalProbeSpec, exc: BackendUnavailable) -> ProbeResult:
    """The inconclusive result of a backend that could not answer (the query kept as evidence)."""
    return ProbeResult.unanswered(SIGNAL_BACKEND, exc.outcome, exc.detail, signal=Signal(spec.query))


def number(raw: object) -> float:
    """A value as the backends write it (Prometheus: a string such as "0.25", "NaN", "+Inf"; Datadog: a
    JSON number); ValueError for anything else."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ValueError(raw)
    return float(raw)


def judge(spec: SignalProbeSpec, backend: str, value: float | None, point_at: float | None, empty: str) -> ProbeResult:
    """A reading judged against the probe's threshold; no data (`value` None or NaN) follows `no_data`.

    `empty` says why there is no value ("an empty vector"), for the detail. A value that is not
    finite (±Inf: a ratio over no calls) is not one number: inconclusive, like a broken answer.
    """
    if value is not None and math.isnan(value):
        value, empty = None, "the value is NaN"
    signal = Signal(spec.query, value, point_at)
    if value is None:
        detail = f"no data from {backend}: {empty}"
        if spec.no_data == "fail":
            return ProbeResult.failure(Outcome.CONDITION, f"{detail} (no_data: fail)", signal=signal)
        if spec.no_data == "pass":
            return ProbeResult.success(f"{detail} (no_data: pass)", signal=signal)
        return ProbeResult.unanswered(NO_DATA, Outcome.CONDITION, detail, signal=signal)
    if math.isinf(value):
        detail = f"{backend} answered {value:+}, not a finite number"
        return ProbeResult.unanswered(SIGNAL_BACKEND, Outcome.ERROR, detail, signal=signal)
    when = f" at {iso_utc(point_at)}" if point_at is not None else ""
    if spec.fail_above is not None:
        failed, sign, limit = value > spec.fail_above, (">", "<="), f"fail_above {spec.fail_above:g}"
    else:
        assert spec.fail_below is not None  # exactly one threshold (the config's rule)
        failed, sign, limit = value < (spec.fail_below), ("<", ">="), f"fail_below {spec.fail_below:g}"
    detail = f"[VALUE] {value:.6g} {sign[0] if failed else sign[1]} {limit}{when} ({backend})"
    if failed:
        return ProbeResult.failure(Outcome.CONDITION, detail, signal=signal)
    return ProbeResult.success(detail, signal=signal)


async def fetch_json(
    ctx: ProbeContext, backend: str, url: httpx.URL, params: Mapping[str, str], headers: Mapping[str, str]
) -> Any:
    """The backend's JSON answer to one GET; raises `BackendUnavailable` when it cannot give one.

    While a rate limit the backend announced is in force, nothing is sent (the probe says until
    when). The deadline is the caller's (`run_probe`): a slow drip is cut off there.
    """
    limit_key = f"{url.scheme}://{url.netloc.decode()}"
    now = ctx.clock()
    not_before = ctx.signal_not_before.get(limit_key, 0.0)
    if now < not_before:
        raise BackendUnavailable(
            Outcome.HTTP_STATUS, f"{backend} rate limit in force: no query before {iso_utc(not_before)}"
        )
    try:
        async with streamed(ctx.http_client(), "GET", url, params=params, headers=headers) as response:
            status = response.status_code
            if status == 429:
                wait = _rate_limit_wait(response.headers, now)
                ctx.signal_not_before[limit_key] = now + wait
                raise BackendUnavailable(
                    Outcome.HTTP_STATUS, f"{backend} rate limited the query (HTTP 429): next try in {wait:.0f} s"
                )
            if status in (401, 403):
                raise BackendUnavailable(
                    Outcome.AUTH, f"{backend} refused depmon's credentials (HTTP {status}): check the keys or headers"
                )
            body = await read_body(response, ctx.max_body_bytes)
    except httpx.HTTPError as exc:
        outcome, detail, _ = describe_http_error(exc, url)
        raise BackendUnavailable(outcome, f"{backend} could not be asked: {detail}") from None
    if body is None:
        raise BackendUnavailable(Outcome.ERROR, f"{backend}'s answer is over {ctx.max_body_bytes // 1024} KiB")
    document, why = parse_json(body)
    if not 200 <= status < 300:
        raise BackendUnavailable(Outcome.HTTP_STATUS, f"{backend} answered HTTP {status}{backend_error(document)}")
    if why is not None:
        raise BackendUnavailable(Outcome.ERROR, f"{backend}'s answer is not JSON: {why}")
    return document


def _error_text(document: Any) -> str | None:
    """The error message a backend put in its JSON answer (Prometheus `error`, Datadog `errors`/`error`)."""
    if not isinstance(document, dict):
        return None
    said = document.get("error") or document.get("errors")
    if isinstance(said, list):
        said = "; ".join(str(s) for s in said)
    return one_line(str(said), _TEXT_LIMIT) if said else None


def backend_error(document: Any) -> str:
    """`: <the backend's message>` when its answer carries one, else empty."""
    said = _error_text(document)
    return f": {said}" if said else ""


def _rate_limit_wait(headers: httpx.Headers, now: float) -> float:
    """Seconds until the backend takes queries again: `Retry-After` (seconds or a date), else
    Datadog's `X-RateLimit-Reset` (seconds until the period resets), else a minute."""
    wait: float | None = None
    retry_after = headers.get("retry-after", "").strip()
    if retry_after:
        try:
            wait = float(retry_after)
        except ValueError:
            try:
                wait = email.utils.parsedate_to_datetime(retry_after).timestamp() - now
            except (TypeError, ValueError):
                wait = None
    if wait is None:
        try:
            wait = float(headers.get("x-ratelimit-reset", ""))
        except ValueError:
            wait = None
    if wait is None or not math.isfinite(wait):
        return DEFAULT_BACKOFF
    return min(max(wait, 1.0), MAX_BACKOFF)
