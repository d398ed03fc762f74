"""depmon's port speaks HTTP/1.1 only (SPEC 11.4): no way into HTTP/2, and no request head, no connection.

HTTP/2 kept a connection open as long as its client sent frames (PINGs, or a frame a byte at a
time), past the 5 s a request head may take: 300 of them took every descriptor of a daemon
limited to 256 and /healthz stopped answering.
"""

from __future__ import annotations

import contextlib
import resource
import selectors
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import DaemonProcess, healthy_upstream_daemon, wait_for

# One worker runs the module, so its module-scoped daemon starts once under xdist (--dist loadgroup).
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("http11_daemon")]

HEAD_SECONDS = 5.0  # the SPEC's bound on a request head
CLOSED_WITHIN = HEAD_SECONDS + 1.5  # plus a loaded machine's margin
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # an empty SETTINGS frame
PING = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + b"depmon!!"  # length 8, type PING, stream 0
H2C_UPGRADE = (
    b"GET /healthz HTTP/1.1\r\nHost: depmon\r\nConnection: Upgrade, HTTP2-Settings\r\n"
    b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
)
FILES_LIMIT = 256
FLOOD = 300
MONITOR = """
  defaults: {interval: 1s, timeout: 500ms}
"""


@contextlib.contextmanager
def _answering_daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    """A daemon probing one healthy loopback dependency, started and answering /healthz."""
    with healthy_upstream_daemon(tmp_path, 1, MONITOR) as (process, _, _):
        wait_for(lambda: process.get("/healthz").status_code == 200, 15, "the daemon answering")
        yield process


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One daemon for the tests that do not change it."""
    with _answering_daemon(tmp_path_factory.mktemp("http11")) as process:
        yield process


def _port(daemon: DaemonProcess) -> int:
    return int(daemon.url.rsplit(":", 1)[1])


def _closed(sock: socket.socket) -> bytes | None:
    """What the server sent, once it has closed the connection; None while it is open (non-blocking)."""
    received = b""
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return None
        except ConnectionResetError:
            return received
        if not data:
            return received
        received += data


def _hold_open(sockets: list[socket.socket], keep_alive: Iterator[bytes], every: float, limit: float) -> list[bytes]:
    """Send each socket the next of `keep_alive` every `every` seconds until the server has closed them all.

    Returns what each one received; fails the test when one is still open after `limit` seconds.
    """
    for sock in sockets:
        sock.setblocking(False)
    received: dict[socket.socket, bytes] = {}
    deadline = time.monotonic() + limit
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
        while len(received) < len(sockets):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"{len(sockets) - len(received)} of {len(sockets)} connections open after {limit} s")
            chunk = next(keep_alive)
            for sock in sockets:
                if sock not in received:
                    with contextlib.suppress(BlockingIOError, BrokenPipeError, ConnectionResetError):
                        sock.send(chunk)
            next_send = time.monotonic() + every
            while (wait := min(next_send, deadline) - time.monotonic()) > 0 and len(received) < len(sockets):
                for key, _ in selector.select(wait):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if (got := _closed(sock)) is not None:
                        received[sock] = got
                        selector.unregister(sock)
    return [received[sock] for sock in sockets]


def _repeat(frame: bytes) -> Iterator[bytes]:
    while True:
        yield frame


def _trickle(data: bytes) -> Iterator[bytes]:
    while True:
        yield from (bytes([byte]) for byte in data)


def _no_http2(answer: bytes) -> bool:
    """An HTTP/1.1 answer or none: an HTTP/2 server's first bytes are a frame, never `HTTP/1.1 `."""
    return answer == b"" or answer.startswith(b"HTTP/1.1 ")


@contextlib.contextmanager
def _connections(port: int, count: int, first: bytes) -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            opened.append(sock)
            sock.sendall(first)
        yield opened
    finally:
        for sock in opened:
            sock.close()


class TestHttp11Only:
    """depmon's own port against HTTP/2 and slow clients."""

    @pytest.mark.parametrize(
        ("keep_alive", "every"),
        [
            pytest.param(_repeat(PING), 0.5, id="a PING every 0.5 s"),
            pytest.param(_trickle(PING), 1.0, id="a byte a second"),
        ],
    )
    def test_http2_frames_get_no_frame_back_and_the_connection_closed(
        self, daemon: DaemonProcess, keep_alive: Iterator[bytes], every: float
    ) -> None:
        """After the HTTP/2 preface, PINGs or a byte a second: closed within the head bound, no HTTP/2 frame back."""
        with _connections(_port(daemon), 1, PREFACE + SETTINGS) as (sock,):
            started = time.monotonic()
            (answer,) = _hold_open([sock], keep_alive, every=every, limit=CLOSED_WITHIN)
        assert time.monotonic() - started < CLOSED_WITHIN
        assert _no_http2(answer), answer[:64]

    def test_an_h2c_upgrade_is_answered_in_http11(self, daemon: DaemonProcess) -> None:
        """`Upgrade: h2c` gets the HTTP/1.1 answer of the request, not 101 Switching Protocols."""
        with socket.create_connection(("127.0.0.1", _port(daemon)), timeout=5) as sock:
            sock.sendall(H2C_UPGRADE)
            answer = b""
            while b"\r\n\r\nok\n" not in answer:
                data = sock.recv(65536)
                assert data, f"closed after {answer!r}"
                answer += data
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:64]


def test_http2_connections_past_the_descriptor_limit_leave_healthz_answering(tmp_path: Path) -> None:
    """300 HTTP/2 connections sending PINGs to a daemon allowed 256 files: all closed, then /healthz answers."""
    with _answering_daemon(tmp_path) as daemon:
        assert daemon.proc is not None
        # Lowered once it runs: at start the daemon raises its soft limit to the hard one.
        resource.prlimit(daemon.proc.pid, resource.RLIMIT_NOFILE, (FILES_LIMIT, FILES_LIMIT))
        with _connections(_port(daemon), FLOOD, PREFACE + SETTINGS + PING) as flood:
            answers = _hold_open(flood, _repeat(PING), every=1.0, limit=2 * CLOSED_WITHIN)
        assert all(_no_http2(answer) for answer in answers)
        assert daemon.get("/healthz").status_code == 200
