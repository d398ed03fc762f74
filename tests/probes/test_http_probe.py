"""The http probe against real servers on 127.0.0.1, run through `run_probe` (the deadline owner).

Most servers are asyncio servers in the test's own event loop, answering from a small handler
per test; the large-body server is a plain thread, so the memory measured is the probe's alone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import gzip
import http
import re
import socket
import ssl
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme

from monitor.results import Outcome, ProbeResult
from monitor.schedule.run_probe import run_probe
from probes.context import TlsOptions
from tests.probes.http_loopback import (
    FakeTokens,
    RawHttpServer,
    Request,
    gzip_bomb,
    http_spec,
    peak_rss,
    probe_context,
    probe_once,
    redirect,
    reply,
    reply_json,
    routes,
    run,
    server_tls,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

MiB = 1024 * 1024


# ---------------------------------------------------------------------------------------------
# Servers of particular misbehaviour


async def never_answer(request: Request, writer: asyncio.StreamWriter) -> bool:
    await asyncio.Event().wait()  # until the server is closed
    return False


async def drip(request: Request, writer: asyncio.StreamWriter) -> bool:
    """Headers at once, then a 100-byte body at one byte a second."""
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n")
    for _ in range(100):
        writer.write(b"x")
        await writer.drain()
        await asyncio.sleep(1)
    return True


async def garbage(request: Request, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"hello\r\n\r\n")
    await writer.drain()
    return False


async def close_mid_body(request: Request, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
    await writer.drain()
    return False


class BigBodyServer:
    """A thread that answers one request with `size` bytes, counting the bytes it got to send.

    Its send buffer is kept small, so what it sends is close to what the client read: without
    that, loopback socket buffers would absorb megabytes whatever the client does. A thread
    rather than a task: the memory traced during the probe is then the probe's own.
    """

    def __init__(self, size: int, *, declare_length: bool, status: int = 200) -> None:
        self.size = size
        self.status = status
        self.sent = 0
        self._declare_length = declare_length
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(10)  # never wait forever for a client
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> BigBodyServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._thread.join(15)
        self._listener.close()

    def url(self, target: str = "/big") -> str:
        return f"http://127.0.0.1:{self.port}{target}"

    def _serve(self) -> None:
        chunk = b"x" * 65536
        try:
            connection, _ = self._listener.accept()
        except OSError:
            return
        with connection:
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
            try:
                connection.recv(65536)
                length = f"Content-Length: {self.size}" if self._declare_length else "Connection: close"
                status_line = f"HTTP/1.1 {self.status} {http.HTTPStatus(self.status).phrase}"
                connection.sendall(f"{status_line}\r\n{length}\r\n\r\n".encode())
                while self.sent < self.size:
                    connection.sendall(chunk)
                    self.sent += len(chunk)
            except OSError:
                pass  # the client hung up: what we expect once it has had enough


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# ---------------------------------------------------------------------------------------------
# Tests


class TestStatus:
    async def test_healthy_200_is_ok(self) -> None:
        """A 200 answer is ok and names the status and the path."""
        result = await probe_once(reply(200))
        assert (result.ok, result.outcome, result.degraded) == (True, Outcome.OK, False)
        assert result.detail == "HTTP 200 from /healthcheck"
        assert 0 < result.latency_seconds < 1

    async def test_503_names_status_and_path_only(self) -> None:
        """A 503 is `http_status` with a detail naming the path, never the query or URL credentials."""
        async with RawHttpServer(reply(503)) as server, probe_context() as ctx:
            url = f"http://monitor:hunter2@127.0.0.1:{server.port}/healthcheck?api_key=SECRET"
            result = await run(http_spec(url), ctx)
        assert (result.ok, result.outcome) == (False, Outcome.HTTP_STATUS)
        assert result.detail == "HTTP 503 from /healthcheck"

    async def test_status_outside_the_list_names_the_expected_ones(self) -> None:
        """A 204 when only 200 is expected fails and says what was expected."""
        result = await probe_once(reply(204, b""), expect={"status": [200]})
        assert (result.outcome, result.detail) == (Outcome.HTTP_STATUS, "HTTP 204 from /healthcheck (expected 200)")

    async def test_redirect_is_followed_and_the_final_path_reported(self) -> None:
        """A redirect is followed, and a failing final answer names the path that gave it."""
        handler = routes({"/healthcheck": redirect("/v1/health"), "/v1/health": reply(503)})
        result = await probe_once(handler)
        assert (result.outcome, result.detail) == (Outcome.HTTP_STATUS, "HTTP 503 from /v1/health")

    async def test_unneeded_body_is_not_read(self) -> None:
        """Without a body condition the probe stops at the headers of a 10 MB answer."""
        with BigBodyServer(10 * MiB, declare_length=True) as server:
            async with probe_context() as ctx:
                result = await run(http_spec(server.url()), ctx)
        assert (result.ok, result.detail) == (True, "HTTP 200 from /big")
        assert server.sent < 4 * MiB


class TestLatency:
    async def test_slower_than_max_latency_is_ok_but_degraded(self) -> None:
        """An answer slower than `max_latency` is a success marked degraded, with both times."""
        result = await probe_once(reply(200, delay=0.3), expect={"max_latency": "100ms"})
        assert (result.ok, result.outcome, result.degraded) == (True, Outcome.OK, True)
        assert re.fullmatch(r"slow: \d+ms > 100ms", result.detail), result.detail
        assert 0.3 <= result.latency_seconds < 1


class TestBodyConditions:
    async def test_body_contains_present_is_ok(self) -> None:
        """A body that contains the expected text is ok."""
        result = await probe_once(reply(200, b"status: all systems go"), expect={"body_contains": "systems go"})
        assert result.ok, result.detail

    async def test_body_contains_missing_is_condition(self) -> None:
        """A body without the expected text is `condition`, quoting the text."""
        result = await probe_once(reply(200, b"maintenance"), expect={"body_contains": "xyz"})
        assert (result.ok, result.outcome) == (False, Outcome.CONDITION)
        assert result.detail == "[BODY] does not contain 'xyz'"

    async def test_json_condition_reports_observed_value(self) -> None:
        """A failed json condition is `condition` with the observed and the expected value."""
        document = {"status": "pass", "details": {"db": {"status": "down"}}}
        result = await probe_once(
            reply_json(document), expect={"json": [{"path": "details.db.status", "equals": "up"}]}
        )
        assert (result.outcome, result.detail) == (Outcome.CONDITION, "[JSON] details.db.status: 'down' != 'up'")

    async def test_json_conditions_that_hold_are_ok(self) -> None:
        """Json conditions on nested keys and list indexes that all hold are ok."""
        document = {"status": "pass", "checks": [{"name": "db", "status": "pass"}]}
        conditions = [{"path": "status", "equals": "pass"}, {"path": "checks.0.status", "equals": "pass"}]
        result = await probe_once(reply_json(document), expect={"json": conditions})
        assert result.ok, result.detail

    async def test_invalid_json_is_condition_without_the_body(self) -> None:
        """A body that is not JSON is `condition` with a short reason and none of the body."""
        body = b"<html>Service Unavailable secret-internal-hostname</html>"
        result = await probe_once(reply(200, body), expect={"json": [{"path": "status", "equals": "pass"}]})
        assert result.outcome == Outcome.CONDITION
        assert result.detail == "invalid JSON body from /healthcheck (Expecting value at line 1 column 1)"

    @pytest.mark.parametrize("number", ["9" * 5000, "-" + "1" * 4301, "0." + "5" * 5000, "1" * 2000 + "e5"])
    @pytest.mark.parametrize("expect", [{"health_json": True}, {"json": [{"path": "status", "equals": "pass"}]}])
    async def test_huge_number_is_a_readable_condition(self, number: str, expect: dict[str, Any]) -> None:
        """A JSON number thousands of digits long is an invalid body with a reason, not `probe raised ValueError`."""
        body = b'{"status": "pass", "uptime": ' + number.encode() + b"}"
        result = await probe_once(reply(200, body, headers={"Content-Type": "application/json"}), expect=expect)
        assert (result.outcome, result.detail) == (
            Outcome.CONDITION,
            "invalid JSON body from /healthcheck (a number longer than 1000 characters)",
        )


class TestHealthJson:
    async def test_warn_is_ok_and_degraded(self) -> None:
        """An IETF health body saying `warn` is a success marked degraded."""
        result = await probe_once(
            reply_json({"status": "warn"}, content_type="application/health+json"), expect={"health_json": True}
        )
        assert (result.ok, result.degraded, result.detail) == (True, True, "health status warn")

    async def test_pass_is_ok(self) -> None:
        """An IETF health body saying `pass` is ok and not degraded."""
        result = await probe_once(reply_json({"status": "pass"}), expect={"health_json": True})
        assert (result.ok, result.degraded) == (True, False)

    async def test_fail_with_200_is_condition(self) -> None:
        """An IETF health body saying `fail` under a 200 is `condition`."""
        result = await probe_once(reply_json({"status": "fail"}), expect={"health_json": True})
        assert (result.ok, result.outcome, result.detail) == (False, Outcome.CONDITION, "health status 'fail'")

    async def test_fail_with_503_is_http_status_naming_the_health_status(self) -> None:
        """A 503 with a `fail` body (how VA health checks say down) is `http_status` naming both."""
        result = await probe_once(
            reply_json({"status": "fail", "output": "db unreachable"}, status=503), expect={"health_json": True}
        )
        assert result.outcome == Outcome.HTTP_STATUS
        assert result.detail == "HTTP 503 from /healthcheck; health status 'fail': db unreachable"

    async def test_control_characters_in_output_are_replaced(self) -> None:
        """Terminal escapes and other control characters an upstream sends never reach a detail."""
        result = await probe_once(
            reply_json({"status": "fail", "output": "db\x1b[2J\x07down"}), expect={"health_json": True}
        )
        assert result.detail == "health status 'fail': db\ufffd[2J\ufffddown"


class TestDeadline:
    async def test_server_that_never_answers_times_out_at_the_deadline(self) -> None:
        """A server that accepts and never answers ends as `timeout` at the deadline, not later."""
        async with RawHttpServer(never_answer) as server, probe_context() as ctx:
            started = time.monotonic()
            with anyio.fail_after(2):
                result = await run_probe(http_spec(server.url("/healthcheck")), ctx, 0.5)
            elapsed = time.monotonic() - started
        assert (result.outcome, result.detail) == (Outcome.TIMEOUT, "no complete answer within 500ms")
        assert 0.5 <= elapsed < 1.25

    async def test_dripping_body_times_out_at_the_deadline(self) -> None:
        """A body dripping one byte a second is cut off at the deadline, not when it ends."""
        async with RawHttpServer(drip) as server, probe_context() as ctx:
            started = time.monotonic()
            with anyio.fail_after(3):
                spec = http_spec(server.url("/healthcheck"), expect={"body_contains": "done"})
                result = await run_probe(spec, ctx, 1.5)
            elapsed = time.monotonic() - started
        assert (result.outcome, result.detail) == (Outcome.TIMEOUT, "no complete answer within 1.5s")
        assert 1.5 <= elapsed < 2.25


class TestBodyCap:
    async def test_undeclared_10mb_body_fails_at_the_cap(self) -> None:
        """A 10 MB body without Content-Length fails once 1 MiB is read; the rest is never fetched."""
        with BigBodyServer(10 * MiB, declare_length=False) as server:
            async with probe_context() as ctx:
                spec = http_spec(server.url(), expect={"body_contains": "never there"})
                tracemalloc.start()
                try:
                    result = await run(spec, ctx)
                    _, peak = tracemalloc.get_traced_memory()
                finally:
                    tracemalloc.stop()
        assert (result.ok, result.outcome) == (False, Outcome.ERROR)
        assert result.detail == "body larger than 1 MiB from /big"
        assert server.sent < 4 * MiB
        assert peak < 4 * MiB

    async def test_declared_10mb_body_fails_without_reading(self) -> None:
        """A Content-Length over the cap fails at the headers, before any of the body is read."""
        with BigBodyServer(10 * MiB, declare_length=True) as server:
            async with probe_context() as ctx:
                result = await run(http_spec(server.url(), expect={"health_json": True}), ctx)
        assert (result.outcome, result.detail) == (Outcome.ERROR, "body larger than 1 MiB from /big")
        assert server.sent < 4 * MiB

    async def test_oversized_body_of_a_failing_status_reports_the_status(self) -> None:
        """A 503 whose body is over the cap is reported as the 503, not as the body's size."""
        with BigBodyServer(10 * MiB, declare_length=False, status=503) as server:
            async with probe_context() as ctx:
                result = await run(http_spec(server.url(), expect={"health_json": True}), ctx)
        assert (result.outcome, result.detail) == (Outcome.HTTP_STATUS, "HTTP 503 from /big")


