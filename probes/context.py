"""What every probe receives besides its spec: shared clients, the token cache and limits.

Built once per daemon (and again on a config reload), never per probe run: creating an SSL
context costs ~20 ms of CPU in certificate loading, so contexts and HTTP clients are cached
by the TLS options that make them differ (CA bundle, client certificate, proxy).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import TYPE_CHECKING

import httpx

from probes._aiohttp_transport import AiohttpTransport

if TYPE_CHECKING:
    from probes.tokens import TokenCache

MAX_BODY_BYTES = 1024 * 1024  # a health body larger than this is a failure, not a memory problem
MAX_REDIRECTS = 5


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """The settings that make one SSL context (and so one HTTP client) differ from another."""

    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None


class _NoCookies(httpx.Cookies):
    """A cookie store that keeps nothing, at no cost: a probe's answer must not depend on another's."""

    def extract_cookies(self, response: httpx.Response) -> None:
        """Keep none of the answer's cookies."""


@dataclass
class ProbeContext:
    """Shared, long-lived collaborators of the probes. Close it with `aclose()`.

    `max_connections` bounds the sockets of each HTTP client; it follows the scheduler's
    `max_concurrent_probes` so a probe never waits for a connection slot inside its deadline.
    Connections are kept alive for `keepalive_expiry` seconds: probes of the same host reuse
    them, which keeps the CPU cost per probe low; the tls probe does its own fresh handshake,
    so certificate checks are not hidden by a reused connection.
    """

    tokens: TokenCache | None = None
    max_connections: int = 200
    keepalive_expiry: float = 30.0
    # httpcore scans its whole pool for every queued request (quadratic when hundreds of
    # connections idle): keep few idle connections; the ~100 upstream hosts of a real config
    # each need one or two.
    max_keepalive_connections: int = 32
    max_body_bytes: int = MAX_BODY_BYTES
    max_redirects: int = MAX_REDIRECTS
    clock: Callable[[], float] = time.time
    user_agent: str = "depmon"
    # A metrics backend's origin -> the UNIX time before which it must not be asked again (its
    # rate limit, SPEC 11.3): shared by every signal probe of that backend.
    signal_not_before: dict[str, float] = field(default_factory=dict)
    _ssl: dict[TlsOptions, ssl.SSLContext] = field(default_factory=dict, repr=False)
    _clients: dict[tuple[TlsOptions, str | None], httpx.AsyncClient] = field(default_factory=dict, repr=False)

    def ssl_context(self, options: TlsOptions = TlsOptions()) -> ssl.SSLContext:
        """The SSL context for these options, created once (system store unless `ca_file`)."""
        context = self._ssl.get(options)
        if context is None:
            context = ssl.create_default_context(cafile=options.ca_file)
            if options.client_cert:
                context.load_cert_chain(options.client_cert, options.client_key)
            self._ssl[options] = context
        return context

    def http_client(self, options: TlsOptions = TlsOptions(), proxy: str | None = None) -> httpx.AsyncClient:
        """The shared HTTP client for these TLS options and proxy, created once.

        No client-side timeout: the caller of the probe owns the deadline (a cancel scope), so
        a slow drip past the deadline is cut off the same way as a server that never answers.
        `trust_env=False`: proxies come from the config, not from whatever the shell exported.
        Redirects are not followed here: the probes follow them hop by hop, checking each
        (`probes._redirects`). `Accept-Encoding: identity`: a body is read raw and inflated
        within the body cap (`probes._body`) only when a server compresses anyway.
        """
        key = (options, proxy)
        client = self._clients.get(key)
        if client is None:
            client = httpx.AsyncClient(
                verify=self.ssl_context(options),
                proxy=proxy,
                timeout=httpx.Timeout(None),
                follow_redirects=False,
                limits=httpx.Limits(
                    max_connections=self.max_connections,
                    max_keepalive_connections=self.max_keepalive_connections,
                    keepalive_expiry=self.keepalive_expiry,
                ),
                headers={"User-Agent": self.user_agent, "Accept-Encoding": "identity"},
                # One client serves every probe of these options: a cookie one upstream sets must
                # not reach, or change the answer of, another probe.
                cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
                trust_env=False,
                # Proxied clients keep httpx's own proxy transport (httpcore): CONNECT as before.
                transport=None
                if proxy
                else AiohttpTransport(self.ssl_context(options), self.max_connections, self.keepalive_expiry),
            )
            # The jar above accepts no cookie, yet httpx builds urllib stand-ins of the request
            # and the answer for it after every response: 7% of depmon's CPU at 500 probes/s
            # (py-spy). Its client has no public way to skip that; this replaces its jar holder (the
            # jar above still keeps nothing should a later httpx name that attribute otherwise).
            client._cookies = _NoCookies()
            self._clients[key] = client
        return client

    async def aclose(self) -> None:
        """Close every HTTP client."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()
