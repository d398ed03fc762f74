"""The http probe: one request, its answer checked against the probe's `expect`.

The response is streamed. When no condition needs the body, the probe stops at the headers
and closes the response (httpcore then drops that connection rather than reuse it, which
measured cheaper at 200 concurrent probes than a large keep-alive pool). When a condition
needs the body, it is read up to `ctx.max_body_bytes` and no further, counted after
decompression too (`probes._body.read_body`).

Redirects are followed only when the spec says so (`follows_redirects`: by default, only by
probes that send no credentials), by hand and hop by hop (`probes._redirects`): a hop to
another origin carries none of the probe's headers, and https -> http or link-local targets
are refused. A redirect that is not followed is judged by its status like any other answer,
and the detail says where it pointed.

The checks are pure functions of the answer (`evaluate_answer` and the helpers below it), so
they are table-tested without I/O. Transport failures are translated by
`probes._http_errors.describe_http_error`. The deadline is not the probe's: the caller runs it
in a cancel scope (`monitor.schedule.run_probe.run_probe`), which also cuts off a body that drips.
"""

from __future__ import annotations

import codecs
import dataclasses
import email.message
import functools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from monitor.config import Expect, HttpProbeSpec, JsonCondition, format_duration
from monitor.errors import TokenUnavailable
from monitor.results import Outcome, ProbeResult
from probes._body import one_line, parse_json, read_body, streamed
from probes._http_errors import describe_http_error
from probes._redirects import (
    Hop,
    Refusal,
    next_hop,
    not_followed_detail,
    redirect_location,
    redirect_loop_detail,
    resolved_refusal,
    where,
)
from probes.context import ProbeContext, TlsOptions

__all__ = [
    "Answer",
    "evaluate_answer",
    "health_status",
    "json_condition_failures",
    "json_lookup",
    "probe",
    "status_expected",
]

_HEALTH_PASS = frozenset({"pass", "ok", "up"})
_HEALTH_WARN = frozenset({"warn"})
_SHOW_LIMIT = 60  # characters of an observed value shown in a detail


async def probe(spec: HttpProbeSpec, ctx: ProbeContext) -> ProbeResult:
    """Send the request of `spec` and check its answer; failures are results, never raised."""
    headers = dict(spec.headers)
    token: str | None = None
    if spec.bearer_from is not None:
        token_or_failure = await _bearer(spec.bearer_from, ctx)
        if isinstance(token_or_failure, ProbeResult):
            return token_or_failure
        token = token_or_failure
        headers["Authorization"] = f"Bearer {token}"

    url = _parsed(spec.url)
    started = time.perf_counter()
    try:
        answer = await _exchange(spec, ctx, url, headers, started)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        outcome, detail, security = describe_http_error(exc, url, proxy=spec.proxy, max_redirects=ctx.max_redirects)
        failure = ProbeResult.failure(outcome, detail, security_relevant=security)
        return _with_latency(failure, started, token)
    if isinstance(answer, ProbeResult):
        return _with_latency(answer, started, token)
    if token is not None and answer.status == 401 and ctx.tokens is not None and spec.bearer_from is not None:
        ctx.tokens.invalidate(spec.bearer_from)  # revoked or expired early: the next run fetches anew
    if token is not None and answer.body:
        # Before any text is cut for a detail: a token cut in two would escape `_scrub`.
        answer = dataclasses.replace(answer, body=answer.body.replace(token.encode(), b"***"))
    result = evaluate_answer(spec.expect, answer)
    return result if token is None else dataclasses.replace(result, detail=_scrub(result.detail, token))


@functools.lru_cache(maxsize=16_384)
def _parsed(url: str) -> httpx.URL:
    """A probe's URL parsed once, not at every run (parsing was ~4% of the daemon's CPU at 500 probes/s)."""
    return httpx.URL(url)


async def _exchange(
    spec: HttpProbeSpec, ctx: ProbeContext, url: httpx.URL, headers: dict[str, str], started: float
) -> Answer | ProbeResult:
    """The request and its redirects (when followed), then as much of the answer as needed.

    Each hop is checked by `probes._redirects.next_hop` before it is taken; a too-large body
    is a failure.
    """
    client = ctx.http_client(TlsOptions(spec.ca_file, spec.client_cert, spec.client_key), spec.proxy)
    follow = spec.follows_redirects
    method: str = spec.method
    target = url
    for _ in range(ctx.max_redirects + 1):  # the request itself, then each redirect
        async with streamed(client, method, target, headers=headers) as response:
            try:
                location = redirect_location(response)
            except httpx.RemoteProtocolError:
                if follow:
                    raise
                location = None  # not followed anyway: judged by its status alone
            if location is None or not follow:
                return await _answer(response, spec.expect, ctx, where(response.url, url), location, started)
        hop = next_hop(target, method, response.status_code, location, headers)
        if isinstance(hop, Hop) and spec.proxy is None and hop.url.host != target.host:
            hop = await resolved_refusal(response.status_code, hop) or hop
        if isinstance(hop, Refusal):
            return ProbeResult.failure(Outcome.HTTP_STATUS, hop.detail, security_relevant=hop.security_relevant)
        method, target, headers = hop.method, hop.url, hop.headers
    return ProbeResult.failure(Outcome.HTTP_STATUS, redirect_loop_detail(ctx.max_redirects, url.path))


