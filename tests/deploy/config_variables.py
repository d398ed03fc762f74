"""Which `${VAR}` of a configuration holds a secret, derived from the config models.

The rule: a variable is a secret when the config field it fills is a `SecretStr` in
`monitor.config.models` (routing key, API token, client id and secret, Slack webhooks, state URL).
The YAML is walked beside the models' annotations, so a new secret field, or a new `${VAR}` in an
existing one, is found without a hand-kept list; the deploy tests then check that each such
variable reaches depmon in every deploy form.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, SecretStr

from monitor.config.models import Config

# The loader's own syntax (monitor/config/loading.py): `${VAR}` and `${VAR:-default}`.
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")


@dataclass
class Variables:
    """The `${VAR}` names of a configuration, split by the kind of field they fill."""

    secret: set[str] = field(default_factory=set)
    other: set[str] = field(default_factory=set)


def _strip(annotation: Any) -> Any:
    """The type under `Annotated[...]` (validators and field metadata say nothing of secrecy)."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _fills(model: type[BaseModel], value: Mapping[str, Any]) -> bool:
    """Whether a probe-spec-like mapping is `model`'s: its `kind`, or no kind and `model`'s default kind."""
    kind = model.model_fields.get("kind")
    if kind is None:
        return False
    return value.get("kind", kind.default) in get_args(_strip(kind.annotation))


def _member(annotation: Any, value: object) -> Any:
    """The member of a union that `value` fills: None dropped, probe specs chosen by `kind`."""
    members = [_strip(a) for a in get_args(annotation) if a is not type(None)]
    if isinstance(value, Mapping):
        models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        return next((m for m in models if _fills(m, value)), members[0])
    return next((m for m in members if m is SecretStr), members[0])


def _field_annotation(model: type[BaseModel], key: str) -> Any:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info.annotation
    raise KeyError(f"{model.__name__} has no field {key!r}: depmon would refuse this config")


def _walk(value: object, annotation: Any, found: Variables) -> None:
    annotation = _strip(annotation)
    if _is_union(annotation):
        _walk(value, _member(annotation, value), found)
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(value, Mapping):
        for key, item in value.items():
            _walk(item, _field_annotation(annotation, str(key)), found)
    elif get_origin(annotation) is dict and isinstance(value, Mapping):
        for item in value.values():
            _walk(item, get_args(annotation)[1], found)
    elif get_origin(annotation) is list and isinstance(value, list):
        for item in value:
            _walk(item, get_args(annotation)[0], found)
    elif isinstance(value, str):
        names = {m.group(1) for m in VARIABLE.finditer(value)}
        (found.secret if annotation is SecretStr else found.other).update(names)


def variables(documents: Iterable[Mapping[str, Any]]) -> Variables:
    """The variables of config documents (each a mapping of top-level keys, as one *.yaml file)."""
    found = Variables()
    for document in documents:
        _walk(document, Config, found)
    return found


def config_dir_documents(directory: Path) -> list[Mapping[str, Any]]:
    """Every *.yaml of a config directory, as depmon reads it (before substitution)."""
    return [yaml.safe_load(path.read_text(encoding="utf-8")) or {} for path in sorted(directory.glob("*.yaml"))]


def configmap_documents(configmap: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The config files of a ConfigMap's `data` (each key a file mounted into /etc/depmon)."""
    return [yaml.safe_load(text) or {} for name, text in configmap["data"].items() if name.endswith(".yaml")]


def env_file(text: str) -> dict[str, str]:
    """The variables an EnvironmentFile (or `kubectl --from-env-file`) file sets: name -> value."""
    lines = (line.strip() for line in text.splitlines())
    pairs = (line.partition("=") for line in lines if line and not line.startswith(("#", ";")))
    return {name.strip(): value.strip() for name, _, value in pairs}


def container_variables(container: Mapping[str, Any], secrets: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """The variables a Kubernetes container gets: its `env`, and the keys of each Secret it takes whole.

    `secrets` maps a Secret's name to the Secret (the examples stand for the real ones): a
    `secretRef` to a Secret not given contributes nothing, so a wrong name is a missing wire.
    """
    names = {item["name"] for item in container.get("env", [])}
    for source in container.get("envFrom", []):
        secret = secrets.get(source.get("secretRef", {}).get("name", ""), {})
        names |= {source.get("prefix", "") + key for key in {**secret.get("data", {}), **secret.get("stringData", {})}}
    return names
