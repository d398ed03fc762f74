"""`depmon impact` and `depmon maintenance`: read-only reports on the config and PagerDuty."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TextIO

from monitor.config import Config
from monitor.impact import features_covered, needs_from_config


def impact_map(config: Config) -> dict[str, list[str]]:
    """Dependency id -> the features its outage takes down (through `requires` and `any_of`)."""
    needs = needs_from_config(config.features)
    result = {}
    for dep_id in config.dependencies:
        # Its children in depends_on go down with it: their features count too.
        down = {dep_id} | {d for d in config.dependencies if _descends(d, dep_id, config)}
        result[dep_id] = features_covered(needs, down)
    return result


def _descends(dep: str, ancestor: str, config: Config) -> bool:
    stack, seen = [dep], set()
    while stack:
        node = stack.pop()
        for parent in config.dependencies[node].depends_on:
            if parent == ancestor:
                return True
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return False


def render_impact(config: Config, fmt: str) -> str:
    """The dependency -> feature map as text, a mermaid flowchart or a graphviz digraph."""
    if fmt == "text":
        lines = []
        for dep_id, features in impact_map(config).items():
            dep = config.dependencies[dep_id]
            parents = f" (needs {', '.join(dep.depends_on)})" if dep.depends_on else ""
            names = ", ".join(config.features[f].name for f in features) or "no feature"
            lines.append(f"{dep.name} [{dep_id}]{parents} -> {names}")
        return "\n".join(lines)
    edges: list[tuple[str, str, str]] = []  # (from, to, label)
    for dep_id, dep in config.dependencies.items():
        edges += [(parent, dep_id, "token") for parent in dep.depends_on]
    for feat_id, feature in config.features.items():
        edges += [(node, feat_id, "") for node in feature.requires]
        edges += [(node, feat_id, "any of") for node in feature.any_of]
    if fmt == "mermaid":
        out = ["flowchart LR"]
        out += [f'  {_mid(d)}["{dep.name}"]' for d, dep in config.dependencies.items()]
        out += [f'  {_mid(f)}(["{feat.name}"])' for f, feat in config.features.items()]
        out += [f"  {_mid(a)} -->{'|' + label + '|' if label else ''} {_mid(b)}" for a, b, label in edges]
        return "\n".join(out)
    out = ["digraph depmon {", "  rankdir=LR;"]
    out += [f'  "{d}" [label="{dep.name}", shape=box];' for d, dep in config.dependencies.items()]
    out += [f'  "{f}" [label="{feat.name}", shape=ellipse];' for f, feat in config.features.items()]
    out += [f'  "{a}" -> "{b}"' + (f' [label="{label}"]' if label else "") + ";" for a, b, label in edges]
    out.append("}")
    return "\n".join(out)


def _mid(ident: str) -> str:
    return ident.replace("-", "_")


async def run_maintenance(config: Config, out: TextIO) -> int:
    """Print open and upcoming windows per dependency; 1 when PagerDuty cannot be read."""
    from monitor.pagerduty import MaintenanceClient, MaintenanceUnavailable

    pd = config.pagerduty
    if not pd.api_token.get_secret_value():
        print("no PagerDuty API token (pagerduty.api_token): maintenance windows cannot be read", file=out)
        return 1
    services = {service: ", ".join(owners) for service, owners in config.service_owners().items()}
    client = MaintenanceClient(pd.api_url, pd.api_token)
    try:
        result = await client.open_windows(list(services))
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
        nodes = sorted({services[s] for s in window.service_ids if s in services})
        when = "open now" if window.is_open_at(now) else "upcoming"
        features = features_covered(needs, set(nodes))
        print(f"{window.start.isoformat()} .. {window.end.isoformat()}  [{when}]  {', '.join(nodes)}", file=out)
        print(f"    {window.description or '(no description)'}", file=out)
        print(f"    features: {', '.join(config.features[f].name for f in features) or '-'}", file=out)
    for bad in result.bad_service_ids:
        print(
            f"warning: PagerDuty refused service id {bad} ({services.get(bad, '?')}); check its pagerduty_service",
            file=out,
        )
    return 0