async def _answer(
    response: httpx.Response,
    expect: Expect,
    ctx: ProbeContext,
    path: str,
    location: httpx.URL | None,
    started: float,
) -> Answer | ProbeResult:
    """What the conditions need of this answer: the status, and the body when a condition reads it."""
    needs_body = expect.body_contains is not None or bool(expect.json_conditions) or expect.health_json
    if not needs_body:
        return Answer(response.status_code, path, time.perf_counter() - started, location=location)  # to the headers
    status_says_more = not status_expected(response.status_code, expect.status)
    declared = _content_length(response)
    body = None
    if declared is None or declared <= ctx.max_body_bytes:
        try:
            body = await read_body(response, ctx.max_body_bytes)
        except httpx.DecodingError:
            if not status_says_more:
                raise
    if body is None:
        if status_says_more:  # than a body too large or undecodable
            return Answer(response.status_code, path, time.perf_counter() - started, location=location)
        return ProbeResult.failure(Outcome.ERROR, f"body larger than {_size(ctx.max_body_bytes)} from {path}")
    latency = time.perf_counter() - started  # to the end of the body
    return Answer(response.status_code, path, latency, body, response.headers.get("Content-Type"), location)


@dataclass(frozen=True, slots=True)
class Answer:
    """What the probe saw: status, where it came from, latency, the body if read.

    `path` is the path of the answer (after redirects), or its whole URL when a redirect left
    the probe's origin. `location` is where a redirect that was not followed points.
    """

    status: int
    path: str
    latency: float
    body: bytes | None = None
    content_type: str | None = None
    location: httpx.URL | None = None

    @property
    def charset(self) -> str | None:
        """The charset the Content-Type names, if any: parsed only when the body is read as text
        (3% of a healthy probe's CPU when every answer with a body parsed it)."""
        if not self.content_type:
            return None
        header = email.message.Message()
        header["content-type"] = self.content_type
        return header.get_content_charset(None)


def evaluate_answer(expect: Expect, answer: Answer) -> ProbeResult:
    """Check an answer against `expect`: status first, then the body conditions, then latency.

    A wrong status is `http_status` (with the health status when a health body was parsed, as
    VA health checks answer 503 with `fail`); failed body conditions are `condition`, every
    failure listed; a slow answer or an IETF `warn` is a success marked degraded.
    """
    document: Any = None
    json_problem: str | None = None
    if expect.json_conditions or expect.health_json:
        document, json_problem = parse_json(answer.body or b"")

    if not status_expected(answer.status, expect.status):
        expected = "" if expect.status is None else f"expected {' or '.join(str(s) for s in expect.status)}"
        if answer.location is not None:
            why = ", ".join(filter(None, ("follow_redirects is off", expected)))
            detail = not_followed_detail(answer.status, answer.location, why)
        else:
            detail = f"HTTP {answer.status} from {answer.path}" + (f" ({expected})" if expected else "")
        if expect.health_json and json_problem is None:
            detail += f"; {health_status(document)[1]}"
        return ProbeResult.failure(Outcome.HTTP_STATUS, detail, latency_seconds=answer.latency)

    problems: list[str] = []
    notes: list[str] = []
    if expect.body_contains is not None and expect.body_contains not in _text(answer):
        problems.append(f"[BODY] does not contain {_show(expect.body_contains)}")
    if json_problem is not None:
        problems.append(f"invalid JSON body from {answer.path} ({json_problem})")
    else:
        problems += json_condition_failures(document, expect.json_conditions)
        if expect.health_json:
            verdict, health_detail = health_status(document)
            if verdict == "fail":
                problems.append(health_detail)
            elif verdict == "warn":
                notes.append(health_detail)
    if problems:
        return ProbeResult.failure(Outcome.CONDITION, "; ".join(problems), latency_seconds=answer.latency)

    if expect.max_latency is not None and answer.latency > expect.max_latency:
        notes.append(f"slow: {_seconds(answer.latency)} > {format_duration(expect.max_latency)}")
    if notes:
        return ProbeResult.success("; ".join(notes), degraded=True, latency_seconds=answer.latency)
    return ProbeResult.success(f"HTTP {answer.status} from {answer.path}", latency_seconds=answer.latency)


def status_expected(status: int, expected: Sequence[int] | None) -> bool:
    """Whether `status` is one of `expected`, or any 2xx when no list was given."""
    return 200 <= status <= 299 if expected is None else status in expected


