"""The prometheus and datadog probes against loopback backends: what they send, and a readable,
inconclusive result (never the dependency's failure, never a traceback) for every way a backend
can fail to answer (SPEC 11.3)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import anyio
import pytest

from monitor.config import DatadogProbeSpec, PrometheusProbeSpec
from monitor.results import Outcome, ProbeResult
from monitor.schedule.run_probe import run_probe
from monitor.sim.fake_datadog import FakeDatadog
from probes._signals import SIGNAL_BACKEND
from probes.context import ProbeContext
from tests.probes.http_loopback import RawHttpServer, probe_context, reply, reply_json
from tests.probes.test_http_probe import drip
from tests.probes.test_tcp_dns_probes import closed_port

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
QUERY = "sum(rate(api_external_http_request_total{status!='success'}[5m])) / sum(rate(x[5m]))"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the loopback servers are asyncio's


def _prometheus(url: str, **fields: Any) -> PrometheusProbeSpec:
    spec = {"name": "traffic", "kind": "prometheus", "url": url, "query": QUERY, "fail_above": 0.25}
    return PrometheusProbeSpec.model_validate(spec | fields)


async def _run(spec: PrometheusProbeSpec | DatadogProbeSpec, ctx: ProbeContext, timeout: float = 5.0) -> ProbeResult:
    with anyio.fail_after(timeout + 2):
        return await run_probe(spec, ctx, timeout)


def _vector(value: str) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1.5e9, value]}]}}


async def _against(handler: Any, timeout: float = 5.0, **fields: Any) -> tuple[ProbeResult, RawHttpServer]:
    async with RawHttpServer(handler) as server, probe_context() as ctx:
        return await _run(_prometheus(server.url("/prom/"), **fields), ctx, timeout), server


class TestPrometheusProbe:
    """One instant query per run."""

    async def test_the_query_and_headers_are_sent(self) -> None:
        """GET {url}/api/v1/query?query=..., with the configured headers."""
        result, server = await _against(reply_json(_vector("0.1")), headers={"Authorization": "Bearer t0ken"})
        (request,) = server.requests
        assert request.method == "GET"
        path, _, query = request.target.partition("?")
        assert (path, parse_qs(query)) == ("/prom/api/v1/query", {"query": [QUERY]})
        assert request.headers["authorization"] == "Bearer t0ken"
        assert (result.ok, result.signal and result.signal.value) == (True, 0.1)

    async def test_over_the_threshold_fails_with_its_evidence(self) -> None:
        """A value above fail_above is the dependency's failure, with value, query and the point's time."""
        result, _ = await _against(reply_json(_vector("0.4")))
        assert (result.ok, result.outcome, result.inconclusive) == (False, Outcome.CONDITION, None)
        assert result.signal is not None
        assert (result.signal.value, result.signal.query, result.signal.point_at) == (0.4, QUERY, 1.5e9)

    @pytest.mark.parametrize(
        ("handler", "says"),
        [
            (
                reply_json({"status": "error", "errorType": "bad_data", "error": "1:5: parse error"}, status=400),
                "answered HTTP 400: 1:5: parse error",
            ),
            (reply_json({"status": "error", "error": "query timed out"}, status=503), "answered HTTP 503"),
            (reply_json({"status": "success", "data": {"resultType": "matrix", "result": []}}), "a 'matrix'"),
            (reply_json({"status": "success", "data": {"resultType": "string", "result": [1, "s"]}}), "a 'string'"),
            (reply_json(_vector("+Inf")), "answered +inf, not a finite number"),
            (reply(200, b"x" * (3 * 1024 * 1024)), "answer is over 1024 KiB"),
            (reply(200, b"<html>"), "answer is not JSON"),
            (reply(401, b"no"), "refused depmon's credentials (HTTP 401)"),
        ],
    )
    async def test_a_backend_that_cannot_answer_is_inconclusive(self, handler: Any, says: str) -> None:
        """Error statuses, a matrix, a string, +Inf, 3 MiB, not JSON, 401: inconclusive `signal_backend`."""
        result, server = await _against(handler)
        assert (result.ok, result.inconclusive) == (False, SIGNAL_BACKEND)
        assert says in result.detail
        assert f"Prometheus at 127.0.0.1:{server.port}" in result.detail

    async def test_nan_and_an_empty_vector_are_no_data(self) -> None:
        """No data follows no_data: fail here."""
        empty = {"status": "success", "data": {"resultType": "vector", "result": []}}
        for document in (_vector("NaN"), empty):
            result, _ = await _against(reply_json(document), no_data="fail")
            assert (result.ok, result.inconclusive, result.outcome) == (False, None, Outcome.CONDITION)
            assert result.detail.startswith("no data from Prometheus")

    async def test_prometheus_down(self) -> None:
        """Connection refused: inconclusive, naming the backend."""
        async with probe_context() as ctx:
            port = closed_port()
            result = await _run(_prometheus(f"http://127.0.0.1:{port}"), ctx)
        assert (result.inconclusive, result.outcome) == (SIGNAL_BACKEND, Outcome.CONNECT)
        assert (
            result.detail
            == f"Prometheus at 127.0.0.1:{port} could not be asked: connection refused to 127.0.0.1:{port}"
        )

    async def test_a_slow_drip_past_the_deadline(self) -> None:
        """A body dripping a byte at a time is cut at the deadline: the backend's trouble, not a timeout page."""

        result, _ = await _against(drip, timeout=0.5)
        assert (result.inconclusive, result.outcome) == (SIGNAL_BACKEND, Outcome.TIMEOUT)
        assert result.detail == "the metrics backend: no complete answer within 500ms"


