"""Loading a configuration: YAML files -> `${VAR}` substituted -> validated `Config`.

1. read one YAML file or every `*.yaml` of a directory, merged by top-level key, through a
   bounded loader that refuses YAML bombs before any object is built;
2. substitute `${VAR}` and `${VAR:-default}` from the environment in string values;
3. validate: the models (`monitor.config.models`), then the cross-reference rules
   (`monitor.config.references`).

Each step reports every problem it finds as a `ConfigIssue`; `load_config` raises ConfigError
and nothing else. Nothing can fail for config reasons once it has returned.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from monitor.config.errors import format_loc, pydantic_issues
from monitor.config.models import Config
from monitor.config.references import check_references
from monitor.errors import ConfigError, ConfigIssue

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# Bounds that a hostile or broken config meets before any object is built (issue 11). The bundled
# config is 810 nodes in 31 KB; the largest depmon is sized for (10,000 dependencies, `depmon
# bench`) is about 192,000 nodes in 2 MB. The YAML parser is pure Python (a 1 MB flat list of
# 500,000 numbers took 54 s and 377 MB), so the node budget is what bounds a load's time and memory.
MAX_CONFIG_FILE_BYTES = 8 * 1024 * 1024
MAX_NESTING = 64
MAX_NODES = 250_000  # per file, aliases expanded
MAX_ALIAS_NODES = 10_000
_LOC_SHOWN = 8  # key path parts named in a refusal (a 64-deep path says nothing more)


class _Refused(Exception):
    """A YAML document refused while composing: where (a key path) and why."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


try:  # libyaml's scanner and parser, when PyYAML was built with it
    from yaml._yaml import CParser as _CParser
except ImportError:  # pragma: no cover - PyYAML without libyaml
    _CParser = None  # type: ignore[assignment,misc]


class _BoundedLoader(yaml.composer.Composer, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
    """A safe loader that refuses YAML bombs while composing the node graph, before objects exist.

    Each alias counts the nodes it expands to (aliases inside the aliased node included) against
    one budget per file, so a "billion laughs" stops at its first expensive level; every node,
    aliases expanded, counts against a larger budget, so a huge flat list stops early too; nesting,
    aliases expanded, is bounded in depth (a RecursionError is never reached); an alias inside its
    own anchor (a recursive structure) is refused.

    The events come from libyaml's scanner and parser when PyYAML has it (about 6 times faster
    than the pure-Python ones on a large file), else from PyYAML's own; composing and
    constructing are PyYAML's safe ones either way.
    """

    def __init__(self, stream: str) -> None:
        self._events: Any = _CParser(stream) if _CParser is not None else yaml.SafeLoader(stream)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self._loc: list[str | int] = []
        self._open_anchors: set[str] = set()
        self._alias_nodes = 0
        self._nodes = 0
        self._extents: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, height), aliases expanded

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        # `index` is a position in a sequence, or the key node of a mapping value (None for a key).
        part = _loc_part(parent, index)
        if part is not None:
            self._loc.append(part)
        try:
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent):
                self._count_alias(event)
                return super().compose_node(parent, index)
            if len(self._loc) >= MAX_NESTING:
                raise self._refuse(event, f"nested deeper than {MAX_NESTING} levels")
            self._count_nodes(event, 1)
            anchor = getattr(event, "anchor", None)
            if anchor is not None:
                self._open_anchors.add(anchor)
            try:
                return super().compose_node(parent, index)
            finally:
                self._open_anchors.discard(anchor)
        finally:
            if part is not None:
                self._loc.pop()

    # The event source the composer reads.
    def check_event(self, *choices: type[yaml.Event]) -> bool:
        return bool(self._events.check_event(*choices))

    def peek_event(self) -> yaml.Event:
        return self._events.peek_event()  # type: ignore[no-any-return]

    def get_event(self) -> yaml.Event:
        return self._events.get_event()  # type: ignore[no-any-return]

    def dispose(self) -> None:
        self._events.dispose()

    def _count_alias(self, event: yaml.AliasEvent) -> None:
        if event.anchor in self._open_anchors:
            raise self._refuse(event, f"alias *{event.anchor} is inside its own anchor (a recursive structure)")
        node = self.anchors.get(event.anchor)
        if node is None:
            return  # the composer reports the undefined alias
        nodes, height = self._extent(node)
        self._count_nodes(event, nodes)
        self._alias_nodes += nodes
        if self._alias_nodes > MAX_ALIAS_NODES:
            raise self._refuse(event, f"aliases expand to more than {MAX_ALIAS_NODES} nodes (a YAML alias bomb)")
        if len(self._loc) + height > MAX_NESTING:
            raise self._refuse(event, f"nested deeper than {MAX_NESTING} levels once alias *{event.anchor} is expanded")

    def _count_nodes(self, event: yaml.Event, nodes: int) -> None:
        self._nodes += nodes
        if self._nodes > MAX_NODES:
            raise self._refuse(event, f"more than {MAX_NODES} values in one file")

    def _extent(self, node: yaml.Node) -> tuple[int, int]:
        """Nodes and height of a composed node with its aliases expanded (memoised: aliases share nodes)."""
        known = self._extents.get(id(node))
        if known is not None:
            return known
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [item for pair in node.value for item in pair]
        nodes, height = 1, 0
        for child in children:
            child_nodes, child_height = self._extent(child)
            nodes, height = nodes + child_nodes, max(height, child_height)
        self._extents[id(node)] = extent = (nodes, height + 1)
        return extent

    def _refuse(self, event: yaml.Event, message: str) -> _Refused:
        mark = event.start_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return _Refused(tuple(self._loc[:_LOC_SHOWN]), where + message)  # the line says exactly where


