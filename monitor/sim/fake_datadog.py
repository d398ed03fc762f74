"""A simulated Datadog on loopback: the v1 metrics query API over simulated vets-api traffic.

    with FakeDatadog() as datadog:
        datadog.set_traffic("caseflow", calls_per_point=50, failure_ratio=0.4)
        datadog.url, datadog.api_key, datadog.app_key          # give them to depmon's config
        datadog.fail_with(429, times=1)                        # a rate limit (X-RateLimit-Reset), or
        datadog.queries                                        # the query strings received

`GET /api/v1/query?from=&to=&query=` answers in the published shape (`status`, `res_type`,
`series[].pointlist` of `[milliseconds, value]`, `from_date`, `to_date`, ...) and checks what it
receives as Datadog does: both keys (`DD-API-KEY`, `DD-APPLICATION-KEY`; 403 `{"errors":
["Forbidden"]}` otherwise) and the parameters (`from` and `to` integer seconds, `from` before
`to`, a `query`; 400 otherwise).

The queries it understands are vets-api's count of upstream calls (`lib/breakers/statsd_plugin.rb`):
`sum:api.external_http_request{service:NAME}.as_count()`, with `,status:success`, `,!status:success`
or `,status:failed` in the scope, and one such query divided by another (`A / B`). Points are
`interval` seconds apart, aligned to it: a query within the same interval reads the same last
point, as Datadog's rollups do. A service with no traffic set, or a query it does not understand,
answers no series.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

from monitor.sim.lifecycle import Started
from monitor.sim.loopback import LoopbackServer, Request, Response, json_response

__all__ = ["FakeDatadog", "Traffic"]

_TERM = re.compile(r"^\s*sum:api\.external_http_request\{(?P<scope>[^}]*)\}\.as_count\(\)\s*$")


@dataclass(frozen=True, slots=True)
class Traffic:
    """One service's simulated calls per point and the share of them that fail."""

    calls_per_point: float
    failure_ratio: float


class FakeDatadog(Started):
    """Datadog's v1 query API on 127.0.0.1; see the module docstring."""

    def __init__(
        self,
        api_key: str = "fake-dd-api-key-0000000000000000",
        app_key: str = "fake-dd-application-key-000000000000000",
        interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api_key = api_key
        self.app_key = app_key
        self.interval = interval
        self._clock = clock
        self._server = LoopbackServer(fault_response=self._fault)
        self._server.route("GET", "/api/v1/query", self._query)
        self._lock = threading.Lock()
        self._traffic: dict[str, Traffic] = {}
        self._queries: list[str] = []
        self.rejected: list[str] = []  # why requests were refused (403, 400): what a test checks

    def start(self) -> Self:
        """Start the API's server; returns the fake."""
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop the API's server."""
        self._server.stop()

    @property
    def url(self) -> str:
        """The API's base URL (`http://127.0.0.1:PORT`): a probe's `url`."""
        return self._server.url

    def set_traffic(self, service: str, calls_per_point: float, failure_ratio: float) -> None:
        """Simulate vets-api's calls to `service` from now on: `calls_per_point`, a share of them failing."""
        with self._lock:
            self._traffic[service] = Traffic(calls_per_point, failure_ratio)

    def clear_traffic(self, service: str) -> None:
        """No calls to `service` any more: its queries answer no series."""
        with self._lock:
            self._traffic.pop(service, None)

    @property
    def queries(self) -> list[str]:
        """Every query string received and accepted, oldest first."""
        with self._lock:
            return list(self._queries)

    @property
    def requests(self) -> list[Request]:
        """Every request received, refused ones included."""
        return self._server.requests

    def fail_with(self, status: int, times: int | None = None) -> None:
        """Answer every query with `status` (429 with `X-RateLimit-Reset: 1`), `times` times or until cleared."""
        self._server.fail_with(status, times)

    def hang(self) -> None:
        """Hold every query unanswered until `clear_faults()`."""
        self._server.hang()

    def clear_faults(self) -> None:
        """Answer normally again."""
        self._server.clear_faults()

    def _fault(self, status: int) -> Response:
        headers = (("X-RateLimit-Limit", "100"), ("X-RateLimit-Period", "10"), ("X-RateLimit-Reset", "1"))
        return json_response(
            status,
            {"errors": ["Rate limit exceeded" if status == 429 else "Internal Server Error"]},
            headers=headers if status == 429 else (),
        )

    def _refuse(self, status: int, why: str) -> Response:
        with self._lock:
            self.rejected.append(why)
        return json_response(status, {"errors": [why]})

    def _query(self, request: Request) -> Response:
        if request.header("dd-api-key") != self.api_key or request.header("dd-application-key") != self.app_key:
            return self._refuse(403, "Forbidden")
        try:
            start, end = int(request.first("from") or ""), int(request.first("to") or "")
        except ValueError:
            return self._refuse(400, "from and to must be integer seconds since the Unix epoch")
        query = request.first("query")
        if not query:
            return self._refuse(400, "query is required")
        if start >= end:
            return self._refuse(400, "from must be before to")
        with self._lock:
            self._queries.append(query)
            traffic = dict(self._traffic)
        return json_response(200, self._answer(query, start, end, traffic))

    def _answer(self, query: str, start: int, end: int, traffic: dict[str, Traffic]) -> dict[str, Any]:
        """The published shape of a v1 query's answer."""
        times = [t for t in _aligned(start, min(end, self._clock()), self.interval)]
        terms = [_term_value(term, traffic) for term in query.split(" / ")]
        series: list[dict[str, Any]] = []
        if times and all(value is not None for value in terms):
            value = terms[0]
            for divisor in terms[1:]:
                value = value / divisor if divisor else None  # type: ignore[operator]
            series.append(
                {
                    "metric": "api.external_http_request",
                    "display_name": "api.external_http_request",
                    "expression": query,
                    "scope": ",".join(_scopes(query)),
                    "aggr": "sum",
                    "interval": int(self.interval) or 1,
                    "length": len(times),
                    "start": int(times[0] * 1000),
                    "end": int(times[-1] * 1000),
                    "pointlist": [[t * 1000.0, value] for t in times],
                    "tag_set": [],
                    "query_index": 0,
                    "unit": None,
                }
            )
        return {
            "status": "ok",
            "res_type": "time_series",
            "resp_version": 1,
            "query": query,
            "from_date": start * 1000,
            "to_date": end * 1000,
            "series": series,
            "group_by": [],
            "message": "",
            "values": [],
            "times": [],
        }


def _aligned(start: float, end: float, interval: float) -> list[float]:
    """The point times in [start, end], `interval` apart and aligned to it."""
    first = math.ceil(start / interval) * interval
    count = int((end - first) // interval) + 1 if end >= first else 0
    return [first + i * interval for i in range(min(count, 10_000))]


def _scopes(query: str) -> list[str]:
    return [m.group("scope") for term in query.split(" / ") if (m := _TERM.match(term))]


def _term_value(term: str, traffic: dict[str, Traffic]) -> float | None:
    """One `sum:api.external_http_request{...}.as_count()` per point, or None (no data)."""
    match = _TERM.match(term)
    if match is None:
        return None
    tags = [tag.strip() for tag in match.group("scope").split(",")]
    service = next((t.removeprefix("service:") for t in tags if t.startswith("service:")), None)
    flow = traffic.get(service or "")
    if flow is None:
        return None
    failed = flow.calls_per_point * flow.failure_ratio
    if "!status:success" in tags or "status:failed" in tags:
        return failed
    if "status:success" in tags:
        return flow.calls_per_point - failed
    return flow.calls_per_point
