"""The pure parts of the http probe: condition checks on an answer and the httpx error translation."""

from __future__ import annotations

import errno
import socket
import ssl
from typing import Any, TypeVar

import anyio
import httpx
import pytest

from monitor.config import Expect, JsonCondition
from monitor.results import Outcome
from probes._http_errors import describe_http_error
from probes.http import Answer, evaluate_answer, health_status, json_condition_failures, json_lookup, status_expected

pytestmark = pytest.mark.unit

DOCUMENT = {
    "status": "pass",
    "details": {"db": {"status": "up", "latency": 12}, "cache": None},
    "checks": [{"name": "db", "status": "pass"}, {"name": "queue", "status": "warn"}],
    "flags": {"0": "zero"},
    "enabled": True,
    "count": 1,
}


class TestStatusExpected:
    @pytest.mark.parametrize(
        ("status", "expected", "ok"),
        [
            (200, None, True),
            (204, None, True),
            (299, None, True),
            (301, None, False),
            (503, None, False),
            (200, [200], True),
            (204, [200], False),
            (503, [200, 503], True),
        ],
    )
    def test_status_against_list_or_any_2xx(self, status: int, expected: list[int] | None, ok: bool) -> None:
        """A status passes when it is in the list, or is any 2xx when no list was given."""
        assert status_expected(status, expected) is ok


class TestJsonLookup:
    @pytest.mark.parametrize(
        ("path", "found", "value", "reached"),
        [
            ("status", True, "pass", "status"),
            ("details.db.status", True, "up", "details.db.status"),
            ("details.db", True, {"status": "up", "latency": 12}, "details.db"),
            ("details.cache", True, None, "details.cache"),
            ("checks.1.status", True, "warn", "checks.1.status"),
            ("flags.0", True, "zero", "flags.0"),
            ("details.mq.status", False, None, "details.mq"),
            ("checks.2.status", False, None, "checks.2"),
            ("checks.first", False, None, "checks.first"),
            ("checks.-1", False, None, "checks.-1"),
            ("status.code", False, None, "status.code"),
            ("details.cache.status", False, None, "details.cache.status"),
        ],
    )
    def test_dotted_paths(self, path: str, found: bool, value: Any, reached: str) -> None:
        """Dotted paths walk objects by key and lists by index, and report where they stopped."""
        assert json_lookup(DOCUMENT, path) == (found, value, reached)

    def test_document_that_is_a_list(self) -> None:
        """A top-level list is indexed like any other."""
        assert json_lookup([{"status": "ok"}], "0.status") == (True, "ok", "0.status")


class TestJsonConditionFailures:
    @pytest.mark.parametrize(
        ("path", "equals", "failure"),
        [
            ("status", "pass", None),
            ("details.db.latency", 12, None),
            ("details.db.latency", 12.0, None),
            ("enabled", True, None),
            ("details.cache", None, None),
            ("status", "fail", "[JSON] status: 'pass' != 'fail'"),
            ("details.db.latency", "12", "[JSON] details.db.latency: 12 != '12'"),
            ("count", True, "[JSON] count: 1 != true"),
            ("enabled", 1, "[JSON] enabled: true != 1"),
            ("details.cache", "up", "[JSON] details.cache: null != 'up'"),
            ("details.db.status.code", "up", "[JSON] details.db.status.code: missing"),
            ("details.mq.status", "up", "[JSON] details.mq: missing"),
            ("checks", [], """[JSON] checks: [{"name": "db", "status": "pass"}, {"name": "queue", "statu… != []"""),
        ],
    )
    def test_one_condition(self, path: str, equals: Any, failure: str | None) -> None:
        """A condition holds under JSON equality, else its line shows the observed value or `missing`."""
        failures = json_condition_failures(DOCUMENT, [JsonCondition(path=path, equals=equals)])
        assert failures == ([] if failure is None else [failure])

    def test_every_failed_condition_is_listed(self) -> None:
        """Each failed condition gets its own line, in config order."""
        conditions = [
            JsonCondition(path="status", equals="fail"),
            JsonCondition(path="details.db.status", equals="up"),
            JsonCondition(path="uptime", equals=1),
        ]
        assert json_condition_failures(DOCUMENT, conditions) == [
            "[JSON] status: 'pass' != 'fail'",
            "[JSON] uptime: missing",
        ]


