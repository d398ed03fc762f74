"""Loopback HTTP plumbing for the http probe tests: an asyncio server on 127.0.0.1 answering from
a small handler per test, and the probe's context, spec and runner with a hard stop.

The handlers write raw bytes, so a test can send anything an upstream could: wrong framing,
bogus encodings, a hang-up mid-body.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http
import json
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import anyio
import trustme
from anyio.from_thread import start_blocking_portal

from monitor.config import HttpProbeSpec
from monitor.errors import TokenUnavailable
from monitor.results import ProbeResult
from monitor.schedule.run_probe import run_probe
from probes.context import ProbeContext

# ---------------------------------------------------------------------------------------------
# Loopback servers


@dataclass(frozen=True)
class Request:
    """A request as the server saw it; header names lower-cased."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes = b""


Handler = Callable[[Request, asyncio.StreamWriter], Awaitable[bool]]
"""Answers one request; returns whether the connection stays open for the next one."""


class RawHttpServer:
    """An HTTP/1.1 server on 127.0.0.1 with a free port; plain or TLS; an async context manager.

    It records the requests and counts the connections it accepted; `handler` may be replaced
    while it runs (servers that redirect to each other need both ports first). On exit it stops
    accepting, ends the handlers still running (a server that never answers) and closes
    every connection, so no socket outlives the test.
    """

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self._tls = tls
        self._tasks: set[asyncio.Task[None]] = set()
        self.requests: list[Request] = []
        self.connections = 0
        self.port = 0

    def url(self, target: str = "/", *, scheme: str | None = None) -> str:
        scheme = scheme or ("https" if self._tls else "http")
        return f"{scheme}://127.0.0.1:{self.port}{target}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            await self._converse(reader, writer)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client went away, or the test is over: this task ends quietly either way
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer the connection's requests one after the other, until the handler or the client ends it."""
        while (request := await _read_request(reader)) is not None:
            self.requests.append(request)
            if not await self.handler(request, writer):
                break


class ForwardProxy(RawHttpServer):
    """A forward proxy on 127.0.0.1, as depmon's egress proxy would be; records what it was asked.

    `CONNECT host:port` opens a tunnel (200, then bytes both ways: TLS stays end to end); a request
    in absolute form (`POST http://host:port/path`) is sent on, in origin form, over a connection of
    its own, and the answer comes back with `Connection: close`. `hosts` maps a name that does not
    resolve to the loopback port standing for it. An upstream that cannot be reached is a 502.
    """

    def __init__(self, hosts: dict[str, int] | None = None) -> None:
        super().__init__(reply(502))
        self._hosts = hosts or {}

    @property
    def proxy_url(self) -> str:
        """The proxy's URL, as HTTPS_PROXY or `pagerduty.proxy` would name it."""
        return f"http://127.0.0.1:{self.port}"

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await _read_request(reader)) is not None:
            self.requests.append(request)
            if request.method == "CONNECT":
                host, _, port = request.target.rpartition(":")
                await self._tunnel(self._address(host, int(port)), reader, writer)
                return
            await self._forward(request, writer)

    def _address(self, host: str, port: int) -> tuple[str, int]:
        return ("127.0.0.1", self._hosts[host]) if host in self._hosts else (host, port)

    async def _tunnel(
        self, address: tuple[str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*address)
        except OSError:
            writer.write(response_bytes(502))
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        try:
            async with asyncio.TaskGroup() as pipes:  # one side failing ends the other
                pipes.create_task(_pipe(reader, upstream_writer))
                pipes.create_task(_pipe(upstream_reader, writer))
        finally:
            upstream_writer.close()

    async def _forward(self, request: Request, writer: asyncio.StreamWriter) -> None:
        url = urlsplit(request.target)
        assert url.hostname is not None, f"not an absolute-form request: {request.target}"
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                *self._address(url.hostname, url.port or 80)
            )
        except OSError:
            writer.write(response_bytes(502))
            return
        headers = {k: v for k, v in request.headers.items() if not k.startswith("proxy-") and k != "connection"}
        head = f"{request.method} {url.path or '/'}{'?' + url.query if url.query else ''} HTTP/1.1\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in {**headers, "connection": "close"}.items())
        upstream_writer.write(head.encode("latin-1") + b"\r\n" + request.body)
        try:
            answer = await upstream_reader.read(-1)  # `Connection: close`: the answer ends with the connection
        finally:
            upstream_writer.close()
        status_and_fields, _, body = answer.partition(b"\r\n\r\n")
        kept = [line for line in status_and_fields.split(b"\r\n") if not line.lower().startswith(b"connection:")]
        writer.write(b"\r\n".join([*kept, b"Connection: close"]) + b"\r\n\r\n" + body)
        await writer.drain()


