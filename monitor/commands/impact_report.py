"""Read-only reports on the config and PagerDuty's windows: `depmon impact`, `depmon maintenance`
and the body of `/maintenance_windows` (the app's view of the windows, SPEC 10.7).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from monitor.config import Config
from monitor.maintenance.records import MaintenanceWindow
from monitor.state.graph import children_of, descendants
from monitor.state.health import DependencyHealth, DependencyState
from monitor.state.impact import FeatureNeeds, FeatureState, evaluate_features, features_covered, needs_from_config
from monitor.text import vets_api_time


@dataclass(frozen=True, slots=True)
class OutageImpact:
    """What one dependency's outage does to the app features, in config order.

    `degraded` maps each feature it degrades to the `any_of` alternatives that still serve it
    (empty when the feature is degraded through another feature rather than an alternative).
    """

    down: tuple[str, ...]
    degraded: dict[str, tuple[str, ...]]


def impact_map(config: Config) -> dict[str, OutageImpact]:
    """Dependency id -> the features its outage takes down and the ones it degrades.

    Worked out with the daemon's own rules (`evaluate_features`): the dependency down, the ones
    that need it (`depends_on`) down with it as their cause, every other dependency up.
    """
    needs = needs_from_config(config.features)
    children = children_of({d: dep.depends_on for d, dep in config.dependencies.items()})
    result = {}
    for dep_id in config.dependencies:
        below = descendants(children, [dep_id])  # their probes need the one that is down: down with it
        states = {d: _outage_state(d, dep_id, below) for d in config.dependencies}
        features = evaluate_features(needs, states)
        unavailable = {d for d, state in states.items() if state.down}
        unavailable |= {f for f, health in features.items() if health.state is FeatureState.DOWN}
        result[dep_id] = OutageImpact(
            down=tuple(f for f, health in features.items() if health.state is FeatureState.DOWN),
            degraded={
                f: tuple(n for n in config.features[f].any_of if n not in unavailable)
                for f, health in features.items()
                if health.state is FeatureState.DEGRADED
            },
        )
    return result


def _outage_state(dep: str, outage: str, below: set[str]) -> DependencyHealth:
    if dep == outage:
        return DependencyHealth(DependencyState.DOWN, DependencyState.DOWN, failing=True)
    if dep in below:
        return DependencyHealth(DependencyState.DOWN, DependencyState.DOWN, cause=outage, failing=True)
    return DependencyHealth(DependencyState.UP, DependencyState.UP)


def render_impact(config: Config, fmt: str) -> str:
    """The dependency -> feature map as text, a mermaid flowchart or a graphviz digraph.

    Text: one line per dependency, the features its outage takes down and the ones it degrades
    (with the alternatives left). Diagrams: the graph itself; a solid edge takes the feature down
    with its source, a dashed `degrades` edge is one `any_of` alternative (every one down: down).
    """
    if fmt == "text":
        return "\n".join(_impact_line(config, dep_id, impact) for dep_id, impact in impact_map(config).items())
    edges: list[tuple[str, str, str]] = []  # (from, to, kind): "token", "requires" or "degrades"
    for dep_id, dep in config.dependencies.items():
        edges += [(parent, dep_id, "token") for parent in dep.depends_on]
    for feat_id, feature in config.features.items():
        edges += [(node, feat_id, "requires") for node in feature.requires]
        edges += [(node, feat_id, "degrades") for node in feature.any_of]
    if fmt == "mermaid":
        out = ["flowchart LR", "  %% solid: down with its source; dashed: degrades (down when every alternative is)"]
        out += [f'  {_mid(d)}["{dep.name}"]' for d, dep in config.dependencies.items()]
        out += [f'  {_mid(f)}(["{feat.name}"])' for f, feat in config.features.items()]
        out += [f"  {_mid(a)} {_MERMAID_ARROWS[kind]} {_mid(b)}" for a, b, kind in edges]
        return "\n".join(out)
    out = ["digraph depmon {", "  rankdir=LR;"]
    out += [f'  "{d}" [label="{dep.name}", shape=box];' for d, dep in config.dependencies.items()]
    out += [f'  "{f}" [label="{feat.name}", shape=ellipse];' for f, feat in config.features.items()]
    out += [f'  "{a}" -> "{b}"{_DOT_ATTRIBUTES[kind]};' for a, b, kind in edges]
    out.append("}")
    return "\n".join(out)


_MERMAID_ARROWS = {"token": "-->|token|", "requires": "-->", "degrades": "-. degrades .->"}
_DOT_ATTRIBUTES = {"token": ' [label="token"]', "requires": "", "degrades": ' [label="degrades", style=dashed]'}


def _impact_line(config: Config, dep_id: str, impact: OutageImpact) -> str:
    dep = config.dependencies[dep_id]
    parents = f" (needs {', '.join(dep.depends_on)})" if dep.depends_on else ""
    parts = []
    if impact.down:
        parts.append("down: " + ", ".join(config.features[f].name for f in impact.down))
    if impact.degraded:
        parts.append("degrades: " + ", ".join(_degraded(config, f, left) for f, left in impact.degraded.items()))
    return f"{dep.name} [{dep_id}]{parents} -> {'; '.join(parts) or 'no feature'}"


def _degraded(config: Config, feature: str, alternatives: tuple[str, ...]) -> str:
    name = config.features[feature].name
    if not alternatives:
        return name
    return f"{name} (alternatives: {', '.join(_node_name(config, n) for n in alternatives)})"


def _node_name(config: Config, node: str) -> str:
    if node in config.dependencies:
        return config.dependencies[node].name
    return config.features[node].name


def _mid(ident: str) -> str:
    return ident.replace("-", "_")


async def run_maintenance(config: Config, out: TextIO) -> int:
    """Print open and upcoming windows per dependency; 1 when PagerDuty cannot be read."""
    from monitor.pagerduty.clients import MaintenanceClient, MaintenanceUnavailable

    pd = config.pagerduty
    if not pd.api_token.get_secret_value():
        print("no PagerDuty API token (pagerduty.api_token): maintenance windows cannot be read", file=out)
        return 1
    owners = config.service_owners()
    client = MaintenanceClient(pd.api_url, pd.api_token)
    try:
        result = await client.open_windows(list(owners))
    except MaintenanceUnavailable as exc:
        print(f"PagerDuty maintenance windows cannot be read: {exc}", file=out)
        return 1
    finally:
        client.close()
    needs = needs_from_config(config.features)
    now = datetime.now(UTC)
    if not result.windows:
        print("no open or upcoming maintenance windows", file=out)
    for window in sorted(result.windows, key=lambda w: w.start):
        nodes = sorted(_covered_nodes(window, owners))
        when = "open now" if window.is_open_at(now) else "upcoming"
        features = _covered_features(window, owners, needs)
        print(f"{window.start.isoformat()} .. {window.end.isoformat()}  [{when}]  {', '.join(nodes)}", file=out)
        print(f"    {window.description or '(no description)'}", file=out)
        print(f"    features: {', '.join(config.features[f].name for f in features) or '-'}", file=out)
    for bad in result.bad_service_ids:
        print(
            f"warning: PagerDuty refused service id {bad} ({', '.join(owners.get(bad, ['?']))}); "
            "check its pagerduty_service",
            file=out,
        )
    return 0


def _covered_nodes(window: MaintenanceWindow, owners: Mapping[str, list[str]]) -> set[str]:
    """The dependency and feature ids whose PagerDuty services `window` covers."""
    return {node for service in window.service_ids for node in owners.get(service, [])}


def _covered_features(
    window: MaintenanceWindow, owners: Mapping[str, list[str]], needs: Mapping[str, FeatureNeeds]
) -> list[str]:
    """The features `window` takes out, through the graph, in config order."""
    return features_covered(needs, _covered_nodes(window, owners))


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
        for feature in _covered_features(window, owners, needs):
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
