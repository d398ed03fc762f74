"""The app's own map (SPEC 11.1), pure: vets-api's ServiceGraph as data, the banners a window puts up
in the app, and where depmon's feature graph and the app's graph differ (drift). No I/O.

vets-api's mobile `MaintenanceWindowsController` turns each PagerDuty window into downtime
banners with `Mobile::V0::ServiceGraph#affected_services`: from the node the window names, a
breadth-first walk down the edges; every node reached, other than that one, that is a leaf (no
edge leaves it) gets a record; where several windows reach a leaf, the one starting first wins
(a later window with the same start does not replace it). `affected_services` here is that walk.

The four kinds of drift, each a list of `Difference`:
(a) `banner_drift`: per dependency, the app services its outage impacts in depmon's graph
    versus the banners a window on it shows (`app_banners`);
(b) `edge_drift`: edges only in the configured graph, or only in a controller file;
(c) `leaf_drift`: leaves of the graph versus the app's downtime services;
(d) `name_drift`: dependencies without `vets_api`, and `vets_api` names no edge mentions.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from monitor.config import Config
from monitor.maintenance.records import MaintenanceWindow
from monitor.state.impact import feature_order, features_covered, needs_from_config

Edge = tuple[str, str]

# The feature names the mobile app knows (depmon's list, SPEC 10.7): vets-api's published response
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

# The service names the app keeps from the endpoint (va-mobile-app's `DowntimeFeatureTypeConstants`),
# read from the public repository, never fetched at run time; `depmon app-graph diff --app FILE`
# reads a newer copy.
APP_DOWNTIME_SOURCE = "va-mobile-app 16df745743610d74bf18c8b7aaabe683ffe70cec, VAMobile/src/store/api/types/Errors.ts"
APP_DOWNTIME_SERVICES = (
    "facility_locator",
    "appeals",
    "military_service_history",
    "claims",
    "direct_deposit_benefits",
    "disability_rating",
    "immunizations",
    "letters_and_documents",
    "secure_messaging",
    "appointments",
    "user_profile_update",
    "payment_history",
    "rx_refill",
)


def downstream(edges: Iterable[Edge]) -> dict[str, list[str]]:
    """Node -> the nodes its edges lead to, in the order the edges are listed; every node has an entry."""
    children: dict[str, list[str]] = {}
    for upstream, node in edges:
        children.setdefault(upstream, [])
        children.setdefault(node, [])
        if node not in children[upstream]:
            children[upstream].append(node)
    return children


def leaves(children: Mapping[str, Sequence[str]]) -> list[str]:
    """The nodes no edge leaves: the app services vets-api can put a banner on."""
    return [node for node, below in children.items() if not below]


def leaves_below(children: Mapping[str, Sequence[str]], node: str) -> list[str]:
    """The leaves a window on `node` reaches, `node` itself excluded, in breadth-first order."""
    found: list[str] = []
    seen = {node}
    queue = deque(children.get(node, ()))
    seen.update(queue)
    while queue:
        current = queue.popleft()
        below = children.get(current, ())
        if not below:
            found.append(current)
        for child in below:
            if child not in seen:
                seen.add(child)
                queue.append(child)
    return found


def affected_services(
    children: Mapping[str, Sequence[str]], hits: Iterable[tuple[str, MaintenanceWindow]]
) -> dict[str, MaintenanceWindow]:
    """App service -> the window its banner shows, as vets-api's `affected_services` decides it.

    `hits` are (vets-api node, window) pairs in PagerDuty's order. Services are in the order they
    first got a window, as vets-api's hash keeps them.
    """
    shown: dict[str, MaintenanceWindow] = {}
    for node, window in hits:
        for leaf in leaves_below(children, node):
            if leaf not in shown or window.start < shown[leaf].start:
                shown[leaf] = window
    return shown


def names_by_service(config: Config) -> dict[str, list[str]]:
    """PagerDuty service id -> the vets-api nodes a window on it counts for (dependencies' `vets_api`
    names, then `app_graph.pagerduty_services`)."""
    names: dict[str, list[str]] = {}
    for dep in config.dependencies.values():
        if dep.pagerduty_service and dep.vets_api:
            names.setdefault(dep.pagerduty_service, []).extend(dep.vets_api)
    if config.app_graph is not None:
        for name, service in config.app_graph.pagerduty_services.items():
            if service:
                names.setdefault(service, []).append(name)
    return {service: list(dict.fromkeys(found)) for service, found in names.items()}


def window_hits(config: Config, windows: Iterable[MaintenanceWindow]) -> list[tuple[str, MaintenanceWindow]]:
    """(vets-api node, window) for each node each window counts for, in PagerDuty's order."""
    by_service = names_by_service(config)
    return [
        (name, window) for window in windows for service in window.service_ids for name in by_service.get(service, ())
    ]


def app_services(config: Config) -> frozenset[str]:
    """The names the app knows for its services: depmon's bundled list and the graph's leaves."""
    known = set(APP_FEATURES)
    if config.app_graph is not None:
        known.update(leaves(downstream(config.app_graph.edges)))
    return frozenset(known)


def app_banners(config: Config, dependency: str) -> list[str]:
    """The app services that show a downtime banner when a window is opened on `dependency` now.

    With `app_graph`: the leaves its `vets_api` names reach. Without: depmon's own view (SPEC
    10.7), the app services its outage takes down in depmon's feature graph.
    """
    if config.app_graph is None:
        return depmon_app_services(config, dependency)
    return _leaves_of(downstream(config.app_graph.edges), config.dependencies[dependency].vets_api or ())