def _loc_part(parent: yaml.Node | None, index: object) -> str | int | None:
    """The key path part of a node being composed: its mapping key or sequence index (None for a key)."""
    if isinstance(parent, yaml.SequenceNode) and isinstance(index, int):
        return index
    if isinstance(parent, yaml.MappingNode) and isinstance(index, yaml.Node):
        return str(index.value) if isinstance(index, yaml.ScalarNode) else "?"
    return None


def _load_yaml(file: Path) -> Any:
    """One file's YAML document, bounded in size, aliases and nesting; raises ConfigError naming the file."""
    try:
        too_big = file.stat().st_size > MAX_CONFIG_FILE_BYTES
        text = "" if too_big else file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(str(file), "", f"cannot read: {exc.__class__.__name__}")]) from None
    if too_big:
        raise ConfigError([ConfigIssue(str(file), "", f"larger than {MAX_CONFIG_FILE_BYTES // 1024 // 1024} MiB")])
    try:
        loader = _BoundedLoader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except _Refused as exc:
        raise ConfigError([ConfigIssue(str(file), format_loc(exc.loc), exc.message)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError([ConfigIssue(str(file), "", f"{where}{problem}")]) from None
    except Exception as exc:  # PyYAML's constructors raise more than YAMLError
        # A value the constructors cannot build (an integer of 5,000 digits: ValueError; an empty
        # `!!timestamp`: AttributeError): a problem of this file, never a traceback.
        raise ConfigError([ConfigIssue(str(file), "", f"a value cannot be built ({exc.__class__.__name__})")]) from None


class _Origins:
    """Which file each part of the merged document came from, for error messages."""

    def __init__(self) -> None:
        self._top: dict[str, str] = {}
        self._entries: dict[tuple[str, str], str] = {}

    def record(self, file: str, top: str, value: object) -> None:
        self._top.setdefault(top, file)
        if isinstance(value, dict):
            for key in value:
                self._entries.setdefault((top, str(key)), file)

    def file_for(self, path: tuple[str | int, ...], default: str) -> str:
        if len(path) >= 2 and (str(path[0]), str(path[1])) in self._entries:
            return self._entries[(str(path[0]), str(path[1]))]
        if path and str(path[0]) in self._top:
            return self._top[str(path[0])]
        return default


def bundled_config_path() -> Path:
    """The bundled VA mobile configuration (the repository's `config/`, installed as package data)."""
    return Path(str(resources.files("monitor.bundled")))


def default_config_path(environ: Mapping[str, str]) -> Path:
    """`$DEPMON_CONFIG`, else the bundled configuration."""
    return Path(environ["DEPMON_CONFIG"]) if environ.get("DEPMON_CONFIG") else bundled_config_path()


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, substitute and validate the configuration at `path` (a file or a directory).

    Raises ConfigError and nothing else: whatever a file holds, the answer is a config or its errors.
    """
    environ = os.environ if environ is None else environ
    try:
        return _load(path, environ)
    except (OSError, RecursionError, MemoryError) as exc:  # the last wall: the daemon's reload must survive
        raise ConfigError([ConfigIssue(str(path), "", f"cannot be loaded: {exc.__class__.__name__}")]) from None


def _load(path: Path, environ: Mapping[str, str]) -> Config:
    document, origins = _substituted(path, environ)
    try:
        config = Config.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(pydantic_issues(exc, lambda loc: origins.file_for(loc, str(path)))) from None
    issues = [
        ConfigIssue(origins.file_for(loc, str(path)), format_loc(loc), message)
        for loc, message in check_references(config)
    ]
    if issues:
        raise ConfigError(issues)
    return config


def substituted_document(path: Path, environ: Mapping[str, str]) -> dict[str, Any]:
    """The document at `path` merged and substituted, not yet validated: what `depmon schema` describes.

    Raises ConfigError for what stops it being read (a YAML error, an unset `${VAR}`).
    """
    return _substituted(path, environ)[0]


def _substituted(path: Path, environ: Mapping[str, str]) -> tuple[dict[str, Any], _Origins]:
    document, origins = _read_documents(path)
    issues: list[ConfigIssue] = []
    substituted: dict[str, Any] = _substitute(document, environ, (), origins, str(path), issues)
    if issues:
        raise ConfigError(issues)
    return substituted, origins


def _read_documents(path: Path) -> tuple[dict[str, Any], _Origins]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        if not files:
            raise ConfigError([ConfigIssue(str(path), "", "no *.yaml files in this directory")])
    elif path.is_file():
        files = [path]
    else:
        raise ConfigError([ConfigIssue(str(path), "", "no such file or directory")])

    merged: dict[str, Any] = {}
    origins = _Origins()
    issues: list[ConfigIssue] = []
    for file in files:
        try:
            data = _load_yaml(file)
        except ConfigError as exc:
            issues += exc.issues
            continue
        if data is None:
            continue
        if not isinstance(data, dict):
            issues.append(ConfigIssue(str(file), "", "must be a mapping of top-level keys"))
            continue
        for top, value in data.items():
            top = str(top)
            if top not in merged:
                merged[top] = value
            elif isinstance(merged[top], dict) and isinstance(value, dict):
                for key in value:
                    if key in merged[top]:
                        first = origins.file_for((top, str(key)), str(file))
                        issues.append(ConfigIssue(str(file), f"{top}.{key}", f"already defined in {first}"))
                merged[top] = {**merged[top], **value}
            else:
                issues.append(ConfigIssue(str(file), top, f"already defined in {origins.file_for((top,), '')}"))
            origins.record(str(file), top, value)
    if issues:
        raise ConfigError(issues)
    return merged, origins


def _substitute(
    value: Any,
    environ: Mapping[str, str],
    loc: tuple[str | int, ...],
    origins: _Origins,
    default_file: str,
    issues: list[ConfigIssue],
) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if default is not None:  # shell semantics: `:-` also replaces a variable set but empty
                return environ.get(name) or default
            if name in environ:
                return environ[name]
            issues.append(
                ConfigIssue(
                    origins.file_for(loc, default_file),
                    format_loc(loc),
                    f"environment variable {name} is not set (use ${{{name}:-default}} for a default)",
                )
            )
            return ""

        return _VAR.sub(replace, value)
    if isinstance(value, dict):
        return {k: _substitute(v, environ, (*loc, str(k)), origins, default_file, issues) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, environ, (*loc, i), origins, default_file, issues) for i, v in enumerate(value)]
    return value
