"""Redirects of the http probe between real servers on 127.0.0.1 (two ports are two origins)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from monitor.results import Outcome
from tests.probes.http_loopback import (
    FakeTokens,
    RawHttpServer,
    http_spec,
    probe_context,
    redirect,
    reply,
    routes,
    run,
    server_tls,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

API_KEY = {"X-Api-Key": "k-123", "apikey": "k-456"}


class TestNotFollowed:
    """Probes that send credentials stop at a redirect by default, and say where it pointed."""

    async def test_configured_headers_stop_at_the_redirect(self) -> None:
        """A probe with headers reports a 302 to another origin as not followed, and that origin gets nothing."""
        async with RawHttpServer(reply(200)) as login, RawHttpServer(redirect("/")) as api, probe_context() as ctx:
            api.handler = redirect(login.url("/login?next=x"))
            result = await run(http_spec(api.url("/health"), headers=API_KEY), ctx)
        assert (result.ok, result.outcome) == (False, Outcome.HTTP_STATUS)
        assert result.detail == (
            f"HTTP 302 redirect to http://127.0.0.1:{login.port}/login not followed (follow_redirects is off)"
        )
        assert login.requests == []

    async def test_bearer_probe_stops_at_the_redirect(self) -> None:
        """A probe with a bearer token stops at a same-origin redirect too, without sending the token on."""
        handler = routes({"/profile": redirect("/elsewhere"), "/elsewhere": reply(200)})
        async with RawHttpServer(handler) as server, probe_context(tokens=FakeTokens("t0k3n")) as ctx:
            result = await run(http_spec(server.url("/profile"), bearer_from="ssoe-oauth/token"), ctx)
        assert result.detail == (
            f"HTTP 302 redirect to http://127.0.0.1:{server.port}/elsewhere not followed (follow_redirects is off)"
        )
        assert [r.target for r in server.requests] == ["/profile"]

    async def test_expected_redirect_status_is_ok(self) -> None:
        """A 302 that `expect.status` lists is a success naming the path that answered."""
        async with RawHttpServer(redirect("https://login.example/")) as server, probe_context() as ctx:
            spec = http_spec(server.url("/health"), headers=API_KEY, expect={"status": [302]})
            result = await run(spec, ctx)
        assert (result.ok, result.detail) == (True, "HTTP 302 from /health")

    async def test_unexpected_redirect_names_the_expected_statuses(self) -> None:
        """A 301 when 200 is expected names the target and the expected status, never the query."""
        target = "https://login.example/sso?token=SECRET"
        async with RawHttpServer(redirect(target, 301)) as server, probe_context() as ctx:
            spec = http_spec(server.url("/health"), follow_redirects=False, expect={"status": [200]})
            result = await run(spec, ctx)
        assert result.detail == (
            "HTTP 301 redirect to https://login.example/sso not followed (follow_redirects is off, expected 200)"
        )


class TestFollowed:
    """Followed redirects: headers stay on their origin, and the detail says where the answer came from."""

    async def test_headers_are_dropped_on_an_origin_change(self) -> None:
        """With follow_redirects on, no configured header and no bearer token reaches another origin."""
        async with (
            RawHttpServer(reply(200)) as other,
            RawHttpServer(redirect(other.url("/landing"))) as api,
            probe_context(tokens=FakeTokens("t0k3n")) as ctx,
        ):
            spec = http_spec(api.url("/health"), headers=API_KEY, bearer_from="x/y", follow_redirects=True)
            result = await run(spec, ctx)
        assert (result.ok, result.detail) == (True, f"HTTP 200 from http://127.0.0.1:{other.port}/landing")
        assert {"x-api-key", "apikey", "authorization"} <= api.requests[0].headers.keys()
        (landed,) = other.requests
        assert not {"x-api-key", "apikey", "authorization"} & landed.headers.keys()

    async def test_headers_stay_dropped_when_the_chain_comes_back(self) -> None:
        """A chain A -> B -> A reaches A the second time without the headers it dropped at B."""
        async with RawHttpServer(reply(200)) as b, RawHttpServer(reply(200)) as a, probe_context() as ctx:
            a.handler = routes({"/health": redirect(b.url("/bounce")), "/back": reply(200)})
            b.handler = redirect(a.url("/back"))
            result = await run(http_spec(a.url("/health"), headers=API_KEY, follow_redirects=True), ctx)
        assert (result.ok, result.detail) == (True, "HTTP 200 from /back")
        assert [("x-api-key" in r.headers) for r in a.requests] == [True, False]

    async def test_same_origin_keeps_the_headers(self) -> None:
        """A redirect within the origin keeps the configured headers."""
        handler = routes({"/health": redirect("/v2/health"), "/v2/health": reply(200)})
        async with RawHttpServer(handler) as server, probe_context() as ctx:
            result = await run(http_spec(server.url("/health"), headers=API_KEY, follow_redirects=True), ctx)
        assert (result.ok, result.detail) == (True, "HTTP 200 from /v2/health")
        assert [r.headers.get("x-api-key") for r in server.requests] == ["k-123", "k-123"]

    async def test_https_to_http_is_refused(self, tmp_path: Path) -> None:
        """A redirect from https to http is a security-relevant failure, and the http server gets nothing."""
        ca = trustme.CA()
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        async with (
            RawHttpServer(reply(200)) as plain,
            RawHttpServer(redirect(plain.url("/health")), tls=server_tls(ca, "127.0.0.1")) as secure,
            probe_context() as ctx,
        ):
            result = await run(http_spec(secure.url("/health"), ca_file=str(ca_file)), ctx)
        assert (result.ok, result.outcome, result.security_relevant) == (False, Outcome.HTTP_STATUS, True)
        assert result.detail == (
            f"HTTP 302 redirect to http://127.0.0.1:{plain.port}/health refused (a downgrade from https to http)"
        )
        assert plain.requests == []
