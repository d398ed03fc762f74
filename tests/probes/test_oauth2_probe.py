"""The oauth2 probe and the token cache against a real token endpoint on 127.0.0.1."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote_plus

import anyio
import pytest
import trustme
from anyio.abc import ByteStream, SocketAttribute, SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.tls import TLSStream
from structlog.testing import capture_logs

from monitor.config import OAuth2ProbeSpec
from monitor.errors import TokenUnavailable
from monitor.results import Outcome, ProbeResult
from monitor.schedule.run_probe import run_probe
from probes import oauth2
from probes.context import ProbeContext
from probes.tokens import Grant, TokenCache
from tests.clocks import FakeClock
from tests.probes.http_loopback import gzip_bomb, peak_rss

pytestmark = pytest.mark.integration

CLIENT_ID = "depmon-client"
SECRET = "s3cr3t+VALUE/with=odd chars"  # characters that RFC 6749 2.3.1 urlencoding changes
REF = "ssoe-oauth/token"


@pytest.fixture
async def ctx() -> AsyncIterator[ProbeContext]:
    context = ProbeContext()
    yield context
    await context.aclose()


@dataclass
class Reply:
    """What the fake token endpoint answers; `hang` never answers."""

    status: int = 200
    body: bytes = b""
    delay: float = 0.0
    hang: bool = False
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class TokenEndpoint:
    """A token endpoint on 127.0.0.1 that counts requests and issues `token-1`, `token-2`, ..."""

    url: str
    reply: Callable[[int], Reply]
    requests: list[Request] = field(default_factory=list)


def issue(expires_in: int | None = 3600) -> Callable[[int], Reply]:
    """Replies issuing a new token per request (`token-<n>`)."""

    def reply(n: int) -> Reply:
        document: dict[str, Any] = {"access_token": f"token-{n}", "token_type": "Bearer"}
        if expires_in is not None:
            document["expires_in"] = expires_in
        return Reply(200, json.dumps(document).encode())

    return reply


def fixed(reply: Reply) -> Callable[[int], Reply]:
    return lambda _n: reply


@asynccontextmanager
async def token_endpoint(
    reply: Callable[[int], Reply], server_context: ssl.SSLContext | None = None
) -> AsyncIterator[TokenEndpoint]:
    """Serve HTTP/1.1 (HTTPS with `server_context`) on 127.0.0.1, one request per connection."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)
    endpoint = TokenEndpoint(f"{'https' if server_context else 'http'}://127.0.0.1:{port}/oauth2/token", reply)

    async def handle(raw: SocketStream) -> None:
        async with raw:
            stream: ByteStream = raw
            try:
                if server_context is not None:
                    stream = await TLSStream.wrap(
                        raw, server_side=True, ssl_context=server_context, standard_compatible=False
                    )
                await serve_one(stream)
            except (OSError, ssl.SSLError, anyio.EndOfStream, anyio.BrokenResourceError, anyio.IncompleteRead):
                return  # the client hung up (a deadline, a rejected certificate): part of the test

    async def serve_one(stream: ByteStream) -> None:
        buffered = BufferedByteReceiveStream(stream)
        head = (await buffered.receive_until(b"\r\n\r\n", 65536)).decode("latin-1").split("\r\n")
        method, path, _ = head[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
        length = int(headers.get("content-length", "0"))
        body = await buffered.receive_exactly(length) if length else b""
        endpoint.requests.append(Request(method, path, headers, body))
        answer = endpoint.reply(len(endpoint.requests))
        if answer.hang:
            while True:  # until the client gives up and closes
                await buffered.receive()
        await anyio.sleep(answer.delay)
        status_line = f"HTTP/1.1 {answer.status} X\r\nContent-Type: application/json\r\n"
        extra = "".join(f"{name}: {value}\r\n" for name, value in answer.headers.items())
        framing = f"Content-Length: {len(answer.body)}\r\nConnection: close\r\n\r\n"
        await stream.send((status_line + extra + framing).encode() + answer.body)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        try:
            yield endpoint
        finally:
            tg.cancel_scope.cancel()


def spec_for(url: str, **extra: Any) -> OAuth2ProbeSpec:
    return OAuth2ProbeSpec.model_validate(
        {"name": "token", "kind": "oauth2", "token_url": url, "client_id": CLIENT_ID, "client_secret": SECRET, **extra}
    )


async def run(spec: OAuth2ProbeSpec, ctx: ProbeContext, timeout: float = 5.0) -> ProbeResult:
    with anyio.fail_after(timeout + 5):
        return await run_probe(spec, ctx, timeout)


@pytest.mark.anyio
class TestOAuth2Probe:
    """The oauth2 probe: a client-credentials grant, its token stored, refusals and failures readable."""

    async def test_issued_token_is_ok_and_stored(self, ctx: ProbeContext) -> None:
        """An issued token is ok with its lifetime and lands in the token cache under the probe's ref."""
        async with token_endpoint(issue(3600)) as endpoint:
            spec = spec_for(endpoint.url, scope="openid profile")
            ctx.tokens = TokenCache({REF: spec}, oauth2.token_fetcher(ctx))
            result = await run(spec, ctx)
            with anyio.fail_after(5):
                token = await ctx.tokens.bearer(REF)
        assert (result.ok, result.outcome, result.detail) == (True, Outcome.OK, "token issued, expires in 3600s")
        assert token == "token-1"
        assert len(endpoint.requests) == 1  # the cache served the probe's token

    async def test_request_is_a_client_credentials_grant_with_basic_auth(self, ctx: ProbeContext) -> None:
        """The grant is a form POST with the client credentials urlencoded inside HTTP Basic (RFC 6749 2.3.1)."""
        async with token_endpoint(issue()) as endpoint:
            await run(spec_for(endpoint.url, scope="openid profile"), ctx)
        (request,) = endpoint.requests
        assert (request.method, request.path) == ("POST", "/oauth2/token")
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        assert parse_qs(request.body.decode()) == {"grant_type": ["client_credentials"], "scope": ["openid profile"]}
        scheme, _, encoded = request.headers["authorization"].partition(" ")
        user, _, password = base64.b64decode(encoded).decode().partition(":")
        assert (scheme, unquote_plus(user), unquote_plus(password)) == ("Basic", CLIENT_ID, SECRET)
        assert SECRET.encode() not in request.body

    async def test_missing_expires_in_defaults_to_five_minutes(self, ctx: ProbeContext) -> None:
        """A token response without expires_in is taken to last 300 s."""
        async with token_endpoint(issue(None)) as endpoint:
            result = await run(spec_for(endpoint.url), ctx)
        assert result.detail == "token issued, expires in 300s"

    async def test_invalid_client_is_auth_with_the_servers_reason(self, ctx: ProbeContext) -> None:
        """A refused grant is outcome auth with the error and its description."""
        refusal = {"error": "invalid_client", "error_description": "Client authentication failed"}
        async with token_endpoint(fixed(Reply(401, json.dumps(refusal).encode()))) as endpoint:
            result = await run(spec_for(endpoint.url), ctx)
        assert (result.ok, result.outcome) == (False, Outcome.AUTH)
        assert result.detail == "token refused: invalid_client (Client authentication failed)"

    async def test_refusal_without_error_body_names_the_status(self, ctx: ProbeContext) -> None:
        """A 401 without an RFC 6749 error body is still auth, naming the status."""
        async with token_endpoint(fixed(Reply(401, b"nope"))) as endpoint:
            result = await run(spec_for(endpoint.url), ctx)
        assert (result.outcome, result.detail) == (Outcome.AUTH, "token refused: HTTP 401 from /oauth2/token")

    @pytest.mark.parametrize(
        ("body", "detail"),
        [
            (b"<html>login</html>", "invalid JSON from the token endpoint"),
            (b'["access_token"]', "invalid JSON from the token endpoint"),
            (b'{"token_type": "Bearer"}', "no access_token in the token response"),
            (b'{"access_token": ""}', "no access_token in the token response"),
            (b'{"error": " \\n "}', "no access_token in the token response"),
        ],
    )
    async def test_garbage_answer_is_auth(self, ctx: ProbeContext, body: bytes, detail: str) -> None:
        """A 200 that carries no token is outcome auth saying what was wrong."""
        async with token_endpoint(fixed(Reply(200, body))) as endpoint:
            result = await run(spec_for(endpoint.url), ctx)
        assert (result.ok, result.outcome, result.detail) == (False, Outcome.AUTH, detail)

    async def test_server_error_is_http_status(self, ctx: ProbeContext) -> None:
        """A 5xx from the token endpoint is outcome http_status."""
        async with token_endpoint(fixed(Reply(503, b"{}"))) as endpoint:
            result = await run(spec_for(endpoint.url), ctx)
        assert (result.outcome, result.detail) == (Outcome.HTTP_STATUS, "HTTP 503 from /oauth2/token")

    async def test_oversized_answer_is_cut_off(self, ctx: ProbeContext) -> None:
        """A token response larger than max_body_bytes is not read past the cap."""
        ctx.max_body_bytes = 1024
        async with token_endpoint(fixed(Reply(200, b'{"access_token": "' + b"x" * 2048 + b'"}'))) as endpoint:
            result = await run(spec_for(endpoint.url), ctx)
        assert (result.outcome, result.detail) == (Outcome.AUTH, "token response larger than 1024 bytes")

    async def test_gzip_token_response_is_inflated(self, ctx: ProbeContext) -> None:
        """A gzip-encoded token response is inflated and its token issued."""
        body = gzip.compress(json.dumps({"access_token": "t", "expires_in": 60}).encode())
        async with token_endpoint(fixed(Reply(200, body, headers={"Content-Encoding": "gzip"}))) as endpoint:
            result = await run(spec_for(endpoint.url), ctx)
        assert (result.ok, result.detail) == (True, "token issued, expires in 60s")

    async def test_gzip_bomb_is_cut_off_at_the_cap(self, ctx: ProbeContext) -> None:
        """A 199 KiB gzip token response inflating to 200 MiB fails at the cap without inflating it."""
        bomb = Reply(200, gzip_bomb(200), headers={"Content-Encoding": "gzip"})
        async with token_endpoint(fixed(bomb)) as endpoint:
            with peak_rss() as rss:
                result = await run(spec_for(endpoint.url), ctx)
        assert (result.outcome, result.detail) == (Outcome.AUTH, "token response larger than 1048576 bytes")
        assert rss.growth < 32 * 1024 * 1024, rss

    async def test_huge_number_is_invalid_json(self, ctx: ProbeContext) -> None:
        """An expires_in thousands of digits long is an invalid token response, not `probe raised ValueError`."""
        body = b'{"access_token": "t", "expires_in": ' + b"9" * 5000 + b"}"
        async with token_endpoint(fixed(Reply(200, body))) as endpoint:
            result = await run(spec_for(endpoint.url), ctx)
        assert (result.outcome, result.detail) == (Outcome.AUTH, "invalid JSON from the token endpoint")

    async def test_hanging_endpoint_times_out(self, ctx: ProbeContext) -> None:
        """A token endpoint that never answers ends as timeout at run_probe's deadline."""
        async with token_endpoint(fixed(Reply(hang=True))) as endpoint:
            result = await run(spec_for(endpoint.url), ctx, timeout=0.5)
        assert (result.ok, result.outcome, result.detail) == (False, Outcome.TIMEOUT, "no complete answer within 500ms")

    async def test_closed_port_is_connect(self, ctx: ProbeContext) -> None:
        """A token endpoint that refuses connections is outcome connect."""
        async with token_endpoint(issue()) as endpoint:
            url = endpoint.url
        result = await run(spec_for(url), ctx)
        assert (result.ok, result.outcome) == (False, Outcome.CONNECT)

    async def test_expired_endpoint_certificate_is_described(self, ctx: ProbeContext, tmp_path: Path) -> None:
        """An expired token endpoint certificate is a security-relevant tls failure worded like the tls probe's."""
        ca = trustme.CA()
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        now = dt.datetime.now(dt.UTC)
        not_after = now - dt.timedelta(days=2, hours=1)
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", not_before=now - dt.timedelta(days=30), not_after=not_after).configure_cert(server)
        async with token_endpoint(issue(), server) as endpoint:
            result = await run(spec_for(endpoint.url, ca_file=str(ca_file)), ctx)
        assert (result.ok, result.outcome, result.security_relevant) == (False, Outcome.TLS, True)
        assert result.detail == f"certificate expired 2 days ago ({not_after.date().isoformat()})"

    async def test_trusted_https_endpoint_issues(self, ctx: ProbeContext, tmp_path: Path) -> None:
        """An HTTPS token endpoint trusted through ca_file issues a token."""
        ca = trustme.CA()
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(server)
        async with token_endpoint(issue(), server) as endpoint:
            result = await run(spec_for(endpoint.url, ca_file=str(ca_file)), ctx)
        assert (result.ok, result.detail) == (True, "token issued, expires in 3600s")


@pytest.mark.anyio
class TestTokenCache:
    """TokenCache: reuse within the lifetime, renewal before expiry, one fetch for concurrent callers."""

    async def test_token_is_reused_within_its_lifetime(self, ctx: ProbeContext) -> None:
        """Two bearer calls within the lifetime make one request."""
        clock = FakeClock()
        async with token_endpoint(issue(3600)) as endpoint:
            cache = TokenCache({REF: spec_for(endpoint.url)}, oauth2.token_fetcher(ctx), clock)
            with anyio.fail_after(5):
                first = await cache.bearer(REF)
                clock.now += 3600 - 61  # just before the 60 s refresh margin
                second = await cache.bearer(REF)
        assert (first, second) == ("token-1", "token-1")
        assert len(endpoint.requests) == 1

    async def test_token_is_renewed_before_it_expires(self, ctx: ProbeContext) -> None:
        """Within the refresh margin (60 s or 10% of the lifetime) the next bearer call fetches a new token."""
        clock = FakeClock()
        async with token_endpoint(issue(3600)) as endpoint:
            cache = TokenCache({REF: spec_for(endpoint.url)}, oauth2.token_fetcher(ctx), clock)
            with anyio.fail_after(5):
                await cache.bearer(REF)
                clock.now += 3600 - 60
                renewed = await cache.bearer(REF)
        assert renewed == "token-2"
        assert len(endpoint.requests) == 2

    async def test_short_lifetimes_renew_at_ten_percent(self, ctx: ProbeContext) -> None:
        """A 100 s token is renewed 10 s before expiry, not 60 s."""
        clock = FakeClock()
        async with token_endpoint(issue(100)) as endpoint:
            cache = TokenCache({REF: spec_for(endpoint.url)}, oauth2.token_fetcher(ctx), clock)
            with anyio.fail_after(5):
                await cache.bearer(REF)
                clock.now += 89
                assert await cache.bearer(REF) == "token-1"
                clock.now += 1
                assert await cache.bearer(REF) == "token-2"

    async def test_concurrent_callers_share_one_fetch(self, ctx: ProbeContext) -> None:
        """Concurrent bearer calls for a missing token make one request and all get its token."""
        tokens: list[str] = []

        def slow_issue(n: int) -> Reply:
            return Reply(200, json.dumps({"access_token": f"token-{n}", "expires_in": 3600}).encode(), delay=0.2)

        async with token_endpoint(slow_issue) as endpoint:
            cache = TokenCache({REF: spec_for(endpoint.url)}, oauth2.token_fetcher(ctx))

            async def call() -> None:
                tokens.append(await cache.bearer(REF))

            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:
                    for _ in range(10):
                        tg.start_soon(call)
        assert tokens == ["token-1"] * 10
        assert len(endpoint.requests) == 1

    async def test_concurrent_callers_share_one_refusal(self, ctx: ProbeContext) -> None:
        """Concurrent bearer calls during a refused grant make one request and all get its reason."""
        refusal = json.dumps({"error": "invalid_client", "error_description": "Client authentication failed"})
        reasons: list[str] = []
        async with token_endpoint(fixed(Reply(401, refusal.encode(), delay=0.2))) as endpoint:
            cache = TokenCache({REF: spec_for(endpoint.url)}, oauth2.token_fetcher(ctx))

            async def call() -> None:
                with pytest.raises(TokenUnavailable) as caught:
                    await cache.bearer(REF)
                reasons.append(str(caught.value))

            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:
                    for _ in range(5):
                        tg.start_soon(call)
        assert reasons == ["token refused: invalid_client (Client authentication failed)"] * 5
        assert len(endpoint.requests) == 1

    async def test_cancelled_fetch_lets_the_next_caller_fetch(self, ctx: ProbeContext) -> None:
        """A caller whose deadline cuts its fetch short does not leave the others waiting or failing."""
        async with token_endpoint(lambda n: Reply(hang=True) if n == 1 else issue()(n)) as endpoint:
            cache = TokenCache({REF: spec_for(endpoint.url)}, oauth2.token_fetcher(ctx))
            with anyio.move_on_after(0.3):
                await cache.bearer(REF)
            with anyio.fail_after(5):
                assert await cache.bearer(REF) == "token-2"

    async def test_ref_for_maps_specs_to_refs(self) -> None:
        """ref_for finds a spec by identity or by value, and None for a foreign spec."""
        spec = spec_for("https://sso.example/token")
        cache = TokenCache({REF: spec}, oauth2.token_fetcher(ProbeContext()))
        assert cache.ref_for(spec) == REF
        assert cache.ref_for(spec.model_copy()) == REF
        assert cache.ref_for(spec_for("https://other.example/token")) is None

    async def test_unknown_ref_is_unavailable(self) -> None:
        """A ref that names no oauth2 probe raises TokenUnavailable naming it."""
        cache = TokenCache({}, oauth2.token_fetcher(ProbeContext()))
        with pytest.raises(TokenUnavailable, match="no oauth2 probe ssoe-oauth/token"):
            await cache.bearer(REF)


@pytest.mark.anyio
class TestSecrecy:
    """Neither the client secret nor a token appears in details, reprs or logs."""

    async def test_secret_and_token_never_leak(self, ctx: ProbeContext) -> None:
        """Details, the cache's repr and captured log events carry neither the secret nor the token."""
        echo = {"error": "invalid_client", "error_description": f"bad secret {SECRET} for {CLIENT_ID}"}
        issued = json.dumps({"access_token": "tok-SENSITIVE-123", "expires_in": 3600}).encode()

        def reply(n: int) -> Reply:
            return Reply(200, issued) if n % 2 else Reply(401, json.dumps(echo).encode())

        results: list[ProbeResult] = []
        async with token_endpoint(reply) as endpoint:
            spec = spec_for(endpoint.url)
            ctx.tokens = TokenCache({REF: spec}, oauth2.token_fetcher(ctx), refresh_margin=3600)
            with capture_logs() as logs:
                results.append(await run(spec, ctx))  # issued (request 1)
                with pytest.raises(TokenUnavailable) as refused:
                    await ctx.tokens.bearer(REF)  # stale at once (margin = lifetime): refused (request 2)
                results.append(await run(spec, ctx))  # issued (request 3)
                results.append(await run(spec, ctx))  # refused, secret echoed (request 4)
        assert [r.outcome for r in results] == [Outcome.OK, Outcome.OK, Outcome.AUTH]
        assert results[2].detail == "token refused: invalid_client (bad secret *** for ***)"
        texts = [
            *(r.detail for r in results),
            *(repr(r) for r in results),
            str(refused.value),
            repr(ctx.tokens),
            repr(Grant("tok-SENSITIVE-123", 60)),
            repr(logs),
        ]
        for text in texts:
            assert SECRET not in text
            assert "tok-SENSITIVE-123" not in text
        assert any(event["event"] == "token_unavailable" for event in logs)
