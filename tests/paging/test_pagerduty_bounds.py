"""Every PagerDuty request is bounded: an overall deadline, a size cap, finite pagination (issue 9, item 5).

Real loopback servers answer the real `pagerduty` package through depmon's clients: a raw socket
server that drips a 202, and programmable REST pages.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from monitor.errors import MaintenanceUnavailable
from monitor.pagerduty.clients import Delivery, EventsSender, MaintenanceClient
from monitor.sim.loopback import LoopbackServer, Request, Response, json_response

pytestmark = pytest.mark.integration

ROUTING_KEY = "R" * 32
TOKEN = SecretStr("rest-token-secret")
SERVICE = "PZKWB6Y"
WINDOW = {
    "id": "PW00001",
    "start_time": "2026-12-01T10:00:00Z",
    "end_time": "2026-12-01T12:00:00Z",
    "description": "USER_MESSAGE:Planned|Work",
    "services": [{"id": SERVICE}],
}


class DripServer:
    """Accepts HTTP requests and answers `202` with a body sent one byte every `interval` seconds."""

    def __init__(self, interval: float = 0.2, length: int = 200) -> None:
        self.interval = interval
        self.length = length
        self.requests = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> DripServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(5)

    def _serve(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._drip, args=(connection,), daemon=True).start()

    def _drip(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                data += chunk
            self.requests += 1
            head = f"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: {self.length}\r\n\r\n"
            try:
                connection.sendall(head.encode())
                for _ in range(self.length):
                    if self._stop.wait(self.interval):
                        return
                    connection.sendall(b" ")
            except OSError:
                return


class TestEventsDeadline:
    """A 202 whose body drips in is cut off at the sender's overall deadline."""

    @pytest.mark.anyio
    async def test_a_dripping_answer_ends_at_the_deadline_as_a_retry(self) -> None:
        """The per-read timeout never fires (a byte every 0.2 s), the 1 s deadline does: retry, readable reason."""
        with DripServer() as server:
            sender = EventsSender(server.url, SecretStr(ROUTING_KEY), timeout=2.0, deadline=1.0)
            try:
                started = time.monotonic()
                with anyio.fail_after(10):
                    delivery = await sender.send({"event_action": "trigger", "dedup_key": "k", "payload": {}})
                took = time.monotonic() - started
            finally:
                sender.close()
        assert delivery.status == "retry"
        assert "DeadlineExceeded" in delivery.message
        assert 0.9 <= took < 2.5
        assert ROUTING_KEY not in delivery.message

    @pytest.mark.anyio
    @pytest.mark.parametrize("status", [401, 403, 404, 407, 413, 500, 502])
    async def test_only_a_400_is_final(self, status: int) -> None:
        """Statuses a proxy, a load balancer or a wrong URL answer are retried; a 400 is dropped."""
        delivery = await _send_answered(status, {"status": "error"})
        assert (delivery.status, delivery.http_status) == ("retry", status)

    @pytest.mark.anyio
    async def test_a_400_is_dropped(self) -> None:
        """PagerDuty's 400 means the event itself is invalid: dropped, with PagerDuty's words."""
        answer = {"status": "invalid event", "message": "Event object is invalid", "errors": ["bad"]}
        delivery = await _send_answered(400, answer)
        assert (delivery.status, delivery.http_status) == ("dropped", 400)
        assert "Event object is invalid" in delivery.message


async def _send_answered(status: int, answer: dict[str, Any]) -> Delivery:
    """One trigger sent to an Events API that answers every enqueue (with or without a slash) `status`, `answer`."""
    with LoopbackServer() as server:
        for path in ("/v2/enqueue", "/v2/enqueue/"):
            server.route("POST", path, lambda request: json_response(status, answer))
        sender = EventsSender(server.url, SecretStr(ROUTING_KEY), timeout=2.0)
        try:
            with anyio.fail_after(10):
                return await sender.send({"event_action": "trigger", "dedup_key": "k", "payload": {}})
        finally:
            sender.close()


