"""depmon's own HTTP surface under a flood, on loopback: idle sockets are hung up on, requests are capped;
and /status and / still served when the store holds a time no date can hold.

The server runs the way the daemon runs it: hypercorn's `worker_serve` inside an anyio task group,
with `server_config()` (the idle timeout shortened to 1 s to keep the tests short).
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest
from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.utils import wrap_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from monitor.config import bundled_config_path, load_config
from monitor.metrics import Metrics
from monitor.paging.decisions import OpenIncident
from monitor.state.live import Engine
from monitor.state.self_watch import SelfState
from monitor.store import Silence, SQLiteStore
from monitor.web.server import IDLE_CONNECTION_SECONDS, MAX_CONCURRENT_REQUESTS, RequestCap, create_app, server_config
from tests.helpers import until

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

FLOOD = 600  # idle sockets, well past the 32-request cap and hypercorn's backlog of 128
TEST_IDLE_SECONDS = 1.0


class _AliveView:
    """A daemon whose scheduler runs: all /healthz reads."""

    alive = True

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"/healthz must not read {name}")


@asynccontextmanager
async def _serving(app: Any, config: HypercornConfig) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 with hypercorn, as the daemon does; yields the base URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(config.backlog)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    stop = anyio.Event()
    sockets = Sockets(secure_sockets=[], insecure_sockets=[listener], quic_sockets=[])
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: worker_serve(
                wrap_app(app, config.wsgi_max_body_size, None), config, sockets=sockets, shutdown_trigger=stop.wait
            )
        )
        await _wait_until_accepting(port)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            stop.set()
    listener.close()


async def _wait_until_accepting(port: int) -> None:
    async def accepting() -> bool:
        try:
            stream = await anyio.connect_tcp("127.0.0.1", port)
        except OSError:
            return False
        await stream.aclose()
        return True

    await until(accepting, 5)


def _short_idle_config() -> HypercornConfig:
    config = server_config()
    config.keep_alive_timeout = TEST_IDLE_SECONDS
    return config


async def _hung_up(stream: anyio.abc.SocketStream) -> bool:
    """True once the server has closed the connection (end of stream or a reset)."""
    try:
        await stream.receive()
    except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
        return True
    return False


async def _within(seconds: float, wait: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    with anyio.fail_after(seconds):
        await wait()
    return time.perf_counter() - started


class TestIdleConnectionFlood:
    """Sockets that connect and send nothing (or trickle a request head)."""

    async def test_healthz_answers_and_idle_sockets_are_hung_up_on(self) -> None:
        """With 600 idle sockets open, /healthz answers at once; the server then closes every idle one."""
        async with _serving(create_app(_AliveView(), time.time), _short_idle_config()) as url:  # type: ignore[arg-type]
            idle = [await anyio.connect_tcp("127.0.0.1", int(url.rsplit(":", 1)[1])) for _ in range(FLOOD)]
            try:
                async with httpx.AsyncClient(timeout=5) as client:
                    with anyio.fail_after(2):
                        response = await client.get(f"{url}/healthz")
                assert response.status_code == 200
                assert response.text == "ok\n"
                with anyio.fail_after(TEST_IDLE_SECONDS + 5):
                    closed = [await _hung_up(stream) for stream in idle]
                assert all(closed)
            finally:
                for stream in idle:
                    await stream.aclose()

    async def test_a_trickled_request_head_is_hung_up_on(self) -> None:
        """A client sending its request head one byte at a time is closed after the idle timeout."""
        async with _serving(create_app(_AliveView(), time.time), _short_idle_config()) as url:  # type: ignore[arg-type]
            stream = await anyio.connect_tcp("127.0.0.1", int(url.rsplit(":", 1)[1]))
            head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
            started = time.perf_counter()
            try:
                with anyio.fail_after(TEST_IDLE_SECONDS + 5):
                    for byte in head:
                        try:
                            await stream.send(bytes([byte]))
                        except (anyio.BrokenResourceError, ConnectionResetError, BrokenPipeError):
                            break
                        await anyio.sleep(0.05)
                    else:
                        pytest.fail("the server read a 1000-byte head trickled over 50 s")
            finally:
                await stream.aclose()
            assert time.perf_counter() - started < TEST_IDLE_SECONDS + 2

    def test_production_settings(self) -> None:
        """The daemon's hypercorn settings: 5 s idle timeout, a read timeout, a 16 KiB head, no access log."""
        config = server_config()
        assert config.keep_alive_timeout == IDLE_CONNECTION_SECONDS == 5.0
        assert config.read_timeout is not None
        assert config.h11_max_incomplete_size == 16 * 1024
        assert config.accesslog is None


