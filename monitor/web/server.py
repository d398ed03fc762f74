"""The HTTP endpoints (SPEC section 5): read-only views of the daemon's state.

Served by hypercorn, HTTP/1.1 only, inside the daemon's own anyio task group (no second event
loop, no thread; /metrics is rendered by a forked child, or on the event loop in pieces when the
child cannot: `monitor.metrics.render_forked`, `render`).
Every handler reads the current `View`; none of them changes state.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol

import h11
from hypercorn.asyncio import tcp_server
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, Event
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.h11 import H11Protocol
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from monitor.maintenance.app_view import app_maintenance_windows
from monitor.metrics import Metrics, render, render_forked
from monitor.paging.decisions import OpenIncident
from monitor.paging.event_content import signal_evidence
from monitor.state.disagreement import disagreement
from monitor.state.health import ProbeHealth
from monitor.state.impact import FeatureState
from monitor.state.live import Engine
from monitor.state.self_watch import SelfState
from monitor.store import Silence
from monitor.text import iso_utc
from monitor.web.status_page import render_status_page

# depmon's own surface (issue 11): a flood must not take the daemon's file descriptors or its event
# loop. A connection that sends nothing is closed after IDLE_CONNECTION_SECONDS (hypercorn's idle
# timer runs from accept, or the end of the last answer, until a whole request head has arrived,
# and bytes do not restart it, so a slow sender is closed too: HTTP/1.1 only, see `_Http11Only`);
# past MAX_CONCURRENT_REQUESTS, a request is answered 503 at once.
MAX_CONCURRENT_REQUESTS = 32
# /metrics has slots of its own (SPEC 11.4): 32 slow /status readers must not make a scrape 503.
# Prometheus scrapes one at a time per server; 4 leave room for a few servers and a person's curl.
MAX_CONCURRENT_SCRAPES = 4
IDLE_CONNECTION_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 10
ALWAYS_SERVED = ("/healthz", "/readyz")  # constant answers the kubelet must get, even under a flood
SCRAPE_PATHS = ("/metrics",)
HISTORY_SECONDS = 24 * 3600  # the status page's feature history: the last 24 hours

FeatureHistory = Mapping[str, Sequence[tuple[float, str]]]
"""Feature -> its (at, state) changes in time order, the first one possibly before the window."""


class View(Protocol):
    """What the endpoints read: provided by the running daemon."""

    @property
    def engine(self) -> Engine: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def alive(self) -> bool: ...
    @property
    def open_incidents(self) -> dict[str, OpenIncident]: ...
    @property
    def self_state(self) -> SelfState: ...
    @property
    def maintenance_status(self) -> dict[str, Any] | None: ...
    @property
    def app_graph(self) -> dict[str, Any] | None:
        """SPEC 11.1: the app_graph's source and drift (a) and (d), computed once per config; None without one."""
        ...

    @property
    def silences(self) -> list[Silence]: ...
    @property
    def replicas(self) -> list[dict[str, Any]]:
        """Among replicas (SPEC 10.6): each one, whether it leads and is live, what it sees down."""
        ...

    async def feature_history(self, since: float) -> dict[str, list[tuple[float, str]]]:
        """Feature -> (at, state) changes from `since` on, starting with the state in force then;
        read from the state file in a worker thread, never blocking the event loop."""
        ...


