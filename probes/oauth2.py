"""The oauth2 probe: a client-credentials grant (RFC 6749 section 4.4); success is a token issued.

The request is `POST token_url` with the form `grant_type=client_credentials[&scope=...]` and the
client id and secret in HTTP Basic authentication, each form-urlencoded first as RFC 6749
section 2.3.1 requires. Basic is the method every authorization server must support; servers
that only read `client_id`/`client_secret` from the body (allowed, "NOT RECOMMENDED" by the RFC)
answer `invalid_client`, which this probe reports as such. Identifiers and secrets made of
letters, digits and `-._~` encode to themselves, so the urlencoding only matters for others.

Each issued token is stored in the context's `TokenCache` under the probe's ref, for the http
probes that name it in `bearer_from`; `token_fetcher` makes the same grant for the cache when
it needs a token between two probe runs.

The grant carries the client's credentials, so a redirect from the token endpoint is never
followed: it fails, saying where it pointed. The answer is read within `ctx.max_body_bytes`,
after decompression too (`probes._body`).

Neither the client secret nor the token ever reaches a detail, a log event or an exception
message; text the server sends back (`error_description`) is cut short and scrubbed of both
client credentials before it is shown.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote_plus

import httpx

from monitor.config import OAuth2ProbeSpec
from monitor.errors import TokenUnavailable
from monitor.results import Outcome, ProbeResult
from probes._body import one_line, parse_json, read_body, streamed
from probes._http_errors import describe_http_error
from probes._redirects import not_followed_detail, redirect_location
from probes.context import ProbeContext, TlsOptions
from probes.tls import describe_certificate_failure, find_verification_error
from probes.tokens import Grant, TokenFetcher

DEFAULT_EXPIRES_IN = 300.0  # RFC 6749 5.1 makes expires_in optional; assume a short lifetime
_REFUSED_STATUSES = frozenset({400, 401, 403})  # RFC 6749 5.2: the server's "no" to this client
_MAX_ERROR_CODE = 64  # characters of the server's `error` shown in a detail
_MAX_ERROR_DESCRIPTION = 200  # ... and of its `error_description`

__all__ = ["DEFAULT_EXPIRES_IN", "probe", "token_fetcher"]


async def probe(spec: OAuth2ProbeSpec, ctx: ProbeContext) -> ProbeResult:
    """Ask for a token; store it in `ctx.tokens` under this probe's ref when one is issued."""
    grant = await _request_grant(spec, ctx)
    if isinstance(grant, ProbeResult):
        return grant
    if ctx.tokens is not None and (ref := ctx.tokens.ref_for(spec)) is not None:
        ctx.tokens.store(ref, grant.access_token, grant.expires_in)
    return ProbeResult.success(
        f"token issued, expires in {grant.expires_in:.0f}s", facts={"expires_in": f"{grant.expires_in:.0f}"}
    )


def token_fetcher(ctx: ProbeContext) -> TokenFetcher:
    """The fetch function of a `TokenCache`: the probe's grant, TokenUnavailable when refused.

    It uses the context's shared HTTP clients; the cache itself never sees the context::

        ctx = ProbeContext()
        ctx.tokens = TokenCache.from_config(config, token_fetcher(ctx))
    """

    async def fetch(spec: OAuth2ProbeSpec) -> Grant:
        grant = await _request_grant(spec, ctx)
        if isinstance(grant, ProbeResult):
            raise TokenUnavailable(grant.detail)
        return grant

    return fetch


