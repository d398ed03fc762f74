"""`depmon validate --strict`: the secrets a deployment cannot work without.

A config may leave them empty and stay valid: the demo, the tests and a dry run that only records
pages in the outbox all do. A deployment cannot: without the routing key no page leaves, without
the API token no maintenance window is read, without the OAuth client no token is issued and every
dependency that needs it looks down. A CI deploy gates on `--strict`, which reports each empty
one as `FILE: key.path: message` (and the empty `from_email` and `requester_id` without which
escalation reaches nobody: SPEC 11.2), naming the environment variable that fills it (read from the
files as written, before substitution), and never its value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from monitor.config import Config, ConfigIssue, OAuth2ProbeSpec, _read_documents

__all__ = ["check_strict", "required_secret_issues"]

Loc = tuple[str | int, ...]

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def check_strict(path: Path, config: Config) -> list[ConfigIssue]:
    """The `--strict` issues of the config at `path`, already loaded (valid) as `config`."""
    document, origins = _read_documents(path)
    return required_secret_issues(config, document, lambda loc: origins.file_for(loc, str(path)))


def required_secret_issues(
    config: Config, document: Mapping[str, Any], file_for: Callable[[Loc], str]
) -> list[ConfigIssue]:
    """One issue for every required secret that is empty, in config order.

    `document` is the merged YAML before substitution (where the `${VAR}` names stand) and
    `file_for` names the file a key path comes from.
    """
    issues = []
    for loc, secret in _required_secrets(config):
        if secret.get_secret_value():
            continue
        variable = _variable_at(document, loc)
        fix = f"set {variable}" if variable else "set it from an environment variable (${VAR}), never in the file"
        issues.append(ConfigIssue(file_for(loc), _key_path(loc), f"required secret is empty: {fix} (--strict)"))
    # Not secrets, but escalation cannot reach people without them (SPEC 11.2).
    for loc, value, without in _required_values(config):
        if value:
            continue
        variable = _variable_at(document, loc)
        fix = f"set {variable}" if variable else "set it"
        issues.append(ConfigIssue(file_for(loc), _key_path(loc), f"empty: {without}; {fix} (--strict)"))
    return issues


def _required_values(config: Config) -> Iterator[tuple[Loc, str, str]]:
    pd = config.pagerduty
    yield ("pagerduty", "from_email"), pd.from_email, "no responder request, note or urgency is written to PagerDuty"
    yield ("pagerduty", "requester_id"), pd.requester_id, "no responder request is made"


def _required_secrets(config: Config) -> Iterator[tuple[Loc, SecretStr]]:
    yield ("pagerduty", "routing_key"), config.pagerduty.routing_key
    yield ("pagerduty", "api_token"), config.pagerduty.api_token
    for dep_id, dependency in config.dependencies.items():
        for index, probe in enumerate(dependency.probes):
            if isinstance(probe, OAuth2ProbeSpec):
                yield ("dependencies", dep_id, "probes", index, "client_id"), probe.client_id
                yield ("dependencies", dep_id, "probes", index, "client_secret"), probe.client_secret


def _variable_at(document: Mapping[str, Any], loc: Loc) -> str | None:
    """The first `${VAR}` named by the raw value at `loc`, None when there is none (or no value)."""
    node: Any = document
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):  # absent, or not a mapping or list there
            return None
    match = _VARIABLE.search(node) if isinstance(node, str) else None
    return match.group(1) if match else None


def _key_path(loc: Loc) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