class Pages:
    """A REST maintenance-windows endpoint answering from a function of the request."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.requests: list[Request] = []

    def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        result = self.answer(request)
        return result if isinstance(result, Response) else json_response(200, result)


@pytest.fixture
def rest() -> Iterator[LoopbackServer]:
    with LoopbackServer() as server:
        yield server


async def windows_from(rest: LoopbackServer, pages: Pages) -> Any:
    rest.route("GET", "/maintenance_windows", pages)
    client = MaintenanceClient(rest.url, TOKEN, timeout=2.0, deadline=2.0)
    try:
        with anyio.fail_after(30):
            return await client.open_windows([SERVICE])
    finally:
        client.close()


class TestPagination:
    """Pagination stops on an empty page and is capped; each entry is judged on its own."""

    @pytest.mark.anyio
    async def test_an_empty_page_that_says_more_stops(self, rest: LoopbackServer) -> None:
        """`{"maintenance_windows": [], "more": true}` ends the query after one request (it looped forever)."""
        pages = Pages(lambda request: {"maintenance_windows": [], "more": True})
        result = await windows_from(rest, pages)
        assert (result.windows, len(pages.requests)) == ([], 1)

    @pytest.mark.anyio
    async def test_a_server_that_always_says_more_is_capped(self, rest: LoopbackServer) -> None:
        """A page that never ends stops after 50 requests; the window it repeats is kept once."""
        pages = Pages(lambda request: {"maintenance_windows": [WINDOW], "more": True})
        result = await windows_from(rest, pages)
        assert len(pages.requests) == 50
        assert [w.id for w in result.windows] == ["PW00001"]

    @pytest.mark.anyio
    async def test_offsets_advance_by_what_each_page_held(self, rest: LoopbackServer) -> None:
        """Page two is asked for at the offset after page one's entries, and `more: false` ends it."""
        second = {**WINDOW, "id": "PW00002"}

        def answer(request: Request) -> dict[str, Any]:
            if request.first("offset") == "0":
                return {"maintenance_windows": [WINDOW], "more": True}
            return {"maintenance_windows": [second], "more": False}

        pages = Pages(answer)
        result = await windows_from(rest, pages)
        assert [r.first("offset") for r in pages.requests] == ["0", "1"]
        assert [w.id for w in result.windows] == ["PW00001", "PW00002"]

    @pytest.mark.anyio
    @pytest.mark.parametrize("bad", [1, "window", None, [], {"id": "PWBAD"}, {**WINDOW, "id": "PWBAD", "end_time": 5}])
    async def test_one_malformed_entry_does_not_fail_the_poll(self, rest: LoopbackServer, bad: object) -> None:
        """A number, a string, null or a window without times is skipped; the valid window is kept."""
        pages = Pages(lambda request: {"maintenance_windows": [bad, WINDOW], "more": False})
        result = await windows_from(rest, pages)
        assert [w.id for w in result.windows] == ["PW00001"]


class TestAnswerBounds:
    """An answer too large, compressed, or not JSON is a readable failure, never a crash."""

    @pytest.mark.anyio
    async def test_a_compressed_answer_is_refused_before_inflating(self, rest: LoopbackServer) -> None:
        """A gzip answer (a bomb, possibly) is refused although identity was asked for."""
        body = gzip.compress(json.dumps({"maintenance_windows": [], "more": False}).encode())
        pages = Pages(lambda request: Response(200, body, headers=(("Content-Encoding", "gzip"),)))
        with pytest.raises(MaintenanceUnavailable, match="AnswerEncoded"):
            await windows_from(rest, pages)
        assert pages.requests[0].header("accept-encoding") == "identity"

    @pytest.mark.anyio
    async def test_an_answer_over_a_mebibyte_is_refused(self, rest: LoopbackServer) -> None:
        """A 2 MiB answer is cut at the cap."""
        huge = json.dumps({"maintenance_windows": [], "more": False, "pad": "x" * (2 * 1024 * 1024)}).encode()
        pages = Pages(lambda request: Response(200, huge))
        with pytest.raises(MaintenanceUnavailable, match="AnswerTooLarge"):
            await windows_from(rest, pages)

    @pytest.mark.anyio
    @pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"more": false}', b'{"n": 1' + b"1" * 5000 + b"}"])
    async def test_garbage_is_a_readable_failure(self, rest: LoopbackServer, body: bytes) -> None:
        """Text, a list, a page without windows or a 5,000-digit number: MaintenanceUnavailable, not a crash."""
        pages = Pages(lambda request: Response(200, body))
        with pytest.raises(MaintenanceUnavailable, match="PagerDuty REST API"):
            await windows_from(rest, pages)


_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=40))
_json = st.recursive(
    _json_leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
_window_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(max_size=10), _json),
        "start_time": st.one_of(st.just("2026-12-01T10:00:00Z"), st.text(max_size=30), _json),
        "end_time": st.one_of(st.just("2026-12-01T12:00:00Z"), st.text(max_size=30), _json),
        "description": _json,
        "services": st.one_of(st.just([{"id": SERVICE}]), _json),
    },
)
_page = st.one_of(
    st.fixed_dictionaries(
        {"maintenance_windows": st.lists(st.one_of(_window_like, _json), max_size=5)},
        optional={"more": _json, "offset": _json},
    ),
    _json,
)


class TestAnyRestAnswer:
    """Property (issue 11): any REST answer gives windows or a readable MaintenanceUnavailable, never another error."""

    @settings(
        max_examples=int(os.environ.get("DEPMON_HYPOTHESIS_EXAMPLES", "60")),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(page=_page, status=st.sampled_from([200, 200, 200, 400, 401, 429, 500]))
    def test_windows_or_a_readable_error(self, rest: LoopbackServer, page: Any, status: int) -> None:
        """Generated pages (garbage, wrong types, malformed windows) and statuses never crash the client."""
        body = json.dumps(page).encode()
        pages = Pages(lambda request: Response(status, body))
        outcome = anyio.run(_windows_or_reason, rest, pages)
        if isinstance(outcome, str):
            assert outcome.startswith("PagerDuty REST API")
            assert TOKEN.get_secret_value() not in outcome
        else:
            assert all(window.service_ids == (SERVICE,) for window in outcome)


async def _windows_or_reason(rest: LoopbackServer, pages: Pages) -> list[Any] | str:
    """The windows read, or the reason of the MaintenanceUnavailable; any other exception escapes."""
    try:
        return list((await windows_from(rest, pages)).windows)
    except MaintenanceUnavailable as exc:
        return exc.reason
