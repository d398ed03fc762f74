"""Pure impact graph: dependency states -> app feature states with their root causes.

A feature is (SPEC section 4):

- `down` if a required node is down or every `any_of` node is unavailable (some of them down);
- `maintenance` when the only cause is maintenance;
- `degraded` if a required node is degraded or some `any_of` nodes are unavailable;
- `unknown` while a node it needs has no result yet; `ok` otherwise.

Nodes are dependencies or other features (evaluated first). Every feature lists the root-cause
dependencies behind its state in `impacted_by`: a dependency down because its parent is down
is reported as the parent.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from monitor.config import Feature
from monitor.state.graph import propagate, topological_order
from monitor.state.health import DependencyHealth, DependencyState, root_cause


class FeatureState(enum.StrEnum):
    """An app feature's state."""

    UNKNOWN = "unknown"
    OK = "ok"
    DEGRADED = "degraded"
    DOWN = "down"
    MAINTENANCE = "maintenance"


# Worst first: the state a feature takes is the worst its inputs give.
_SEVERITY = (FeatureState.DOWN, FeatureState.MAINTENANCE, FeatureState.DEGRADED, FeatureState.UNKNOWN)


@dataclass(frozen=True, slots=True)
class FeatureHealth:
    """A feature's state and the root-cause dependencies behind it (sorted, empty when ok)."""

    state: FeatureState
    impacted_by: tuple[str, ...] = ()

    @property
    def impacted(self) -> bool:
        """Degraded or down: users notice."""
        return self.state in (FeatureState.DEGRADED, FeatureState.DOWN)


@dataclass(frozen=True, slots=True)
class FeatureNeeds:
    """What a feature needs: all of `requires`, and at least one of `any_of` (when given)."""

    requires: tuple[str, ...] = ()
    any_of: tuple[str, ...] = ()


def evaluate_features(
    needs: Mapping[str, FeatureNeeds], dependencies: Mapping[str, DependencyHealth]
) -> dict[str, FeatureHealth]:
    """Every feature's state and root causes, given every dependency's state."""
    nodes: dict[str, FeatureHealth] = {dep: dependency_node(dep, dependencies) for dep in dependencies}
    features: dict[str, FeatureHealth] = {}
    for feature in feature_order(needs):
        features[feature] = nodes[feature] = evaluate_feature(needs[feature], nodes)
    return {f: features[f] for f in needs}  # config order, for people reading /status and pages


def feature_parents(needs: Mapping[str, FeatureNeeds]) -> dict[str, list[str]]:
    """Feature -> the dependencies and features it needs: the feature graph for `monitor.state.graph`."""
    return {f: [*n.requires, *n.any_of] for f, n in needs.items()}


def feature_order(needs: Mapping[str, FeatureNeeds]) -> list[str]:
    """The features alone, each after the features it needs."""
    return [f for f in topological_order(feature_parents(needs)) if f in needs]


def reevaluate_features(
    seeds: Iterable[str],
    rank: Mapping[str, int],
    needs: Mapping[str, FeatureNeeds],
    needed_by: Mapping[str, Sequence[str]],
    nodes: Mapping[str, FeatureHealth],
) -> dict[str, FeatureHealth]:
    """The features that differ from `nodes` once the nodes in `seeds` have changed.

    The incremental twin of `evaluate_features`. `nodes` holds every dependency's node (already
    the new ones) and every feature's previous state; `seeds` are changed nodes, dependencies or
    features (a feature in `seeds` is evaluated even if nothing it needs changed). Features are
    evaluated in topological order (`rank`), and the features needing one only when it changed.
    `nodes` is not modified.
    """
    changed: dict[str, FeatureHealth] = {}
    current = _Overlay(nodes)

    def visit(feature: str) -> Sequence[str]:
        new = evaluate_feature(needs[feature], current)
        if new == nodes.get(feature):
            return ()
        changed[feature] = current[feature] = new
        return needed_by.get(feature, ())

    first = {f for node in seeds for f in ([node] if node in needs else needed_by.get(node, ()))}
    propagate(first, rank, visit)
    return changed


class _Overlay(dict[str, FeatureHealth]):
    """New values over a base mapping that is read through, never copied."""

    def __init__(self, base: Mapping[str, FeatureHealth]) -> None:
        super().__init__()
        self._base = base

    def __missing__(self, node: str) -> FeatureHealth:
        return self._base[node]


def dependency_nodes(
    changed: Iterable[str], children: Mapping[str, Sequence[str]], dependencies: Mapping[str, DependencyHealth]
) -> dict[str, FeatureHealth]:
    """The feature-graph node of each changed dependency and of each one whose root cause runs through it.

    A dependency's node depends on its own state and, when it is down because of a parent, on
    the state of its root cause (down, or in maintenance): a change anywhere on that chain of
    causes changes the node. So the dependencies to look at are the changed ones and their
    descendants along `cause` links, no further.
    """
    result: dict[str, FeatureHealth] = {}
    stack = list(changed)
    while stack:
        dep = stack.pop()
        if dep in result:
            continue
        result[dep] = dependency_node(dep, dependencies)
        stack += [child for child in children.get(dep, ()) if dependencies[child].cause == dep]
    return result


