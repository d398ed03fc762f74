"""httpx2 transports under the `pagerduty` package: a loopback rewrite, and an overall bound.

`BoundedTransport` wraps whatever transport a client uses and gives every request an overall
deadline and a cap on the answer's size. httpx2's own timeouts are per operation, so a 202
whose body drips one byte a second would hold a worker thread (and, before, every other dedup
key's delivery) for as long as the drip lasts; here the body read fails with
`DeadlineExceeded` once `deadline` seconds have passed since the request started. The request
asks for `Accept-Encoding: identity`, and an answer that is encoded anyway, or longer than
`max_bytes`, fails with `AnswerTooLarge`/`AnswerEncoded` before it is inflated or buffered.
Both errors are `httpx2.TransportError`s, so the package reports them like a network failure
(`pagerduty.Error` without a response) and the caller retries.

`LoopbackRewriteTransport` sends the package's requests to a loopback server.

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

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx2

from monitor.urls import is_loopback

__all__ = ["AnswerEncoded", "AnswerTooLarge", "BoundedTransport", "DeadlineExceeded", "LoopbackRewriteTransport"]


class LoopbackRewriteTransport(httpx2.HTTPTransport):
    """Send every request to `target_base_url` (an http or https URL on a loopback address).

    Keyword arguments go to `httpx2.HTTPTransport` (limits, retries, ...).
    """

    def __init__(self, target_base_url: str, **kwargs: Any) -> None:
        target = httpx2.URL(target_base_url)
        if target.scheme not in ("http", "https") or not target.host:
            raise ValueError(f"target_base_url must be an http(s) URL, not {target_base_url!r}")
        if not is_loopback(target.host):
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


class DeadlineExceeded(httpx2.TimeoutException):
    """The whole exchange took longer than the transport's overall deadline."""


class AnswerTooLarge(httpx2.TransportError):
    """The answer's body is longer than the transport's cap."""


class AnswerEncoded(httpx2.TransportError):
    """The answer is compressed although `identity` was asked for: it is not inflated."""


class _BoundedStream(httpx2.SyncByteStream):
    def __init__(
        self,
        inner: httpx2.SyncByteStream,
        request: httpx2.Request,
        deadline_at: float,
        max_bytes: int,
        clock: Callable[[], float],
    ) -> None:
        self._inner = inner
        self._request = request
        self._deadline_at = deadline_at
        self._max_bytes = max_bytes
        self._clock = clock

    def __iter__(self) -> Iterator[bytes]:
        seen = 0
        for chunk in self._inner:
            seen += len(chunk)
            if seen > self._max_bytes:
                raise AnswerTooLarge(f"answer longer than {self._max_bytes} bytes", request=self._request)
            if self._clock() > self._deadline_at:
                raise DeadlineExceeded("answer not complete within the overall deadline", request=self._request)
            yield chunk

    def close(self) -> None:
        self._inner.close()


class BoundedTransport(httpx2.BaseTransport):
    """`inner` with an overall deadline and a size cap per request (see the module docstring)."""

    def __init__(
        self,
        inner: httpx2.BaseTransport,
        deadline: float,
        max_bytes: int = 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self.deadline = deadline
        self.max_bytes = max_bytes
        self._clock = clock

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send `request` through the inner transport; its body is read under the bounds."""
        deadline_at = self._clock() + self.deadline
        request.headers["Accept-Encoding"] = "identity"
        response = self._inner.handle_request(request)
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            response.close()
            raise AnswerEncoded(f"answer encoded as {encoding!r} although identity was asked for", request=request)
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response.close()
            raise AnswerTooLarge(f"answer of {declared} bytes is longer than {self.max_bytes}", request=request)
        assert isinstance(response.stream, httpx2.SyncByteStream)
        response.stream = _BoundedStream(response.stream, request, deadline_at, self.max_bytes, self._clock)
        return response

    def close(self) -> None:
        """Close the inner transport."""
        self._inner.close()
