"""Redirect decisions of the http and oauth2 probes as tables: pure functions, and probes on respx.

respx answers in place of the network, so chains can cross real-looking hosts (login pages,
cloud metadata addresses) without DNS and without a socket; a request to a host no route
names fails the test (respx's `assert_all_mocked`).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from monitor.config import HttpProbeSpec, OAuth2ProbeSpec, load_config
from monitor.errors import TokenUnavailable
from monitor.results import Outcome, ProbeResult
from probes import _redirects, http, oauth2
from probes._redirects import Hop, Refusal, next_hop, refused_target, resolved_refusal, same_origin, show_url
from probes.context import ProbeContext

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "config" / "valid"
API = "https://api.example/health"
CREDENTIALS = {"X-Api-Key": "k-1"}


class _Tokens:
    async def bearer(self, ref: str) -> str:
        if ref != "auth/token":
            raise TokenUnavailable("unknown")
        return "t0k3n"

    def invalidate(self, ref: str) -> None:
        pass


async def _probe(**fields: Any) -> ProbeResult:
    ctx = ProbeContext(tokens=_Tokens())  # type: ignore[arg-type]
    try:
        return await http.probe(HttpProbeSpec.model_validate({"name": "health", "url": API, **fields}), ctx)
    finally:
        await ctx.aclose()


def _redirect(location: str, status: int = 302) -> httpx.Response:
    return httpx.Response(status, headers={"Location": location})


class TestFollowRedirectsDefault:
    @pytest.mark.parametrize(
        ("fields", "follows"),
        [
            ({}, True),
            ({"headers": CREDENTIALS}, False),
            ({"bearer_from": "auth/token"}, False),
            ({"headers": CREDENTIALS, "follow_redirects": True}, True),
            ({"follow_redirects": False}, False),
        ],
    )
    def test_default_follows_only_without_credentials(self, fields: dict[str, Any], follows: bool) -> None:
        """`follow_redirects` defaults to false when headers or a bearer token are sent, true otherwise."""
        spec = HttpProbeSpec.model_validate({"name": "health", "url": API, **fields})
        assert spec.follows_redirects is follows

    def test_fixture_loads_with_the_key(self) -> None:
        """The valid fixture's probes get the redirect behaviour their keys and credentials imply."""
        config = load_config(FIXTURES / "follow_redirects.yaml", environ={})
        follows = {probe.name: probe.follows_redirects for _, probe in config.iter_probes()}
        assert follows == {"open": True, "keyed": False, "keyed-follows": True, "opted-out": False}