def json_lookup(document: Any, path: str) -> tuple[bool, Any, str]:
    """Follow a dotted path (`details.db.status`, `checks.0.status`) into a JSON document.

    Returns (found, value, reached): when not found, `reached` is the prefix of the path whose
    last key or index is missing, e.g. `details.db` for `details.db.status`. A numeric part
    indexes a list; on an object it is an ordinary key.
    """
    current = document
    parts = path.split(".")
    for depth, key in enumerate(parts, start=1):
        if isinstance(current, dict) and key in current:
            current = current[key]
        elif isinstance(current, list) and key.isascii() and key.isdigit() and int(key) < len(current):
            current = current[int(key)]
        else:
            return False, None, ".".join(parts[:depth])
    return True, current, path


def json_condition_failures(document: Any, conditions: Sequence[JsonCondition]) -> list[str]:
    """One Gatus-style line per failed condition, with the observed value.

    `[JSON] status: 'fail' != 'pass'`, `[JSON] details.db: missing`. Equality is JSON
    equality: `true` does not equal `1`, `1` equals `1.0`, and `"200"` does not equal `200`.
    """
    failures: list[str] = []
    for condition in conditions:
        found, observed, reached = json_lookup(document, condition.path)
        if not found:
            failures.append(f"[JSON] {reached}: missing")
        elif not _json_equal(observed, condition.equals):
            failures.append(f"[JSON] {condition.path}: {_show(observed)} != {_show(condition.equals)}")
    return failures


def health_status(document: Any) -> tuple[Literal["pass", "warn", "fail"], str]:
    """The verdict of an IETF health-check body (`application/health+json`) and its detail.

    `status` pass/ok/up is a pass, `warn` a warning, anything else (fail, down, unknown words,
    a missing status, a body that is not an object) a failure. The draft's `output` field,
    the server's short reason, is appended to the detail.
    """
    if not isinstance(document, dict):
        return "fail", "health body is not a JSON object"
    if "status" not in document:
        return "fail", "health status missing"
    status = document["status"]
    word = status.strip().lower() if isinstance(status, str) else None
    if word in _HEALTH_PASS:
        return "pass", f"health status {word}"
    output = document.get("output")
    suffix = f": {_clip(output)}" if isinstance(output, str) and output.strip() else ""
    if word in _HEALTH_WARN:
        return "warn", f"health status warn{suffix}"
    return "fail", f"health status {_show(status)}{suffix}"


# ---------------------------------------------------------------------------------------------
# Helpers


async def _bearer(ref: str, ctx: ProbeContext) -> str | ProbeResult:
    """The token the oauth2 probe `ref` obtained, or an `auth` failure saying why there is none.

    A token that cannot be had is the token issuer's failure, not the probed upstream's: the
    result blames the dependency that owns the oauth2 probe.
    """
    if ctx.tokens is None:
        return ProbeResult.failure(Outcome.AUTH, f"no token from {ref}: no token cache configured")
    try:
        token = await ctx.tokens.bearer(ref)
    except TokenUnavailable as exc:
        return ProbeResult.failure(Outcome.AUTH, f"no token from {ref}: {exc}", blamed_on=ref.split("/", 1)[0])
    if not token:
        return ProbeResult.failure(Outcome.AUTH, f"no token from {ref}: empty token")
    return token


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("Content-Length", "")
    return int(value) if value.isascii() and value.isdigit() else None


def _text(answer: Answer) -> str:
    encoding = answer.charset or "utf-8"
    try:
        codecs.lookup(encoding)
    except LookupError:  # a charset the server made up
        encoding = "utf-8"
    return (answer.body or b"").decode(encoding, errors="replace")


def _json_equal(observed: Any, expected: Any) -> bool:
    if isinstance(observed, bool) or isinstance(expected, bool):
        return type(observed) is type(expected) and observed == expected
    if isinstance(observed, list) and isinstance(expected, list):
        return len(observed) == len(expected) and all(map(_json_equal, observed, expected))
    if isinstance(observed, dict) and isinstance(expected, dict):
        return observed.keys() == expected.keys() and all(_json_equal(observed[k], expected[k]) for k in observed)
    if isinstance(observed, list | dict) or isinstance(expected, list | dict):
        return False
    return bool(observed == expected)


def _show(value: Any) -> str:
    """A value as a detail shows it: strings quoted, everything else as JSON, long ones cut."""
    text = repr(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return _clip(text)


def _clip(text: str) -> str:
    return one_line(text, _SHOW_LIMIT)


def _seconds(value: float) -> str:
    return f"{value:.2f}s" if value >= 1 else f"{value * 1000:.0f}ms"


def _size(count: int) -> str:
    for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if count >= size and count % size == 0:
            return f"{count // size} {unit}"
    return f"{count} bytes"


def _with_latency(result: ProbeResult, started: float, token: str | None) -> ProbeResult:
    return dataclasses.replace(
        result, detail=_scrub(result.detail, token), latency_seconds=time.perf_counter() - started
    )


def _scrub(detail: str, token: str | None) -> str:
    """Belt and braces: no detail may carry the bearer token, whatever produced the text."""
    return detail.replace(token, "***") if token else detail
