"""`depmon app-graph import` and `depmon app-graph diff` (SPEC 11.1): vets-api's map, read and compared.

    depmon app-graph import FILE [--variant NAME]
    depmon app-graph diff [--vets-api FILE [--variant NAME]] [--app FILE] [--json]

`import` reads vets-api's `maintenance_windows_controller.rb` and prints the `app_graph` YAML
block of one variant. The controller's two forms are read: one `ServiceGraph.new(%i[a b], ...)`,
and edge arrays (`BASE_EDGES = [%i[a b], ...].freeze`) spread into several
`NAME = ServiceGraph.new(*BASE_EDGES, %i[c d])` variants switched by a Flipper flag. An entry
with one symbol (`%i[ immunizations]`, an edge half-deleted upstream) is skipped with a warning;
any other text inside a graph or an edge array, or a file with no edges, is `FILE:LINE: message`
and exit 2.

`diff` prints the four kinds of drift (`monitor.maintenance.app_graph`), each on its own lines:
exit 0 none, 1 drift, 2 bad input or nothing to compare (no `app_graph` and no `--vets-api`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import yaml

from monitor.config import Config
from monitor.maintenance.app_graph import (
    APP_DOWNTIME_SERVICES,
    APP_DOWNTIME_SOURCE,
    Difference,
    Edge,
    banner_drift,
    edge_drift,
    leaf_drift,
    name_drift,
)

__all__ = ["ControllerGraphs", "read_app_services", "read_controller", "run_diff", "run_import"]

EXIT_OK, EXIT_DRIFT, EXIT_USAGE = 0, 1, 2
_READ_LIMIT = 1024 * 1024  # a controller is a few kilobytes; refuse to read a stray huge file whole


class InputError(Exception):
    """Bad input: `FILE:LINE: message` (or `ARGUMENT: message`), exit 2."""


@dataclass
class ControllerGraphs:
    """What a controller file defines: its ServiceGraph variants (name -> edges, in order), warnings."""

    variants: dict[str, list[Edge]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def edges(self, variant: str | None) -> tuple[str, list[Edge]]:
        """(variant name, its edges): the named one, or the first defined; `InputError` if unknown."""
        name = variant or next(iter(self.variants))
        if name not in self.variants:
            raise InputError(f"--variant: unknown variant {name!r} (this file defines: {', '.join(self.variants)})")
        return name, self.variants[name]


# A graph or an edge array opens on a line `NAME = ...ServiceGraph.new(` or `NAME = [`.
_GRAPH_START = re.compile(r"^\s*([A-Z][A-Z0-9_]*)\s*=\s*(?:[\w:]*::)?ServiceGraph\.new\(")
_ARRAY_START = re.compile(r"^\s*([A-Z][A-Z0-9_]*)\s*=\s*\[")
_ENTRY = re.compile(r"%i\[([^\]]*)\]")
_SPLAT = re.compile(r"\*([A-Z][A-Z0-9_]*)")
_SKIP = re.compile(r"[\s,]+")


def read_controller(path: Path) -> ControllerGraphs:
    """The ServiceGraph variants of a vets-api controller file; `InputError` saying `FILE:LINE: ...`."""
    text = _read_text(path)
    graphs = ControllerGraphs()
    arrays: dict[str, list[Edge]] = {}
    open_block: tuple[str, str, list[Edge], int] | None = None  # (kind, name, edges, first line)
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _without_comment(raw)
        rest = line
        if open_block is None:
            graph, array = _GRAPH_START.match(line), _ARRAY_START.match(line)
            if graph is None and array is None:
                continue
            start = graph or array
            assert start is not None
            open_block = ("graph" if graph else "array", start.group(1), [], number)
            rest = line[start.end() :]
        kind, name, edges, _ = open_block
        try:
            closed = _read_entries(rest, kind, edges, arrays, graphs.warnings, f"{path}:{number}")
        except InputError:
            if kind == "array" and not edges:
                open_block = None  # an array of something else (`FOO = [1, 2]`), not of edges
                continue
            raise
        if closed:
            (graphs.variants if kind == "graph" else arrays)[name] = edges
            open_block = None
    if open_block is not None:
        raise InputError(f"{path}:{open_block[3]}: {open_block[1]} is never closed")
    if not any(graphs.variants.values()):
        raise InputError(
            f"{path}:1: no ServiceGraph edges found (expected `NAME = ServiceGraph.new(%i[upstream node], ...)`)"
        )
    return graphs


def _read_entries(
    text: str, kind: str, edges: list[Edge], arrays: dict[str, list[Edge]], warnings: list[str], where: str
) -> bool:
    """Read one line's entries into `edges`; True when the line closes the graph or array."""
    position = 0
    closer = ")" if kind == "graph" else "]"
    while position < len(text):
        if skipped := _SKIP.match(text, position):
            position = skipped.end()
        elif entry := _ENTRY.match(text, position):
            symbols = entry.group(1).split()
            if len(symbols) == 2:
                edge = (symbols[0], symbols[1])
                if edge not in edges:
                    edges.append(edge)
            elif len(symbols) == 1:
                warnings.append(f"{where}: warning: skipped {entry.group(0)}: one symbol is not an edge")
            else:
                raise InputError(f"{where}: cannot read {entry.group(0)}: an edge is %i[upstream node]")
            position = entry.end()
        elif splat := _SPLAT.match(text, position):
            if splat.group(1) not in arrays:
                raise InputError(f"{where}: *{splat.group(1)} is not an edge array defined above")
            edges.extend(edge for edge in arrays[splat.group(1)] if edge not in edges)
            position = splat.end()
        elif text.startswith(closer, position):
            return True  # what follows (`.freeze`) is not ours to read
        else:
            raise InputError(f"{where}: cannot read {text[position:].strip()[:60]!r}: expected %i[upstream node]")
    return False


