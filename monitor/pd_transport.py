"""An httpx2 transport that sends the `pagerduty` package's requests to a loopback server.

Why it exists: the official `pagerduty` client (7.x) refuses any base URL that does not start
with `https://` (`pagerduty.UrlError`), so it cannot be pointed at `http://127.0.0.1:PORT`, where
the fake PagerDuty of the tests and the demo listens. Its extra keyword arguments reach
`httpx2.Client`, though, so the client keeps its real https base URL and is given
`transport=LoopbackRewriteTransport("http://127.0.0.1:PORT")`, which rewrites each request's
scheme, host and port (and prefixes the target's path, if any) just before it goes on the wire.
depmon's PagerDuty client uses it whenever the configured `events_url` or `api_url` is an
http://127.0.0.1 URL. Only loopback targets are allowed: routing keys and API tokens must not
travel in clear text across a network.

The request handed to the client is left untouched (httpx2 sets `response.request` to it), so the
package's per-endpoint bookkeeping still sees `https://api.pagerduty.com/...` URLs. The Host
header is rewritten to the target's.

Pitfalls found in `pagerduty` 7.2 / `httpx2` 2.16:

- `respx` patches `httpx`, not `httpx2`: it does not intercept this client. Use a transport.
- With `httpx2.MockTransport`, a `Response(json=...)` is read before the client wraps its stream,
  so `response.elapsed` raises `RuntimeError`, which `RestApiV2Client.postprocess` reads on every
  response; return a streamed body (`content=iter([data])`) instead. A real transport, like this
  one, does not have the problem.
- The `timeout=` constructor argument is overridden: every request passes `timeout=client.timeout`
  (60 s). Set `client.timeout` after construction.
- Retries sleep in the calling thread with `time.sleep` (1.5 s x 2^n): 429 is retried without
  limit and ignores `Retry-After`; `EventsApiV2Client` also retries 500 twice, 502 four times and
  503/504 six times; network errors three times, then `pagerduty.Error`. Bound them with
  `client.retry[status] = n`, `client.max_http_attempts`, `client.max_network_attempts`, and
  shorten `client.sleep_timer` in tests.
- A final non-2xx answer raises `pagerduty.HttpError` (5xx: `ServerHttpError`) with `.response`;
  401 raises at once, without retries.
- `iter_all` sends `limit=100`, `offset` and `total=false` besides the given params, appends `[]`
  to list-valued params (`service_ids` -> `service_ids[]`), and advances `offset` by the number of
  results it got, stopping when `more` is false.
- `EventsApiV2Client.submit()` (change events) crashes unless `timestamp=` is given
  (`datetime.timezone` is looked up on the class).
"""

from __future__ import annotations

import ipaddress
from typing import Any

import httpx2

__all__ = ["LoopbackRewriteTransport"]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LoopbackRewriteTransport(httpx2.HTTPTransport):
    """Send every request to `target_base_url` (an http or https URL on a loopback address).

    Keyword arguments go to `httpx2.HTTPTransport` (limits, retries, ...).
    """

    def __init__(self, target_base_url: str, **kwargs: Any) -> None:
        target = httpx2.URL(target_base_url)
        if target.scheme not in ("http", "https") or not target.host:
            raise ValueError(f"target_base_url must be an http(s) URL, not {target_base_url!r}")
        if not _is_loopback(target.host):
            raise ValueError(f"target_base_url must point at a loopback address, not {target.host!r}")
        if target.query or target.fragment:
            raise ValueError(f"target_base_url must not have a query or fragment: {target_base_url!r}")
        super().__init__(**kwargs)
        self._target = target
        self._path_prefix = target.raw_path.rstrip(b"/")

    @property
    def target_base_url(self) -> str:
        """Where requests go."""
        return str(self._target)

    def rewrite(self, url: httpx2.URL) -> httpx2.URL:
        """The URL a request for `url` is sent to."""
        return url.copy_with(
            scheme=self._target.scheme,
            host=self._target.host,
            port=self._target.port,
            raw_path=self._path_prefix + url.raw_path,
        )

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send `request` to the target; the caller's request object is not changed."""
        url = self.rewrite(request.url)
        headers = request.headers.copy()
        headers["Host"] = url.netloc.decode("ascii")
        rewritten = httpx2.Request(
            request.method,
            url,
            headers=headers,
            stream=request.stream,
            extensions=request.extensions,
        )
        return super().handle_request(rewritten)
