"""Bearer tokens from the oauth2 probes, for the http probes that name one in `bearer_from`.

A token is known by the ref of the oauth2 probe that obtains it, `<dependency id>/<probe name>`
(`ssoe-oauth/token`), the same string `bearer_from` holds. The oauth2 probe stores each token it
is issued (it only has its spec, so `ref_for(spec)` gives the ref); an http probe asks
`bearer(ref)`, which serves the stored token until shortly before it expires and otherwise
fetches a new one, once for all concurrent callers. Tokens are held in memory only, never
logged, never shown by `repr`.

The cache does not know HTTP: it is given a fetch function (`probes.oauth2.token_fetcher`
builds the real one), so it is tested with a fake fetch and a fake clock.

Exceptions::

    TokenUnavailable    no valid token could be had; str() is a readable, secret-free reason
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import structlog

from monitor.config import OAuth2ProbeSpec
from monitor.errors import TokenUnavailable

if TYPE_CHECKING:
    from monitor.config import Config

log = structlog.get_logger("depmon.tokens")

MAX_REFRESH_MARGIN = 60.0  # renew at most this long before expiry ...
REFRESH_FRACTION = 0.1  # ... or this share of the token's lifetime, whichever is smaller


@dataclass(frozen=True, slots=True)
class Grant:
    """A token an authorization server issued, and its lifetime in seconds."""

    access_token: str = field(repr=False)
    expires_in: float


TokenFetcher = Callable[[OAuth2ProbeSpec], Awaitable[Grant]]
"""Obtains a grant for a spec; raises TokenUnavailable (and nothing else) when it is refused."""


@dataclass(slots=True)
class _Token:
    value: str = field(repr=False)
    refresh_at: float  # on the cache's clock


class TokenCache:
    """Tokens of the configured oauth2 probes, by ref, renewed before they expire.

    `specs` maps each ref to its oauth2 probe spec. `clock` measures token lifetimes (monotonic
    seconds by default: wall-clock jumps must not expire or extend a token). `refresh_margin`
    fixes how long before expiry a token is renewed; by default 60 s or 10% of its lifetime,
    whichever is smaller. `on_secret`, when given, is called with every token the cache obtains
    or is given, so the log redactor knows it before anything could log it.
    """

    def __init__(
        self,
        specs: Mapping[str, OAuth2ProbeSpec],
        fetch: TokenFetcher,
        clock: Callable[[], float] = time.monotonic,
        refresh_margin: float | None = None,
        on_secret: Callable[[str], None] | None = None,
    ) -> None:
        self._specs = dict(specs)
        self._on_secret = on_secret  # told every token obtained (the log redactor's `add`)
        self._refs_by_identity = {id(spec): ref for ref, spec in self._specs.items()}
        self._fetch = fetch
        self._clock = clock
        self._refresh_margin = refresh_margin
        self._tokens: dict[str, _Token] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self._attempts: dict[str, int] = {}  # fetches finished, per ref
        self._failures: dict[str, tuple[int, str]] = {}  # the last failed fetch: (attempt, reason)

    @classmethod
    def from_config(
        cls,
        config: Config,
        fetch: TokenFetcher,
        clock: Callable[[], float] = time.monotonic,
        refresh_margin: float | None = None,
        on_secret: Callable[[str], None] | None = None,
    ) -> TokenCache:
        """A cache for every oauth2 probe of `config`, by `<dependency id>/<probe name>`."""
        specs = {
            f"{dep_id}/{spec.name}": spec for dep_id, spec in config.iter_probes() if isinstance(spec, OAuth2ProbeSpec)
        }
        return cls(specs, fetch, clock, refresh_margin, on_secret)

    def __repr__(self) -> str:
        return f"TokenCache(refs={sorted(self._specs)!r}, cached={sorted(self._tokens)!r})"

    @property
    def refs(self) -> list[str]:
        """The refs this cache serves."""
        return list(self._specs)

    def ref_for(self, spec: OAuth2ProbeSpec) -> str | None:
        """The ref of an oauth2 probe spec of this cache's config, None for a foreign spec.

        By identity first: the scheduler runs the very spec objects the cache was built from.
        Then by value, for a copy of one; two equal specs make the same grant, so either ref
        is a right home for its token.
        """
        ref = self._refs_by_identity.get(id(spec))
        if ref is not None:
            return ref
        return next((ref for ref, known in self._specs.items() if known == spec), None)

    def store(self, ref: str, token: str, expires_in: float) -> None:
        """Keep a token for `ref` that was issued just now and expires in `expires_in` seconds."""
        if ref not in self._specs:
            raise KeyError(f"no oauth2 probe {ref!r} in this token cache")
        if self._on_secret is not None:  # before anything could log it
            self._on_secret(token)
        margin = self._refresh_margin
        if margin is None:
            margin = min(MAX_REFRESH_MARGIN, REFRESH_FRACTION * expires_in)
        self._tokens[ref] = _Token(token, self._clock() + expires_in - margin)

    def invalidate(self, ref: str) -> None:
        """Forget the token of `ref`, e.g. after an upstream answered 401 to it."""
        self._tokens.pop(ref, None)

    async def bearer(self, ref: str) -> str:
        """A valid token for `ref`: the stored one, else a new grant shared by concurrent callers.

        Raises TokenUnavailable when the grant fails; callers that waited for that same fetch
        get the same reason instead of asking the token endpoint again.
        """
        spec = self._specs.get(ref)
        if spec is None:
            raise TokenUnavailable(f"no oauth2 probe {ref}")
        token = self._valid(ref)
        if token is not None:
            return token
        seen = self._attempts.get(ref, 0)
        lock = self._locks.get(ref)
        if lock is None:
            lock = self._locks[ref] = anyio.Lock()
        async with lock:
            token = self._valid(ref)
            if token is not None:
                return token
            attempt, reason = self._failures.get(ref, (0, ""))
            if attempt > seen:
                raise TokenUnavailable(reason)
            try:
                grant = await self._fetch(spec)
            except TokenUnavailable as exc:
                attempt = self._attempts[ref] = self._attempts.get(ref, 0) + 1
                self._failures[ref] = (attempt, str(exc))
                log.info("token_unavailable", ref=ref, reason=str(exc))
                raise
            self._attempts[ref] = self._attempts.get(ref, 0) + 1
            self.store(ref, grant.access_token, grant.expires_in)
            log.debug("token_fetched", ref=ref, expires_in=grant.expires_in)
            # Served even when its lifetime is shorter than the margin: it was issued just now.
            return grant.access_token

    def _valid(self, ref: str) -> str | None:
        token = self._tokens.get(ref)
        if token is not None and self._clock() < token.refresh_at:
            return token.value
        return None