class TestCompressedBodies:
    async def test_gzip_body_is_inflated(self) -> None:
        """A gzip-encoded body is inflated before the conditions read it, though identity was asked for."""
        handler = reply(200, gzip.compress(b"status: all systems go"), headers={"Content-Encoding": "gzip"})
        async with RawHttpServer(handler) as server, probe_context() as ctx:
            result = await run(http_spec(server.url("/healthcheck"), expect={"body_contains": "systems go"}), ctx)
        assert (result.ok, result.detail) == (True, "HTTP 200 from /healthcheck")
        assert server.requests[0].headers["accept-encoding"] == "identity"

    @pytest.mark.parametrize(
        ("status", "outcome", "detail"),
        [
            (200, Outcome.ERROR, "undecodable body (Content-Encoding) from /healthcheck"),
            (503, Outcome.HTTP_STATUS, "HTTP 503 from /healthcheck"),
        ],
    )
    async def test_undecodable_body(self, status: int, outcome: Outcome, detail: str) -> None:
        """A body that is not the gzip it claims is an error, unless a failing status already says more."""
        handler = reply(status, b"not gzip", headers={"Content-Encoding": "gzip"})
        result = await probe_once(handler, expect={"health_json": True})
        assert (result.outcome, result.detail) == (outcome, detail)

    async def test_gzip_bomb_to_concurrent_probes_stays_near_the_cap(self) -> None:
        """A 199 KiB gzip body inflating to 200 MiB fails four concurrent probes at the cap, in a few MiB."""
        bomb = gzip_bomb(200)
        handler = reply(200, bomb, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
        results: list[ProbeResult] = []
        async with RawHttpServer(handler) as server, probe_context() as ctx:
            spec = http_spec(server.url("/healthcheck"), expect={"health_json": True})

            async def probe() -> None:
                results.append(await run(spec, ctx))

            tracemalloc.start()
            try:
                with peak_rss() as rss:
                    async with anyio.create_task_group() as tg:
                        for _ in range(4):
                            tg.start_soon(probe)
                _, traced_peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        assert len(bomb) < 200 * 1024
        assert [(r.outcome, r.detail) for r in results] == [
            (Outcome.ERROR, "body larger than 1 MiB from /healthcheck")
        ] * 4
        assert traced_peak < 16 * MiB, traced_peak  # inflating would take 4 x 200 MiB
        assert rss.growth < 64 * MiB, rss


class TestTransportFailures:
    async def test_redirect_loop_is_http_status(self) -> None:
        """A redirect loop /a -> /b -> /a stops at the redirect limit with a readable detail."""
        handler = routes({"/a": redirect("/b"), "/b": redirect("/a")})
        async with RawHttpServer(handler) as server, probe_context() as ctx:
            result = await run(http_spec(server.url("/a")), ctx)
        assert (result.outcome, result.detail) == (Outcome.HTTP_STATUS, "redirect loop: more than 5 redirects from /a")
        assert len(server.requests) == 6

    async def test_connection_refused_is_connect(self) -> None:
        """A closed port is `connect`, naming the address refused."""
        port = free_port()
        async with probe_context() as ctx:
            result = await run(http_spec(f"http://127.0.0.1:{port}/healthcheck"), ctx)
        assert (result.outcome, result.detail) == (Outcome.CONNECT, f"connection refused to 127.0.0.1:{port}")

    async def test_garbage_response_is_error(self) -> None:
        """A server that writes something that is not HTTP and hangs up is `error`, readably."""
        async with RawHttpServer(garbage) as server, probe_context() as ctx:
            result = await run(http_spec(server.url("/healthcheck")), ctx)
        assert (result.outcome, result.detail) == (Outcome.ERROR, f"not an HTTP response from 127.0.0.1:{server.port}")

    async def test_connection_closed_mid_body_is_error(self) -> None:
        """A server that hangs up mid-body is `error`, saying how much of the body came."""
        result = await probe_once(close_mid_body, expect={"body_contains": "x"})
        assert result.outcome == Outcome.ERROR
        assert result.detail == "connection closed mid-body from /healthcheck: received 10 bytes, expected 100"

    async def test_unreachable_proxy_is_connect(self) -> None:
        """A proxy that refuses connections is `connect`, naming the proxy without its credentials."""
        port = free_port()
        async with probe_context() as ctx:
            spec = http_spec("https://va.example/health", proxy=f"http://user:pw@127.0.0.1:{port}")
            result = await run(spec, ctx)
        assert (result.outcome, result.detail) == (Outcome.CONNECT, f"connection refused to proxy 127.0.0.1:{port}")

    async def test_proxy_refusing_the_tunnel_is_connect(self) -> None:
        """A proxy answering CONNECT with 403 is `connect`, with the proxy's status line."""
        async with RawHttpServer(reply(403, b"")) as proxy, probe_context() as ctx:
            result = await run(http_spec("https://va.example/health", proxy=proxy.url()), ctx)
        assert result.outcome == Outcome.CONNECT
        assert result.detail == f"proxy 127.0.0.1:{proxy.port} refused the tunnel to va.example:443: 403 Forbidden"
        assert proxy.requests[0].method == "CONNECT"


class TestTls:
    async def test_untrusted_ca_is_security_relevant_tls(self, ca: trustme.CA) -> None:
        """A certificate from a CA the system store does not trust is `tls` and security relevant."""
        async with RawHttpServer(reply(200), tls=server_tls(ca, "127.0.0.1")) as server, probe_context() as ctx:
            result = await run(http_spec(server.url("/healthcheck")), ctx)
        assert (result.outcome, result.security_relevant) == (Outcome.TLS, True)
        assert result.detail == (
            f"certificate verify failed: unable to get local issuer certificate (127.0.0.1:{server.port})"
        )

    async def test_ca_file_makes_the_certificate_trusted(self, ca: trustme.CA, ca_file: str) -> None:
        """With the CA given as `ca_file` the same server is ok."""
        async with RawHttpServer(reply(200), tls=server_tls(ca, "127.0.0.1")) as server, probe_context() as ctx:
            result = await run(http_spec(server.url("/healthcheck"), ca_file=ca_file), ctx)
        assert (result.ok, result.detail) == (True, "HTTP 200 from /healthcheck")

    async def test_expired_certificate_is_security_relevant_tls(self, ca: trustme.CA, ca_file: str) -> None:
        """An expired certificate is `tls`, security relevant, and says it expired."""
        now = dt.datetime.now(dt.UTC)
        tls = server_tls(ca, "127.0.0.1", not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1))
        async with RawHttpServer(reply(200), tls=tls) as server, probe_context() as ctx:
            result = await run(http_spec(server.url("/healthcheck"), ca_file=ca_file), ctx)
        assert (result.outcome, result.security_relevant) == (Outcome.TLS, True)
        assert result.detail.startswith("certificate verify failed: certificate has expired")

    async def test_wrong_host_is_security_relevant_tls(self, ca: trustme.CA, ca_file: str) -> None:
        """A trusted certificate for another host is `tls`, security relevant, and says mismatch."""
        async with RawHttpServer(reply(200), tls=server_tls(ca, "other.example")) as server, probe_context() as ctx:
            result = await run(http_spec(server.url("/healthcheck"), ca_file=ca_file), ctx)
        assert (result.outcome, result.security_relevant) == (Outcome.TLS, True)
        assert result.detail.startswith("ip address mismatch: certificate is not valid for '127.0.0.1'")


