"""Maintenance windows as the app and its people see them: the features each window covers, and the
body of `/maintenance_windows` in vets-api's mobile shape (SPEC 10.7)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from monitor.config import Config
from monitor.maintenance.app_graph import APP_FEATURES, affected_services, downstream, window_hits
from monitor.maintenance.records import MaintenanceWindow
from monitor.state.impact import FeatureNeeds, features_covered, needs_from_config
from monitor.text import vets_api_time


def covered_nodes(window: MaintenanceWindow, owners: Mapping[str, list[str]]) -> set[str]:
    """The dependency and feature ids whose PagerDuty services `window` covers."""
    return {node for service in window.service_ids for node in owners.get(service, [])}


def covered_features(
    window: MaintenanceWindow, owners: Mapping[str, list[str]], needs: Mapping[str, FeatureNeeds]
) -> list[str]:
    """The features `window` takes out, through the graph, in config order."""
    return features_covered(needs, covered_nodes(window, owners))


# vets-api's namespace for the uuid5 that identifies a feature's maintenance window (SPEC 10.7).
APP_WINDOW_NAMESPACE = uuid.UUID("fa1a248e-0f71-4077-8d25-ed7430bcdb34")


def app_maintenance_windows(
    config: Config, windows: Sequence[MaintenanceWindow], now: float, camel: bool = False
) -> list[dict[str, Any]]:
    """The `data` of `/maintenance_windows`: what vets-api's mobile endpoint serves the app.

    Open and upcoming windows (those that end after `now`, UNIX time) expanded through the graph
    to the app features they cover; one record per feature the app knows, from the window that
    starts first (of two starting together, the one ending last). Attributes are exactly
    `service`, `start_time` and `end_time` (`startTime`, `endTime` with `camel`): the window's
    description is for people, in /status. Records in config order of the features.

    With `app_graph` (SPEC 11.1), exactly what vets-api serves for these windows: its
    ServiceGraph walk (`app_graph.affected_services`), records in the order it makes them; a
    feature's own `pagerduty_service` does not count then.
    """
    at = datetime.fromtimestamp(now, UTC)
    current = [window for window in windows if window.end > at]
    if config.app_graph is not None:
        shown = affected_services(downstream(config.app_graph.edges), window_hits(config, current))
        return [_record(service, window, camel) for service, window in shown.items()]
    needs = needs_from_config(config.features)
    owners = config.service_owners()
    first: dict[str, MaintenanceWindow] = {}
    for window in sorted(current, key=lambda w: (w.start, -w.end.timestamp(), w.id)):
        for feature in covered_features(window, owners, needs):
            first.setdefault(feature, window)
    return [
        _record(feature, first[feature], camel)
        for feature in config.features
        if feature in first and feature in APP_FEATURES
    ]


def _record(service: str, window: MaintenanceWindow, camel: bool) -> dict[str, Any]:
    """One record of `/maintenance_windows`, as vets-api's serializer emits it."""
    attributes = {
        "service": service,
        "start_time": vets_api_time(window.start),
        "end_time": vets_api_time(window.end),
    }
    if camel:
        attributes = {_camel(key): value for key, value in attributes.items()}
    return {
        "id": str(uuid.uuid5(APP_WINDOW_NAMESPACE, service)),
        "type": "maintenance_window",
        "attributes": attributes,
    }


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)
