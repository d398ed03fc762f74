"""The HTTP endpoints (SPEC section 5): read-only views of the daemon's state.

Served by hypercorn inside the daemon's own anyio task group (no second event loop, no
thread). Every handler reads the current `View`; none of them changes state.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import anyio.to_thread
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from monitor.engine import Engine
from monitor.incidents import OpenIncident
from monitor.metrics import Metrics
from monitor.reports import app_maintenance_windows
from monitor.selfwatch import SelfState
from monitor.statuspage import render_status_page


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


def create_app(view: View, clock: Callable[[], float]) -> Starlette:
    """The ASGI app of the daemon's endpoints."""

    async def metrics(request: Request) -> Response:
        registry = view.metrics.registry
        # Rendered in a worker thread: at 10,000 series it takes long enough to stall the probes'
        # event loop, and a scrape must not make probes time out (prometheus_client locks its own).
        if "application/openmetrics-text" in request.headers.get("accept", ""):
            body = await anyio.to_thread.run_sync(generate_openmetrics, registry)
            return Response(body, media_type=OPENMETRICS_CONTENT_TYPE)
        body = await anyio.to_thread.run_sync(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        if view.alive:
            return PlainTextResponse("ok\n")
        return PlainTextResponse("scheduler not running\n", status_code=503)

    async def readyz(request: Request) -> Response:
        if view.engine.ready:
            return PlainTextResponse("ready\n")
        return PlainTextResponse("waiting for every probe to run once\n", status_code=503)

    async def status(request: Request) -> Response:
        return JSONResponse(status_document(view, clock()))

    async def maintenance_windows(request: Request) -> Response:
        camel = request.headers.get("x-key-inflection", "").lower() == "camel"
        engine = view.engine
        return JSONResponse({"data": app_maintenance_windows(engine.config, engine.windows, clock(), camel)})

    async def index(request: Request) -> Response:
        return HTMLResponse(render_status_page(status_document(view, clock())))

    return Starlette(
        routes=[
            Route("/", index),
            Route("/metrics", metrics),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/status", status),
            Route("/maintenance_windows", maintenance_windows),
        ]
    )


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def status_document(view: View, now: float) -> dict[str, Any]:
    """The `/status` JSON (SPEC section 5)."""
    engine = view.engine
    config = engine.config
    dependencies: dict[str, Any] = {}
    for dep_id, dep in config.dependencies.items():
        state = engine.dependencies[dep_id]
        window = engine.dependency_windows.get(dep_id)
        probes = {}
        for name, health in engine.probes_of(dep_id):
            last = health.last
            probes[name] = {
                "state": str(health.status),
                "ok": last.ok if last else None,
                "outcome": str(last.outcome) if last else None,
                "detail": last.detail if last else None,
                "latency_seconds": round(last.latency_seconds, 4) if last else None,
                "at": _iso(last.at) if last else None,
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
        }
    features = {
        feat_id: {
            "name": feature.name,
            "state": str(engine.features[feat_id].state),
            "since": _iso(engine.feature_since.get(feat_id)),
            "impacted_by": list(engine.features[feat_id].impacted_by),
        }
        for feat_id, feature in config.features.items()
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
        "dependencies": dependencies,
        "features": features,
        "incidents": incidents,
    }