class TestMutualTls:
    async def test_client_certificate_is_presented(self, ca: trustme.CA, ca_file: str, tmp_path: Path) -> None:
        """A server that requires a client certificate accepts the configured one."""
        tls = server_tls(ca, "127.0.0.1")
        tls.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(tls)
        client = ca.issue_cert("depmon.client.example")
        cert, key = tmp_path / "client.pem", tmp_path / "client.key"
        client.cert_chain_pems[0].write_to_path(str(cert))
        client.private_key_pem.write_to_path(str(key))
        async with RawHttpServer(reply(200), tls=tls) as server, probe_context() as ctx:
            spec = http_spec(server.url("/healthcheck"), ca_file=ca_file, client_cert=str(cert), client_key=str(key))
            result = await run(spec, ctx)
        assert (result.ok, result.detail) == (True, "HTTP 200 from /healthcheck")

    async def test_without_a_client_certificate_the_server_refuses(self, ca: trustme.CA, ca_file: str) -> None:
        """The same server refuses a probe with no client certificate, and the probe says so without crashing."""
        tls = server_tls(ca, "127.0.0.1")
        tls.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(tls)
        async with RawHttpServer(reply(200), tls=tls) as server, probe_context() as ctx:
            result = await run(http_spec(server.url("/healthcheck"), ca_file=ca_file), ctx)
        assert result.ok is False
        # With TLS 1.3 the server checks the client certificate after the handshake and resets.
        assert result.outcome in (Outcome.TLS, Outcome.ERROR), result.detail
        assert f"127.0.0.1:{server.port}" in result.detail