async def _request_grant(spec: OAuth2ProbeSpec, ctx: ProbeContext) -> Grant | ProbeResult:
    """One client-credentials grant: the token, or a failed result saying why there is none."""
    try:
        url = httpx.URL(spec.token_url)
    except httpx.InvalidURL:
        return ProbeResult.failure(Outcome.ERROR, "token_url is not a valid URL")
    client = ctx.http_client(TlsOptions(spec.ca_file, spec.client_cert, spec.client_key), spec.proxy)
    form = {"grant_type": "client_credentials"}
    if spec.scope:
        form["scope"] = spec.scope
    headers = {"Authorization": _basic_credentials(spec), "Accept": "application/json"}
    try:
        async with streamed(client, "POST", url, data=form, headers=headers) as response:
            try:
                location = redirect_location(response)
            except httpx.RemoteProtocolError:
                location = None  # a redirect is a failure anyway; its status says enough
            body = None if location is not None else await read_body(response, ctx.max_body_bytes)
            status, path = response.status_code, response.url.path
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return await _transport_failure(exc, url, spec, ctx)
    if location is not None:
        # The grant carries the client's credentials: a redirect is never followed.
        detail = not_followed_detail(status, location, "a token request is never redirected")
        return ProbeResult.failure(Outcome.HTTP_STATUS, detail)
    if body is None:
        return ProbeResult.failure(Outcome.AUTH, f"token response larger than {ctx.max_body_bytes} bytes")
    if status in _REFUSED_STATUSES:
        refusal = _refusal(_json_object(body), spec)
        return ProbeResult.failure(Outcome.AUTH, refusal or f"token refused: HTTP {status} from {path}")
    if not 200 <= status < 300:
        return ProbeResult.failure(Outcome.HTTP_STATUS, f"HTTP {status} from {path}")
    document = _json_object(body)
    if document is None:
        return ProbeResult.failure(Outcome.AUTH, "invalid JSON from the token endpoint")
    token = document.get("access_token")
    if not isinstance(token, str) or not token:
        # Some servers answer 200 with an error object.
        return ProbeResult.failure(Outcome.AUTH, _refusal(document, spec) or "no access_token in the token response")
    return Grant(token, _expires_in(document.get("expires_in")))


async def _transport_failure(
    exc: httpx.HTTPError | httpx.InvalidURL, url: httpx.URL, spec: OAuth2ProbeSpec, ctx: ProbeContext
) -> ProbeResult:
    verification = find_verification_error(exc)
    if verification is not None and spec.proxy is None:
        # The token endpoint's certificate, with its dates and names, as the tls probe words it.
        # Behind a proxy the endpoint cannot be reached directly to read it.
        port = url.port or (443 if url.scheme == "https" else 80)
        return (await describe_certificate_failure(url.host, port, verification, ctx)).result()
    outcome, detail, security = describe_http_error(exc, url, proxy=spec.proxy, max_redirects=ctx.max_redirects)
    return ProbeResult.failure(outcome, detail, security_relevant=security)


def _basic_credentials(spec: OAuth2ProbeSpec) -> str:
    """`Basic base64(urlencode(id):urlencode(secret))`, RFC 6749 section 2.3.1."""
    client_id = quote_plus(spec.client_id.get_secret_value(), safe="")
    secret = quote_plus(spec.client_secret.get_secret_value(), safe="")
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode("ascii")


def _json_object(body: bytes) -> dict[str, Any] | None:
    document, _ = parse_json(body)
    return document if isinstance(document, dict) else None


def _refusal(document: dict[str, Any] | None, spec: OAuth2ProbeSpec) -> str | None:
    """`token refused: invalid_client (Client authentication failed)` from an RFC 6749 5.2 error body."""
    if document is None or not isinstance(document.get("error"), str):
        return None
    error = _server_text(document["error"], _MAX_ERROR_CODE, spec)
    if not error:  # `"error": ""` names no refusal: the caller's own words say more
        return None
    description = document.get("error_description")
    if isinstance(description, str) and description.strip():
        return f"token refused: {error} ({_server_text(description, _MAX_ERROR_DESCRIPTION, spec)})"
    return f"token refused: {error}"


def _server_text(text: str, limit: int, spec: OAuth2ProbeSpec) -> str:
    """Text from the server on one line, cut to `limit`, with the client's credentials masked."""
    text = " ".join(text.split())
    for secret in (spec.client_secret.get_secret_value(), spec.client_id.get_secret_value()):
        if secret:
            text = text.replace(secret, "***")
    return one_line(text, limit)


def _expires_in(value: object) -> float:
    """`expires_in` as seconds: a number or a numeric string (both are seen), else the default."""
    if isinstance(value, bool):
        return DEFAULT_EXPIRES_IN
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return DEFAULT_EXPIRES_IN
    if isinstance(value, int | float) and 0 < value < float("inf"):
        return float(value)
    return DEFAULT_EXPIRES_IN
