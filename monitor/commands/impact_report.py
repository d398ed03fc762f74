"""`depmon impact`: what an outage of each dependency takes down, as a table, JSON, Mermaid or DOT."""

from __future__ import annotations

import json
from dataclasses import dataclass

from monitor.config import Config
from monitor.state.graph import children_of, descendants
from monitor.state.health import DependencyHealth, DependencyState
from monitor.state.impact import FeatureState, evaluate_features, needs_from_config


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
    """The dependency -> feature map as text, JSON, a mermaid flowchart or a graphviz digraph.

    Text: one line per dependency, the features its outage takes down and the ones it degrades
    (with the alternatives left). JSON: the same facts, `{"dependencies": {ID: {"name",
    "depends_on", "down": [feature], "degraded": {feature: [alternative left]}}}}`. Diagrams: the
    graph itself; a solid edge takes the feature down with its source, a dashed `degrades` edge is
    one `any_of` alternative (every one down: down).
    """
    if fmt == "text":
        return "\n".join(_impact_line(config, dep_id, impact) for dep_id, impact in impact_map(config).items())
    if fmt == "json":
        dependencies = {
            dep_id: {
                "name": config.dependencies[dep_id].name,
                "depends_on": list(config.dependencies[dep_id].depends_on),
                "down": list(impact.down),
                "degraded": {feature: list(left) for feature, left in impact.degraded.items()},
            }
            for dep_id, impact in impact_map(config).items()
        }
        return json.dumps({"dependencies": dependencies}, indent=2, ensure_ascii=False)
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