def _without_comment(line: str) -> str:
    # Ruby comments; the controller's strings hold no `#`.
    hash_at = line.find("#")
    return line if hash_at < 0 else line[:hash_at]


def _read_text(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(_READ_LIMIT + 1)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > _READ_LIMIT:
        raise InputError(f"{path}: larger than {_READ_LIMIT} bytes: not a controller file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start})") from None


_APP_CONSTANTS = re.compile(r"DowntimeFeatureTypeConstants\s*(?::[^=]*)?=\s*\{([^}]*)\}", re.DOTALL)
_APP_VALUE = re.compile(r"""\w+\s*:\s*['"]([A-Za-z0-9_]+)['"]""")


def read_app_services(path: Path) -> list[str]:
    """The services of va-mobile-app's `DowntimeFeatureTypeConstants` (src/store/api/types/Errors.ts)."""
    text = _read_text(path)
    found = _APP_CONSTANTS.search(text)
    values = _APP_VALUE.findall(found.group(1)) if found else []
    if not values:
        line = text.count("\n", 0, found.start()) + 1 if found else 1
        raise InputError(f"{path}:{line}: no `DowntimeFeatureTypeConstants = {{ name: 'service', ... }}` found")
    return list(dict.fromkeys(values))


def import_block(path: Path, graphs: ControllerGraphs, variant: str) -> str:
    """The `app_graph:` YAML block of one variant, every variant named in a comment."""
    edges = graphs.variants[variant]
    others = [f"{name} (this one)" if name == variant else name for name in graphs.variants]
    document = {
        "app_graph": {
            "source": f"vets-api COMMIT, {path.name}, variant {variant}",
            "edges": [list(edge) for edge in edges],
            "pagerduty_services": {},
        }
    }
    body = yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=200)
    return (
        f"# read from {path} by `depmon app-graph import`: {len(edges)} edges\n"
        f"# variants: {', '.join(others)}\n"
        "# put the vets-api commit you read in `source`, and the PagerDuty service of each upstream\n"
        "# that no dependency names in `pagerduty_services`\n" + body
    )