@contextlib.contextmanager
def threaded_forward_proxy(hosts: dict[str, int] | None = None) -> Iterator[ForwardProxy]:
    """A `ForwardProxy` served from an event loop thread of its own, for synchronous tests."""
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(ForwardProxy(hosts)) as proxy:
        yield proxy


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy bytes until `source` ends (or either side drops the connection), then end `sink`'s side."""
    with contextlib.suppress(ConnectionError):
        while chunk := await source.read(65536):
            sink.write(chunk)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    request_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    method, target, _ = request_line.split(" ", 2)
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(method, target, headers, body)


def response_bytes(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    """A complete HTTP/1.1 response with a Content-Length."""
    fields = {"Content-Type": "text/plain", **(headers or {}), "Content-Length": str(len(body))}
    head = f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    return head.encode("latin-1") + b"\r\n" + body


def reply(
    status: int = 200, body: bytes = b"ok", *, headers: dict[str, str] | None = None, delay: float = 0.0
) -> Handler:
    """A handler that answers every request the same way, after `delay` seconds."""

    async def handle(request: Request, writer: asyncio.StreamWriter) -> bool:
        if delay:
            await asyncio.sleep(delay)
        writer.write(response_bytes(status, body, headers))
        await writer.drain()
        return True

    return handle


def reply_json(document: Any, status: int = 200, content_type: str = "application/json") -> Handler:
    return reply(status, json.dumps(document).encode(), headers={"Content-Type": content_type})


def routes(table: dict[str, Handler]) -> Handler:
    """A handler that dispatches on the request path (query string ignored); 404 elsewhere."""

    async def handle(request: Request, writer: asyncio.StreamWriter) -> bool:
        handler = table.get(request.target.split("?", 1)[0], reply(404, b"not found"))
        return await handler(request, writer)

    return handle


def redirect(location: str, status: int = 302) -> Handler:
    """A handler that answers every request with a redirect to `location`."""
    return reply(status, b"", headers={"Location": location})


# ---------------------------------------------------------------------------------------------
# Probe plumbing


class FakeTokens:
    """A stand-in for `probes.tokens.TokenCache`: one token, or a refusal with a reason."""

    def __init__(self, token: str | None = None, reason: str = "") -> None:
        self.token = token
        self.reason = reason
        self.invalidated: list[str] = []

    async def bearer(self, ref: str) -> str:
        if self.token is None:
            raise TokenUnavailable(self.reason)
        return self.token

    def invalidate(self, ref: str) -> None:
        self.invalidated.append(ref)

    def ref_for(self, spec: object) -> str | None:
        """No oauth2 probe of a test's making is this cache's: what an oauth2 probe gets issued is not kept."""
        return None


@asynccontextmanager
async def probe_context(**kwargs: Any) -> AsyncIterator[ProbeContext]:
    ctx = ProbeContext(**kwargs)
    try:
        yield ctx
    finally:
        await ctx.aclose()


def http_spec(url: str, **fields: Any) -> HttpProbeSpec:
    return HttpProbeSpec.model_validate({"name": "healthcheck", "url": url, **fields})


async def run(spec: HttpProbeSpec, ctx: ProbeContext, timeout: float = 5.0) -> ProbeResult:
    """`run_probe` with a hard stop a little after its deadline, so a hung probe fails fast."""
    with anyio.fail_after(timeout + 2):
        return await run_probe(spec, ctx, timeout)


async def probe_once(handler: Handler, target: str = "/healthcheck", **fields: Any) -> ProbeResult:
    """One probe of `target` on a fresh server and context."""
    async with RawHttpServer(handler) as server, probe_context() as ctx:
        return await run(http_spec(server.url(target), **fields), ctx)


def server_tls(ca: trustme.CA, *identities: str, **cert_options: Any) -> ssl.SSLContext:
    """A server-side SSL context with a certificate from `ca` for `identities`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(*identities, **cert_options).configure_cert(context)
    return context


# ---------------------------------------------------------------------------------------------
# Hostile bodies and memory


@functools.cache
def gzip_bomb(inflated_mib: int = 200) -> bytes:
    """A gzip body of zeros that inflates to `inflated_mib` MiB (200 MiB: a 199 KiB body)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1024 * 1024)
    return b"".join([compressor.compress(zeros) for _ in range(inflated_mib)] + [compressor.flush()])


@dataclass
class MemoryUse:
    """Resident memory around a block: at its start, and the peak reached inside it (bytes)."""

    before: int = 0
    peak: int = 0

    @property
    def growth(self) -> int:
        return self.peak - self.before


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


@contextlib.contextmanager
def peak_rss() -> Iterator[MemoryUse]:
    """Measure the peak resident memory of this process inside the block (Linux).

    The kernel's high-water mark (VmHWM) is reset on entry by writing 5 to
    /proc/self/clear_refs, so the peak is this block's, not an earlier test's.
    """
    use = MemoryUse()
    Path("/proc/self/clear_refs").write_text("5")
    use.before = _status_kib("VmRSS") * 1024
    yield use
    use.peak = _status_kib("VmHWM") * 1024