class TestHealthStatus:
    @pytest.mark.parametrize(
        ("document", "verdict", "detail"),
        [
            ({"status": "pass"}, "pass", "health status pass"),
            ({"status": "ok"}, "pass", "health status ok"),
            ({"status": "UP"}, "pass", "health status up"),
            ({"status": "warn"}, "warn", "health status warn"),
            ({"status": "warn", "output": "disk 91% full"}, "warn", "health status warn: disk 91% full"),
            ({"status": "fail"}, "fail", "health status 'fail'"),
            ({"status": "down", "output": "db\nunreachable"}, "fail", "health status 'down': db unreachable"),
            ({"status": "degraded"}, "fail", "health status 'degraded'"),
            ({"status": 1}, "fail", "health status 1"),
            ({"status": None}, "fail", "health status null"),
            ({"version": "1"}, "fail", "health status missing"),
            (["pass"], "fail", "health body is not a JSON object"),
        ],
    )
    def test_ietf_health_body(self, document: Any, verdict: str, detail: str) -> None:
        """pass/ok/up pass, warn warns, anything else (or no status) fails, with the server's output."""
        assert health_status(document) == (verdict, detail)


def answer(status: int = 200, body: bytes | None = None, latency: float = 0.1, charset: str | None = None) -> Answer:
    return Answer(status, "/health", latency, body, None if charset is None else f"text/plain; charset={charset}")


class TestEvaluateAnswer:
    @pytest.mark.parametrize(
        ("expect", "seen", "outcome", "degraded", "detail"),
        [
            ({}, answer(200), Outcome.OK, False, "HTTP 200 from /health"),
            ({}, answer(503), Outcome.HTTP_STATUS, False, "HTTP 503 from /health"),
            (
                {"status": [200, 204]},
                answer(202),
                Outcome.HTTP_STATUS,
                False,
                "HTTP 202 from /health (expected 200 or 204)",
            ),
            ({"max_latency": "2s"}, answer(latency=2.31), Outcome.OK, True, "slow: 2.31s > 2s"),
            ({"max_latency": "2s"}, answer(latency=1.99), Outcome.OK, False, "HTTP 200 from /health"),
            ({"max_latency": "200ms"}, answer(latency=0.3124), Outcome.OK, True, "slow: 312ms > 200ms"),
            ({"max_latency": "1s"}, answer(503, latency=5), Outcome.HTTP_STATUS, False, "HTTP 503 from /health"),
            ({"body_contains": "ok"}, answer(body=b"all ok"), Outcome.OK, False, "HTTP 200 from /health"),
            ({"body_contains": "xyz"}, answer(body=b"abc"), Outcome.CONDITION, False, "[BODY] does not contain 'xyz'"),
            (
                {"body_contains": "é"},
                answer(body="é".encode("latin-1"), charset="latin-1"),
                Outcome.OK,
                False,
                "HTTP 200 from /health",
            ),
            (
                {"body_contains": "ok"},
                answer(body=b"ok", charset="made-up"),
                Outcome.OK,
                False,
                "HTTP 200 from /health",
            ),
            (
                {"json": [{"path": "status", "equals": "pass"}]},
                answer(body=b'{"status": "fail"}'),
                Outcome.CONDITION,
                False,
                "[JSON] status: 'fail' != 'pass'",
            ),
            (
                {"json": [{"path": "status", "equals": "pass"}]},
                answer(body=b"<html>oops</html>"),
                Outcome.CONDITION,
                False,
                "invalid JSON body from /health (Expecting value at line 1 column 1)",
            ),
            (
                {"json": [{"path": "status", "equals": "pass"}]},
                answer(body=b""),
                Outcome.CONDITION,
                False,
                "invalid JSON body from /health (Expecting value at line 1 column 1)",
            ),
            (
                {"health_json": True},
                answer(body=b"[" * 100_000),
                Outcome.CONDITION,
                False,
                "invalid JSON body from /health (nested too deeply)",
            ),
            ({"health_json": True}, answer(body=b'{"status": "pass"}'), Outcome.OK, False, "HTTP 200 from /health"),
            ({"health_json": True}, answer(body=b'{"status": "warn"}'), Outcome.OK, True, "health status warn"),
            (
                {"health_json": True, "max_latency": "1s"},
                answer(body=b'{"status": "warn"}', latency=1.5),
                Outcome.OK,
                True,
                "health status warn; slow: 1.50s > 1s",
            ),
            (
                {"health_json": True},
                answer(body=b'{"status": "fail"}'),
                Outcome.CONDITION,
                False,
                "health status 'fail'",
            ),
            ({"health_json": True}, answer(body=b"{}"), Outcome.CONDITION, False, "health status missing"),
            (
                {"health_json": True},
                answer(503, body=b'{"status": "fail"}'),
                Outcome.HTTP_STATUS,
                False,
                "HTTP 503 from /health; health status 'fail'",
            ),
            (
                {"health_json": True},
                answer(503, body=b"Service Unavailable"),
                Outcome.HTTP_STATUS,
                False,
                "HTTP 503 from /health",
            ),
            (
                {"body_contains": "up", "json": [{"path": "db", "equals": "up"}], "health_json": True},
                answer(body=b'{"status": "fail", "db": "down"}'),
                Outcome.CONDITION,
                False,
                "[BODY] does not contain 'up'; [JSON] db: 'down' != 'up'; health status 'fail'",
            ),
        ],
    )
    def test_answer_against_expect(
        self, expect: dict[str, Any], seen: Answer, outcome: Outcome, degraded: bool, detail: str
    ) -> None:
        """Status first, then every body condition, then latency decide the outcome and its detail."""
        result = evaluate_answer(Expect.model_validate(expect), seen)
        assert (result.outcome, result.ok, result.degraded, result.detail) == (
            outcome,
            outcome == Outcome.OK,
            degraded,
            detail,
        )
        assert result.latency_seconds == seen.latency