class TestNextHop:
    @pytest.mark.parametrize(
        ("current", "target", "reason"),
        [
            ("https://a.example/", "https://b.example/x", None),
            ("http://a.example/", "https://a.example/", None),
            ("https://a.example/", "http://a.example/", "a downgrade from https to http"),
            ("http://a.example/", "http://169.254.169.254/latest/meta-data/", "a link-local address"),
            ("http://a.example/", "http://[fe80::1]/", "a link-local address"),
            ("http://a.example/", "http://[::ffff:169.254.169.254]/", "a link-local address"),
            ("http://a.example/", "http://METADATA.google.internal./", "a cloud metadata service"),
            ("http://a.example/", "http://metadata/computeMetadata/v1/", "a cloud metadata service"),
            ("http://a.example/", "http://100.100.100.200/", "a cloud metadata service"),
            ("http://a.example/", "http://[fd00:ec2::254]/", "a cloud metadata service"),
            ("http://a.example/", "ftp://a.example/", "scheme 'ftp' is not http or https"),
            ("http://a.example/", "http://10.0.0.5/", None),
        ],
    )
    def test_refused_targets(self, current: str, target: str, reason: str | None) -> None:
        """Downgrades, link-local and metadata targets and foreign schemes are refused; others are not."""
        assert refused_target(httpx.URL(current), httpx.URL(target)) == reason

    @pytest.mark.parametrize(
        ("status", "method", "expected"),
        [
            (301, "POST", "GET"),
            (302, "POST", "GET"),
            (303, "POST", "GET"),
            (303, "HEAD", "HEAD"),
            (307, "POST", "POST"),
        ],
    )
    def test_method_after_redirect(self, status: int, method: str, expected: str) -> None:
        """303 turns a request into a GET (HEAD stays), 301/302 turn a POST into a GET, 307 keeps it."""
        hop = next_hop(httpx.URL(API), method, status, httpx.URL(API + "/v2"), {})
        assert isinstance(hop, Hop)
        assert hop.method == expected

    @pytest.mark.parametrize(
        ("target", "kept"),
        [
            ("https://api.example/v2", True),
            ("https://api.example:443/v2", True),
            ("https://api.example:8443/v2", False),
            ("https://login.example/", False),
            ("https://API.example/v2", True),
        ],
    )
    def test_headers_kept_only_on_the_origin(self, target: str, kept: bool) -> None:
        """Headers survive a hop only when scheme, host and port stay the same."""
        hop = next_hop(httpx.URL(API), "GET", 302, httpx.URL(target), CREDENTIALS)
        assert isinstance(hop, Hop)
        assert (hop.headers == CREDENTIALS) is kept
        assert same_origin(httpx.URL(API), httpx.URL(target)) is kept

    def test_refusal_names_target_without_secrets(self) -> None:
        """A refusal shows the target's scheme, host, port and path, never credentials or query."""
        hop = next_hop(httpx.URL(API), "GET", 301, httpx.URL("http://u:pw@api.example:8080/p?key=SECRET"), {})
        assert hop == Refusal("HTTP 301 redirect to http://api.example:8080/p refused (a downgrade from https to http)")

    def test_show_url_cuts_long_paths(self) -> None:
        """A very long target path is cut, so a detail stays one readable line."""
        shown = show_url(httpx.URL("https://a.example/" + "x" * 500))
        assert len(shown) == 120
        assert shown.endswith("…")


ADDRESSES = {"rebind.example": "169.254.169.254", "rebind6.example": "fe80::1", "internal.example": "10.0.0.5"}


async def _resolve(host: str, port: int, **kwargs: Any) -> list[tuple[Any, ...]]:
    """Made-up names for made-up addresses; other names resolve to a documentation address."""
    if host == "nowhere.example":
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    address = ADDRESSES.get(host, "192.0.2.10")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return [(family, socket.SOCK_STREAM, 6, "", (address, port))]


