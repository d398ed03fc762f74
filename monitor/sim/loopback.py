"""A small threaded HTTP server on 127.0.0.1 for simulated upstreams and the fake PagerDuty.

`LoopbackServer` binds a free port, serves in a daemon thread and dispatches each request by
(method, path) to a handler: a plain function from `Request` to `Response` (or to `None`, which
drops the connection without an answer). It records every request it receives and carries
programmable faults that apply before dispatch, to every route:

- `fail_with(status, times)`: answer `status` n times, or until cleared;
- `hang()`: hold every request unanswered until `clear_faults()`, `go_down()` or `stop()`;
- `go_down()` / `come_back()`: close the listening socket (connections are refused and the ones
  in flight are cut) and listen again on the same port.

`stop()` never waits on a handler: held requests are released and open connections are cut
before the server waits, briefly, for its handler threads to close their sockets. Handler threads
are daemon threads, so a handler that ignores all this cannot keep the process alive either.

The server speaks HTTP/1.0 (one request per connection): clients cannot keep a connection open
across `go_down()`, and there is no keep-alive state to reason about. Request bodies must carry a
Content-Length (chunked uploads are not supported). Do not call `go_down()` or `stop()` from a
handler: they wait for the serving thread.
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from monitor.sim.lifecycle import Started

__all__ = ["FaultResponse", "Handler", "LoopbackServer", "Request", "Response", "json_response", "shut_down"]

LOOPBACK_HOST = "127.0.0.1"
_POLL_INTERVAL_SECONDS = 0.02  # how quickly serve_forever notices shutdown()
_DRAIN_SECONDS = 2.0  # how long stop()/go_down() wait for handler threads to close their sockets
_MAX_BODY_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the server received it. Header names are lower case."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    received_at: float  # UNIX time

    def header(self, name: str, default: str | None = None) -> str | None:
        """The value of header `name` (any case), or `default`."""
        return self.headers.get(name.lower(), default)

    def first(self, name: str, default: str | None = None) -> str | None:
        """The first value of query parameter `name`, or `default`."""
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        """The body decoded as JSON; raises `ValueError` when it is not JSON."""
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class Response:
    """What a handler answers."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def json_response(status: int, document: Any, headers: Iterable[tuple[str, str]] = ()) -> Response:
    """A `Response` with `document` encoded as JSON."""
    return Response(status, json.dumps(document).encode(), headers=tuple(headers))


Handler = Callable[[Request], Response | None]
"""Answers one request; `None` drops the connection without an answer."""

FaultResponse = Callable[[int], Response]
"""Builds the answer for a programmed failure with the given status."""


def _default_fault_response(status: int) -> Response:
    return json_response(status, {"error": HTTPStatus(status).phrase})


def shut_down(
    server: socketserver.BaseServer,
    thread: threading.Thread | None,
    connections: Iterable[socket.socket],
    changed: threading.Condition,
    open_connections: Callable[[], bool],
) -> None:
    """Stop a threaded server without waiting on its handlers.

    Stops accepting, cuts the `connections` in flight (a handler blocked on one wakes up with
    an error), then waits at most `_DRAIN_SECONDS` on `changed` until `open_connections()` is
    false, that is until the handler threads have closed their sockets.
    """
    server.shutdown()
    server.server_close()
    if thread is not None:
        thread.join()
    for connection in connections:
        with contextlib.suppress(OSError):
            connection.shutdown(socket.SHUT_RDWR)
    deadline = time.monotonic() + _DRAIN_SECONDS
    with changed:
        while open_connections() and time.monotonic() < deadline:
            changed.wait(0.05)