E = TypeVar("E", bound=BaseException)
URL = httpx.URL("https://monitor:hunter2@api.va.example/health?api_key=SECRET")
REQUEST = httpx.Request("GET", URL)


def chained(outer: E, *causes: BaseException) -> E:
    """`outer` raised from the first cause, raised from the next, ... as httpx and httpcore do."""
    current: BaseException = outer
    for cause in causes:
        current.__cause__ = cause
        current = cause
    return outer


def verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}")
    error.verify_code = code
    error.verify_message = message
    return error


def ssl_error(reason: str) -> ssl.SSLError:
    error = ssl.SSLError(1, f"[SSL: {reason}] {reason.lower()}")
    error.reason = reason
    return error


def refused() -> OSError:
    return ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")


class TestDescribeHttpError:
    @pytest.mark.parametrize(
        ("exc", "proxy", "expected"),
        [
            (
                chained(httpx.ConnectError("", request=REQUEST), OSError("All connection attempts failed"), refused()),
                None,
                (Outcome.CONNECT, "connection refused to api.va.example:443", False),
            ),
            (
                chained(
                    httpx.ConnectError("", request=REQUEST),
                    OSError("All connection attempts failed"),
                    ExceptionGroup("multiple connection attempts failed", [refused(), refused()]),
                ),
                None,
                (Outcome.CONNECT, "connection refused to api.va.example:443", False),
            ),
            (
                chained(
                    httpx.ConnectError("", request=REQUEST),
                    OSError("All connection attempts failed"),
                    OSError(errno.ENETUNREACH, "Network is unreachable"),
                ),
                None,
                (Outcome.CONNECT, "cannot connect to api.va.example:443: network is unreachable", False),
            ),
            (
                chained(httpx.ConnectError("", request=REQUEST), socket.gaierror(-2, "Name or service not known")),
                None,
                (Outcome.DNS, "cannot resolve api.va.example: name or service not known", False),
            ),
            (
                chained(
                    httpx.ConnectError("", request=REQUEST), socket.gaierror(-3, "Temporary failure in name resolution")
                ),
                "http://user:pw@proxy.va.example:3128",
                (
                    Outcome.DNS,
                    "cannot resolve proxy host proxy.va.example: temporary failure in name resolution",
                    False,
                ),
            ),
            (
                chained(httpx.ConnectError("", request=REQUEST), refused()),
                "http://user:pw@proxy.va.example:3128",
                (Outcome.CONNECT, "connection refused to proxy proxy.va.example:3128", False),
            ),
            (
                httpx.ProxyError("407 Proxy Authentication Required", request=REQUEST),
                "http://user:pw@proxy.va.example:3128",
                (
                    Outcome.CONNECT,
                    "proxy proxy.va.example:3128 refused the tunnel to api.va.example:443: "
                    "407 Proxy Authentication Required",
                    False,
                ),
            ),
            (
                chained(httpx.ConnectError("", request=REQUEST), verify_error(10, "certificate has expired")),
                None,
                (Outcome.TLS, "certificate verify failed: certificate has expired (api.va.example:443)", True),
            ),
            (
                chained(httpx.ConnectError("", request=REQUEST), verify_error(18, "self-signed certificate")),
                None,
                (Outcome.TLS, "certificate verify failed: self-signed certificate (api.va.example:443)", True),
            ),
            (
                chained(
                    httpx.ConnectError("", request=REQUEST),
                    verify_error(62, "Hostname mismatch, certificate is not valid for 'api.va.example'."),
                ),
                None,
                (
                    Outcome.TLS,
                    "hostname mismatch: certificate is not valid for 'api.va.example' (api.va.example:443)",
                    True,
                ),
            ),
            (
                chained(httpx.ConnectError("", request=REQUEST), ssl_error("WRONG_VERSION_NUMBER")),
                None,
                (Outcome.TLS, "TLS handshake with api.va.example:443 failed: wrong version number", False),
            ),
            (
                chained(httpx.ConnectError("", request=REQUEST), anyio.EndOfStream()),
                None,
                (Outcome.TLS, "TLS handshake with api.va.example:443 failed: connection closed by the server", False),
            ),
            (
                httpx.TooManyRedirects("Exceeded maximum allowed redirects.", request=REQUEST),
                None,
                (Outcome.HTTP_STATUS, "redirect loop: more than 5 redirects from /health", False),
            ),
            (
                httpx.RemoteProtocolError("illegal status line: bytearray(b'hello')", request=REQUEST),
                None,
                (Outcome.ERROR, "not an HTTP response from api.va.example:443", False),
            ),
            (
                httpx.RemoteProtocolError("Server disconnected without sending a response.", request=REQUEST),
                None,
                (
                    Outcome.ERROR,
                    "server closed the connection without a complete answer from /health (api.va.example:443)",
                    False,
                ),
            ),
            (
                httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body (incomplete chunked read)",
                    request=REQUEST,
                ),
                None,
                (Outcome.ERROR, "connection closed mid-body from /health: incomplete chunked read", False),
            ),
            (
                httpx.RemoteProtocolError("Receive buffer too long", request=REQUEST),
                None,
                (Outcome.ERROR, "invalid HTTP response from api.va.example:443: receive buffer too long", False),
            ),
            (
                chained(
                    httpx.ReadError("", request=REQUEST),
                    ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
                ),
                None,
                (
                    Outcome.ERROR,
                    "connection lost while reading the answer from api.va.example:443: connection reset by peer",
                    False,
                ),
            ),
            (
                httpx.WriteError("", request=REQUEST),
                None,
                (Outcome.ERROR, "connection lost while sending the request to api.va.example:443", False),
            ),
            (
                httpx.LocalProtocolError("Illegal header value b'Bearer s3cr3t\\n'", request=REQUEST),
                None,
                (Outcome.ERROR, "request to /health could not be sent: invalid request (check headers)", False),
            ),
            (
                httpx.UnsupportedProtocol("", request=httpx.Request("GET", "ftp://files.va.example/x")),
                None,
                (Outcome.ERROR, "unsupported URL scheme 'ftp' (requested from /health)", False),
            ),
            (
                httpx.InvalidURL("Invalid port: 'x'"),
                None,
                (Outcome.ERROR, "invalid URL (requested from /health)", False),
            ),
            (
                httpx.DecodingError("", request=REQUEST),
                None,
                (Outcome.ERROR, "undecodable body (Content-Encoding) from /health", False),
            ),
            (
                httpx.ReadTimeout("", request=REQUEST),
                None,
                (Outcome.TIMEOUT, "timed out talking to api.va.example:443", False),
            ),
            (
                httpx.ConnectError("no request attached"),
                None,
                (Outcome.CONNECT, "cannot connect to api.va.example:443", False),
            ),
        ],
    )
    def test_translation(
        self, exc: httpx.HTTPError | httpx.InvalidURL, proxy: str | None, expected: tuple[Outcome, str, bool]
    ) -> None:
        """Each httpx failure maps to its outcome and a readable detail without secrets or query."""
        outcome, detail, security = describe_http_error(exc, URL, proxy=proxy)
        assert (outcome, detail, security) == expected
        assert [secret for secret in ("SECRET", "hunter2", "s3cr3t", ":pw") if secret in detail] == []

    def test_redirect_limit_comes_from_the_client(self) -> None:
        """The redirect-loop detail names the limit the client was built with."""
        exc = httpx.TooManyRedirects("Exceeded maximum allowed redirects.", request=REQUEST)
        assert describe_http_error(exc, URL, max_redirects=2)[1] == "redirect loop: more than 2 redirects from /health"

    def test_ipv6_host_is_bracketed(self) -> None:
        """An IPv6 address is shown in brackets before the port."""
        exc = chained(httpx.ConnectError("", request=httpx.Request("GET", "http://[::1]:8080/x")), refused())
        assert describe_http_error(exc, httpx.URL("http://[::1]:8080/x"))[1] == "connection refused to [::1]:8080"