class TestBearer:
    async def test_token_is_sent_and_never_shown(self) -> None:
        """The bearer token reaches the server, and a detail quoting it shows `***` instead."""

        async def echo_authorization(request: Request, writer: asyncio.StreamWriter) -> bool:
            return await reply_json({"seen": request.headers.get("authorization")})(request, writer)

        tokens = FakeTokens("s3cr3t-token-value")
        async with RawHttpServer(echo_authorization) as server, probe_context(tokens=tokens) as ctx:
            spec = http_spec(
                server.url("/profile"),
                bearer_from="ssoe-oauth/token",
                expect={"json": [{"path": "seen", "equals": "nobody"}]},
            )
            result = await run(spec, ctx)
        assert server.requests[0].headers["authorization"] == "Bearer s3cr3t-token-value"
        assert result.outcome == Outcome.CONDITION
        assert "s3cr3t" not in result.detail
        assert result.detail == "[JSON] seen: 'Bearer ***' != 'nobody'"

    async def test_token_cut_short_in_a_detail_is_still_hidden(self) -> None:
        """A token that an upstream echoes where a detail cuts its text shows not even its first characters."""
        output = "x" * 45 + " Bearer s3cr3t-token-value"
        tokens = FakeTokens("s3cr3t-token-value")
        handler = reply_json({"status": "fail", "output": output})
        async with RawHttpServer(handler) as server, probe_context(tokens=tokens) as ctx:
            spec = http_spec(server.url("/profile"), bearer_from="ssoe-oauth/token", expect={"health_json": True})
            result = await run(spec, ctx)
        assert result.detail == "health status 'fail': " + "x" * 45 + " Bearer ***"
        assert "s3cr" not in result.detail

    async def test_rejected_token_is_invalidated(self) -> None:
        """A 401 to a bearer token is `http_status` and makes the cache forget that token."""
        tokens = FakeTokens("s3cr3t-token-value")
        async with RawHttpServer(reply(401)) as server, probe_context(tokens=tokens) as ctx:
            result = await run(http_spec(server.url("/profile"), bearer_from="ssoe-oauth/token"), ctx)
        assert (result.outcome, result.detail) == (Outcome.HTTP_STATUS, "HTTP 401 from /profile")
        assert tokens.invalidated == ["ssoe-oauth/token"]

    async def test_missing_token_is_auth_and_sends_nothing(self) -> None:
        """Without a token the probe is `auth` with the cache's reason, and no request is sent."""
        tokens = FakeTokens(reason="token endpoint answered HTTP 401")
        async with RawHttpServer(reply(200)) as server, probe_context(tokens=tokens) as ctx:
            result = await run(http_spec(server.url("/profile"), bearer_from="ssoe-oauth/token"), ctx)
        assert (result.outcome, result.detail) == (
            Outcome.AUTH,
            "no token from ssoe-oauth/token: token endpoint answered HTTP 401",
        )
        assert server.requests == []

    async def test_missing_token_blames_the_token_owner(self) -> None:
        """A failure to get a token names the dependency owning the oauth2 probe, not the probed one."""
        tokens = FakeTokens(reason="token endpoint answered HTTP 401")
        async with RawHttpServer(reply(200)) as server, probe_context(tokens=tokens) as ctx:
            result = await run(http_spec(server.url("/profile"), bearer_from="ssoe-oauth/token"), ctx)
        assert result.blamed_on == "ssoe-oauth"

    async def test_no_token_cache_is_auth(self) -> None:
        """A context without a token cache makes a bearer probe `auth`, not a crash."""
        async with probe_context() as ctx:
            result = await run(http_spec("http://127.0.0.1:9/profile", bearer_from="ssoe-oauth/token"), ctx)
        assert (result.outcome, result.detail) == (
            Outcome.AUTH,
            "no token from ssoe-oauth/token: no token cache configured",
        )


