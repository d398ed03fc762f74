"""Maintenance windows as the app and its people see them: the features each window covers, and the
body of `/maintenance_windows` in vets-api's mobile shape (SPEC 10.7)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from monitor.config import Config
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

# The feature names the mobile app knows (reference/va-facts.md): vets-api's published response
# schema enumerates `service`, so a feature the app does not know (depmon's `authentication`,
# `push_notifications`, ...) is left out of the app's view; it stays in /status. The bundled
# features that the app knows already carry the app's name as their id.
APP_FEATURES = frozenset(
    {
        "appeals",
        "claims",
        "direct_deposit_benefits",
        "disability_rating",
        "letters_and_documents",
        "secure_messaging",
        "appointments",
        "immunizations",
        "rx_refill",
        "user_profile_update",
        "user_contact_update",
        "user_demographics",
        "military_service_history",
        "payment_history",
        "facility_locator",
        "efolder",
        "preneed_burial",
    }
)


def app_maintenance_windows(
    config: Config, windows: Sequence[MaintenanceWindow], now: float, camel: bool = False
) -> list[dict[str, Any]]:
    """The `data` of `/maintenance_windows`: what vets-api's mobile endpoint serves the app.

    Open and upcoming windows (those that end after `now`, UNIX time) expanded through the graph
    to the app features they cover; one record per feature the app knows, from the window that
    starts first (of two starting together, the one ending last). Attributes are exactly
    `service`, `start_time` and `end_time` (`startTime`, `endTime` with `camel`): the window's
    description is for people, in /status. Records in config order of the features.
    """
    at = datetime.fromtimestamp(now, UTC)
    needs = needs_from_config(config.features)
    owners = config.service_owners()
    first: dict[str, MaintenanceWindow] = {}
    for window in sorted(windows, key=lambda w: (w.start, -w.end.timestamp(), w.id)):
        if window.end <= at:
            continue
        for feature in covered_features(window, owners, needs):
            first.setdefault(feature, window)
    records = []
    for feature in config.features:
        if feature not in first or feature not in APP_FEATURES:
            continue
        window = first[feature]
        attributes = {
            "service": feature,
            "start_time": vets_api_time(window.start),
            "end_time": vets_api_time(window.end),
        }
        if camel:
            attributes = {_camel(key): value for key, value in attributes.items()}
        records.append(
            {
                "id": str(uuid.uuid5(APP_WINDOW_NAMESPACE, feature)),
                "type": "maintenance_window",
                "attributes": attributes,
            }
        )
    return records


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)