def create_app(
    view: View,
    clock: Callable[[], float],
    max_requests: int = MAX_CONCURRENT_REQUESTS,
    max_scrapes: int = MAX_CONCURRENT_SCRAPES,
) -> Starlette:
    """The ASGI app of the daemon's endpoints: at most `max_requests` readers and, apart, `max_scrapes`
    scrapes of /metrics at once (see `RequestCap`)."""

    async def metrics(request: Request) -> Response:
        openmetrics = "application/openmetrics-text" in request.headers.get("accept", "")
        # A forked child renders it on the other core; in slices on the loop when it cannot.
        body = await render_forked(view.metrics.registry, openmetrics)
        if body is None:
            body = await render(view.metrics.registry, openmetrics)
        return Response(body, media_type=OPENMETRICS_CONTENT_TYPE if openmetrics else CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        if view.alive:
            return PlainTextResponse("ok\n")
        return PlainTextResponse("scheduler not running\n", status_code=503)

    async def readyz(request: Request) -> Response:
        if view.engine.ready:
            return PlainTextResponse("ready\n")
        return PlainTextResponse("waiting for every probe to run once\n", status_code=503)

    async def document() -> dict[str, Any]:
        history = await view.feature_history(clock() - HISTORY_SECONDS)
        return status_document(view, clock(), history)  # read after the await: one consistent state

    async def status(request: Request) -> Response:
        return JSONResponse(await document())

    async def maintenance_windows(request: Request) -> Response:
        camel = request.headers.get("x-key-inflection", "").lower() == "camel"
        engine = view.engine.snapshot()
        return JSONResponse({"data": app_maintenance_windows(engine.config, list(engine.windows), clock(), camel)})

    async def index(request: Request) -> Response:
        return HTMLResponse(render_status_page(await document()))

    return Starlette(
        routes=[
            Route("/", index),
            Route("/metrics", metrics),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/status", status),
            Route("/maintenance_windows", maintenance_windows),
        ],
        middleware=[Middleware(RequestCap, limit=max_requests, own_slots={path: max_scrapes for path in SCRAPE_PATHS})],
    )


def _iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else iso_utc(timestamp)


def _maintenance_polling(status: dict[str, Any] | None) -> dict[str, Any] | None:
    """The poller's state with ISO times; None when polling is off (no API token)."""
    if status is None:
        return None
    return {**status, "last_success_at": _iso(status["last_success_at"])}


def history_segments(
    changes: Sequence[tuple[float, str]], current: tuple[float, str] | None, since: float, now: float
) -> list[dict[str, str | None]]:
    """The states of one feature from `since` to `now` as {from, to, state} segments covering the span.

    `changes` are its recorded (at, state) changes in time order; `current` is the engine's
    (since, state), which ends the span even when its change is not recorded yet. Time before
    the first known state is `unknown`; equal neighbours merge and empty segments are dropped.
    """
    points = list(changes)
    if current is not None and (not points or points[-1][1] != current[1]):
        points.append((max(current[0], points[-1][0]) if points else current[0], current[1]))
    spans: list[tuple[float, float, str]] = []
    start, state = since, str(FeatureState.UNKNOWN)
    for at, new_state in points:
        at = min(max(at, since), now)
        if at > start and new_state != state:
            spans.append((start, at, state))
            start = at
        state = new_state
    if now > start:
        spans.append((start, now, state))
    merged: list[tuple[float, float, str]] = []
    for span in spans:
        if merged and merged[-1][2] == span[2]:
            merged[-1] = (merged[-1][0], span[1], span[2])
        else:
            merged.append(span)
    return [{"from": _iso(begin), "to": _iso(end), "state": what} for begin, end, what in merged]


def _signal_view(health: ProbeHealth) -> dict[str, Any]:
    """A probe's traffic reading (value, query, point) and its latest inconclusive run, when it has them."""
    view: dict[str, Any] = {}
    reading = health.unanswered or health.last
    if reading is not None and reading.signal is not None:
        view["signal"] = signal_evidence(reading)
    if health.unanswered is not None:
        view["inconclusive"] = {
            "reason": health.unanswered.inconclusive,
            "detail": health.unanswered.detail,
            "at": _iso(health.unanswered.at),
        }
    return view


def status_document(view: View, now: float, history: FeatureHistory | None = None) -> dict[str, Any]:
    """The `/status` JSON (SPEC section 5); `history` gives each feature's `history_24h`."""
    engine = view.engine.snapshot()
    config = engine.config
    dependencies: dict[str, Any] = {}
    for dep_id, dep in config.dependencies.items():
        state = engine.dependencies[dep_id]
        window = engine.dependency_windows.get(dep_id)
        probes: dict[str, Any] = {}
        healths = dict(engine.probes[dep_id])
        for name in (p.name for p in dep.probes):
            health = healths.get(name)
            if health is None:  # disabled: shown, never run (SPEC 11.3)
                probes[name] = {"state": "disabled"}
                continue
            last = health.last
            probes[name] = {
                "state": str(health.status),
                "ok": last.ok if last else None,
                "outcome": str(last.outcome) if last else None,
                "detail": last.detail if last else None,
                "latency_seconds": round(last.latency_seconds, 4) if last else None,
                "at": _iso(last.at) if last else None,
                **_signal_view(health),
            }
        dependencies[dep_id] = {
            "name": dep.name,
            "state": str(state.state),
            "health": str(state.health),
            "since": _iso(engine.dependency_since.get(dep_id)),
            "cause": state.cause,
            "maintenance": (
                {
                    "id": window.id,
                    "start_time": window.start.isoformat(),
                    "end_time": window.end.isoformat(),
                    "description": window.description,
                }
                if window
                else None
            ),
            "probes": probes,
            "disagreement": disagreement(dep, engine.probes[dep_id]),
        }
    features: dict[str, Any] = {}
    for feat_id, feature in config.features.items():
        feature_state = str(engine.features[feat_id].state)
        since = engine.feature_since.get(feat_id)
        features[feat_id] = {
            "name": feature.name,
            "state": feature_state,
            "since": _iso(since),
            "impacted_by": list(engine.features[feat_id].impacted_by),
            "history_24h": history_segments(
                (history or {}).get(feat_id, ()),
                (since, feature_state) if since is not None else None,
                now - HISTORY_SECONDS,
                now,
            ),
        }
    incidents = [
        {
            "dedup_key": incident.dedup_key,
            "dependency": incident.dependency,
            "opened_at": _iso(incident.opened_at),
            "features": list(incident.features),
            "escalated": incident.escalated,
            "flapping": incident.flapping,
            "resolving_since": _iso(incident.up_since),
        }
        for incident in view.open_incidents.values()
    ]
    verdict = view.self_state
    return {
        "environment": config.monitor.environment,
        "generated_at": _iso(now),
        "ready": engine.ready,
        "self": {"condition": str(verdict.condition), "reason": verdict.reason or None},
        "maintenance_polling": _maintenance_polling(view.maintenance_status),
        "app_graph": view.app_graph,
        "silences": [
            {
                "id": s.id,
                "dependency": s.dependency,
                "since": _iso(s.created_at),
                "until": _iso(s.ends_at),
                "reason": s.reason,
            }
            for s in view.silences
        ],
        "replicas": view.replicas,
        "dependencies": dependencies,
        "features": features,
        "incidents": incidents,
    }


class _Slots:
    """A number of requests that may be in flight at once, and how many are."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0


class RequestCap:
    """ASGI middleware: at most `limit` HTTP requests in flight; beyond that, an immediate 503.

    `/healthz` and `/readyz` are always served: they cost nothing, and a scrape flood must not get
    the daemon restarted by its liveness probe. Each path of `own_slots` (/metrics) has that many
    slots of its own, which the other requests cannot take: slow `/status` readers do not turn
    Prometheus away. `refused` counts the requests turned away, `active` those in flight.
    """

    def __init__(
        self,
        app: ASGIApp,
        limit: int = MAX_CONCURRENT_REQUESTS,
        exempt: Collection[str] = ALWAYS_SERVED,
        own_slots: Mapping[str, int] | None = None,
    ):
        self.app = app
        self.exempt = frozenset(exempt)
        self._general = _Slots(limit)
        self._own = {path: _Slots(slots) for path, slots in (own_slots or {}).items()}
        self.refused = 0

    @property
    def active(self) -> int:
        """The requests in flight, every kind of slot together."""
        return self._general.active + sum(slots.active for slots in self._own.values())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        slots = self._own.get(scope["path"], self._general)
        if slots.active >= slots.limit:  # one event loop: no lock needed between the test and the increment
            self.refused += 1
            busy = PlainTextResponse(
                "depmon is busy: too many requests at once\n",
                status_code=503,
                headers={"Retry-After": "1", "Connection": "close"},
            )
            await busy(scope, receive, send)
            return
        slots.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            slots.active -= 1


class _NotHttp11(Exception):
    """A request head of another HTTP version: answered 505, then the connection is closed."""


class _Http11Protocol(H11Protocol):
    """hypercorn's HTTP/1.1 protocol without its two ways into HTTP/2 (h2c).

    In HTTP/2 every frame a client sends, a PING as much as a byte of one, restarts hypercorn's
    idle timer: a connection that never asks for anything stayed open for good, and 300 of them
    took every file descriptor of a daemon allowed 256 (issue 21). depmon's port speaks HTTP/1.1
    only (SPEC 11.4): `Upgrade: h2c` is ignored (the request is answered in HTTP/1.1, never 101),
    and the prior-knowledge preface (`PRI * HTTP/2.0`), like any version but 1.0 and 1.1, gets
    505 and the connection closed.
    """

    async def handle(self, event: Event) -> None:
        """Handle one event of the connection, closing it after a refused request head."""
        try:
            await super().handle(event)
        except _NotHttp11:
            await self.send(Closed())

    async def _check_protocol(self, event: h11.Request) -> None:
        if event.http_version not in (b"1.0", b"1.1"):
            await self._send_error_response(505)  # HTTP Version Not Supported
            raise _NotHttp11  # before the request reaches the app


class _Http11Only(ProtocolWrapper):
    """hypercorn's per-connection protocol, always `_Http11Protocol` (depmon serves no TLS, so no ALPN h2)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.protocol = _Http11Protocol(
            self.app,
            self.config,
            self.context,
            self.task_group,
            self.state,
            self.ssl,
            self.client,
            self.server,
            self.send,
        )


# hypercorn has no setting to refuse HTTP/2 in clear text; its TCP server builds each connection's
# protocol from this module-level name. depmon is the process, and its one server speaks HTTP/1.1.
tcp_server.ProtocolWrapper = _Http11Only  # type: ignore[attr-defined]


def server_config() -> HypercornConfig:
    """The hypercorn settings of depmon's server: short idle and read timeouts, no logs of its own."""
    config = HypercornConfig()
    config.accesslog = None
    config.errorlog = None  # our own logs say what matters (stdlib records go through structlog anyway)
    config.graceful_timeout = 2.0
    config.keep_alive_timeout = IDLE_CONNECTION_SECONDS
    config.read_timeout = READ_TIMEOUT_SECONDS
    config.h11_max_incomplete_size = 16 * 1024  # a request head larger than this is refused
    config.backlog = 128
    return config