def run_import(path: Path, variant: str | None, out: TextIO, err: TextIO) -> int:
    """`depmon app-graph import`: print the block; exit 2 with `FILE:LINE: message` on bad input."""
    try:
        graphs = read_controller(path)
        name, _ = graphs.edges(variant)
    except InputError as exc:
        print(f"depmon app-graph import: {exc}", file=err)
        return EXIT_USAGE
    for warning in graphs.warnings:
        print(warning, file=err)
    out.write(import_block(path, graphs, name))
    return EXIT_OK


def drift_report(
    config: Config,
    controller: tuple[str, Sequence[Edge]] | None,
    app: tuple[str, Sequence[str]],
) -> tuple[list[Difference], dict[str, str]]:
    """Every difference of the four kinds, and kind -> why it was not compared; `InputError` when
    there is nothing to compare. `controller` is (file name, edges), `app` (source, services)."""
    if config.app_graph is None and controller is None:
        raise InputError("nothing to compare: the config has no app_graph and no --vets-api FILE was given")
    edges = config.app_graph.edges if config.app_graph is not None else list(controller[1] if controller else [])
    notes: dict[str, str] = {}
    found = banner_drift(config) if config.app_graph is not None else []
    if config.app_graph is None:
        notes["banners"] = "the config has no app_graph"
    if controller is not None and config.app_graph is not None:
        found += edge_drift(config.app_graph.edges, controller[1], controller[0])
    else:
        notes["edges"] = "it takes --vets-api FILE and an app_graph in the config"
    found += leaf_drift(edges, app[1], app[0])
    found += name_drift(config, edges)
    return found, notes


_KIND_TITLES = {
    "banners": "(a) banners: depmon's feature graph vs vets-api's app graph",
    "edges": "(b) edges: app_graph vs the controller file",
    "leaves": "(c) leaves: the app graph vs the app's downtime services",
    "names": "(d) names: vets_api per dependency",
}


def run_diff(
    config: Config,
    vets_api: Path | None,
    variant: str | None,
    app: Path | None,
    as_json: bool,
    out: TextIO,
    err: TextIO,
) -> int:
    """`depmon app-graph diff`: print the drift; exit 0 none, 1 drift, 2 bad input or nothing to compare."""
    try:
        controller = None
        if vets_api is not None:
            graphs = read_controller(vets_api)
            name, edges = graphs.edges(variant)
            controller = (f"{vets_api.name} ({name})", edges)
            for warning in graphs.warnings:
                print(warning, file=err)
        elif variant is not None:
            raise InputError("--variant: goes with --vets-api FILE")
        services = (
            (str(app), read_app_services(app)) if app is not None else (APP_DOWNTIME_SOURCE, APP_DOWNTIME_SERVICES)
        )
        found, notes = drift_report(config, controller, services)
    except InputError as exc:
        print(f"depmon app-graph diff: {exc}", file=err)
        return EXIT_USAGE
    if as_json:
        document = {
            "source": config.app_graph.source if config.app_graph is not None else None,
            "drift": [d.as_json() for d in found],
            "not_compared": notes,
        }
        print(json.dumps(document, indent=2), file=out)
    else:
        source = config.app_graph.source if config.app_graph is not None else controller[0] if controller else ""
        print(f"app graph: {source}", file=out)
        for kind, title in _KIND_TITLES.items():
            if kind in notes:
                print(f"{title}: not compared: {notes[kind]}", file=out)
                continue
            of_kind = [d for d in found if d.kind == kind]
            print(f"{title}: {len(of_kind) or 'no'} difference{'' if len(of_kind) == 1 else 's'}", file=out)
            for difference in of_kind:
                print(f"  {difference.text}", file=out)
    return EXIT_DRIFT if found else EXIT_OK