def _datadog(fake: FakeDatadog, **fields: Any) -> DatadogProbeSpec:
    spec = {
        "name": "traffic",
        "kind": "datadog",
        "url": fake.url,
        "api_key": fake.api_key,
        "app_key": fake.app_key,
        "query": "sum:api.external_http_request{service:caseflow,!status:success}.as_count() / "
        "sum:api.external_http_request{service:caseflow}.as_count()",
        "fail_above": 0.25,
        "window": "5m",
    }
    return DatadogProbeSpec.model_validate(spec | fields)


class TestDatadogProbe:
    """Datadog's v1 query against the simulated Datadog, which checks keys and parameters."""

    async def test_the_ratio_of_failed_calls(self) -> None:
        """40% of the simulated calls failing is over 0.25; keys in headers, from = to - window."""
        with FakeDatadog() as fake:
            fake.set_traffic("caseflow", calls_per_point=50, failure_ratio=0.4)
            async with probe_context() as ctx:
                result = await _run(_datadog(fake), ctx)
            (request,) = fake.requests
        assert fake.rejected == []
        assert (result.ok, result.signal and result.signal.value) == (False, pytest.approx(0.4))
        assert int(request.first("to") or 0) - int(request.first("from") or 0) == 300
        assert fake.api_key not in request.path + json.dumps(request.query)

    async def test_wrong_keys_are_a_403_and_inconclusive(self) -> None:
        """Datadog's 403: the keys, not the dependency."""
        with FakeDatadog() as fake:
            fake.set_traffic("caseflow", 50, 0.4)
            async with probe_context() as ctx:
                result = await _run(_datadog(fake, app_key="not-the-key"), ctx)
        assert fake.rejected == ["Forbidden"]
        assert (result.inconclusive, result.outcome) == (SIGNAL_BACKEND, Outcome.AUTH)
        assert "refused depmon's credentials (HTTP 403)" in result.detail

    async def test_a_429_is_honoured(self) -> None:
        """After a 429 with X-RateLimit-Reset, nothing is sent until the reset; then it asks again."""
        now = [1_700_000_000.0]
        with FakeDatadog() as fake:
            fake.set_traffic("caseflow", 50, 0.1)
            fake.fail_with(429, times=1)
            async with probe_context(clock=lambda: now[0]) as ctx:
                limited = await _run(_datadog(fake), ctx)
                held = await _run(_datadog(fake), ctx)
                sent_while_held = len(fake.requests)
                now[0] += 1.0
                again = await _run(_datadog(fake), ctx)
        assert "rate limited the query (HTTP 429): next try in 1 s" in limited.detail
        assert (held.inconclusive, sent_while_held) == (SIGNAL_BACKEND, 1)
        assert "rate limit in force: no query before" in held.detail
        assert again.ok

    async def test_no_series_is_no_data(self) -> None:
        """A service with no traffic answers no series: inconclusive `no_data` by default."""
        with FakeDatadog() as fake:
            async with probe_context() as ctx:
                result = await _run(_datadog(fake), ctx)
        assert (result.ok, result.inconclusive) == (False, "no_data")
        assert result.detail.endswith(": no series")