class TestSharedClient:
    async def test_many_probes_share_one_client_and_ssl_context(self, ca: trustme.CA, ca_file: str) -> None:
        """Probes with the same TLS options and proxy reuse one HTTP client and one SSL context."""
        async with RawHttpServer(reply(200), tls=server_tls(ca, "127.0.0.1")) as server, probe_context() as ctx:
            spec = http_spec(server.url("/healthcheck"), ca_file=ca_file)
            results = [await run(spec, ctx) for _ in range(5)]
            client, ssl_context = (
                ctx._clients[(TlsOptions(ca_file=ca_file), None)],
                ctx._ssl[TlsOptions(ca_file=ca_file)],
            )
            results += [await run(spec, ctx) for _ in range(5)]
            assert ctx._clients[(TlsOptions(ca_file=ca_file), None)] is client
            assert ctx._ssl[TlsOptions(ca_file=ca_file)] is ssl_context
            assert (len(ctx._clients), len(ctx._ssl)) == (1, 1)
        assert all(result.ok for result in results), [result.detail for result in results]
        assert len(server.requests) == 10


class TestCookies:
    async def test_a_cookie_one_upstream_sets_is_never_sent(self) -> None:
        """A `Set-Cookie` answer leaves nothing behind: the next probe through the shared client sends no cookie."""
        handler = reply(200, headers={"Set-Cookie": "session=abc; Path=/"})
        async with RawHttpServer(handler) as server, probe_context() as ctx:
            for _ in range(2):
                assert (await run(http_spec(server.url("/healthcheck")), ctx)).ok
        assert [r.headers.get("cookie") for r in server.requests] == [None, None]
        assert not ctx.http_client().cookies