def dependency_node(dep: str, dependencies: Mapping[str, DependencyHealth]) -> FeatureHealth:
    """What dependency `dep` contributes to the features that need it: its state and root cause."""
    state = dependencies[dep]
    if state.state is DependencyState.MAINTENANCE:
        return FeatureHealth(FeatureState.MAINTENANCE, (dep,))
    if state.health is DependencyState.DOWN:
        root = root_cause(dep, dependencies)
        # Down only because an ancestor is down inside its maintenance window: the only cause is maintenance.
        if dependencies[root].state is DependencyState.MAINTENANCE:
            return FeatureHealth(FeatureState.MAINTENANCE, (root,))
        return FeatureHealth(FeatureState.DOWN, (root,))
    if state.health is DependencyState.DEGRADED:
        return FeatureHealth(FeatureState.DEGRADED, (dep,))
    if state.health is DependencyState.UNKNOWN:
        return FeatureHealth(FeatureState.UNKNOWN, (dep,))
    return FeatureHealth(FeatureState.OK)


def evaluate_feature(need: FeatureNeeds, nodes: Mapping[str, FeatureHealth]) -> FeatureHealth:
    """One feature's state and root causes from the states of the nodes it needs."""
    # Each input contributes (state, causes); the worst state wins and brings its causes.
    contributions: list[tuple[FeatureState, tuple[str, ...]]] = [
        (nodes[n].state, nodes[n].impacted_by) for n in need.requires
    ]
    if need.any_of:
        alternatives = [nodes[n] for n in need.any_of]
        unavailable = [a for a in alternatives if a.state in (FeatureState.DOWN, FeatureState.MAINTENANCE)]
        causes = _union(a.impacted_by for a in unavailable)
        if len(unavailable) == len(alternatives):
            all_maintenance = all(a.state is FeatureState.MAINTENANCE for a in unavailable)
            contributions.append((FeatureState.MAINTENANCE if all_maintenance else FeatureState.DOWN, causes))
        elif unavailable:
            contributions.append((FeatureState.DEGRADED, causes))
        contributions += [(a.state, a.impacted_by) for a in alternatives if a.state is FeatureState.DEGRADED]
        if all(a.state is FeatureState.UNKNOWN for a in alternatives):
            contributions.append((FeatureState.UNKNOWN, _union(a.impacted_by for a in alternatives)))
    for state in _SEVERITY:
        matching = [causes for s, causes in contributions if s is state]
        if matching:
            return FeatureHealth(state, _union(matching))
    return FeatureHealth(FeatureState.OK)


def with_own_window(feature: FeatureHealth, in_window: bool) -> FeatureHealth:
    """A feature under a maintenance window of its own is in maintenance, unless it is down."""
    if in_window and feature.state is not FeatureState.DOWN:
        return FeatureHealth(FeatureState.MAINTENANCE, ())
    return feature


def _union(groups: Iterable[Sequence[str]]) -> tuple[str, ...]:
    return tuple(sorted({item for group in groups for item in group}))


def impacted_features(root: str, features: Mapping[str, FeatureHealth]) -> list[str]:
    """The features degraded or down because of root cause `root`, in config order."""
    return features_by_root(features).get(root, [])


def features_by_root(features: Mapping[str, FeatureHealth]) -> dict[str, list[str]]:
    """Every root cause -> the features degraded or down because of it, in config order.

    One pass over the features for all root causes: a mass outage's decisions ask for a
    thousand of them at once.
    """
    index: dict[str, list[str]] = {}
    for feature, health in features.items():
        if health.impacted:
            for root in health.impacted_by:
                index.setdefault(root, []).append(feature)
    return index


def needs_from_config(features: Mapping[str, Feature]) -> dict[str, FeatureNeeds]:
    """`FeatureNeeds` for each configured feature."""
    return {fid: FeatureNeeds(tuple(f.requires), tuple(f.any_of)) for fid, f in features.items()}


def features_covered(
    needs: Mapping[str, FeatureNeeds], covered: set[str], order: Sequence[str] | None = None
) -> list[str]:
    """The features a set of nodes in maintenance takes out, in config order.

    A feature is covered when one of its `requires` is covered, or every one of its `any_of`
    alternatives is: the same rule as for `down`, so the app's maintenance banner and the
    feature states agree. `order`: `feature_order(needs)`, when the caller asks for many sets (a
    topological sort of every feature per call made a mass outage's pages O(config) each).
    """
    nodes = set(covered)
    for feature in order if order is not None else feature_order(needs):
        need = needs[feature]
        if any(n in nodes for n in need.requires) or (need.any_of and all(n in nodes for n in need.any_of)):
            nodes.add(feature)
    return [f for f in needs if f in nodes]
