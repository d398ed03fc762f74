"""The rules that span several keys: unknown ids, cycles, duplicate probe names, timeouts against
intervals, the routing key. Each broken rule is a (key path, message) pair.
"""

from __future__ import annotations

from collections.abc import Iterable

from monitor.config.errors import Loc
from monitor.config.models import Config, HttpProbeSpec, OAuth2ProbeSpec, SignalProbeBase, Timing, _ProbeBase
from monitor.state.graph import find_cycle
from monitor.text import format_duration


def check_references(config: Config) -> list[tuple[Loc, str]]:
    """The rules that span several keys; returns (location, message) pairs, empty when valid."""
    problems: list[tuple[Loc, str]] = []
    deps, features = config.dependencies, config.features
    nodes = set(deps) | set(features)

    def known(ids: list[str], pool: Iterable[str], loc: Loc, what: str) -> None:
        pool = set(pool)
        for i, ident in enumerate(ids):
            if ident not in pool:
                problems.append(((*loc, i), f"unknown {what} {ident!r}"))

    for key in ("notify", "security_notify"):
        known(getattr(config.escalation, key), config.contacts, ("escalation", key), "contact")
    for key in ("security_playbooks", "postmortem_playbooks", "recurrence_playbooks"):
        known(getattr(config.escalation, key), config.playbooks, ("escalation", key), "playbook")

    oauth_probes = {
        f"{dep_id}/{probe.name}" for dep_id, probe in config.iter_probes() if isinstance(probe, OAuth2ProbeSpec)
    }
    defaults = config.monitor.defaults
    if defaults.timeout >= defaults.interval:
        problems.append((("monitor", "defaults", "timeout"), _timeout_message(defaults, None)))
    for dep_id, dep in deps.items():
        base: Loc = ("dependencies", dep_id)
        known(dep.playbooks, config.playbooks, (*base, "playbooks"), "playbook")
        known(dep.depends_on, deps, (*base, "depends_on"), "dependency")
        seen: set[str] = set()
        for i, probe in enumerate(dep.probes):
            loc: Loc = (*base, "probes", i)
            if probe.name in seen:
                problems.append(((*loc, "name"), f"duplicate probe name {probe.name!r} in this dependency"))
            seen.add(probe.name)
            timing = probe.timing(defaults)
            if (probe.timeout is not None or probe.interval is not None) and timing.timeout >= timing.interval:
                key = "timeout" if probe.timeout is not None else "interval"
                problems.append(((*loc, key), _timeout_message(timing, probe)))
            if isinstance(probe, SignalProbeBase) and probe.enabled:
                problems += [((*loc, key), _REQUIRED_WHEN_ENABLED) for key in probe.missing()]
            if isinstance(probe, HttpProbeSpec) and probe.bearer_from is not None:
                owner = probe.bearer_from.split("/", 1)[0]
                if probe.bearer_from not in oauth_probes:
                    problems.append(
                        ((*loc, "bearer_from"), f"unknown oauth2 probe {probe.bearer_from!r} (DEPENDENCY/PROBE)")
                    )
                elif owner != dep_id and owner not in dep.depends_on:
                    problems.append(
                        ((*loc, "bearer_from"), f"{owner!r} must be listed in this dependency's depends_on")
                    )
            if isinstance(probe, HttpProbeSpec | OAuth2ProbeSpec) and (probe.client_cert is None) != (
                probe.client_key is None
            ):
                problems.append(((*loc, "client_key"), "client_cert and client_key go together"))

    for feat_id, feat in features.items():
        base = ("features", feat_id)
        known(feat.requires, nodes, (*base, "requires"), "dependency or feature")
        known(feat.any_of, nodes, (*base, "any_of"), "dependency or feature")
        known(feat.playbooks, config.playbooks, (*base, "playbooks"), "playbook")
        if feat_id in deps:
            problems.append((base, f"{feat_id!r} is already a dependency id"))

    graph = {d: list(dep.depends_on) for d, dep in deps.items()}
    graph.update({f: [*feat.requires, *feat.any_of] for f, feat in features.items() if f not in deps})
    cycle = find_cycle(graph)
    if cycle:
        section = "dependencies" if cycle[0] in deps else "features"
        if section == "dependencies":
            key = "depends_on"
        else:
            key = "requires" if cycle[1] in features[cycle[0]].requires else "any_of"
        problems.append(((section, cycle[0], key), f"cycle: {' -> '.join(cycle)}"))
    if config.app_graph is not None:
        problems += _app_graph_cycle(config.app_graph.edges)
    return problems


def _app_graph_cycle(edges: list[tuple[str, str]]) -> list[tuple[Loc, str]]:
    """vets-api's ServiceGraph walks edges downstream until it runs out: a cycle would never end."""
    upstreams: dict[str, list[str]] = {}
    for upstream, node in edges:
        upstreams.setdefault(node, []).append(upstream)
    cycle = find_cycle(upstreams)
    if not cycle:
        return []
    path = list(reversed(cycle))[:-1]  # find_cycle reads child -> parent; edges read upstream -> node
    position = {edge: index for index, edge in reversed(list(enumerate(edges)))}
    # Told from the cycle's edge listed first, so the message names the line a reader finds first.
    start = min(range(len(path)), key=lambda i: position[(path[i], path[(i + 1) % len(path)])])
    path = path[start:] + path[:start]
    first = position[(path[0], path[1 % len(path)])]
    return [(("app_graph", "edges", first), f"cycle: {' -> '.join([*path, path[0]])}")]


_REQUIRED_WHEN_ENABLED = "required while the probe is enabled (set it, or `enabled: false`)"


def _timeout_message(timing: Timing, probe: _ProbeBase | None) -> str:
    """`timeout (10s) must be shorter than the interval (5s)`, saying which value is inherited."""

    def value(key: str) -> str:
        inherited = probe is not None and getattr(probe, key) is None
        return format_duration(getattr(timing, key)) + (" from monitor.defaults" if inherited else "")

    return f"timeout ({value('timeout')}) must be shorter than the interval ({value('interval')})"