class TestNoReferenceCycles:
    """A probe's answer is freed when the probe ends, not by the garbage collector: at 500 answers a
    second, each answer's objects in a reference cycle (httpx's response and its stream) made the
    full collections that paused the event loop for 50-220 ms."""

    @pytest.mark.parametrize(
        ("handler", "fields"),
        [
            (reply_json({"status": "fail"}, status=503), {"expect": {"health_json": True}}),
            (reply(200), {}),
            (routes({"/healthcheck": redirect("/final"), "/final": reply(200)}), {"follow_redirects": True}),
        ],
        ids=["failing-body-read", "ok-headers-only", "redirected"],
    )
    async def test_a_probe_leaves_no_cyclic_garbage(self, handler: Any, fields: dict[str, Any]) -> None:
        async with RawHttpServer(handler) as server, probe_context() as ctx:
            spec = http_spec(server.url("/healthcheck"), **fields)
            for _ in range(3):  # the connection pool and the caches set up
                await run(spec, ctx)
            gc.collect()
            gc.disable()
            try:
                gc.set_debug(gc.DEBUG_SAVEALL)
                results = [await run(spec, ctx) for _ in range(20)]
                gc.collect()
                garbage = [type(o).__name__ for o in gc.garbage]
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
                gc.enable()
        assert len({r.ok for r in results}) == 1  # each probe ran to its usual end
        assert garbage == []
