"""httpx's transport API over aiohttp's connection pool: the probes keep httpx, at a third of the CPU.

aiohttp's exceptions are translated to httpx's at this boundary, raised `from` the aiohttp
exception so that `probes._http_errors.describe_http_error` finds the OS and ssl errors behind
them as it does behind httpcore's: a certificate failure stays `tls` and security relevant, a
refused connection `connect`, a hang-up mid-answer `error` with its detail.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import aiohttp
import httpx

_CHUNK = 16 * 1024


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session (created on first use, inside the event loop), shared by every request."""

    def __init__(self, ssl_context: ssl.SSLContext, max_connections: int, keepalive_expiry: float) -> None:
        self._ssl = ssl_context
        self._limit = max_connections
        self._keepalive = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._limit, ssl=self._ssl, keepalive_timeout=self._keepalive, use_dns_cache=False
        )
        # No cookie jar: httpx's (which allows no domain) is the one that decides.
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request`; the answer's body is streamed from aiohttp."""
        if self._session is None:
            self._session = self._open()
        # httpx already turned URL credentials into an Authorization header; aiohttp refuses both.
        url = request.url.copy_with(username=None, password=None) if request.url.userinfo else request.url
        content = await request.aread()
        try:
            response = await self._session.request(
                request.method,
                str(url),
                headers=list(request.headers.multi_items()),
                data=content or None,
                allow_redirects=False,
                auto_decompress=False,
                skip_auto_headers=("Accept-Encoding", "User-Agent", "Accept"),
                timeout=aiohttp.ClientTimeout(total=None),
                server_hostname=request.extensions.get("sni_hostname"),
            ).__aenter__()
        except aiohttp.ClientConnectorCertificateError as exc:
            # Raised from the ssl error itself: the chain then reads as httpcore's does.
            raise httpx.ConnectError(str(exc.certificate_error), request=request) from exc.certificate_error
        except aiohttp.ClientError as exc:
            raise _translate(exc, request) from exc
        except ValueError as exc:  # yarl / aiohttp refusing the URL
            raise httpx.InvalidURL(str(exc)) from exc
        return httpx.Response(
            response.status,
            headers=list(response.raw_headers),
            stream=_Body(response, request),
            request=request,
            extensions={
                "http_version": b"HTTP/1.1",
                # aiohttp decoded the reason with surrogateescape: give httpx its bytes back
                "reason_phrase": (response.reason or "").encode("utf-8", "surrogateescape"),
            },
        )

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        received = 0
        try:
            async for chunk in self._response.content.iter_chunked(_CHUNK):
                received += len(chunk)
                yield chunk
        except aiohttp.ClientPayloadError as exc:
            expected = self._response.headers.get("Content-Length")
            how = f"received {received} bytes, expected {expected}" if expected else "incomplete chunked read"
            message = f"peer closed connection without sending complete message body ({how})"
            raise httpx.RemoteProtocolError(message, request=self._request) from exc
        except aiohttp.ClientError as exc:
            raise _translate(exc, self._request) from exc

    async def aclose(self) -> None:
        self._response.release()  # a body not read to its end closes the connection


def _translate(exc: aiohttp.ClientError, request: httpx.Request) -> httpx.HTTPError:
    """The httpx exception (and message, as httpcore words it) for an aiohttp one."""
    if isinstance(exc, aiohttp.ClientConnectorError):  # DNS, refused, TLS handshake and verification
        return httpx.ConnectError(str(exc.os_error), request=request)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body (incomplete body)", request=request
        )
    if isinstance(exc, aiohttp.ClientResponseError):  # aiohttp's parser refused the answer
        message = str(exc.message)
        if "status line" in message.lower() or "bad status" in message.lower() or "version" in message.lower():
            return httpx.RemoteProtocolError("illegal status line", request=request)
        return httpx.RemoteProtocolError(message.split(":", 1)[0], request=request)
    if isinstance(exc, aiohttp.ClientOSError):
        return httpx.ReadError(str(exc), request=request)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.InvalidURL(str(exc))  # type: ignore[return-value]
    return httpx.TransportError(exc.__class__.__name__, request=request)