class TestRequestCap:
    """At most N requests in flight; the rest get an immediate 503, /healthz is always served."""

    async def test_requests_beyond_the_cap_are_refused_at_once(self) -> None:
        """With 4 slow requests in flight and a cap of 4, a fifth gets 503 at once; /healthz still answers 200."""
        release = anyio.Event()
        in_flight = 0

        async def slow(request: Request) -> Response:
            nonlocal in_flight
            in_flight += 1
            await release.wait()
            return PlainTextResponse("done\n")

        async def healthz(request: Request) -> Response:
            return PlainTextResponse("ok\n")

        cap = RequestCap(Starlette(routes=[Route("/slow", slow), Route("/healthz", healthz)]), limit=4)
        statuses: list[int] = []
        async with _serving(cap, _short_idle_config()) as url, httpx.AsyncClient(timeout=10) as client:

            async def get_slow() -> None:
                statuses.append((await client.get(f"{url}/slow")).status_code)

            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(get_slow)
                with anyio.fail_after(5):
                    while in_flight < 4:
                        await anyio.sleep(0.01)
                with anyio.fail_after(2):
                    busy = await client.get(f"{url}/slow")
                    health = await client.get(f"{url}/healthz")
                release.set()
        assert busy.status_code == 503
        assert busy.headers["retry-after"] == "1"
        assert health.status_code == 200
        assert statuses == [200, 200, 200, 200]
        assert (cap.refused, cap.active) == (1, 0)

    def test_create_app_applies_the_cap(self) -> None:
        """The daemon's app is capped: with caps of 0 every endpoint but /healthz and /readyz is 503."""

        class View(_AliveView):
            @property
            def engine(self) -> Any:
                return type("Engine", (), {"ready": True})()

        client = TestClient(create_app(View(), time.time, max_requests=0, max_scrapes=0))  # type: ignore[arg-type]
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert client.get("/status").status_code == 503
        assert client.get("/metrics").status_code == 503

    async def test_slow_status_readers_leave_metrics_healthz_and_readyz_their_slots(self) -> None:
        """With every general slot held by a hung /status, /metrics, /healthz and /readyz still answer 200."""
        release = anyio.Event()
        reading = 0

        class StalledStoreView(_AliveView):
            metrics = Metrics()

            @property
            def engine(self) -> Any:
                return type("Engine", (), {"ready": True})()

            async def feature_history(self, since: float) -> dict[str, list[tuple[float, str]]]:
                nonlocal reading
                reading += 1
                await release.wait()  # never set: the test ends by cancelling the readers
                return {}

        app = create_app(StalledStoreView(), time.time)  # type: ignore[arg-type]
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://depmon") as client,
            anyio.create_task_group() as tg,
        ):
            for _ in range(MAX_CONCURRENT_REQUESTS):
                tg.start_soon(client.get, "/status")
            with anyio.fail_after(5):
                while reading < MAX_CONCURRENT_REQUESTS:
                    await anyio.sleep(0.01)
                busy = await client.get("/status")
                answers = {path: await client.get(path) for path in ("/metrics", "/healthz", "/readyz")}
            tg.cancel_scope.cancel()
        assert busy.status_code == 503
        assert {path: answer.status_code for path, answer in answers.items()} == dict.fromkeys(answers, 200)
        assert b"depmon_build_info{" in answers["/metrics"].content


@dataclass
class _StatusView:
    """A daemon's view for /status and /: the bundled config's engine and the silences read from a store."""

    engine: Engine
    silences: list[Silence]
    metrics: Metrics = field(default_factory=Metrics)
    alive: bool = True
    open_incidents: dict[str, OpenIncident] = field(default_factory=dict)
    self_state: SelfState = field(default_factory=SelfState)
    maintenance_status: dict[str, Any] | None = None
    replicas: list[dict[str, Any]] = field(default_factory=list)
    app_graph: dict[str, Any] | None = None

    async def feature_history(self, since: float) -> dict[str, list[tuple[float, str]]]:
        return {}


class TestOutOfRangeRows:
    """A row no date can hold, written into the store by hand, never breaks /status or /."""

    @pytest.mark.parametrize("ends_at", [1e300, float("inf")])
    def test_a_silence_ending_past_the_year_9999_is_shown_as_the_far_future(
        self, tmp_path: Path, ends_at: float
    ) -> None:
        """A silence whose end is 1e300 or infinity is served (200) on /status and /, ending at the end of 9999."""
        now = time.time()
        with SQLiteStore(tmp_path / "state.sqlite3", environment="production") as store:
            store.add_silence("evss", now - 60, ends_at, "written by hand")
            silences = store.silences(active_at=now)
        config = load_config(bundled_config_path(), {})
        view = _StatusView(Engine(config, Metrics(), clock=lambda: now), silences)
        client = TestClient(create_app(view, lambda: now))
        status = client.get("/status")
        assert status.status_code == 200
        [silence] = status.json()["silences"]
        assert silence["until"] == "9999-12-31T23:59:59.999999Z"
        page = client.get("/")
        assert page.status_code == 200
        assert "9999-12-31 23:59 UTC" in page.text
