"""The HTTP endpoints (SPEC section 5): read-only views of the daemon's state.

Served by hypercorn inside the daemon's own anyio task group (no second event loop, no
thread). Every handler reads the current `View`; none of them changes state.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from monitor.engine import Engine
from monitor.impact import features_covered, needs_from_config
from monitor.incidents import OpenIncident
from monitor.metrics import Metrics
from monitor.statuspage import render_status_page

# vets-api identifies a feature's maintenance window with a uuid5 of the feature name.
_WINDOW_NAMESPACE = uuid.UUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8")  # RFC 4122 NAMESPACE_URL


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


def create_app(view: View, clock: Callable[[], float]) -> Starlette:
    """The ASGI app of the daemon's endpoints."""

    async def metrics(request: Request) -> Response:
        registry = view.metrics.registry
        if "application/openmetrics-text" in request.headers.get("accept", ""):
            body = generate_openmetrics(registry)  # type: ignore[no-untyped-call]
            return Response(body, media_type=OPENMETRICS_CONTENT_TYPE)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

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
        return JSONResponse({"data": maintenance_records(view.engine, clock(), camel)})

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
        }
        for incident in view.open_incidents.values()
    ]
    return {
        "environment": config.monitor.environment,
        "generated_at": _iso(now),
        "ready": engine.ready,
        "dependencies": dependencies,
        "features": features,
        "incidents": incidents,
    }


def maintenance_records(engine: Engine, now: float, camel: bool = False) -> list[dict[str, Any]]:
    """Open windows expanded to app features, in the shape of vets-api's mobile endpoint."""
    config = engine.config
    at = datetime.fromtimestamp(now, UTC)
    needs = needs_from_config(config.features)
    service_nodes = config.service_owners()
    by_feature: dict[str, tuple[datetime, datetime, str]] = {}
    for window in engine.windows:
        if not window.is_open_at(at):
            continue
        covered = {n for s in window.service_ids for n in service_nodes.get(s, [])}
        for feature in features_covered(needs, covered):
            start, end = window.start, window.end
            if feature in by_feature:  # several windows: the feature is out from the first start to the last end
                start, end = min(start, by_feature[feature][0]), max(end, by_feature[feature][1])
            by_feature[feature] = (start, end, window.description)
    records = []
    for feature, (start, end, description) in by_feature.items():
        attributes = {
            "service": feature,
            "start_time": _zulu(start),
            "end_time": _zulu(end),
            "description": _user_message(description),
        }
        if camel:
            attributes = {_camel(k): v for k, v in attributes.items()}
        records.append(
            {"id": str(uuid.uuid5(_WINDOW_NAMESPACE, feature)), "type": "maintenance_window", "attributes": attributes}
        )
    return records


def _zulu(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _user_message(description: str) -> str | None:
    # vets-api shows users only the text after USER_MESSAGE: (`USER_MESSAGE:Title|Body`, 255 chars).
    marker = "USER_MESSAGE:"
    if marker not in description:
        return None
    return description.split(marker, 1)[1].strip()[:255]


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)