class LoopbackServer(Started):
    """A threaded HTTP server on 127.0.0.1 with (method, path) dispatch and programmable faults.

    Use it as a context manager, or call `start()` and `stop()`. `url` is `http://127.0.0.1:PORT`
    once started; the port stays the same across `go_down()`/`come_back()` and `stop()`/`start()`.
    """

    def __init__(self, *, port: int = 0, fault_response: FaultResponse = _default_fault_response) -> None:
        self._port = port
        self._fault_response = fault_response
        self._routes: dict[tuple[str, str], Handler] = {}
        self._lock = threading.Lock()
        # Wakes held requests when the faults change or the server stops listening.
        self._changed = threading.Condition(self._lock)
        self._httpd: _HTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._requests: list[Request] = []
        self._down = False  # gone down on purpose: clear_faults() brings it back
        self._hanging = False
        self._fail_status: int | None = None
        self._fail_remaining: int | None = None  # None: until cleared
        self._handler_errors: list[str] = []

    # -- lifecycle -------------------------------------------------------------------------------

    def route(self, method: str, path: str, handler: Handler) -> None:
        """Send requests for `method` and `path` (without the query) to `handler`."""
        self._routes[(method.upper(), path)] = handler

    def start(self) -> Self:
        """Start listening (a no-op when already listening); returns the server."""
        self._listen()
        return self

    def stop(self) -> None:
        """Stop listening, release held requests, cut open connections; safe to call twice."""
        self._down = False
        self._unlisten()

    @property
    def port(self) -> int:
        """The TCP port; known once the server has started."""
        if self._port == 0:
            raise RuntimeError("the server has not started yet: its port is not known")
        return self._port

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`, without a trailing slash."""
        return f"http://{LOOPBACK_HOST}:{self.port}"

    @property
    def listening(self) -> bool:
        """True while the server accepts connections."""
        with self._lock:
            return self._httpd is not None

    # -- faults ----------------------------------------------------------------------------------

    def fail_with(self, status: int, times: int | None = None) -> None:
        """Answer every request with `status`, `times` times or (None) until `clear_faults()`."""
        if times is not None and times < 1:
            raise ValueError(f"times must be at least 1 or None, not {times}")
        with self._changed:
            self._fail_status = status
            self._fail_remaining = times

    def hang(self) -> None:
        """Hold every request unanswered until `clear_faults()` (then it is served), or stop."""
        with self._changed:
            self._hanging = True

    def go_down(self) -> None:
        """Close the listening socket: new connections are refused, open ones are cut."""
        self._down = True
        self._unlisten()

    def come_back(self) -> None:
        """Listen again on the same port after `go_down()`."""
        self._down = False
        self._listen()

    def clear_faults(self) -> None:
        """Forget `fail_with()` and `hang()`, and `come_back()` after `go_down()`.

        Held requests are then served, even those whose client gave up: a retry then arrives as
        a second request, as it would at the real service.
        """
        with self._changed:
            self._hanging = False
            self._fail_status = None
            self._fail_remaining = None
            self._changed.notify_all()
        if self._down:
            self.come_back()

    # -- records ---------------------------------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        """Every request received, faulted ones included, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        """How many requests were received, faulted ones included."""
        with self._lock:
            return len(self._requests)

    @property
    def handler_errors(self) -> list[str]:
        """Tracebacks of handlers that raised (each was answered with a 500)."""
        with self._lock:
            return list(self._handler_errors)

    # -- internals -------------------------------------------------------------------------------

    def _listen(self) -> None:
        with self._lock:
            if self._httpd is not None:
                return
            httpd = _HTTPServer((LOOPBACK_HOST, self._port), _RequestHandler, owner=self)
            self._port = httpd.server_address[1]
            self._httpd = httpd
            self._serve_thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": _POLL_INTERVAL_SECONDS},
                name=f"loopback-{self._port}",
                daemon=True,
            )
            self._serve_thread.start()

    def _unlisten(self) -> None:
        with self._changed:
            httpd, thread = self._httpd, self._serve_thread
            self._httpd = self._serve_thread = None
            connections = list(self._connections)
            self._changed.notify_all()  # held requests see that the server went away
        if httpd is not None:
            shut_down(httpd, thread, connections, self._changed, lambda: bool(self._connections))

    def _connection_opened(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)

    def _connection_closed(self, connection: socket.socket) -> None:
        with self._changed:
            self._connections.discard(connection)
            self._changed.notify_all()

    def _answer(self, request: Request) -> Response | None:
        """The response to `request` after faults, or None to drop the connection."""
        with self._changed:
            self._requests.append(request)
            self._changed.wait_for(lambda: not self._hanging or self._httpd is None)
            if self._httpd is None:
                return None
            if self._fail_status is not None:
                status = self._fail_status
                if self._fail_remaining is not None:
                    self._fail_remaining -= 1
                    if self._fail_remaining == 0:
                        self._fail_status = self._fail_remaining = None
                return self._fault_response(status)
        handler = self._routes.get((request.method, request.path))
        if handler is None:
            if any(path == request.path for _, path in self._routes):
                return json_response(405, {"error": "Method Not Allowed"})
            return json_response(404, {"error": "Not Found"})
        try:
            return handler(request)
        except Exception:  # a bug in a simulated handler: answer 500 and keep it for the test
            error = traceback.format_exc()
            with self._lock:
                self._handler_errors.append(error)
            return Response(500, error.encode(), content_type="text/plain")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() releases and cuts handlers itself, with a deadline

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        owner: LoopbackServer,
    ) -> None:
        self.owner = owner
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Cut connections (go_down, stop, clients timing out) are normal here: stay quiet.
        pass


class _RequestHandler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.0"

    def setup(self) -> None:
        super().setup()
        self.server.owner._connection_opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._connection_closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests and the demo narrate what matters themselves

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY_BYTES:
            self.send_error(413)
            return
        request = Request(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=self.rfile.read(length) if length else b"",
            received_at=time.time(),
        )
        response = self.server.owner._answer(request)
        if response is None:
            self.close_connection = True
            return
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _dispatch