@pytest.fixture(autouse=True)
def _no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test here asks a real resolver: the redirect check resolves names through `_resolve`."""
    monkeypatch.setattr(_redirects, "_getaddrinfo", _resolve)


class TestResolvedRefusal:
    @pytest.mark.anyio
    @pytest.mark.parametrize(
        ("url", "detail"),
        [
            (
                "http://rebind.example/x",
                "HTTP 302 redirect to http://rebind.example/x refused"
                " (a link-local address: rebind.example resolves to 169.254.169.254)",
            ),
            (
                "https://rebind6.example/",
                "HTTP 302 redirect to https://rebind6.example/ refused"
                " (a link-local address: rebind6.example resolves to fe80::1)",
            ),
            ("https://internal.example/", None),
            ("https://nowhere.example/", None),
            ("https://10.0.0.5/", None),
        ],
    )
    async def test_names_resolving_to_link_local_are_refused(self, url: str, detail: str | None) -> None:
        """A redirect to a name that resolves to a link-local address is refused; other names and failures pass."""
        refusal = await resolved_refusal(302, Hop(httpx.URL(url), "GET", {}))
        assert (refusal.detail if refusal else None) == detail


class TestProbeOnRespx:
    @pytest.mark.anyio
    @pytest.mark.parametrize(
        ("fields", "detail"),
        [
            ({}, "HTTP 200 from https://login.example/sso"),
            (
                {"headers": CREDENTIALS},
                "HTTP 302 redirect to https://login.example/sso not followed (follow_redirects is off)",
            ),
            (
                {"bearer_from": "auth/token"},
                "HTTP 302 redirect to https://login.example/sso not followed (follow_redirects is off)",
            ),
            ({"headers": CREDENTIALS, "follow_redirects": True}, "HTTP 200 from https://login.example/sso"),
        ],
    )
    async def test_login_redirect(self, fields: dict[str, Any], detail: str) -> None:
        """A redirect to a login page is followed only without credentials, and the detail names the host."""
        with respx.mock(assert_all_called=False, using="httpx") as router:
            router.get(API).mock(return_value=_redirect("https://login.example/sso?state=SECRET"))
            login = router.get("https://login.example/sso").mock(return_value=httpx.Response(200))
            result = await _probe(**fields)
        assert result.detail == detail
        sent = [call.request.headers for call in login.calls]
        assert all("x-api-key" not in h and "authorization" not in h for h in sent)

    @pytest.mark.anyio
    @pytest.mark.parametrize(
        "location",
        [
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://[fe80::a9fe:a9fe]/",
        ],
    )
    async def test_metadata_targets_are_never_contacted(self, location: str) -> None:
        """A redirect to a metadata or link-local address fails without any request going there."""
        with respx.mock(using="httpx") as router:
            router.get(API).mock(return_value=_redirect(location))
            result = await _probe()
        assert (result.outcome, result.security_relevant) == (Outcome.HTTP_STATUS, True)
        assert result.detail.startswith("HTTP 302 redirect to http://")
        assert result.detail.endswith(("(a link-local address)", "(a cloud metadata service)"))

    @pytest.mark.anyio
    async def test_name_pointing_at_metadata_is_never_contacted(self) -> None:
        """A redirect to a host name that resolves to the metadata address fails without a request to it."""
        with respx.mock(using="httpx") as router:
            router.get(API).mock(return_value=_redirect("https://rebind.example/latest/meta-data/"))
            result = await _probe()
        assert (result.outcome, result.security_relevant) == (Outcome.HTTP_STATUS, True)
        assert result.detail.endswith("(a link-local address: rebind.example resolves to 169.254.169.254)")

    @pytest.mark.anyio
    async def test_redirect_limit(self) -> None:
        """A chain longer than the context's limit fails as a redirect loop after limit + 1 requests."""
        with respx.mock(using="httpx") as router:
            route = router.get(url__startswith="https://api.example/").mock(
                side_effect=lambda request: _redirect(str(request.url) + "x")
            )
            result = await _probe()
        assert result.detail == "redirect loop: more than 5 redirects from /health"
        assert route.call_count == 6

    @pytest.mark.anyio
    async def test_invalid_location_when_following(self) -> None:
        """A Location that is not a URL fails readably when the probe follows redirects."""
        with respx.mock(using="httpx") as router:
            router.get(API).mock(return_value=_redirect("http://[::1"))
            result = await _probe()
        assert (result.outcome, result.detail) == (Outcome.ERROR, "invalid redirect Location from /health")

    @pytest.mark.anyio
    async def test_token_endpoint_redirect_is_not_followed(self) -> None:
        """A token endpoint's redirect fails the oauth2 probe, naming where it pointed, and is not taken."""
        spec = OAuth2ProbeSpec.model_validate(
            {
                "name": "t",
                "kind": "oauth2",
                "token_url": "https://idp.example/token",
                "client_id": "c",
                "client_secret": "s",
            }
        )
        with respx.mock(assert_all_called=False, using="httpx") as router:
            router.post("https://idp.example/token").mock(return_value=_redirect("https://other.example/token", 307))
            other = router.post("https://other.example/token").mock(return_value=httpx.Response(200))
            ctx = ProbeContext()
            try:
                result = await oauth2.probe(spec, ctx)
            finally:
                await ctx.aclose()
        assert (result.outcome, result.detail) == (
            Outcome.HTTP_STATUS,
            "HTTP 307 redirect to https://other.example/token not followed (a token request is never redirected)",
        )
        assert not other.called