def _leaves_of(children: Mapping[str, Sequence[str]], names: Sequence[str]) -> list[str]:
    """The leaves below any of `names`, each once, in the order found."""
    found: list[str] = []
    for name in names:
        found.extend(leaf for leaf in leaves_below(children, name) if leaf not in found)
    return found


def depmon_app_services(config: Config, dependency: str) -> list[str]:
    """The app services an outage of `dependency` impacts in depmon's feature graph, in config order."""
    known = app_services(config)
    return [f for f in features_covered(needs_from_config(config.features), {dependency}) if f in known]


def app_banners_of(config: Config) -> dict[str, list[str]]:
    """`app_banners` of every dependency, the graphs walked once: what the pager keeps per config, so a
    page costs a look-up, not a walk of the config (1,000 pages at once took seconds)."""
    if config.app_graph is not None:
        children = downstream(config.app_graph.edges)
        return {dep_id: _leaves_of(children, dep.vets_api or ()) for dep_id, dep in config.dependencies.items()}
    known = app_services(config)
    needs = needs_from_config(config.features)
    order = feature_order(needs)
    return {
        dep_id: [f for f in features_covered(needs, {dep_id}, order) if f in known] for dep_id in config.dependencies
    }


@dataclass(frozen=True, slots=True)
class Difference:
    """One difference between two maps: what it is about and the two sides (`only_*` may be empty)."""

    kind: str  # "banners", "edges", "leaves", "names"
    subject: str
    text: str
    left: tuple[str, ...] = ()
    right: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        """The difference as /status and `--json` show it: `first` is what only depmon's side has
        (its graph, the configured edges, the graph's leaves, the dependency's names), `second` what
        only the other side has."""
        return {
            "kind": self.kind,
            "subject": self.subject,
            "text": self.text,
            "first": list(self.left),
            "second": list(self.right),
        }


def banner_drift(config: Config) -> list[Difference]:
    """(a) Per reviewed dependency: the app services depmon's graph impacts versus its banners."""
    if config.app_graph is None:
        return []
    found = []
    for dep_id, dep in config.dependencies.items():
        if dep.vets_api is None:
            continue  # not reviewed yet: kind (d) says so
        ours, app = depmon_app_services(config, dep_id), app_banners(config, dep_id)
        if set(ours) == set(app):
            continue
        only_ours = tuple(f for f in ours if f not in app)
        only_app = tuple(f for f in app if f not in ours)
        parts = []
        if only_ours:
            parts.append(f"depmon's graph impacts {', '.join(only_ours)}, which a window on it shows no banner for")
        if only_app:
            parts.append(
                f"a window on it shows banners for {', '.join(only_app)}, which depmon's graph does not impact"
            )
        found.append(Difference("banners", dep_id, f"{dep_id}: {'; '.join(parts)}", only_ours, only_app))
    return found


def edge_drift(configured: Sequence[Edge], other: Sequence[Edge], other_name: str) -> list[Difference]:
    """(b) Edges only in the configured `app_graph`, and edges only in `other` (a controller file)."""
    mine, theirs = set(configured), set(other)
    only_mine = tuple(f"{a} -> {b}" for a, b in configured if (a, b) not in theirs)
    only_theirs = tuple(f"{a} -> {b}" for a, b in other if (a, b) not in mine)
    found = []
    if only_mine:
        found.append(Difference("edges", "app_graph", f"only in app_graph: {', '.join(only_mine)}", only_mine))
    if only_theirs:
        text = f"only in {other_name}: {', '.join(only_theirs)}"
        found.append(Difference("edges", other_name, text, (), only_theirs))
    return found


def leaf_drift(edges: Sequence[Edge], downtime_services: Sequence[str], app_name: str) -> list[Difference]:
    """(c) Leaves the graph serves that the app ignores, and the app's services no leaf gives."""
    graph_leaves = leaves(downstream(edges))
    ignored = tuple(leaf for leaf in graph_leaves if leaf not in downtime_services)
    never = tuple(service for service in downtime_services if service not in graph_leaves)
    found = []
    if ignored:
        text = f"leaves the app ignores (not in {app_name}): {', '.join(ignored)}"
        found.append(Difference("leaves", "graph", text, ignored))
    if never:
        text = f"app services no leaf of the graph gives (never a banner): {', '.join(never)}"
        found.append(Difference("leaves", "app", text, (), never))
    return found


def name_drift(config: Config, edges: Sequence[Edge]) -> list[Difference]:
    """(d) Dependencies whose `vets_api` is not set, and `vets_api` names no edge mentions."""
    nodes = set(downstream(edges))
    found = []
    unreviewed = tuple(dep_id for dep_id, dep in config.dependencies.items() if dep.vets_api is None)
    if unreviewed:
        text = f"no vets_api (not reviewed): {', '.join(unreviewed)}"
        found.append(Difference("names", "unreviewed", text, unreviewed))
    for dep_id, dep in config.dependencies.items():
        unknown = tuple(name for name in dep.vets_api or () if name not in nodes)
        if unknown:
            text = f"{dep_id}: vets_api names no edge mentions: {', '.join(unknown)}"
            found.append(Difference("names", dep_id, text, unknown))
    return found


def config_drift(config: Config) -> list[Difference]:
    """Drift kinds (a) and (d), which the config alone decides (/status, `depmon_app_graph_drift`)."""
    if config.app_graph is None:
        return []
    return banner_drift(config) + name_drift(config, config.app_graph.edges)


def app_graph_status(config: Config) -> dict[str, Any] | None:
    """`/status`'s `app_graph`: the graph's source and drift kinds (a) and (d); None without `app_graph`."""
    if config.app_graph is None:
        return None
    return {"source": config.app_graph.source, "drift": [d.as_json() for d in config_drift(config)]}
